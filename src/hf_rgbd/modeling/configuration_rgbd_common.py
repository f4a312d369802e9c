"""Fields every hf_rgbd model family shares (`modalities`, `modality_dropout`, `classifier_dropout`) and their
strict-config validators.

Part of the flat `hf_rgbd.modeling` folder: it imports nothing from hf_rgbd, so saved model folders carry it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

RgbdModalities = Literal["rgbd", "rgb", "depth"]
RGBD_MODALITIES: tuple[str, ...] = ("rgbd", "rgb", "depth")
# type of the `modality_dropout` field: one probability for both modalities, or a pair (p_rgb, p_depth)
ModalityDropout = list[float | int] | tuple[float | int, ...] | float | int


def is_number(value: Any) -> bool:
    """A real int or float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalize_modality_dropout(value: Any) -> Any:
    """A float `p` becomes `[p, p]`; a pair becomes a list of floats. Anything else is returned for the check."""
    if is_number(value):
        return [float(value), float(value)]
    if isinstance(value, (list, tuple)):
        return [float(p) if is_number(p) else p for p in value]
    return value


def check_positive_int(name: str, value: Any) -> None:
    """ValueError naming the field `name` unless `value` is an int >= 1 (bools excluded)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_probability(name: str, value: Any, closed: bool = False) -> None:
    """ValueError naming the field `name` unless `value` is a number in [0, 1) ([0, 1] with `closed`)."""
    if not is_number(value) or not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


class RgbdSharedConfigMixin:
    """Validators of the fields shared by all families, collected by `@strict` from every config that lists this
    mixin among its bases (before `PreTrainedConfig`). The config declares the fields itself:
    `modalities: RgbdModalities`, `modality_dropout` (normalised by `normalize_modality_dropout` in
    `__post_init__`) and `classifier_dropout`.
    """

    def __post_init__(self, **kwargs: Any) -> None:
        # Installed hf_rgbd serves the RGB-D pipeline tasks from its own registry. `custom_pipelines` (written by
        # `save_pretrained` for loading without hf_rgbd) would make `pipeline(task, model=folder)` demand
        # `trust_remote_code=True`, so the installed classes drop it; a copy loaded as remote code keeps it.
        if type(self).__module__.startswith("hf_rgbd."):
            kwargs.pop("custom_pipelines", None)
        super().__post_init__(**kwargs)

    def validate_modality_dropout(self) -> None:
        """`modality_dropout` is a pair `(p_rgb, p_depth)` of probabilities with `p_rgb + p_depth <= 1` (one draw per
        sample drops at most one modality), all zeros unless `modalities == "rgbd"`."""
        modality_dropout = self.modality_dropout
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
                f"`modality_dropout` (p_rgb={p_rgb}, p_depth={p_depth}) must sum to at most 1: a sample drops at most "
                "one modality."
            )
        if self.modalities != "rgbd" and (p_rgb > 0 or p_depth > 0):
            raise ValueError(
                f"`modality_dropout` needs both modalities, but `modalities={self.modalities!r}`; use (0.0, 0.0)."
            )

    def validate_classifier_dropout(self) -> None:
        check_probability("classifier_dropout", self.classifier_dropout)


class RgbdTwoTowerConfigMixin:
    """`active_modalities` and the `auxiliary_loss_weight` validator of the families with an RGB and a depth tower
    (dual encoder, fusion encoder); listed before `PreTrainedConfig` in the bases, like `RgbdSharedConfigMixin`."""

    def validate_auxiliary_loss_weight(self) -> None:
        if not is_number(self.auxiliary_loss_weight) or self.auxiliary_loss_weight < 0:
            raise ValueError(f"`auxiliary_loss_weight` must be a number >= 0, got {self.auxiliary_loss_weight!r}.")
        if self.auxiliary_loss_weight > 0 and self.modalities != "rgbd":
            raise ValueError(
                f"`auxiliary_loss_weight` needs both modalities, but `modalities={self.modalities!r}`; use 0.0."
            )

    @property
    def active_modalities(self) -> tuple[str, ...]:
        """The towers this config builds: `("rgb", "depth")`, `("rgb",)` or `("depth",)`."""
        return {"rgbd": ("rgb", "depth"), "rgb": ("rgb",), "depth": ("depth",)}[self.modalities]


class RgbdDepthWordsConfigMixin:
    """Validators and `check_processor` of the pretraining families that predict depth words (fusion encoder,
    mixture of modality experts); listed before `PreTrainedConfig`. The config declares `projection_dim`,
    `depth_vocab_size`, `min_depth`, `max_depth`, `mdm_mask_ratio` and a `depth_config` tower."""

    def validate_depth_words(self) -> None:
        check_positive_int("projection_dim", self.projection_dim)
        if not isinstance(self.depth_vocab_size, int) or isinstance(self.depth_vocab_size, bool) or self.depth_vocab_size < 2:
            raise ValueError(f"`depth_vocab_size` must be an int >= 2, got {self.depth_vocab_size!r}.")
        if not (is_number(self.min_depth) and is_number(self.max_depth) and 0 < self.min_depth < self.max_depth < math.inf):
            raise ValueError(
                f"`min_depth` and `max_depth` must satisfy 0 < min_depth < max_depth < inf, got {self.min_depth!r} and "
                f"{self.max_depth!r}."
            )
        check_probability("mdm_mask_ratio", self.mdm_mask_ratio)

    def check_processor(self, processor: Any) -> None:
        """ValueError naming the setting when a processor's depth words do not fit this model: its
        `depth_vocab_size`, `depth_patch_size` (the depth tower's `patch_size`) and `min_depth` / `max_depth`.
        `processor`: an `RgbdProcessor` or its `depth_image_processor` (an `RgbdDepthProcessor`)."""
        depth_processor = getattr(processor, "depth_image_processor", processor)
        patch = self.depth_config.patch_size_pair
        if patch[0] != patch[1]:
            raise ValueError("depth words need a square `depth_config.patch_size`.")
        expected = {
            "depth_vocab_size": self.depth_vocab_size,
            "depth_patch_size": patch[0],
            "min_depth": float(self.min_depth),
            "max_depth": float(self.max_depth),
        }
        for name, value in expected.items():
            got = getattr(depth_processor, name, None)
            if got is None or (float(got) != float(value)):
                raise ValueError(
                    f"the processor's `{name}` is {got!r} but the model's depth words need {value!r} "
                    f"(config.{'depth_config.patch_size' if name == 'depth_patch_size' else name})."
                )


__all__ = [
    "RGBD_MODALITIES",
    "RgbdDepthWordsConfigMixin",
    "RgbdTwoTowerConfigMixin",
    "ModalityDropout",
    "RgbdModalities",
    "RgbdSharedConfigMixin",
    "check_positive_int",
    "check_probability",
    "is_number",
    "normalize_modality_dropout",
]
