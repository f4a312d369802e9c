"""Depth processor: any sensor's depth -> metres -> validity mask -> model representation (+ depth tokens)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .depth_hha import compute_hha
from .geometry_rgbd import ResizeCropPlan, nearest_indices, plan_resize_crop, transform_intrinsics
from .validation_rgbd import (
    FLOAT32_MAX,
    RETURN_TENSORS,
    array_to_tensor,
    check_choice,
    check_depth_mask,
    check_flag,
    check_image_tensor,
    check_int,
    check_intrinsics,
    check_pinhole_values,
    check_real,
    flatten_batch,
    nested_list_depth,
    nested_list_to_array,
)

# A map between metres and model values: (processor, safe, depth_mask, intrinsics) -> values, where `safe`
# (B, 1, H, W) holds the input with holes replaced by 1 (keeps gradients finite) and `intrinsics` is (B, 3, 3) or
# None. It reads its parameters from the processor; the caller sets holes to 0 afterwards.
DepthMap = Callable[["RgbdDepthProcessor", torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class DepthRepresentation:
    """One depth representation: the `channels` of its model values and the pair of maps (`from_metres`: metres ->
    model values, `to_metres`: model values -> metres). `to_metres` is None when there is no inverse, and
    `not_invertible_because` then says why."""

    channels: int
    from_metres: DepthMap
    to_metres: DepthMap | None = None
    not_invertible_because: str = ""


def _metric_from_metres(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    return safe / processor.max_depth


def _metric_to_metres(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    return safe * processor.max_depth


def _disparity(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    """baseline * fx / value: its own inverse (metres -> disparity and disparity -> metres)."""
    if intrinsics is None:
        raise ValueError(
            '`representation="disparity"` needs `intrinsics` (fx of the rescaled camera matrix), per depth map.'
        )
    intrinsics = check_intrinsics(torch.as_tensor(intrinsics, device=safe.device), safe.shape[0])
    focal_length = intrinsics[:, 0, 0].to(safe.dtype).view(-1, 1, 1, 1)
    return processor.baseline * focal_length / safe


def _log_from_metres(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    low, high = math.log(processor.min_depth), math.log(processor.max_depth)
    return (torch.log(safe) - low) / (high - low)


def _log_to_metres(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    low, high = math.log(processor.min_depth), math.log(processor.max_depth)
    return torch.exp(safe * (high - low) + low)


def _per_image_from_metres(
    processor: RgbdDepthProcessor, safe: torch.Tensor, mask: torch.Tensor, intrinsics: Any
) -> torch.Tensor:
    return _standardise_valid(safe, mask)


def _dataset_from_metres(
    processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any
) -> torch.Tensor:
    return (safe - processor.depth_mean) / processor.depth_std


def _dataset_to_metres(processor: RgbdDepthProcessor, safe: torch.Tensor, mask: Any, intrinsics: Any) -> torch.Tensor:
    return safe * processor.depth_std + processor.depth_mean


def _hha_from_metres(
    processor: RgbdDepthProcessor, safe: torch.Tensor, mask: torch.Tensor, intrinsics: Any
) -> torch.Tensor:
    if intrinsics is None:
        raise ValueError('`representation="hha"` requires `intrinsics` (camera matrix per depth map).')
    with torch.no_grad():
        return compute_hha(torch.where(mask, safe, 0.0), mask, intrinsics)


# Every representation the processor offers, by name (in the order of `REPRESENTATIONS`).
DEPTH_REPRESENTATIONS: dict[str, DepthRepresentation] = {
    "metric": DepthRepresentation(1, _metric_from_metres, _metric_to_metres),
    "disparity": DepthRepresentation(1, _disparity, _disparity),
    "log": DepthRepresentation(1, _log_from_metres, _log_to_metres),
    "per_image": DepthRepresentation(
        1,
        _per_image_from_metres,
        not_invertible_because="each map is standardised with its own mean and standard deviation, which are not kept",
    ),
    "dataset": DepthRepresentation(1, _dataset_from_metres, _dataset_to_metres),
    "hha": DepthRepresentation(
        3,
        _hha_from_metres,
        not_invertible_because="its channels mix depth with the estimated gravity and lowest scene point",
    ),
}
REPRESENTATIONS = tuple(DEPTH_REPRESENTATIONS)
# Representations with an exact, differentiable inverse (what attacks need to state budgets in metres).
INVERTIBLE_REPRESENTATIONS = tuple(name for name, rep in DEPTH_REPRESENTATIONS.items() if rep.to_metres is not None)
DEPTH_ENCODINGS = ("plain", "sunrgbd")
# Non-zero pixels an integer map needs before its values can tell that it is a SUN RGB-D PNG read as plain depth
# (a plain map passes the multiple-of-8 test by chance with probability 8 ** -count).
_SUNRGBD_MIN_PIXELS = 16
IGNORE_INDEX = -100  # depth token of a patch without valid depth: ignored by cross-entropy

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the same field of view

# Geometry to follow: per-sample plans, or a function of each depth map's (height, width).
PlanSource = list[ResizeCropPlan] | Callable[[tuple[int, int]], ResizeCropPlan] | None

_PIL_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "L")


class RgbdDepthProcessorKwargs(TypedDict, total=False):
    representation: str
    min_depth: float
    max_depth: float
    depth_scale: float
    depth_encoding: str
    depth_mean: float
    depth_std: float
    baseline: float
    depth_vocab_size: int
    depth_patch_size: int


class RgbdDepthProcessor(BaseImageProcessor):
    r"""
    Turns depth maps from any sensor or data set into model inputs.

    Every input is first converted to metres: float inputs already are metres; integer arrays and PIL `I;16` / `I`
    / `L` images are multiplied by `depth_scale` (0.001 for millimetres, 0.0001 for some RealSense models);
    `depth_encoding="sunrgbd"` first undoes SUN RGB-D's PNG bit rotation (millimetres rotated left by 3 bits).
    Pixels that are 0, NaN, inf or outside [`min_depth`, `max_depth`] are holes: `depth_mask` is False there and
    `depth_values` is exactly 0 there in every representation. Negative depths are corrupt input (ValueError).

    Geometry follows the RGB image processor (see [`RgbdProcessor`]): the depth map is sampled with nearest
    neighbour at the RGB output's field of view and size, so valid and invalid pixels never mix and depth edges are
    never averaged; camera intrinsics are rescaled with it.

    Representations (`representation=`), computed on valid pixels:
    - `"metric"`: depth / max_depth, in (0, 1].
    - `"disparity"`: baseline * fx / depth, with fx from the rescaled intrinsics (pixels; needs `intrinsics`).
    - `"log"`: (ln depth - ln min_depth) / (ln max_depth - ln min_depth), in [0, 1].
    - `"per_image"`: depth standardised over the valid pixels of each map (not invertible).
    - `"dataset"`: (depth - depth_mean) / depth_std, in metres.
    - `"hha"`: 3 channels (horizontal disparity, height above the lowest point, angle to gravity), the HHA image
      / 255; needs `intrinsics` (not invertible).

    With `depth_vocab_size=V`, each `depth_patch_size` x `depth_patch_size` patch also gets a depth token: the index
    of its median valid depth among V log-spaced bins over [min_depth, max_depth], or -100 when the patch has no
    valid pixel. `depth_patch_size` must equal the patch size of the model that consumes the tokens, and divide the
    output height and width.

    Args:
        representation (`str`, defaults to `"metric"`): one of `REPRESENTATIONS`.
        min_depth, max_depth (`float`, default to 0.1 and 10.0): valid range in metres.
        depth_scale (`float`, defaults to 0.001): metres per unit of integer depth; can be overridden per call.
        depth_encoding (`str`, *optional*): `"plain"` or `"sunrgbd"`. The default (None) reads integers as plain
            depth units and raises a ValueError for integer maps whose values say they are SUN RGB-D PNGs (every
            non-zero value a multiple of 8, most beyond `max_depth` once scaled); `"plain"` skips that check.
        depth_mean, depth_std (`float`, *optional*): statistics in metres for `representation="dataset"`.
        baseline (`float`, defaults to 0.075): stereo baseline in metres for `"disparity"` (0.075 Kinect).
        depth_vocab_size (`int`, *optional*): number of depth tokens; None disables tokens.
        depth_patch_size (`int`, defaults to 16): patch size of the depth tokens.
    """

    valid_kwargs = RgbdDepthProcessorKwargs

    def __init__(
        self,
        representation: str = "metric",
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        depth_scale: float = 0.001,
        depth_encoding: str | None = None,
        depth_mean: float | None = None,
        depth_std: float | None = None,
        baseline: float = 0.075,
        depth_vocab_size: int | None = None,
        depth_patch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.representation = representation
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.depth_scale = depth_scale
        self.depth_encoding = depth_encoding
        self.depth_mean = depth_mean
        self.depth_std = depth_std
        self.baseline = baseline
        self.depth_vocab_size = depth_vocab_size
        self.depth_patch_size = depth_patch_size
        self.check_settings()

    def check_settings(self) -> None:
        """Check every setting and store it in its canonical type (floats, ints); ValueError naming the setting.
        Runs at construction (so also when loaded from JSON) and on each call, so an assigned attribute is checked
        too."""
        self.representation = check_choice(self.representation, "representation", REPRESENTATIONS)
        self.depth_encoding = check_choice(self.depth_encoding, "depth_encoding", (None, *DEPTH_ENCODINGS))
        self.min_depth = check_real(self.min_depth, "min_depth", positive=True)
        self.max_depth = check_real(self.max_depth, "max_depth", positive=True)
        if not self.min_depth < self.max_depth:
            raise ValueError(
                f"`min_depth` and `max_depth` must satisfy 0 < min_depth < max_depth < inf, got {self.min_depth} "
                f"and {self.max_depth}."
            )
        self.depth_scale = _check_depth_scale(self.depth_scale)
        if self.representation == "dataset" and (self.depth_mean is None or self.depth_std is None):
            raise ValueError('`representation="dataset"` needs `depth_mean` and `depth_std` (metres).')
        if self.depth_mean is not None:
            self.depth_mean = check_real(self.depth_mean, "depth_mean")
        if self.depth_std is not None:
            self.depth_std = check_real(self.depth_std, "depth_std", positive=True)
        if self.representation == "dataset":
            farthest = max(abs(self.min_depth - self.depth_mean), abs(self.max_depth - self.depth_mean))
            if not farthest / self.depth_std < FLOAT32_MAX:
                raise ValueError(
                    f"`depth_mean`={self.depth_mean} and `depth_std`={self.depth_std} send depths in [min_depth, "
                    "max_depth] beyond float32's range."
                )
        self.baseline = check_real(self.baseline, "baseline", positive=True)
        if self.depth_vocab_size is not None:
            self.depth_vocab_size = check_int(self.depth_vocab_size, "depth_vocab_size", 2)
        self.depth_patch_size = check_int(self.depth_patch_size, "depth_patch_size", 1)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("auto_map", None)  # the processor's auto_map, stamped here by RgbdProcessor.save_pretrained
        return output

    @property
    def model_input_names(self) -> list[str]:
        names = ["depth_values", "depth_mask"]
        return names + ["depth_token_ids"] if self.depth_vocab_size is not None else names

    @property
    def num_channels(self) -> int:
        """Channels of `depth_values`: 3 for HHA, else 1."""
        return DEPTH_REPRESENTATIONS[self.representation].channels

    # ------------------------------------------------------------------ main entry points
    def __call__(self, depths: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(depths, **kwargs)

    def preprocess(
        self,
        depths: Any,
        intrinsics: Any = None,
        plans: PlanSource = None,
        output_size: tuple[int, int] | None = None,
        depth_scale: float | None = None,
        allow_aspect_change: bool = False,
        return_intrinsics: bool = False,
        return_tensors: str | None = "pt",
        depth_encoding: str | None = None,
    ) -> BatchFeature:
        """Process one depth map or a batch.

        Args:
            depths: a depth map or a list of them: numpy (H, W), (H, W, 1) or (1, H, W) (of any integer or float
                dtype, negative-stride views included), torch (H, W), (1, H, W), (H, W, 1) or (B, 1, H, W), nested
                lists (H, W) of numbers (as `datasets` returns Array2D columns), PIL `F` / `I;16` / `I` / `L` images.
                A (1, W, 1) shape is a 1 x W map for numpy and nested lists, a W x 1 map for torch.
            intrinsics: (3, 3) pinhole matrix shared by the batch, (B, 3, 3), or a list of (3, 3), in the pixel
                grid of each input depth map. Required for `"disparity"` and `"hha"`.
            plans: the RGB geometry to follow (what [`RgbdProcessor`] passes): one `ResizeCropPlan` per sample, or a
                callable `(height, width) -> ResizeCropPlan` applied to each depth map's size. Default: the whole
                map, resized to `output_size` if given, else kept at its size.
            output_size: (height, width) when `plans` is not given.
            depth_scale: metres per integer unit for this call (default: `self.depth_scale`).
            allow_aspect_change: with a list of `plans`, accept depth maps whose aspect ratio differs from the RGB
                image's (the depth map is then stretched to the RGB field of view).
            return_intrinsics: also return the rescaled `intrinsics` (B, 3, 3).
            depth_encoding: `"plain"` or `"sunrgbd"` for this call (default: `self.depth_encoding`).

        Returns:
            `BatchFeature` with `depth_values` (B, C, H, W) float32 (C = 3 for HHA, else 1), `depth_mask`
            (B, 1, H, W) bool, and `depth_token_ids` (B, N_patches) long when `depth_vocab_size` is set.
        """
        check_choice(return_tensors, "return_tensors", RETURN_TENSORS)
        depth_m, depth_mask, intrinsics_out = self.depth_in_metres(
            depths,
            intrinsics=intrinsics,
            plans=plans,
            output_size=output_size,
            depth_scale=depth_scale,
            allow_aspect_change=allow_aspect_change,
            depth_encoding=depth_encoding,
        )
        data = {"depth_values": self.from_metres(depth_m, depth_mask, intrinsics_out), "depth_mask": depth_mask}
        if self.depth_vocab_size is not None:
            data["depth_token_ids"] = self.depth_tokens(depth_m, depth_mask)
        if check_flag(return_intrinsics, "return_intrinsics"):
            if intrinsics_out is None:
                raise ValueError("`return_intrinsics=True` needs `intrinsics`.")
            data["intrinsics"] = intrinsics_out
        return BatchFeature(data, tensor_type=return_tensors)

    def depth_in_metres(
        self,
        depths: Any,
        intrinsics: Any = None,
        plans: PlanSource = None,
        output_size: tuple[int, int] | None = None,
        depth_scale: float | None = None,
        allow_aspect_change: bool = False,
        depth_encoding: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Convert, resample and mask a batch of depth maps (`depth_scale` and `depth_encoding` override the
        processor's settings for this call).

        Returns:
            depth_m (B, 1, H, W) float32 metres with 0 at holes, depth_mask (B, 1, H, W) bool, and the rescaled
            intrinsics (B, 3, 3) float32 (None when `intrinsics` is None).
        """
        self.check_settings()
        allow_aspect_change = check_flag(allow_aspect_change, "allow_aspect_change")
        scale = self.depth_scale if depth_scale is None else _check_depth_scale(depth_scale)
        if depth_encoding is None:
            depth_encoding = self.depth_encoding
        else:
            depth_encoding = check_choice(depth_encoding, "depth_encoding", DEPTH_ENCODINGS)
        maps = to_depth_tensors(depths)
        if plans is None:
            plans = [plan_resize_crop(tuple(m.shape), _exact_size(output_size), None) for m in maps]
        elif callable(plans):
            plans = [plans(tuple(m.shape)) for m in maps]
        elif isinstance(plans, (list, tuple)) and all(isinstance(plan, ResizeCropPlan) for plan in plans):
            _check_follows_rgb(maps, plans, allow_aspect_change)
        else:
            raise ValueError(
                f"`plans` must be None, a list of ResizeCropPlan (one per depth map) or a callable (height, width) -> "
                f"ResizeCropPlan, got {type(plans).__name__}."
            )
        output_sizes = {plan.output_size for plan in plans}
        if len(output_sizes) > 1:
            raise ValueError(
                f"depth maps would get different output sizes {sorted(output_sizes)}; pass `output_size`."
            )

        if any(m.is_floating_point() for m in maps) and depth_encoding == "sunrgbd":
            raise ValueError(
                '`depths` holds float maps but depth_encoding="sunrgbd" expects the raw uint16 PNG values.'
            )
        sampled = []
        index_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        for depth, plan in zip(maps, plans, strict=True):
            key = (tuple(depth.shape), plan.window, plan.output_size, depth.device)
            if key not in index_cache:
                rows, cols = nearest_indices(plan.window, tuple(depth.shape), plan.output_size)
                index_cache[key] = (rows.to(depth.device)[:, None], cols.to(depth.device)[None, :])
            rows, cols = index_cache[key]
            # Sample first, convert second: unit conversion only touches output-resolution pixels.
            sampled.append(depth[rows, cols])
        depth = self._raw_to_metres(sampled, scale, depth_encoding).unsqueeze(1)
        depth_mask = torch.isfinite(depth) & (depth >= self.min_depth) & (depth <= self.max_depth)
        depth_m = torch.where(depth_mask, depth, torch.zeros((), dtype=depth.dtype, device=depth.device))

        intrinsics_out = None
        if intrinsics is not None:
            matrices = _intrinsics_list(intrinsics, len(maps))
            intrinsics_out = torch.stack(
                [
                    transform_intrinsics(k, plan.window, tuple(m.shape), plan.output_size)
                    for k, plan, m in zip(matrices, plans, maps, strict=True)
                ]
            ).to(depth.device)
        return depth_m, depth_mask, intrinsics_out

    def _raw_to_metres(self, sampled: list[torch.Tensor], scale: float, encoding: str | None) -> torch.Tensor:
        """Stack output-resolution maps and convert them to float32 metres (integers times `scale`, decoded as
        `encoding` says)."""
        if any(m.dtype != sampled[0].dtype for m in sampled):  # mixed dtypes (rare): convert map by map
            return torch.stack([self._raw_to_metres([m], scale, encoding)[0] for m in sampled])
        raw = torch.stack(sampled)
        if raw.is_floating_point():
            return raw.to(torch.float32)
        if encoding == "sunrgbd":
            raw = decode_sunrgbd_depth(raw)
        elif encoding is None:
            _check_not_sunrgbd(raw, scale, self.max_depth)
        # float32 holds every 16-bit (and up to 24-bit) integer exactly; one rounding in the multiply.
        return raw.to(torch.float32).mul_(scale)

    # ------------------------------------------------------------------ representations
    def from_metres(
        self,
        depth_m: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Metres -> this processor's representation. Differentiable; exactly 0 at holes.

        Args:
            depth_m: (B, 1, H, W) depth in metres.
            depth_mask: (B, 1, H, W) bool validity; default: finite values in [min_depth, max_depth].
            intrinsics: (B, 3, 3) intrinsics of this resolution (needed for `"disparity"` and `"hha"`).

        Returns:
            (B, C, H, W) depth values, C = 3 for `"hha"` else 1.
        """
        depth_m, depth_mask = self._check_maps(depth_m, depth_mask, "depth_m")
        safe = torch.where(depth_mask, depth_m, torch.ones_like(depth_m))  # keeps gradients finite at holes
        values = DEPTH_REPRESENTATIONS[self.representation].from_metres(self, safe, depth_mask, intrinsics)
        return torch.where(depth_mask, values, torch.zeros((), dtype=values.dtype, device=values.device))

    def to_metres(
        self,
        depth_values: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """This processor's representation -> metres. Differentiable; exactly 0 at holes.

        Only for the invertible representations (`INVERTIBLE_REPRESENTATIONS`): `"per_image"` discards each map's
        own mean and scale, and `"hha"` mixes depth with the estimated scene geometry, so neither has an inverse.

        Args:
            depth_values: (B, 1, H, W) values in this representation.
            depth_mask: (B, 1, H, W) bool validity; default: non-zero values.
            intrinsics: (B, 3, 3) intrinsics of this resolution (needed for `"disparity"`).

        Returns:
            (B, 1, H, W) depth in metres.
        """
        representation = DEPTH_REPRESENTATIONS[self.representation]
        if representation.to_metres is None:
            raise ValueError(
                f'`to_metres` is not available for representation="{self.representation}": '
                f"{representation.not_invertible_because}. Use one of {INVERTIBLE_REPRESENTATIONS} to state depth "
                "budgets in metres."
            )
        if depth_mask is None:
            depth_mask = depth_values != 0
        depth_values, depth_mask = self._check_maps(depth_values, depth_mask, "depth_values")
        safe = torch.where(depth_mask, depth_values, torch.ones_like(depth_values))
        metres = representation.to_metres(self, safe, depth_mask, intrinsics)
        return torch.where(depth_mask, metres, torch.zeros((), dtype=metres.dtype, device=metres.device))

    def depth_tokens(self, depth_m: torch.Tensor, depth_mask: torch.Tensor) -> torch.Tensor:
        """Depth "words": per patch, the log-spaced bin of the median valid depth, -100 without valid depth.

        Args:
            depth_m: (B, 1, H, W) metres; depth_mask: (B, 1, H, W) bool.

        Returns:
            (B, (H / p) * (W / p)) long, row-major patch order, p = `depth_patch_size`.
        """
        if self.depth_vocab_size is None:
            raise ValueError("`depth_vocab_size` is not set: this processor makes no depth tokens.")
        return depth_token_ids(
            depth_m, depth_mask, self.depth_vocab_size, self.depth_patch_size, self.min_depth, self.max_depth
        )

    @staticmethod
    def _check_maps(values: torch.Tensor, mask: torch.Tensor | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_tensor(values, name)
        if mask is None:
            mask = torch.isfinite(values) & (values > 0)
        return values, check_depth_mask(mask, values, values_name=name)


def _check_follows_rgb(maps: list[torch.Tensor], plans: list[ResizeCropPlan], allow_aspect_change: bool) -> None:
    if len(plans) != len(maps):
        raise ValueError(
            f"got {len(plans)} images but {len(maps)} depth maps; `images` and `depths` must pair up one to one."
        )
    if allow_aspect_change:
        return
    for index, (depth, plan) in enumerate(zip(maps, plans, strict=True)):
        rgb_ratio = plan.input_size[1] / plan.input_size[0]
        depth_ratio = depth.shape[1] / depth.shape[0]
        if abs(depth_ratio - rgb_ratio) > ASPECT_TOLERANCE * rgb_ratio:
            raise ValueError(
                f"`images[{index}]` is {plan.input_size[0]}x{plan.input_size[1]} but `depths[{index}]` is "
                f"{depth.shape[0]}x{depth.shape[1]}: different aspect ratios, so depth cannot be registered to the "
                "RGB image. Crop them to the same field of view, or pass `allow_aspect_change=True` to stretch depth."
            )


def depth_token_ids(
    depth_m: torch.Tensor,
    depth_mask: torch.Tensor,
    vocab_size: int,
    patch_size: int,
    min_depth: float,
    max_depth: float,
) -> torch.Tensor:
    """Quantise each patch's median valid depth into `vocab_size` log-spaced bins over [min_depth, max_depth].

    Args:
        depth_m: (B, 1, H, W) metres; depth_mask: (B, 1, H, W) bool.

    Returns:
        (B, N_patches) long in [0, vocab_size), -100 for patches without valid depth.
    """
    batch, _, height, width = depth_m.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"`depth_patch_size`={patch_size} must divide the depth output size {height}x{width}; it must equal the "
            "model's patch size and the image size must be a multiple of it."
        )
    nan = torch.full((), float("nan"), dtype=depth_m.dtype, device=depth_m.device)
    patches = torch.where(depth_mask, depth_m, nan).view(
        batch, height // patch_size, patch_size, width // patch_size, patch_size
    )
    patches = patches.permute(0, 1, 3, 2, 4).reshape(batch, -1, patch_size * patch_size)
    median = patches.nanmedian(dim=-1).values  # NaN where a patch has no valid pixel
    low, high = math.log(min_depth), math.log(max_depth)
    position = (torch.log(median.clamp(min=min_depth, max=max_depth)) - low) / (high - low)
    ids = (position * vocab_size).floor().clamp_(0, vocab_size - 1).to(torch.long)
    return torch.where(torch.isnan(median), torch.full_like(ids, IGNORE_INDEX), ids)


def _check_not_sunrgbd(raw: torch.Tensor, scale: float, max_depth: float) -> None:
    """ValueError when integer maps `raw` (B, H, W) look like SUN RGB-D PNGs read as plain depth: at least
    `_SUNRGBD_MIN_PIXELS` non-zero values, most of them beyond `max_depth` once scaled, and every one a multiple of
    8 (millimetres rotated left by 3 bits). One host sync for the batch. The range test reads every 4th row and
    column, and the multiple-of-8 test (on every pixel) runs only on maps that are mostly out of range, so ordinary
    data pays two comparisons on 1/16 of its pixels."""
    sample = raw[:, ::4, ::4].to(torch.int32).flatten(1)
    nonzero = (sample != 0).sum(dim=1)
    beyond = (sample > math.floor(max_depth / scale)).sum(dim=1)
    suspects = ((nonzero >= _SUNRGBD_MIN_PIXELS) & (2 * beyond > nonzero)).nonzero().flatten().tolist()
    for index in suspects:
        if not bool((raw[index].to(torch.int32) & 7).any()):
            raise ValueError(
                f"`depths[{index}]` looks like a SUN RGB-D depth PNG read as plain depth: every non-zero value is a "
                f"multiple of 8 and most are beyond max_depth={max_depth} m once scaled. Pass "
                '`depth_encoding="sunrgbd"` to undo its 3-bit rotation, or `depth_encoding="plain"` if these '
                "values are plain depth units."
            )


def decode_sunrgbd_depth(raw: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Undo SUN RGB-D's PNG encoding: millimetres rotated left by 3 bits in 16 bits. Returns int64 millimetres."""
    raw = torch.as_tensor(raw).to(torch.int64)
    if raw.numel() and (int(raw.min()) < 0 or int(raw.max()) > 0xFFFF):
        raise ValueError('depth_encoding="sunrgbd" expects 16-bit PNG values in [0, 65535].')
    return ((raw >> 3) | (raw << 13)) & 0xFFFF


def to_depth_tensors(depths: Any) -> list[torch.Tensor]:
    """Flatten `depths` into a list of 2-D tensors (H, W) in their original dtype, checking shapes and signs."""
    return flatten_batch(depths, "depths", "depth map", _depth_to_tensors, item_nesting=2)


def _depth_to_tensors(depth: Any, name: str) -> list[torch.Tensor]:
    if isinstance(depth, (list, tuple)):  # one map as a nested list (H, W), as `datasets` returns Array2D columns
        depth = nested_list_to_array(depth, name)
    if isinstance(depth, Image.Image):
        if depth.mode == "F":
            depth = np.asarray(depth, dtype=np.float32)
        elif depth.mode in _PIL_INTEGER_MODES:
            depth = np.asarray(depth).astype(np.int32)
        else:
            raise ValueError(
                f"`{name}` is a PIL image in mode {depth.mode!r}; depth images must be single-channel: 'F' (metres), "
                "'I;16' / 'I' / 'L' (integer units times depth_scale)."
            )
    channels_last = isinstance(depth, np.ndarray)  # numpy (1, W, 1) is a 1 x W map, torch (1, H, 1) an H x 1 map
    if channels_last:
        depth = array_to_tensor(depth, name)
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"`{name}` must be a numpy array, a torch tensor or a PIL image, got {type(depth).__name__}.")
    if depth.dtype == torch.bool or depth.is_complex():
        raise ValueError(f"`{name}` must hold integer or float depth, got dtype {depth.dtype}.")
    depth = depth.detach()
    if depth.ndim == 2:
        maps = [depth]
    elif depth.ndim == 3 and depth.shape[-1] == 1 and (channels_last or depth.shape[0] != 1):
        maps = [depth[..., 0]]
    elif depth.ndim == 3 and depth.shape[0] == 1:
        maps = [depth[0]]
    elif depth.ndim == 4 and depth.shape[1] == 1:
        maps = list(depth[:, 0].unbind(0))
    else:
        raise ValueError(
            f"`{name}` must have shape (H, W), (1, H, W), (H, W, 1) or (B, 1, H, W) with one depth channel, got "
            f"{tuple(depth.shape)}."
        )
    for depth_map in maps:
        if depth_map.numel() == 0:
            raise ValueError(f"`{name}` is empty (shape {tuple(depth_map.shape)}).")
    is_unsigned = depth.dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64)
    if not is_unsigned and bool((depth < 0).any()):
        raise ValueError(
            f"`{name}` contains negative depths, which no sensor produces: corrupt input. Mark missing depth with "
            "0, NaN or inf."
        )
    return maps


def _intrinsics_list(intrinsics: Any, batch_size: int) -> list[torch.Tensor]:
    """One float64 (3, 3) matrix per depth map from a (3, 3) matrix shared by the batch, a (B, 3, 3) array, or a
    list of (3, 3) matrices (arrays, tensors or nested lists)."""
    if nested_list_depth(intrinsics) in (2, 3):  # nested lists of numbers: one (3, 3) or a (B, 3, 3)
        intrinsics = nested_list_to_array(intrinsics, "intrinsics")
    if isinstance(intrinsics, (list, tuple)):
        if not intrinsics:
            raise ValueError("`intrinsics` is an empty list; pass one (3, 3) matrix per depth map.")
        matrices = [_intrinsics_tensor(k, f"intrinsics[{index}]") for index, k in enumerate(intrinsics)]
    else:
        tensor = _intrinsics_tensor(intrinsics, "intrinsics")
        if tensor.shape == (3, 3):
            matrices = [tensor] * batch_size
        elif tensor.ndim == 3 and tensor.shape[1:] == (3, 3):
            matrices = list(tensor.unbind(0))
        else:
            raise ValueError(f"`intrinsics` must be (3, 3), (B, 3, 3) or a list of (3, 3), got {tuple(tensor.shape)}.")
    if len(matrices) != batch_size:
        raise ValueError(f"`intrinsics` has {len(matrices)} matrices for {batch_size} depth maps.")
    for index, k in enumerate(matrices):
        if k.shape != (3, 3):
            raise ValueError(f"each `intrinsics` matrix must be 3x3, got {tuple(k.shape)} at index {index}.")
    check_pinhole_values(torch.stack(matrices))
    return matrices


def _intrinsics_tensor(value: Any, name: str) -> torch.Tensor:
    """`value` (a tensor, an array or a nested list of numbers) as a float64 tensor; ValueError naming `name`."""
    if isinstance(value, (list, tuple)):
        value = nested_list_to_array(value, name)
    if isinstance(value, np.ndarray):
        value = array_to_tensor(value, name)
    if not isinstance(value, torch.Tensor) or value.dtype == torch.bool or value.is_complex():
        raise ValueError(f"`{name}` must be a real (3, 3) matrix (array, tensor or nested list), got {value!r}.")
    return value.detach().to(torch.float64)


def _standardise_valid(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Standardise each map over its valid pixels (std floored at 1e-6 m; a map without valid pixels stays 0).

    The moments are taken in float64: in float32 the rounding error of the mean of a constant map (~1e-8 m) divided
    by the floored std would turn a flat map into a constant offset instead of zeros."""
    wide = values.double()
    weights = mask.to(torch.float64)
    count = weights.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1.0)
    mean = (wide * weights).sum(dim=(1, 2, 3), keepdim=True) / count
    var = ((wide - mean).square() * weights).sum(dim=(1, 2, 3), keepdim=True) / count
    return ((wide - mean) / var.sqrt().clamp(min=1e-6)).to(values.dtype)


def _check_depth_scale(depth_scale: Any) -> float:
    return check_real(depth_scale, "depth_scale", positive=True)


def _exact_size(output_size: Any) -> dict[str, int] | None:
    if output_size is None:
        return None
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"`output_size` must be a positive int or a (height, width) pair, got {output_size!r}.")
    return {"height": check_int(pair[0], "output_size[0]", 1), "width": check_int(pair[1], "output_size[1]", 1)}
