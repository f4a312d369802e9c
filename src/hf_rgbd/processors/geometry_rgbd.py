"""Geometry shared by the RGB and depth processors: one resize/crop plan per sample, applied to both modalities.

The RGB image processor decides the geometry (resize, optional center crop). It is summarised per sample as a
`ResizeCropPlan`: the crop `window` as fractions of the input image plus the output size. The depth processor
applies the same window to a depth map of any resolution with the same aspect ratio, by nearest-neighbour
sampling (valid and invalid pixels are never mixed, depth edges are never averaged), and rescales the camera
intrinsics with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResizeCropPlan:
    """Where one input image goes: resized to `resized` (height, width), then cropped to `crop`.

    Attributes:
        input_size: (height, width) of the input image.
        resized: (height, width) after resizing.
        crop: (top, left, height, width) of the crop inside the resized image.
    """

    input_size: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int, int, int]

    @property
    def output_size(self) -> tuple[int, int]:
        return self.crop[2], self.crop[3]

    @property
    def window(self) -> tuple[float, float, float, float]:
        """The output's field of view as fractions of the input: (y0, x0, y1, x1) in [0, 1]."""
        top, left, height, width = self.crop
        rh, rw = self.resized
        return top / rh, left / rw, (top + height) / rh, (left + width) / rw


def plan_resize_crop(
    input_size: tuple[int, int],
    size: dict[str, int] | None,
    crop_size: dict[str, int] | None,
) -> ResizeCropPlan:
    """Plan resize-then-center-crop for one image.

    Args:
        input_size: (height, width) of the input.
        size: `{"height", "width"}` (exact resize), `{"shortest_edge"}` (aspect-preserving, optionally with
            `"longest_edge"` as an upper bound), or None (no resize).
        crop_size: `{"height", "width"}` of the center crop, or None (no crop).
    """
    height, width = input_size
    if size is None:
        resized = (height, width)
    elif "height" in size and "width" in size:
        resized = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        short, long = min(height, width), max(height, width)
        scale = size["shortest_edge"] / short
        if size.get("longest_edge") is not None and long * scale > size["longest_edge"]:
            scale = size["longest_edge"] / long
        resized = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    else:
        raise ValueError(
            f"`size` must have keys {{'height', 'width'}} or {{'shortest_edge'}} (optionally with 'longest_edge'), "
            f"got {sorted(size)}."
        )
    if crop_size is None:
        crop = (0, 0, resized[0], resized[1])
    else:
        crop_h, crop_w = int(crop_size["height"]), int(crop_size["width"])
        if crop_h > resized[0] or crop_w > resized[1]:
            raise ValueError(
                f"`crop_size` {crop_h}x{crop_w} is larger than the resized image {resized[0]}x{resized[1]}; "
                "increase `size` or reduce `crop_size`."
            )
        # Same rounding convention as transformers' center_crop.
        top = int(math.floor((resized[0] - crop_h) / 2 + 0.5)) if resized[0] != crop_h else 0
        left = int(math.floor((resized[1] - crop_w) / 2 + 0.5)) if resized[1] != crop_w else 0
        top = min(max(top, 0), resized[0] - crop_h)
        left = min(max(left, 0), resized[1] - crop_w)
        crop = (top, left, crop_h, crop_w)
    return ResizeCropPlan(input_size=(height, width), resized=resized, crop=crop)


def nearest_indices(
    window: tuple[float, float, float, float], input_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the input pixels that nearest-neighbour sampling of `window` picks.

    Output pixel i samples the input pixel whose centre is nearest to the centre of output pixel i mapped into the
    input ("nearest-exact" semantics, the same centre convention as bilinear resizing with align_corners=False).

    Returns:
        rows (output_height,) and cols (output_width,) long tensors.
    """
    y0, x0, y1, x1 = window
    height, width = input_size
    out_h, out_w = output_size
    rows = _axis_indices(y0 * height, y1 * height, out_h, height)
    cols = _axis_indices(x0 * width, x1 * width, out_w, width)
    return rows, cols


def _axis_indices(start: float, stop: float, count: int, limit: int) -> torch.Tensor:
    step = (stop - start) / count
    centres = start + (torch.arange(count, dtype=torch.float64) + 0.5) * step
    return centres.floor().long().clamp_(0, limit - 1)


def transform_intrinsics(
    intrinsics: torch.Tensor,
    window: tuple[float, float, float, float],
    input_size: tuple[int, int],
    output_size: tuple[int, int],
) -> torch.Tensor:
    """Camera intrinsics of the output image, for a crop `window` of an input of `input_size` resized to `output_size`.

    Uses the pixel-centre convention: an input coordinate u maps to (u + 0.5 - x0) * s - 0.5 in the output, where
    x0 is the window's left edge in input pixels and s the scale.

    Args:
        intrinsics: (3, 3) pinhole matrix of the input image.

    Returns:
        (3, 3) float32 pinhole matrix of the output image.
    """
    y0, x0, y1, x1 = window
    height, width = input_size
    out_h, out_w = output_size
    scale_x = out_w / ((x1 - x0) * width)
    scale_y = out_h / ((y1 - y0) * height)
    k = intrinsics.to(torch.float64).clone()
    k[0, 0] = intrinsics[0, 0] * scale_x
    k[0, 1] = intrinsics[0, 1] * scale_x
    k[0, 2] = (intrinsics[0, 2] + 0.5 - x0 * width) * scale_x - 0.5
    k[1, 1] = intrinsics[1, 1] * scale_y
    k[1, 2] = (intrinsics[1, 2] + 0.5 - y0 * height) * scale_y - 0.5
    return k.to(torch.float32)
