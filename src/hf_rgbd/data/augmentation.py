"""Aligned RGB-D augmentation in physical units (before any processor / normalisation).

Geometric transforms (random resized crop, horizontal flip) are applied identically to RGB, depth, the depth
validity mask and the camera intrinsics. Photometric transforms touch RGB only, sensor transforms depth only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..processors.validation_rgbd import check_int

__all__ = ["RgbdAugment", "random_flip_shift"]

# YIQ <-> RGB: a hue shift is a rotation of the (I, Q) chroma plane around the grey axis
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_GREY = torch.tensor([0.299, 0.587, 0.114])


def _prob(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not (lo < a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo} < min <= max <= {hi}, got {value!r}")
    return a, b


class RgbdAugment:
    """Random aligned augmentation of RGB-D batches.

    Args:
        output_size: output ``(height, width)`` (an int means square); ``None`` keeps the input size.
        crop_scale: range of the crop area as a fraction of the image area, within (0, 1].
        crop_ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        p_crop: probability of a random crop per sample (otherwise the whole image is resized).
        p_flip: probability of a horizontal flip per sample.
        max_shift: translation of the output by up to this many pixels in each direction (0: none), after the
            crop and flip; pixels shifted in from outside are black RGB and depth holes.
        brightness, contrast, saturation: jitter strengths ``s``; factors are drawn from ``[1 - s, 1 + s]``.
        hue: maximal hue rotation as a fraction of a full turn, in [0, 0.5].
        depth_noise: ``k`` of the added Gaussian depth noise, ``sigma = k * z^2`` metres (valid pixels only).
        p_extra_holes: probability per sample of punching extra holes (one rectangle and scattered pixels).
        hole_fraction: expected fraction of the image turned into extra holes when that happens, in [0, 1].
        p_drop_rgb: probability per sample of blanking RGB (zeros).
        p_drop_depth: probability per sample of blanking depth (all holes); never together with ``p_drop_rgb``
            for the same sample, so ``p_drop_rgb + p_drop_depth`` must be <= 1.
        generator: ``torch.Generator`` (CPU), an int seed, or ``None`` for a fresh non-deterministic seed.
            The global random state is never used.

    Calling the object on a batch dict returns a new dict with the same keys (``augment(batch, seeds=[...])``
    with one int per sample draws each sample's parameters from its own generator seeded so, instead of from
    ``generator``: a sample's augmentation then depends on its seed only, not on the batch it came in); keys other than ``image``,
    ``depth``, ``depth_mask`` and ``intrinsics`` are passed through unchanged. Two batch layouts are accepted:

    * tensors: ``image`` (B, 3, H, W) float in [0, 1] or uint8, ``depth`` (B, 1, H, W) or (B, H, W) metres with
      holes as 0 / non-finite, optional ``depth_mask`` (same shape as depth, bool; default ``depth > 0`` and
      finite), optional ``intrinsics`` (B, 3, 3) or (3, 3);
    * a ``datasets`` ``set_transform`` batch (dict of lists): ``image`` PIL images or (H, W, 3) arrays,
      ``depth`` (H, W) arrays / nested lists, ``intrinsics`` (3, 3) arrays / nested lists.

    Outputs are tensors: ``image`` (B, 3, H', W') float32 in [0, 1], ``depth`` float32 with the input's rank
    (holes exactly 0), ``depth_mask`` bool and ``intrinsics`` (B, 3, 3) float32. Intrinsics follow the crop
    (``fx' = fx * W' / w_crop``, ``cx' = (cx - x0 + 0.5) * W' / w_crop - 0.5`` with pixel centres at integer
    coordinates) and the flip (``cx' = W' - 1 - cx``; ``fx`` stays positive, so back-projection yields the mirror
    image of the scene, ``X -> -X``).
    """

    def __init__(
        self,
        output_size: int | tuple[int, int] | None = None,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        p_crop: float = 1.0,
        p_flip: float = 0.5,
        max_shift: int = 0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.0,
        depth_noise: float = 0.0,
        p_extra_holes: float = 0.0,
        hole_fraction: float = 0.05,
        p_drop_rgb: float = 0.0,
        p_drop_depth: float = 0.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if output_size is not None:
            size = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
            if len(size) != 2 or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size
            ):
                raise ValueError(
                    f"output_size must be None, a positive int or a pair of positive ints, got {output_size!r}"
                )
            output_size = (int(size[0]), int(size[1]))
        self.output_size = output_size
        self.crop_scale = _range("crop_scale", crop_scale, 0.0, 1.0)
        self.crop_ratio = _range("crop_ratio", crop_ratio, 0.0, math.inf)
        self.p_crop = _prob("p_crop", p_crop)
        self.p_flip = _prob("p_flip", p_flip)
        self.max_shift = check_int(max_shift, "max_shift", 0)
        self.brightness = _non_negative("brightness", brightness)
        self.contrast = _non_negative("contrast", contrast)
        self.saturation = _non_negative("saturation", saturation)
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) > 1.0:
                raise ValueError(
                    f"{name} must be in [0, 1] (factors are drawn from [1 - s, 1 + s]), got {getattr(self, name)}"
                )
        self.hue = _non_negative("hue", hue)
        if self.hue > 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.depth_noise = _non_negative("depth_noise", depth_noise)
        self.p_extra_holes = _prob("p_extra_holes", p_extra_holes)
        self.hole_fraction = _prob("hole_fraction", hole_fraction)
        self.p_drop_rgb = _prob("p_drop_rgb", p_drop_rgb)
        self.p_drop_depth = _prob("p_drop_depth", p_drop_depth)
        if self.p_drop_rgb + self.p_drop_depth > 1.0 + 1e-9:
            raise ValueError(
                f"p_drop_rgb + p_drop_depth must be <= 1 (both modalities are never dropped together), "
                f"got {p_drop_rgb} + {p_drop_depth}"
            )
        if isinstance(generator, torch.Generator):
            if generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator, got device {generator.device}")
            self.generator = generator
        elif generator is None:
            self.generator = torch.Generator()
            self.generator.seed()  # fresh entropy, global RNG untouched
        elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            self.generator = torch.Generator().manual_seed(int(generator))
        else:
            raise ValueError(
                f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
            )
        self._sample_generators: list[torch.Generator] | None = None  # set during a call with `seeds`

    def __repr__(self) -> str:
        hidden = ("generator", "_sample_generators")
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in hidden)
        return f"{type(self).__name__}({fields})"

    # ------------------------------------------------------------------------------------------------------------
    # input handling

    @staticmethod
    def _image_tensor(image: Any) -> torch.Tensor:
        if isinstance(image, (list, tuple)):  # datasets batch: PIL images or (H, W, 3) arrays
            image = torch.from_numpy(
                np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in image])
            )
            if image.ndim != 4 or image.shape[-1] != 3:
                raise ValueError(
                    f"image list entries must be RGB images of shape (H, W, 3), got {tuple(image.shape[1:])}"
                )
            image = image.permute(0, 3, 1, 2)
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"image must be a tensor (B, 3, H, W) or a list of images, got {type(image).__name__}")
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.float() / 255.0
        if not image.is_floating_point():
            raise ValueError(f"image must be uint8 or floating point, got {image.dtype}")
        return image.float()

    @staticmethod
    def _as_float_tensor(name: str, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.float()
        try:
            if isinstance(value, (list, tuple)):
                return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in value]))
            return torch.from_numpy(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a tensor, an array or a list of equally shaped arrays") from None

    # ------------------------------------------------------------------------------------------------------------
    # random parameters

    def _rand(self, *shape: int) -> torch.Tensor:
        if self._sample_generators is None:
            return torch.rand(shape, generator=self.generator)
        return torch.stack([torch.rand(shape[1:], generator=g) for g in self._sample_generators])

    def _randn(self, *shape: int) -> torch.Tensor:
        if self._sample_generators is None:
            return torch.randn(shape, generator=self.generator)
        return torch.stack([torch.randn(shape[1:], generator=g) for g in self._sample_generators])

    def _crop_boxes(self, n: int, h: int, w: int) -> torch.Tensor:
        """(n, 4) crop boxes ``x0, y0, width, height`` in pixels (continuous, inside the image)."""
        attempts = 10
        area = h * w * (self.crop_scale[0] + self._rand(n, attempts) * (self.crop_scale[1] - self.crop_scale[0]))
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + self._rand(n, attempts) * (log_hi - log_lo))
        cw, ch = (area * ratio).sqrt(), (area / ratio).sqrt()
        fits = (cw <= w) & (ch <= h)
        first = torch.where(fits.any(1), fits.float().argmax(1), 0)
        cw, ch = cw.gather(1, first[:, None])[:, 0], ch.gather(1, first[:, None])[:, 0]
        ok = fits.any(1) & (self._rand(n) < self.p_crop)
        cw, ch = torch.where(ok, cw, float(w)), torch.where(ok, ch, float(h))  # no crop: the whole image
        x0, y0 = self._rand(n) * (w - cw), self._rand(n) * (h - ch)
        return torch.stack([x0, y0, cw, ch], 1)

    # ------------------------------------------------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, Any], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """Augment one batch (see the class docstring for the accepted layouts); `seeds`: optional, one int per
        sample, each sample's own random stream. Returns a new dict."""
        if not isinstance(batch, Mapping) or "image" not in batch or "depth" not in batch:
            raise ValueError("batch must be a mapping with at least 'image' and 'depth' entries")
        if seeds is None:
            return self._augment(batch)
        self._sample_generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        try:
            return self._augment(batch)
        finally:
            self._sample_generators = None

    def _augment(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        rgb = self._image_tensor(batch["image"])
        depth = self._as_float_tensor("depth", batch["depth"])
        depth_ndim = depth.ndim
        if depth.ndim == 3:
            depth = depth[:, None]
        n, _, h, w = rgb.shape
        if self._sample_generators is not None and len(self._sample_generators) != n:
            raise ValueError(f"seeds must hold one seed per sample ({n}), got {len(self._sample_generators)}")
        if depth.shape != (n, 1, h, w):
            raise ValueError(
                f"depth must have shape (B, 1, H, W) or (B, H, W) matching image {(n, 3, h, w)}, got {_shape_of(batch['depth'])}"
            )
        device = rgb.device
        depth = depth.to(device)
        valid = torch.isfinite(depth) & (depth > 0)
        if batch.get("depth_mask") is not None:
            mask = batch["depth_mask"]
            mask = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, torch.Tensor) else mask
            if mask.ndim == 3:
                mask = mask[:, None]
            if mask.shape != depth.shape:
                raise ValueError(
                    f"depth_mask must have the shape of depth {tuple(depth.shape)}, got {tuple(mask.shape)}"
                )
            valid = valid & mask.to(device=device, dtype=torch.bool)
        depth = torch.where(valid, depth, 0.0)
        intrinsics = None
        if batch.get("intrinsics") is not None:
            intrinsics = self._as_float_tensor("intrinsics", batch["intrinsics"]).to(device)
            if intrinsics.shape == (3, 3):
                intrinsics = intrinsics.expand(n, 3, 3)
            if intrinsics.shape != (n, 3, 3):
                raise ValueError(f"intrinsics must have shape (B, 3, 3) or (3, 3), got {tuple(intrinsics.shape)}")
        oh, ow = self.output_size if self.output_size is not None else (h, w)

        # ---- geometry: one affine map per sample, output pixel (j, i) -> source (x, y) in pixel-centre coords
        box = self._crop_boxes(n, h, w).to(device)
        flip = (self._rand(n) < self.p_flip).to(device)
        sx, sy = box[:, 2] / ow, box[:, 3] / oh  # source pixels per output pixel
        cols = torch.arange(ow, device=device, dtype=torch.float32)
        rows = torch.arange(oh, device=device, dtype=torch.float32)
        inside = None
        if self.max_shift:  # output pixel (j, i) reads the crop's pixel (j - dy, i - dx)
            dx = (self._rand(n) * (2 * self.max_shift + 1)).floor().to(device) - self.max_shift
            dy = (self._rand(n) * (2 * self.max_shift + 1)).floor().to(device) - self.max_shift
            cols, rows = cols[None, :] - dx[:, None], rows[None, :] - dy[:, None]  # (n, ow), (n, oh)
            inside = ((rows >= 0) & (rows < oh))[:, :, None] & ((cols >= 0) & (cols < ow))[:, None, :]
            inside = inside[:, None]  # (n, 1, oh, ow)
        cols = torch.where(flip[:, None], ow - 1 - cols, cols)  # (n, ow)
        src_x = box[:, 0:1] + (cols + 0.5) * sx[:, None] - 0.5
        src_y = box[:, 1:2] + (rows + 0.5) * sy[:, None] - 0.5  # (n, oh)
        grid = torch.stack(
            [
                ((src_x + 0.5) / w * 2 - 1)[:, None, :].expand(n, oh, ow),
                ((src_y + 0.5) / h * 2 - 1)[:, :, None].expand(n, oh, ow),
            ],
            -1,
        )
        rgb = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # depth and mask: nearest neighbour, so holes never blend with valid depth
        geo = F.grid_sample(
            torch.cat([depth, valid.float()], 1), grid, mode="nearest", padding_mode="border", align_corners=False
        )
        valid = geo[:, 1:2] > 0.5
        if inside is not None:
            rgb, valid = torch.where(inside, rgb, 0.0), valid & inside
        depth = torch.where(valid, geo[:, 0:1], 0.0)
        if intrinsics is not None:
            k = intrinsics.clone()
            k[:, 0, 0] = intrinsics[:, 0, 0] / sx
            k[:, 0, 1] = intrinsics[:, 0, 1] / sx * torch.where(flip, -1.0, 1.0)
            k[:, 0, 2] = (intrinsics[:, 0, 2] - box[:, 0] + 0.5) / sx - 0.5
            k[:, 1, 1] = intrinsics[:, 1, 1] / sy
            k[:, 1, 2] = (intrinsics[:, 1, 2] - box[:, 1] + 0.5) / sy - 0.5
            k[:, 0, 2] = torch.where(flip, ow - 1 - k[:, 0, 2], k[:, 0, 2])
            if self.max_shift:
                k[:, 0, 2], k[:, 1, 2] = k[:, 0, 2] + dx, k[:, 1, 2] + dy
            intrinsics = k

        # ---- photometric (RGB only): brightness, contrast, saturation, hue in this order
        rgb = self._colour_jitter(rgb)

        # ---- depth sensor effects
        if self.depth_noise > 0:
            noise = self._randn(*depth.shape).to(device)
            depth = depth + noise * self.depth_noise * depth * depth
            valid = valid & (depth > 0)
            depth = torch.where(valid, depth, 0.0)
        if self.p_extra_holes > 0 and self.hole_fraction > 0:
            holes = self._extra_holes(n, oh, ow).to(device)
            valid = valid & ~holes
            depth = torch.where(valid, depth, 0.0)

        # ---- whole-modality dropout, mutually exclusive per sample
        u = self._rand(n).to(device)
        drop_rgb = u < self.p_drop_rgb
        drop_depth = (u >= self.p_drop_rgb) & (u < self.p_drop_rgb + self.p_drop_depth)
        rgb = torch.where(drop_rgb[:, None, None, None], 0.0, rgb)
        valid = valid & ~drop_depth[:, None, None, None]
        depth = torch.where(valid, depth, 0.0)

        out["image"] = rgb
        out["depth"] = depth if depth_ndim == 4 else depth[:, 0]
        if "depth_mask" in batch:
            out["depth_mask"] = valid if depth_ndim == 4 else valid[:, 0]
        if "intrinsics" in batch:
            out["intrinsics"] = intrinsics
        return out

    def _colour_jitter(self, rgb: torch.Tensor) -> torch.Tensor:
        n, device = rgb.shape[0], rgb.device

        def factors(strength: float) -> torch.Tensor:
            return (1.0 + (self._rand(n) * 2 - 1) * strength).to(device)[:, None, None, None]

        grey_w = _GREY.to(device)[None, :, None, None]
        if self.brightness > 0:
            rgb = (rgb * factors(self.brightness)).clamp(0, 1)
        if self.contrast > 0:
            mean = (rgb * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            rgb = (mean + (rgb - mean) * factors(self.contrast)).clamp(0, 1)
        if self.saturation > 0:
            grey = (rgb * grey_w).sum(1, keepdim=True)
            rgb = (grey + (rgb - grey) * factors(self.saturation)).clamp(0, 1)
        if self.hue > 0:
            angle = ((self._rand(n) * 2 - 1) * self.hue * 2 * math.pi).to(device)
            cos, sin = angle.cos(), angle.sin()
            one, zero = torch.ones_like(cos), torch.zeros_like(cos)
            rot = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1).reshape(n, 3, 3)
            mat = _YIQ_TO_RGB.to(device) @ rot @ _RGB_TO_YIQ.to(device)  # (n, 3, 3)
            rgb = torch.einsum("nij,njhw->nihw", mat, rgb).clamp(0, 1)
        return rgb

    def _extra_holes(self, n: int, h: int, w: int) -> torch.Tensor:
        """(n, 1, h, w) bool: for selected samples, one random rectangle plus scattered pixels, each covering
        about half of ``hole_fraction`` of the image."""
        chosen = self._rand(n) < self.p_extra_holes
        half = self.hole_fraction / 2
        ratio = torch.exp((self._rand(n) * 2 - 1) * math.log(3.0))
        rw = (half * h * w * ratio).sqrt().clamp(max=w)
        rh = (half * h * w / ratio).sqrt().clamp(max=h)
        x0, y0 = self._rand(n) * (w - rw), self._rand(n) * (h - rh)
        xs, ys = torch.arange(w) + 0.5, torch.arange(h) + 0.5
        in_x = (xs >= x0[:, None]) & (xs < (x0 + rw)[:, None])
        in_y = (ys >= y0[:, None]) & (ys < (y0 + rh)[:, None])
        rect = in_y[:, :, None] & in_x[:, None, :]
        scattered = self._rand(n, h, w) < half
        return ((rect | scattered) & chosen[:, None, None])[:, None]


def _shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a tensor / array / nested list, for error messages."""
    if hasattr(value, "shape"):
        return tuple(value.shape)
    return tuple(np.shape(np.asarray(value, dtype=object))) if isinstance(value, (list, tuple)) else ()


def random_flip_shift(
    inputs: Mapping[str, torch.Tensor], generator: torch.Generator, max_shift: int = 4
) -> dict[str, torch.Tensor]:
    """Aligned augmentation of a batch of (B, C, H, W) maps (RGB, depth, mask, ...): per sample a random horizontal
    flip (p = 1/2) and a translation by up to `max_shift` pixels in each direction, the same for every map of the
    sample. Pixels shifted in from outside are zeros (holes for `depth_mask`). Draws from `generator` only."""
    check_int(max_shift, "max_shift", 0)
    first = next(iter(inputs.values()))
    count, height, width = first.shape[0], first.shape[-2], first.shape[-1]
    device = first.device
    flips = torch.rand(count, generator=generator) < 0.5
    shift_y = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    shift_x = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    rows = torch.arange(height)[None, :] - shift_y[:, None]  # (B, H): source row of each output row
    cols = torch.arange(width)[None, :] - shift_x[:, None]
    cols = torch.where(flips[:, None], width - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]  # (B, H, W)
    samples = torch.arange(count)[:, None, None]
    rows, cols = rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]
    samples, rows, cols, inside = (tensor.to(device) for tensor in (samples, rows, cols, inside))
    out = {}
    for key, value in inputs.items():
        moved = value.permute(0, 2, 3, 1)[samples, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
        out[key] = torch.where(inside[:, None], moved, torch.zeros((), dtype=value.dtype, device=device))
    return out
