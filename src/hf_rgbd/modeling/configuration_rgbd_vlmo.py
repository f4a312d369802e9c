"""Configuration of the VLMo / BEiT-3-style mixture of modality experts (`RgbdVlmoConfig`).

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
    check_positive_int,
    check_probability,
    normalize_modality_dropout,
)
from .configuration_rgbd_vit import RgbdVitConfig

# Fields of the one shared trunk: the RGB and the depth stream must agree on them (they differ in their embeddings).
TRUNK_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "qkv_bias",
    "use_pre_layernorm",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


@strict
class RgbdVlmoConfig(RgbdSharedConfigMixin, RgbdTwoTowerConfigMixin, RgbdDepthWordsConfigMixin, PreTrainedConfig):
    r"""Configuration of the mixture-of-modality-experts family ([`RgbdVlmoModel`], [`RgbdVlmoForPreTraining`],
    [`RgbdVlmoForImageClassification`], [`RgbdVlmoForRgbdMatching`]).

    VLMo (Bao et al. 2022) with depth in the place of text: one transformer whose self-attention is shared by both
    modalities, with a feed-forward expert (LayerNorm + MLP) per modality in every layer and, in the top
    `num_fusion_layers` layers, an RGB-D (fusion) expert. Each modality alone runs through its own experts (a dual
    encoder: ITC, retrieval); RGB and depth tokens concatenated run through the modality experts below and the
    fusion experts on top (a fusion encoder: ITM, MDM, classification).

    Args:
        rgb_config (`dict` or [`RgbdVitConfig`], *optional*): the RGB stream (`modality="rgb"`): its embeddings,
            and the trunk's fields (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
            `intermediate_size`, ...).
        depth_config (`dict` or [`RgbdVitConfig`], *optional*): the depth stream (`modality="depth"`): its
            embeddings (channels, patch size, hole handling). Its trunk fields must equal the RGB stream's (they
            default to them).
        num_fusion_layers (`int`, defaults to 2): how many top layers carry a fusion expert (at most
            `num_hidden_layers`; VLMo-Base: 2 of 12).
        aligned_fusion (`bool`, defaults to `True`): the fused pass runs the layers below the fusion layers on each
            stream alone (as the unimodal passes do, so pretraining reuses those states), adds to every depth token
            the projected RGB state at the same place of the patch grid (an RGB grid of another shape is resized;
            a missing or dropped image adds nothing), then runs the fusion layers on the concatenation. RGB and
            depth are pixel-registered; as with the fusion encoder's `aligned_fusion`, this gives each position
            both modalities at once. `False`: VLMo's fused pass (the concatenation from the first layer, experts
            chosen per token below the fusion layers).
        projection_dim (`int`, defaults to 256): ITC embedding size.
        logit_scale_init_value (`float`, defaults to 2.6592): initial log of the ITC scale (1 / 0.07).
        depth_vocab_size, min_depth, max_depth, mdm_mask_ratio: the depth words and masked depth modelling, as
            [`RgbdAlbefConfig`]'s ([`RgbdVlmoConfig.check_processor`] checks a processor against them).
        mim_mask_ratio (`float`, defaults to 0.5): the RGB-only pretraining step (VLMo's vision stage, `"rgb"` of
            `set_training_stage`): the fraction of RGB patches blanked (set to the normalised mean colour, 0) whose
            pixels the model regresses (masked image modelling, SimMIM-style, L1 on per-patch normalised pixels).
        modalities (`Literal["rgbd", "rgb", "depth"]`, defaults to `"rgbd"`): `"rgb"` / `"depth"` embed only that
            modality (classification ablations; pretraining and matching need `"rgbd"`).
        modality_dropout (`float` or `(p_rgb, p_depth)`, defaults to `(0.0, 0.0)`): per-sample probability of
            dropping RGB / depth from the fused sequence in training; a fused call with a modality missing needs it
            (the model has then learned what a missing modality looks like).
        classifier_dropout (`float`, defaults to 0.0): dropout before the classifier.
        auxiliary_loss_weight (`float`, defaults to 0.0): classification with `"rgbd"`: a linear head per modality on
            its own unimodal [CLS], its loss added with this weight (as the other families').
        initializer_range (`float`, defaults to 0.02): std of the heads' initialisation.

    Wrong types raise `StrictDataclassFieldValidationError`, inconsistent values
    `StrictDataclassClassValidationError`, naming the field.
    """

    model_type = "rgbd_vlmo"
    keys_to_ignore_at_inference = [
        "rgb_logits",
        "depth_logits",
        "rgb_embeds",
        "depth_embeds",
        "last_hidden_state",
        "pooler_output",
        "hidden_states",
        "attentions",
    ]
    sub_configs_defaults = {
        "rgb_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "rgb"}),
        "depth_config": SubConfigSpec(RgbdVitConfig, init_kwargs={"modality": "depth"}),
    }

    rgb_config: dict | RgbdVitConfig | None = None
    depth_config: dict | RgbdVitConfig | None = None
    num_fusion_layers: int = 2
    aligned_fusion: bool = True
    projection_dim: int = 256
    logit_scale_init_value: float | int = 2.6592
    depth_vocab_size: int = 64
    min_depth: float | int = 0.1
    max_depth: float | int = 10.0
    mdm_mask_ratio: float | int = 0.3
    mim_mask_ratio: float | int = 0.5
    modalities: RgbdModalities = "rgbd"
    modality_dropout: ModalityDropout = (0.0, 0.0)
    classifier_dropout: float | int = 0.0
    auxiliary_loss_weight: float | int = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        rgb = self.rgb_config.to_dict() if isinstance(self.rgb_config, RgbdVitConfig) else dict(self.rgb_config or {})
        rgb.setdefault("modality", "rgb")
        depth = self.depth_config.to_dict() if isinstance(self.depth_config, RgbdVitConfig) else self.depth_config
        depth = dict(depth or {})
        depth.setdefault("modality", "depth")
        for field in TRUNK_FIELDS:  # the depth stream shares the trunk: its fields default to the RGB stream's
            if field in rgb and field not in depth:
                depth[field] = rgb[field]
        self.rgb_config, self.depth_config = rgb, depth
        self.modality_dropout = normalize_modality_dropout(self.modality_dropout)
        super().__post_init__(**kwargs)

    def validate_trunk(self) -> None:
        for name, modality in (("rgb_config", "rgb"), ("depth_config", "depth")):
            if getattr(self, name).modality != modality:
                raise ValueError(f"`{name}.modality` must be {modality!r}, got {getattr(self, name).modality!r}.")
        for field in TRUNK_FIELDS:
            rgb_value, depth_value = getattr(self.rgb_config, field), getattr(self.depth_config, field)
            if rgb_value != depth_value:
                raise ValueError(
                    f"`depth_config.{field}` ({depth_value!r}) must equal `rgb_config.{field}` ({rgb_value!r}): both "
                    "modalities run through one shared trunk."
                )
        check_positive_int("num_fusion_layers", self.num_fusion_layers)
        check_probability("mim_mask_ratio", self.mim_mask_ratio)
        if self.num_fusion_layers > self.rgb_config.num_hidden_layers:
            raise ValueError(
                f"`num_fusion_layers` ({self.num_fusion_layers}) must be at most the trunk's `num_hidden_layers` "
                f"({self.rgb_config.num_hidden_layers})."
            )

    @property
    def num_hidden_layers(self) -> int:
        """Layers of the shared trunk."""
        return self.rgb_config.num_hidden_layers

    @property
    def first_fusion_layer(self) -> int:
        """Index of the first layer with a fusion expert."""
        return self.rgb_config.num_hidden_layers - self.num_fusion_layers

    @classmethod
    def tiny(cls, **kwargs: Any) -> "RgbdVlmoConfig":
        """Tiny trunk for tests (`RgbdVitConfig.tiny()`: hidden 32, 2 layers, image 32, patch 8), one fusion layer,
        projection 16, 16 depth words."""
        return cls._named(RgbdVitConfig.tiny, dict(num_fusion_layers=1, projection_dim=16, depth_vocab_size=16), kwargs)

    @classmethod
    def small(cls, **kwargs: Any) -> "RgbdVlmoConfig":
        """A small trunk for 64x64 inputs on a CPU (`RgbdVitConfig.small()`: hidden 128, 4 layers, patch 16 from a
        convolutional stem), fusion experts in the top two layers, projection 128, 64 depth words over [0.1, 20] m
        (the fusion encoder's `small()` depth words)."""
        defaults = dict(num_fusion_layers=2, projection_dim=128, depth_vocab_size=64, min_depth=0.1, max_depth=20.0)
        return cls._named(RgbdVitConfig.small, defaults, kwargs)

    @classmethod
    def _named(cls, stream: Any, defaults: dict[str, Any], kwargs: dict[str, Any]) -> "RgbdVlmoConfig":
        overrides = {name: dict(kwargs.pop(name, None) or {}) for name in ("rgb_config", "depth_config")}
        for values in overrides.values():
            values.pop("modality", None)
        rgb = stream("rgb", **overrides["rgb_config"]).to_dict()
        depth_overrides = {**{field: rgb[field] for field in TRUNK_FIELDS}, **overrides["depth_config"]}
        return cls(
            rgb_config=rgb,
            depth_config=stream("depth", **depth_overrides).to_dict(),
            **{**defaults, **kwargs},
        )


__all__ = ["RgbdVlmoConfig"]
