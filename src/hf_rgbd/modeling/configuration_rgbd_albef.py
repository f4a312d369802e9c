"""Configuration of the ALBEF/BLIP-style RGB-D fusion encoder (`RgbdAlbefConfig`).

Part of the flat `hf_rgbd.modeling` folder: single-dot imports only, so a saved model folder carries it.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_rgbd_common import (
    ModalityDropout,
    RgbdDepthWordsConfigMixin,
    RgbdModalities,
    RgbdSharedConfigMixin,
    RgbdTwoTowerConfigMixin,
    check_probability,
    normalize_modality_dropout,
)
from .configuration_rgbd_vit import RgbdVitConfig

# Fusion encoder of the named configs: the tower's width, fewer layers (ALBEF: 6 fusion layers on a 12-layer BERT).
_TINY_FUSION = dict(num_hidden_layers=1)
_SMALL_FUSION = dict(num_hidden_layers=2)


@strict
class RgbdAlbefConfig(RgbdSharedConfigMixin, RgbdTwoTowerConfigMixin, RgbdDepthWordsConfigMixin, PreTrainedConfig):
    r"""Configuration of the fusion encoder family ([`RgbdAlbefModel`], [`RgbdAlbefForPreTraining`],
    [`RgbdAlbefForImageClassification`], [`RgbdAlbefForRgbdMatching`], [`RgbdAlbefForDepthCompletion`]).

    ALBEF (Li et al. 2021) with depth in the place of text: an RGB ViT tower and a depth ViT tower aligned by a
    contrastive loss (ITC), then a fusion encoder whose layers run self-attention over the depth tokens and
    cross-attention from them to the RGB tokens, trained with RGB-depth matching (ITM, hard negatives from the ITC
    similarities) and masked depth modelling (MDM: the depth words of masked patches, as the processor's
    `depth_token_ids` quantise them). Momentum distillation (an EMA teacher) and a feature queue are optional.

    Args:
        rgb_config (`dict` or [`RgbdVitConfig`], *optional*): the RGB tower (`modality="rgb"`).
        depth_config (`dict` or [`RgbdVitConfig`], *optional*): the depth tower (`modality="depth"`).
        fusion_encoder_config (`dict` or [`RgbdVitConfig`], *optional*): the fusion encoder; its
            `num_hidden_layers` layers cross-attend to the RGB tokens. Its `hidden_size` must be the depth tower's
            (it continues the depth stream); RGB tokens of another width are projected to it. Default: the depth
            tower's fields with half its layers (at least one). The constructor also takes it as `fusion_config=`;
            it is not stored under that name because transformers 5 reads `config.fusion_config` in
            `from_pretrained` as its own kernel-fusion settings.
        aligned_fusion (`bool`, defaults to `True`): before the fusion layers, add to every depth token the
            (projected) RGB token at the same place of the patch grid ([CLS] to [CLS]; an RGB grid of another
            shape is resized to the depth grid). RGB and depth are pixel-registered, so this gives each fusion
            position both modalities at once; cross-attention still reaches every RGB token. Without it
            (`False`, plain ALBEF), the fusion encoder must learn the correspondence of places from the two
            towers' position embeddings, and on the synthetic scenes ITM with hard negatives did not learn at all
            (`scripts/ablate_rgbd_albef_fusion.py`). A missing or dropped RGB image adds nothing.
        projection_dim (`int`, defaults to 256): ITC embedding size.
        logit_scale_init_value (`float`, defaults to 2.6592): initial log of the ITC scale (1 / 0.07).
        depth_vocab_size (`int`, defaults to 64): depth words, as the processor's `depth_vocab_size`.
        min_depth, max_depth (`float`, default to 0.1 and 10.0): the metres the depth words' log-spaced bins span,
            as the processor's `min_depth` / `max_depth`. The words' patch size is `depth_config.patch_size`
            (the processor's `depth_patch_size`). [`RgbdAlbefConfig.check_processor`] checks a processor against
            all three.
        mdm_mask_ratio (`float`, defaults to 0.3): fraction of the valid depth patches masked for MDM (0 turns MDM
            off). Masked patches become holes of the one depth pass that ITC, ITM and MDM share (FLIP's single
            masked pass), so the depth tower's hole handling hides them entirely.
        momentum (`float`, defaults to 0.995): EMA decay of the teacher (`momentum_update()`).
        distillation_alpha (`float`, defaults to 0.4): weight of the teacher's soft targets in ITC and MDM (0 turns
            distillation off).
        queue_size (`int`, defaults to 0): teacher embeddings kept as extra ITC negatives (0 = in-batch only).
            The teacher exists when `distillation_alpha > 0` or `queue_size > 0`.
        modalities (`Literal["rgbd", "rgb", "depth"]`, defaults to `"rgbd"`): `"rgb"` / `"depth"` build only that
            tower (classification ablations; pretraining and matching need `"rgbd"`).
        modality_dropout (`float` or `(p_rgb, p_depth)`, defaults to `(0.0, 0.0)`): per-sample probability of
            dropping RGB / depth from the fusion encoder in training (exclusive draws). A dropped or missing RGB
            image is one learned token in cross-attention; dropped or missing depth is a map without valid pixel.
            In pretraining only `p_rgb` applies (to the MDM pass; those pairs leave the ITM loss).
        classifier_dropout (`float`, defaults to 0.0): dropout before the classifier.
        auxiliary_loss_weight (`float`, defaults to 0.0): classification with `"rgbd"`: a linear head per tower
            on its own [CLS], its loss added with this weight (as the dual encoder's).
        initializer_range (`float`, defaults to 0.02): std of the heads' initialisation.

    Wrong types raise `StrictDataclassFieldValidationError`, inconsistent values
    `StrictDataclassClassValidationError`, naming the field.
    """

    model_type = "rgbd_albef"
    keys_to_ignore_at_inference = [
        "rgb_logits",
        "depth_logits",
        "rgb_embeds",
        "depth_embeds",
        "last_hidden_state",
        "pooler_output",
        "rgb_model_output",
        "depth_model_output",
        "fusion_model_output",
    ]
    sub_configs_defaults = {
        "rgb_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "rgb"}),
        "depth_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "depth"}),
        "fusion_encoder_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "depth", "num_hidden_layers": 6}),
    }

    rgb_config: dict | RgbdVitConfig | None = None
    depth_config: dict | RgbdVitConfig | None = None
    fusion_encoder_config: dict | RgbdVitConfig | None = None
    aligned_fusion: bool = True
    projection_dim: int = 256
    logit_scale_init_value: float | int = 2.6592
    depth_vocab_size: int = 64
    min_depth: float | int = 0.1
    max_depth: float | int = 10.0
    mdm_mask_ratio: float | int = 0.3
    momentum: float | int = 0.995
    distillation_alpha: float | int = 0.4
    queue_size: int = 0
    modalities: RgbdModalities = "rgbd"
    modality_dropout: ModalityDropout = (0.0, 0.0)
    classifier_dropout: float | int = 0.0
    auxiliary_loss_weight: float | int = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        alias = kwargs.pop("fusion_config", None)
        if alias is not None:
            if self.fusion_encoder_config is not None:
                raise ValueError("pass the fusion encoder as `fusion_encoder_config` or `fusion_config`, not both.")
            self.fusion_encoder_config = alias.to_dict() if isinstance(alias, RgbdVitConfig) else alias
        for name, modality in (("rgb_config", "rgb"), ("depth_config", "depth"), ("fusion_encoder_config", "depth")):
            value = getattr(self, name)
            if isinstance(value, dict) and "modality" not in value:
                setattr(self, name, {**value, "modality": modality})
        if self.fusion_encoder_config is None:
            depth = self.depth_config
            depth = depth.to_dict() if isinstance(depth, RgbdVitConfig) else dict(depth or {})
            layers = max(1, int(depth.get("num_hidden_layers", 12)) // 2)
            self.fusion_encoder_config = {**depth, "modality": "depth", "num_hidden_layers": layers}
        self.modality_dropout = normalize_modality_dropout(self.modality_dropout)
        super().__post_init__(**kwargs)

    def validate_towers(self) -> None:
        for name, modality in (("rgb_config", "rgb"), ("depth_config", "depth"), ("fusion_encoder_config", "depth")):
            tower = getattr(self, name)
            if tower.modality != modality:
                raise ValueError(f"`{name}.modality` must be {modality!r}, got {tower.modality!r}.")
        if self.fusion_encoder_config.hidden_size != self.depth_config.hidden_size:
            raise ValueError(
                f"`fusion_encoder_config.hidden_size` ({self.fusion_encoder_config.hidden_size}) must equal `depth_config.hidden_size` "
                f"({self.depth_config.hidden_size}): the fusion encoder continues the depth stream."
            )

    def validate_pretraining_fields(self) -> None:
        check_probability("momentum", self.momentum, closed=True)
        check_probability("distillation_alpha", self.distillation_alpha, closed=True)
        if not isinstance(self.queue_size, int) or isinstance(self.queue_size, bool) or self.queue_size < 0:
            raise ValueError(f"`queue_size` must be an int >= 0, got {self.queue_size!r}.")

    @property
    def uses_teacher(self) -> bool:
        """Whether the pretraining model keeps an EMA teacher (distillation or a queue)."""
        return self.distillation_alpha > 0 or self.queue_size > 0

    @classmethod
    def tiny(cls, **kwargs: Any) -> "RgbdAlbefConfig":
        """Tiny towers for tests (`RgbdVitConfig.tiny()`: hidden 32, 2 layers, image 32, patch 8), one fusion layer,
        projection 16, 16 depth words."""
        return cls._named(RgbdVitConfig.tiny, _TINY_FUSION, dict(projection_dim=16, depth_vocab_size=16), kwargs)

    @classmethod
    def small(cls, **kwargs: Any) -> "RgbdAlbefConfig":
        """Small towers for 64x64 inputs on a CPU (`RgbdVitConfig.small()`: hidden 128, 4 layers, patch 16 from a
        convolutional stem), two fusion layers, projection 128, 64 depth words over [0.1, 20] m: the config of
        the synthetic acceptance run (`scripts/train_rgbd_albef.py`)."""
        return cls._named(
            RgbdVitConfig.small,
            _SMALL_FUSION,
            dict(projection_dim=128, depth_vocab_size=64, min_depth=0.1, max_depth=20.0),
            kwargs,
        )

    @classmethod
    def _named(
        cls, tower: Any, fusion: dict[str, Any], defaults: dict[str, Any], kwargs: dict[str, Any]
    ) -> "RgbdAlbefConfig":
        if "fusion_config" in kwargs:
            kwargs["fusion_encoder_config"] = kwargs.pop("fusion_config")
        overrides = {
            name: dict(kwargs.pop(name, None) or {}) for name in ("rgb_config", "depth_config", "fusion_encoder_config")
        }
        for values in overrides.values():
            values.pop("modality", None)
        return cls(
            rgb_config=tower("rgb", **overrides["rgb_config"]).to_dict(),
            depth_config=tower("depth", **overrides["depth_config"]).to_dict(),
            fusion_encoder_config=tower("depth", **{**fusion, **overrides["fusion_encoder_config"]}).to_dict(),
            **{**defaults, **kwargs},
        )


__all__ = ["RgbdAlbefConfig"]
