"""Unit conversion and projection of an attack: the perturbed inputs of one batch in physical units (RGB intensity
in [0, 1], depth in metres), the differentiable maps back to the model's input space, clipping to the valid range,
L-inf / L2 projection onto each input's budget and the random starts. Holes in depth never change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..processors.depth_processing_rgbd import INVERTIBLE_REPRESENTATIONS
from ..processors.validation_rgbd import check_depth_mask, check_image_tensor

Iterate = dict[str, torch.Tensor]  # input name -> (B, C, H, W) physical values


@dataclass
class ModalitySpace:
    """One perturbed input: its original physical values, budget, step, valid range, hole mask and the map back
    to the model's input space."""

    name: str
    eps: float
    alpha: float
    original: torch.Tensor  # (B, C, H, W) physical values
    low: float
    high: float
    mask: torch.Tensor | None  # (B, 1, H, W) bool, False where the input must not change (depth holes)
    to_model: Callable[[torch.Tensor], torch.Tensor]

    def unchanged(self, ignored: torch.Tensor) -> torch.Tensor:
        """Where the output must equal the input exactly, broadcastable to (B, C, H, W): the `ignored` (B,) samples
        and the holes."""
        keep = ignored.view(-1, 1, 1, 1)
        return keep if self.mask is None else keep | ~self.mask

    def keep_holes(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with the original values wherever the mask is False."""
        return x if self.mask is None else torch.where(self.mask, x, self.original)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """`x` clipped to the valid physical range, holes restored."""
        return self.keep_holes(torch.clamp(x, min=self.low, max=self.high))

    def draw(self, sample: Callable[..., torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """`sample(shape, generator=..., device=..., dtype=...)` (`torch.rand` / `torch.randn`) like `original`."""
        original = self.original
        return sample(original.shape, generator=generator, device=original.device, dtype=original.dtype)


def check_processor(processor: Any, budget: Mapping[str, float]) -> None:
    """ValueError unless `processor` (an RgbdProcessor, or None for physical inputs) can convert every budgeted
    input to physical units and back."""
    if processor is None:
        return
    if "pixel_values" in budget and not hasattr(processor, "image_processor"):
        raise ValueError("`processor` must be an RgbdProcessor (with an `image_processor`) or None.")
    if "depth_values" in budget:
        depth_processor = getattr(processor, "depth_image_processor", None)
        if depth_processor is None:
            raise ValueError("`processor` must be an RgbdProcessor (with a `depth_image_processor`) or None.")
        if depth_processor.representation not in INVERTIBLE_REPRESENTATIONS:
            raise ValueError(
                f"`budget` has a depth budget in metres, but the processor's depth representation "
                f"{depth_processor.representation!r} cannot be converted back to metres; use one of "
                f"{INVERTIBLE_REPRESENTATIONS} or drop 'depth_values' from `budget`."
            )


def _rgb_space(values: torch.Tensor, eps: float, alpha: float, processor: Any) -> ModalitySpace:
    image_processor = None if processor is None else processor.image_processor
    if image_processor is None or not getattr(image_processor, "do_normalize", True):
        return ModalitySpace("pixel_values", eps, alpha, values, 0.0, 1.0, None, lambda x: x)
    mean = torch.tensor(image_processor.image_mean, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
    if mean.shape[1] != values.shape[1]:
        raise ValueError(
            f"`pixel_values` has {values.shape[1]} channels but the processor normalises {mean.shape[1]}."
        )
    return ModalitySpace("pixel_values", eps, alpha, values * std + mean, 0.0, 1.0, None, lambda x: (x - mean) / std)


def _depth_space(
    values: torch.Tensor, eps: float, alpha: float, processor: Any, batch: Mapping[str, Any]
) -> ModalitySpace:
    mask = batch.get("depth_mask")
    if mask is not None:
        check_depth_mask(mask, values)
    # NaN / inf depth is a hole whatever the mask says, as in the models; hole values never enter the iterates
    finite = torch.isfinite(values).all(dim=1, keepdim=True)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if processor is None:
        mask = (finite & (values > 0).all(dim=1, keepdim=True)) if mask is None else mask & finite
        physical = torch.where(mask, values, zero)
        return ModalitySpace("depth_values", eps, alpha, physical, 0.0, math.inf, mask, lambda x: x)
    depth_processor = processor.depth_image_processor
    mask = (values != 0).all(dim=1, keepdim=True) & finite if mask is None else mask & finite
    intrinsics = batch.get("intrinsics")
    metres = depth_processor.to_metres(torch.where(mask, values, zero), mask, intrinsics)

    def to_model(x: torch.Tensor) -> torch.Tensor:
        return depth_processor.from_metres(x, mask, intrinsics)

    return ModalitySpace(
        "depth_values", eps, alpha, metres, depth_processor.min_depth, depth_processor.max_depth, mask, to_model
    )


def physical_inputs(batch: Mapping[str, Any], processor: Any) -> Iterate:
    """The RGB (in [0, 1]) and depth (metres, 0 at holes) of a processed batch, as the attacks see them: one entry
    per input the batch has, depth only when the processor's representation converts back to metres."""
    names = [name for name in ("pixel_values", "depth_values") if batch.get(name) is not None]
    depth_processor = getattr(processor, "depth_image_processor", None)
    if depth_processor is not None and depth_processor.representation not in INVERTIBLE_REPRESENTATIONS:
        names = [name for name in names if name != "depth_values"]
    if not names:
        return {}
    zero = dict.fromkeys(names, 0.0)
    return PerturbationSpace(batch, zero, zero, processor).clean()


class PerturbationSpace:
    """The perturbed inputs of one batch in physical units, with their budgets, valid ranges and holes.

    Iterates are dicts input name -> (B, C, H, W) physical values. Args:
        batch: the batch on the model's device (`pixel_values`, `depth_values`, `depth_mask`, `intrinsics`).
        budget, alpha: per perturbed input, the budget and step in physical units.
        processor: the RgbdProcessor that made the batch, or None when the inputs are physical already.
    """

    def __init__(
        self, batch: Mapping[str, Any], budget: Mapping[str, float], alpha: Mapping[str, float], processor: Any
    ) -> None:
        self.modalities: dict[str, ModalitySpace] = {}
        for name, eps in budget.items():
            values = check_image_tensor(batch[name], name).detach()
            # half-precision inputs are attacked in float32 (a bf16 step of 2/255 would round away near 1.0); the
            # output batch is cast back to the input dtype
            values = values.to(torch.promote_types(values.dtype, torch.float32))
            if name == "pixel_values":
                self.modalities[name] = _rgb_space(values, eps, alpha[name], processor)
            else:
                self.modalities[name] = _depth_space(values, eps, alpha[name], processor, batch)
        self.batch_size = next(iter(self.modalities.values())).original.shape[0]

    def clean(self) -> Iterate:
        """The original inputs in physical units."""
        return {name: m.original for name, m in self.modalities.items()}

    def to_model(self, x: Iterate) -> Iterate:
        """`x` mapped to the model's input space (differentiable)."""
        return {name: m.to_model(x[name]) for name, m in self.modalities.items()}

    def clip(self, candidate: Iterate) -> Iterate:
        """Clip to the valid physical range and restore holes (no budget projection)."""
        return {name: m.clip(candidate[name]) for name, m in self.modalities.items()}

    def project_linf(self, candidate: Iterate) -> Iterate:
        """Clip the perturbation to each budget (L-inf), then the values to the valid range; holes unchanged."""
        out = {}
        for name, m in self.modalities.items():
            delta = torch.clamp(candidate[name] - m.original, min=-m.eps, max=m.eps)
            out[name] = m.clip(m.original + delta)
        return out

    def project_l2(self, candidate: Iterate) -> Iterate:
        """Scale each sample's perturbation to L2 norm <= budget (per input), then clip to the valid range."""
        out = {}
        for name, m in self.modalities.items():
            delta = candidate[name] - m.original
            if m.mask is not None:
                delta = torch.where(m.mask, delta, torch.zeros((), dtype=delta.dtype, device=delta.device))
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            factor = torch.clamp(m.eps / (norm + 1e-12), max=1.0)
            out[name] = m.clip(m.original + delta * factor)
        return out

    def random_linf(self, generator: torch.Generator) -> Iterate:
        """A uniformly random point of the L-inf budget box (then clipped to the valid range)."""
        candidate = {}
        for name, m in self.modalities.items():
            candidate[name] = m.original + (2 * m.draw(torch.rand, generator) - 1) * m.eps
        return self.project_linf(candidate)

    def random_l2(self, generator: torch.Generator, on_sphere: bool = False) -> Iterate:
        """A random point of the L2 budget ball: Gaussian direction, radius uniform in [0, budget] (the budget
        itself with `on_sphere`, APGD's start); projected like `project_l2`."""
        candidate = {}
        for name, m in self.modalities.items():
            direction = m.draw(torch.randn, generator)
            if m.mask is not None:
                direction = direction * m.mask
            radius = torch.rand(
                m.original.shape[0], generator=generator, device=m.original.device, dtype=m.original.dtype
            )
            if on_sphere:
                radius = torch.ones_like(radius)
            norm = direction.flatten(1).norm(dim=1) + 1e-12
            candidate[name] = m.original + direction * (radius * m.eps / norm).view(-1, 1, 1, 1)
        return self.project_l2(candidate)

    def random_sign(self, generator: torch.Generator) -> Iterate:
        """Per input, the sign of standard Gaussian noise (R+FGSM's random step direction)."""
        return {name: m.draw(torch.randn, generator).sign() for name, m in self.modalities.items()}

    def random_surface_linf(self, generator: torch.Generator) -> Iterate:
        """Uniform noise scaled so that its largest entry reaches the budget, per sample and input (APGD's start),
        projected like `project_linf`."""
        candidate = {}
        for name, m in self.modalities.items():
            noise = 2 * m.draw(torch.rand, generator) - 1
            if m.mask is not None:
                noise = noise * m.mask
            peak = noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            candidate[name] = m.original + m.eps * noise / peak
        return self.project_linf(candidate)


__all__ = ["Iterate", "ModalitySpace", "PerturbationSpace", "check_processor", "physical_inputs"]
