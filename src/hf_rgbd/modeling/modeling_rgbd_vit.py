"""Shared vision-transformer building blocks of hf_rgbd, and one RGB-D tower ([`RgbdVitModel`]).

The blocks are written to be reused by every transformer family (dual encoder, fusion encoder, mixture of
modality experts):

* [`RgbdPatchEmbeddings`]: patches -> tokens, with explicit size / channel checks: a linear patch projection (as
  ViT / CLIP checkpoints), or [`RgbdConvStem`] (`patch_embedding_type="conv_stem"`) for training from scratch.
* [`RgbdVitEmbeddings`]: one modality stream: patches + [CLS] + learned position embeddings + a learned
  modality-type embedding. For depth it also implements the hole handling described below.
* [`RgbdVitAttention`]: multi-head attention through the transformers attention interface (sdpa by default; only
  eager computes attention weights, as in transformers); self- or cross-attention (`key_value_states`).
* [`RgbdVitMLP`]: the feed-forward block; [`RgbdVitLayer`] accepts any other module in its place (e.g. modality
  experts), called as `mlp(hidden_states, **mlp_kwargs)`.
* [`RgbdVitLayer`]: pre-norm block (self-attention, optional cross-attention, MLP), a `GradientCheckpointingLayer`.
* [`RgbdVitEncoder`]: a stack of layers. Hidden states and attention weights are recorded by transformers' output
  capturing (`_can_record_outputs` of the `PreTrainedModel` holding the layers, `@capture_outputs` on its forward),
  not collected by the encoder.

Depth holes (`depth_mask` False, and every NaN / inf depth value) are handled explicitly in [`RgbdVitEmbeddings`]:

1. depth values under holes are replaced by 0 *before* the patch projection (`torch.where`, so NaN/inf under a
   hole cannot leak either), hence depth values at holes never influence any output and receive zero gradient;
2. each patch embedding gets `hole_fraction * partial_hole_embedding` added (learned), so the model knows how much
   of a partially valid patch is missing;
3. a patch with no valid depth pixel at all is replaced by the learned `missing_depth_embedding` (plus its position
   and modality-type embedding), and, with `config.mask_missing_depth_patches` (default), it is removed from the
   attention keys of every layer, so it influences no other token ([CLS] is never masked, so no row is empty).

This file is part of the flat `hf_rgbd.modeling` folder (single-dot relative imports only), so saved models carry
it and load with `trust_remote_code=True` where hf_rgbd is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_rgbd_vit import RgbdVitConfig
from .modeling_rgbd_common import RgbdAutoMapMixin, check_depth_mask, check_image_tensor, effective_depth_mask

logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------------------------------- embeddings
class RgbdStemConvolution(nn.Conv2d):
    """A 3x3 stride-2 convolution of [`RgbdConvStem`] (its own class so that `_init_weights` can give it torch's
    default convolution initialisation instead of the transformer's 0.02 normal)."""


class RgbdConvStem(nn.Module):
    """Convolutional patch embedding: log2(patch) 3x3 stride-2 convolutions (widths doubling up to `hidden_size`),
    batch norm and `hidden_act` after all but the last. `(B, C, H, W)` -> `(B, hidden_size, H / patch, W / patch)`.
    """

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        num_layers = config.patch_size_pair[0].bit_length() - 1
        widths = [max(config.hidden_size >> (num_layers - 1 - index), 1) for index in range(num_layers)]
        channels = [config.num_channels] + widths
        self.convolutions = nn.ModuleList(
            RgbdStemConvolution(channels[index], channels[index + 1], kernel_size=3, stride=2, padding=1)
            for index in range(num_layers)
        )
        self.normalizations = nn.ModuleList(nn.BatchNorm2d(width) for width in widths[:-1])
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        hidden = values
        for index, convolution in enumerate(self.convolutions):
            hidden = convolution(hidden)
            if index < len(self.normalizations):
                hidden = self.activation(self.normalizations[index](hidden))
        return hidden


class RgbdPatchEmbeddings(nn.Module):
    """Cuts `(B, C, H, W)` inputs into non-overlapping patches and projects them to `(B, N, hidden_size)`.

    `N = (H / patch_h) * (W / patch_w)`. Sizes other than `config.image_size` are accepted only with
    `interpolate_pos_encoding=True`, and must always be multiples of the patch size.
    """

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        self.image_size = config.image_size_pair
        self.patch_size = config.patch_size_pair
        self.num_channels = config.num_channels
        self.num_patches = config.num_patches
        if config.patch_embedding_type == "conv_stem":
            self.projection = RgbdConvStem(config)
        else:
            self.projection = nn.Conv2d(
                config.num_channels,
                config.hidden_size,
                kernel_size=self.patch_size,
                stride=self.patch_size,
                bias=config.patch_embedding_bias,
            )

    def check_input(self, values: torch.Tensor, input_name: str, interpolate_pos_encoding: bool) -> None:
        """Raise a ValueError naming `input_name` when `values` (B, C, H, W) does not fit this embedding."""
        check_image_tensor(values, input_name, self.num_channels, "config.num_channels")
        height, width = values.shape[-2:]
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"`{input_name}` size ({height}x{width}) is not a multiple of the patch size "
                f"{self.patch_size[0]}x{self.patch_size[1]}."
            )
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(
                f"`{input_name}` size ({height}x{width}) does not match the model "
                f"({self.image_size[0]}x{self.image_size[1]}); pass `interpolate_pos_encoding=True` to use other sizes."
            )

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """`values` (B, C, H, W) -> patch tokens (B, N, hidden_size)."""
        return self.projection(values).flatten(2).transpose(1, 2)


class RgbdVitEmbeddings(nn.Module):
    """One modality stream: patch tokens, a [CLS] token, position and modality-type embeddings.

    `config.modality` decides what the stream embeds (`"rgb"` or `"depth"`). Fusion models build one instance per
    modality and concatenate the returned sequences and key masks. For depth the holes are handled as described in
    the module docstring.

    Parameters: `cls_token` (1, 1, D), `position_embeddings` (1, 1 + N, D), `modality_type_embedding` (1, 1, D) and,
    for depth, `missing_depth_embedding` (1, 1, D) and `partial_hole_embedding` (1, 1, D).
    """

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        self.config = config
        self.modality = config.modality
        self.patch_embeddings = RgbdPatchEmbeddings(config)
        self.patch_size = config.patch_size_pair
        self.grid_size = config.grid_size
        hidden = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, hidden))
        self.modality_type_embedding = nn.Parameter(torch.zeros(1, 1, hidden))
        if self.modality == "depth":
            self.missing_depth_embedding = nn.Parameter(torch.zeros(1, 1, hidden))
            self.partial_hole_embedding = nn.Parameter(torch.zeros(1, 1, hidden))
        else:
            self.missing_depth_embedding = None
            self.partial_hole_embedding = None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @property
    def input_name(self) -> str:
        return "pixel_values" if self.modality == "rgb" else "depth_values"

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings (1, 1 + N', D) for a `height` x `width` input (bicubic on the patch grid).

        Returns the stored embeddings unchanged when the grid is the configured one.
        """
        new_grid = (height // self.patch_size[0], width // self.patch_size[1])
        if new_grid == self.grid_size and not torch.jit.is_tracing():
            return self.position_embeddings
        return resize_position_embeddings(self.position_embeddings, self.grid_size, new_grid)

    def patch_validity(self, depth_mask: torch.Tensor) -> torch.Tensor:
        """Fraction of valid depth pixels per patch: `depth_mask` (B, 1, H, W) bool -> (B, N) float in [0, 1]."""
        valid = F.avg_pool2d(depth_mask.to(self.position_embeddings.dtype), self.patch_size, self.patch_size)
        return valid.flatten(1)

    def forward(
        self,
        values: torch.Tensor,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed one modality.

        Args:
            values: `pixel_values` (B, 3, H, W) for RGB, `depth_values` (B, C_d, H, W) for depth.
            depth_mask: (B, 1, H, W) or (B, H, W), True where depth is valid (depth streams only; None = every
                finite pixel; NaN / inf depth is a hole either way).
            interpolate_pos_encoding: accept sizes other than `config.image_size` (position embeddings resized).

        Returns:
            `embeddings` (B, 1 + N, D) and `key_mask` (B, 1 + N) bool, False for tokens to drop from the attention
            keys (patches without any valid depth). It is given for every depth stream with
            `config.mask_missing_depth_patches` (all True when no patch is missing: deciding that would read the
            mask on the host), None otherwise.
        """
        self.patch_embeddings.check_input(values, self.input_name, interpolate_pos_encoding)
        batch_size, _, height, width = values.shape
        dtype = self.position_embeddings.dtype
        key_mask = None
        if self.modality == "depth":
            depth_mask = effective_depth_mask(values, depth_mask)  # NaN / inf depth is a hole, mask given or not
            values = values.to(dtype)
            values = torch.where(depth_mask, values, torch.zeros((), dtype=dtype, device=values.device))
            embeddings = self.patch_embeddings(values)
            valid_fraction = self.patch_validity(depth_mask)  # (B, N)
            embeddings = embeddings + (1.0 - valid_fraction).unsqueeze(-1) * self.partial_hole_embedding
            missing = valid_fraction == 0  # (B, N): no valid depth pixel in the patch
            embeddings = torch.where(
                missing.unsqueeze(-1), self.missing_depth_embedding.to(embeddings.dtype), embeddings
            )
            if self.config.mask_missing_depth_patches:
                key_mask = torch.cat([missing.new_ones(batch_size, 1), ~missing], dim=1)
        else:
            embeddings = self.patch_embeddings(values.to(dtype))

        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        embeddings = torch.cat([cls_tokens, embeddings], dim=1)
        if interpolate_pos_encoding:
            position_embeddings = self.interpolate_pos_encoding(height, width)
        else:
            position_embeddings = self.position_embeddings
        embeddings = embeddings + (position_embeddings + self.modality_type_embedding)
        return self.dropout(embeddings), key_mask


def sincos_position_embeddings(grid_size: tuple[int, int], dim: int) -> torch.Tensor:
    """2-D sine-cosine position table (1, 1 + H*W, dim) for a (H, W) patch grid; the [CLS] row is zero.

    The first half of the channels encodes the row, the second half the column, each with `dim / 4` frequencies
    `1 / 10000^(k / (dim / 4))` as `[sin, cos]`. `dim` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sine-cosine position embeddings need `hidden_size` divisible by 4, got {dim}.")
    quarter = dim // 4
    frequencies = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0], dtype=torch.float64), torch.arange(grid_size[1], dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coordinate in (rows.reshape(-1), cols.reshape(-1)):
        angles = coordinate[:, None] * frequencies[None, :]
        parts.extend([torch.sin(angles), torch.cos(angles)])
    table = torch.cat(parts, dim=1).to(torch.float32)
    return torch.cat([torch.zeros(1, dim), table], dim=0).unsqueeze(0)


def resize_position_embeddings(
    position_embeddings: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize (1, 1 + H*W, D) position embeddings (first row: [CLS]) from `old_grid` to `new_grid` (bicubic)."""
    cls_position, patch_positions = position_embeddings[:, :1], position_embeddings[:, 1:]
    dim = position_embeddings.shape[-1]
    grid = patch_positions.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    patch_positions = grid.to(position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([cls_position, patch_positions], dim=1)


# ---------------------------------------------------------------------------------------------------- attention
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention. query (B, H, Lq, Dh), key/value (B, H, Lk, Dh); `attention_mask` broadcastable to
    (B, H, Lq, Lk), either bool (True = attend) or additive float. Returns output (B, Lq, H, Dh), weights (B, H, Lq, Lk).
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class RgbdVitAttention(nn.Module):
    """Multi-head attention through `ALL_ATTENTION_FUNCTIONS` (`config._attn_implementation`, sdpa by default).

    Self-attention by default; cross-attention when `key_value_states` is given (queries from `hidden_states`, keys
    and values from `key_value_states`). Returns `(output, weights)` like `CLIPAttention`: only the eager
    implementation computes the weights; sdpa returns None for them (and transformers warns when
    `output_attentions=True` reaches it).
    """

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, Lq, D), key_value_states (B, Lk, D) or None, attention_mask as prepared by
        `create_bidirectional_mask` (or None). Returns output (B, Lq, D) and weights (B, H, Lq, Lk) or None."""
        batch_size, query_length, _ = hidden_states.shape
        source = hidden_states if key_value_states is None else key_value_states
        key_length = source.shape[1]
        query = (
            self.q_proj(hidden_states).view(batch_size, query_length, self.num_heads, self.head_dim).transpose(1, 2)
        )
        key = self.k_proj(source).view(batch_size, key_length, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(source).view(batch_size, key_length, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(batch_size, query_length, self.num_heads * self.head_dim)
        return self.o_proj(output), weights


class RgbdVitMLP(nn.Module):
    """Feed-forward block: `fc2(act(fc1(x)))`, (B, L, D) -> (B, L, D)."""

    def __init__(self, config: RgbdVitConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        hidden_states = self.activation_fn(hidden_states)
        return self.fc2(hidden_states)


class RgbdVitLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block.

    `x = x + SelfAttn(LN(x))`; with `add_cross_attention`, `x = x + CrossAttn(LN(x), encoder_hidden_states)`;
    then `x = x + MLP(LN(x))`. Any module can replace the MLP (`mlp=`): it is called as
    `mlp(hidden_states, **mlp_kwargs)` (e.g. modality experts routed by `mlp_kwargs`); with `mlp_includes_norm`
    the layer has no `layernorm_after` and the module receives the un-normed states (experts with their own norms).

    Returns the hidden states (B, L, D). The attention weights are recorded from the `attention` /
    `crossattention` submodules by the model's `_can_record_outputs`.
    """

    def __init__(
        self,
        config: RgbdVitConfig,
        mlp: nn.Module | None = None,
        add_cross_attention: bool = False,
        mlp_includes_norm: bool = False,
    ):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = RgbdVitAttention(config)
        if add_cross_attention:
            self.layernorm_cross = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.crossattention = RgbdVitAttention(config)
        else:
            self.layernorm_cross = None
            self.crossattention = None
        # a replacement MLP may norm its input itself (modality experts with a LayerNorm each)
        self.layernorm_after = None if mlp_includes_norm else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = mlp if mlp is not None else RgbdVitMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mlp_kwargs: dict[str, Any] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attention_output)

        if self.crossattention is not None:
            if encoder_hidden_states is None:
                raise ValueError(
                    "`encoder_hidden_states` is required by a layer built with `add_cross_attention=True`."
                )
            cross_output, _ = self.crossattention(
                self.layernorm_cross(hidden_states),
                encoder_attention_mask,
                key_value_states=encoder_hidden_states,
                **kwargs,
            )
            hidden_states = hidden_states + self.dropout(cross_output)

        mlp_input = self.layernorm_after(hidden_states) if self.layernorm_after is not None else hidden_states
        mlp_output = self.mlp(mlp_input, **(mlp_kwargs or {}))
        return hidden_states + self.dropout(mlp_output)


class RgbdVitEncoder(nn.Module):
    """A stack of [`RgbdVitLayer`] (or compatible layers passed as `layers`).

    Masks are given as key masks: `attention_mask` (B, L) bool, True where a token may be attended to (or an
    already prepared 4-D mask); they are converted for the configured attention implementation once per call, and
    always applied (never read on the host to decide whether they could be skipped).
    """

    def __init__(self, config: RgbdVitConfig, layers: list[nn.Module] | None = None):
        super().__init__()
        self.config = config
        if layers is None:
            layers = [RgbdVitLayer(config) for _ in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(layers)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mlp_kwargs: dict[str, Any] | None = None,
        layer_slice: slice | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        """hidden_states (B, L, D) -> `BaseModelOutput` with the last layer's output (B, L, D), not final-normed.
        `layer_slice` runs only those layers (e.g. `slice(0, k)`, the layers below a model's fusion layers)."""
        if attention_mask is not None:
            attention_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=hidden_states,
                attention_mask=attention_mask,
                allow_is_bidirectional_skip=False,
            )
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_attention_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=hidden_states,
                attention_mask=encoder_attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                allow_is_bidirectional_skip=False,
            )
        for layer in self.layers if layer_slice is None else self.layers[layer_slice]:
            hidden_states = layer(
                hidden_states,
                attention_mask,
                encoder_hidden_states,
                encoder_attention_mask,
                mlp_kwargs=mlp_kwargs,
                **kwargs,
            )
        return BaseModelOutput(last_hidden_state=hidden_states)


# ------------------------------------------------------------------------------------------------------ models
class RgbdVitPreTrainedModel(RgbdAutoMapMixin, PreTrainedModel):
    """Weight initialisation and class attributes shared by hf_rgbd's ViT-based models.

    `_can_record_outputs` records `hidden_states` from every [`RgbdVitLayer`] (the first entry is the input of the
    first layer) and `attentions` from their self-attention; a model whose layers have cross-attention adds
    `"cross_attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="crossattention")`.
    """

    config_class = RgbdVitConfig
    config: RgbdVitConfig
    auto_map_classes = {"AutoModel": "RgbdVitModel"}
    base_model_prefix = "rgbd_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RgbdVitEmbeddings", "RgbdVitLayer"]
    _supports_sdpa = True
    _can_record_outputs = {
        "hidden_states": RgbdVitLayer,
        "attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="attention"),
    }
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, RgbdStemConvolution):  # torch's default convolution initialisation
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            init.zeros_(module.bias)
        if isinstance(module, RgbdVitEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if module.config.position_embedding_init == "sincos":
                table = sincos_position_embeddings(module.grid_size, module.position_embeddings.shape[-1])
                init.copy_(module.position_embeddings, table.to(module.position_embeddings.dtype))
            else:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.modality_type_embedding, mean=0.0, std=std)
            if module.missing_depth_embedding is not None:
                init.trunc_normal_(module.missing_depth_embedding, mean=0.0, std=std)
                init.zeros_(module.partial_hole_embedding)


class RgbdVitModel(RgbdVitPreTrainedModel):
    """One modality tower: [`RgbdVitEmbeddings`] -> (pre-LayerNorm) -> [`RgbdVitEncoder`] -> LayerNorm.

    `pooler_output` is the final-normed [CLS] token (as CLIP's vision tower; ViT's `layernorm(...)[:, 0]`).
    """

    def __init__(self, config: RgbdVitConfig):
        super().__init__(config)
        self.embeddings = RgbdVitEmbeddings(config)
        self.pre_layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_pre_layernorm else None
        )
        self.encoder = RgbdVitEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> RgbdPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Encode this tower's modality (the other modality's inputs are ignored).

        Args:
            pixel_values: (B, 3, H, W) normalised RGB; required when `config.modality == "rgb"`.
            depth_values: (B, C_d, H, W) depth representation; required when `config.modality == "depth"`.
            depth_mask: (B, 1, H, W) bool, False at depth holes (None: every finite pixel is valid; NaN / inf depth
                is a hole either way).
            interpolate_pos_encoding: accept H, W other than `config.image_size`.
            kwargs: `output_hidden_states`, `output_attentions` (eager attention only), `return_dict`; they default
                to the config's values.

        Returns:
            `BaseModelOutputWithPooling`: `last_hidden_state` (B, 1 + N, D) final-normed, `pooler_output` (B, D)
            the final-normed [CLS], `hidden_states` (num_layers + 1 tensors (B, 1 + N, D): the input of the first
            layer, then every layer's output before the final LayerNorm), `attentions` (B, H, 1 + N, 1 + N) per layer.
        """
        if self.config.modality == "rgb":
            if pixel_values is None:
                raise ValueError("`pixel_values` is required by an RGB tower (config.modality='rgb').")
            values, depth_mask = pixel_values, None
        else:
            if depth_values is None:
                raise ValueError("`depth_values` is required by a depth tower (config.modality='depth').")
            values = depth_values
        embeddings, key_mask = self.embeddings(
            values, depth_mask=depth_mask, interpolate_pos_encoding=interpolate_pos_encoding
        )
        if self.pre_layernorm is not None:
            embeddings = self.pre_layernorm(embeddings)
        encoder_outputs = self.encoder(embeddings, attention_mask=key_mask, **kwargs)
        sequence_output = self.layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=sequence_output[:, 0])


__all__ = [
    "RgbdConvStem",
    "RgbdPatchEmbeddings",
    "RgbdVitAttention",
    "RgbdVitEmbeddings",
    "RgbdVitEncoder",
    "RgbdVitLayer",
    "RgbdVitMLP",
    "RgbdVitModel",
    "RgbdVitPreTrainedModel",
    "check_depth_mask",
    "eager_attention_forward",
    "resize_position_embeddings",
    "sincos_position_embeddings",
]
