"""Auto-PGD (Croce & Hein, 2020): step-size-free L-inf PGD with momentum, per modality budgets."""

from __future__ import annotations

import torch
from typing_extensions import Unpack

from ..processors.validation_rgbd import check_real
from .base import AttackRun, AttackSettings, RgbdAttack
from .perturbation_space import Iterate


def apgd_checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """The first checkpoint interval, its decrement and its minimum, in iterations, for `steps` iterations.

    Checkpoints fall at p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (fractions of
    `steps`): intervals start at 0.22 * steps and shrink by 0.03 * steps down to 0.06 * steps (each at least 1,
    rounded down as in the reference implementation).
    """
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


class APGD(RgbdAttack):
    r"""
    APGD-CE / APGD-DLR (Croce & Hein, 2020) with a budget per input in physical units (L-inf).

    Per restart: a random start on the budget box surface-scaled as in the paper, then `steps` iterations of
    `z = P(x_k + eta * sign(g_k))`, `x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))` with momentum
    a = 0.75 (1 at the first step). The step size starts at `eta = 2 * budget` for every input and is halved per
    sample at a checkpoint (see `apgd_checkpoint_lengths`) when the loss increased in at most a fraction `rho` of
    the interval's steps, or when the step was not halved at the last checkpoint and the best loss has not
    improved since; the iterate then restarts from the best point found. All inputs of a sample share one step-size
    multiplier, so each input's step stays proportional to its own budget.

    A run costs `steps + 1` forward and input-gradient backward passes (the random start is evaluated too), as in
    AutoAttack. The result keeps, per sample, a successful iterate if one was found, else the highest-loss one.

    Args:
        model, budget, n_restarts, targeted, processor, seed: as in [`RgbdAttack`].
        steps (`int`, defaults to 100): iterations (AutoAttack's default).
        loss (defaults to `"ce"`): `"ce"` or `"dlr"` as in the paper (DLR needs >= 3 classes, targeted >= 4);
            `"margin"`, callables and objectives work too.
        rho (`float`, defaults to 0.75): the oscillation threshold of the step-size rule.
    """

    keep_best_loss = True
    min_steps = 1

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        steps: int = 100,
        n_restarts: int = 1,
        rho: float = 0.75,
        **settings: Unpack[AttackSettings],
    ) -> None:
        super().__init__(model, budget, steps=steps, random_start=True, n_restarts=n_restarts, **settings)
        if check_real(rho, "rho", minimum=0.0, maximum=1.0) == 0:
            raise ValueError(f"`rho` must be in (0, 1], got {rho!r}.")
        self.rho = float(rho)

    def _attack_once(self, run: AttackRun) -> Iterate:
        interval, decrement, minimum = apgd_checkpoint_lengths(self.steps)
        space = run.space
        x = space.random_surface_linf(self.generator(run.device))
        value, grad = run.evaluate(x)
        best_value, x_best, grad_best = value.clone(), dict(x), dict(grad)
        scale = torch.full_like(value, 2.0).view(-1, 1, 1, 1)  # step size / budget, per sample
        x_previous = x
        previous_value = value
        increases = torch.zeros_like(value)
        best_at_check = best_value.clone()
        reduced_at_check = torch.ones_like(value, dtype=torch.bool)
        since_check = 0
        for step in range(self.steps):
            momentum = 1.0 if step == 0 else 0.75
            with torch.no_grad():
                z = space.project_linf(
                    {name: x[name] + space.modalities[name].eps * scale * grad[name].sign() for name in x}
                )
                candidate = {
                    name: x[name] + momentum * (z[name] - x[name]) + (1 - momentum) * (x[name] - x_previous[name])
                    for name in x
                }
                x_previous, x = x, space.project_linf(candidate)
            value, grad = run.evaluate(x)

            with torch.no_grad():
                increases += (value > previous_value).to(increases.dtype)
                previous_value = value
                improved = value > best_value
                best_value = torch.where(improved, value, best_value)
                for name in x:
                    x_best[name] = torch.where(improved.view(-1, 1, 1, 1), x[name], x_best[name])
                    grad_best[name] = torch.where(improved.view(-1, 1, 1, 1), grad[name], grad_best[name])

                since_check += 1
                if since_check == interval:
                    oscillating = increases <= interval * self.rho
                    stalled = ~reduced_at_check & (best_at_check >= best_value)
                    reduce = oscillating | stalled
                    reduced_at_check = reduce
                    best_at_check = best_value.clone()
                    scale = torch.where(reduce.view(-1, 1, 1, 1), scale / 2, scale)
                    for name in x:
                        x[name] = torch.where(reduce.view(-1, 1, 1, 1), x_best[name], x[name])
                        grad[name] = torch.where(reduce.view(-1, 1, 1, 1), grad_best[name], grad[name])
                    increases = torch.zeros_like(increases)
                    since_check = 0
                    interval = max(interval - decrement, minimum)
        return x


__all__ = ["APGD", "apgd_checkpoint_lengths"]
