"""RGB image processor for RGB-D models: resize / center crop / rescale / normalise in batched torch ops."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .geometry_rgbd import ResizeCropPlan, plan_resize_crop
from .validation_rgbd import (
    FLOAT32_MAX,
    RETURN_TENSORS,
    array_to_tensor,
    check_channel_values,
    check_choice,
    check_flag,
    check_int,
    check_real,
    flatten_batch,
    nested_list_to_array,
)

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

    Accepted inputs (a single one or a list): PIL images of any mode (16-bit `I;16` keeps its 16 bits; grey is
    replicated to RGB and transparency composited onto white, as transformers' `convert_to_rgb` does); numpy arrays
    (H, W), (H, W, C) or (B, H, W, C), torch tensors (C, H, W) or (B, C, H, W) (the other layout is accepted when
    only it fits), with C = 1 (grey), 3 (RGB) or 4 (RGBA); nested lists (H, W) / (H, W, C) of numbers, as `datasets`
    returns array columns. Values: `uint8` (and other integers in [0, 255]), `uint16` (16-bit: 65535 is full
    intensity), or float (16, 32 or 64-bit) intensities in [0, 1] (NaN and inf are rejected). `rescale_factor` is per
    8-bit unit and applies to integer inputs only: float inputs are already intensities in [0, 1].

    Every setting is checked (ValueError naming it) at construction, when loaded from JSON and when passed per call.

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
        defaults = {
            "do_resize": do_resize,
            "size": {"height": 224, "width": 224} if size is None else size,
            "resample": resample,
            "do_center_crop": do_center_crop,
            "crop_size": {"height": 224, "width": 224} if crop_size is None else crop_size,
            "do_rescale": do_rescale,
            "rescale_factor": rescale_factor,
            "do_normalize": do_normalize,
            "image_mean": DEFAULT_IMAGE_MEAN if image_mean is None else image_mean,
            "image_std": DEFAULT_IMAGE_STD if image_std is None else image_std,
        }
        for name, value in defaults.items():
            setattr(self, name, _SETTING_CHECKS[name](value, name))

    def resolved_settings(self, **overrides: Any) -> dict[str, Any]:
        """Every setting, checked: this processor's, or the value in `overrides` where that is not None. Runs on
        each call, so a setting passed per call, loaded from JSON or assigned to the attribute is checked alike."""
        unknown = set(overrides) - set(_SETTING_CHECKS)
        if unknown:
            raise TypeError(f"RgbdImageProcessor.preprocess got unexpected keyword arguments {sorted(unknown)}.")
        return {
            name: check(getattr(self, name) if overrides.get(name) is None else overrides[name], name)
            for name, check in _SETTING_CHECKS.items()
        }

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
        settings = self.resolved_settings(
            do_resize=do_resize, size=size, do_center_crop=do_center_crop, crop_size=crop_size
        )
        return _plan(input_size, settings)

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
        check_choice(return_tensors, "return_tensors", RETURN_TENSORS)
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
        settings = self.resolved_settings(
            do_resize=do_resize,
            size=size,
            resample=resample,
            do_center_crop=do_center_crop,
            crop_size=crop_size,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
            **kwargs,
        )
        mode = _RESAMPLE_TO_TORCH[settings["resample"]]
        items = to_image_tensors(images)
        plans = [
            _plan(item.tensor.shape[1:] if item.layout == "chw" else item.tensor.shape[:2], settings) for item in items
        ]
        output_sizes = {plan.output_size for plan in plans}
        if len(output_sizes) > 1:
            raise ValueError(
                f"`images` of different aspect ratios give different output sizes {sorted(output_sizes)} with "
                f"size={settings['size']}; use an exact {{'height', 'width'}} size or a center crop so that the "
                "batch can be stacked."
            )

        # Group images that share shape, dtype and memory layout: one stack and one resize per group.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[(tuple(item.tensor.shape), item.tensor.dtype, item.layout, item.bits)].append(index)
        out_h, out_w = output_sizes.pop()
        pixel_values = torch.empty(len(items), 3, out_h, out_w, dtype=torch.float32)
        inv_std = torch.tensor(settings["image_std"], dtype=torch.float32).view(1, 3, 1, 1).reciprocal()
        if not settings["do_normalize"]:
            inv_std = torch.ones(1, 3, 1, 1)
        for (_, _, layout, bits), indices in groups.items():
            batch = torch.stack([items[i].tensor for i in indices])
            if layout == "hwc":
                batch = batch.permute(0, 3, 1, 2)  # channels-last view, no copy
            plan = plans[indices[0]]
            if plan.resized != tuple(batch.shape[-2:]):
                batch = _resize(batch, plan.resized, mode)
            top, left, height, width = plan.crop
            batch = batch[:, :, top : top + height, left : left + width]
            factor = _intensity_factor(bits, settings["do_rescale"], settings["rescale_factor"])
            _check_output_range(255.0 if bits == 8 else 1.0, factor, settings)
            # One pass from uint8 into the float output (large fresh temporaries cost more than the arithmetic).
            in_order = indices == list(range(len(items)))
            target = pixel_values if in_order else torch.empty(len(indices), 3, out_h, out_w)
            torch.mul(batch, inv_std * factor, out=target)
            if settings["do_normalize"]:
                target.sub_(torch.tensor(settings["image_mean"], dtype=torch.float32).view(1, 3, 1, 1) * inv_std)
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


class ImageItem(NamedTuple):
    """One RGB image ready to stack: `tensor` (3, H, W) for layout "chw" or (H, W, 3) for "hwc"; `bits` 8 for
    uint8 values (0-255), 16 for 16-bit values stored as float32 in [0, 1], 0 for float intensities in [0, 1]."""

    tensor: torch.Tensor
    layout: str
    bits: int


# Channel counts of an image: grey, RGB, RGBA (transformers' convert_to_rgb infers the layout from the same set).
_CHANNEL_COUNTS = (1, 3, 4)
_PIL_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_image_tensors(images: Any) -> list[ImageItem]:
    """Flatten `images` into a list of `ImageItem` without copying pixel data where possible.

    Grey images are replicated to three channels and RGBA ones composited onto white, as transformers'
    `convert_to_rgb` does. Raises `ValueError` naming `images` for anything else.
    """
    return flatten_batch(images, "images", "image", _image_to_tensors, item_nesting=3)


def _image_to_tensors(image: Any, name: str) -> list[ImageItem]:
    if isinstance(image, (list, tuple)):  # one image as a nested list: (H, W) grey or (H, W, C)
        image = nested_list_to_array(image, name)
    if isinstance(image, Image.Image):
        image = _pil_to_array(image, name)
    if isinstance(image, np.ndarray):
        tensor, prefer = array_to_tensor(image, name), "hwc"
    elif isinstance(image, torch.Tensor):
        tensor, prefer = image.detach().cpu(), "chw"
    else:
        raise ValueError(
            f"`{name}` must be a PIL image, a numpy array (H, W, 3), a torch tensor (3, H, W) or a nested list; got "
            f"{type(image).__name__}."
        )
    if tensor.ndim == 2:  # (H, W) grey
        tensor, prefer = tensor[..., None], "hwc"
    if tensor.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (H, W), (H, W, C), (C, H, W) or a batch of those with C in {_CHANNEL_COUNTS}, "
            f"got shape {tuple(tensor.shape)}."
        )
    layout = _infer_layout(tuple(tensor.shape[-3:]), prefer, name)
    if tensor.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(tensor.shape)}).")
    tensor, bits = _check_values(tensor, name)
    tensor = _to_rgb(tensor, -1 if layout == "hwc" else -3, bits)
    if tensor.ndim == 3:
        return [ImageItem(tensor, layout, bits)]
    return [ImageItem(item, layout, bits) for item in tensor.unbind(0)]


def _pil_to_array(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image as an (H, W) or (H, W, 3) array: 16-bit modes keep their 16 bits, transparency is composited
    onto white (as transformers' `convert_to_rgb`), every other mode is converted to RGB by Pillow."""
    if image.mode in _PIL_16_BIT_MODES:
        return np.asarray(image).astype(np.uint16)
    if image.mode in ("I", "F", "L", "RGB"):
        return np.asarray(image)
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as error:
        raise ValueError(
            f"`{name}` is a PIL image in mode {image.mode!r} that Pillow cannot convert to RGB."
        ) from error


def _infer_layout(shape: tuple[int, int, int], prefer: str, name: str) -> str:
    """ "hwc" or "chw" for the last three dimensions `shape`: the `prefer`red one when its channel count fits."""
    fits = {"hwc": shape[-1] in _CHANNEL_COUNTS, "chw": shape[0] in _CHANNEL_COUNTS}
    other = "chw" if prefer == "hwc" else "hwc"
    for layout in (prefer, other):
        if fits[layout]:
            return layout
    raise ValueError(
        f"`{name}` must have 1 (grey), 3 (RGB) or 4 (RGBA) colour channels first or last, got shape {shape}."
    )


def _check_values(tensor: torch.Tensor, name: str) -> tuple[torch.Tensor, int]:
    """uint8 stays uint8 (8 bits); uint16 becomes float32 in [0, 1] (16 bits); other integers must lie in
    [0, 255] (cast to uint8); floats must be finite in [0, 1] (cast to float32, 0 bits)."""
    if tensor.dtype == torch.uint8:
        return tensor, 8
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"`{name}` must be uint8, uint16 or float in [0, 1], got dtype {tensor.dtype}.")
    if tensor.dtype == torch.uint16:
        return tensor.to(torch.float32).div_(65535.0), 16
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.int64)  # torch has no min / max for uint32 / uint64
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"`{name}` is an integer image with values in [{low}, {high}]; expected [0, 255] (pass uint16 for "
                "16-bit images)."
            )
        return tensor.to(torch.uint8), 8
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` contains NaN or inf; RGB intensities must be finite values in [0, 1].")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"`{name}` is a float image with values in [{low:.4g}, {high:.4g}]; float RGB must be in [0, 1] "
            "(pass uint8 for 0-255 data)."
        )
    return tensor, 0


def _to_rgb(tensor: torch.Tensor, channel_dim: int, bits: int) -> torch.Tensor:
    """Three channels: grey replicated (a view), RGBA composited onto white (as transformers' `convert_to_rgb`)."""
    channels = tensor.shape[channel_dim]
    if channels == 3:
        return tensor
    if channels == 1:
        shape = list(tensor.shape)
        shape[channel_dim] = 3
        return tensor.expand(shape)
    rgb, alpha = tensor.split([3, 1], dim=channel_dim)
    white = 255.0 if bits == 8 else 1.0
    alpha = alpha.to(torch.float32) / white
    composite = rgb.to(torch.float32) * alpha + (1.0 - alpha) * white
    return composite.round_().to(torch.uint8) if bits == 8 else composite


def _plan(input_size: tuple[int, int], settings: dict[str, Any]) -> ResizeCropPlan:
    size = settings["size"] if settings["do_resize"] else None
    return plan_resize_crop(input_size, size, settings["crop_size"] if settings["do_center_crop"] else None)


def _intensity_factor(bits: int, do_rescale: bool, rescale_factor: float) -> float:
    """What the stacked values of an image of `bits` are multiplied by: `rescale_factor` per 8-bit unit for
    integer images (16-bit ones, held in [0, 1], are brought to the 8-bit scale first); 1 for float intensities."""
    if bits == 8:
        return rescale_factor if do_rescale else 1.0
    if bits == 16:
        return 255.0 * rescale_factor if do_rescale else 65535.0
    return 1.0


def _check_output_range(peak_input: float, factor: float, settings: dict[str, Any]) -> None:
    """ValueError naming the settings whose combination sends inputs up to `peak_input` (times `factor`) beyond
    float32's range: each setting is finite, but e.g. rescale_factor=1e30 with image_std=1e-10 is not."""
    std = settings["image_std"] if settings["do_normalize"] else (1.0, 1.0, 1.0)
    mean = settings["image_mean"] if settings["do_normalize"] else (0.0, 0.0, 0.0)
    peak = max(peak_input * factor / s + abs(m) / s for m, s in zip(mean, std, strict=True))
    if not peak < FLOAT32_MAX:
        raise ValueError(
            f"`rescale_factor`={settings['rescale_factor']}, `image_mean`={settings['image_mean']} and `image_std`="
            f"{settings['image_std']} send pixel values up to {peak:.3g}, beyond float32's range."
        )


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
    """`size` as {"height", "width"} or {"shortest_edge"} (+ "longest_edge") of positive ints; ValueError naming
    `name` for anything else (0, negatives, fractions, bools, strings)."""
    expected = (
        f"`{name}` must be a positive int, a (height, width) pair of them, {{'height', 'width'}} or "
        f"{{'shortest_edge'}} (optionally with 'longest_edge') with positive int values; got {size!r}."
    )
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    elif isinstance(size, int) and not isinstance(size, bool):
        size = {"height": size, "width": size}
    if not hasattr(size, "keys"):
        raise ValueError(expected)
    size = {key: value for key, value in dict(size).items() if value is not None}
    if set(size) not in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}):
        raise ValueError(expected)
    return {key: check_int(value, f"{name}[{key!r}]", 1) for key, value in size.items()}


def _check_resample(resample: Any) -> int:
    code = getattr(resample, "value", resample)
    if isinstance(code, bool) or not isinstance(code, int) or code not in _RESAMPLE_TO_TORCH:
        raise ValueError(f"`resample` must be 0 (nearest), 2 (bilinear) or 3 (bicubic), got {resample!r}.")
    return code


# Every setting and its check (value, name) -> checked value; `resolved_settings` runs them on each call.
_SETTING_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "do_resize": check_flag,
    "size": _size_dict,
    "resample": lambda value, name: _check_resample(value),
    "do_center_crop": check_flag,
    "crop_size": _size_dict,
    "do_rescale": check_flag,
    "rescale_factor": lambda value, name: check_real(value, name, positive=True),
    "do_normalize": check_flag,
    "image_mean": check_channel_values,
    "image_std": lambda value, name: check_channel_values(value, name, positive=True),
}
