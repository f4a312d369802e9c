"""Result bookkeeping of an attack: per-sample success over every evaluated iterate and restart, the iterate to
return (the last successful one, else the fallback), and the perturbation norms of what is returned."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .perturbation_space import Iterate


@dataclass
class AttackResult:
    """What [`RgbdAttack.perturb`] returns.

    Args:
        inputs: the adversarial batch, same type and keys as the input batch. Per sample: the last evaluated
            iterate on which the attack succeeded if there is one, else the attack's fallback (the final iterate;
            the highest-loss evaluated iterate for APGD).
        final_inputs: the final iterate of the last restart for every sample (what torchattacks returns; what
            Madry adversarial training trains on).
        success (`torch.Tensor` (B,) bool): samples on which an evaluated iterate succeeded (misclassified, or
            classified as the target). A lower bound: the final iterate itself is never evaluated (that would
            cost a forward pass).
        linf, l2 (`dict[str, torch.Tensor]`): per perturbed input, each sample's L-inf and L2 perturbation norm of
            `inputs` in physical units (B,).
        ignored (`torch.Tensor` (B,) bool, *optional*): samples labelled -100. They are returned exactly as given
            (norms 0) and their `success` is False; success rates and accuracies leave them out.
    """

    inputs: Any
    final_inputs: Any
    success: torch.Tensor
    linf: dict[str, torch.Tensor]
    l2: dict[str, torch.Tensor]
    ignored: torch.Tensor | None = None


class IterateTracker:
    """Success flags and the iterates to return, across the evaluated iterates and restarts of one `perturb` call.

    Args:
        clean: the original inputs in physical units (the starting point of every record).
        coupled: one sample's objective depends on other samples' inputs (e.g. retrieval with a perturbed
            gallery): whole-batch iterates are kept, never mixed across samples.
        keep_best: also keep the highest-objective iterate as the fallback for unsuccessful samples (APGD);
            otherwise the final iterate is the fallback.
    """

    def __init__(self, clean: Iterate, coupled: bool, keep_best: bool) -> None:
        reference = next(iter(clean.values()))
        self.batch_size = reference.shape[0]
        self.coupled = coupled
        self.success = torch.zeros(self.batch_size, dtype=torch.bool, device=reference.device)
        self.x_success = dict(clean)
        self.best_value = torch.full((self.batch_size,), -math.inf, device=reference.device)
        self.x_best = dict(clean) if keep_best else None

    def record(self, x: Iterate, value: torch.Tensor, success: torch.Tensor) -> None:
        """Record an evaluated iterate `x` with its objective `value` (B,) and `success` flags (B,) bool."""
        if self.coupled:  # whole-batch iterates: keep the one with most successes
            update = (success.sum() > self.success.sum()).expand(self.batch_size)
            self.success = torch.where(update, success, self.success)
        else:
            update = success
            self.success = self.success | success
        for name in x:
            self.x_success[name] = torch.where(update.view(-1, 1, 1, 1), x[name], self.x_success[name])
        if self.x_best is not None:
            better = (
                (value.sum() > self.best_value.sum()).expand(self.batch_size)
                if self.coupled
                else value > self.best_value
            )
            self.best_value = torch.where(better, value, self.best_value)
            for name in x:
                self.x_best[name] = torch.where(better.view(-1, 1, 1, 1), x[name], self.x_best[name])

    def select(self, final: Iterate) -> Iterate:
        """Per sample: the recorded successful iterate, else the fallback (best-objective iterate or `final`)."""
        fallback = self.x_best if self.x_best is not None else final
        chosen = self.success.any().expand(self.batch_size) if self.coupled else self.success
        return {name: torch.where(chosen.view(-1, 1, 1, 1), self.x_success[name], fallback[name]) for name in final}


def perturbation_norms(x: Iterate, clean: Iterate) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per input, each sample's L-inf and L2 norm of `x - clean` in physical units: two dicts of (B,) tensors."""
    with torch.no_grad():
        deltas = {name: (x[name] - clean[name]).flatten(1) for name in x}
        return (
            {name: delta.abs().amax(dim=1) for name, delta in deltas.items()},
            {name: delta.norm(dim=1) for name, delta in deltas.items()},
        )


__all__ = ["AttackResult", "IterateTracker", "perturbation_norms"]
