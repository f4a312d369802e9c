"""Machinery shared by every hf-rgbd attack: budgets per modality in physical units, conversion between the model's
input space and physical space, projection, the objective, best-iterate tracking and restarts.

An attack subclass only writes its update rule (`_attack_once`) with the helpers of [`AttackRun`].
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature

from ..processors.depth_processing_rgbd import INVERTIBLE_REPRESENTATIONS, depth_token_ids
from ..processors.validation_rgbd import check_depth_mask, check_flag, check_image_tensor, check_int
from .objectives import AttackObjective, LossFunction, make_objective

PERTURBABLE_INPUTS = ("pixel_values", "depth_values")
# Batch entries that are never forwarded to a model that does not name them explicitly.
NON_MODEL_INPUTS = ("labels", "intrinsics")
DEFAULT_BUDGET = {"pixel_values": 8 / 255, "depth_values": 0.05}


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
    """

    inputs: Any
    final_inputs: Any
    success: torch.Tensor
    linf: dict[str, torch.Tensor]
    l2: dict[str, torch.Tensor]


@dataclass
class _Modality:
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


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _forward_parameters(model: torch.nn.Module) -> set[str] | None:
    """Explicit parameter names of `model.forward`, or None when it also takes `**kwargs`."""
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def model_inputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `batch` to pass to `model(**...)`: explicit forward parameters, or everything but `labels`
    and `intrinsics` when the forward takes `**kwargs`."""
    accepted = _forward_parameters(model)
    return {
        key: value
        for key, value in batch.items()
        if (key in accepted if accepted is not None else key not in NON_MODEL_INPUTS) and key != "labels"
    }


def _check_budget_dict(values: Any, name: str, allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"`{name}` must be a non-empty dict input name -> float, e.g. {DEFAULT_BUDGET}; got {values!r}."
        )
    checked = {}
    for key, value in values.items():
        if key not in allowed:
            raise ValueError(f"`{name}` names {key!r}; an attack perturbs only {allowed}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"`{name}[{key!r}]` must be a finite number >= 0, got {value!r}.")
        checked[key] = float(value)
    return checked


class RgbdAttack:
    r"""
    Base class of the attacks on RGB-D models through the Hugging Face forward API.

    An attack takes a batch as [`RgbdProcessor`] returns it (a `BatchFeature` or a dict with `pixel_values`,
    `depth_values`, `depth_mask`, ...) and labels, perturbs the inputs named in `budget` within their own budget in
    physical units, and returns a batch of the same type and keys.

    Physical units: RGB intensity in [0, 1] (model inputs are mapped back through the processor's `image_mean` /
    `image_std`), depth in metres (through the depth processor's `to_metres` / `from_metres`). The perturbation is
    optimised in physical space and mapped to the model's input space by differentiable transforms at every step.
    RGB stays in [0, 1], depth in [`min_depth`, `max_depth`] of the depth processor; depth holes (`depth_mask`
    False) stay holes and `depth_mask` is unchanged; `depth_token_ids`, if present, are recomputed from the
    perturbed depth at every step. With `processor=None` the inputs already are in physical units: RGB is kept in
    [0, 1] and depth only non-negative (no valid range is known without the processor), and `depth_token_ids`
    cannot be recomputed (a ValueError if the batch has them and depth is attacked).

    Guarantees: works under `torch.no_grad()` and `torch.inference_mode()`; runs the model in eval mode and restores
    every module's train/eval flag afterwards; takes gradients with respect to the inputs only
    (`torch.autograd.grad`, no weight `.grad`, parameters' `requires_grad` untouched); draws random numbers from its
    own `torch.Generator` (seeded with `seed` on the model's device, advancing from call to call; `manual_seed`
    restarts it), never from the global RNG; runs on the model's device (the returned batch is on it). One attack
    step costs exactly one forward and one input-gradient backward: success is read from the logits of the step's
    forward pass, never from extra evaluation passes.

    Args:
        model (`torch.nn.Module`): a model called as `model(**inputs)` (e.g. [`RgbdCnnForImageClassification`],
            [`RgbdClipForImageClassification`], [`RgbdClipModel`] with a [`RetrievalObjective`]).
        budget (`dict[str, float]`, defaults to `{"pixel_values": 8/255, "depth_values": 0.05}`): per input, the
            perturbation budget in physical units (L-inf, or L2 for [`PGDL2`]). Inputs not named stay unchanged.
        alpha (`dict[str, float]`, *optional*): step size per input (default: budget / 4).
        steps (`int`, defaults to 10): iterations.
        random_start (`bool`, defaults to True): start from a uniformly random point of the budget ball.
        n_restarts (`int`, defaults to 1): independent runs; a sample keeps any success found.
        loss (`str`, callable or [`AttackObjective`], defaults to `"ce"`): `"ce"`, `"margin"` (CW-Linf), `"dlr"`,
            a callable `(outputs, labels) -> (B,)` per-sample loss, or an objective such as [`RetrievalObjective`].
        targeted (`bool`, defaults to False): `labels` are targets and the loss is descended.
        processor ([`RgbdProcessor`], *optional*): the processor that made the batch (its normalisation and depth
            representation); None when the inputs are in physical units.
        seed (`int`, defaults to 0): seed of the attack's own random generator.
    """

    default_budget: dict[str, float] = DEFAULT_BUDGET
    alpha_fraction: float = 0.25  # default step: this fraction of the budget
    keep_best_loss: bool = False  # fallback for unsuccessful samples: best-loss iterate (True) or final iterate

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        alpha: dict[str, float] | None = None,
        steps: int = 10,
        random_start: bool = True,
        n_restarts: int = 1,
        loss: str | LossFunction | AttackObjective = "ce",
        targeted: bool = False,
        processor: Any = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.budget = _check_budget_dict(
            dict(self.default_budget) if budget is None else budget, "budget", PERTURBABLE_INPUTS
        )
        alpha = {} if alpha is None else _check_budget_dict(alpha, "alpha", PERTURBABLE_INPUTS)
        extra = set(alpha) - set(self.budget)
        if extra:
            raise ValueError(
                f"`alpha` names {sorted(extra)}, which `budget` does not; give steps for budgeted inputs."
            )
        self.alpha = {name: alpha.get(name, eps * self.alpha_fraction) for name, eps in self.budget.items()}
        self.steps = check_int(steps, "steps", 0)
        self.random_start = check_flag(random_start, "random_start")
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        self.targeted = check_flag(targeted, "targeted")
        self.objective = make_objective(loss, self.targeted)
        self.objective.check_model(model, self.targeted)
        self.loss = loss
        self.processor = processor
        self._check_processor()
        self.seed = check_int(seed, "seed", 0)
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------------------------------------ set-up
    def _check_processor(self) -> None:
        processor = self.processor
        if processor is None:
            return
        if "pixel_values" in self.budget and not hasattr(processor, "image_processor"):
            raise ValueError("`processor` must be an RgbdProcessor (with an `image_processor`) or None.")
        if "depth_values" in self.budget:
            depth_processor = getattr(processor, "depth_image_processor", None)
            if depth_processor is None:
                raise ValueError("`processor` must be an RgbdProcessor (with a `depth_image_processor`) or None.")
            if depth_processor.representation not in INVERTIBLE_REPRESENTATIONS:
                raise ValueError(
                    f"`budget` has a depth budget in metres, but the processor's depth representation "
                    f"{depth_processor.representation!r} cannot be converted back to metres; use one of "
                    f"{INVERTIBLE_REPRESENTATIONS} or drop 'depth_values' from `budget`."
                )

    def manual_seed(self, seed: int | None = None) -> RgbdAttack:
        """Restart the attack's random generator (from `seed`, default the constructor's)."""
        if seed is not None:
            self.seed = check_int(seed, "seed", 0)
        self._generator = None
        return self

    def generator(self, device: torch.device) -> torch.Generator:
        """The attack's own generator on `device` (created and seeded on first use or after a device change)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budget={self.budget}, steps={self.steps}, loss={self.loss!r}, targeted={self.targeted})"

    # ------------------------------------------------------------------------------------------------ call
    def __call__(self, inputs: Mapping[str, Any], labels: torch.Tensor | None = None) -> Any:
        """Adversarial version of `inputs` (same type and keys). See [`RgbdAttack.perturb`]."""
        return self.perturb(inputs, labels).inputs

    def perturb(self, inputs: Mapping[str, Any], labels: torch.Tensor | None = None) -> AttackResult:
        """Run the attack.

        Args:
            inputs: a batch as the processor returns it: `pixel_values` (B, 3, H, W), `depth_values`
                (B, C_d, H, W), `depth_mask` (B, 1, H, W) bool, optionally `depth_token_ids`, `intrinsics`
                (B, 3, 3; needed for the disparity representation) and `labels`.
            labels: (B,) class indices (targets when `targeted`); default `inputs["labels"]`. Retrieval objectives
                default to the diagonal.

        Returns:
            [`AttackResult`] with the adversarial batch (`inputs`), the final iterate (`final_inputs`) and the
            per-sample success flags (B,).
        """
        if not isinstance(inputs, Mapping):
            raise ValueError(f"`inputs` must be a BatchFeature or a dict of tensors, got {type(inputs).__name__}.")
        missing = [name for name in self.budget if inputs.get(name) is None]
        if missing:
            raise ValueError(f"`budget` names {missing}, but the batch has no such input (it has {sorted(inputs)}).")
        if labels is None:
            labels = inputs.get("labels")
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                run = AttackRun(self, inputs, labels)
                final = None
                for _ in range(self.n_restarts):
                    final = self._attack_once(run)
                chosen = run.select(final)
                with torch.no_grad():
                    deltas = {name: (chosen[name] - m.original).flatten(1) for name, m in run.modalities.items()}
                return AttackResult(
                    inputs=run.build(chosen),
                    final_inputs=run.build(final),
                    success=run.success.clone(),
                    linf={name: delta.abs().amax(dim=1) for name, delta in deltas.items()},
                    l2={name: delta.norm(dim=1) for name, delta in deltas.items()},
                )
        finally:
            for module, training in modes:
                module.training = training

    def _attack_once(self, run: AttackRun) -> dict[str, torch.Tensor]:
        """One run of the update rule; returns the final iterate (physical values per perturbed input)."""
        raise NotImplementedError


class AttackRun:
    """The state of one `perturb` call: physical originals, model inputs that stay fixed, labels, objective, and
    the tracking of successes and best iterates. Attack update rules call its helpers."""

    def __init__(self, attack: RgbdAttack, inputs: Mapping[str, Any], labels: Any) -> None:
        self.attack = attack
        self.inputs = inputs
        self.device = _model_device(attack.model)
        self.objective = attack.objective
        self.targeted = attack.targeted
        batch = {key: self._to_device(value) for key, value in inputs.items()}
        self.modalities = {name: self._modality(name, batch) for name in attack.budget}
        reference = next(iter(self.modalities.values())).original
        self.batch_size = reference.shape[0]
        self.labels = self.objective.prepare_labels(labels, self.batch_size, self.device)
        self.coupled = self.objective.couples_samples(set(self.modalities))
        self.batch = batch

        accepted = _forward_parameters(attack.model)
        self.forward_keys = set(model_inputs(attack.model, batch))
        self.tokens = None
        if "depth_token_ids" in batch and "depth_values" in self.modalities:
            depth_processor = getattr(attack.processor, "depth_image_processor", None)
            if depth_processor is None or depth_processor.depth_vocab_size is None:
                raise ValueError(
                    "the batch has `depth_token_ids` and depth is attacked: pass the `processor` (with its depth "
                    "vocabulary) so that the tokens are recomputed from the perturbed depth."
                )
            self.tokens = depth_processor
        # Tokens only need recomputing at every step when the model reads them.
        self.tokens_per_step = self.tokens is not None and (accepted is None or "depth_token_ids" in accepted)
        self.static = {
            key: value for key, value in batch.items() if key in self.forward_keys and key not in self.modalities
        }
        if self.tokens is not None:
            self.static.pop("depth_token_ids", None)
        self.model_kwargs = self.objective.model_kwargs()

        # Tracking: successes (any restart) and, for APGD-style fallbacks, the best-loss iterate.
        self.success = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        self.x_success = {name: m.original for name, m in self.modalities.items()}
        self.best_value = torch.full((self.batch_size,), -math.inf, device=self.device)
        self.x_best = dict(self.x_success) if attack.keep_best_loss else None

    # ------------------------------------------------------------------------------------------------ set-up
    def _to_device(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        value = value.to(self.device)
        return value.clone() if value.is_inference() else value

    def _modality(self, name: str, batch: dict[str, Any]) -> _Modality:
        values = check_image_tensor(batch[name], name).detach()
        processor = self.attack.processor
        eps, alpha = self.attack.budget[name], self.attack.alpha[name]
        if name == "pixel_values":
            image_processor = None if processor is None else processor.image_processor
            if image_processor is None or not getattr(image_processor, "do_normalize", True):
                return _Modality(name, eps, alpha, values, 0.0, 1.0, None, lambda x: x)
            mean = torch.tensor(image_processor.image_mean, dtype=values.dtype, device=self.device).view(1, -1, 1, 1)
            std = torch.tensor(image_processor.image_std, dtype=values.dtype, device=self.device).view(1, -1, 1, 1)
            if mean.shape[1] != values.shape[1]:
                raise ValueError(
                    f"`pixel_values` has {values.shape[1]} channels but the processor normalises {mean.shape[1]}."
                )
            return _Modality(name, eps, alpha, values * std + mean, 0.0, 1.0, None, lambda x: (x - mean) / std)

        mask = batch.get("depth_mask")
        if mask is not None:
            check_depth_mask(mask, values)
        if processor is None:
            mask = (torch.isfinite(values) & (values > 0)) if mask is None else mask
            return _Modality(name, eps, alpha, values, 0.0, math.inf, mask, lambda x: x)
        depth_processor = processor.depth_image_processor
        mask = (values != 0) if mask is None else mask
        intrinsics = batch.get("intrinsics")
        metres = depth_processor.to_metres(values, mask, intrinsics)

        def to_model(x: torch.Tensor) -> torch.Tensor:
            return depth_processor.from_metres(x, mask, intrinsics)

        return _Modality(
            name, eps, alpha, metres, depth_processor.min_depth, depth_processor.max_depth, mask, to_model
        )

    # ------------------------------------------------------------------------------------------------ helpers
    def clean(self) -> dict[str, torch.Tensor]:
        """The original inputs in physical units."""
        return {name: m.original for name, m in self.modalities.items()}

    def _mask(self, modality: _Modality, x: torch.Tensor) -> torch.Tensor:
        return x if modality.mask is None else torch.where(modality.mask, x, modality.original)

    def clip(self, candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clip to the valid physical range and restore holes (no budget projection)."""
        out = {}
        for name, m in self.modalities.items():
            out[name] = self._mask(m, torch.clamp(candidate[name], min=m.low, max=m.high))
        return out

    def project_linf(self, candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clip the perturbation to each budget (L-inf), then the values to the valid range; holes unchanged."""
        out = {}
        for name, m in self.modalities.items():
            delta = torch.clamp(candidate[name] - m.original, min=-m.eps, max=m.eps)
            out[name] = self._mask(m, torch.clamp(m.original + delta, min=m.low, max=m.high))
        return out

    def project_l2(self, candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scale each sample's perturbation to L2 norm <= budget (per input), then clip to the valid range."""
        out = {}
        for name, m in self.modalities.items():
            delta = candidate[name] - m.original
            if m.mask is not None:
                delta = torch.where(m.mask, delta, torch.zeros((), dtype=delta.dtype, device=delta.device))
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            factor = torch.clamp(m.eps / (norm + 1e-12), max=1.0)
            out[name] = self._mask(m, torch.clamp(m.original + delta * factor, min=m.low, max=m.high))
        return out

    def random_linf(self) -> dict[str, torch.Tensor]:
        """A uniformly random point of the L-inf budget box (then clipped to the valid range)."""
        generator = self.attack.generator(self.device)
        candidate = {}
        for name, m in self.modalities.items():
            noise = torch.rand(m.original.shape, generator=generator, device=self.device, dtype=m.original.dtype)
            candidate[name] = m.original + (2 * noise - 1) * m.eps
        return self.project_linf(candidate)

    def random_l2(self) -> dict[str, torch.Tensor]:
        """A random point of the L2 budget ball: Gaussian direction, radius uniform in [0, budget]."""
        generator = self.attack.generator(self.device)
        candidate = {}
        for name, m in self.modalities.items():
            direction = torch.randn(m.original.shape, generator=generator, device=self.device, dtype=m.original.dtype)
            if m.mask is not None:
                direction = direction * m.mask
            radius = torch.rand(m.original.shape[0], generator=generator, device=self.device, dtype=m.original.dtype)
            norm = direction.flatten(1).norm(dim=1) + 1e-12
            candidate[name] = m.original + direction * (radius * m.eps / norm).view(-1, 1, 1, 1)
        return self.project_l2(candidate)

    def random_sign(self) -> dict[str, torch.Tensor]:
        """Per input, the sign of standard Gaussian noise (R+FGSM's random step direction)."""
        generator = self.attack.generator(self.device)
        return {
            name: torch.randn(m.original.shape, generator=generator, device=self.device, dtype=m.original.dtype).sign()
            for name, m in self.modalities.items()
        }

    # ------------------------------------------------------------------------------------------------ evaluation
    def _model_batch(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        batch = dict(self.static)
        for name, m in self.modalities.items():
            batch[name] = m.to_model(x[name])
        if self.tokens_per_step:
            batch["depth_token_ids"] = self._tokens(x["depth_values"].detach())
        return batch

    def _tokens(self, depth_m: torch.Tensor) -> torch.Tensor:
        processor = self.tokens
        mask = self.modalities["depth_values"].mask
        return depth_token_ids(
            depth_m, mask, processor.depth_vocab_size, processor.depth_patch_size, processor.min_depth,
            processor.max_depth,
        )  # fmt: skip

    def evaluate(self, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward and one input-gradient backward at `x` (physical values).

        Records successes and best iterates from this forward's outputs.

        Returns:
            the per-sample objective (B,) (the loss, negated for targeted attacks: always ascended) and its gradient
            with respect to each perturbed input's physical values, (B, C, H, W) each.
        """
        leaves = {name: value.detach().requires_grad_(True) for name, value in x.items()}
        outputs = self.attack.model(**self._model_batch(leaves), **self.model_kwargs)
        loss = self.objective.loss(outputs, self.labels)
        value = -loss if self.targeted else loss
        grads = torch.autograd.grad(value.sum(), list(leaves.values()), allow_unused=True)
        grads = {
            name: torch.zeros_like(leaf) if grad is None else grad
            for (name, leaf), grad in zip(leaves.items(), grads, strict=True)
        }
        value = value.detach()
        with torch.no_grad():
            self._track(x, value, self.objective.success(outputs, self.labels, self.targeted))
        return value, grads

    def _track(self, x: dict[str, torch.Tensor], value: torch.Tensor, success: torch.Tensor) -> None:
        if self.coupled:  # whole-batch iterates: keep the one with most successes, never mix samples
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

    def select(self, final: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per sample: the recorded successful iterate, else the fallback (best-loss iterate or `final`)."""
        fallback = self.x_best if self.x_best is not None else final
        chosen = self.success.any().expand(self.batch_size) if self.coupled else self.success
        return {name: torch.where(chosen.view(-1, 1, 1, 1), self.x_success[name], fallback[name]) for name in final}

    def build(self, x: dict[str, torch.Tensor]) -> Any:
        """The output batch: the original entries, with the perturbed inputs (model space) and fresh depth tokens."""
        data = {}
        with torch.no_grad():
            for key, value in self.batch.items():
                if key in self.modalities:
                    data[key] = self.modalities[key].to_model(x[key]).detach()
                elif key == "depth_token_ids" and self.tokens is not None:
                    data[key] = self._tokens(x["depth_values"])
                else:
                    data[key] = value
        if isinstance(self.inputs, BatchFeature):
            return BatchFeature(data)
        if type(self.inputs) is dict:
            return data
        try:
            return type(self.inputs)(data)
        except TypeError:
            return data


__all__ = ["DEFAULT_BUDGET", "PERTURBABLE_INPUTS", "AttackResult", "AttackRun", "RgbdAttack", "model_inputs"]
