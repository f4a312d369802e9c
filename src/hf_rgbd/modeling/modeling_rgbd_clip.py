"""CLIP-style RGB-D dual encoder: [`RgbdClipModel`] (contrastive RGB <-> depth) and
[`RgbdClipForImageClassification`] (classification on the fused embeddings).

Both towers are [`RgbdVitModel`]s (see `modeling_rgbd_vit.py` for the building blocks and the depth-hole handling).
`from_vision_pretrained` initialises both towers from any HF ViT or CLIP(-vision) checkpoint.

Part of the flat `hf_rgbd.modeling` folder (single-dot relative imports only), so saved models carry it and load
with `trust_remote_code=True` where hf_rgbd is not installed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .configuration_rgbd_clip import RgbdClipConfig
from .configuration_rgbd_vit import RgbdTowerModality, RgbdVitConfig
from .modeling_rgbd_common import (
    RgbdAutoMapMixin,
    check_classification_labels,
    check_labels,
    check_same_batch,
    draw_modality_dropout,
    fused_classification_loss,
)
from .modeling_rgbd_pretraining import distributed_world, global_contrastive_loss
from .modeling_rgbd_vit import RgbdVitModel, resize_position_embeddings

logger = logging.get_logger(__name__)


#: upper clamp of `logit_scale` in the forward pass (temperature >= 0.01), as in CLIP's training recipe.
LOGIT_SCALE_MAX = math.log(100.0)


# -------------------------------------------------------------------------------------------------------- outputs
class _TwoTowerOutputMixin:
    """`to_tuple` and the `hidden_states` / `attentions` views shared by the dual-encoder outputs, which keep each
    tower's full output in `rgb_model_output` / `depth_model_output`."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...] | None:
        """Hidden states of the RGB tower followed by those of the depth tower (each `num_layers + 1`), or None."""
        return _concat_tower_field(self.rgb_model_output, self.depth_model_output, "hidden_states")

    @property
    def attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Attention weights of the RGB tower's layers followed by the depth tower's, or None."""
        return _concat_tower_field(self.rgb_model_output, self.depth_model_output, "attentions")


@dataclass
class RgbdClipOutput(_TwoTowerOutputMixin, ModelOutput):
    r"""Output of [`RgbdClipModel`].

    Args:
        loss (`torch.Tensor` of shape `()`, returned with `return_loss=True`): symmetric contrastive loss (ITC).
        logits_per_rgb (`torch.Tensor` (B_rgb, B_depth)): scaled cosine similarities RGB -> depth.
        logits_per_depth (`torch.Tensor` (B_depth, B_rgb)): the transpose, depth -> RGB.
        rgb_embeds (`torch.Tensor` (B, projection_dim)): L2-normalised projected RGB embeddings.
        depth_embeds (`torch.Tensor` (B, projection_dim)): L2-normalised projected depth embeddings.
        rgb_model_output / depth_model_output (`BaseModelOutputWithPooling`): the towers' outputs (pooler_output
            projected, as `get_rgb_features` / `get_depth_features` return them).
    """

    loss: torch.Tensor | None = None
    logits_per_rgb: torch.Tensor | None = None
    logits_per_depth: torch.Tensor | None = None
    rgb_embeds: torch.Tensor | None = None
    depth_embeds: torch.Tensor | None = None
    rgb_model_output: BaseModelOutputWithPooling | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None


def _concat_tower_field(
    rgb_output: BaseModelOutputWithPooling | None, depth_output: BaseModelOutputWithPooling | None, name: str
) -> tuple[torch.Tensor, ...] | None:
    parts = [getattr(output, name) for output in (rgb_output, depth_output) if output is not None]
    parts = [part for part in parts if part is not None]
    return tuple(tensor for part in parts for tensor in part) if parts else None


@dataclass
class RgbdClipImageClassifierOutput(_TwoTowerOutputMixin, ModelOutput):
    r"""Output of [`RgbdClipForImageClassification`].

    Args:
        loss (`torch.Tensor` of shape `()`, returned with `labels`): classification loss (plus the weighted
            auxiliary losses when `config.auxiliary_loss_weight > 0`).
        logits (`torch.Tensor` (B, num_labels)): classification scores.
        rgb_logits / depth_logits (`torch.Tensor` (B, num_labels)): scores of the per-modality auxiliary heads
            (`config.auxiliary_loss_weight > 0` only; None when that modality is not given).
        fused_embeds (`torch.Tensor` (B, n_modalities * projection_dim)): the classifier's input (projected
            embeddings of the used modalities, concatenated RGB first; a missing/dropped modality contributes its
            learned "missing" embedding).
        rgb_model_output / depth_model_output (`BaseModelOutputWithPooling`): the towers' full outputs (None when a
            modality is not used or not given).

    The properties `hidden_states` / `attentions` concatenate the towers' tuples (RGB first), as for
    [`RgbdClipOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rgb_logits: torch.Tensor | None = None
    depth_logits: torch.Tensor | None = None
    fused_embeds: torch.Tensor | None = None
    rgb_model_output: BaseModelOutputWithPooling | None = None
    depth_model_output: BaseModelOutputWithPooling | None = None


def rgbd_contrastive_loss(logits_per_rgb: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a (B, B) logit matrix whose diagonal holds the matching pairs:
    `(CE(logits, arange) + CE(logits.T, arange)) / 2`."""
    targets = torch.arange(logits_per_rgb.shape[0], device=logits_per_rgb.device)
    rgb_to_depth = F.cross_entropy(logits_per_rgb, targets)
    depth_to_rgb = F.cross_entropy(logits_per_rgb.t(), targets)
    return (rgb_to_depth + depth_to_rgb) / 2.0


# ---------------------------------------------------------------------------------------- loading vision weights
# Renames from the state dicts of transformers' own vision models (as loaded by the installed transformers, which
# already converts legacy checkpoint layouts) to an RgbdVitModel tower. `None` drops a key.
_VIT_TO_TOWER: tuple[tuple[str, str | None], ...] = (
    (r"^pooler\..*", None),
    (r"^layers\.", "encoder.layers."),
)
_CLIP_VISION_TO_TOWER: tuple[tuple[str, str | None], ...] = (
    (r"^embeddings\.position_ids$", None),
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^embeddings\.position_embedding\.weight$", "embeddings.position_embeddings"),
    (r"^pre_layrnorm\.", "pre_layernorm."),
    (r"\.self_attn\.out_proj\.", ".attention.o_proj."),
    (r"\.self_attn\.", ".attention."),
    (r"\.layer_norm1\.", ".layernorm_before."),
    (r"\.layer_norm2\.", ".layernorm_after."),
    (r"^post_layernorm\.", "layernorm."),
)
_KEY_MAPPINGS = {"vit": _VIT_TO_TOWER, "clip_vision_model": _CLIP_VISION_TO_TOWER}
# Tower parameters no HF vision checkpoint has: they keep their initialisation (modality-type embedding: zeros).
_TOWER_ONLY_KEYS = (
    "embeddings.modality_type_embedding",
    "embeddings.missing_depth_embedding",
    "embeddings.partial_hole_embedding",
)


def _tower_kwargs_from_vision_config(vision_config: Any) -> dict[str, Any]:
    """RgbdVitConfig fields equivalent to a transformers `ViTConfig` or `CLIPVisionConfig`."""
    model_type = vision_config.model_type
    kwargs = dict(
        hidden_size=vision_config.hidden_size,
        num_hidden_layers=vision_config.num_hidden_layers,
        num_attention_heads=vision_config.num_attention_heads,
        intermediate_size=vision_config.intermediate_size,
        hidden_act=vision_config.hidden_act,
        layer_norm_eps=float(vision_config.layer_norm_eps),
        image_size=vision_config.image_size,
        patch_size=vision_config.patch_size,
        initializer_range=float(getattr(vision_config, "initializer_range", 0.02)),
    )
    if model_type == "vit":
        kwargs.update(
            qkv_bias=bool(vision_config.qkv_bias),
            patch_embedding_bias=True,
            use_pre_layernorm=False,
            hidden_dropout_prob=float(vision_config.hidden_dropout_prob),
            attention_probs_dropout_prob=float(vision_config.attention_probs_dropout_prob),
        )
    else:  # clip_vision_model
        kwargs.update(
            qkv_bias=True,
            patch_embedding_bias=False,
            use_pre_layernorm=True,
            attention_probs_dropout_prob=float(vision_config.attention_dropout or 0.0),
        )
    for name in ("image_size", "patch_size"):
        if isinstance(kwargs[name], (list, tuple)):
            kwargs[name] = [int(v) for v in kwargs[name]]
    return kwargs


def _map_vision_state_dict(state_dict: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Rename a ViTModel / CLIPVisionModel state dict to RgbdVitModel names."""
    mapped = {}
    for key, value in state_dict.items():
        new_key: str | None = key
        for pattern, replacement in _KEY_MAPPINGS[model_type]:
            if re.search(pattern, new_key):
                if replacement is None:
                    new_key = None
                    break
                new_key = re.sub(pattern, replacement, new_key)
        if new_key is not None:
            mapped[new_key] = value
    return mapped


def _load_tower_weights(tower: RgbdVitModel, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy `weights` (RgbdVitModel names, from an RGB checkpoint) into `tower`. A depth tower's patch projection
    gets the mean of the RGB channels' weights, repeated for each depth channel; position embeddings are resized
    to the tower's grid."""
    config: RgbdVitConfig = tower.config
    own = tower.state_dict()
    prepared = {}
    for key, value in weights.items():
        if key not in own:
            raise ValueError(f"{source}: checkpoint weight {key!r} has no counterpart in the RGB-D tower.")
        target = own[key]
        if key == "embeddings.patch_embeddings.projection.weight" and config.modality == "depth":
            value = value.mean(dim=1, keepdim=True).repeat(1, target.shape[1], 1, 1)
        elif key == "embeddings.cls_token":
            value = value.reshape(target.shape)
        elif key == "embeddings.position_embeddings":
            value = value.reshape(1, -1, value.shape[-1])
            if value.shape != target.shape:
                old_patches = value.shape[1] - 1
                side = int(round(math.sqrt(old_patches)))
                if side * side != old_patches:
                    raise ValueError(
                        f"{source}: cannot resize non-square position embeddings ({old_patches} patches)."
                    )
                value = resize_position_embeddings(value, (side, side), config.grid_size)
        if value.shape != target.shape:
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(value.shape)}, the tower expects {tuple(target.shape)} "
                "(did an override change `hidden_size`, `patch_size` or the number of layers?)."
            )
        prepared[key] = value.to(target.dtype)
    missing = set(own) - set(prepared)
    unexpected_missing = sorted(k for k in missing if k not in _TOWER_ONLY_KEYS)
    if unexpected_missing:
        raise ValueError(f"{source}: the checkpoint does not provide {unexpected_missing}.")
    with torch.no_grad():
        tower.load_state_dict(prepared, strict=False)
        tower.embeddings.modality_type_embedding.zero_()


# --------------------------------------------------------------------------------------------------------- models
class RgbdVisionPretrainedMixin:
    """`from_vision_pretrained` for every family with an RGB and a depth [`RgbdVitModel`] tower (held by
    `model.base_model` as `rgb_model` / `depth_model`, with `rgb_projection` / `depth_projection` / `logit_scale`).
    A family adds config fields derived from the checkpoint with `_vision_pretrained_config_fields` and finishes
    the loaded model in `_vision_weights_loaded`."""

    @classmethod
    def _vision_pretrained_config_fields(cls, tower_kwargs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """Config fields a family derives from the checkpoint's tower fields in `from_vision_pretrained` (none here)."""
        return {}

    def _vision_weights_loaded(self) -> None:
        """Called by `from_vision_pretrained` once the towers hold the checkpoint's weights (nothing to do here)."""

    def _load_vision_towers(self, weights: dict[str, torch.Tensor], source: str) -> None:
        """Copy the checkpoint's tower weights (mapped to [`RgbdVitModel`] names) into `base_model.rgb_model` and
        `base_model.depth_model` (those built)."""
        for tower in (self.base_model.rgb_model, self.base_model.depth_model):
            if tower is not None:
                _load_tower_weights(tower, weights, source)

    @classmethod
    def from_vision_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        *,
        return_processor: bool = False,
        pretrained_kwargs: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> Any:
        """Build the model with both towers initialised from an HF ViT or CLIP(-vision) checkpoint.

        The architecture of both towers follows the checkpoint (`vit`, `clip_vision_model`, or the vision part of
        `clip`); all weights are copied, except the depth tower's patch projection, which gets the mean of the RGB
        channels' weights (repeated for each depth channel, e.g. 3 for HHA). Modality-type embeddings start at zero,
        so the RGB tower computes exactly what the checkpoint computes. From a full CLIP checkpoint the visual
        projection initialises both projections and `logit_scale` is copied (if `projection_dim` is not overridden).

        Args:
            pretrained_model_name_or_path: hub id or local folder (anything `AutoModel.from_pretrained` accepts).
            return_processor: also return an `RgbdProcessor` with the checkpoint's `image_mean` / `image_std`
                (see `hf_rgbd.processors.processor_from_vision_pretrained`); needs hf_rgbd.
            pretrained_kwargs: passed to `AutoConfig` / `AutoModel` / the processor lookup (`revision`, `cache_dir`,
                `local_files_only`, `token`, ...).
            config_overrides: fields of the family's config (`RgbdClipConfig`, `RgbdAlbefConfig`) (`projection_dim`, `num_labels`, `modalities`, ...);
                `rgb_config` / `depth_config` dicts update the towers (e.g. `depth_config={"num_channels": 3}`,
                `rgb_config={"image_size": 64}`: position embeddings are resized).

        Returns:
            the model (in eval mode, like `from_pretrained`), or `(model, processor)` with `return_processor=True`.
        """
        from transformers import AutoConfig, AutoModel

        pretrained_kwargs = dict(pretrained_kwargs or {})
        source_config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **pretrained_kwargs)
        is_full_clip = source_config.model_type == "clip"
        vision_config = source_config.vision_config if is_full_clip else source_config
        if vision_config.model_type not in _KEY_MAPPINGS:
            raise ValueError(
                f"`pretrained_model_name_or_path` must be a ViT or CLIP(-vision) checkpoint, got model_type "
                f"{source_config.model_type!r} (supported: 'vit', 'clip_vision_model', 'clip')."
            )
        tower_kwargs = _tower_kwargs_from_vision_config(vision_config)
        rgb_overrides = dict(config_overrides.pop("rgb_config", None) or {})
        depth_overrides = dict(config_overrides.pop("depth_config", None) or {})
        if is_full_clip:
            config_overrides.setdefault("projection_dim", source_config.projection_dim)
        config_overrides.update(cls._vision_pretrained_config_fields(tower_kwargs, config_overrides))
        config = cls.config_class(
            rgb_config={**tower_kwargs, **rgb_overrides, "modality": "rgb", "num_channels": 3},
            depth_config={"num_channels": 1, **tower_kwargs, **depth_overrides, "modality": "depth"},
            **config_overrides,
        )
        for name, tower_config in (("rgb_config", config.rgb_config), ("depth_config", config.depth_config)):
            if tower_config.patch_embedding_type != "linear":
                raise ValueError(
                    f"`{name}` asks for patch_embedding_type={tower_config.patch_embedding_type!r}, but ViT / CLIP "
                    "checkpoints hold a linear patch projection; keep 'linear' with from_vision_pretrained."
                )
        model = cls(config)

        source_model = AutoModel.from_pretrained(pretrained_model_name_or_path, **pretrained_kwargs)
        vision_model = source_model.vision_model if is_full_clip else source_model
        weights = _map_vision_state_dict(vision_model.state_dict(), vision_config.model_type)
        clip_model = model.base_model  # the module holding the towers, projections and logit_scale
        model._load_vision_towers(weights, str(pretrained_model_name_or_path))
        if is_full_clip and config.projection_dim == source_config.projection_dim:
            with torch.no_grad():
                for projection in (clip_model.rgb_projection, clip_model.depth_projection):
                    if (
                        projection is not None
                        and projection.weight.shape == source_model.visual_projection.weight.shape
                    ):
                        projection.weight.copy_(source_model.visual_projection.weight)
                clip_model.logit_scale.copy_(source_model.logit_scale)
        del source_model
        model._vision_weights_loaded()
        model.eval()
        if return_processor:
            try:
                from hf_rgbd.processors import processor_from_vision_pretrained
            except ImportError as error:  # the copied remote code runs without hf_rgbd
                raise ImportError(
                    "`return_processor=True` (processor_from_vision_pretrained) needs the hf_rgbd package."
                ) from error
            processor = processor_from_vision_pretrained(
                pretrained_model_name_or_path, image_size=config.rgb_config.image_size, **pretrained_kwargs
            )
            return model, processor
        return model


class RgbdClipPreTrainedModel(RgbdVisionPretrainedMixin, RgbdAutoMapMixin, PreTrainedModel):
    """Initialisation, class attributes and `from_vision_pretrained` shared by the dual-encoder models."""

    config_class = RgbdClipConfig
    auto_map_classes = {
        "AutoModel": "RgbdClipModel",
        "AutoModelForImageClassification": "RgbdClipForImageClassification",
        "AutoModelForZeroShotImageClassification": "RgbdClipModel",
    }
    config: RgbdClipConfig
    base_model_prefix = "rgbd_clip"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RgbdVitEmbeddings", "RgbdVitLayer"]
    _supports_sdpa = True
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RgbdClipModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            for projection, tower in (
                (module.rgb_projection, module.rgb_model),
                (module.depth_projection, module.depth_model),
            ):
                if projection is not None:
                    init.normal_(projection.weight, mean=0.0, std=tower.config.hidden_size**-0.5)
        elif isinstance(module, RgbdClipForImageClassification):
            if module.missing_rgb_embedding is not None:
                init.zeros_(module.missing_rgb_embedding)
                init.zeros_(module.missing_depth_embedding)

class RgbdDualTowerMixin:
    """The two towers, their projections and the ITC temperature of a dual-encoder-like model (attributes
    `rgb_model`, `rgb_projection`, `depth_model`, `depth_projection`, `logit_scale`; a tower is None when
    `config.modalities` leaves it out): `get_rgb_features`, `get_depth_features` and `scaled_logit_scale`, as
    `CLIPModel` has them. Shared by the dual encoder and the fusion encoder."""

    def get_input_embeddings(self) -> nn.Module:
        tower = self.rgb_model if self.rgb_model is not None else self.depth_model
        return tower.get_input_embeddings()

    def _tower_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """`kwargs` for a tower call: an output flag this model's config asks for is passed on unless the caller set
        it (a tower's `capture_outputs` reads only the tower's config)."""
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        for flag in ("output_hidden_states", "output_attentions"):
            if flag not in kwargs and getattr(self.config, flag, False):
                kwargs[flag] = True
        return kwargs

    def _tower_features(
        self, modality: RgbdTowerModality, kwargs: dict[str, Any], **tower_inputs: Any
    ) -> BaseModelOutputWithPooling:
        """What `get_{modality}_features` returns: the tower's output on `tower_inputs` (the first one is required)
        with its `pooler_output` projected."""
        if modality == "rgb":
            tower, projection, article, label = self.rgb_model, self.rgb_projection, "an", "RGB"
        else:
            tower, projection, article, label = self.depth_model, self.depth_projection, "a", "depth"
        if tower is None:
            raise ValueError(
                f"`get_{modality}_features` needs {article} {label} tower, but "
                f"`modalities={self.config.modalities!r}`."
            )
        input_name, values = next(iter(tower_inputs.items()))
        if values is None:
            raise ValueError(f"`{input_name}` is required to compute {label} features.")
        outputs = tower(**tower_inputs, return_dict=True, **self._tower_kwargs(kwargs))
        outputs.pooler_output = projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_rgb_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """RGB tower output whose `pooler_output` is the projected (not normalised) embedding (B, projection_dim),
        as `CLIPModel.get_image_features` returns it. `pixel_values`: (B, 3, H, W)."""
        return self._tower_features(
            "rgb", kwargs, pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        )

    @can_return_tuple
    def get_depth_features(
        self,
        depth_values: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Depth tower output whose `pooler_output` is the projected (not normalised) embedding
        (B, projection_dim). `depth_values`: (B, C_d, H, W); `depth_mask`: (B, 1, H, W) bool, False at holes."""
        return self._tower_features(
            "depth",
            kwargs,
            depth_values=depth_values,
            depth_mask=depth_mask,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )

    def scaled_logit_scale(self) -> torch.Tensor:
        """`exp(logit_scale)` with `logit_scale` clamped to [0, log(100)] (gradient zero outside)."""
        return self.logit_scale.clamp(0.0, LOGIT_SCALE_MAX).exp()


class RgbdClipModel(RgbdDualTowerMixin, RgbdClipPreTrainedModel):
    """CLIP-style dual encoder: an RGB tower and a depth tower, linear projections to a shared space, a learnable
    temperature and the symmetric contrastive loss (ITC). With `modalities="rgb"` / `"depth"` only that tower and
    its projection are built, and the forward pass returns that modality's embeddings only (no logits, no loss)."""

    pipeline_tasks = ("rgbd-matching",)

    def __init__(self, config: RgbdClipConfig):
        super().__init__(config)
        active = config.active_modalities
        self.rgb_model = RgbdVitModel._from_config(config.rgb_config) if "rgb" in active else None
        self.rgb_projection = (
            nn.Linear(config.rgb_config.hidden_size, config.projection_dim, bias=False) if "rgb" in active else None
        )
        self.depth_model = RgbdVitModel._from_config(config.depth_config) if "depth" in active else None
        self.depth_projection = (
            nn.Linear(config.depth_config.hidden_size, config.projection_dim, bias=False)
            if "depth" in active
            else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdClipOutput:
        """Contrastive RGB <-> depth scores for paired batches (pair i is RGB i with depth i).

        Args:
            pixel_values: (B, 3, H, W) normalised RGB.
            depth_values: (B, C_d, H, W) depth representation.
            depth_mask: (B, 1, H, W) bool, False at depth holes (None: all valid).
            return_loss: compute the symmetric contrastive loss (default True, so `Trainer` gets a loss).
            interpolate_pos_encoding: accept sizes other than the configured image sizes.
            kwargs: `output_hidden_states`, `output_attentions` (eager attention only), `return_dict`; the output
                flags default to this model's config, then to the towers' configs.

        Returns:
            [`RgbdClipOutput`]; `logits_per_rgb` (B, B) = exp(clamped logit_scale) * cos(rgb_i, depth_j). With
            `modalities="rgb"` / `"depth"` only that modality is encoded (the other's inputs are ignored) and the
            logits and loss are None.
        """
        active = self.config.active_modalities
        if "rgb" in active and pixel_values is None:
            raise ValueError("`pixel_values` is required by RgbdClipModel.forward.")
        if "depth" in active and depth_values is None:
            raise ValueError("`depth_values` is required by RgbdClipModel.forward.")
        check_same_batch(pixel_values if "rgb" in active else None, depth_values if "depth" in active else None)
        kwargs.update(interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        rgb_outputs = self.get_rgb_features(pixel_values, **kwargs) if "rgb" in active else None
        depth_outputs = self.get_depth_features(depth_values, depth_mask, **kwargs) if "depth" in active else None
        rgb_embeds = F.normalize(rgb_outputs.pooler_output, dim=-1) if rgb_outputs is not None else None
        depth_embeds = F.normalize(depth_outputs.pooler_output, dim=-1) if depth_outputs is not None else None
        logits_per_rgb = logits_per_depth = loss = None
        if rgb_embeds is not None and depth_embeds is not None:
            logits_per_rgb = torch.matmul(rgb_embeds, depth_embeds.t()) * self.scaled_logit_scale()
            logits_per_depth = logits_per_rgb.t()
            if return_loss:
                if distributed_world()[1] > 1:  # the global batch: embeddings gathered with gradient
                    loss = global_contrastive_loss(rgb_embeds, depth_embeds, self.scaled_logit_scale())[0]
                else:
                    loss = rgbd_contrastive_loss(logits_per_rgb)
        return RgbdClipOutput(
            loss=loss,
            logits_per_rgb=logits_per_rgb,
            logits_per_depth=logits_per_depth,
            rgb_embeds=rgb_embeds,
            depth_embeds=depth_embeds,
            rgb_model_output=rgb_outputs,
            depth_model_output=depth_outputs,
        )


class RgbdClipForImageClassification(RgbdClipPreTrainedModel):
    """Classification on the fused dual-encoder embeddings.

    The classifier reads the projected embeddings of the used modalities, concatenated (RGB first). With
    `modalities="rgbd"`, a missing input (`pixel_values=None` or `depth_values=None`) or a modality dropped in
    training (`config.modality_dropout`, per sample, never both) is replaced by a learned missing-modality
    embedding (zeros at init), so e.g. `depth_values=None` at inference gives a prediction from RGB alone (learned
    when trained with modality dropout). With `modalities="rgb"` / `"depth"` only that tower is built and the other
    modality's inputs are ignored. With `config.auxiliary_loss_weight > 0` (fused only), each modality also has an
    auxiliary linear head on its own embedding (`rgb_classifier`, `depth_classifier`) whose losses are added to the
    fused loss (training signal only: `logits` is always the fused classifier's).
    """

    pipeline_tasks = ("rgbd-image-classification", "rgbd-adversarial-attack")

    def __init__(self, config: RgbdClipConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.rgbd_clip = RgbdClipModel(config)
        projection_dim = config.projection_dim
        if config.modalities == "rgbd":
            self.missing_rgb_embedding = nn.Parameter(torch.zeros(projection_dim))
            self.missing_depth_embedding = nn.Parameter(torch.zeros(projection_dim))
        else:
            self.missing_rgb_embedding = None
            self.missing_depth_embedding = None
        self.dropout = nn.Dropout(config.classifier_dropout)
        fused_dim = projection_dim * len(config.active_modalities)
        self.classifier = nn.Linear(fused_dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        if config.auxiliary_loss_weight > 0 and config.num_labels > 0:
            self.rgb_classifier = nn.Linear(projection_dim, config.num_labels)
            self.depth_classifier = nn.Linear(projection_dim, config.num_labels)
        else:
            self.rgb_classifier = None
            self.depth_classifier = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rgbd_clip.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RgbdClipImageClassifierOutput:
        """Classify RGB-D pairs.

        Args:
            pixel_values: (B, 3, H, W); required with `modalities="rgb"`, optional with `"rgbd"`.
            depth_values: (B, C_d, H, W); required with `modalities="depth"`, optional with `"rgbd"`.
            depth_mask: (B, 1, H, W) bool, False at depth holes.
            labels: (B,) class indices in [0, num_labels) or -100 (ignored; all ignored gives loss 0), or per
                `config.problem_type`; gives `loss`. Checked as in the CNN family (`check_classification_labels`).
            interpolate_pos_encoding: accept sizes other than the configured image sizes.
            kwargs: `output_hidden_states`, `output_attentions` (eager attention only), `return_dict`; the output
                flags default to this model's config, then to the towers' configs.

        Returns:
            [`RgbdClipImageClassifierOutput`] with `logits` (B, num_labels).
        """
        modalities = self.config.modalities
        if modalities == "rgb" and pixel_values is None:
            raise ValueError("`pixel_values` is required with `modalities='rgb'`.")
        if modalities == "depth" and depth_values is None:
            raise ValueError("`depth_values` is required with `modalities='depth'`.")
        use_rgb = modalities in ("rgbd", "rgb") and pixel_values is not None
        use_depth = modalities in ("rgbd", "depth") and depth_values is not None
        if not use_rgb and not use_depth:
            raise ValueError("pass `pixel_values`, `depth_values` or both.")
        check_same_batch(pixel_values if use_rgb else None, depth_values if use_depth else None)
        if labels is not None:
            check_labels(labels, (pixel_values if use_rgb else depth_values).shape[0])

        kwargs.update(interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        rgb_outputs = self.rgbd_clip.get_rgb_features(pixel_values, **kwargs) if use_rgb else None
        depth_outputs = self.rgbd_clip.get_depth_features(depth_values, depth_mask, **kwargs) if use_depth else None
        reference = rgb_outputs if rgb_outputs is not None else depth_outputs
        batch_size, device = reference.pooler_output.shape[0], reference.pooler_output.device

        parts = []
        if modalities == "rgbd":
            rgb_embeds = rgb_outputs.pooler_output if use_rgb else self.missing_rgb_embedding.expand(batch_size, -1)
            depth_embeds = (
                depth_outputs.pooler_output if use_depth else self.missing_depth_embedding.expand(batch_size, -1)
            )
            p_rgb, p_depth = self.config.modality_dropout
            if self.training and use_rgb and use_depth and (p_rgb > 0 or p_depth > 0):
                drop_rgb, drop_depth = draw_modality_dropout(self.config.modality_dropout, batch_size, device)
                rgb_embeds = torch.where(drop_rgb.unsqueeze(-1), self.missing_rgb_embedding, rgb_embeds)
                depth_embeds = torch.where(drop_depth.unsqueeze(-1), self.missing_depth_embedding, depth_embeds)
            parts = [rgb_embeds, depth_embeds]
        else:
            parts = [reference.pooler_output]
        fused_embeds = torch.cat(parts, dim=-1)
        logits = self.classifier(self.dropout(fused_embeds))
        # auxiliary heads read each tower's own embedding (never the "missing" stand-in of modality dropout)
        rgb_logits = depth_logits = None
        if self.rgb_classifier is not None:
            rgb_logits = self.rgb_classifier(self.dropout(rgb_outputs.pooler_output)) if use_rgb else None
            depth_logits = self.depth_classifier(self.dropout(depth_outputs.pooler_output)) if use_depth else None

        loss = None
        if labels is not None:
            labels = check_classification_labels(labels, logits, self.config, check_values=not self.training)
            loss = fused_classification_loss(
                self.loss_function, labels, logits, (rgb_logits, depth_logits), self.config
            )
        return RgbdClipImageClassifierOutput(
            loss=loss,
            logits=logits,
            rgb_logits=rgb_logits,
            depth_logits=depth_logits,
            fused_embeds=fused_embeds,
            rgb_model_output=rgb_outputs,
            depth_model_output=depth_outputs,
        )


__all__ = [
    "LOGIT_SCALE_MAX",
    "RgbdDualTowerMixin",
    "RgbdVisionPretrainedMixin",
    "RgbdClipForImageClassification",
    "RgbdClipImageClassifierOutput",
    "RgbdClipModel",
    "RgbdClipOutput",
    "RgbdClipPreTrainedModel",
    "rgbd_contrastive_loss",
]
