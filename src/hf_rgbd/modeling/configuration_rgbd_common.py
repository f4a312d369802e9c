"""Fields every hf_rgbd model family shares (`modalities`, `modality_dropout`, `classifier_dropout`) and their checks.

Part of the flat `hf_rgbd.modeling` folder: it imports nothing from hf_rgbd, so saved model folders carry it.
"""

from __future__ import annotations

from typing import Any

RGBD_MODALITIES: tuple[str, ...] = ("rgbd", "rgb", "depth")


def is_number(value: Any) -> bool:
    """A real int or float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """ValueError naming the field `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def normalize_modality_dropout(value: Any) -> Any:
    """A float `p` becomes `[p, p]`; a pair becomes a list of floats. Anything else is returned for the check."""
    if is_number(value):
        return [float(value), float(value)]
    if isinstance(value, (list, tuple)):
        return [float(p) if is_number(p) else p for p in value]
    return value


def check_shared_fields(modalities: Any, modality_dropout: Any, classifier_dropout: Any) -> None:
    """Check the fields shared by all families; ValueError naming the first invalid one.

    `modality_dropout` must be (already normalised to) a pair `(p_rgb, p_depth)` of probabilities with
    `p_rgb + p_depth <= 1` (one draw per sample drops at most one modality), and all zeros unless
    `modalities == "rgbd"`; `classifier_dropout` must be in [0, 1).
    """
    check_choice("modalities", modalities, RGBD_MODALITIES)
    if (
        not isinstance(modality_dropout, (list, tuple))
        or len(modality_dropout) != 2
        or not all(is_number(p) and 0.0 <= p <= 1.0 for p in modality_dropout)
    ):
        raise ValueError(
            "`modality_dropout` must be a float or a pair (p_rgb, p_depth) of probabilities in [0, 1], got "
            f"{modality_dropout!r}."
        )
    p_rgb, p_depth = modality_dropout
    if p_rgb + p_depth > 1.0 + 1e-9:
        raise ValueError(
            f"`modality_dropout` (p_rgb={p_rgb}, p_depth={p_depth}) must sum to at most 1: a sample drops at most one "
            "modality."
        )
    if modalities != "rgbd" and (p_rgb > 0 or p_depth > 0):
        raise ValueError(f"`modality_dropout` needs both modalities, but `modalities={modalities!r}`; use (0.0, 0.0).")
    if not is_number(classifier_dropout) or not 0.0 <= classifier_dropout < 1.0:
        raise ValueError(f"`classifier_dropout` must be a float in [0, 1), got {classifier_dropout!r}.")


__all__ = ["RGBD_MODALITIES", "check_choice", "check_shared_fields", "is_number", "normalize_modality_dropout"]
