"""Configuration of the CLIP-style RGB-D dual encoder (`RgbdClipConfig`).

Part of the flat `hf_rgbd.modeling` folder: single-dot imports only, so a saved model folder carries it.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_rgbd_common import (
    RGBD_MODALITIES,
    ModalityDropout,
    RgbdModalities,
    RgbdSharedConfigMixin,
    RgbdTwoTowerConfigMixin,
    check_positive_int,
    normalize_modality_dropout,
)
from .configuration_rgbd_vit import RgbdVitConfig


@strict
class RgbdClipConfig(RgbdSharedConfigMixin, RgbdTwoTowerConfigMixin, PreTrainedConfig):
    r"""Configuration of [`RgbdClipModel`] and [`RgbdClipForImageClassification`].

    An RGB ViT tower (`rgb_config`) and a depth ViT tower (`depth_config`), each followed by a linear projection to
    `projection_dim`, trained with a symmetric contrastive loss (ITC) and a learnable temperature. The defaults are
    ViT-B/16 sized towers, as CLIP's; `RgbdClipConfig.tiny()` and `RgbdClipConfig.small()` are small named configs.

    Args:
        rgb_config (`dict` or [`RgbdVitConfig`], *optional*): the RGB tower (`modality="rgb"`, 3 channels).
        depth_config (`dict` or [`RgbdVitConfig`], *optional*): the depth tower (`modality="depth"`; 1 channel by
            default, `num_channels=3` for HHA). A dict without `modality` gets `"depth"`.
        projection_dim (`int`, defaults to 512): size of the shared embedding space.
        logit_scale_init_value (`float`, defaults to 2.6592): initial `logit_scale` (log of 1/0.07), as CLIP. In
            the forward pass the scale is clamped to [0, log(100)].
        modalities (`Literal["rgbd", "rgb", "depth"]`, defaults to `"rgbd"`): the field every hf_rgbd family
            shares. With `"rgb"` / `"depth"` only that tower is built (ablations: the other modality's inputs are
            ignored; contrastive logits and loss need `"rgbd"`).
        modality_dropout (`float` or `(p_rgb, p_depth)`, defaults to `(0.0, 0.0)`): classification only.
            Per-sample probabilities of dropping the RGB / the depth input in training (a float means the same
            probability for both). The events are exclusive (one uniform draw per sample, from the torch RNG), so a
            sample never loses both; hence `p_rgb + p_depth <= 1`. A dropped modality is replaced by a learned
            "missing modality" embedding, exactly as a missing input at inference (`depth_values=None`).
        classifier_dropout (`float`, defaults to 0.0): dropout on the fused embedding before the classifier.
        auxiliary_loss_weight (`float`, defaults to 0.0): classification with `modalities="rgbd"` only. When
            positive, [`RgbdClipForImageClassification`] gets one auxiliary linear head per modality, each reading
            that modality's own embedding, and with `labels` the loss is the fused loss plus this weight times the sum
            of the two heads' losses (per-modality supervision as in Gradient-Blending, Wang et al. 2020: each tower
            has to learn its own cues instead of leaning on the other modality).
        initializer_range (`float`, defaults to 0.02): std for the heads' initialisation.
        num_labels (`int`): classes of [`RgbdClipForImageClassification`].

    Wrong types or choices raise `StrictDataclassFieldValidationError`, inconsistent values
    `StrictDataclassClassValidationError`, both naming the field (a tower's own errors come from [`RgbdVitConfig`]).
    """

    model_type = "rgbd_clip"
    # What `Trainer` leaves out of the predictions it gathers: the classifier's outputs other than `logits`.
    keys_to_ignore_at_inference = [
        "rgb_logits",
        "depth_logits",
        "fused_embeds",
        "rgb_model_output",
        "depth_model_output",
    ]
    sub_configs_defaults = {
        "rgb_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "rgb"}),
        "depth_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "depth"}),
    }

    rgb_config: dict | RgbdVitConfig | None = None
    depth_config: dict | RgbdVitConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float | int = 2.6592
    modalities: RgbdModalities = "rgbd"
    modality_dropout: ModalityDropout = (0.0, 0.0)
    classifier_dropout: float | int = 0.0
    auxiliary_loss_weight: float | int = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.rgb_config, dict) and "modality" not in self.rgb_config:
            self.rgb_config = {**self.rgb_config, "modality": "rgb"}
        if isinstance(self.depth_config, dict) and "modality" not in self.depth_config:
            self.depth_config = {**self.depth_config, "modality": "depth"}
        self.modality_dropout = normalize_modality_dropout(self.modality_dropout)
        super().__post_init__(**kwargs)

    def validate_tower_modalities(self) -> None:
        for name, modality in (("rgb_config", "rgb"), ("depth_config", "depth")):
            tower = getattr(self, name)
            if tower.modality != modality:
                raise ValueError(f"`{name}.modality` must be {modality!r}, got {tower.modality!r}.")

    def validate_projection_dim(self) -> None:
        check_positive_int("projection_dim", self.projection_dim)

    @classmethod
    def tiny(cls, **kwargs: Any) -> "RgbdClipConfig":
        """Tiny towers for tests (hidden 32, 2 layers, 2 heads, image 32, patch 8), projection 16.

        `rgb_config` / `depth_config` dicts in `kwargs` override the tiny tower fields.
        """
        return cls._named(RgbdVitConfig.tiny, dict(projection_dim=16), kwargs)

    @classmethod
    def small(cls, **kwargs: Any) -> "RgbdClipConfig":
        """Small towers for 64x64 inputs on a CPU (`RgbdVitConfig.small()`: hidden 128, 4 layers, 4 heads, patch
        16 from a convolutional stem), projection 128: the config of the synthetic acceptance run
        (`scripts/train_rgbd_clip.py`)."""
        return cls._named(RgbdVitConfig.small, dict(projection_dim=128), kwargs)

    @classmethod
    def _named(cls, tower: Any, defaults: dict[str, Any], kwargs: dict[str, Any]) -> "RgbdClipConfig":
        rgb_overrides = dict(kwargs.pop("rgb_config", None) or {})
        depth_overrides = dict(kwargs.pop("depth_config", None) or {})
        rgb_overrides.pop("modality", None)
        depth_overrides.pop("modality", None)
        return cls(
            rgb_config=tower("rgb", **rgb_overrides).to_dict(),
            depth_config=tower("depth", **depth_overrides).to_dict(),
            **{**defaults, **kwargs},
        )


__all__ = ["RGBD_MODALITIES", "RgbdClipConfig"]
