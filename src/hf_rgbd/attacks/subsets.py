"""Running an attack on some samples of a batch and merging its result back: what ensembles (`AutoAttack`) and
multi-target attacks (APGD-T) need to attack only the samples that are still robust."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature

from .tracking import AttackResult


def batch_size_of(inputs: Mapping[str, Any]) -> int:
    for name in ("pixel_values", "depth_values"):
        if isinstance(inputs.get(name), torch.Tensor):
            return inputs[name].shape[0]
    raise ValueError("the batch has neither `pixel_values` nor `depth_values`.")


def rebuild_batch(inputs: Mapping[str, Any], data: dict[str, Any]) -> Any:
    """`data` in the container type of `inputs` (BatchFeature, dict or another Mapping type)."""
    if isinstance(inputs, BatchFeature):
        return BatchFeature(data)
    if type(inputs) is dict:
        return data
    try:
        return type(inputs)(data)
    except TypeError:
        return data


def select_samples(inputs: Mapping[str, Any], index: torch.Tensor) -> Any:
    """The samples `index` (1-D long) of a batch: every tensor whose first dimension is the batch, indexed; other
    entries as they are. Same container type as `inputs`."""
    size = batch_size_of(inputs)
    data = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == size:
            data[key] = value[index.to(value.device)]
        else:
            data[key] = value
    return rebuild_batch(inputs, data)


def _put_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    out = target.clone()
    out[rows.to(target.device)] = values.to(device=target.device, dtype=target.dtype)
    return out


def unattacked_result(inputs: Mapping[str, Any], perturbed: list[str], device: torch.device) -> AttackResult:
    """The result of an attack that changed nothing: the inputs as given, no success, zero norms."""
    size = batch_size_of(inputs)
    zeros = {name: torch.zeros(size, device=device) for name in perturbed}
    return AttackResult(
        inputs=rebuild_batch(inputs, dict(inputs)),
        final_inputs=rebuild_batch(inputs, dict(inputs)),
        success=torch.zeros(size, dtype=torch.bool, device=device),
        linf=dict(zeros),
        l2={name: value.clone() for name, value in zeros.items()},
        ignored=torch.zeros(size, dtype=torch.bool, device=device),
    )


def merge_result(total: AttackResult, part: AttackResult, index: torch.Tensor, take: torch.Tensor) -> AttackResult:
    """`total` with the samples `index[take]` replaced by `part`'s (`part` ran on `select_samples(..., index)`;
    `take` (len(index),) bool says which of its samples to keep, e.g. those it fooled)."""
    rows = index[take.to(index.device)]
    chosen = take.nonzero().flatten()

    def merged(whole: Any, piece: Any) -> Any:
        data = dict(whole)
        for key, value in piece.items():
            if isinstance(value, torch.Tensor) and isinstance(data.get(key), torch.Tensor) and value.ndim:
                if value.shape[0] == index.numel():
                    data[key] = _put_rows(data[key], rows, value[chosen.to(value.device)])
        return rebuild_batch(whole, data)

    linf = dict(total.linf)
    l2 = dict(total.l2)
    for name in part.linf:
        base = linf.get(name, torch.zeros_like(total.success, dtype=part.linf[name].dtype))
        linf[name] = _put_rows(base, rows, part.linf[name][chosen])
        base = l2.get(name, torch.zeros_like(total.success, dtype=part.l2[name].dtype))
        l2[name] = _put_rows(base, rows, part.l2[name][chosen])
    success = total.success.clone()
    success[rows.to(success.device)] = part.success[chosen.to(part.success.device)].to(success.device)
    return AttackResult(
        inputs=merged(total.inputs, part.inputs),
        final_inputs=merged(total.final_inputs, part.final_inputs),
        success=success,
        linf=linf,
        l2=l2,
        ignored=total.ignored,
    )


__all__ = ["batch_size_of", "merge_result", "rebuild_batch", "select_samples", "unattacked_result"]
