"""Argument checks of the processors and the attacks, one helper per check; each error names the argument.

Part of the flat `hf_rgbd.processors` folder (imports nothing from hf_rgbd, so saved processors carry it). The
attacks and the training and evaluation helpers import it from here. Only `check_pinhole_values` reads tensor
values; the others look at types, shapes and dtypes, so they cost no host sync.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

Item = TypeVar("Item")


def _described(value: Any) -> str:
    """`value` for an error message: a tensor's dtype and shape, else its type."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_flag(value: Any, name: str) -> bool:
    """`value` as a bool; ValueError naming `name` unless it is a bool (Python or numpy). A tensor, a string or a
    number here is a misplaced argument whose truth value would be silently wrong."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be a bool, got {_described(value)}.")
    return bool(value)


def is_number(value: Any) -> bool:
    """Whether `value` is a Python int or float and not a bool (the type test of every numeric setting)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int) -> int:
    """`value` unchanged if it is an int (not a bool) >= `minimum`; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def check_image_tensor(values: Any, name: str, channels: int | None = None) -> torch.Tensor:
    """`values` unchanged if it is a floating-point (B, C, H, W) tensor, with C == `channels` when given;
    ValueError naming `name` otherwise."""
    is_image = isinstance(values, torch.Tensor) and values.ndim == 4 and values.is_floating_point()
    if not is_image or (channels is not None and values.shape[1] != channels):
        layout = f"(B, {'C' if channels is None else channels}, H, W)"
        raise ValueError(f"`{name}` must be a floating-point {layout} tensor, got {_described(values)}.")
    return values


def check_depth_mask(
    mask: Any, values: torch.Tensor, values_name: str = "depth_values", name: str = "depth_mask"
) -> torch.Tensor:
    """`mask` unchanged if it is a bool (B, 1, H, W) tensor with the batch size and spatial size of `values`
    (B, C, H, W); ValueError naming `name` and `values_name` otherwise."""
    expected = (values.shape[0], 1, *values.shape[2:])
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != expected:
        raise ValueError(
            f"`{name}` must be a bool (B, 1, H, W) tensor matching `{values_name}`, here {expected}; got "
            f"{_described(mask)}."
        )
    return mask


def check_labels(labels: Any, batch_size: int) -> torch.Tensor:
    """`labels` as a tensor if it holds one integer per sample, shape (`batch_size`,); ValueError otherwise."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != batch_size or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"`labels` must be an integer tensor of shape ({batch_size},), got {labels.dtype} {tuple(labels.shape)}."
        )
    return labels


def check_intrinsics(intrinsics: Any, batch_size: int, name: str = "intrinsics") -> torch.Tensor:
    """`intrinsics` unchanged if it is a (`batch_size`, 3, 3) tensor; ValueError naming `name` otherwise."""
    if not isinstance(intrinsics, torch.Tensor) or tuple(intrinsics.shape) != (batch_size, 3, 3):
        raise ValueError(
            f"`{name}` must be a ({batch_size}, 3, 3) tensor (one camera matrix per map), got {_described(intrinsics)}."
        )
    return intrinsics


def check_pinhole_values(intrinsics: torch.Tensor, name: str = "intrinsics") -> None:
    """ValueError naming `name` unless every (..., 3, 3) matrix is finite with focal lengths fx = K[0, 0] and
    fy = K[1, 1] positive. Reads the values (one host sync): call it once per input, not per step."""
    matrices = intrinsics.detach().to(torch.float64)
    if not bool(torch.isfinite(matrices).all()):
        raise ValueError(f"`{name}` must be finite pinhole matrices.")
    if bool((matrices[..., 0, 0] <= 0).any()) or bool((matrices[..., 1, 1] <= 0).any()):
        raise ValueError(f"`{name}` must have positive focal lengths fx = K[0, 0] and fy = K[1, 1].")


def flatten_batch(inputs: Any, name: str, item: str, convert: Callable[[Any, str], list[Item]]) -> list[Item]:
    """The items of `inputs` (one input or a list / tuple of them), each input converted by `convert(input, its
    name)`; ValueError naming `name` for an empty list, or a single input that holds no `item`."""
    empty = f"`{name}` is an empty batch; pass at least one {item}."
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise ValueError(empty)
        items = []
        for index, value in enumerate(inputs):
            items.extend(convert(value, f"{name}[{index}]"))
        return items
    items = convert(inputs, name)
    if not items:
        raise ValueError(empty)
    return items


__all__ = [
    "check_depth_mask",
    "check_flag",
    "check_image_tensor",
    "check_int",
    "check_intrinsics",
    "check_labels",
    "check_pinhole_values",
    "flatten_batch",
    "is_number",
]


# ------------------------------------------------------------------------------------- attack entry checks
# These read tensor values (one host sync each): the attacks call them once per `perturb`, never per step.
def is_real_number(value: Any) -> bool:
    """Whether `value` is a real number (Python or numpy int / float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_real(value: Any, name: str, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """`value` as a float if it is a finite real number in [`minimum`, `maximum`]; ValueError naming `name`
    otherwise (NaN, inf, bools, strings and tensors included)."""
    if not is_real_number(value) or not math.isfinite(value) or not minimum <= value <= maximum:
        bounds = f">= {minimum}" if maximum == math.inf else f"in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be a finite number {bounds}, got {value!r}.")
    return float(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` if it is an int a `torch.Generator` accepts, in [0, 2**64); ValueError naming `name` otherwise."""
    check_int(seed, name, 0)
    if seed >= 2**64:
        raise ValueError(f"`{name}` must be an int in [0, 2**64), got {seed!r}.")
    return seed


def check_finite_values(values: torch.Tensor, name: str) -> None:
    """ValueError naming `name` unless every value of `values` is finite (NaN / inf RGB is corrupt input)."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        raise ValueError(f"`{name}` has {int((~finite).sum())} NaN / inf values; RGB inputs must be finite.")


def check_label_range(labels: torch.Tensor, num_classes: int | None, name: str = "labels") -> None:
    """ValueError naming `name` unless every label is -100 (ignored) or a class index in [0, `num_classes`) (any
    index >= 0 when `num_classes` is None)."""
    valid = labels >= 0 if num_classes is None else (labels >= 0) & (labels < num_classes)
    valid = valid | (labels == -100)
    if not bool(valid.all()):
        upper = "" if num_classes is None else f", < {num_classes}"
        wrong = labels[~valid].unique()[:8].tolist()
        raise ValueError(f"`{name}` must be class indices (>= 0{upper}) or -100 (ignored), got {wrong}.")


__all__ += ["check_finite_values", "check_label_range", "check_real", "check_seed", "is_real_number"]
