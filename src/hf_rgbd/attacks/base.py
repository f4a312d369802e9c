"""The attack loop shared by every hf-rgbd attack: [`RgbdAttack`] (budgets, step count, objective and restarts,
validated once) and [`AttackRun`] (one `perturb` call: the batch on the model's device, one forward and one
input-gradient backward per step, the output batch).

The other jobs live beside it: unit conversion and projection in `perturbation_space.py` ([`PerturbationSpace`]),
result bookkeeping in `tracking.py` ([`IterateTracker`], [`AttackResult`]). An attack subclass only writes its
update rule (`_attack_once`) with `run.evaluate` and the helpers of `run.space`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypedDict

import torch

from ..processors.depth_processing_rgbd import depth_token_ids
from ..processors.validation_rgbd import check_finite_values, check_flag, check_int, check_real, check_seed
from .objectives import AttackObjective, LossFunction, make_objective
from .perturbation_space import Iterate, PerturbationSpace, check_processor
from .subsets import rebuild_batch
from .tracking import AttackResult, IterateTracker, perturbation_norms


class AttackSettings(TypedDict, total=False):
    """Keyword arguments every attack takes in the same meaning (see [`RgbdAttack`]): `loss` (defaults to
    `"ce"`), `targeted` (False), `processor` (None) and `seed` (0). The attack classes name only the arguments that
    differ between them and take these as `**settings: Unpack[AttackSettings]`."""

    loss: str | LossFunction | AttackObjective
    targeted: bool
    processor: Any
    seed: int


PERTURBABLE_INPUTS = ("pixel_values", "depth_values")
# Batch entries that are never forwarded to a model that does not name them explicitly.
NON_MODEL_INPUTS = ("labels", "intrinsics")
DEFAULT_BUDGET = {"pixel_values": 8 / 255, "depth_values": 0.05}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without either."""
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


def check_attack_batch(inputs: Any, budget: Mapping[str, float]) -> None:
    """ValueError unless `inputs` is a batch (a Mapping) holding every input `budget` names."""
    if not isinstance(inputs, Mapping):
        raise ValueError(f"`inputs` must be a BatchFeature or a dict of tensors, got {type(inputs).__name__}.")
    missing = [name for name in budget if inputs.get(name) is None]
    if missing:
        raise ValueError(f"`budget` names {missing}, but the batch has no such input (it has {sorted(inputs)}).")


def clean_logits(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """The model's logits on a batch, in eval mode without gradients (every module's mode restored after)."""
    device = model_device(model)
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return model(**model_inputs(model, batch)).logits
    finally:
        for module, training in modes:
            module.training = training


def _check_budget_dict(values: Any, name: str, allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"`{name}` must be a non-empty dict input name -> float, e.g. {DEFAULT_BUDGET}; got {values!r}."
        )
    checked = {}
    for key, value in values.items():
        if key not in allowed:
            raise ValueError(f"`{name}` names {key!r}; an attack perturbs only {allowed}.")
        checked[key] = check_real(value, f"{name}[{key!r}]", minimum=0.0)
    return checked


def _check_linf_rgb(values: Mapping[str, float], name: str) -> None:
    """ValueError naming `name` when an L-inf RGB budget or step exceeds 1: RGB is in [0, 1] intensity units, so
    `8` almost certainly meant `8 / 255`."""
    value = values.get("pixel_values", 0.0)
    if value > 1:
        raise ValueError(
            f"`{name}['pixel_values']` is {value!r}, but L-inf RGB budgets are in [0, 1] intensity units: write "
            f"{value:g} / 255 = {value / 255:.4g} for {value:g} grey levels."
        )


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

    Inputs: NaN / inf `pixel_values` are a ValueError (checked once per `perturb` call, not per step); NaN / inf
    depth is a hole whatever `depth_mask` says (as in the models) and comes back exactly as given. A sample
    labelled -100 is ignored: it comes back exactly as given (perturbation norms 0), gets no gradient, its
    `success` is False and `AttackResult.ignored` marks it; `evaluate_robustness` leaves it out of every rate.
    Labels are checked against the model's number of classes at the first forward, which also names an output
    field the objective needs and the model does not return.

    Guarantees: works under `torch.no_grad()` and `torch.inference_mode()`; runs the model in eval mode and restores
    every module's train/eval flag afterwards; takes gradients with respect to the inputs only
    (`torch.autograd.grad`, no weight `.grad`, parameters' `requires_grad` untouched); draws random numbers from its
    own `torch.Generator` (seeded with `seed` on the model's device, advancing from call to call; `manual_seed`
    restarts it), never from the global RNG; runs on the model's device (the returned batch is on it). One attack
    step costs exactly one forward and one input-gradient backward: success is read from the logits of the step's
    forward pass, never from extra evaluation passes.

    Args:
        model (`torch.nn.Module`): a model called as `model(**inputs)` (e.g. [`RgbdCnnForImageClassification`],
            [`RgbdClipForImageClassification`], [`RgbdClipModel`] with a [`RetrievalObjective`],
            [`RgbdAlbefForRgbdMatching`] with a [`MatchingObjective`]).
        budget (`dict[str, float]`, defaults to `{"pixel_values": 8/255, "depth_values": 0.05}`): per input, the
            perturbation budget in physical units (L-inf, or L2 for [`PGDL2`]), a finite number >= 0. Inputs not
            named stay unchanged. An L-inf RGB budget above 1 is a ValueError (`8` meant `8 / 255`).
        alpha (`dict[str, float]`, *optional*): step size per input (default: budget / 4; same checks).
        steps (`int`, defaults to 10): iterations, at least the class's `min_steps` (checked in `_check_steps`).
        random_start (`bool`, defaults to True): start from a uniformly random point of the budget ball.
        n_restarts (`int`, defaults to 1): independent runs; a sample keeps any success found.
        loss (`str`, callable or [`AttackObjective`], defaults to `"ce"`): `"ce"`, `"margin"` (CW-Linf), `"dlr"`,
            a callable `(outputs, labels) -> (B,)` per-sample loss, or an objective such as [`RetrievalObjective`] or
            [`MatchingObjective`].
        targeted (`bool`, defaults to False): `labels` are targets and the loss is descended. Read from the attack
            only; the objective receives it with every call.
        processor ([`RgbdProcessor`], *optional*): the processor that made the batch (its normalisation and depth
            representation); None when the inputs are in physical units.
        seed (`int`, defaults to 0): seed of the attack's own random generator, in [0, 2**64).
    """

    default_budget: dict[str, float] = DEFAULT_BUDGET
    alpha_fraction: float = 0.25  # default step: this fraction of the budget
    keep_best_loss: bool = False  # fallback for unsuccessful samples: best-loss iterate (True) or final iterate
    min_steps: int = 0  # fewest iterations the update rule accepts
    norm: str = "linf"  # the budget's norm: "linf" (RGB budgets in [0, 1]) or "l2"

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
        if self.norm == "linf":
            _check_linf_rgb(self.budget, "budget")
            _check_linf_rgb(alpha, "alpha")
        self.alpha = {name: alpha.get(name, eps * self.alpha_fraction) for name, eps in self.budget.items()}
        self.steps = self._check_steps(steps)
        self.random_start = check_flag(random_start, "random_start")
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        # The attack owns `targeted`; the objective is told at every call.
        self.targeted = check_flag(targeted, "targeted")
        self.objective = make_objective(loss)
        self.objective.check_model(model, self.targeted)
        self.loss = loss
        check_processor(processor, self.budget)
        self.processor = processor
        self.seed = check_seed(seed)
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------------------------------------ set-up
    def _check_steps(self, steps: Any) -> int:
        """The one place step counts are validated: an int >= `min_steps`. Subclasses with a rule for a special
        count (BIM's `steps=0`) extend this."""
        return check_int(steps, "steps", self.min_steps)

    def manual_seed(self, seed: int | None = None) -> RgbdAttack:
        """Restart the attack's random generator (from `seed`, default the constructor's)."""
        if seed is not None:
            self.seed = check_seed(seed)
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
                default to the diagonal, matching objectives to every pair matched (1).

        Returns:
            [`AttackResult`] with the adversarial batch (`inputs`), the final iterate (`final_inputs`) and the
            per-sample success flags (B,).
        """
        check_attack_batch(inputs, self.budget)
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
                chosen = run.unperturb_ignored(run.tracker.select(final))
                final = run.unperturb_ignored(final)
                linf, l2 = perturbation_norms(chosen, run.space.clean())
                return AttackResult(
                    inputs=run.build(chosen),
                    final_inputs=run.build(final),
                    success=run.tracker.success.clone(),
                    linf=linf,
                    l2=l2,
                    ignored=run.ignored.clone(),
                )
        finally:
            for module, training in modes:
                module.training = training

    def _attack_once(self, run: AttackRun) -> Iterate:
        """One run of the update rule; returns the final iterate (physical values per perturbed input)."""
        raise NotImplementedError


class AttackRun:
    """The state of one `perturb` call and its attack step.

    Attributes:
        space ([`PerturbationSpace`]): the perturbed inputs in physical units, projection and random starts.
        tracker ([`IterateTracker`]): successes and the iterates to return, fed by `evaluate`.
        labels: (B,) long labels (targets when the attack is targeted) on `device`.
        device: the model's device, where the batch and every iterate live.
    """

    def __init__(self, attack: RgbdAttack, inputs: Mapping[str, Any], labels: Any) -> None:
        self.attack = attack
        self.inputs = inputs
        self.device = model_device(attack.model)
        batch = {key: self._to_device(value) for key, value in inputs.items()}
        if isinstance(batch.get("pixel_values"), torch.Tensor):
            check_finite_values(batch["pixel_values"], "pixel_values")  # once per perturb call
        self.batch = batch
        self.space = PerturbationSpace(batch, attack.budget, attack.alpha, attack.processor)
        labels = attack.objective.prepare_labels(labels, self.space.batch_size, self.device)
        # Samples labelled -100 are ignored: they stay exactly as given and never count as successes. The loss
        # sees a stand-in class 0 for them and their objective is zeroed, so they get no gradient either.
        self.ignored = labels == -100
        self.labels = torch.where(self.ignored, torch.zeros_like(labels), labels)
        self._given_labels = labels
        self._outputs_checked = False
        coupled = attack.objective.couples_samples(set(self.space.modalities))
        self.tracker = IterateTracker(self.space.clean(), coupled, keep_best=attack.keep_best_loss)

        accepted = _forward_parameters(attack.model)
        forward_keys = set(model_inputs(attack.model, batch))
        self.tokens = None
        if "depth_token_ids" in batch and "depth_values" in self.space.modalities:
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
            key: value for key, value in batch.items() if key in forward_keys and key not in self.space.modalities
        }
        if self.tokens is not None:
            self.static.pop("depth_token_ids", None)
        self.model_kwargs = attack.objective.model_kwargs()

    def _to_device(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        value = value.to(self.device)
        return value.clone() if value.is_inference() else value

    def _tokens(self, depth_m: torch.Tensor) -> torch.Tensor:
        processor = self.tokens
        mask = self.space.modalities["depth_values"].mask
        return depth_token_ids(
            depth_m, mask, processor.depth_vocab_size, processor.depth_patch_size, processor.min_depth,
            processor.max_depth,
        )  # fmt: skip

    def _model_batch(self, x: Iterate) -> dict[str, Any]:
        batch = {**self.static, **self.space.to_model(x)}
        if self.tokens_per_step:
            batch["depth_token_ids"] = self._tokens(x["depth_values"].detach())
        return batch

    def evaluate(self, x: Iterate) -> tuple[torch.Tensor, Iterate]:
        """One forward and one input-gradient backward at `x` (physical values); records successes and best
        iterates from this forward's outputs in the tracker.

        Returns:
            the per-sample objective (B,) (the loss, negated for targeted attacks: always ascended) and its gradient
            with respect to each perturbed input's physical values, (B, C, H, W) each.
        """
        leaves = {name: value.detach().requires_grad_(True) for name, value in x.items()}
        outputs = self.attack.model(**self._model_batch(leaves), **self.model_kwargs)
        value, success = self._objective(outputs)
        grads = torch.autograd.grad(value.sum(), list(leaves.values()), allow_unused=True)
        grads = {
            name: torch.zeros_like(leaf) if grad is None else grad
            for (name, leaf), grad in zip(leaves.items(), grads, strict=True)
        }
        value = value.detach()
        with torch.no_grad():
            self.tracker.record(x, value, success)
        return value, grads

    def _objective(self, outputs: Any, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective (the loss, negated for targeted attacks, 0 for ignored samples) and the success flags of
        one forward's `outputs`, of the samples `rows` (1-D long; default: all); checks the outputs once per call."""
        targeted = self.attack.targeted
        objective = self.attack.objective
        labels, ignored = (self.labels, self.ignored) if rows is None else (self.labels[rows], self.ignored[rows])
        if not self._outputs_checked:  # once per perturb call: the output fields and the labels' class range
            objective.check_outputs(outputs, self._given_labels, self.attack.model)
            self._outputs_checked = True
        loss = objective.loss(outputs, labels, targeted)
        value = torch.where(
            ignored, torch.zeros((), dtype=loss.dtype, device=loss.device), -loss if targeted else loss
        )
        with torch.no_grad():
            return value, objective.success(outputs, labels, targeted) & ~ignored

    def score(self, x: Iterate, index: torch.Tensor | None = None) -> torch.Tensor:
        """One forward at `x` (physical values) under `torch.no_grad()`, no gradient (score-based attacks): the
        per-sample objective (B,) as `evaluate` returns it, with successes and best iterates recorded in the tracker
        the same way.

        `index` (1-D long, optional): forward only these samples (their rows of every batch-sized model input) and
        record only them; the others' objective is -inf. The whole batch is forwarded instead at the first forward
        of a `perturb` call (it checks the outputs against every label) and when samples are not scored on their
        own (an objective other than a [`ClassificationObjective`], e.g. retrieval, or coupled samples).
        """
        from .objectives import ClassificationObjective, TargetedDlrObjective

        size = self.space.batch_size
        objective = self.attack.objective
        # per-sample targets are aligned with the whole batch: such objectives score whole batches
        independent = (
            isinstance(objective, ClassificationObjective)
            and not isinstance(objective, TargetedDlrObjective)
            and not self.tracker.coupled
        )
        rows = index.to(self.device) if index is not None and independent and self._outputs_checked else None
        with torch.no_grad():
            value = torch.full((size,), -torch.inf, device=self.device)
            success = torch.zeros(size, dtype=torch.bool, device=self.device)
            if rows is not None and rows.numel() == 0:
                return value
            batch = self._model_batch(x)
            if rows is not None:
                batch = {
                    key: item[rows] if isinstance(item, torch.Tensor) and item.ndim and item.shape[0] == size else item
                    for key, item in batch.items()
                }
            outputs = self.attack.model(**batch, **self.model_kwargs)
            part, hits = self._objective(outputs, rows)
            if rows is None:
                value, success = part, hits
            else:
                value, success = value.to(part.dtype).index_copy(0, rows, part), success.index_copy(0, rows, hits)
            self.tracker.record(x, value, success)
        return value

    def unperturb_ignored(self, x: Iterate) -> Iterate:
        """`x` with the ignored samples (label -100) back at their clean values."""
        keep = self.ignored.view(-1, 1, 1, 1)
        clean = self.space.clean()
        return {name: torch.where(keep, clean[name], value) for name, value in x.items()}

    def build(self, x: Iterate) -> Any:
        """The output batch: the original entries, with the perturbed inputs (model space) and fresh depth tokens."""
        data = {}
        with torch.no_grad():
            perturbed = self.space.to_model(x)
            for key, value in self.batch.items():
                if key in perturbed:
                    # exactly the given values where nothing may change: ignored samples and depth holes
                    unchanged = self.space.modalities[key].unchanged(self.ignored)
                    data[key] = torch.where(unchanged, value, perturbed[key].detach().to(value.dtype))
                elif key == "depth_token_ids" and self.tokens is not None:
                    data[key] = self._tokens(x["depth_values"])
                else:
                    data[key] = value
        return rebuild_batch(self.inputs, data)


__all__ = [
    "AttackSettings",
    "DEFAULT_BUDGET",
    "check_attack_batch",
    "clean_logits",
    "PERTURBABLE_INPUTS",
    "AttackResult",
    "AttackRun",
    "RgbdAttack",
    "model_device",
    "model_inputs",
]
