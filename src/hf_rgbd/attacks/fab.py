"""Fast adaptive boundary attack (Croce & Hein, ICML 2020), L-inf or L2, with a budget per input in physical
units; its targeted version FAB-T as AutoAttack runs it (`num_target_classes`).

FAB is a minimum-norm attack: it walks along the linearised decision boundary towards the clean point and keeps,
per sample, the adversarial point of smallest norm it has seen. With several budgeted inputs the norm is the
budget-normalised one (each input's perturbation divided by its budget), so the budget of every sample is 1 in the
normalised coordinates the attack works in; see [`FAB`].
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from typing_extensions import Unpack

from ..processors.validation_rgbd import check_choice, check_int, check_real
from .apgd import NORMS
from .base import AttackRun, AttackSettings, RgbdAttack, model_device
from .gradient_attacks import PGDL2
from .objectives import ClassificationObjective
from .perturbation_space import Iterate, PerturbationSpace
from .subsets import batch_size_of, merge_result, select_samples, unattacked_result
from .tracking import AttackResult

_TINY = 1e-12


# ------------------------------------------------------------------------------------------------ projections
def _oriented(w: torch.Tensor, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):
    """The problem `w . d = c` rewritten with c >= 0 (w's sign flipped per row where c < 0), and per coordinate how
    far d may move in the direction that raises `w . d` (`room` >= 0; 0 where w is 0)."""
    flip = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w = w * flip[:, None]
    room = torch.where(w > 0, upper, torch.where(w < 0, -lower, torch.zeros_like(w)))
    return w, c.abs(), room.clamp_min(0)


def _segment(breaks: torch.Tensor, weight: torch.Tensor, gain: torch.Tensor, c: torch.Tensor):
    """The shared step of both projections. Coordinate i adds `t * weight_i` to `w . d` until t reaches its
    breakpoint `breaks_i`, where it saturates and adds `gain_i` from then on, so `w . d` grows piecewise linearly in
    t: `reach(t) = sum_{breaks_i <= t} gain_i + t * sum_{breaks_i > t} weight_i`. Sort the breakpoints, find the
    segment where reach crosses `c` and solve the linear piece there.

    Returns the crossing t per row (undefined where infeasible) and whether `c` is reachable at all."""
    order = breaks.argsort(dim=1)
    breaks = breaks.gather(1, order)
    weight = weight.gather(1, order)
    gain = gain.gather(1, order)
    gained = gain.cumsum(dim=1)
    spent = weight.cumsum(dim=1)
    total = spent[:, -1:]
    reach = gained + breaks * (total - spent).clamp_min(0)
    reach = torch.where(torch.isinf(breaks), torch.full_like(reach, torch.inf), reach)
    count = (reach < c[:, None]).sum(dim=1, keepdim=True)  # breakpoints passed before reach meets c
    feasible = count[:, 0] < breaks.shape[1]
    zero = torch.zeros_like(total)
    gained_before = torch.cat((zero, gained), dim=1).gather(1, count)
    spent_before = torch.cat((zero, spent), dim=1).gather(1, count)
    t = (c[:, None] - gained_before) / (total - spent_before).clamp_min(_TINY)
    return t[:, 0], feasible


def hyperplane_projection_linf(
    w: torch.Tensor, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """The smallest L-inf step `d` onto the hyperplane `w . d = c` within the box `lower <= d <= upper` (FAB's
    L-inf projection, Croce & Hein 2020), batched over rows.

    Args:
        w: (N, D) hyperplane normals; c: (N,) offsets; lower, upper: (N, D) box with `lower <= 0 <= upper` (the
            point being projected is the origin of `d`); infinite bounds are allowed.

    Returns:
        (N, D): `d` with `w . d = c` and `||d||_inf` minimal, `d_i = sign(w_i) * min(r, room_i)`; where the
        hyperplane does not meet the box, the box corner that gets closest to it (`d_i = sign(w_i) * room_i`).
        Coordinates with `w_i = 0` do not move. O(D log D) per row (one sort).
    """
    w, c, room = _oriented(w, c, lower, upper)
    weight = w.abs()
    # at radius r, coordinate i moves min(r, room_i) and adds weight_i times that to w . d
    gain = torch.where(weight > 0, weight * room, torch.zeros_like(weight))
    radius, feasible = _segment(torch.where(weight > 0, room, torch.zeros_like(room)), weight, gain, c)
    radius = torch.where(feasible, radius, torch.full_like(radius, torch.inf))
    return w.sign() * torch.minimum(room, radius[:, None])


def hyperplane_projection_l2(
    w: torch.Tensor, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """The smallest L2 step `d` onto the hyperplane `w . d = c` within the box `lower <= d <= upper` (FAB's L2
    projection), batched over rows. Arguments and the infeasible case as [`hyperplane_projection_linf`].

    Returns:
        (N, D): `d = clip(lambda * w, lower, upper)` (sign of w oriented towards c) with `lambda >= 0` solving
        `w . d = c` (the KKT point of the convex problem, hence the minimum). O(D log D) per row (one sort).
    """
    w, c, room = _oriented(w, c, lower, upper)
    weight = w.abs()
    # at multiplier lambda, coordinate i moves lambda * |w_i| until it saturates at lambda_i = room_i / |w_i|
    # (a coordinate with w_i = 0 never moves: saturated from the start, adding nothing)
    breaks = torch.where(weight > 0, room / weight.clamp_min(_TINY), torch.zeros_like(room))
    gain = torch.where(weight > 0, weight * room, torch.zeros_like(weight))
    lam, feasible = _segment(breaks, weight**2, gain, c)
    corner = torch.where(w > 0, upper, torch.where(w < 0, lower, torch.zeros_like(w)))
    step = torch.minimum(torch.maximum(lam[:, None] * w, lower), upper)
    return torch.where(feasible[:, None], step, corner)


# ------------------------------------------------------------------------------------------------ coordinates
class NormalisedBox:
    """The budgeted inputs of one run as one vector per sample in budget-normalised units: `u_m = delta_m / eps_m`
    per input `m`, flattened and concatenated (B, D). The budget is the unit ball (L-inf: `max |u| <= 1`, i.e.
    `max_m max |delta_m| / eps_m <= 1`; L2: `||u|| <= 1`, i.e. `sum_m ||delta_m||^2 / eps_m^2 <= 1`) and the valid
    ranges become the per-coordinate box [`lower`, `upper`] (widened to contain 0 where a clean value lies outside
    its range). Depth holes and inputs with a zero budget are fixed coordinates: box width 0, gradient 0."""

    def __init__(self, space: PerturbationSpace) -> None:
        self.space = space
        lowers, uppers, frees, scales = [], [], [], []
        for m in space.modalities.values():
            original = m.original.flatten(1)
            free = torch.ones_like(original, dtype=torch.bool)
            if m.mask is not None:
                free = m.mask.expand_as(m.original).flatten(1)
            if m.eps == 0:
                free = torch.zeros_like(free)
            eps = m.eps if m.eps > 0 else 1.0
            zero = torch.zeros((), dtype=original.dtype, device=original.device)
            lowers.append(torch.where(free, (m.low - original) / eps, zero).clamp_max(0))
            uppers.append(torch.where(free, (m.high - original) / eps, zero).clamp_min(0))
            frees.append(free)
            scales.append(m.eps)
        self.lower = torch.cat(lowers, dim=1)
        self.upper = torch.cat(uppers, dim=1)
        self.free = torch.cat(frees, dim=1)
        self.scales = scales
        self.sizes = [lower.shape[1] for lower in lowers]

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.lower)

    def iterate(self, u: torch.Tensor, requires_grad: bool = False) -> Iterate:
        """Physical values per input at `u` (detached leaves, requiring grad when asked)."""
        out = {}
        for (name, m), part, eps in zip(
            self.space.modalities.items(), u.split(self.sizes, dim=1), self.scales, strict=True
        ):
            value = (m.original + eps * part.view_as(m.original)).detach()
            out[name] = value.requires_grad_(True) if requires_grad else value
        return out

    def gradient(self, grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Input gradients of the physical leaves (in `iterate`'s order) as one (B, D) gradient with respect to u."""
        parts = [
            self.zeros()[:, :size] if grad is None else eps * grad.flatten(1)
            for grad, eps, size in zip(grads, self.scales, self.sizes, strict=True)
        ]
        return torch.cat(parts, dim=1) * self.free

    def random_start(self, norm: str, generator: torch.Generator) -> torch.Tensor:
        """AutoAttack's random restart point: radius 1/2 of the budget in the attack's norm (uniform noise scaled
        to L-inf norm 1/2, or a Gaussian direction of L2 norm 1/2), clipped to the box."""
        lower = self.lower
        sample = torch.rand if norm == "linf" else torch.randn
        noise = sample(lower.shape, generator=generator, device=lower.device, dtype=lower.dtype)
        if norm == "linf":
            noise = 2 * noise - 1
        noise = noise * self.free
        size = _norm(noise, norm).clamp_min(_TINY)
        return torch.clamp(0.5 * noise / size[:, None], self.lower, self.upper)


def _norm(u: torch.Tensor, norm: str) -> torch.Tensor:
    return u.abs().amax(dim=1) if norm == "linf" else u.norm(dim=1)


def _dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    return g.abs().sum(dim=1) if norm == "linf" else g.norm(dim=1)


# ------------------------------------------------------------------------------------------------ the attack
@dataclass
class _RunPlan:
    """One FAB run on some samples: the target rank (FAB-T; None untargeted), whether it starts from a random
    point, the targets of its samples (None until the clean logits are read) and the clean ranking it read."""

    rank: int | None = None
    random_start: bool = False
    targets: torch.Tensor | None = None
    ranking: torch.Tensor | None = None


class FAB(RgbdAttack):
    r"""
    FAB (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020),
    L-inf or L2, with a budget per input in physical units, and FAB-T, its targeted version as AutoAttack runs it.

    FAB looks for the adversarial point closest to the clean one. In the budget-normalised coordinates
    `u_m = delta_m / eps_m` of the budgeted inputs (concatenated; the budget is the unit ball, the valid ranges a
    box, depth holes fixed coordinates, see [`NormalisedBox`]) each step:

    1. evaluates the logits `f` and the input gradients of the needed logit differences at `u_k`; if `u_k` is
       misclassified it is recorded (when its norm is the smallest so far) and the step starts from
       `u' = beta * u_k` (the step back towards the clean point), else from `u' = u_k`;
    2. linearises the boundary between the true class `y` and a class `j`: untargeted, the `j != y` with the
       smallest linearised distance `|f_j - f_y| / ||grad (f_j - f_y)||_*` (dual norm: L1 for L-inf, L2 for L2);
       FAB-T, the run's target;
    3. projects `u'` and the clean point onto that hyperplane within the box (minimal-norm projections,
       [`hyperplane_projection_linf`] / [`hyperplane_projection_l2`]): steps `d'` and `d0`;
    4. takes the biased step `u_{k+1} = clip((1 - a)(u' + eta d') + a eta d0)` with
       `a = min(||d'|| / (||d'|| + ||d0||), alpha_max)`.

    After `steps` steps one more forward (without gradients) checks the last iterate. The result keeps, per sample,
    the smallest-norm misclassified point; `success` is that norm being at most 1 (within the budget: every input
    within its own budget for L-inf, `sum_m ||delta_m||^2 / eps_m^2 <= 1` for L2). Unsuccessful samples come back
    as given (as in AutoAttack), in `inputs` and `final_inputs` alike; a sample misclassified from the start is a
    success with no perturbation.

    Differences from the reference implementation (AutoAttack's `fab_pt.py`), for one forward per step: the
    misclassification test of an iterate is read from the forward of the next step, so the step back (beta) is
    taken after the boundary is linearised at the iterate itself rather than at the stepped-back point; the
    reference costs one more forward per step (2 forwards and K backwards untargeted, 2 forwards and 1 backward
    FAB-T), here 1 forward and K (untargeted) or 1 (FAB-T) input-gradient backwards per step, plus the last check.

    Restarts and targets, as in AutoAttack: the first run starts at the clean point, restart r > 0 at a random
    point of norm 1/2 (the budget's half), and each restart and each target runs only on the samples no earlier
    run has fooled within the budget. `num_target_classes=k` is FAB-T: `labels` are the TRUE classes, and the
    targets of each sample are its 2nd to (k+1)-th highest clean logits (read from the first run's first
    forward, at the clean point), one run (times `n_restarts`) per target rank; the boundary is the one between
    the true class and the target, and success is still misclassification within the budget. AutoAttack runs
    FAB-T with `n_restarts=1` and `num_target_classes=9`, untargeted FAB with `n_restarts=5`.

    Args:
        model, budget, processor, seed: as in [`RgbdAttack`] (with `norm="L2"` the budgets are L2 norms, default
            1.0 for RGB intensity and 1.0 metre for depth).
        norm (`str`, defaults to `"Linf"`): `"Linf"` or `"L2"`.
        steps (`int`, defaults to 100): iterations per run (AutoAttack's default).
        n_restarts (`int`, defaults to 1): runs per target (untargeted: in all).
        num_target_classes (`int`, *optional*): FAB-T, between 1 and K - 1 (K classes).
        alpha_max (`float`, defaults to 0.1), eta (`float`, defaults to 1.05), beta (`float`, defaults to 0.9):
            the paper's largest bias towards the clean point, overshoot and step back.
        loss: FAB uses no loss. A [`ClassificationObjective`] (e.g. a [`MatchingObjective`]) names the logits
            field and the forward's extra arguments; strings are accepted and change nothing; callables and
            non-classification objectives are a ValueError.
        targeted (`bool`): `targeted=True` (labels as targets) is not supported and is a ValueError; FAB-T is
            `num_target_classes` with the true classes as labels.
    """

    min_steps = 1

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        norm: str = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        num_target_classes: int | None = None,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        **settings: Unpack[AttackSettings],
    ) -> None:
        self.norm_name = check_choice(norm, "norm", NORMS)
        self.norm = "linf" if norm == "Linf" else "l2"  # read by the base class's budget checks
        if norm == "L2" and budget is None:
            budget = dict(PGDL2.default_budget)
        if settings.get("targeted"):
            raise ValueError(
                "FAB does not support `targeted=True` (labels as targets): pass the true classes as `labels`, "
                "untargeted, or use `num_target_classes` for FAB-T."
            )
        loss = settings.get("loss")
        if callable(loss) and not isinstance(loss, ClassificationObjective):
            raise ValueError(
                "FAB uses no loss, only the classifier's logits: pass no `loss`, or a ClassificationObjective to "
                f"name the logits field; got {loss!r}."
            )
        super().__init__(model, budget, steps=steps, random_start=False, n_restarts=n_restarts, **settings)
        if not isinstance(self.objective, ClassificationObjective):
            raise ValueError(
                f"FAB works on a classifier's logits: `loss` must be a ClassificationObjective, got "
                f"{type(self.objective).__name__}."
            )
        self.alpha_max = check_real(alpha_max, "alpha_max", minimum=0.0, maximum=1.0)
        self.eta = check_real(eta, "eta", positive=True)
        self.beta = check_real(beta, "beta", minimum=0.0, maximum=1.0)
        self.num_target_classes = None
        if num_target_classes is not None:
            self.num_target_classes = check_int(num_target_classes, "num_target_classes", 1)
            num_labels = getattr(getattr(model, "config", None), "num_labels", None)
            if isinstance(num_labels, int) and num_labels > 0:
                self._check_target_count(num_labels)
        self._plan: _RunPlan | None = None

    def __repr__(self) -> str:
        extra = f", num_target_classes={self.num_target_classes}" if self.num_target_classes else ""
        return (
            f"FAB(budget={self.budget}, norm={self.norm_name!r}, steps={self.steps}, n_restarts={self.n_restarts}"
            f"{extra})"
        )

    def _check_target_count(self, num_classes: int) -> None:
        if self.num_target_classes > num_classes - 1:
            raise ValueError(
                f"`num_target_classes`={self.num_target_classes} needs more classes: the model has {num_classes}, "
                f"so at most {num_classes - 1} other classes can be targets."
            )

    # ------------------------------------------------------------------------------------------------ runs
    def perturb(self, inputs: Mapping[str, Any], labels: torch.Tensor | None = None) -> AttackResult:
        """Run FAB (or FAB-T): one run per target rank and restart, each on the samples still not fooled within
        the budget. See [`RgbdAttack.perturb`] for the arguments and the result."""
        if not isinstance(inputs, Mapping):
            raise ValueError(f"`inputs` must be a BatchFeature or a dict of tensors, got {type(inputs).__name__}.")
        if labels is None:
            labels = inputs.get("labels")
        device = model_device(self.model)
        labels = self.objective.prepare_labels(labels, batch_size_of(inputs), device)
        self.generator(device)  # created here, so that every run below draws from this attack's generator
        result = unattacked_result(inputs, list(self.budget), device)
        result.ignored = labels == -100
        remaining = ~result.ignored
        ranking = None  # (B, K) clean logits' classes, best first (FAB-T)
        ranks = [None] if self.num_target_classes is None else range(1, self.num_target_classes + 1)
        for rank in ranks:
            for restart in range(self.n_restarts):
                index = remaining.nonzero().flatten()
                if index.numel() == 0:
                    return result
                plan = _RunPlan(rank, random_start=restart > 0)
                if rank is not None and ranking is not None:
                    plan.targets = ranking[index, rank]
                run = copy.copy(self)
                run.n_restarts, run._plan = 1, plan
                part = RgbdAttack.perturb(run, select_samples(inputs, index), labels[index])
                if plan.ranking is not None:
                    ranking = torch.zeros(
                        (labels.shape[0], plan.ranking.shape[1]), dtype=torch.long, device=device
                    ).index_copy(0, index, plan.ranking)
                result = merge_result(result, part, index, part.success)
                remaining[index[part.success]] = False
        return result

    def _targets(self, logits: torch.Tensor, plan: _RunPlan) -> torch.Tensor:
        """FAB-T's targets from the clean logits (the first run's first forward, at the clean point)."""
        self._check_target_count(logits.shape[1])
        plan.ranking = logits.detach().argsort(dim=1, descending=True)
        return plan.ranking[:, plan.rank]

    def _boundary(
        self,
        logits: torch.Tensor,
        leaves: Iterate,
        labels: torch.Tensor,
        targets: torch.Tensor | None,
        box: NormalisedBox,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logit difference `f_j - f_y` (B,) and its gradient with respect to u (B, D) for the class `j` of
        each sample's boundary: the target (FAB-T, one backward), else the closest class by linearised distance
        (one backward per class)."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        true = logits[rows, labels]
        tensors = list(leaves.values())

        def gradient(value: torch.Tensor, retain: bool) -> torch.Tensor:
            grads = torch.autograd.grad(value.sum(), tensors, retain_graph=retain, allow_unused=True)
            return box.gradient(grads)

        if targets is not None:
            difference = logits[rows, targets] - true
            return difference.detach(), gradient(difference, retain=False)
        num_classes = logits.shape[1]
        closest = torch.full_like(true, torch.inf).detach()
        best_df, best_dg = torch.zeros_like(closest), box.zeros()
        for j in range(num_classes):
            difference = logits[:, j] - true
            dg = gradient(difference, retain=j < num_classes - 1)
            df = difference.detach()
            distance = df.abs() / (_dual_norm(dg, self.norm) + _TINY)
            distance = torch.where(labels == j, torch.full_like(distance, torch.inf), distance)
            closer = distance < closest
            closest = torch.where(closer, distance, closest)
            best_df = torch.where(closer, df, best_df)
            best_dg = torch.where(closer[:, None], dg, best_dg)
        return best_df, best_dg

    def _step(
        self, u: torch.Tensor, start: torch.Tensor, df: torch.Tensor, dg: torch.Tensor, box: NormalisedBox
    ) -> torch.Tensor:
        """FAB's biased projection step from `start`, on the boundary `df + dg . (z - u) = 0` linearised at `u`."""
        project = hyperplane_projection_linf if self.norm == "linf" else hyperplane_projection_l2
        offset = (dg * u).sum(dim=1) - df  # the hyperplane is dg . z = offset
        size = u.shape[0]
        # the stepped-back iterate and the clean point (u = 0), projected together
        steps = project(
            torch.cat((dg, dg)),
            torch.cat((offset - (dg * start).sum(dim=1), offset)),
            torch.cat((box.lower - start, box.lower)),
            torch.cat((box.upper - start, box.upper)),
        )
        step, step_clean = steps[:size], steps[size:]
        lengths = _norm(steps, self.norm).clamp_min(1e-8)
        alpha = (lengths[:size] / (lengths[:size] + lengths[size:])).clamp(0, self.alpha_max)[:, None]
        moved = (start + self.eta * step) * (1 - alpha) + self.eta * step_clean * alpha
        return torch.clamp(moved, box.lower, box.upper)

    def _attack_once(self, run: AttackRun) -> Iterate:
        plan = self._plan if self._plan is not None else _RunPlan()
        box = NormalisedBox(run.space)
        labels = run.labels
        u = box.random_start(self.norm, self.generator(run.device)) if plan.random_start else box.zeros()
        best_norm = torch.full((u.shape[0],), torch.inf, dtype=u.dtype, device=u.device)
        best_u = box.zeros()
        targets = plan.targets
        for step in range(self.steps + 1):
            last = step == self.steps  # the last forward only checks the last iterate
            leaves = box.iterate(u, requires_grad=not last)
            with torch.set_grad_enabled(not last):
                outputs = self.model(**run._model_batch(leaves), **run.model_kwargs)
            if step == 0:  # the output field and the labels' class range, once per run
                self.objective.check_outputs(outputs, labels, self.model)
            logits = self.objective.logits(outputs)
            if plan.rank is not None and targets is None:
                targets = self._targets(logits, plan)
            with torch.no_grad():
                fooled = logits.argmax(dim=1) != labels
                norm = _norm(u, self.norm)
                better = fooled & (norm < best_norm)
                best_norm = torch.where(better, norm, best_norm)
                best_u = torch.where(better[:, None], u, best_u)
                start = torch.where(fooled[:, None], self.beta * u, u)
            if last:
                break
            df, dg = self._boundary(logits, leaves, labels, targets, box)
            with torch.no_grad():
                u = self._step(u, start, df, dg, box)
        success = (best_norm <= 1) & ~run.ignored
        best = box.iterate(best_u)
        run.tracker.record(best, -best_norm, success)
        clean = run.space.clean()
        return {name: torch.where(success.view(-1, 1, 1, 1), best[name], clean[name]) for name in best}


__all__ = ["FAB", "NormalisedBox", "hyperplane_projection_l2", "hyperplane_projection_linf"]
