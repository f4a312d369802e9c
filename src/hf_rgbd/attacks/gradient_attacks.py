"""Sign-gradient and L2 attacks: FGSM, R+FGSM, BIM, PGD (L-inf), PGD L2 and MI-FGSM.

Each class only defines its update rule (and its `min_steps`); budgets, step checks, objectives and restarts come
from [`RgbdAttack`], physical units and projection from [`PerturbationSpace`], tracking from [`IterateTracker`]. Update order mirrors torchattacks (step, clip the perturbation to the budget, clip the
values to the valid range), so that the L-inf attacks agree with it bit for bit on the same model.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Unpack

from ..processors.validation_rgbd import check_real
from .base import AttackRun, AttackSettings, RgbdAttack
from .perturbation_space import Iterate


class FGSM(RgbdAttack):
    r"""
    Fast gradient sign method (Goodfellow et al., 2015): `x' = clip(x + budget * sign(grad))`, one forward and one
    backward. See [`RgbdAttack`] for the arguments (no `alpha`, `steps`, `random_start` or `n_restarts`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        **settings: Unpack[AttackSettings],
    ) -> None:
        super().__init__(model, budget, steps=1, random_start=False, **settings)

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        x = space.clean()
        _, grads = run.evaluate(x)
        # The full budget step cannot leave the budget: only the valid range is clipped (as torchattacks does).
        return space.clip({name: x[name] + space.modalities[name].eps * grads[name].sign() for name in x})


class RFGSM(RgbdAttack):
    r"""
    R+FGSM (Tramèr et al., 2018): a random sign step of size `alpha`, then a gradient sign step of size
    `budget - alpha` from there: `x~ = P(x + alpha * sign(N(0, I)))`, `x' = P(x~ + (budget - alpha) * sign(grad(x~)))`.
    One forward and one backward. `alpha` defaults to budget / 2 (the paper's 8/255 for 16/255) and must not
    exceed the budget. torchattacks' `RFGSM` is an iterative variant since 2022, not this algorithm.
    """

    alpha_fraction = 0.5

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        alpha: dict[str, float] | None = None,
        **settings: Unpack[AttackSettings],
    ) -> None:
        super().__init__(model, budget, alpha, steps=1, random_start=True, **settings)
        too_large = {name: step for name, step in self.alpha.items() if step > self.budget[name]}
        if too_large:
            raise ValueError(f"`alpha` {too_large} exceeds `budget` {self.budget}: R+FGSM needs alpha <= budget.")

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        x = space.clean()
        direction = space.random_sign(self.generator(run.device))
        x = space.project_linf({name: x[name] + self.alpha[name] * direction[name] for name in x})
        _, grads = run.evaluate(x)
        return space.project_linf(
            {name: x[name] + (self.budget[name] - self.alpha[name]) * grads[name].sign() for name in x}
        )


class PGD(RgbdAttack):
    r"""
    Projected gradient descent, L-inf (Madry et al., 2018): from a uniformly random start in the budget box (with
    `random_start`), `steps` iterations of `x <- P(x + alpha * sign(grad))`. Each step is one forward and one
    input-gradient backward. See [`RgbdAttack`] for the arguments.

    ```python
    attack = PGD(model, budget={"pixel_values": 8 / 255, "depth_values": 0.05}, steps=10, processor=processor)
    adversarial = attack(batch, labels)  # same type and keys as `batch`
    ```
    """

    min_steps = 1

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        x = space.random_linf(self.generator(run.device)) if self.random_start else space.clean()
        for _ in range(self.steps):
            _, grads = run.evaluate(x)
            x = space.project_linf({name: x[name] + self.alpha[name] * grads[name].sign() for name in x})
        return x


class BIM(PGD):
    r"""
    Basic iterative method / I-FGSM (Kurakin et al., 2017): PGD L-inf without random start (hence deterministic,
    no restarts). With `steps=0` the number of steps follows Kurakin's rule `int(min(eps * 255 + 4, 1.25 * eps *
    255))` with the RGB budget `eps` (which `budget` must then name).
    """

    min_steps = 0  # 0 selects Kurakin's rule

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        alpha: dict[str, float] | None = None,
        steps: int = 10,
        **settings: Unpack[AttackSettings],
    ) -> None:
        super().__init__(model, budget, alpha, steps=steps, random_start=False, **settings)

    def _check_steps(self, steps: Any) -> int:
        steps = super()._check_steps(steps)
        if steps > 0:
            return steps
        if "pixel_values" not in self.budget:
            raise ValueError("`steps=0` (Kurakin's rule) needs an RGB budget; give `steps` explicitly.")
        eps = self.budget["pixel_values"]
        return max(int(min(eps * 255 + 4, 1.25 * eps * 255)), 1)


class PGDL2(PGD):
    r"""
    Projected gradient descent in L2, per input: `x <- P(x + alpha * g / ||g||_2)` where the norm runs over each
    sample's (C, H, W) values of one input, and P scales each input's perturbation back to `||delta||_2 <= budget`
    before clipping to the valid range. Budgets are L2 norms in physical units (default 1.0 for RGB intensity and
    1.0 metre for depth), the random start is a Gaussian direction with a radius uniform in [0, budget].
    """

    default_budget = {"pixel_values": 1.0, "depth_values": 1.0}
    norm = "l2"

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        x = space.random_l2(self.generator(run.device)) if self.random_start else space.clean()
        for _ in range(self.steps):
            _, grads = run.evaluate(x)
            candidate = {}
            for name, grad in grads.items():
                norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10
                candidate[name] = x[name] + self.alpha[name] * grad / norm
            x = space.project_l2(candidate)
        return x


class MIFGSM(RgbdAttack):
    r"""
    Momentum iterative FGSM (Dong et al., 2018): `m <- decay * m + g / mean(|g|)`, `x <- P(x + alpha * sign(m))`,
    no random start (deterministic, no restarts).

    The gradient is normalised by its mean absolute value over (C, H, W) per sample, as torchattacks does (the
    paper's L1 norm differs by a constant factor per sample, which sign() ignores). With two perturbed inputs the
    normalisation is **per input**: RGB and depth gradients have unrelated scales in physical units, and a joint
    normaliser would let the larger one set how fast the other's momentum forgets. Per input, each modality's
    momentum evolves exactly as in single-modality MI-FGSM.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        alpha: dict[str, float] | None = None,
        steps: int = 10,
        decay: float = 1.0,
        **settings: Unpack[AttackSettings],
    ) -> None:
        super().__init__(model, budget, alpha, steps=steps, random_start=False, **settings)
        self.decay = check_real(decay, "decay", minimum=0.0)

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        x = space.clean()
        momentum = {name: torch.zeros_like(value) for name, value in x.items()}
        for _ in range(self.steps):
            _, grads = run.evaluate(x)
            for name, grad in grads.items():
                scale = torch.mean(torch.abs(grad), dim=(1, 2, 3), keepdim=True)
                scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a zero gradient stays zero
                momentum[name] = grad / scale + momentum[name] * self.decay
            x = space.project_linf({name: x[name] + self.alpha[name] * momentum[name].sign() for name in x})
        return x


__all__ = ["BIM", "FGSM", "MIFGSM", "PGD", "PGDL2", "RFGSM"]
