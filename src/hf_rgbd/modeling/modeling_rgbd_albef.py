"""ALBEF/BLIP-style RGB-D fusion encoder: depth in the place of text.

* [`RgbdAlbefModel`]: an RGB and a depth [`RgbdVitModel`] tower with ITC projections (as the dual encoder), and a
  fusion encoder ([`RgbdFusionEncoder`]) whose layers run self-attention over the depth tokens and
  cross-attention from them to the RGB tokens. The fused [CLS] is the depth stream's [CLS] after fusion.
* [`RgbdAlbefForPreTraining`]: ITC + ITM (hard negatives from the ITC similarities) + MDM (the depth words of
  masked patches), with an optional EMA teacher (momentum distillation) and feature queue.
* [`RgbdAlbefForImageClassification`], [`RgbdAlbefForRgbdMatching`], [`RgbdAlbefForDepthCompletion`].

Missing modalities are data: a missing or dropped depth map is a map without any valid pixel (every depth patch
is the learned missing-depth token, hidden from attention), a missing or dropped RGB image is one learned token
as the only cross-attention key. MDM masks patches the same way (as holes), so depth completion is MDM on holes.

Part of the flat `hf_rgbd.modeling` folder (single-dot relative imports only), so saved models carry it and load
with `trust_remote_code=True` where hf_rgbd is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, BaseModelOutputWithPoolingAndCrossAttentions
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_rgbd_albef import RgbdAlbefConfig
from .configuration_rgbd_vit import RgbdVitConfig
from .modeling_rgbd_clip import RgbdDualTowerMixin, RgbdVisionPretrainedMixin
from .modeling_rgbd_common import (
    RgbdAutoMapMixin,
    check_classification_labels,
    check_flag,
    check_image_tensor,
    check_labels,
    check_same_batch,
    draw_modality_dropout,
    effective_depth_mask,
    fused_classification_loss,
)
from .modeling_rgbd_pretraining import (
    RgbdFeatureQueue,
    RgbdMaskedDepthHead,
    RgbdMatchingHead,
    RgbdMatchingMixin,
    RgbdMatchingOutput,
    check_fused_config,
    check_pretraining_batch,
    check_scene_ids,
    depth_bin_centres,
    draw_pretraining_rgb_dropout,
    ema_update,
    empty_depth,
    gather_without_grad,
    global_contrastive_loss,
    mask_depth_for_mdm,
    masked_depth_loss,
    matching_labels,
    matching_loss,
    matching_pairs,
    matching_rgb_drop,
    place_on_grid,
    sample_hard_negatives,
)
from .modeling_rgbd_vit import RgbdVitAttention, RgbdVitEncoder, RgbdVitLayer, RgbdVitModel, RgbdVitPreTrainedModel

logger = logging.get_logger(__name__)


# -------------------------------------------------------------------------------------------------------- outputs
class _FusionPartsOutputMixin:
    """`to_tuple` and the `hidden_states` / `attentions` / `cross_attentions` views of the outputs that keep the
    parts' full outputs in `rgb_model_output` / `depth_model_output` / `fusion_model_output`."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())

    def _parts_field(self, name: str, parts: tuple[str, ...]) -> tuple[torch.Tensor, ...] | None:
        fields = [getattr(getattr(self, part), name, None) for part in parts if getattr(self, part) is not None]
        tensors = [tensor for field in fields if field is not None for tensor in field]
        return tuple(tensors) if tensors else None

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...] | None:
        """Hidden states of the RGB tower, then the depth tower, then the fusion encoder (those computed), or None."""
        return self._parts_field("hidden_states", ("rgb_model_output", "depth_model_output", "fusion_model_output"))

    @property
    def attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Self-attention weights of the RGB tower's layers, then the depth tower's, then the fusion encoder's
        (eager attention, `output_attentions=True`), or None."""
        return self._parts_field("attentions", ("rgb_model_output", "depth_model_output", "fusion_model_output"))

    @property
    def cross_attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Cross-attention weights (depth tokens -> RGB tokens) of the fusion encoder's layers, or None."""
        return self._parts_field("cross_attentions", ("fusion_model_output",))


@dataclass
class RgbdAlbefModelOutput(_FusionPartsOutputMixin, ModelOutput):
    r"""Output of [`RgbdAlbefModel`].

    Args:
        last_hidden_state (`torch.Tensor` (B, 1 + N, D)): fused token states (the depth stream after fusion,
            final-normed); with `modalities="rgb"` / `"depth"` the tower's own states.
        pooler_output (`torch.Tensor` (B, D)): the fused [CLS] (or the tower's [CLS]).
        rgb_embeds / depth_embeds (`torch.Tensor` (B, projection_dim)): L2-normalised ITC embeddings (None for a
            modality not given).
        rgb_model_output / depth_model_output / fusion_model_output (`BaseModelOutputWithPooling`): the parts'
            outputs (hidden states, attentions and the fusion encoder's `cross_attentions` when asked for).

    The properties `hidden_states` / `attentions` concatenate the parts' tuples (RGB tower, depth tower, fusion
    encoder), `cross_attentions` is the fusion encoder's.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    rgb_embeds: torch.Tensor | None = None
    depth_embeds: torch.Tensor | None = None
    rgb_model_output: BaseModelOutputWithPooling | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None
    fusion_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class RgbdAlbefForPreTrainingOutput(ModelOutput):
    r"""Output of [`RgbdAlbefForPreTraining`].

    Args:
        loss (`torch.Tensor` `()`): `loss_itc + loss_itm + loss_mdm`.
        loss_itc, loss_itm, loss_mdm (`torch.Tensor` `()`): the three losses (`loss_mdm` is 0 with
            `mdm_mask_ratio=0`).
        itm_logits (`torch.Tensor` (3B, 2)): ITM logits of the B positive pairs, then B pairs (RGB i, a hard
            negative depth map), then B pairs (a hard negative RGB image, depth i); index 1 = matched.
        itm_labels (`torch.Tensor` (3B,)): 1, 0, or -100 for positives whose RGB image was dropped
            (`modality_dropout`).
        mdm_logits (`torch.Tensor` (B, N, depth_vocab_size)): depth-word scores of every patch of the positive pairs.
        mdm_mask (`torch.Tensor` (B, N) bool): the masked patches (where `loss_mdm` is computed).
        logits_per_rgb (`torch.Tensor` (B, B_global [+ queue])): ITC logits RGB -> depth.
        rgb_embeds / depth_embeds (`torch.Tensor` (B, projection_dim)): the student's ITC embeddings.
        negative_depth_index / negative_rgb_index (`torch.Tensor` (B,)): the hard negatives drawn, indices into the
            global batch.
    """

    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_mdm: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    itm_labels: torch.Tensor | None = None
    mdm_logits: torch.Tensor | None = None
    mdm_mask: torch.Tensor | None = None
    logits_per_rgb: torch.Tensor | None = None
    rgb_embeds: torch.Tensor | None = None
    depth_embeds: torch.Tensor | None = None
    negative_depth_index: torch.Tensor | None = None
    negative_rgb_index: torch.Tensor | None = None


@dataclass
class RgbdAlbefImageClassifierOutput(_FusionPartsOutputMixin, ModelOutput):
    r"""Output of [`RgbdAlbefForImageClassification`].

    Args:
        loss (`torch.Tensor` `()`, with `labels`): classification loss (plus the auxiliary heads' losses).
        logits (`torch.Tensor` (B, num_labels)): scores from the fused [CLS] (or the one tower's [CLS]).
        rgb_logits / depth_logits (`torch.Tensor` (B, num_labels)): auxiliary heads (`auxiliary_loss_weight > 0`).
        pooler_output (`torch.Tensor` (B, D)): the classifier's input.
        rgb_model_output / depth_model_output / fusion_model_output: as in [`RgbdAlbefModelOutput`], with the same
            `hidden_states` / `attentions` / `cross_attentions` properties.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rgb_logits: torch.Tensor | None = None
    depth_logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    rgb_model_output: BaseModelOutputWithPooling | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None
    fusion_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class RgbdDepthCompletionOutput(ModelOutput):
    r"""Output of [`RgbdAlbefForDepthCompletion`], as transformers' `DepthEstimatorOutput`.

    Args:
        loss (`torch.Tensor` `()`, with `labels`): mean absolute error in metres over the holes where `labels` is
            positive.
        predicted_depth (`torch.Tensor` (B, H, W)): metres; the input's valid pixels unchanged, its holes filled.
        predicted_patch_depth (`torch.Tensor` (B, N)): the model's depth per patch (metres), before filling.
        hole_mask (`torch.Tensor` (B, H, W) bool): the filled pixels.
    """

    loss: torch.Tensor | None = None
    predicted_depth: torch.Tensor | None = None
    predicted_patch_depth: torch.Tensor | None = None
    hole_mask: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------------ fusion encoder
class RgbdFusionEncoder(RgbdVitPreTrainedModel):
    """Layers of self-attention over one stream (the depth tokens), cross-attention to another (the RGB tokens) and
    an MLP, then a final LayerNorm. Its hidden states, attentions and cross-attentions are recorded by output
    capturing. (B, L, D) -> `BaseModelOutputWithPooling` (`pooler_output`: the normed first token)."""

    auto_map_classes: dict[str, str] = {}
    _can_record_outputs = {
        "hidden_states": RgbdVitLayer,
        "attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="attention"),
        "cross_attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="crossattention"),
    }

    def __init__(self, config: RgbdVitConfig):
        super().__init__(config)
        layers = [RgbdVitLayer(config, add_cross_attention=True) for _ in range(config.num_hidden_layers)]
        self.encoder = RgbdVitEncoder(config, layers=layers)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """hidden_states (B, L, D) queries, attention_mask (B, L) bool key mask; encoder_hidden_states (B, L_e, D),
        encoder_attention_mask (B, L_e) bool."""
        outputs = self.encoder(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            **kwargs,
        )
        sequence = self.layernorm(outputs.last_hidden_state)
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=sequence, pooler_output=sequence[:, 0])


# ------------------------------------------------------------------------------------------------------ models
class RgbdAlbefPreTrainedModel(RgbdVisionPretrainedMixin, RgbdAutoMapMixin, PreTrainedModel):
    """Initialisation, class attributes and `from_vision_pretrained` (both towers) of the fusion-encoder models."""

    config_class = RgbdAlbefConfig
    config: RgbdAlbefConfig
    auto_map_classes = {
        "AutoModel": "RgbdAlbefModel",
        "AutoModelForPreTraining": "RgbdAlbefForPreTraining",
        "AutoModelForImageClassification": "RgbdAlbefForImageClassification",
        "AutoModelForDepthEstimation": "RgbdAlbefForDepthCompletion",
        "AutoModelForZeroShotImageClassification": "RgbdAlbefForRgbdMatching",
    }
    base_model_prefix = "rgbd_albef"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RgbdVitEmbeddings", "RgbdVitLayer"]
    _supports_sdpa = True
    accepts_loss_kwargs = False
    # parts of a pretraining checkpoint a downstream model does not use (the heads it does use are removed)
    _pretraining_only_keys = (r"^teacher\.", r"^queue\.", r"^itm_head\.", r"^mdm_head\.")
    _keys_to_ignore_on_load_unexpected = list(_pretraining_only_keys)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RgbdAlbefModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            for projection, tower in ((module.rgb_projection, module.rgb_model), (module.depth_projection, module.depth_model)):
                if projection is not None:
                    init.normal_(projection.weight, mean=0.0, std=tower.config.hidden_size**-0.5)
            if module.missing_rgb_embedding is not None:
                init.trunc_normal_(module.missing_rgb_embedding, mean=0.0, std=self.config.initializer_range)

    @classmethod
    def _vision_pretrained_config_fields(cls, tower_kwargs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """The fusion encoder gets the checkpoint's layer fields and half its layers (unless overridden)."""
        fusion = {**tower_kwargs, "num_hidden_layers": max(1, tower_kwargs["num_hidden_layers"] // 2)}
        fusion.update(dict(overrides.pop("fusion_config", None) or overrides.get("fusion_encoder_config") or {}))
        fusion["modality"] = "depth"
        return {"fusion_encoder_config": fusion}


class RgbdAlbefModel(RgbdDualTowerMixin, RgbdAlbefPreTrainedModel):
    """The fusion encoder's trunk: the two towers with their ITC projections (`get_rgb_features` /
    `get_depth_features` as the dual encoder's) and, with `modalities="rgbd"`, the fusion encoder.

    `forward` encodes what is given and fuses: `depth_values=None` fuses a depth map without valid pixel,
    `pixel_values=None` a missing-RGB token, so either modality may be missing at inference. In training, with
    `config.modality_dropout`, whole modalities are dropped per sample the same way.
    """

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__(config)
        active = config.active_modalities
        self.rgb_model = RgbdVitModel._from_config(config.rgb_config) if "rgb" in active else None
        self.rgb_projection = (
            nn.Linear(config.rgb_config.hidden_size, config.projection_dim, bias=False) if "rgb" in active else None
        )
        self.depth_model = RgbdVitModel._from_config(config.depth_config) if "depth" in active else None
        self.depth_projection = (
            nn.Linear(config.depth_config.hidden_size, config.projection_dim, bias=False) if "depth" in active else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        fused = config.modalities == "rgbd"
        fusion_size = config.fusion_encoder_config.hidden_size
        self.fusion_model = RgbdFusionEncoder._from_config(config.fusion_encoder_config) if fused else None
        self.rgb_to_fusion = (
            nn.Linear(config.rgb_config.hidden_size, fusion_size)
            if fused and config.rgb_config.hidden_size != fusion_size
            else None
        )
        self.missing_rgb_embedding = nn.Parameter(torch.zeros(1, 1, fusion_size)) if fused else None
        self.aligned_rgb_projection = (
            nn.Linear(config.rgb_config.hidden_size, fusion_size) if fused and config.aligned_fusion else None
        )
        self.post_init()

    # ---------------------------------------------------------------------------- parts
    def depth_key_mask(self, depth_values: torch.Tensor, depth_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, 1 + N) bool: the depth tokens other layers may attend to ([CLS] and patches with a valid pixel, or
        every token without `mask_missing_depth_patches`)."""
        embeddings = self.depth_model.embeddings
        valid = embeddings.patch_validity(effective_depth_mask(depth_values, depth_mask)) > 0
        if not self.config.depth_config.mask_missing_depth_patches:
            valid = torch.ones_like(valid)
        return torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)

    def rgb_keys(self, rgb_states: torch.Tensor | None, drop_rgb: torch.Tensor | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys (B, L_rgb, D_fusion) and key mask (B, L_rgb): the RGB tokens, or for a missing
        (`rgb_states=None`) or dropped (`drop_rgb` (B,) True) image the learned missing-RGB token alone."""
        missing = self.missing_rgb_embedding
        if rgb_states is None:
            keys = missing.expand(batch_size, 1, -1)
            return keys, torch.ones(batch_size, 1, dtype=torch.bool, device=keys.device)
        keys = self.rgb_to_fusion(rgb_states) if self.rgb_to_fusion is not None else rgb_states
        key_mask = torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device)
        if drop_rgb is not None:
            first = torch.zeros_like(key_mask)
            first[:, 0] = True
            keys = torch.cat([torch.where(drop_rgb[:, None, None], missing.to(keys.dtype), keys[:, :1]), keys[:, 1:]], dim=1)
            key_mask = torch.where(drop_rgb[:, None], first, key_mask)
        return keys, key_mask

    def aligned_rgb(self, rgb_states: torch.Tensor, num_depth_tokens: int) -> torch.Tensor:
        """The RGB token states (B, 1 + N_rgb, D_rgb) projected and placed on the depth grid: (B, 1 + N_depth,
        D_fusion), [CLS] first. An RGB grid of another shape is resized (bilinear) to the depth tower's grid."""
        grids = (tuple(self.config.rgb_config.grid_size), tuple(self.config.depth_config.grid_size))
        return place_on_grid(self.aligned_rgb_projection(rgb_states), num_depth_tokens, *grids)

    def fuse(
        self,
        depth_states: torch.Tensor,
        depth_key_mask: torch.Tensor,
        rgb_states: torch.Tensor | None,
        drop_rgb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """The fusion encoder on depth token states (B, 1 + N, D) attending to the RGB token states
        `rgb_states` (B, 1 + N_rgb, D_rgb) (None: a missing image); `drop_rgb` (B,) bool marks images dropped in
        training. With `config.aligned_fusion`, the RGB tokens of the images present are first added to the depth
        tokens at the same places."""
        batch_size = depth_states.shape[0]
        rgb_keys, rgb_key_mask = self.rgb_keys(rgb_states, drop_rgb, batch_size)
        if self.aligned_rgb_projection is not None and rgb_states is not None:
            aligned = self.aligned_rgb(rgb_states, depth_states.shape[1])
            if drop_rgb is not None:
                aligned = aligned.masked_fill(drop_rgb[:, None, None], 0.0)
            depth_states = depth_states + aligned
        kwargs = {key: value for key, value in kwargs.items() if key not in ("return_dict", "interpolate_pos_encoding")}
        return self.fusion_model(
            depth_states,
            attention_mask=depth_key_mask,
            encoder_hidden_states=rgb_keys,
            encoder_attention_mask=rgb_key_mask,
            return_dict=True,
            **self._tower_kwargs(kwargs),
        )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdAlbefModelOutput:
        """Encode and fuse RGB-D pairs.

        Args:
            pixel_values: (B, 3, H, W) normalised RGB (None: missing, with `modalities="rgbd"`).
            depth_values: (B, C_d, H, W) depth representation (None: missing, with `modalities="rgbd"`).
            depth_mask: (B, 1, H, W) bool, False at holes (None: every finite pixel valid).
            interpolate_pos_encoding: accept other sizes than the configured ones (not for a missing modality).
            kwargs: `output_hidden_states`, `output_attentions` (eager), `return_dict`.

        Returns:
            [`RgbdAlbefModelOutput`].
        """
        config = self.config
        if config.modalities == "rgb" and pixel_values is None:
            raise ValueError("`pixel_values` is required with `modalities='rgb'`.")
        if config.modalities == "depth" and depth_values is None:
            raise ValueError("`depth_values` is required with `modalities='depth'`.")
        if pixel_values is None and depth_values is None:
            raise ValueError("pass `pixel_values`, `depth_values` or both.")
        use_rgb = "rgb" in config.active_modalities and pixel_values is not None
        use_depth = "depth" in config.active_modalities and depth_values is not None
        check_same_batch(pixel_values if use_rgb else None, depth_values if use_depth else None)
        kwargs = dict(kwargs, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        rgb_outputs = self.get_rgb_features(pixel_values, **kwargs) if use_rgb else None
        if config.modalities != "rgbd":
            tower_outputs = rgb_outputs if use_rgb else self.get_depth_features(depth_values, depth_mask, **kwargs)
            embeds = F.normalize(tower_outputs.pooler_output, dim=-1)
            last = tower_outputs.last_hidden_state
            return RgbdAlbefModelOutput(
                last_hidden_state=last,
                pooler_output=last[:, 0],
                rgb_embeds=embeds if use_rgb else None,
                depth_embeds=None if use_rgb else embeds,
                rgb_model_output=rgb_outputs,
                depth_model_output=None if use_rgb else tower_outputs,
            )

        reference = pixel_values if use_rgb else depth_values
        batch_size = reference.shape[0]
        drop_rgb = None
        if use_depth:
            depth_mask = effective_depth_mask(depth_values, depth_mask)
        p_rgb, p_depth = config.modality_dropout
        if self.training and use_rgb and use_depth and (p_rgb > 0 or p_depth > 0):
            drop_rgb, drop_depth = draw_modality_dropout(config.modality_dropout, batch_size, reference.device)
            depth_mask = depth_mask & ~drop_depth[:, None, None, None]
        depth_embeds = None
        if use_depth:
            depth_outputs = self.get_depth_features(depth_values, depth_mask, **kwargs)
            depth_embeds = F.normalize(depth_outputs.pooler_output, dim=-1)
        else:
            empty_values, depth_mask = empty_depth(config.depth_config, batch_size, reference)
            depth_outputs = self.get_depth_features(empty_values, depth_mask, **kwargs)
            depth_values = empty_values
        fusion_outputs = self.fuse(
            depth_outputs.last_hidden_state,
            self.depth_key_mask(depth_values, depth_mask),
            rgb_outputs.last_hidden_state if use_rgb else None,
            drop_rgb,
            **kwargs,
        )
        return RgbdAlbefModelOutput(
            last_hidden_state=fusion_outputs.last_hidden_state,
            pooler_output=fusion_outputs.pooler_output,
            rgb_embeds=F.normalize(rgb_outputs.pooler_output, dim=-1) if use_rgb else None,
            depth_embeds=depth_embeds,
            rgb_model_output=rgb_outputs,
            depth_model_output=depth_outputs if use_depth else None,
            fusion_model_output=fusion_outputs,
        )


class RgbdAlbefTeacher(nn.Module):
    """The EMA teacher of momentum distillation: a copy of the trunk and of the MDM head, never trained by the
    optimizer (`requires_grad=False`), updated by [`RgbdAlbefForPreTraining.momentum_update`]."""

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__()
        self.model = RgbdAlbefModel(config)
        fusion = config.fusion_encoder_config
        self.mdm_head = RgbdMaskedDepthHead(fusion.hidden_size, config.depth_vocab_size, fusion.hidden_act, fusion.layer_norm_eps)


class RgbdAlbefForPreTraining(RgbdAlbefPreTrainedModel):
    """Fusion-encoder pretraining: ITC + ITM + MDM in one pass of each tower.

    The depth tower runs once, on the depth map with the MDM patches masked (as holes, so nothing of them reaches
    any token); that pass serves ITC, ITM and MDM (FLIP's single masked pass). The fusion encoder runs once on 3B
    pairs: the positives (for ITM and MDM), each RGB with a hard-negative depth map, each depth map with a
    hard-negative RGB image. With a teacher (`distillation_alpha > 0` or `queue_size > 0`), ITC uses the teacher's
    embeddings as columns (and the queue), and with distillation soft targets for ITC and MDM.
    Call `momentum_update()` after each optimizer step (the Trainer callback `hf_rgbd.training.MomentumUpdateCallback`
    does): the teacher is not updated by `forward`.
    """

    pipeline_tasks = ("rgbd-matching",)

    _keys_to_ignore_on_load_unexpected: list[str] = []

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__(config)
        check_fused_config(config, "RgbdAlbefForPreTraining")
        self.rgbd_albef = RgbdAlbefModel(config)
        fusion = config.fusion_encoder_config
        self.itm_head = RgbdMatchingHead(fusion.hidden_size)
        self.mdm_head = RgbdMaskedDepthHead(fusion.hidden_size, config.depth_vocab_size, fusion.hidden_act, fusion.layer_norm_eps)
        self.teacher = RgbdAlbefTeacher(config) if config.uses_teacher else None
        self.queue = RgbdFeatureQueue(config.queue_size, config.projection_dim) if config.queue_size > 0 else None
        self.post_init()
        self.reset_teacher()

    def _teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.teacher.model, self.rgbd_albef), (self.teacher.mdm_head, self.mdm_head)]

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Make the teacher an exact copy of the student (weights and buffers) and freeze it."""
        if self.teacher is None:
            return
        for teacher, student in self._teacher_pairs():
            teacher.load_state_dict(student.state_dict())
        self.teacher.requires_grad_(False)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """`teacher = momentum * teacher + (1 - momentum) * student` for every parameter (buffers: the teacher's
        own). Call once per optimizer step, after `optimizer.step()`; does nothing without a teacher."""
        if self.teacher is None:
            return
        for teacher, student in self._teacher_pairs():
            ema_update(teacher.parameters(), student.parameters(), float(self.config.momentum))

    def _vision_weights_loaded(self) -> None:
        self.reset_teacher()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`; a checkpoint without teacher weights (a fine-tuned or converted
        model) gets the teacher copied from the loaded student, and the teacher is frozen either way."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if model.teacher is not None:
            if any(key.startswith("teacher.") for key in info["missing_keys"]):
                model.reset_teacher()
                info["missing_keys"] = [key for key in info["missing_keys"] if not key.startswith("teacher.")]
            model.teacher.requires_grad_(False)
        return (model, info) if wants_info else model

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_albef.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        depth_token_ids: torch.Tensor | None = None,
        scene_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdAlbefForPreTrainingOutput:
        """One pretraining step's losses on paired RGB-D batches.

        Args:
            pixel_values: (B, 3, H, W) normalised RGB.
            depth_values: (B, C_d, H, W) depth representation.
            depth_mask: (B, 1, H, W) bool, False at holes.
            depth_token_ids: (B, N) long depth words (the processor's, made with this config's vocabulary, patch
                size and depth range; -100 for patches without depth); required when `mdm_mask_ratio > 0`.
            scene_ids: (B,) long; pairs of one scene are never negatives of each other (ITC and ITM).
            return_loss: accepted for Trainer compatibility; the losses are always computed.

        Returns:
            [`RgbdAlbefForPreTrainingOutput`].
        """
        config = self.config
        batch_size = check_pretraining_batch(pixel_values, depth_values, "RgbdAlbefForPreTraining")
        scene_ids = check_scene_ids(scene_ids, batch_size)
        model = self.rgbd_albef
        check_flag(kwargs.pop("return_dict", True), "return_dict")

        depth_mask, depth_token_ids, mdm_mask = mask_depth_for_mdm(config, depth_values, depth_mask, depth_token_ids, batch_size)
        mdm_on = mdm_mask is not None

        # one pass of each tower, shared by the three losses
        rgb_outputs = model.get_rgb_features(pixel_values, return_dict=True, **kwargs)
        depth_outputs = model.get_depth_features(depth_values, depth_mask, return_dict=True, **kwargs)
        rgb_embeds = F.normalize(rgb_outputs.pooler_output, dim=-1)
        depth_embeds = F.normalize(depth_outputs.pooler_output, dim=-1)
        depth_key_mask = model.depth_key_mask(depth_values, depth_mask)
        drop_rgb = draw_pretraining_rgb_dropout(config, self.training, batch_size, pixel_values.device)

        teacher_embeds = teacher_mdm_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher.model
                teacher_rgb = teacher.get_rgb_features(pixel_values, return_dict=True)
                teacher_depth = teacher.get_depth_features(depth_values, depth_mask, return_dict=True)
                teacher_embeds = (
                    F.normalize(teacher_rgb.pooler_output, dim=-1),
                    F.normalize(teacher_depth.pooler_output, dim=-1),
                )
                if mdm_on and config.distillation_alpha > 0:
                    fused = teacher.fuse(
                        teacher_depth.last_hidden_state, depth_key_mask, teacher_rgb.last_hidden_state, drop_rgb
                    )
                    teacher_mdm_logits = self.teacher.mdm_head(fused.last_hidden_state[:, 1:])

        # ITC over the global batch (and the queue)
        all_scene_ids = gather_without_grad(scene_ids) if scene_ids is not None else None
        loss_itc, logits_per_rgb, logits_per_depth = global_contrastive_loss(
            rgb_embeds,
            depth_embeds,
            model.scaled_logit_scale(),
            scene_ids=scene_ids,
            queue=self.queue,
            teacher_embeds=teacher_embeds,
            distillation_alpha=float(config.distillation_alpha),
        )

        # ITM: positives, then (RGB i, hard negative depth), then (hard negative RGB, depth i), one fusion pass
        negative_depth, negative_rgb = sample_hard_negatives(logits_per_rgb, logits_per_depth, all_scene_ids)
        rgb_states, depth_states, key_masks = matching_pairs(
            rgb_outputs.last_hidden_state, depth_outputs.last_hidden_state, depth_key_mask, negative_depth, negative_rgb
        )
        fused = model.fuse(depth_states, key_masks, rgb_states, matching_rgb_drop(drop_rgb), **kwargs)
        itm_logits = self.itm_head(fused.pooler_output)
        itm_labels = matching_labels(batch_size, drop_rgb, itm_logits.device)
        loss_itm = matching_loss(itm_logits, itm_labels)

        # MDM on the positives' masked patches
        mdm_logits = self.mdm_head(fused.last_hidden_state[:batch_size, 1:])
        loss_mdm = masked_depth_loss(
            mdm_logits, depth_token_ids, mdm_mask, teacher_mdm_logits, float(config.distillation_alpha)
        )

        if self.queue is not None and self.training:
            self.queue.enqueue(teacher_embeds[0], teacher_embeds[1], scene_ids)
        return RgbdAlbefForPreTrainingOutput(
            loss=loss_itc + loss_itm + loss_mdm,
            loss_itc=loss_itc,
            loss_itm=loss_itm,
            loss_mdm=loss_mdm,
            itm_logits=itm_logits,
            itm_labels=itm_labels,
            mdm_logits=mdm_logits,
            mdm_mask=mdm_mask,
            logits_per_rgb=logits_per_rgb,
            rgb_embeds=rgb_embeds,
            depth_embeds=depth_embeds,
            negative_depth_index=negative_depth,
            negative_rgb_index=negative_rgb,
        )


class RgbdAlbefForImageClassification(RgbdAlbefPreTrainedModel):
    """Classification on the fused [CLS] (with `modalities="rgb"` / `"depth"`: on that tower's [CLS]).

    `from_pretrained(pretraining_folder, num_labels=K)` loads the trunk; only the new head is reported missing
    (the teacher, queue and pretraining heads are ignored). Either input may be None at inference with
    `modalities="rgbd"` (see [`RgbdAlbefModel`]); train with `modality_dropout` for that to work well.
    """

    pipeline_tasks = ("rgbd-image-classification", "rgbd-adversarial-attack")

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.rgbd_albef = RgbdAlbefModel(config)
        hidden = config.fusion_encoder_config.hidden_size if config.modalities == "rgbd" else (
            config.rgb_config.hidden_size if config.modalities == "rgb" else config.depth_config.hidden_size
        )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, config.num_labels) if config.num_labels > 0 else nn.Identity()
        if config.auxiliary_loss_weight > 0 and config.num_labels > 0:
            self.rgb_classifier = nn.Linear(config.rgb_config.hidden_size, config.num_labels)
            self.depth_classifier = nn.Linear(config.depth_config.hidden_size, config.num_labels)
        else:
            self.rgb_classifier = None
            self.depth_classifier = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_albef.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdAlbefImageClassifierOutput:
        """Classify RGB-D pairs.

        Args:
            pixel_values: (B, 3, H, W), or None (missing, `modalities="rgbd"`).
            depth_values: (B, C_d, H, W), or None (missing, `modalities="rgbd"`).
            depth_mask: (B, 1, H, W) bool, False at holes.
            labels: (B,) class indices in [0, num_labels) or -100, or per `config.problem_type`.
            interpolate_pos_encoding: accept other sizes than the configured ones.

        Returns:
            [`RgbdAlbefImageClassifierOutput`] with `logits` (B, num_labels).
        """
        outputs = self.rgbd_albef(
            pixel_values=pixel_values,
            depth_values=depth_values,
            depth_mask=depth_mask,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **kwargs,
        )
        batch_size = outputs.pooler_output.shape[0]
        if labels is not None:
            check_labels(labels, batch_size)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        rgb_logits = depth_logits = None
        if self.rgb_classifier is not None:
            if outputs.rgb_model_output is not None:
                rgb_logits = self.rgb_classifier(self.dropout(outputs.rgb_model_output.last_hidden_state[:, 0]))
            if outputs.depth_model_output is not None:
                depth_logits = self.depth_classifier(self.dropout(outputs.depth_model_output.last_hidden_state[:, 0]))
        loss = None
        if labels is not None:
            labels = check_classification_labels(labels, logits, self.config, check_values=not self.training)
            loss = fused_classification_loss(
                self.loss_function, labels, logits, (rgb_logits, depth_logits), self.config
            )
        return RgbdAlbefImageClassifierOutput(
            loss=loss,
            logits=logits,
            rgb_logits=rgb_logits,
            depth_logits=depth_logits,
            pooler_output=outputs.pooler_output,
            rgb_model_output=outputs.rgb_model_output,
            depth_model_output=outputs.depth_model_output,
            fusion_model_output=outputs.fusion_model_output,
        )


class RgbdAlbefForRgbdMatching(RgbdMatchingMixin, RgbdAlbefPreTrainedModel):
    """RGB-depth matching, as `BlipForImageTextRetrieval`: `use_itm_head=True` scores pairs with the ITM head
    (`itm_score` (B, 2) logits, index 1 = matched), `use_itm_head=False` gives the ITC cosine similarities
    (B_rgb, B_depth), the filter that finds noisy pairs. Loads the trunk and ITM head of a pretraining checkpoint."""

    pipeline_tasks = ("rgbd-matching",)

    _keys_to_ignore_on_load_unexpected = [r"^teacher\.", r"^queue\.", r"^mdm_head\."]

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__(config)
        check_fused_config(config, "RgbdAlbefForRgbdMatching")
        self.rgbd_albef = RgbdAlbefModel(config)
        self.itm_head = RgbdMatchingHead(config.fusion_encoder_config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_albef.get_input_embeddings()


class RgbdAlbefForDepthCompletion(RgbdAlbefPreTrainedModel):
    """Depth completion with the pretrained MDM head: holes are MDM's masked patches, so each patch's depth is the
    expectation (in log depth) of its predicted depth word over the bins' centres, and hole pixels take their
    patch's depth. Valid pixels are returned unchanged. `pixel_values=None` completes from depth alone and
    `depth_values=None` estimates depth from RGB alone (both learned with `modality_dropout` in pretraining).
    Loads the trunk and MDM head of a pretraining checkpoint."""

    _keys_to_ignore_on_load_unexpected = [r"^teacher\.", r"^queue\.", r"^itm_head\."]

    def __init__(self, config: RgbdAlbefConfig):
        super().__init__(config)
        check_fused_config(config, "RgbdAlbefForDepthCompletion")
        self.rgbd_albef = RgbdAlbefModel(config)
        fusion = config.fusion_encoder_config
        self.mdm_head = RgbdMaskedDepthHead(fusion.hidden_size, config.depth_vocab_size, fusion.hidden_act, fusion.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_albef.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        depth_metres: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdDepthCompletionOutput:
        """Fill the holes of depth maps.

        Args:
            pixel_values: (B, 3, H, W) or None.
            depth_values: (B, C_d, H, W) depth representation, or None (no depth: estimate every pixel).
            depth_mask: (B, 1, H, W) bool, False at the holes to fill.
            depth_metres: (B, 1, H, W) or (B, H, W), the same depth in metres (e.g. the processor's
                `to_metres(depth_values, depth_mask)`); its valid pixels are copied to the output. Required with
                `depth_values`.
            labels: (B, H, W) or (B, 1, H, W) true depth in metres (0 = unknown): `loss` is the mean absolute error
                over the filled pixels where it is known.

        Returns:
            [`RgbdDepthCompletionOutput`] with `predicted_depth` (B, H, W) metres.
        """
        config = self.config.depth_config
        if depth_values is not None:
            if depth_metres is None:
                raise ValueError(
                    "`depth_metres` (the input depth in metres, (B, 1, H, W)) is required with `depth_values`: its "
                    "valid pixels are returned unchanged."
                )
            if isinstance(depth_metres, torch.Tensor) and depth_metres.dim() == 3:
                depth_metres = depth_metres.unsqueeze(1)
            check_image_tensor(depth_metres, "depth_metres", 1, "metres, one channel")
            if tuple(depth_metres.shape) != (depth_values.shape[0], 1, *depth_values.shape[-2:]):
                raise ValueError(
                    f"`depth_metres` must have shape {(depth_values.shape[0], 1, *depth_values.shape[-2:])} like "
                    f"`depth_values`, got {tuple(depth_metres.shape)}."
                )
            valid = effective_depth_mask(depth_values, depth_mask) & torch.isfinite(depth_metres) & (depth_metres > 0)
        outputs = self.rgbd_albef(pixel_values=pixel_values, depth_values=depth_values, depth_mask=depth_mask, **kwargs)
        probabilities = self.mdm_head(outputs.last_hidden_state[:, 1:]).float().softmax(-1)
        centres = depth_bin_centres(self.config.depth_vocab_size, self.config.min_depth, self.config.max_depth)
        patch_depth = torch.exp(probabilities @ torch.log(centres.to(probabilities.device)))  # (B, N)
        batch_size = patch_depth.shape[0]
        grid = patch_depth.view(batch_size, 1, *config.grid_size)
        pixel_depth = grid.repeat_interleave(config.patch_size_pair[0], dim=2).repeat_interleave(config.patch_size_pair[1], dim=3)
        if depth_values is None:
            valid = torch.zeros_like(pixel_depth, dtype=torch.bool)
            predicted = pixel_depth
        else:
            predicted = torch.where(valid, depth_metres.to(pixel_depth.dtype), pixel_depth)
        loss = None
        if labels is not None:
            if isinstance(labels, torch.Tensor) and labels.dim() == 3:
                labels = labels.unsqueeze(1)
            check_image_tensor(labels, "labels", 1, "metres, one channel")
            if tuple(labels.shape) != tuple(predicted.shape):
                raise ValueError(f"`labels` must have shape {tuple(predicted.shape[:1] + predicted.shape[2:])}, got {tuple(labels.shape)}.")
            known = ~valid & torch.isfinite(labels) & (labels > 0)
            error = torch.where(known, (predicted - labels.to(predicted.dtype)).abs(), torch.zeros_like(predicted))
            loss = error.sum() / known.sum().clamp(min=1)
        return RgbdDepthCompletionOutput(
            loss=loss, predicted_depth=predicted[:, 0], predicted_patch_depth=patch_depth, hole_mask=~valid[:, 0]
        )


__all__ = [
    "RgbdAlbefForDepthCompletion",
    "RgbdAlbefForImageClassification",
    "RgbdAlbefForPreTraining",
    "RgbdAlbefForPreTrainingOutput",
    "RgbdAlbefForRgbdMatching",
    "RgbdAlbefImageClassifierOutput",
    "RgbdAlbefModel",
    "RgbdAlbefModelOutput",
    "RgbdAlbefPreTrainedModel",
    "RgbdAlbefTeacher",
    "RgbdDepthCompletionOutput",
    "RgbdFusionEncoder",
    "RgbdMatchingOutput",
]
