"""CNN fusion family: early, feature-level and multi-stage RGB-D fusion on ResNet streams.

Streams reuse transformers' ResNet building blocks (`ResNetConvLayer`, `ResNetStage`) with the same parameter names
as `transformers.ResNetModel`, so an HF ResNet checkpoint maps onto the RGB stream key for key
(`RgbdCnnModel.from_resnet_pretrained`).

`RgbdCnnModel` builds the streams and fusion layers of its `config.fusion_type` (or the single stream of
`config.modalities` `"rgb"` / `"depth"`) and one fusion module that runs them: [`RgbdCnnEarlyFusion`],
[`RgbdCnnFeatureFusion`], [`RgbdCnnMultiStageFusion`] or [`RgbdCnnSingleModality`], all called the same way. The
streams and fusion layers stay attributes of the model (their state-dict names are those of saved checkpoints);
the fusion module holds no weights.

Feature maps are recorded with transformers' output capturing (`_can_record_outputs`): `hidden_states` are the
stem and stage outputs of `RgbdCnnStage` (the stream that carries the output) or, for multi-stage fusion, the
outputs of every `RgbdCnnAttentionFusion`; `depth_hidden_states` those of the two-stream fusions' depth stream,
whose stages (like the multi-stage RGB stream's) are `RgbdCnnBranchStage`.

How missing inputs are handled (identically for a modality dropped by `config.modality_dropout` in training and
for `pixel_values=None` / `depth_values=None` at inference):

- early fusion: the missing channels are zeros; a missing depth map is a map that is all holes (zero depth, mask
  channel 0), so the network sees "no valid depth anywhere";
- feature-level fusion: the missing stream's final feature map is replaced by a learned "missing" embedding
  (`missing_rgb_embedding` / `missing_depth_embedding`, one vector per modality, broadcast over positions);
- multi-stage fusion: the missing modality contributes nothing to the attention-weighted sums (depth at every
  fusion, RGB at the stem fusion, after which the RGB stream carries the fused features).

Inputs of any floating dtype run in the model's dtype. Depth input (`_prepare_inputs`): holes (`depth_mask` False,
and every NaN / inf value whatever the mask says) never reach the network
with their stored values. Each depth channel is standardised over its valid pixels (`normalize_depth`, holes -> 0),
holes are then filled from nearby valid depth (`fill_depth_holes`), and with `use_depth_mask` the mask is one more
input channel, so the network still knows which values were measured.

This file is copied next to the weights by `save_pretrained`: it imports only transformers, torch and the
configuration and common files beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.resnet.modeling_resnet import ResNetConvLayer, ResNetStage
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_rgbd_cnn import RgbdCnnConfig
from .modeling_rgbd_common import (
    RgbdAutoMapMixin,
    check_batch_norm_batch,
    check_classification_labels,
    check_image_tensor,
    classification_loss,
    draw_modality_dropout,
    effective_depth_mask,
)

logger = logging.get_logger(__name__)

HOLE_FILL_LEVELS = 5
# Hub / cache arguments `from_resnet_pretrained` passes to `ResNetModel.from_pretrained`; the rest configure the model.
_LOADING_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
# Backbone fields shared with `transformers.ResNetConfig`.
_RESNET_FIELDS = (
    "num_channels",
    "embedding_size",
    "hidden_sizes",
    "depths",
    "layer_type",
    "hidden_act",
    "downsample_in_first_stage",
    "downsample_in_bottleneck",
)


# ------------------------------------------------------------------------------------------------------ outputs
@dataclass
class RgbdCnnModelOutput(ModelOutput):
    r"""
    Output of [`RgbdCnnModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, fused_hidden_size, height / 32, width / 32)`):
            fused feature map after the last stage (`config.fused_hidden_size` channels; the stride is 32 with the
            default `downsample_in_first_stage=False` and four stages, `4 * 2 ** (num_stages - 1)` in general).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, fused_hidden_size)`):
            global average of `last_hidden_state`: the fused RGB-D embedding.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            `1 + num_stages` maps `(batch_size, channels_i, height_i, width_i)` (stem, then every stage) of the
            path that produces `last_hidden_state`: the single stream (`modalities` `"rgb"` / `"depth"`, early
            fusion), the fused stream after every fusion (multi-stage), or the RGB stream (feature-level fusion;
            `None` when RGB is missing for the whole batch).
        depth_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            the depth stream's maps (stem, then every stage) for the two-stream fusions, when depth is given.
        modality_mask (`torch.BoolTensor` of shape `(batch_size, 2)`):
            per sample, whether RGB (column 0) and depth (column 1) were used: False where the input was missing,
            dropped by modality dropout, or not part of `config.modalities`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    depth_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    modality_mask: torch.BoolTensor | None = None


@dataclass
class RgbdCnnImageClassifierOutput(ModelOutput):
    r"""
    Output of [`RgbdCnnForImageClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            classification loss (cross-entropy for integer labels).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): classification scores.
        hidden_states, depth_hidden_states, modality_mask: as in [`RgbdCnnModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    depth_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    modality_mask: torch.BoolTensor | None = None


# ------------------------------------------------------------------------------------------------------ blocks
class RgbdCnnDepthNorm(nn.Module):
    """Per-channel standardisation of depth over its valid pixels, then a learned scale and shift; holes -> 0.

    Like `BatchNorm2d` (batch statistics in training, running statistics with momentum 0.1 in eval), except that the
    statistics ignore holes and holes come out as exactly 0 (so a map without valid depth is all zeros).
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.running_mean = nn.Buffer(torch.zeros(channels))
        self.running_var = nn.Buffer(torch.ones(channels))

    def forward(self, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """depth (B, C, H, W), mask (B, 1, H, W) bool -> (B, C, H, W), 0 where `mask` is False."""
        mean, var = self.running_mean, self.running_var
        if self.training:
            # batch statistics when more than one pixel is valid, running ones otherwise; decided with torch.where,
            # so that no host synchronisation sits on the training path
            count = mask.to(depth.dtype).sum()
            enough = count > 1
            zero = torch.zeros((), dtype=depth.dtype, device=depth.device)
            safe_count = count.clamp_min(1)
            batch_mean = torch.where(mask, depth, zero).sum(dim=(0, 2, 3)) / safe_count
            centred = torch.where(mask, depth - batch_mean[None, :, None, None], zero)
            batch_var = (centred**2).sum(dim=(0, 2, 3)) / safe_count
            with torch.no_grad():
                unbiased = batch_var * count / (count - 1).clamp_min(1)
                updated_mean = self.running_mean * (1 - self.momentum) + self.momentum * batch_mean.detach()
                updated_var = self.running_var * (1 - self.momentum) + self.momentum * unbiased.detach()
                self.running_mean.copy_(torch.where(enough, updated_mean, self.running_mean))
                self.running_var.copy_(torch.where(enough, updated_var, self.running_var))
            mean = torch.where(enough, batch_mean, mean)
            var = torch.where(enough, batch_var, var)
        scale = self.weight * torch.rsqrt(var + self.eps)
        normalised = (depth - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]
        return torch.where(mask, normalised, torch.zeros((), dtype=depth.dtype, device=depth.device))


class RgbdCnnEmbeddings(nn.Module):
    """ResNet stem: 7x7 stride-2 convolution + batch norm + activation, then a 3x3 stride-2 max-pool.

    Parameter names equal those of `transformers`' `ResNetEmbeddings`; the number of input channels is free.
    """

    def __init__(self, config: RgbdCnnConfig, in_channels: int) -> None:
        super().__init__()
        self.embedder = ResNetConvLayer(
            in_channels, config.embedding_size, kernel_size=7, stride=2, activation=config.hidden_act
        )
        self.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.num_channels = in_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, embedding_size, ceil(H / 4), ceil(W / 4))."""
        return self.pooler(self.embedder(inputs))


# Two stage classes, so that output capturing tells the maps of the stream that carries the output (recorded as
# `hidden_states`) from those of the other streams. Under activation checkpointing (`gradient_checkpointing_enable`)
# the backward pass recomputes a stage in train mode, so batch-norm running statistics receive a second (identical)
# update per step; losses and gradients are unchanged.
class RgbdCnnStage(GradientCheckpointingLayer, ResNetStage):
    """A ResNet stage (transformers' `ResNetStage`) of the stream whose maps are `hidden_states`: the single stream
    (`modalities` `"rgb"` / `"depth"`, early fusion) or the RGB stream of feature-level fusion."""


class RgbdCnnBranchStage(GradientCheckpointingLayer, ResNetStage):
    """A ResNet stage of the other streams: the depth stream of the two-stream fusions (its maps are
    `depth_hidden_states`) and the RGB stream of multi-stage fusion (its maps are fused before they are recorded)."""


class RgbdCnnEncoder(nn.Module):
    """The residual stages of one stream (names as in `transformers`' `ResNetEncoder`)."""

    def __init__(self, config: RgbdCnnConfig, stage_class: type[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        in_channels = config.embedding_size
        for index, (out_channels, depth) in enumerate(zip(config.hidden_sizes, config.depths, strict=True)):
            stride = 2 if index > 0 or config.downsample_in_first_stage else 1
            self.stages.append(stage_class(config, in_channels, out_channels, stride=stride, depth=depth))
            in_channels = out_channels

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            hidden_state = stage(hidden_state)
        return hidden_state


class RgbdCnnStream(nn.Module):
    """One ResNet stream (stem + stages, without pooling): the RGB, the depth or the early-fusion RGB-D stream."""

    def __init__(self, config: RgbdCnnConfig, in_channels: int, stage_class: type[nn.Module] = RgbdCnnStage) -> None:
        super().__init__()
        self.embedder = RgbdCnnEmbeddings(config, in_channels)
        self.encoder = RgbdCnnEncoder(config, stage_class)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> last map (B, hidden_sizes[-1], h, w)."""
        return self.encoder(self.embedder(inputs))


class RgbdCnnSqueezeExcitation(nn.Module):
    """Channel attention: `x * sigmoid(W2 act(W1 mean_hw(x)))`, hidden width `max(1, channels // se_reduction)`."""

    def __init__(self, channels: int, config: RgbdCnnConfig) -> None:
        super().__init__()
        hidden = max(1, channels // config.se_reduction)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), each channel scaled by a gate in (0, 1)."""
        squeezed = hidden_state.mean(dim=(2, 3))
        gate = torch.sigmoid(self.expand(self.activation(self.reduce(squeezed))))
        return hidden_state * gate[:, :, None, None]


class RgbdCnnAttentionFusion(nn.Module):
    """ESANet-style fusion: `SE_rgb(rgb) + SE_depth(depth)`, a missing / dropped modality contributing zero."""

    def __init__(self, channels: int, config: RgbdCnnConfig) -> None:
        super().__init__()
        self.rgb_attention = RgbdCnnSqueezeExcitation(channels, config)
        self.depth_attention = RgbdCnnSqueezeExcitation(channels, config)

    def forward(
        self,
        rgb: torch.Tensor | None,
        depth: torch.Tensor | None,
        rgb_present: torch.Tensor | None,
        depth_present: torch.Tensor | None,
    ) -> torch.Tensor:
        """Maps (B, C, H, W) (either may be None = missing for the whole batch; not both) -> (B, C, H, W).

        `rgb_present` / `depth_present`: (B,) bool, or None when every sample has that modality.
        """
        fused = None
        for values, attention, present in (
            (rgb, self.rgb_attention, rgb_present),
            (depth, self.depth_attention, depth_present),
        ):
            if values is None:
                continue
            term = attention(values)
            if present is not None:
                term = _where_present(present, term, term.new_zeros(()))
            fused = term if fused is None else fused + term
        return fused


class RgbdCnnFeatureJoin(nn.Module):
    """Joins the final RGB and depth maps (B, C, h, w): `concat` (-> 2C channels), `sum`, or `weighted`.

    `weighted`: `w_rgb * rgb + w_depth * depth` with per-channel weights `softmax(fusion_logits, dim=0)`
    (`fusion_logits` (2, C), initialised to zeros, i.e. 1/2 each).
    """

    def __init__(self, config: RgbdCnnConfig) -> None:
        super().__init__()
        self.mode = config.feature_fusion
        if self.mode == "weighted":
            self.fusion_logits = nn.Parameter(torch.zeros(2, config.hidden_sizes[-1]))

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return torch.cat([rgb, depth], dim=1)
        if self.mode == "sum":
            return rgb + depth
        weights = torch.softmax(self.fusion_logits, dim=0).to(rgb.dtype)
        return rgb * weights[0][None, :, None, None] + depth * weights[1][None, :, None, None]


# ------------------------------------------------------------------------------------------------------ fusions
@dataclass
class RgbdCnnFusionInputs:
    """The prepared inputs a fusion module fuses.

    Args:
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)` or None): RGB, None when missing
            for the whole batch (or not used by `config.modalities`).
        depth_input (`torch.FloatTensor` of shape `(batch_size, depth_input_channels, height, width)` or None): the
            depth stream's input (`RgbdCnnModel._prepare_inputs`), None when missing for the whole batch.
        rgb_present, depth_present (`torch.BoolTensor` of shape `(batch_size,)`): which samples use each modality
            (False where dropped by modality dropout or missing).
    """

    pixel_values: torch.Tensor | None
    depth_input: torch.Tensor | None
    rgb_present: torch.Tensor
    depth_present: torch.Tensor


class RgbdCnnFusion(nn.Module):
    """Base of the fusion modules: `fusion(encoder, inputs)` runs the streams and fusion layers of `encoder` (the
    [`RgbdCnnModel`] that built them for this fusion) on [`RgbdCnnFusionInputs`] and returns the fused last feature
    map `(batch_size, fused_hidden_size, height_out, width_out)`."""

    # whether depth runs in a stream of its own, whose maps are `depth_hidden_states`
    records_depth_hidden_states: ClassVar[bool] = False

    def forward(self, encoder: RgbdCnnModel, inputs: RgbdCnnFusionInputs) -> torch.Tensor:
        raise NotImplementedError


class RgbdCnnSingleModality(RgbdCnnFusion):
    """`modalities` `"rgb"` / `"depth"`: the one stream on its own input, nothing fused."""

    def __init__(self, modality: Literal["rgb", "depth"]) -> None:
        super().__init__()
        self.modality = modality

    def forward(self, encoder: RgbdCnnModel, inputs: RgbdCnnFusionInputs) -> torch.Tensor:
        if self.modality == "rgb":
            return encoder.rgb_stream(inputs.pixel_values)
        return encoder.depth_stream(inputs.depth_input)


class RgbdCnnEarlyFusion(RgbdCnnFusion):
    """`fusion_type="early"`: `rgbd_stream` on `[pixel_values, depth_input]` (B, 3 + depth_input_channels, H, W);
    missing or dropped parts are zeros."""

    def __init__(self, config: RgbdCnnConfig) -> None:
        super().__init__()
        self.rgb_channels = config.num_channels
        self.depth_channels = config.depth_input_channels

    def forward(self, encoder: RgbdCnnModel, inputs: RgbdCnnFusionInputs) -> torch.Tensor:
        pixel_values, depth_input = inputs.pixel_values, inputs.depth_input
        reference = pixel_values if pixel_values is not None else depth_input
        batch_size, _, height, width = reference.shape
        zero = reference.new_zeros(())
        if pixel_values is None:
            pixel_values = reference.new_zeros(batch_size, self.rgb_channels, height, width)
        else:
            pixel_values = _where_present(inputs.rgb_present, pixel_values, zero)
        if depth_input is None:
            depth_input = reference.new_zeros(batch_size, self.depth_channels, height, width)
        else:
            depth_input = _where_present(inputs.depth_present, depth_input, zero)
        return encoder.rgbd_stream(torch.cat([pixel_values, depth_input], dim=1))


class RgbdCnnFeatureFusion(RgbdCnnFusion):
    """`fusion_type="feature"`: `rgb_stream` and `depth_stream`, their last maps (B, C, h, w) joined by
    `feature_fusion` ([`RgbdCnnFeatureJoin`]); a missing stream's map is its learned "missing" embedding
    (`missing_rgb_embedding` / `missing_depth_embedding`) broadcast over positions."""

    records_depth_hidden_states = True

    def forward(self, encoder: RgbdCnnModel, inputs: RgbdCnnFusionInputs) -> torch.Tensor:
        rgb = encoder.rgb_stream(inputs.pixel_values) if inputs.pixel_values is not None else None
        depth = encoder.depth_stream(inputs.depth_input) if inputs.depth_input is not None else None
        shape = (rgb if rgb is not None else depth).shape
        rgb = _fill_missing(rgb, inputs.rgb_present, encoder.missing_rgb_embedding, shape)
        depth = _fill_missing(depth, inputs.depth_present, encoder.missing_depth_embedding, shape)
        return encoder.feature_fusion(rgb, depth)


class RgbdCnnMultiStageFusion(RgbdCnnFusion):
    """`fusion_type="multi_stage"`: `rgb_stream` and `depth_stream` fused by `stage_fusions`
    ([`RgbdCnnAttentionFusion`]) after the stem and after every stage; the RGB stream carries the fused maps on,
    the depth stream its own."""

    records_depth_hidden_states = True

    def forward(self, encoder: RgbdCnnModel, inputs: RgbdCnnFusionInputs) -> torch.Tensor:
        rgb_stream, depth_stream = encoder.rgb_stream, encoder.depth_stream
        rgb = rgb_stream.embedder(inputs.pixel_values) if inputs.pixel_values is not None else None
        depth = depth_stream.embedder(inputs.depth_input) if inputs.depth_input is not None else None
        fused = encoder.stage_fusions[0](rgb, depth, inputs.rgb_present, inputs.depth_present)
        stages = zip(rgb_stream.encoder.stages, depth_stream.encoder.stages, encoder.stage_fusions[1:], strict=True)
        for rgb_stage, depth_stage, fusion in stages:
            rgb = rgb_stage(fused)
            if depth is not None:
                depth = depth_stage(depth)
            fused = fusion(rgb, depth, None, inputs.depth_present)
        return fused


# ------------------------------------------------------------------------------------------------------ models
class RgbdCnnPreTrainedModel(RgbdAutoMapMixin, PreTrainedModel):
    """Base class: weight initialisation, recorded feature maps, HF ResNet loading and the `auto_map` of saved
    folders."""

    config_class = RgbdCnnConfig
    auto_map_classes = {
        "AutoModel": "RgbdCnnModel",
        "AutoModelForImageClassification": "RgbdCnnForImageClassification",
    }
    config: RgbdCnnConfig
    base_model_prefix = "rgbd_cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ResNetConvLayer", "ResNetShortCut"]
    _can_record_outputs = {
        # the stem's output is recorded as the first stage's input
        "hidden_states": [
            OutputRecorder(RgbdCnnStage),
            OutputRecorder(RgbdCnnAttentionFusion, capture_initial_hidden_state=False),
        ],
        "depth_hidden_states": [
            OutputRecorder(RgbdCnnEmbeddings, layer_name="depth_stream"),
            OutputRecorder(RgbdCnnBranchStage, layer_name="depth_stream"),
        ],
    }

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            # ResNet's initialisation instead of transformers' normal(0, 0.02)
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # torch's own Linear initialisation instead of transformers' normal(0, 0.02), as ResNet
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        else:
            super()._init_weights(module)  # batch norms: weight 1, bias 0, running statistics reset
        if isinstance(module, RgbdCnnDepthNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, RgbdCnnFeatureJoin) and module.mode == "weighted":
            init.zeros_(module.fusion_logits)
        elif isinstance(module, RgbdCnnModel) and isinstance(module.fusion, RgbdCnnFeatureFusion):
            init.zeros_(module.missing_rgb_embedding)
            init.zeros_(module.missing_depth_embedding)

    # -------------------------------------------------------------------------------------------- HF ResNet
    @classmethod
    def from_resnet_pretrained(cls, pretrained_model_name_or_path: str, **kwargs: Any) -> RgbdCnnPreTrainedModel:
        r"""Build a model whose streams start from an HF ResNet checkpoint (`ResNetModel` or
        `ResNetForImageClassification` folder or hub id).

        The backbone fields (`embedding_size`, `hidden_sizes`, `depths`, `layer_type`, ...) come from the
        checkpoint's `ResNetConfig`; other keyword arguments (`fusion_type`, `depth_channels`, `num_labels`, ...)
        configure the [`RgbdCnnConfig`], and `cache_dir`, `revision`, `token`, `local_files_only`, ... go to
        `ResNetModel.from_pretrained`. Weights: see [`~RgbdCnnPreTrainedModel.load_resnet_state_dict`].

        ```python
        model = RgbdCnnForImageClassification.from_resnet_pretrained(
            "microsoft/resnet-18", fusion_type="multi_stage", num_labels=10
        )
        ```
        """
        from transformers import ResNetModel

        loading = {key: kwargs.pop(key) for key in list(kwargs) if key in _LOADING_KWARGS}
        resnet = ResNetModel.from_pretrained(pretrained_model_name_or_path, **loading)
        backbone = {name: getattr(resnet.config, name) for name in _RESNET_FIELDS}
        backbone["hidden_sizes"] = list(backbone["hidden_sizes"])
        backbone["depths"] = list(backbone["depths"])
        for name, value in kwargs.items():
            if name in backbone and _plain(value) != _plain(backbone[name]):
                raise ValueError(
                    f"`{name}={value!r}` conflicts with the ResNet checkpoint {pretrained_model_name_or_path!r}, "
                    f"which has {name}={backbone[name]!r}."
                )
        config = RgbdCnnConfig(**{**backbone, **kwargs})
        model = cls(config)
        model.load_resnet_state_dict(resnet.state_dict())
        model.config.name_or_path = str(pretrained_model_name_or_path)
        return model

    def load_resnet_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy an HF ResNet state dict (`ResNetModel` keys, or `ResNetForImageClassification` keys with the
        `resnet.` prefix; the classifier is ignored) into every stream of this model.

        - RGB stream: copied key for key.
        - Depth stream: the same weights, except the stem convolution, whose depth filters are the mean over the
          RGB input channels of the RGB stem filters, repeated for `depth_channels`; the mask channel's filter is 0.
        - Early-fusion stream: stem filters `[rgb filters, channel-mean filters x depth_channels, 0 (mask)]`.

        Fusion modules, "missing" embeddings and the classifier keep their initialisation.
        """
        base = getattr(self, self.base_model_prefix, self)
        resnet = {}
        for key, value in state_dict.items():
            if key.startswith("classifier."):
                continue
            key = key[len("resnet.") :] if key.startswith("resnet.") else key
            if not key.startswith(("embedder.", "encoder.")):
                raise ValueError(f"`state_dict` has a key {key!r} that is not part of an HF ResNet backbone.")
            resnet[key] = value
        stem_key = "embedder.embedder.convolution.weight"
        if stem_key not in resnet:
            raise ValueError(f"`state_dict` has no {stem_key!r}: not an HF ResNet checkpoint.")
        rgb_filters = resnet[stem_key]
        if rgb_filters.shape[1] != self.config.num_channels:
            raise ValueError(
                f"the ResNet stem takes {rgb_filters.shape[1]} channels, expected {self.config.num_channels} (RGB)."
            )
        mean_filter = rgb_filters.mean(dim=1, keepdim=True)
        depth_filters = [mean_filter.repeat(1, self.config.depth_channels, 1, 1)]
        if self.config.use_depth_mask:
            depth_filters.append(torch.zeros_like(mean_filter))
        stems = {
            "rgb_stream": rgb_filters,
            "depth_stream": torch.cat(depth_filters, dim=1),
            "rgbd_stream": torch.cat([rgb_filters, *depth_filters], dim=1),
        }
        mapped = {}
        for stream_name, stem in stems.items():
            if getattr(base, stream_name, None) is None:
                continue
            prefix = f"{base_prefix(self)}{stream_name}."
            for key, value in resnet.items():
                mapped[prefix + key] = stem if key == stem_key else value
        result = self.load_state_dict(mapped, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"ResNet weights do not fit this model's streams: {sorted(result.unexpected_keys)}.")
        stream_missing = [key for key in result.missing_keys if "_stream." in key]
        if stream_missing:
            raise ValueError(f"the ResNet checkpoint lacks weights for {sorted(stream_missing)}.")


def base_prefix(model: RgbdCnnPreTrainedModel) -> str:
    """State-dict prefix of the `RgbdCnnModel` inside `model` (`""` for the base model itself)."""
    return "" if isinstance(model, RgbdCnnModel) else f"{model.base_model_prefix}."


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _record_stream_maps(forward: Callable[..., RgbdCnnModelOutput]) -> Callable[..., RgbdCnnModelOutput]:
    """Wraps `capture_outputs` on `RgbdCnnModel.forward` for the two recorded keys.

    `capture_outputs` collects a key only when its own `output_<key>` flag is set: `output_hidden_states` (argument,
    else config) also sets `output_depth_hidden_states` where depth has a stream of its own. It appends the recorded
    fields after the others: the output is rebuilt in field order, and a stream that did not run (its input missing
    for the whole batch) leaves its field None instead of an empty tuple.
    """

    @wraps(forward)
    def wrapper(self: RgbdCnnModel, *args: Any, **kwargs: Any) -> RgbdCnnModelOutput:
        if kwargs.get("output_hidden_states") is None:
            kwargs["output_hidden_states"] = self.config.output_hidden_states
        record_depth = bool(kwargs["output_hidden_states"]) and self.fusion.records_depth_hidden_states
        kwargs["output_depth_hidden_states"] = record_depth
        outputs = forward(self, *args, return_dict=True, **kwargs)
        return type(outputs)(**{key: value for key, value in outputs.items() if not isinstance(value, tuple) or value})

    return wrapper


class RgbdCnnModel(RgbdCnnPreTrainedModel):
    r"""
    RGB-D CNN encoder: `config.fusion_type` early / feature-level / multi-stage fusion of ResNet streams, or a single
    stream with `config.modalities` `"rgb"` / `"depth"`. Returns fused feature maps and their global average.
    """

    def __init__(self, config: RgbdCnnConfig) -> None:
        super().__init__(config)
        if config.modalities == "rgb":
            self.rgb_stream = RgbdCnnStream(config, config.num_channels)
            self.fusion: RgbdCnnFusion = RgbdCnnSingleModality("rgb")
        elif config.modalities == "depth":
            self.depth_stream = RgbdCnnStream(config, config.depth_input_channels)
            self.fusion = RgbdCnnSingleModality("depth")
        elif config.fusion_type == "early":
            self.rgbd_stream = RgbdCnnStream(config, config.early_input_channels)
            self.fusion = RgbdCnnEarlyFusion(config)
        elif config.fusion_type == "feature":
            self.rgb_stream = RgbdCnnStream(config, config.num_channels)
            self.depth_stream = RgbdCnnStream(config, config.depth_input_channels, RgbdCnnBranchStage)
            self.feature_fusion = RgbdCnnFeatureJoin(config)
            self.missing_rgb_embedding = nn.Parameter(torch.zeros(config.hidden_sizes[-1]))
            self.missing_depth_embedding = nn.Parameter(torch.zeros(config.hidden_sizes[-1]))
            self.fusion = RgbdCnnFeatureFusion()
        else:
            self.rgb_stream = RgbdCnnStream(config, config.num_channels, RgbdCnnBranchStage)
            self.depth_stream = RgbdCnnStream(config, config.depth_input_channels, RgbdCnnBranchStage)
            channels = [config.embedding_size, *config.hidden_sizes]
            self.stage_fusions = nn.ModuleList([RgbdCnnAttentionFusion(c, config) for c in channels])
            self.fusion = RgbdCnnMultiStageFusion()
        if config.normalize_depth and config.modalities != "rgb":
            self.depth_norm = RgbdCnnDepthNorm(config.depth_channels)
        self.pooler = nn.AdaptiveAvgPool2d((1, 1))
        self.post_init()

    @merge_with_config_defaults
    @can_return_tuple
    @_record_stream_maps
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        depth_values: torch.FloatTensor | None = None,
        depth_mask: torch.BoolTensor | None = None,
        **kwargs: Any,
    ) -> RgbdCnnModelOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                normalised RGB (`RgbdProcessor`). Required with `modalities="rgb"`; ignored with `"depth"`; may be
                None with `"rgbd"` (missing RGB, see the module docstring).
            depth_values (`torch.FloatTensor` of shape `(batch_size, depth_channels, height, width)`, *optional*):
                depth in the processor's representation (1 channel, or 3 for HHA). Required with
                `modalities="depth"`; ignored with `"rgb"`; may be None with `"rgbd"` (missing depth).
            depth_mask (`torch.BoolTensor` of shape `(batch_size, 1, height, width)`, *optional*):
                True where depth is valid. Default: valid wherever every channel of `depth_values` is finite; NaN / inf
                depth is a hole even where the mask says valid.
            kwargs: `output_hidden_states` (return the per-stage feature maps) and `return_dict` (False: a tuple),
                as in transformers models; anything else is ignored (e.g. other processor outputs such as
                `depth_token_ids`).

        Returns:
            [`RgbdCnnModelOutput`] (or a tuple of its non-None fields).
        """
        pixel_values, depth_input = self._prepare_inputs(pixel_values, depth_values, depth_mask)
        inputs = RgbdCnnFusionInputs(pixel_values, depth_input, *self._present_modalities(pixel_values, depth_input))
        last_hidden_state = self.fusion(self, inputs)
        return RgbdCnnModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pooler(last_hidden_state).flatten(1),
            modality_mask=torch.stack([inputs.rgb_present, inputs.depth_present], dim=1),
        )

    # -------------------------------------------------------------------------------------------- inputs
    def _prepare_inputs(
        self,
        pixel_values: torch.Tensor | None,
        depth_values: torch.Tensor | None,
        depth_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Check the inputs, drop those `config.modalities` does not use, and build the depth stream's input
        (B, depth_channels (+1 mask), H, W): depth zeroed at holes, then the mask channel (1 valid, 0 hole)."""
        config = self.config
        if config.modalities == "depth":
            pixel_values = None
        if config.modalities == "rgb":
            depth_values = depth_mask = None
        if config.modalities == "rgb" and pixel_values is None:
            raise ValueError("`pixel_values` is required: this model has `modalities='rgb'`.")
        if config.modalities == "depth" and depth_values is None:
            raise ValueError("`depth_values` is required: this model has `modalities='depth'`.")
        if pixel_values is None and depth_values is None:
            raise ValueError("pass `pixel_values`, `depth_values` or both (`modalities='rgbd'`).")
        if depth_mask is not None and depth_values is None:
            raise ValueError("`depth_mask` was given without `depth_values`.")
        if pixel_values is not None:
            check_image_tensor(pixel_values, "pixel_values", config.num_channels, "config.num_channels")
            self._check_batch_norm_batch(pixel_values, "pixel_values")
            pixel_values = pixel_values.to(self.dtype)  # float64 / float16 / bfloat16 inputs run in the model dtype
        if depth_values is None:
            if config.modalities == "rgbd" and config.modality_dropout[1] == 0:
                logger.warning_once(
                    "`depth_values` is None but this model was not configured with depth dropout "
                    "(`modality_dropout[1] == 0`): predictions without depth may be poor."
                )
            return pixel_values, None
        check_image_tensor(depth_values, "depth_values", config.depth_channels, "config.depth_channels")
        self._check_batch_norm_batch(depth_values, "depth_values")
        if pixel_values is None and config.modalities == "rgbd" and config.modality_dropout[0] == 0:
            logger.warning_once(
                "`pixel_values` is None but this model was not configured with RGB dropout "
                "(`modality_dropout[0] == 0`): predictions without RGB may be poor."
            )
        if pixel_values is not None:
            if depth_values.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"batch size mismatch: `pixel_values` has {pixel_values.shape[0]} samples, `depth_values` "
                    f"{depth_values.shape[0]}."
                )
            if depth_values.shape[-2:] != pixel_values.shape[-2:]:
                raise ValueError(
                    f"`depth_values` is {tuple(depth_values.shape[-2:])} (H, W) but `pixel_values` is "
                    f"{tuple(pixel_values.shape[-2:])}: RGB and depth must be aligned (use RgbdProcessor)."
                )
        depth_mask = effective_depth_mask(depth_values, depth_mask)  # NaN / inf depth is a hole
        depth_values = depth_values.to(self.dtype)
        if config.normalize_depth:
            depth_input = self.depth_norm(depth_values, depth_mask)
        else:
            depth_input = torch.where(depth_mask, depth_values, depth_values.new_zeros(()))
        if config.fill_depth_holes:
            depth_input = fill_depth_holes(depth_input, depth_mask)
        if config.use_depth_mask:
            depth_input = torch.cat([depth_input, depth_mask.to(depth_values.dtype)], dim=1)
        return pixel_values, depth_input

    def _check_batch_norm_batch(self, values: torch.Tensor, name: str) -> None:
        """A batch of one whose last feature map is 1x1 cannot be batch-normalised in training (shapes only)."""
        height, width = values.shape[-2:]
        halvings = 2 + sum(1 for index in range(len(self.config.hidden_sizes)) if index > 0)
        if self.config.downsample_in_first_stage:
            halvings += 1
        for _ in range(halvings):  # stem convolution, max-pool, then every stride-2 stage: ceil(size / 2) each
            height, width = (height + 1) // 2, (width + 1) // 2
        check_batch_norm_batch(values.shape[0], (height, width), self.training, name)

    def _present_modalities(
        self, pixel_values: torch.Tensor | None, depth_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) bool each: which samples use RGB and depth. In training with `modality_dropout`, one uniform draw
        per sample (from torch's global generator) drops RGB if `u < p_rgb`, depth if `p_rgb <= u < p_rgb + p_depth`
        (never both; `draw_modality_dropout`); only when both inputs are given."""
        reference = pixel_values if pixel_values is not None else depth_input
        batch_size, device = reference.shape[0], reference.device
        p_rgb, p_depth = self.config.modality_dropout
        if self.training and pixel_values is not None and depth_input is not None and p_rgb + p_depth > 0:
            drop_rgb, drop_depth = draw_modality_dropout(self.config.modality_dropout, batch_size, device)
            return ~drop_rgb, ~drop_depth
        rgb_present = torch.full((batch_size,), pixel_values is not None, dtype=torch.bool, device=device)
        depth_present = torch.full((batch_size,), depth_input is not None, dtype=torch.bool, device=device)
        return rgb_present, depth_present


class RgbdCnnForImageClassification(RgbdCnnPreTrainedModel):
    r"""
    [`RgbdCnnModel`] with a linear classifier on the pooled fused features (scene / object classification).
    """

    pipeline_tasks = ("rgbd-image-classification", "rgbd-adversarial-attack")

    def __init__(self, config: RgbdCnnConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.rgbd_cnn = RgbdCnnModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        if config.num_labels > 0:
            self.classifier = nn.Linear(config.fused_hidden_size, config.num_labels)
        else:
            self.classifier = nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        depth_values: torch.FloatTensor | None = None,
        depth_mask: torch.BoolTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> RgbdCnnImageClassifierOutput:
        r"""
        Args:
            pixel_values, depth_values, depth_mask: as in [`RgbdCnnModel.forward`].
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                class indices in `[0, num_labels)` (-100 = ignored; all ignored gives loss 0) for the cross-entropy
                loss (`self.loss_function`; float targets of shape `(batch_size, num_labels)` give the multi-label
                loss). Other values are a ValueError in eval mode and a `torch._assert_async` failure naming
                `labels` in training (no host sync; see `check_classification_labels`).
            kwargs: `output_hidden_states` and `return_dict` as in [`RgbdCnnModel.forward`]; `num_items_in_batch`
                (passed by `Trainer` under gradient accumulation: the loss is then the sum over this batch divided
                by it); anything else is ignored.

        Returns:
            [`RgbdCnnImageClassifierOutput`] (or a tuple of its non-None fields).
        """
        outputs = self.rgbd_cnn(
            pixel_values=pixel_values, depth_values=depth_values, depth_mask=depth_mask, return_dict=True, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            labels = check_classification_labels(labels, logits, self.config, check_values=not self.training)
            loss = classification_loss(
                self.loss_function, labels, logits, self.config, num_items_in_batch=kwargs.get("num_items_in_batch")
            )
        return RgbdCnnImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            depth_hidden_states=outputs.depth_hidden_states,
            modality_mask=outputs.modality_mask,
        )


# ------------------------------------------------------------------------------------------------------ helpers
def fill_depth_holes(depth: torch.Tensor, mask: torch.Tensor, levels: int = HOLE_FILL_LEVELS) -> torch.Tensor:
    """Fill holes with the mean of nearby valid values (push-pull over a pyramid of 2x2 blocks).

    A hole takes the mean of the valid values in the smallest aligned block of 2, 4, ..., `2**levels` pixels around
    it that holds any; holes with no valid pixel in their `2**levels` block (e.g. a map without valid depth) stay 0.
    Linear in the number of pixels: a few pooling passes.

    Args:
        depth: (B, C, H, W) values, any value at holes.
        mask: (B, 1, H, W) bool, True where `depth` is valid.
        levels: pyramid levels (block sizes up to `2**levels` pixels).

    Returns:
        (B, C, H, W): `depth` at valid pixels (exactly), filled values at holes.
    """
    zero = torch.zeros((), dtype=depth.dtype, device=depth.device)
    sums = [torch.where(mask, depth, zero)]  # per level: mean over the block of value * validity
    weights = [mask.to(depth.dtype)]  # per level: fraction of valid pixels in the block
    for _ in range(levels):
        sums.append(nn.functional.avg_pool2d(sums[-1], 2, stride=2, ceil_mode=True))
        weights.append(nn.functional.avg_pool2d(weights[-1], 2, stride=2, ceil_mode=True))
    estimate = torch.where(weights[-1] > 0, sums[-1] / weights[-1].clamp_min(1e-12), zero)
    for level in range(levels - 1, -1, -1):
        coarser = nn.functional.interpolate(estimate, size=sums[level].shape[-2:], mode="nearest")
        here = sums[level] / weights[level].clamp_min(1e-12)
        estimate = torch.where(weights[level] > 0, here, coarser)
    return torch.where(mask, depth, estimate)


def _where_present(present: torch.Tensor, values: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
    """`values` (B, C, h, w) for the samples where `present` (B,) is True, `absent` (broadcast) for the others."""
    return torch.where(present[:, None, None, None], values, absent)


def _fill_missing(
    values: torch.Tensor | None, present: torch.Tensor, embedding: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """`values` (B, C, h, w) with absent samples replaced by `embedding` (C,) at every position; `embedding`
    broadcast to `shape` when `values` is None (missing for the whole batch)."""
    filler = embedding[None, :, None, None]
    if values is None:
        return filler.expand(shape)
    return _where_present(present, values, filler.to(values.dtype))


__all__ = [
    "RgbdCnnForImageClassification",
    "RgbdCnnImageClassifierOutput",
    "RgbdCnnModel",
    "RgbdCnnModelOutput",
    "RgbdCnnPreTrainedModel",
]
