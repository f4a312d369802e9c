"""Attack objectives: what an attack maximises (untargeted) or minimises (targeted), per sample.

An objective turns a model's outputs into a per-sample loss and a per-sample success flag, and says which extra
keyword arguments the forward pass needs. Classification attacks use [`ClassificationObjective`] (`"ce"`,
`"margin"`, `"dlr"` or a callable); RGB -> depth retrieval on [`RgbdClipModel`] uses [`RetrievalObjective`] (ITC);
RGB-depth matching through an ITM head ([`RgbdAlbefForRgbdMatching`], `itm_score` (B, 2)) uses
[`MatchingObjective`], a classification objective over {not matched, matched} with "matched" as default label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..processors.validation_rgbd import check_label_range, check_labels

LOSSES = ("ce", "margin", "dlr")

LossFunction = Callable[[Any, torch.Tensor], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy. `logits` (B, K), `labels` (B,) long -> (B,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW-Linf margin `max_{j != y} z_j - z_y` (positive once misclassified). `logits` (B, K), `labels` (B,) -> (B,).

    The true class is masked with -inf (not multiplied by a one-hot), so it can never win the max.
    """
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.amax(dim=1) - true_logit


def check_dlr_classes(num_classes: int, targeted: bool) -> None:
    """ValueError unless DLR is defined for `num_classes` classes: at least 3, or 4 for targeted attacks."""
    needed = 4 if targeted else 3
    if num_classes < needed:
        raise ValueError(
            f'`loss="dlr"` needs at least {needed} classes{" for targeted attacks" if targeted else ""}, the model '
            f"has {num_classes}."
        )


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, 2020), per sample. `logits` (B, K), `labels` (B,) -> (B,).

    Untargeted (`labels` = true classes, ascended): `-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`, with
    z_pi1 >= z_pi2 >= ... the sorted logits; needs K >= 3.

    Targeted (`labels` = targets, descended by the attack): `(max_{j != t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2
    + 1e-12)`; needs K >= 4. The paper's targeted numerator uses the true class in place of the best non-target
    class; an attack here only receives the targets, and the best non-target class is what must be overtaken.
    """
    check_dlr_classes(logits.shape[1], targeted)
    sorted_logits = logits.sort(dim=1, descending=True).values
    margin = margin_loss(logits, labels)  # max_{j != y} z_j - z_y
    if targeted:
        return margin / (sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12)
    return margin / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's targeted DLR, as APGD-T runs it (Croce & Hein, 2020), per sample: `labels` are the TRUE classes
    y and `targets` the target classes t, both (B,); `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`,
    ascended (it grows as z_t overtakes z_y); needs K >= 4. `logits` (B, K) -> (B,)."""
    check_dlr_classes(logits.shape[1], targeted=True)
    sorted_logits = logits.sort(dim=1, descending=True).values
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    scale = sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12
    return -(true_logit - target_logit) / scale


def _output_field(outputs: Any, key: str, model: torch.nn.Module | None = None) -> torch.Tensor:
    """`outputs.<key>` of a ModelOutput / dict, or the first element of a tuple; ValueError naming the field (and
    the model class when given) when the outputs do not hold it."""
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    value = outputs.get(key) if isinstance(outputs, dict) else getattr(outputs, key, None)
    if not isinstance(value, torch.Tensor):
        source = f"{type(model).__name__} " if model is not None else "the model "
        fields = sorted(k for k, v in outputs.items() if v is not None) if isinstance(outputs, dict) else []
        raise ValueError(
            f"the attack's objective needs the output field `{key}`, which {source}does not return (it returns "
            f"{fields}); pick an objective that matches the model's head."
        )
    return value


class AttackObjective:
    """Base class of attack objectives.

    Subclasses define `loss` (per-sample, (B,), what an untargeted attack ascends and a targeted one descends) and
    `success` ((B,) bool). `model_kwargs` adds keyword arguments to the forward call; `couples_samples` tells the
    attack whether one sample's score depends on other samples' perturbations (then the best iterate is chosen for
    the whole batch, never mixed across samples). Whether the attack is targeted is the attack's setting
    ([`RgbdAttack`]`.targeted`); the objective receives it with every call and keeps no copy.
    """

    def check_model(self, model: torch.nn.Module, targeted: bool) -> None:
        """Validate the objective against the model before any forward pass (default: nothing to check)."""

    def check_outputs(self, outputs: Any, labels: torch.Tensor, model: torch.nn.Module) -> None:
        """Validate the model's first outputs and the labels against them (once per `perturb`, before the loss;
        default: nothing to check). ValueError naming the missing output field or `labels`."""

    def model_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the forward call."""
        return {}

    def prepare_labels(self, labels: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        """Validate `labels` (B,): integers, each a class index >= 0 or -100 (an ignored sample, left unperturbed),
        and move them to `device`."""
        if labels is None:
            raise ValueError("`labels` are required: pass them to the attack or as `labels` in the inputs.")
        labels = check_labels(labels, batch_size).to(device=device, dtype=torch.long)
        check_label_range(labels, None)
        return labels.clone() if labels.is_inference() else labels

    def couples_samples(self, perturbed: set[str]) -> bool:
        """Whether a sample's loss depends on other samples' perturbed inputs (default: no)."""
        return False

    def loss(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        raise NotImplementedError

    def success(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        raise NotImplementedError


class ClassificationObjective(AttackObjective):
    """Objective on a classifier's logits.

    Args:
        loss (`str` or callable, defaults to `"ce"`): `"ce"` (cross-entropy), `"margin"` (CW-Linf), `"dlr"` (the
            targeted variant for targeted attacks), or a callable `(outputs, labels) -> (B,)` per-sample loss on the
            model's outputs.
        logits_key (`str`, defaults to `"logits"`): output field holding the (B, K) logits (e.g. `"itm_logits"`
            for a matching head).

    Success: prediction != label (untargeted) or prediction == target (targeted).
    """

    def __init__(self, loss: str | LossFunction = "ce", logits_key: str = "logits") -> None:
        if not callable(loss) and loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES} or a callable (outputs, labels) -> loss, got {loss!r}.")
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "callable")
        self._loss = loss
        self.logits_key = logits_key

    def check_model(self, model: torch.nn.Module, targeted: bool) -> None:
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if self._loss == "dlr" and isinstance(num_labels, int) and num_labels > 0:
            check_dlr_classes(num_labels, targeted)

    def check_outputs(self, outputs: Any, labels: torch.Tensor, model: torch.nn.Module) -> None:
        logits = _output_field(outputs, self.logits_key, model)
        check_label_range(labels, logits.shape[-1])

    def logits(self, outputs: Any) -> torch.Tensor:
        return _output_field(outputs, self.logits_key)

    def loss(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        if callable(self._loss):
            values = self._loss(outputs, labels)
            if not isinstance(values, torch.Tensor) or values.shape != labels.shape:
                raise ValueError(
                    f"a callable `loss` must return one value per sample, shape {tuple(labels.shape)}, got "
                    f"{getattr(values, 'shape', type(values))}."
                )
            return values
        logits = self.logits(outputs)
        if self._loss == "ce":
            return cross_entropy_loss(logits, labels)
        if self._loss == "margin":
            return margin_loss(logits, labels)
        return dlr_loss(logits, labels, targeted=targeted)

    def success(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        prediction = self.logits(outputs).argmax(dim=1)
        return prediction == labels if targeted else prediction != labels


class TargetedDlrObjective(ClassificationObjective):
    """The objective of one APGD-T run (AutoAttack's targeted APGD-DLR): `labels` are the true classes, `targets`
    (B,) the class each sample is pushed towards ([`targeted_dlr_loss`], ascended by an untargeted attack);
    success is misclassification (prediction != true class), as AutoAttack counts it."""

    def __init__(self, targets: torch.Tensor, logits_key: str = "logits") -> None:
        super().__init__("dlr", logits_key)
        self.loss_name = "dlr-targeted"
        self.targets = targets

    def check_model(self, model: torch.nn.Module, targeted: bool) -> None:
        if targeted:
            raise ValueError("TargetedDlrObjective takes the true classes as labels: use it with `targeted=False`.")
        super().check_model(model, targeted=True)

    def loss(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        return targeted_dlr_loss(self.logits(outputs), labels, self.targets.to(labels.device))


class RetrievalObjective(AttackObjective):
    """ITC objective for a dual encoder ([`RgbdClipModel`]): break RGB -> depth retrieval within the batch.

    Query i (an RGB image) should retrieve gallery item `labels[i]` (default: its own depth map, `i`) from the
    batch's depth maps through the similarity row `logits_per_rgb[i]` (B, B). The attack succeeds on query i once
    the matched pair's similarity falls below a mismatched one (the matched item is no longer the row's argmax).

    Args:
        loss (`str`, defaults to `"ce"`): `"ce"` (cross-entropy of the similarity row, the per-sample ITC term) or
            `"margin"` (`max_{j != i} s_ij - s_ii`, positive once retrieval is broken).
        direction (`str`, defaults to `"rgb_to_depth"`): `"rgb_to_depth"` (rows of `logits_per_rgb`) or
            `"depth_to_rgb"` (rows of `logits_per_depth`).

    Perturbing the gallery modality (depth for `"rgb_to_depth"`) couples the samples: every query's row depends on
    every perturbed gallery item, so the attack keeps whole-batch iterates.
    """

    def __init__(self, loss: str = "ce", direction: str = "rgb_to_depth") -> None:
        if loss not in ("ce", "margin"):
            raise ValueError(f'`loss` of a RetrievalObjective must be "ce" or "margin", got {loss!r}.')
        if direction not in ("rgb_to_depth", "depth_to_rgb"):
            raise ValueError(f'`direction` must be "rgb_to_depth" or "depth_to_rgb", got {direction!r}.')
        self.loss_name = loss
        self.direction = direction

    def model_kwargs(self) -> dict[str, Any]:
        return {"return_loss": False}

    def prepare_labels(self, labels: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        if labels is None:
            return torch.arange(batch_size, device=device)
        labels = super().prepare_labels(labels, batch_size, device)
        if bool(((labels < 0) | (labels >= batch_size)).any()):
            raise ValueError(f"`labels` of a retrieval attack are gallery indices in [0, {batch_size}).")
        return labels

    def check_outputs(self, outputs: Any, labels: torch.Tensor, model: torch.nn.Module) -> None:
        self.similarities(outputs, model)

    def couples_samples(self, perturbed: set[str]) -> bool:
        gallery = "depth_values" if self.direction == "rgb_to_depth" else "pixel_values"
        return gallery in perturbed

    def similarities(self, outputs: Any, model: torch.nn.Module | None = None) -> torch.Tensor:
        key = "logits_per_rgb" if self.direction == "rgb_to_depth" else "logits_per_depth"
        return _output_field(outputs, key, model)

    def loss(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        scores = self.similarities(outputs)
        return cross_entropy_loss(scores, labels) if self.loss_name == "ce" else margin_loss(scores, labels)

    def success(self, outputs: Any, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        retrieved = self.similarities(outputs).argmax(dim=1)
        return retrieved == labels if targeted else retrieved != labels


class MatchingObjective(ClassificationObjective):
    """ITM objective for a matching model: push matched RGB-depth pairs to "not matched" through the model's
    matching head, called with `use_itm_head=True` and returning `itm_score` (B, 2) logits, index 1 = matched
    ([`RgbdAlbefForRgbdMatching`]).

    Labels (B,) are 1 (the pair is matched), 0 (not matched) or -100 (ignored); the default is every pair matched.
    An untargeted attack ascends the loss of the label and succeeds once the head's argmax differs from it; a
    targeted attack takes the labels as targets (e.g. 1 to make mismatched pairs pass as matched).

    Args:
        loss (`str`, defaults to `"ce"`): `"ce"` (cross-entropy of `itm_score`, the per-pair ITM loss) or
            `"margin"` (the other class's logit minus the label's, as [`margin_loss`]: positive once the head's
            decision differs from the label).

    The ITM head scores each pair (RGB i, depth i) on its own, so the samples stay independent whatever is
    perturbed.
    """

    def __init__(self, loss: str = "ce") -> None:
        if loss not in ("ce", "margin"):
            raise ValueError(f'`loss` of a MatchingObjective must be "ce" or "margin", got {loss!r}.')
        super().__init__(loss, logits_key="itm_score")

    def check_model(self, model: torch.nn.Module, targeted: bool) -> None:
        """ValueError naming `itm_score` when the model's forward cannot take `use_itm_head`."""
        from .base import _forward_parameters  # base imports this module

        accepted = _forward_parameters(model)
        if accepted is not None and "use_itm_head" not in accepted:
            raise ValueError(
                f"a MatchingObjective needs a matching model whose forward takes `use_itm_head` and returns "
                f"`itm_score` (B, 2); {type(model).__name__}.forward does not take `use_itm_head`."
            )

    def model_kwargs(self) -> dict[str, Any]:
        return {"use_itm_head": True}

    def prepare_labels(self, labels: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B,) long on `device`: the given labels, each 0, 1 or -100, or all 1 (matched) when None."""
        if labels is None:
            return torch.ones(batch_size, dtype=torch.long, device=device)
        labels = super().prepare_labels(labels, batch_size, device)
        check_label_range(labels, 2)
        return labels

    def check_outputs(self, outputs: Any, labels: torch.Tensor, model: torch.nn.Module) -> None:
        """ValueError naming `itm_score` when the outputs lack it or it is not (B, 2). A model that ignores
        `use_itm_head` and returns (B, B) similarities is caught for every batch size but 2."""
        scores = _output_field(outputs, self.logits_key, model)
        expected = (labels.shape[0], 2)
        if tuple(scores.shape) != expected:
            raise ValueError(
                f"`itm_score` must be the matching head's (B, 2) logits, shape {expected}, but "
                f"{type(model).__name__} returned shape {tuple(scores.shape)} (did it ignore `use_itm_head=True`?)."
            )


def make_objective(loss: str | LossFunction | AttackObjective) -> AttackObjective:
    """An [`AttackObjective`] from an attack's `loss` argument."""
    if isinstance(loss, AttackObjective):
        return loss
    return ClassificationObjective(loss)


__all__ = [
    "LOSSES",
    "AttackObjective",
    "ClassificationObjective",
    "MatchingObjective",
    "RetrievalObjective",
    "TargetedDlrObjective",
    "cross_entropy_loss",
    "dlr_loss",
    "make_objective",
    "margin_loss",
    "targeted_dlr_loss",
]
