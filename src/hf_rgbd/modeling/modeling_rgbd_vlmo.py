"""VLMo / BEiT-3-style mixture of modality experts for RGB-D: depth in the place of text.

One transformer trunk: the self-attention of every layer is shared by both modalities; the feed-forward part is a
set of experts (a LayerNorm and an MLP each, [`RgbdModalityExperts`]): an RGB and a depth expert in every layer, and
an RGB-D (fusion) expert in the top `config.num_fusion_layers` layers.

* Unimodal (dual encoder): the RGB or the depth stream alone, through its own experts in every layer
  (`get_rgb_features` / `get_depth_features`, as the dual encoder's: ITC, retrieval).
* Fused (fusion encoder): the RGB tokens then the depth tokens as one sequence; below the fusion layers each token
  goes to its modality's expert, in the fusion layers every token to the fusion expert. The fused [CLS] is the RGB
  stream's [CLS] (the first token).

A missing or dropped RGB image is its [CLS] token alone (its patches, if present, are hidden from attention); a
missing or dropped depth map is a map without valid pixel (every depth patch hidden), as in the other families.
[`RgbdVlmoForPreTraining`] trains ITC + ITM + MDM with the fusion encoder's shared pieces
(`modeling_rgbd_pretraining`): the streams' embeddings are computed once and serve the unimodal passes and the
fused pass of the positive and hard-negative pairs.

Part of the flat `hf_rgbd.modeling` folder (single-dot relative imports only), so saved models carry it and load
with `trust_remote_code=True` where hf_rgbd is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_rgbd_vit import RgbdVitConfig
from .configuration_rgbd_vlmo import RgbdVlmoConfig
from .modeling_rgbd_albef import RgbdAlbefForPreTrainingOutput
from .modeling_rgbd_clip import RgbdDualTowerMixin, RgbdVisionPretrainedMixin, _load_tower_weights
from .modeling_rgbd_common import (
    check_classification_labels,
    check_flag,
    check_labels,
    check_same_batch,
    draw_modality_dropout,
    effective_depth_mask,
    fused_classification_loss,
)
from .modeling_rgbd_pretraining import (
    RgbdMaskedDepthHead,
    RgbdMatchingHead,
    RgbdMatchingMixin,
    check_fused_config,
    check_masking_size,
    check_pretraining_batch,
    check_scene_ids,
    draw_mdm_mask,
    draw_pretraining_rgb_dropout,
    empty_depth,
    gather_without_grad,
    global_contrastive_loss,
    mask_depth_for_mdm,
    masked_depth_loss,
    masked_image_loss,
    matching_labels,
    matching_loss,
    matching_pairs,
    matching_rgb_drop,
    patch_mask_to_pixels,
    place_on_grid,
    sample_hard_negatives,
)
from .modeling_rgbd_vit import (
    RgbdVitAttention,
    RgbdVitEmbeddings,
    RgbdVitEncoder,
    RgbdVitLayer,
    RgbdVitMLP,
    RgbdVitModel,
    RgbdVitPreTrainedModel,
)

EXPERT_ROUTES = ("rgb", "depth", "rgbd")


# ------------------------------------------------------------------------------------------------------- experts
class RgbdModalityExpert(nn.Module):
    """One feed-forward expert: LayerNorm then MLP, (B, L, D) -> (B, L, D)."""

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = RgbdVitMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.layernorm(hidden_states))


class RgbdModalityExperts(nn.Module):
    """The experts of one layer (`experts["rgb"]`, `experts["depth"]` and, in a fusion layer, `experts["rgbd"]`),
    called by [`RgbdVitLayer`] in place of its MLP with `route` and `rgb_length` as `mlp_kwargs`.

    `route="rgb"` / `"depth"`: every token to that expert (a unimodal sequence). `route="rgbd"`: a fused sequence
    whose first `rgb_length` tokens are RGB; a fusion layer sends every token to its fusion expert, any other layer
    each token to its modality's expert.
    """

    def __init__(self, config: RgbdVitConfig, with_fusion_expert: bool):
        super().__init__()
        names = EXPERT_ROUTES if with_fusion_expert else EXPERT_ROUTES[:2]
        self.experts = nn.ModuleDict({name: RgbdModalityExpert(config) for name in names})

    @property
    def has_fusion_expert(self) -> bool:
        return "rgbd" in self.experts

    def forward(self, hidden_states: torch.Tensor, route: str = "rgb", rgb_length: int | None = None) -> torch.Tensor:
        if route == "rgbd":
            if self.has_fusion_expert:
                return self.experts["rgbd"](hidden_states)
            if rgb_length is None:
                raise ValueError(
                    "a fused sequence (`route='rgbd'`) needs `rgb_length`, the number of RGB tokens first."
                )
            rgb, depth = hidden_states[:, :rgb_length], hidden_states[:, rgb_length:]
            return torch.cat([self.experts["rgb"](rgb), self.experts["depth"](depth)], dim=1)
        if route not in ("rgb", "depth"):
            raise ValueError(f"`route` must be one of {EXPERT_ROUTES}, got {route!r}.")
        return self.experts[route](hidden_states)


# -------------------------------------------------------------------------------------------------------- outputs
@dataclass
class RgbdVlmoModelOutput(ModelOutput):
    r"""Output of [`RgbdVlmoModel`].

    Args:
        last_hidden_state (`torch.Tensor` (B, L_rgb + L_depth, D)): final-normed states of the fused sequence (RGB
            tokens first; L_rgb is 1 for a missing image); with `modalities="rgb"` / `"depth"` that stream's states.
        pooler_output (`torch.Tensor` (B, D)): the fused [CLS] (the RGB [CLS] after fusion), or the stream's [CLS].
        rgb_length (`int`): how many of the tokens are RGB.
        hidden_states (`tuple[torch.Tensor]`): the input of the first layer, then every layer's output (before the
            final LayerNorm), with `output_hidden_states=True`.
        attentions (`tuple[torch.Tensor]`): every layer's attention weights (eager attention, `output_attentions`).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    rgb_length: int | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class RgbdVlmoForPreTrainingOutput(RgbdAlbefForPreTrainingOutput):
    r"""Output of [`RgbdVlmoForPreTraining`]: the fields of [`RgbdAlbefForPreTrainingOutput`] (losses, ITM logits
    and labels of the 3B positive / hard-negative pairs, MDM logits and mask, ITC logits and embeddings, the indices
    of the drawn negatives). A step on one modality fills only its own fields: RGB alone `loss` = `loss_mim`,
    `mim_mask`; depth alone `loss` = `loss_mdm`, `mdm_logits`, `mdm_mask`.

    Args:
        loss_mim (`torch.Tensor` `()`): masked image modelling loss of an RGB-only step.
        mim_mask (`torch.Tensor` (B, N) bool): the RGB patches blanked in that step.
    """

    loss_mim: torch.Tensor | None = None
    mim_mask: torch.Tensor | None = None


@dataclass
class RgbdVlmoImageClassifierOutput(ModelOutput):
    r"""Output of [`RgbdVlmoForImageClassification`].

    Args:
        loss (`torch.Tensor` `()`): classification loss (plus the auxiliary heads', with `auxiliary_loss_weight`).
        logits (`torch.Tensor` (B, num_labels)): scores from the fused [CLS] (or the stream's [CLS]).
        rgb_logits / depth_logits (`torch.Tensor` (B, num_labels)): the auxiliary heads' scores on each
            modality's [CLS] of the fused sequence (None without auxiliary heads or for a missing modality).
        pooler_output (`torch.Tensor` (B, D)): the [CLS] the classifier reads.
        hidden_states / attentions: as [`RgbdVlmoModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rgb_logits: torch.Tensor | None = None
    depth_logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------- models
class RgbdVlmoPreTrainedModel(RgbdVisionPretrainedMixin, RgbdVitPreTrainedModel):
    """Initialisation (the ViT family's, plus projections and temperature), class attributes and
    `from_vision_pretrained` of the mixture-of-experts models."""

    config_class = RgbdVlmoConfig
    config: RgbdVlmoConfig
    auto_map_classes = {
        "AutoModel": "RgbdVlmoModel",
        "AutoModelForPreTraining": "RgbdVlmoForPreTraining",
        "AutoModelForImageClassification": "RgbdVlmoForImageClassification",
        "AutoModelForZeroShotImageClassification": "RgbdVlmoForRgbdMatching",
    }
    base_model_prefix = "rgbd_vlmo"
    main_input_name = "pixel_values"
    _can_record_outputs = {
        "hidden_states": RgbdVitLayer,
        "attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="attention"),
    }
    _keys_to_ignore_on_load_unexpected = [r"^itm_head\.", r"^mdm_head\.", r"^mim_head\."]

    def __init__(self, config: RgbdVlmoConfig, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        # the shared layers are plain modules reading the streams' configs: they follow this model's attention
        # implementation (transformers sets sub-configs itself only in `from_pretrained` / `_from_config`)
        for name in config.sub_configs:
            sub_config = getattr(config, name)
            if sub_config is not None and sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = config._attn_implementation

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RgbdVlmoModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            for projection in (module.rgb_projection, module.depth_projection):
                if projection is not None:
                    init.normal_(projection.weight, mean=0.0, std=self.config.rgb_config.hidden_size**-0.5)

    def _load_vision_towers(self, weights: dict[str, torch.Tensor], source: str) -> None:
        """The trunk and every expert from one ViT / CLIP-vision checkpoint: each stream's embeddings as a tower's
        (the depth patch projection from the mean of the RGB channels' weights), the shared attention and norms,
        and every expert of a layer (RGB, depth, fusion) a copy of that layer's LayerNorm and MLP."""
        trunk = self.base_model
        for modality in trunk.config.active_modalities:
            tower_config = getattr(trunk.config, f"{modality}_config")
            tower = RgbdVitModel(tower_config)
            _load_tower_weights(tower, weights, source)
            getattr(trunk, f"{modality}_embeddings").load_state_dict(tower.embeddings.state_dict())
            if modality != "rgb" and "rgb" in trunk.config.active_modalities:
                continue  # the trunk comes from the RGB tower (the same checkpoint weights)
            if trunk.pre_layernorm is not None:
                trunk.pre_layernorm.load_state_dict(tower.pre_layernorm.state_dict())
            trunk.layernorm.load_state_dict(tower.layernorm.state_dict())
            for layer, source_layer in zip(trunk.encoder.layers, tower.encoder.layers, strict=True):
                layer.layernorm_before.load_state_dict(source_layer.layernorm_before.state_dict())
                layer.attention.load_state_dict(source_layer.attention.state_dict())
                for expert in layer.mlp.experts.values():
                    expert.layernorm.load_state_dict(source_layer.layernorm_after.state_dict())
                    expert.mlp.load_state_dict(source_layer.mlp.state_dict())


class RgbdVlmoModel(RgbdDualTowerMixin, RgbdVlmoPreTrainedModel):
    """The mixture-of-modality-experts trunk: both streams' embeddings, the shared layers with their experts, the
    ITC projections and temperature. `get_rgb_features` / `get_depth_features` are the dual encoder's (one modality
    through its experts); `forward` is the fused pass (see the module docstring).
    """

    def __init__(self, config: RgbdVlmoConfig):
        super().__init__(config)
        active = config.active_modalities
        trunk_config = config.rgb_config
        self.rgb_embeddings = RgbdVitEmbeddings(config.rgb_config) if "rgb" in active else None
        self.depth_embeddings = RgbdVitEmbeddings(config.depth_config) if "depth" in active else None
        self.pre_layernorm = (
            nn.LayerNorm(trunk_config.hidden_size, eps=trunk_config.layer_norm_eps)
            if trunk_config.use_pre_layernorm
            else None
        )
        with_fusion = config.modalities == "rgbd"
        layers = [
            RgbdVitLayer(
                trunk_config,
                mlp=RgbdModalityExperts(trunk_config, with_fusion and index >= config.first_fusion_layer),
                mlp_includes_norm=True,
            )
            for index in range(trunk_config.num_hidden_layers)
        ]
        self.encoder = RgbdVitEncoder(trunk_config, layers=layers)
        self.layernorm = nn.LayerNorm(trunk_config.hidden_size, eps=trunk_config.layer_norm_eps)
        hidden = trunk_config.hidden_size
        # `aligned_fusion`: each depth token of the fused pass gets the RGB state of its grid place
        self.aligned_rgb_projection = nn.Linear(hidden, hidden) if with_fusion and config.aligned_fusion else None
        self.rgb_projection = nn.Linear(hidden, config.projection_dim, bias=False) if "rgb" in active else None
        self.depth_projection = nn.Linear(hidden, config.projection_dim, bias=False) if "depth" in active else None
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    # `RgbdDualTowerMixin` reads towers as `rgb_model` / `depth_model`; here the streams share one trunk
    rgb_model = None
    depth_model = None

    def get_input_embeddings(self) -> nn.Module:
        embeddings = self.rgb_embeddings if self.rgb_embeddings is not None else self.depth_embeddings
        return embeddings.patch_embeddings

    # ---------------------------------------------------------------------------- parts
    def embed(
        self,
        modality: str,
        values: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One stream's embeddings (B, 1 + N, D) and key mask (B, 1 + N) bool or None ([`RgbdVitEmbeddings`])."""
        embeddings = self.rgb_embeddings if modality == "rgb" else self.depth_embeddings
        if embeddings is None:
            raise ValueError(f"this model has no {modality} stream (`modalities={self.config.modalities!r}`).")
        return embeddings(values, depth_mask=depth_mask, interpolate_pos_encoding=interpolate_pos_encoding)

    def run_layers(
        self,
        states: torch.Tensor,
        key_mask: torch.Tensor | None,
        route: str,
        rgb_length: int | None = None,
        layer_slice: slice | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The shared layers `layer_slice` (default all) on token states (B, L, D) with key mask (B, L) or None,
        experts chosen by `route` ("rgb", "depth", or "rgbd" with the first `rgb_length` tokens RGB); no norms."""
        kwargs = {
            key: value for key, value in kwargs.items() if key not in ("return_dict", "interpolate_pos_encoding")
        }
        mlp_kwargs = {"route": route, "rgb_length": rgb_length}
        return self.encoder(
            states, attention_mask=key_mask, mlp_kwargs=mlp_kwargs, layer_slice=layer_slice, **kwargs
        ).last_hidden_state

    def run_trunk(
        self,
        embeddings: torch.Tensor,
        key_mask: torch.Tensor | None,
        route: str,
        rgb_length: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Every shared layer on a sequence of embeddings (B, L, D) (see `run_layers`); final-normed states."""
        if self.pre_layernorm is not None:
            embeddings = self.pre_layernorm(embeddings)
        return self.layernorm(self.run_layers(embeddings, key_mask, route, rgb_length, **kwargs))

    def lower_states(
        self, modality: str, embeddings: torch.Tensor, key_mask: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor:
        """One stream alone through the layers below the fusion layers (its own experts): (B, L, D), not normed.
        The unimodal pass continues with `upper_states`; with `aligned_fusion` the fused pass starts from here."""
        if self.pre_layernorm is not None:
            embeddings = self.pre_layernorm(embeddings)
        return self.run_layers(
            embeddings, key_mask, modality, layer_slice=slice(0, self.config.first_fusion_layer), **kwargs
        )

    def upper_states(
        self,
        states: torch.Tensor,
        key_mask: torch.Tensor | None,
        route: str,
        rgb_length: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The fusion layers (the top `num_fusion_layers`) on states from `lower_states`; final-normed."""
        upper = slice(self.config.first_fusion_layer, None)
        return self.layernorm(self.run_layers(states, key_mask, route, rgb_length, layer_slice=upper, **kwargs))

    def missing_rgb(self, batch_size: int, reference: torch.Tensor) -> torch.Tensor:
        """The RGB stream of a missing image: its [CLS] token alone, (B, 1, D)."""
        embeddings = self.rgb_embeddings
        token = embeddings.cls_token + embeddings.position_embeddings[:, :1] + embeddings.modality_type_embedding
        return token.to(reference.dtype).expand(batch_size, 1, -1)

    def fused_states(
        self,
        rgb_embeddings: torch.Tensor | None,
        depth_embeddings: torch.Tensor,
        depth_key_mask: torch.Tensor | None,
        drop_rgb: torch.Tensor | None = None,
        lower_states_given: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, int]:
        """The fused pass: `(states (B, L_rgb + L_depth, D), L_rgb)`. `rgb_embeddings` None: a missing image (its
        [CLS] alone); `drop_rgb` (B,) bool hides the RGB patches of dropped images from attention. With
        `config.aligned_fusion`, `lower_states_given=True` takes both streams' `lower_states` instead of their
        embeddings (pretraining reuses the unimodal passes')."""
        batch_size = depth_embeddings.shape[0]
        missing = rgb_embeddings is None
        if missing:
            rgb_embeddings = self.missing_rgb(batch_size, depth_embeddings)
            if lower_states_given:
                rgb_embeddings = self.lower_states("rgb", rgb_embeddings, None, **kwargs)
        rgb_length = rgb_embeddings.shape[1]
        rgb_key_mask = torch.ones(batch_size, rgb_length, dtype=torch.bool, device=depth_embeddings.device)
        if drop_rgb is not None:
            rgb_key_mask[:, 1:] = ~drop_rgb[:, None]
        if depth_key_mask is None:
            depth_key_mask = torch.ones(depth_embeddings.shape[:2], dtype=torch.bool, device=depth_embeddings.device)
        key_mask = torch.cat([rgb_key_mask, depth_key_mask], dim=1)
        if self.aligned_rgb_projection is None:
            sequence = torch.cat([rgb_embeddings, depth_embeddings.to(rgb_embeddings.dtype)], dim=1)
            return self.run_trunk(sequence, key_mask, "rgbd", rgb_length, **kwargs), rgb_length
        rgb_lower, depth_lower = rgb_embeddings, depth_embeddings
        if not lower_states_given:
            rgb_lower = self.lower_states("rgb", rgb_embeddings, None, **kwargs)
            depth_lower = self.lower_states("depth", depth_embeddings, depth_key_mask, **kwargs)
        if drop_rgb is not None:  # a dropped image is a missing one: its [CLS] state never saw the patches
            missing_cls = self.lower_states("rgb", self.missing_rgb(1, rgb_lower), None, **kwargs)
            first = torch.where(drop_rgb[:, None, None], missing_cls.to(rgb_lower.dtype), rgb_lower[:, :1])
            rgb_lower = torch.cat([first, rgb_lower[:, 1:]], dim=1)
        if not missing:  # each depth token gets the RGB state of its grid place (a dropped image: nothing)
            grids = (tuple(self.config.rgb_config.grid_size), tuple(self.config.depth_config.grid_size))
            aligned = place_on_grid(self.aligned_rgb_projection(rgb_lower), depth_lower.shape[1], *grids)
            if drop_rgb is not None:
                aligned = aligned.masked_fill(drop_rgb[:, None, None], 0.0)
            depth_lower = depth_lower + aligned.to(depth_lower.dtype)
        sequence = torch.cat([rgb_lower, depth_lower.to(rgb_lower.dtype)], dim=1)
        return self.upper_states(sequence, key_mask, "rgbd", rgb_length, **kwargs), rgb_length

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def encode_modality(
        self,
        modality: str,
        values: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """One modality alone through its experts: `last_hidden_state` (B, 1 + N, D) final-normed, `pooler_output`
        its [CLS] (not projected), `hidden_states` / `attentions` when asked for."""
        embeddings, key_mask = self.embed(modality, values, depth_mask, interpolate_pos_encoding)
        states = self.run_trunk(embeddings, key_mask, modality, **kwargs)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=states[:, 0])

    def _tower_features(
        self, modality: str, kwargs: dict[str, Any], **tower_inputs: Any
    ) -> BaseModelOutputWithPooling:
        """What `get_{modality}_features` returns: the modality's unimodal pass with its `pooler_output` projected."""
        input_name, values = next(iter(tower_inputs.items()))
        if values is None:
            raise ValueError(f"`{input_name}` is required to compute {modality} features.")
        if getattr(self, f"{modality}_embeddings") is None:
            raise ValueError(
                f"`get_{modality}_features` needs the {modality} stream, but `modalities={self.config.modalities!r}`."
            )
        outputs = self.encode_modality(
            modality,
            values,
            depth_mask=tower_inputs.get("depth_mask"),
            interpolate_pos_encoding=tower_inputs.get("interpolate_pos_encoding", False),
            **self._tower_kwargs(kwargs),
        )
        outputs.pooler_output = getattr(self, f"{modality}_projection")(outputs.pooler_output)
        return outputs

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdVlmoModelOutput:
        """The fused pass on RGB-D pairs (with `modalities="rgb"` / `"depth"`: that modality's unimodal pass).

        Args:
            pixel_values: (B, 3, H, W) normalised RGB, or None (missing: needs `config.modality_dropout`).
            depth_values: (B, C_d, H, W) depth representation, or None (missing: needs `config.modality_dropout`).
            depth_mask: (B, 1, H, W) bool, False at holes (None: every finite pixel valid).
            interpolate_pos_encoding: accept other sizes than the configured ones.
            kwargs: `output_hidden_states`, `output_attentions` (eager), `return_dict`.

        Returns:
            [`RgbdVlmoModelOutput`].
        """
        config = self.config
        if pixel_values is None and depth_values is None:
            raise ValueError("pass `pixel_values`, `depth_values` or both.")
        if config.modalities != "rgbd":
            modality = config.modalities
            values = pixel_values if modality == "rgb" else depth_values
            if values is None:
                raise ValueError(
                    f"`{'pixel_values' if modality == 'rgb' else 'depth_values'}` is required with `modalities={modality!r}`."
                )
            embeddings, key_mask = self.embed(modality, values, depth_mask, interpolate_pos_encoding)
            states = self.run_trunk(embeddings, key_mask, modality, **kwargs)
            return RgbdVlmoModelOutput(
                last_hidden_state=states,
                pooler_output=states[:, 0],
                rgb_length=states.shape[1] if modality == "rgb" else 0,
            )

        if (pixel_values is None or depth_values is None) and not any(p > 0 for p in config.modality_dropout):
            missing = "pixel_values" if pixel_values is None else "depth_values"
            raise ValueError(
                f"`{missing}` is None, but this model was not configured for a missing modality "
                "(`config.modality_dropout` is (0, 0)): pass both, or train with `modality_dropout` > 0."
            )
        check_same_batch(pixel_values, depth_values)
        reference = pixel_values if pixel_values is not None else depth_values
        batch_size = reference.shape[0]
        if depth_values is None:
            depth_values, depth_mask = empty_depth(config.depth_config, batch_size, reference)
        depth_mask = effective_depth_mask(depth_values, depth_mask)
        drop_rgb = None
        if self.training and pixel_values is not None and any(p > 0 for p in config.modality_dropout):
            drop_rgb, drop_depth = draw_modality_dropout(config.modality_dropout, batch_size, reference.device)
            depth_mask = depth_mask & ~drop_depth[:, None, None, None]
        rgb_embeddings = None
        if pixel_values is not None:
            rgb_embeddings, _ = self.embed("rgb", pixel_values, None, interpolate_pos_encoding)
        depth_embeddings, depth_key_mask = self.embed("depth", depth_values, depth_mask, interpolate_pos_encoding)
        states, rgb_length = self.fused_states(rgb_embeddings, depth_embeddings, depth_key_mask, drop_rgb, **kwargs)
        return RgbdVlmoModelOutput(last_hidden_state=states, pooler_output=states[:, 0], rgb_length=rgb_length)


class RgbdVlmoForPreTraining(RgbdVlmoPreTrainedModel):
    """ITC (unimodal passes) + ITM with hard negatives + MDM (the fused pass), with the fusion encoder's shared
    heads and losses. Each stream is embedded once per step (depth with the MDM patches as holes); those embeddings
    serve the unimodal passes and the fused pass of the B positive and 2B hard-negative pairs.

    VLMo's unimodal stages train on one modality: given `pixel_values` alone, masked image modelling on the RGB
    stream (`config.mim_mask_ratio` of the patches blanked, their pixels regressed by `mim_head`); given
    `depth_values` alone, masked depth modelling on the depth stream (the MDM head on the depth experts' states)."""

    pipeline_tasks = ("rgbd-matching",)

    def __init__(self, config: RgbdVlmoConfig):
        super().__init__(config)
        check_fused_config(config, "RgbdVlmoForPreTraining")
        self.rgbd_vlmo = RgbdVlmoModel(config)
        hidden = config.rgb_config.hidden_size
        self.itm_head = RgbdMatchingHead(hidden)
        self.mdm_head = RgbdMaskedDepthHead(hidden, config.depth_vocab_size)
        rgb_patch = config.rgb_config.patch_size_pair
        self.mim_head = nn.Linear(hidden, config.rgb_config.num_channels * rgb_patch[0] * rgb_patch[1])
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_vlmo.get_input_embeddings()

    def rgb_only_step(self, pixel_values: torch.Tensor, **kwargs: Any) -> RgbdVlmoForPreTrainingOutput:
        """Masked image modelling on RGB alone (VLMo's vision stage; BEiT's objective with SimMIM's pixel target):
        the blanked patches' pixels, normalised per patch, regressed from the RGB stream's token states."""
        config = self.config
        if config.mim_mask_ratio <= 0:
            raise ValueError(
                "`depth_values` is None: an RGB-only pretraining step is masked image modelling and needs "
                f"`config.mim_mask_ratio` > 0, got {config.mim_mask_ratio}."
            )
        stream = config.rgb_config
        check_masking_size(pixel_values, stream, "pixel_values", "rgb_config")
        batch_size = pixel_values.shape[0]
        num_patches = stream.grid_size[0] * stream.grid_size[1]
        every_patch = torch.zeros(batch_size, num_patches, dtype=torch.long, device=pixel_values.device)
        mim_mask = draw_mdm_mask(every_patch, float(config.mim_mask_ratio))  # every patch is a candidate
        blanked = patch_mask_to_pixels(mim_mask, stream.grid_size, stream.patch_size_pair)
        embeddings, _ = self.rgbd_vlmo.embed("rgb", pixel_values.masked_fill(blanked, 0.0))
        states = self.rgbd_vlmo.run_trunk(embeddings, None, "rgb", **kwargs)
        loss_mim = masked_image_loss(self.mim_head(states[:, 1:]), pixel_values, mim_mask, stream.patch_size_pair)
        return RgbdVlmoForPreTrainingOutput(loss=loss_mim, loss_mim=loss_mim, mim_mask=mim_mask)

    def depth_only_step(
        self,
        depth_values: torch.Tensor,
        depth_mask: torch.Tensor | None,
        depth_token_ids: torch.Tensor | None,
        **kwargs: Any,
    ) -> RgbdVlmoForPreTrainingOutput:
        """Masked depth modelling on depth alone (VLMo's language stage with depth words): the masked patches'
        depth words predicted from the depth stream's token states."""
        config = self.config
        if config.mdm_mask_ratio <= 0:
            raise ValueError(
                "`pixel_values` is None: a depth-only pretraining step is masked depth modelling and needs "
                f"`config.mdm_mask_ratio` > 0, got {config.mdm_mask_ratio}."
            )
        batch_size = depth_values.shape[0]
        depth_mask, depth_token_ids, mdm_mask = mask_depth_for_mdm(
            config, depth_values, depth_mask, depth_token_ids, batch_size
        )
        embeddings, key_mask = self.rgbd_vlmo.embed("depth", depth_values, depth_mask)
        states = self.rgbd_vlmo.run_trunk(embeddings, key_mask, "depth", **kwargs)
        mdm_logits = self.mdm_head(states[:, 1:])
        loss_mdm = masked_depth_loss(mdm_logits, depth_token_ids, mdm_mask)
        return RgbdVlmoForPreTrainingOutput(loss=loss_mdm, loss_mdm=loss_mdm, mdm_logits=mdm_logits, mdm_mask=mdm_mask)

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
    ) -> RgbdVlmoForPreTrainingOutput:
        """One pretraining step's losses on paired RGB-D batches (the arguments of
        [`RgbdAlbefForPreTraining.forward`]: `depth_token_ids` (B, N) required when `mdm_mask_ratio > 0`,
        `scene_ids` (B,) optional). One modality alone (the other None) is a unimodal stage's step:
        `pixel_values` alone masked image modelling (`rgb_only_step`), `depth_values` alone masked depth modelling
        (`depth_only_step`, `depth_token_ids` required).

        Returns:
            [`RgbdVlmoForPreTrainingOutput`].
        """
        config = self.config
        check_flag(kwargs.pop("return_dict", True), "return_dict")
        if (pixel_values is None) != (depth_values is None):
            check_same_batch(pixel_values, depth_values)
            if depth_values is None:
                return self.rgb_only_step(pixel_values, **kwargs)
            return self.depth_only_step(depth_values, depth_mask, depth_token_ids, **kwargs)
        batch_size = check_pretraining_batch(pixel_values, depth_values, "RgbdVlmoForPreTraining")
        scene_ids = check_scene_ids(scene_ids, batch_size)
        model = self.rgbd_vlmo

        depth_mask, depth_token_ids, mdm_mask = mask_depth_for_mdm(
            config, depth_values, depth_mask, depth_token_ids, batch_size
        )

        # each stream embedded once; unimodal passes for ITC
        rgb_embeddings, _ = model.embed("rgb", pixel_values)
        depth_embeddings, depth_key_mask = model.embed("depth", depth_values, depth_mask)
        if depth_key_mask is None:
            depth_key_mask = torch.ones(depth_embeddings.shape[:2], dtype=torch.bool, device=depth_embeddings.device)
        if config.aligned_fusion:  # the unimodal passes' lower layers are the fused pass's too
            rgb_lower = model.lower_states("rgb", rgb_embeddings, None, **kwargs)
            depth_lower = model.lower_states("depth", depth_embeddings, depth_key_mask, **kwargs)
            rgb_states = model.upper_states(rgb_lower, None, "rgb", **kwargs)
            depth_states = model.upper_states(depth_lower, depth_key_mask, "depth", **kwargs)
            fusion_rgb, fusion_depth = rgb_lower, depth_lower
        else:
            rgb_states = model.run_trunk(rgb_embeddings, None, "rgb", **kwargs)
            depth_states = model.run_trunk(depth_embeddings, depth_key_mask, "depth", **kwargs)
            fusion_rgb, fusion_depth = rgb_embeddings, depth_embeddings
        rgb_embeds = F.normalize(model.rgb_projection(rgb_states[:, 0]), dim=-1)
        depth_embeds = F.normalize(model.depth_projection(depth_states[:, 0]), dim=-1)
        all_scene_ids = gather_without_grad(scene_ids) if scene_ids is not None else None
        loss_itc, logits_per_rgb, logits_per_depth = global_contrastive_loss(
            rgb_embeds, depth_embeds, model.scaled_logit_scale(), scene_ids=scene_ids
        )

        # ITM: positives, (RGB i, hard negative depth), (hard negative RGB, depth i): one fused pass
        negative_depth, negative_rgb = sample_hard_negatives(logits_per_rgb, logits_per_depth, all_scene_ids)
        fused_rgb, fused_depth, fused_key_mask = matching_pairs(
            fusion_rgb, fusion_depth, depth_key_mask, negative_depth, negative_rgb
        )
        drop_rgb = draw_pretraining_rgb_dropout(config, self.training, batch_size, pixel_values.device)
        fused, rgb_length = model.fused_states(
            fused_rgb, fused_depth, fused_key_mask, matching_rgb_drop(drop_rgb), config.aligned_fusion, **kwargs
        )
        itm_logits = self.itm_head(fused[:, 0])
        itm_labels = matching_labels(batch_size, drop_rgb, itm_logits.device)
        loss_itm = matching_loss(itm_logits, itm_labels)

        # MDM on the positives' masked depth patches (the depth tokens after the depth [CLS])
        mdm_logits = self.mdm_head(fused[:batch_size, rgb_length + 1 :])
        loss_mdm = masked_depth_loss(mdm_logits, depth_token_ids, mdm_mask)
        return RgbdVlmoForPreTrainingOutput(
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


class RgbdVlmoForImageClassification(RgbdVlmoPreTrainedModel):
    """Classification on the fused [CLS] (with `modalities="rgb"` / `"depth"`: on that stream's [CLS]).

    `from_pretrained(pretraining_folder, num_labels=K)` loads the trunk; the pretraining heads are ignored and
    only the new head is reported missing.
    """

    pipeline_tasks = ("rgbd-image-classification", "rgbd-adversarial-attack")

    def __init__(self, config: RgbdVlmoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.rgbd_vlmo = RgbdVlmoModel(config)
        hidden = config.rgb_config.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, config.num_labels) if config.num_labels > 0 else nn.Identity()
        auxiliary = config.auxiliary_loss_weight > 0 and config.num_labels > 0
        self.rgb_classifier = nn.Linear(hidden, config.num_labels) if auxiliary else None
        self.depth_classifier = nn.Linear(hidden, config.num_labels) if auxiliary else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_vlmo.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdVlmoImageClassifierOutput:
        """Classify RGB-D pairs: the arguments of [`RgbdVlmoModel.forward`] and `labels` (B,) class indices in
        [0, num_labels) or -100 (or per `config.problem_type`). Returns [`RgbdVlmoImageClassifierOutput`] with
        `logits` (B, num_labels)."""
        outputs = self.rgbd_vlmo(
            pixel_values=pixel_values,
            depth_values=depth_values,
            depth_mask=depth_mask,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        batch_size = outputs.pooler_output.shape[0]
        if labels is not None:
            check_labels(labels, batch_size)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        rgb_logits = depth_logits = None
        if self.rgb_classifier is not None:
            states = outputs.last_hidden_state
            if pixel_values is not None:
                rgb_logits = self.rgb_classifier(self.dropout(states[:, 0]))
            if depth_values is not None:
                depth_logits = self.depth_classifier(self.dropout(states[:, outputs.rgb_length]))
        loss = None
        if labels is not None:
            labels = check_classification_labels(labels, logits, self.config, check_values=not self.training)
            loss = fused_classification_loss(
                self.loss_function, labels, logits, (rgb_logits, depth_logits), self.config
            )
        return RgbdVlmoImageClassifierOutput(
            loss=loss,
            logits=logits,
            rgb_logits=rgb_logits,
            depth_logits=depth_logits,
            pooler_output=outputs.pooler_output,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class RgbdVlmoForRgbdMatching(RgbdMatchingMixin, RgbdVlmoPreTrainedModel):
    """RGB-depth matching as [`RgbdAlbefForRgbdMatching`] (and `BlipForImageTextRetrieval`): `use_itm_head=True`
    gives `itm_score` (B, 2) ITM logits of the pairs (index 1 = matched), `use_itm_head=False` the
    (B_rgb, B_depth) cosine similarities of the unimodal ITC embeddings."""

    pipeline_tasks = ("rgbd-matching",)

    def __init__(self, config: RgbdVlmoConfig):
        super().__init__(config)
        check_fused_config(config, "RgbdVlmoForRgbdMatching")
        self.rgbd_vlmo = RgbdVlmoModel(config)
        self.itm_head = RgbdMatchingHead(config.rgb_config.hidden_size)
        self.post_init()

    _keys_to_ignore_on_load_unexpected = [r"^mdm_head\.", r"^mim_head\."]

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_vlmo.get_input_embeddings()


__all__ = [
    "RgbdModalityExpert",
    "RgbdModalityExperts",
    "RgbdVlmoForImageClassification",
    "RgbdVlmoForPreTraining",
    "RgbdVlmoForPreTrainingOutput",
    "RgbdVlmoForRgbdMatching",
    "RgbdVlmoImageClassifierOutput",
    "RgbdVlmoModel",
    "RgbdVlmoModelOutput",
    "RgbdVlmoPreTrainedModel",
]
