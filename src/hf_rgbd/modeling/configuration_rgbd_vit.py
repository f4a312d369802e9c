"""Configuration of one RGB-D vision-transformer tower (`RgbdVitConfig`).

This file is part of the flat `hf_rgbd.modeling` folder (single-dot relative imports only), so a saved model folder
carries it and loads with `trust_remote_code=True` where hf_rgbd is not installed.
"""

from typing import Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .configuration_rgbd_common import check_positive_int, check_probability

RgbdTowerModality = Literal["rgb", "depth"]
PatchEmbeddingType = Literal["linear", "conv_stem"]
PositionEmbeddingInit = Literal["random", "sincos"]
RGBD_TOWER_MODALITIES: tuple[str, ...] = get_args(RgbdTowerModality)
PATCH_EMBEDDING_TYPES: tuple[str, ...] = get_args(PatchEmbeddingType)

# Field values of the preset towers `RgbdVitConfig.tiny()` and `.small()`; their keyword arguments override them.
_TINY_TOWER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)
_SMALL_TOWER = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
    image_size=64,
    patch_size=16,
    layer_norm_eps=1e-6,
    position_embedding_init="sincos",
    patch_embedding_type="conv_stem",
)


def _as_pair(value: int | list[int] | tuple[int, ...], name: str) -> tuple[int, int]:
    """`value` as an `(height, width)` pair of positive ints; ValueError naming `name` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair of ints, got {value!r}.")
    if min(pair) < 1:
        raise ValueError(f"`{name}` must be positive, got {value!r}.")
    return pair


@strict
class RgbdVitConfig(PreTrainedConfig):
    r"""Configuration of one pre-norm ViT tower of an RGB-D model ([`RgbdVitModel`]).

    One tower encodes one modality: `modality="rgb"` reads `pixel_values` (3 channels), `modality="depth"` reads
    `depth_values` (1 channel, or 3 for HHA) together with `depth_mask`. The defaults are ViT-B/16 sized. The
    building blocks it configures ([`RgbdVitEmbeddings`], [`RgbdVitLayer`], [`RgbdVitEncoder`]) are shared by the
    transformer families of hf_rgbd.

    Args:
        modality (`Literal["rgb", "depth"]`, defaults to `"rgb"`): the input this tower embeds.
        num_channels (`int`, *optional*): input channels; default 3 for `"rgb"`, 1 for `"depth"` (3 for HHA).
        hidden_size (`int`, defaults to 768): width of the tokens.
        num_hidden_layers (`int`, defaults to 12): number of encoder layers.
        num_attention_heads (`int`, defaults to 12): attention heads; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072): hidden width of the MLP.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (any key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout on embeddings and residual branches.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialisation.
        layer_norm_eps (`float`, defaults to 1e-12): LayerNorm epsilon.
        image_size (`int` or `(height, width)`, defaults to 224): input size the position embeddings are made for;
            other sizes need `interpolate_pos_encoding=True`. Must be a multiple of `patch_size`.
        patch_size (`int` or `(height, width)`, defaults to 16): patch size.
        qkv_bias (`bool`, defaults to `True`): bias on the query/key/value projections.
        patch_embedding_bias (`bool`, defaults to `True`): bias on the patch projection (ViT: yes, CLIP: no).
        use_pre_layernorm (`bool`, defaults to `False`): LayerNorm on the embeddings before the first layer (CLIP).
        mask_missing_depth_patches (`bool`, defaults to `True`): depth only. A patch without any valid depth pixel
            is always replaced by the learned `missing_depth_embedding`; with this flag it is also removed from the
            attention keys, so it cannot influence any other token (it still has its own output row).
        patch_embedding_type (`Literal["linear", "conv_stem"]`, defaults to `"linear"`): how patches become tokens. `"linear"`: one
            `patch_size` x `patch_size` stride-`patch_size` projection (ViT / CLIP; what pretrained checkpoints hold).
            `"conv_stem"`: log2(`patch_size`) 3x3 stride-2 convolutions, widths doubling up to `hidden_size`, with
            batch norm and `hidden_act` between them (Xiao et al., 2021, "Early convolutions help transformers see
            better"): far more sample-efficient when training from scratch on little data. Needs a square
            power-of-two `patch_size`. Its batch norm makes training-mode outputs depend on the batch.
        position_embedding_init (`Literal["random", "sincos"]`, defaults to `"random"`): initialisation of the (always learned) position
            embeddings: `"random"` (truncated normal, as ViT) or `"sincos"` (2-D sine-cosine table, as MAE; the same
            table in every tower, which helps towers trained from scratch on little data to agree on positions;
            needs `hidden_size` divisible by 4).

    Wrong types or choices raise `StrictDataclassFieldValidationError`, inconsistent values (sizes, probabilities,
    `image_size` not a multiple of `patch_size`, ...) `StrictDataclassClassValidationError`, both naming the field.
    """

    model_type = "rgbd_vit"

    modality: RgbdTowerModality = "rgb"
    num_channels: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    qkv_bias: bool = True
    patch_embedding_bias: bool = True
    use_pre_layernorm: bool = False
    mask_missing_depth_patches: bool = True
    position_embedding_init: PositionEmbeddingInit = "random"
    patch_embedding_type: PatchEmbeddingType = "linear"

    def __post_init__(self, **kwargs):
        if self.num_channels is None:
            self.num_channels = 3 if self.modality == "rgb" else 1
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict`-powered validation: positive sizes, heads dividing `hidden_size`."""
        for name in ("num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            check_positive_int(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )

    def validate_dropout(self) -> None:
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)
        check_probability("attention_probs_dropout_prob", self.attention_probs_dropout_prob)

    def validate_patch_grid(self) -> None:
        """`image_size` a multiple of `patch_size`; a square power-of-two `patch_size` for the convolutional stem."""
        image_size, patch_size = self.image_size_pair, self.patch_size_pair
        if self.patch_embedding_type == "conv_stem":
            side = patch_size[0]
            if patch_size[0] != patch_size[1] or side < 2 or side & (side - 1):
                raise ValueError(
                    f"`patch_embedding_type='conv_stem'` needs a square power-of-two `patch_size` >= 2, got "
                    f"{self.patch_size!r}."
                )
        if image_size[0] % patch_size[0] or image_size[1] % patch_size[1]:
            raise ValueError(f"`image_size` {self.image_size} must be a multiple of `patch_size` {self.patch_size}.")

    def validate_position_embedding_init(self) -> None:
        if self.position_embedding_init == "sincos" and self.hidden_size % 4:
            raise ValueError(
                f"`position_embedding_init='sincos'` needs `hidden_size` divisible by 4, got {self.hidden_size}."
            )

    @property
    def image_size_pair(self) -> tuple[int, int]:
        """`image_size` as `(height, width)`."""
        return _as_pair(self.image_size, "image_size")

    @property
    def patch_size_pair(self) -> tuple[int, int]:
        """`patch_size` as `(height, width)`."""
        return _as_pair(self.patch_size, "patch_size")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Number of patches along `(height, width)` at `image_size`."""
        (h, w), (ph, pw) = self.image_size_pair, self.patch_size_pair
        return h // ph, w // pw

    @property
    def num_patches(self) -> int:
        """Number of patch tokens at `image_size` (the [CLS] token not counted)."""
        gh, gw = self.grid_size
        return gh * gw

    @classmethod
    def tiny(cls, modality: RgbdTowerModality = "rgb", **kwargs) -> "RgbdVitConfig":
        """A tiny tower for tests: hidden 32, 2 layers, 2 heads, image 32, patch 8."""
        return cls(modality=modality, **{**_TINY_TOWER, **kwargs})

    @classmethod
    def small(cls, modality: RgbdTowerModality = "rgb", **kwargs) -> "RgbdVitConfig":
        """A small tower for 64x64 inputs on a CPU, for training from scratch: hidden 128, 4 layers, 4 heads, MLP
        256, patch 16 (16 patches) made by a convolutional stem (`patch_embedding_type="conv_stem"`), sine-cosine
        initialised position embeddings."""
        return cls(modality=modality, **{**_SMALL_TOWER, **kwargs})


__all__ = [
    "PATCH_EMBEDDING_TYPES",
    "RGBD_TOWER_MODALITIES",
    "PatchEmbeddingType",
    "PositionEmbeddingInit",
    "RgbdTowerModality",
    "RgbdVitConfig",
]
