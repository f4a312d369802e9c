"""RGB image processor for RGB-D models: resize / center crop / rescale / normalise in batched torch ops."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .geometry_rgbd import ResizeCropPlan, plan_resize_crop
from .validation_rgbd import check_flag, flatten_batch

# ViT defaults (IMAGENET_STANDARD_MEAN / STD in transformers).
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)

# PIL resampling codes (the values transformers stores in `resample`) -> torch interpolation modes.
_RESAMPLE_TO_TORCH = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


class RgbdImageProcessorKwargs(TypedDict, total=False):
    do_resize: bool
    size: dict[str, int]
    resample: int
    do_center_crop: bool
    crop_size: dict[str, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: list[float]
    image_std: list[float]


class RgbdImageProcessor(BaseImageProcessor):
    r"""
    RGB image processor that owns the geometry of an RGB-D batch: the depth processor follows its resize and crop
    exactly (see [`RgbdProcessor`]).

    All work is done in batched torch ops. Images of the same size are stacked and resized in one call while still
    `uint8` (torch's fast SIMD path), then rescaled and normalised in one fused step.

    Accepted inputs (a single one or a list): PIL images (converted to RGB); numpy `(H, W, 3)` or `(B, H, W, 3)`
    arrays, `uint8` or float in [0, 1]; torch `(3, H, W)` or `(B, 3, H, W)` tensors, `uint8` or float in [0, 1].
    `rescale_factor` applies to integer inputs only: float inputs are already intensities in [0, 1].

    Args:
        do_resize (`bool`, defaults to `True`): resize to `size`.
        size (`dict[str, int]`, defaults to `{"height": 224, "width": 224}`): `{"height", "width"}` for an exact
            size, or `{"shortest_edge"}` (optionally with `"longest_edge"`) to keep the aspect ratio.
        resample (`int`, defaults to `2`, bilinear): PIL resampling code; 0 nearest, 2 bilinear, 3 bicubic
            (antialiased when downscaling).
        do_center_crop (`bool`, defaults to `False`): center crop to `crop_size` after resizing.
        crop_size (`dict[str, int]`, defaults to `{"height": 224, "width": 224}`).
        do_rescale (`bool`, defaults to `True`): multiply integer inputs by `rescale_factor`.
        rescale_factor (`float`, defaults to `1/255`).
        do_normalize (`bool`, defaults to `True`): `(x - image_mean) / image_std` per channel.
        image_mean, image_std (`list[float]`, default to 0.5 each, the ViT convention).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = RgbdImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int = 2,
        do_center_crop: bool = False,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | tuple[float, ...] | None = None,
        image_std: float | list[float] | tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.do_resize = check_flag(do_resize, "do_resize")
        self.size = _size_dict(size if size is not None else {"height": 224, "width": 224}, "size")
        self.resample = _check_resample(resample)
        self.do_center_crop = check_flag(do_center_crop, "do_center_crop")
        self.crop_size = _size_dict(crop_size if crop_size is not None else {"height": 224, "width": 224}, "crop_size")
        self.do_rescale = check_flag(do_rescale, "do_rescale")
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = check_flag(do_normalize, "do_normalize")
        self.image_mean = _channel_stats(DEFAULT_IMAGE_MEAN if image_mean is None else image_mean, "image_mean")
        self.image_std = _channel_stats(DEFAULT_IMAGE_STD if image_std is None else image_std, "image_std")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"`image_std` must be positive, got {self.image_std}.")

    # ------------------------------------------------------------------ geometry
    def plan_geometry(
        self,
        input_size: tuple[int, int],
        do_resize: bool | None = None,
        size: dict[str, int] | int | None = None,
        do_center_crop: bool | None = None,
        crop_size: dict[str, int] | int | None = None,
    ) -> ResizeCropPlan:
        """The resize/crop plan this processor applies to an image of `input_size` (height, width)."""
        do_resize = self.do_resize if do_resize is None else check_flag(do_resize, "do_resize")
        do_center_crop = (
            self.do_center_crop if do_center_crop is None else check_flag(do_center_crop, "do_center_crop")
        )
        size = self.size if size is None else _size_dict(size, "size")
        crop_size = self.crop_size if crop_size is None else _size_dict(crop_size, "crop_size")
        return plan_resize_crop(input_size, size if do_resize else None, crop_size if do_center_crop else None)

    # ------------------------------------------------------------------ main entry points
    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Preprocess one image or a batch.

        Keyword arguments override this processor's settings for the call (`do_resize`, `size`, `resample`,
        `do_center_crop`, `crop_size`, `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`,
        `image_std`); see `preprocess_with_plans`.

        Returns:
            `BatchFeature` with `pixel_values` of shape (B, 3, H_out, W_out), float32.
        """
        pixel_values, _ = self.preprocess_with_plans(images, **kwargs)
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    def preprocess_with_plans(
        self,
        images: Any,
        do_resize: bool | None = None,
        size: dict[str, int] | int | None = None,
        resample: int | None = None,
        do_center_crop: bool | None = None,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, list[ResizeCropPlan]]:
        """Like `preprocess`, and also returns the per-image `ResizeCropPlan` that the depth processor follows.

        Returns:
            pixel_values (B, 3, H_out, W_out) float32 and a list of B plans.
        """
        if kwargs:
            raise TypeError(f"RgbdImageProcessor.preprocess got unexpected keyword arguments {sorted(kwargs)}.")
        mode = _RESAMPLE_TO_TORCH[_check_resample(self.resample if resample is None else resample)]
        rescale_factor = self.rescale_factor if rescale_factor is None else float(rescale_factor)
        do_rescale = self.do_rescale if do_rescale is None else check_flag(do_rescale, "do_rescale")
        do_normalize = self.do_normalize if do_normalize is None else check_flag(do_normalize, "do_normalize")
        mean = self.image_mean if image_mean is None else _channel_stats(image_mean, "image_mean")
        std = self.image_std if image_std is None else _channel_stats(image_std, "image_std")

        items = to_image_tensors(images)
        plans = [
            self.plan_geometry(
                item.shape[1:] if layout == "chw" else item.shape[:2],
                do_resize=do_resize,
                size=size,
                do_center_crop=do_center_crop,
                crop_size=crop_size,
            )
            for item, layout in items
        ]
        output_sizes = {plan.output_size for plan in plans}
        if len(output_sizes) > 1:
            raise ValueError(
                f"`images` of different aspect ratios give different output sizes {sorted(output_sizes)} with "
                f"size={self.size if size is None else size}; use an exact {{'height', 'width'}} size or a center "
                "crop so that the batch can be stacked."
            )

        # Group images that share shape, dtype and memory layout: one stack and one resize per group.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, (item, layout) in enumerate(items):
            groups[(tuple(item.shape), item.dtype, layout)].append(index)
        out_h, out_w = output_sizes.pop()
        pixel_values = torch.empty(len(items), 3, out_h, out_w, dtype=torch.float32)
        inv_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).reciprocal()
        if not do_normalize:
            inv_std = torch.ones(1, 3, 1, 1)
        for (_, dtype, layout), indices in groups.items():
            batch = torch.stack([items[i][0] for i in indices])
            if layout == "hwc":
                batch = batch.permute(0, 3, 1, 2)  # channels-last view, no copy
            plan = plans[indices[0]]
            if plan.resized != tuple(batch.shape[-2:]):
                batch = _resize(batch, plan.resized, mode)
            top, left, height, width = plan.crop
            batch = batch[:, :, top : top + height, left : left + width]
            factor = rescale_factor if (dtype == torch.uint8 and do_rescale) else 1.0
            # One pass from uint8 into the float output (large fresh temporaries cost more than the arithmetic).
            in_order = indices == list(range(len(items)))
            target = pixel_values if in_order else torch.empty(len(indices), 3, out_h, out_w)
            torch.mul(batch, inv_std * factor, out=target)
            if do_normalize:
                target.sub_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * inv_std)
            if not in_order:
                pixel_values[indices] = target
        return pixel_values, plans

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # save_pretrained of RgbdProcessor stamps its own auto_map on the sub-processors; it belongs to the
        # processor config only.
        output.pop("auto_map", None)
        output["image_mean"] = list(self.image_mean)
        output["image_std"] = list(self.image_std)
        return output


def to_image_tensors(images: Any) -> list[tuple[torch.Tensor, str]]:
    """Flatten `images` into a list of (tensor, layout) without copying pixel data where possible.

    Each tensor is `uint8` or float32, shape (3, H, W) for layout "chw" or (H, W, 3) for layout "hwc".
    Raises `ValueError` naming `images` for anything else.
    """
    return flatten_batch(images, "images", "image", _image_to_tensors)


def _image_to_tensors(image: Any, name: str) -> list[tuple[torch.Tensor, str]]:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return [(torch.from_numpy(np.array(image)), "hwc")]
    if isinstance(image, np.ndarray):
        if image.ndim == 3:
            return [(_check_values(torch.from_numpy(_hwc(image, name)), name), "hwc")]
        if image.ndim == 4:
            batch = _check_values(torch.from_numpy(_hwc(image, name)), name)
            return [(img, "hwc") for img in batch.unbind(0)]
        raise ValueError(
            f"`{name}` must be a numpy array of shape (H, W, 3) or (B, H, W, 3), got shape {tuple(image.shape)}."
        )
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] == 3:
            return [(_check_values(image, name), "chw")]
        if image.ndim == 4 and image.shape[1] == 3:
            batch = _check_values(image, name)
            return [(img, "chw") for img in batch.unbind(0)]
        raise ValueError(
            f"`{name}` must be a torch tensor of shape (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}."
        )
    raise ValueError(
        f"`{name}` must be a PIL image, a numpy array (H, W, 3) or a torch tensor (3, H, W); got {type(image).__name__}."
    )


def _hwc(array: np.ndarray, name: str) -> np.ndarray:
    if array.shape[-1] != 3:
        raise ValueError(
            f"`{name}` must have 3 colour channels last (H, W, 3), got shape {tuple(array.shape)}; convert "
            "grayscale or RGBA images to RGB first."
        )
    if array.dtype.byteorder not in ("=", "|") or not array.flags.writeable:
        array = array.astype(array.dtype.newbyteorder("="), copy=True)
    return array


def _check_values(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """Accept uint8, integers in [0, 255] (cast to uint8) and floats in [0, 1] (cast to float32)."""
    if tensor.numel() == 0 or min(tensor.shape[-3:]) == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(tensor.shape)}).")
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"`{name}` must be uint8 or float in [0, 1], got dtype {tensor.dtype}.")
    if not tensor.is_floating_point():
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > 255:
            raise ValueError(f"`{name}` is an integer image with values in [{low}, {high}]; expected [0, 255].")
        return tensor.to(torch.uint8)
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` contains NaN or inf; RGB intensities must be finite values in [0, 1].")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"`{name}` is a float image with values in [{low:.4g}, {high:.4g}]; float RGB must be in [0, 1] "
            "(pass uint8 for 0-255 data)."
        )
    return tensor


def _resize(batch: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a (B, 3, H, W) uint8 or float batch; antialiased when downscaling with bilinear/bicubic."""
    if mode == "nearest-exact":
        return F.interpolate(batch, size=size, mode=mode)
    downscale = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    if batch.dtype == torch.uint8 and downscale:
        # torch's uint8 antialiased kernel fails an internal assert on some NCHW-contiguous shapes (e.g. 3x2x1 ->
        # 1x1); channels-last is its native layout and gives the same values.
        batch = batch.contiguous(memory_format=torch.channels_last)
    out = F.interpolate(batch, size=size, mode=mode, align_corners=False, antialias=downscale)
    # uint8 results are clamped by the kernel; float bicubic can overshoot [0, 1].
    return out.clamp_(0.0, 1.0) if out.is_floating_point() and mode == "bicubic" else out


def _size_dict(size: Any, name: str) -> dict[str, int]:
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if hasattr(size, "keys"):
        size = {key: int(value) for key, value in dict(size).items() if value is not None}
        if set(size) in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}) and all(
            value > 0 for value in size.values()
        ):
            return size
    raise ValueError(
        f"`{name}` must be an int, a (height, width) pair, {{'height', 'width'}} or {{'shortest_edge'}} with "
        f"positive values; got {size!r}."
    )


def _channel_stats(values: Any, name: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"`{name}` must have 3 values (one per RGB channel), got {len(values)}.")
    return values


def _check_resample(resample: Any) -> int:
    code = int(getattr(resample, "value", resample))
    if code not in _RESAMPLE_TO_TORCH:
        raise ValueError(f"`resample` must be 0 (nearest), 2 (bilinear) or 3 (bicubic), got {resample!r}.")
    return code
