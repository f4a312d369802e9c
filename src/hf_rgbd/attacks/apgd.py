"""Auto-PGD (Croce & Hein, 2020): step-size-free PGD with momentum, L-inf or L2, per modality budgets; its
targeted version APGD-T as AutoAttack runs it (`num_target_classes`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from typing_extensions import Unpack

from ..processors.validation_rgbd import check_choice, check_int, check_real
from .base import AttackRun, AttackSettings, RgbdAttack, check_attack_batch, clean_logits, model_device
from .objectives import TargetedDlrObjective
from .perturbation_space import Iterate
from .subsets import merge_result, select_samples, unattacked_result
from .tracking import AttackResult

#: `norm` values of APGD (and the other AutoAttack components), as AutoAttack spells them
NORMS = ("Linf", "L2")


def apgd_checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """The first checkpoint interval, its decrement and its minimum, in iterations, for `steps` iterations.

    Checkpoints fall at p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (fractions of
    `steps`): intervals start at 0.22 * steps and shrink by 0.03 * steps down to 0.06 * steps (each at least 1,
    rounded down as in the reference implementation).
    """
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


class APGD(RgbdAttack):
    r"""
    APGD-CE / APGD-DLR (Croce & Hein, 2020) with a budget per input in physical units, L-inf or L2.

    Per restart: a random start (L-inf: on the budget box, surface-scaled as in the paper; L2: on the budget
    sphere), then `steps` iterations of `z = P(x_k + eta * d(g_k))`, `x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k -
    x_{k-1}))` with momentum a = 0.75 (1 at the first step), where `d(g)` is `sign(g)` (L-inf) or `g / ||g||_2` per
    sample and input (L2), and P projects each input onto its own budget ball and valid range. The step size starts at `eta = 2 * budget` for every input and is halved per
    sample at a checkpoint (see `apgd_checkpoint_lengths`) when the loss increased in at most a fraction `rho` of
    the interval's steps, or when the step was not halved at the last checkpoint and the best loss has not
    improved since; the iterate then restarts from the best point found. All inputs of a sample share one step-size
    multiplier, so each input's step stays proportional to its own budget.

    A run costs `(steps + 1) * eot_iter` forward and input-gradient backward passes (the random start is evaluated
    too), as in AutoAttack. The result keeps, per sample, a successful iterate if one was found, else the
    highest-loss one.

    Two targeted uses, documented apart:
    - `targeted=True`: `labels` are the target classes, and the loss (e.g. `"dlr"`, its targeted variant with the
      best non-target class) is descended; success is reaching the target.
    - `num_target_classes=k` (APGD-T, as AutoAttack runs it): `labels` are the TRUE classes; for each sample the
      targets are the 2nd to (k+1)-th highest classes of its clean logits, one run per target rank, each run only
      on the samples that no earlier run misclassified, with the paper's targeted DLR loss
      ([`targeted_dlr_loss`]); success is misclassification. `loss` and `targeted` are fixed by this mode.

    Args:
        model, budget, n_restarts, targeted, processor, seed: as in [`RgbdAttack`] (with `norm="L2"` the budgets
            are L2 norms, default 1.0 for RGB intensity and 1.0 metre for depth).
        steps (`int`, defaults to 100): iterations (AutoAttack's default).
        loss (defaults to `"ce"`): `"ce"` or `"dlr"` as in the paper (DLR needs >= 3 classes, targeted >= 4);
            `"margin"`, callables and objectives work too.
        rho (`float`, defaults to 0.75): the oscillation threshold of the step-size rule.
        norm (`str`, defaults to `"Linf"`): `"Linf"` or `"L2"`.
        eot_iter (`int`, defaults to 1): gradients averaged over this many forward / backward passes at each
            iterate (expectation over transformation, for randomised models; AutoAttack's "rand" version uses 20).
        num_target_classes (`int`, *optional*): the APGD-T mode above (AutoAttack uses 9, at most K - 1 here).
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
        norm: str = "Linf",
        eot_iter: int = 1,
        num_target_classes: int | None = None,
        **settings: Unpack[AttackSettings],
    ) -> None:
        self.norm_name = check_choice(norm, "norm", NORMS)
        self.norm = "linf" if norm == "Linf" else "l2"  # read by the base class's budget checks
        if norm == "L2" and budget is None:
            budget = {"pixel_values": 1.0, "depth_values": 1.0}
        if num_target_classes is not None:
            if settings.get("targeted"):
                raise ValueError(
                    "`num_target_classes` (APGD-T) takes the true classes as `labels`; `targeted=True` (labels as "
                    "targets) is the other targeted use: pass one of them."
                )
            if "loss" in settings:
                raise ValueError("`num_target_classes` (APGD-T) uses the targeted DLR loss: do not pass `loss`.")
            settings = {**settings, "loss": "margin"}  # placeholder objective; each target run sets its own
        super().__init__(model, budget, steps=steps, random_start=True, n_restarts=n_restarts, **settings)
        if check_real(rho, "rho", minimum=0.0, maximum=1.0) == 0:
            raise ValueError(f"`rho` must be in (0, 1], got {rho!r}.")
        self.rho = float(rho)
        self.eot_iter = check_int(eot_iter, "eot_iter", 1)
        self.num_target_classes = None if num_target_classes is None else check_int(num_target_classes, "num_target_classes", 1)
        if self.num_target_classes is not None:
            num_labels = getattr(getattr(model, "config", None), "num_labels", None)
            if isinstance(num_labels, int) and num_labels > 0 and self.num_target_classes > num_labels - 1:
                raise ValueError(
                    f"`num_target_classes`={self.num_target_classes} needs more classes: the model has {num_labels}, "
                    f"so at most {num_labels - 1} other classes."
                )

    def __repr__(self) -> str:
        extra = f", num_target_classes={self.num_target_classes}" if self.num_target_classes else ""
        return f"APGD(budget={self.budget}, norm={self.norm_name!r}, steps={self.steps}, loss={self.loss!r}{extra})"

    def perturb(self, inputs: Mapping[str, Any], labels: torch.Tensor | None = None) -> AttackResult:
        if self.num_target_classes is None:
            return super().perturb(inputs, labels)
        return self._perturb_each_target(inputs, labels)

    def _perturb_each_target(self, inputs: Mapping[str, Any], labels: torch.Tensor | None) -> AttackResult:
        """APGD-T: one targeted-DLR run per target rank, each on the samples no earlier run misclassified."""
        if labels is None:
            labels = inputs.get("labels")
        if labels is None:
            raise ValueError("APGD-T (`num_target_classes`) needs the true classes as `labels`.")
        check_attack_batch(inputs, self.budget)
        device = model_device(self.model)
        labels = torch.as_tensor(labels).to(device)
        logits = clean_logits(self.model, inputs)
        if self.num_target_classes > logits.shape[1] - 1:
            raise ValueError(
                f"`num_target_classes`={self.num_target_classes} needs more classes: the logits have {logits.shape[1]}."
            )
        ranking = logits.argsort(dim=1, descending=True)
        result = unattacked_result(inputs, list(self.budget), device)
        result.ignored = labels == -100
        remaining = ~result.ignored
        for rank in range(1, self.num_target_classes + 1):
            index = remaining.nonzero().flatten()
            if index.numel() == 0:
                break
            run = APGD(
                self.model,
                self.budget,
                steps=self.steps,
                n_restarts=self.n_restarts,
                rho=self.rho,
                norm=self.norm_name,
                eot_iter=self.eot_iter,
                loss=TargetedDlrObjective(ranking[index, rank]),
                processor=self.processor,
                seed=self.seed,
            )
            part = run.perturb(select_samples(inputs, index), labels[index])
            # samples no run fools come back as given, as in AutoAttack's APGD-T
            result = merge_result(result, part, index, part.success)
            remaining[index[part.success]] = False
        return result

    def _evaluate(self, run: AttackRun, x: Iterate) -> tuple[torch.Tensor, Iterate]:
        """The objective and its input gradient at `x`, averaged over `eot_iter` passes."""
        value, grad = run.evaluate(x)
        for _ in range(self.eot_iter - 1):
            more_value, more_grad = run.evaluate(x)
            value = value + more_value
            grad = {name: grad[name] + more_grad[name] for name in grad}
        if self.eot_iter > 1:
            value = value / self.eot_iter
            grad = {name: g / self.eot_iter for name, g in grad.items()}
        return value, grad

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)

    def _attack_once(self, run: AttackRun) -> Iterate:
        interval, decrement, minimum = apgd_checkpoint_lengths(self.steps)
        space = run.space
        generator = self.generator(run.device)
        if self.norm == "linf":
            x, project = space.random_surface_linf(generator), space.project_linf
        else:
            x, project = space.random_l2(generator, on_sphere=True), space.project_l2
        value, grad = self._evaluate(run, x)
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
                z = project(
                    {name: x[name] + space.modalities[name].eps * scale * self._direction(grad[name]) for name in x}
                )
                candidate = {
                    name: x[name] + momentum * (z[name] - x[name]) + (1 - momentum) * (x[name] - x_previous[name])
                    for name in x
                }
                x_previous, x = x, project(candidate)
            value, grad = self._evaluate(run, x)

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


__all__ = ["APGD", "NORMS", "apgd_checkpoint_lengths"]
