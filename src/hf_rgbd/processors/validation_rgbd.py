"""Argument checks of the processors and the attacks, one helper per check; each error names the argument.

Part of the flat `hf_rgbd.processors` folder (imports nothing from hf_rgbd, so saved processors carry it). The
attacks and the training and evaluation helpers import it from here. Only `check_pinhole_values` reads tensor
values; the others look at types, shapes and dtypes (or at Python settings), so they cost no host sync.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

Item = TypeVar("Item")
FLOAT32_MAX = float(np.finfo(np.float32).max)
RETURN_TENSORS = (None, "pt", "np")  # what the processors' `return_tensors` takes (torch tensors, numpy arrays)


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
    """`value` as an int if it is a Python or numpy integer (not a bool) >= `minimum`; ValueError naming `name`
    otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def is_real_number(value: Any) -> bool:
    """Whether `value` is a real number (Python or numpy int / float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_real(
    value: Any, name: str, positive: bool = False, minimum: float = -math.inf, maximum: float = math.inf
) -> float:
    """`value` as a float if it is a real number (Python or numpy, not a bool) finite in float32, in [`minimum`,
    `maximum`], and > 0 there when `positive`; ValueError naming `name` otherwise (NaN, inf, strings, tensors and
    None corrupt outputs or fail far from the cause)."""
    is_real = is_real_number(value)
    # the tensors it scales are float32: it must stay finite there, and a positive one must not flush to 0
    as_float32 = np.float32(value) if is_real and math.isfinite(value) and abs(value) <= FLOAT32_MAX else math.nan
    in_range = math.isfinite(as_float32) and minimum <= value <= maximum
    if not in_range or (positive and not as_float32 > 0):
        expected = "a finite positive number" if positive else "a finite number"
        if minimum > -math.inf or maximum < math.inf:
            expected += f" >= {minimum}" if maximum == math.inf else f" in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be {expected} (within float32's range), got {value!r}.")
    return float(value)


def check_channel_values(values: Any, name: str, positive: bool = False, channels: int = 3) -> tuple[float, ...]:
    """`values` (one number for every channel, or a sequence of `channels` numbers) as a tuple of finite floats,
    each > 0 when `positive`; ValueError naming `name` otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (numbers.Real, Sequence, np.ndarray)):
        raise ValueError(f"`{name}` must be a number or {channels} numbers (one per channel), got {values!r}.")
    if isinstance(values, numbers.Real):
        values = [values] * channels
    values = list(np.asarray(values, dtype=object).reshape(-1)) if isinstance(values, np.ndarray) else list(values)
    if len(values) != channels:
        raise ValueError(f"`{name}` must have {channels} values (one per channel), got {len(values)}: {values!r}.")
    return tuple(check_real(value, f"{name}[{index}]", positive) for index, value in enumerate(values))


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """`value` unchanged if it is one of `choices` (compared by type and value: `1` is not `True`); ValueError
    naming `name` otherwise."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


def array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    """A CPU tensor sharing `array`'s memory where torch can: copies views with negative strides (`np.fliplr`,
    `img[..., ::-1]`), read-only and non-native byte order arrays; unsigned 32 / 64-bit become int64 (torch has
    few kernels for them). ValueError naming `name` for non-numeric dtypes (object, strings, complex, dates)."""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold numbers (bool, integer or float), got dtype {array.dtype}.")
    if array.dtype.byteorder not in ("=", "|") or not array.flags.writeable or any(s < 0 for s in array.strides):
        array = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)
    if array.dtype in (np.uint32, np.uint64):
        array = array.astype(np.int64)
    return torch.from_numpy(array)


def nested_list_depth(value: Any) -> int:
    """How many levels of lists / tuples lead from `value` to its first scalar, following first elements: 2 for a
    (H, W) nested list. Strings and None count as scalars (so that `nested_list_to_array` rejects them by name); 0
    for anything that is not a nested list of scalars (arrays, tensors, images, empty lists)."""
    depth = 0
    while isinstance(value, (list, tuple)) and len(value) > 0:
        value, depth = value[0], depth + 1
    is_scalar = value is None or isinstance(value, (numbers.Number, np.bool_, str, bytes))
    return depth if depth and is_scalar else 0


def nested_list_to_array(value: Sequence[Any], name: str) -> np.ndarray:
    """A rectangular nested list of numbers (what `datasets` returns for array columns) as a numpy array;
    ValueError naming `name` for ragged lists or non-numeric entries."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(
            f"`{name}` must be nested lists of numbers with a regular shape (a rectangular array: rows of equal "
            "length)."
        ) from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must be nested lists of numbers, got elements of dtype {array.dtype}.")
    return array


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


def flatten_batch(
    inputs: Any, name: str, item: str, convert: Callable[[Any, str], list[Item]], item_nesting: int = 0
) -> list[Item]:
    """The items of `inputs` (one input or a list / tuple of them), each input converted by `convert(input, its
    name)`; ValueError naming `name` for an empty list, or a single input that holds no `item`. A nested list of
    numbers at most `item_nesting` levels deep is one input (e.g. 2 for a (H, W) map), not a batch."""
    empty = f"`{name}` is an empty batch; pass at least one {item}."
    if isinstance(inputs, (list, tuple)) and not 0 < nested_list_depth(inputs) <= item_nesting:
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
    "FLOAT32_MAX",
    "RETURN_TENSORS",
    "array_to_tensor",
    "check_channel_values",
    "check_choice",
    "check_depth_mask",
    "check_flag",
    "check_image_tensor",
    "check_int",
    "check_intrinsics",
    "check_labels",
    "check_pinhole_values",
    "check_real",
    "flatten_batch",
    "is_number",
    "nested_list_depth",
    "nested_list_to_array",
]


# ------------------------------------------------------------------------------------- attack entry checks
# These read tensor values (one host sync each): the attacks call them once per `perturb`, never per step.
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


__all__ += ["check_finite_values", "check_label_range", "check_seed", "is_real_number"]
