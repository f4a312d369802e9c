"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search over square
windows, L-inf and L2, with a budget per input in physical units. Gradient-free: only forward passes."""

from __future__ import annotations

import math

import torch
from typing_extensions import Unpack

from ..processors.validation_rgbd import check_choice, check_flag, check_int, check_real
from .apgd import NORMS
from .base import AttackRun, AttackSettings, RgbdAttack
from .gradient_attacks import PGDL2
from .objectives import AttackObjective, LossFunction
from .perturbation_space import Iterate, ModalitySpace

# Iterations (of a 10000-query run) after which the square fraction p halves; rescaled to the run's query budget.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# L-inf: redraws of the window's signs while the proposal would leave the iterate unchanged (the authors' code
# redraws until it changes; a window of holes never does, hence a bound).
SIGN_REDRAWS = 4


def square_fraction(p_init: float, iteration: int, n_queries: int, rescale: bool = True) -> float:
    """The fraction p of an input's pixels that the square covers at `iteration` (0-based) of an `n_queries` run:
    `p_init`, halved at each of `P_HALVINGS` that the iteration, rescaled to 10000 queries (`rescale`; else taken
    as it is, as AutoAttack runs Square), has passed."""
    rescaled = int(iteration / n_queries * 10000) if rescale else iteration
    return p_init / 2 ** sum(rescaled > mark for mark in P_HALVINGS)


def square_side(p: float, height: int, width: int, l2: bool = False) -> int:
    """The square's side for fraction `p` of a `height` x `width` input: round(sqrt(p * H * W)), at least 1 (L2: at
    least 3 and odd, as the paper's L2 update splits the window in two halves), at most min(H, W)."""
    side = max(int(round(math.sqrt(p * height * width))), 3 if l2 else 1)
    if l2 and side % 2 == 0:
        side += 1
    return min(side, height, width)


def _random_signs(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Independent +1 / -1 entries of `shape`, dtype and device of `like`."""
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def _random_corners(values: torch.Tensor, side: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the top-left corner (rows, columns: (B,) long each) of a `side` x `side` window, uniform over
    every position inside the (H, W) plane of `values`."""
    batch, _, height, width = values.shape
    device = values.device
    top = torch.randint(0, height - side + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, width - side + 1, (batch,), generator=generator, device=device)
    return top, left


def _window_mask(values: torch.Tensor, side: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: each sample's window of `side` pixels at (`top`, `left`)."""
    height, width = values.shape[-2:]
    rows = torch.arange(height, device=values.device)
    cols = torch.arange(width, device=values.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_index(side: int, top: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Advanced indices selecting each sample's window: `values[index]` is (B, side, side, C)."""
    offsets = torch.arange(side, device=top.device)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return torch.arange(top.shape[0], device=top.device)[:, None, None], slice(None), rows, cols


def _pyramid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(height, width): the sum of 1 / (k + 1)^2 over the nested squares k = 0, 1, ... around the centre that
    contain each pixel (the paper's rectangle pattern), scaled to unit L2 norm."""
    rings = max(height // 2, width // 2) + 1
    weights = 1.0 / torch.arange(1, rings + 1, device=device, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum of weights[k] for k >= d
    rows = (torch.arange(height, device=device) - height // 2).abs()
    cols = (torch.arange(width, device=device) - width // 2).abs()
    pattern = tail[torch.maximum(rows[:, None], cols[None, :])]
    return pattern / pattern.norm()


def _meta_pattern(side: int, device: torch.device) -> torch.Tensor:
    """(side, side): the paper's L2 window pattern: a positive pyramid on the top half and a negative one on the
    bottom half, unit L2 norm (its transpose splits left / right)."""
    upper = side // 2
    pattern = torch.cat([_pyramid(upper, side, device), -_pyramid(side - upper, side, device)])
    return pattern / pattern.norm()


def _meta_patterns(batch: int, side: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(batch, 1, side, side): the meta pattern, transposed for a random half of the samples."""
    pattern = _meta_pattern(side, like.device).to(like.dtype)
    transpose = torch.rand(batch, generator=generator, device=like.device) > 0.5
    return torch.where(transpose.view(-1, 1, 1, 1), pattern.T, pattern)


def _per_channel_norm(values: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1): the L2 norm of each sample's channel over (H, W)."""
    return values.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()


def _at_l2_budget(m: ModalitySpace, delta: torch.Tensor) -> torch.Tensor:
    """`original + delta` with `delta` (zeroed at holes) scaled to L2 norm `eps` per sample, clipped to the valid
    range."""
    if m.mask is not None:
        delta = delta * m.mask
    norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return m.clip(m.original + delta * (m.eps / (norm + 1e-12)))


class Square(RgbdAttack):
    r"""
    Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based random search. Each
    iteration proposes a change of the current best iterate inside a random square window of every budgeted input
    and keeps it, per sample, where the objective improves (or the sample is fooled). Gradient-free: calls only
    model(**inputs) under torch.no_grad() (through [`AttackRun.score`]); never a backward pass.

    - L-inf: the start is vertical stripes, `original +/- eps` drawn per sample, channel and column; a proposal
      sets each channel of a `s` x `s` window to `original +/- eps` (one sign per sample and channel), and the
      signs are redrawn (at most 4 times) while it would leave the iterate unchanged, as in the authors' code.
    - L2: the start tiles the input with about 5 x 5 squares of the paper's "meta" pattern (a positive and a
      negative pyramid, randomly transposed, random sign per channel), scaled to L2 norm `eps`; a proposal
      zeroes a second random window and moves its mass, with the old content of the first window and a new
      meta pattern, into the first, keeping the norm at `eps` (per channel as in the paper), then rescales the
      perturbation to norm `eps`.
    Every proposal is then clipped to the input's valid range; depth holes never change.

    Schedule: the window covers a fraction `p` of the input's H x W pixels (side `round(sqrt(p * H * W))`, at
    least 1, for L2 at least 3 and odd), with `p = p_init` halved after iterations 10, 50, 200, 500, 1000, 2000,
    4000, 6000 and 8000 of a 10000-query run, rescaled to `n_queries`. With two budgeted inputs, every iteration
    proposes a window in each (its own side from the same `p`, relative to its own H x W, at its own random
    position) and accepts or rejects both together. Windows and signs are drawn per sample.

    Queries: the start and each iteration cost one forward of the samples still to attack (`n_queries` forwards
    per restart at most). A sample stops being queried once it is fooled and keeps its successful iterate; a
    restart attacks only the samples that are still robust.

    Args:
        model, targeted, processor, seed: as in [`RgbdAttack`].
        budget (`dict[str, float]`, *optional*): per input, the L-inf budget (default `{"pixel_values": 8/255,
            "depth_values": 0.05}`; an RGB budget above 1 is a ValueError) or, with `norm="L2"`, the L2 radius per
            input in physical units (default 1.0 each, as [`PGDL2`]).
        norm (`str`, defaults to `"Linf"`): `"Linf"` or `"L2"`.
        n_queries (`int`, defaults to 5000): forwards per restart, at least 1 (the start).
        p_init (`float`, defaults to 0.8): the initial square fraction, in (0, 1].
        n_restarts (`int`, defaults to 1): runs on the samples still robust.
        rescale_schedule (`bool`, defaults to True): halve p at the `P_HALVINGS` fractions of `n_queries` (the
            paper); False halves it at those iteration counts whatever `n_queries` is, as AutoAttack runs it.
        loss (defaults to `"margin"`, `"ce"` when `targeted`): the objective ascended, as in [`RgbdAttack`]; the
            paper's choices are the margin for untargeted and cross-entropy for targeted attacks.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        norm: str = "Linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        rescale_schedule: bool = True,
        loss: str | LossFunction | AttackObjective | None = None,
        **settings: Unpack[AttackSettings],
    ) -> None:
        self.norm_name = check_choice(norm, "norm", NORMS)
        self.norm = norm.lower()  # drives the base class's budget checks
        if self.norm == "l2":
            self.default_budget = PGDL2.default_budget
        check_int(n_queries, "n_queries", 1)
        self.p_init = check_real(p_init, "p_init", positive=True, maximum=1.0)
        self.rescale_schedule = check_flag(rescale_schedule, "rescale_schedule")
        if loss is None:
            loss = "ce" if check_flag(settings.get("targeted", False), "targeted") else "margin"
        super().__init__(model, budget, steps=n_queries, n_restarts=n_restarts, loss=loss, **settings)
        self.n_queries = self.steps

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(budget={self.budget}, norm={self.norm_name!r}, "
            f"n_queries={self.n_queries}, p_init={self.p_init}, loss={self.loss!r}, targeted={self.targeted})"
        )

    # ------------------------------------------------------------------------------------------------ proposals
    def _start(self, m: ModalitySpace, generator: torch.Generator) -> torch.Tensor:
        original = m.original
        batch, channels, height, width = original.shape
        if self.norm == "linf":
            return m.clip(original + m.eps * _random_signs((batch, channels, 1, width), original, generator))
        tile = max(min(height, width) // 5, 1)
        rows, cols = height // tile, width // tile
        flips = torch.rand(batch, 1, rows, cols, 1, 1, generator=generator, device=original.device) > 0.5
        pattern = _meta_pattern(tile, original.device).to(original.dtype)
        tiles = torch.where(flips, pattern.T, pattern)
        tiles = tiles * _random_signs((batch, channels, rows, cols, 1, 1), original, generator)
        top, left = (height - rows * tile) // 2, (width - cols * tile) // 2
        delta = torch.zeros_like(original)
        delta[:, :, top : top + rows * tile, left : left + cols * tile] = tiles.permute(0, 1, 2, 4, 3, 5).reshape(
            batch, channels, rows * tile, cols * tile
        )
        return _at_l2_budget(m, delta)

    def _propose_linf(self, m: ModalitySpace, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        batch, channels, height, width = x.shape
        side = square_side(p, height, width)
        window = _window_mask(x, side, *_random_corners(x, side, generator))

        def proposal() -> torch.Tensor:
            signs = _random_signs((batch, channels, 1, 1), x, generator)
            return m.clip(torch.where(window, m.original + m.eps * signs, x))

        candidate = proposal()
        for _ in range(SIGN_REDRAWS):
            unchanged = (candidate == x).flatten(1).all(dim=1).view(-1, 1, 1, 1)
            candidate = torch.where(unchanged, proposal(), candidate)
        return candidate

    def _propose_l2(self, m: ModalitySpace, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        batch, channels, height, width = x.shape
        side = square_side(p, height, width, l2=True)
        first = _random_corners(x, side, generator)
        second = _random_corners(x, side, generator)
        delta = x - m.original
        both = _window_mask(x, side, *first) | _window_mask(x, side, *second)
        image_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        windows_norm = _per_channel_norm(delta * both)
        index = _window_index(side, *first)
        old = delta[index].permute(0, 3, 1, 2)  # (B, C, side, side)
        new = _meta_patterns(batch, side, x, generator) * _random_signs((batch, channels, 1, 1), x, generator)
        new = new + old / (_per_channel_norm(old) + 1e-12)
        if m.mask is not None:
            new = new * m.mask[index].permute(0, 3, 1, 2)
        # each channel's window takes the mass of both windows plus its share of what the budget has left
        mass = (torch.clamp(m.eps**2 - image_norm**2, min=0) / channels + windows_norm**2).sqrt()
        new = new / (_per_channel_norm(new) + 1e-12) * mass
        delta = torch.where(_window_mask(x, side, *second), torch.zeros_like(delta), delta)
        delta[index] = new.permute(0, 2, 3, 1)
        return _at_l2_budget(m, delta)

    # ------------------------------------------------------------------------------------------------ search
    @staticmethod
    def _to_query(run: AttackRun) -> torch.Tensor:
        """(B,) bool: the samples to query. Independent samples stop once fooled; coupled ones (one's score
        depends on the others' inputs, so a success can be undone) are all searched to the end."""
        if run.tracker.coupled:
            return ~run.ignored
        return ~(run.tracker.success | run.ignored)

    def _attack_once(self, run: AttackRun) -> Iterate:
        space = run.space
        generator = self.generator(run.device)
        propose = self._propose_linf if self.norm == "linf" else self._propose_l2
        active = self._to_query(run)
        keep = active.view(-1, 1, 1, 1)
        # samples fooled in an earlier restart are not attacked again: they keep their successful iterate
        x = {
            name: torch.where(keep, self._start(m, generator), run.tracker.x_success[name])
            for name, m in space.modalities.items()
        }
        best = run.score(x, active.nonzero().flatten())
        for iteration in range(self.n_queries - 1):
            active = self._to_query(run)
            index = active.nonzero().flatten()
            if index.numel() == 0:
                break
            p = square_fraction(self.p_init, iteration, self.n_queries, self.rescale_schedule)
            keep = active.view(-1, 1, 1, 1)
            candidate = {
                name: torch.where(keep, propose(m, x[name], p, generator), x[name])
                for name, m in space.modalities.items()
            }
            value = run.score(candidate, index)
            accept = active & (value > best)
            if not run.tracker.coupled:
                accept |= active & run.tracker.success  # fooled now: keep the successful iterate
            best = torch.where(accept, value, best)
            x = {name: torch.where(accept.view(-1, 1, 1, 1), candidate[name], x[name]) for name in x}
        return x


__all__ = ["Square", "square_fraction", "square_side"]
