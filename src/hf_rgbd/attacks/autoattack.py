"""AutoAttack (Croce & Hein, 2020) for multi-input models: a parameter-free ensemble with a budget per modality
and a threat model over the modalities."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..processors.validation_rgbd import check_choice, check_int
from .apgd import APGD, NORMS
from .base import DEFAULT_BUDGET, RgbdAttack, check_attack_batch, clean_logits, model_device
from .subsets import merge_result, select_samples, unattacked_result
from .tracking import AttackResult

VERSIONS = ("standard", "rand")
#: the attacks of each version, in the order they run (AutoAttack's names)
VERSION_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
THREAT_MODELS = ("rgb", "depth", "joint", "either")
#: the inputs each single threat model perturbs
_THREAT_INPUTS = {"rgb": ("pixel_values",), "depth": ("depth_values",), "joint": ("pixel_values", "depth_values")}
#: AutoAttack's number of target classes for APGD-T and FAB-T (at most K - 1 are used)
NUM_TARGET_CLASSES = 9
_DEFAULT_L2_BUDGET = {"pixel_values": 0.5, "depth_values": 0.5}


@dataclass
class AutoAttackResult(AttackResult):
    """[`AttackResult`] of [`AutoAttack`], plus `robust_accuracy_after`: an ordered dict from `"clean"` and each
    attack that ran (`"apgd-ce"`, `"apgd-t"`, `"fab-t"`, `"square"`; prefixed `"rgb/"` / `"depth/"` for the
    `"either"` threat model) to the robust accuracy after it, over the samples not labelled -100."""

    robust_accuracy_after: dict[str, float] = field(default_factory=OrderedDict)


class AutoAttack(RgbdAttack):
    r"""
    AutoAttack for RGB-D models: the standard ensemble of Croce & Hein (2020), each attack run only on the samples
    that are still correctly classified, with a budget per modality in physical units.

    Versions (`version`):
    - `"standard"`: APGD-CE (no restarts, 100 steps), APGD-T (targeted DLR, 9 target classes, 100 steps each),
      FAB-T (9 target classes, 100 steps each), Square (5000 queries, its schedule not rescaled, as AutoAttack
      runs it), for `norm="Linf"` or `"L2"`.
    - `"rand"`, for randomised models: APGD-CE and APGD-DLR with the gradient averaged over 20 passes (EOT).
    With fewer than 10 classes, APGD-T and FAB-T use all K - 1 other classes.

    Threat models (`threat_model`):
    - `"rgb"` / `"depth"`: only that input is perturbed, within its budget;
    - `"joint"`: both at once, each within its own budget, i.e. within 1 in the budget-normalised norm
      `max_m ||delta_m|| / eps_m`. FAB measures its minimal perturbation in normalised units too: for L-inf that
      norm; for L2 `sqrt(sum_m ||delta_m||^2 / eps_m^2)`, whose unit ball lies inside the product of the
      per-input balls, so FAB's adversarial points also respect every budget;
    - `"either"`: per sample, the worst case of the RGB-only and the depth-only ensembles (a sample is robust only
      if both fail); the depth ensemble runs on the samples the RGB ensemble did not fool.

    Args:
        model: a classifier (`model(**inputs).logits`, (B, K)).
        budget (`dict[str, float]`, *optional*): per input, in physical units (L-inf: RGB intensity in [0, 1],
            depth metres; L2: norms). Default `{"pixel_values": 8/255, "depth_values": 0.05}` (L-inf) or 0.5 each
            (L2). The threat model reads the inputs it perturbs from it.
        norm (`str`, defaults to `"Linf"`): `"Linf"` or `"L2"`.
        version (`str`, defaults to `"standard"`): `"standard"` or `"rand"`.
        threat_model (`str`, defaults to `"joint"`): `"rgb"`, `"depth"`, `"joint"` or `"either"`.
        processor ([`RgbdProcessor`], *optional*): the processor that made the batches (physical units).
        seed (`int`, defaults to 0): seed of every component.
        attacks_to_run (`tuple[str, ...]`, *optional*): a subset of the version's attacks, run in the version's
            order (pyautoattack's `attacks_to_run`), e.g. `("apgd-ce", "apgd-t")` for the white-box part only.
        square_queries (`int`, defaults to 5000): Square's query budget (AutoAttack's).

    `perturb(inputs, labels)` returns an [`AutoAttackResult`]; `labels` are the true classes.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        budget: dict[str, float] | None = None,
        norm: str = "Linf",
        version: str = "standard",
        threat_model: str = "joint",
        processor: Any = None,
        seed: int = 0,
        attacks_to_run: tuple[str, ...] | list[str] | None = None,
        square_queries: int = 5000,
    ) -> None:
        self.norm_name = check_choice(norm, "norm", NORMS)
        self.norm = "linf" if norm == "Linf" else "l2"
        self.version = check_choice(version, "version", VERSIONS)
        self.threat_model = check_choice(threat_model, "threat_model", THREAT_MODELS)
        if budget is None:
            budget = dict(DEFAULT_BUDGET if norm == "Linf" else _DEFAULT_L2_BUDGET)
            needed = _THREAT_INPUTS.get(threat_model, _THREAT_INPUTS["joint"])
            budget = {name: value for name, value in budget.items() if name in needed}
        super().__init__(model, budget, steps=100, loss="ce", processor=processor, seed=seed)
        groups = ("rgb", "depth") if self.threat_model == "either" else (self.threat_model,)
        for group in groups:
            missing = [name for name in _THREAT_INPUTS[group] if name not in self.budget]
            if missing:
                raise ValueError(
                    f'`threat_model="{self.threat_model}"` perturbs {list(_THREAT_INPUTS[group])}, but `budget` has no '
                    f"budget for {missing}."
                )
        extra = sorted(set(self.budget) - {name for group in groups for name in _THREAT_INPUTS[group]})
        if extra:
            raise ValueError(f'`budget` names {extra}, which `threat_model="{self.threat_model}"` does not perturb.')
        self.groups = groups
        available = VERSION_ATTACKS[self.version]
        if attacks_to_run is None:
            attacks_to_run = available
        if isinstance(attacks_to_run, str) or not attacks_to_run or any(a not in available for a in attacks_to_run):
            raise ValueError(
                f"`attacks_to_run` must be a non-empty subset of the {self.version} version's attacks {available}, "
                f"got {attacks_to_run!r}."
            )
        self.attacks_to_run = tuple(name for name in available if name in attacks_to_run)
        self.square_queries = check_int(square_queries, "square_queries", 1)

    def __repr__(self) -> str:
        return (
            f"AutoAttack(budget={self.budget}, norm={self.norm_name!r}, version={self.version!r}, "
            f"threat_model={self.threat_model!r})"
        )

    def components(self, group: str, num_classes: int) -> list[tuple[str, RgbdAttack]]:
        """The ensemble for one single threat model (`"rgb"`, `"depth"` or `"joint"`), in AutoAttack's order."""
        budget = {name: self.budget[name] for name in _THREAT_INPUTS[group]}
        shared = {"processor": self.processor, "seed": self.seed}
        from .fab import FAB
        from .square import Square

        eot_iter = 20 if self.version == "rand" else 1
        targets = min(NUM_TARGET_CLASSES, num_classes - 1)
        builders = {
            "apgd-ce": lambda: APGD(self.model, budget, norm=self.norm_name, loss="ce", eot_iter=eot_iter, **shared),
            "apgd-dlr": lambda: APGD(self.model, budget, norm=self.norm_name, loss="dlr", eot_iter=eot_iter, **shared),
            "apgd-t": lambda: APGD(self.model, budget, norm=self.norm_name, num_target_classes=targets, **shared),
            "fab-t": lambda: FAB(self.model, budget, norm=self.norm_name, num_target_classes=targets, **shared),
            "square": lambda: Square(
                self.model, budget, norm=self.norm_name, n_queries=self.square_queries, rescale_schedule=False, **shared
            ),
        }
        return [(name, builders[name]()) for name in self.attacks_to_run]

    def predictions(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        return clean_logits(self.model, inputs).argmax(dim=1)

    def perturb(self, inputs: Mapping[str, Any], labels: torch.Tensor | None = None) -> AutoAttackResult:
        """Run the ensemble on a batch; `labels` (B,) are the true classes (default `inputs["labels"]`)."""
        check_attack_batch(inputs, self.budget)
        if labels is None:
            labels = inputs.get("labels")
        if labels is None:
            raise ValueError("AutoAttack needs the true classes as `labels`.")
        device = model_device(self.model)
        labels = torch.as_tensor(labels).to(device)
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with torch.inference_mode(False):
                return self._run(inputs, labels, device)
        finally:
            for module, training in modes:
                module.training = training

    def _run(self, inputs: Mapping[str, Any], labels: torch.Tensor, device: torch.device) -> AutoAttackResult:
        ignored = labels == -100
        counted = max(int((~ignored).sum()), 1)
        clean_correct = (self.predictions(inputs) == labels) & ~ignored
        robust = clean_correct.clone()
        accuracy = OrderedDict(clean=float(robust.sum()) / counted)
        result = unattacked_result(inputs, list(self.budget), device)
        num_classes = self._num_classes(inputs)
        for group in self.groups:
            prefix = f"{group}/" if self.threat_model == "either" else ""
            for name, attack in self.components(group, num_classes):
                index = robust.nonzero().flatten()
                if index.numel():
                    subset_labels = labels[index]
                    part = attack.perturb(select_samples(inputs, index), subset_labels)
                    # fooled: checked on the returned inputs, as AutoAttack does (one forward on the subset)
                    fooled = self.predictions(part.inputs) != subset_labels
                    part.success = fooled
                    result = merge_result(result, part, index, fooled)
                    robust[index[fooled]] = False
                accuracy[prefix + name] = float(robust.sum()) / counted
        return AutoAttackResult(
            inputs=result.inputs,
            final_inputs=result.inputs,
            success=clean_correct & ~robust,
            linf=result.linf,
            l2=result.l2,
            ignored=ignored,
            robust_accuracy_after=accuracy,
        )

    def _num_classes(self, inputs: Mapping[str, Any]) -> int:
        num_labels = getattr(getattr(self.model, "config", None), "num_labels", None)
        if isinstance(num_labels, int) and num_labels > 0:
            return num_labels
        return clean_logits(self.model, select_samples(inputs, torch.arange(1))).shape[1]


__all__ = ["AutoAttack", "AutoAttackResult", "NUM_TARGET_CLASSES", "THREAT_MODELS", "VERSIONS", "VERSION_ATTACKS"]
