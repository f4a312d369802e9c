"""Configuration of the CNN fusion family (early, feature-level and multi-stage RGB-D fusion on ResNet streams).

This file is copied next to the weights by `save_pretrained`; it imports nothing from hf_rgbd.
"""

from typing import Any, ClassVar, Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .configuration_rgbd_common import (
    ModalityDropout,
    RgbdModalities,
    RgbdSharedConfigMixin,
    check_positive_int,
    normalize_modality_dropout,
)

RgbdCnnFusionType = Literal["early", "feature", "multi_stage"]
RgbdCnnFeatureFusionMode = Literal["concat", "sum", "weighted"]
RgbdCnnLayerType = Literal["basic", "bottleneck"]
FUSION_TYPES: tuple[str, ...] = get_args(RgbdCnnFusionType)
FEATURE_FUSIONS: tuple[str, ...] = get_args(RgbdCnnFeatureFusionMode)
LAYER_TYPES: tuple[str, ...] = get_args(RgbdCnnLayerType)


@strict
class RgbdCnnConfig(RgbdSharedConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`RgbdCnnModel`] and [`RgbdCnnForImageClassification`]: one or two ResNet streams (the
    backbone fields mirror `transformers.ResNetConfig`, so an HF ResNet checkpoint maps onto the RGB stream) joined
    by one of three fusion schemes.

    Args:
        fusion_type (`Literal["early", "feature", "multi_stage"]`, defaults to `"multi_stage"`):
            - `"early"`: one stream on the stacked input channels `[pixel_values, depth_values, depth_mask]`
              (3 + `depth_channels` (+1 with `use_depth_mask`) channels: 4(+1) for metric depth, 6(+1) for HHA);
            - `"feature"`: an RGB stream and a depth stream, their last feature maps joined by `feature_fusion`;
            - `"multi_stage"`: an RGB stream and a depth stream joined after the stem and after every stage
              (ESANet-style): squeeze-excitation channel attention on each stream, summed into the RGB stream,
              which carries the fused features on; the depth stream goes on with its own features.
        modalities (`Literal["rgbd", "rgb", "depth"]`, defaults to `"rgbd"`):
            `"rgbd"` (fused), `"rgb"` (RGB stream only: a plain ResNet, depth inputs are ignored) or `"depth"`
            (depth stream only, RGB inputs are ignored). The field every hf_rgbd family shares, for ablations.
        depth_channels (`Literal[1, 3]`, defaults to 1):
            channels of `depth_values`: 1 (metric, disparity, ...) or 3 (HHA).
        use_depth_mask (`bool`, defaults to `True`):
            feed `depth_mask` (1 = valid, 0 = hole or missing depth) as one more input channel of the stream that
            sees depth. Depth at holes is always zeroed, with or without this flag.
        fill_depth_holes (`bool`, defaults to `True`):
            after zeroing (and `normalize_depth`), fill each hole with the mean of the valid depth in the smallest
            aligned 2, 4, ..., 32 pixel block around it that has any (farther holes stay 0), so that sensor dropouts
            do not add spurious edges; the mask channel still marks them. A missing depth map stays all zeros.
        normalize_depth (`bool`, defaults to `True`):
            standardise each depth channel over its valid pixels (`depth_norm`: batch statistics in training, running
            statistics in eval, learned scale and shift; holes stay 0) before hole filling and the stems, so that
            depth starts on the scale of the normalised RGB whatever the processor's representation (metric depth /
            max_depth varies by a few hundredths across an object, which early fusion otherwise barely sees).
        feature_fusion (`Literal["concat", "sum", "weighted"]`, defaults to `"concat"`):
            how `fusion_type="feature"` joins the two final feature maps: `"concat"` (channels add up), `"sum"`,
            or `"weighted"` (learned per-channel convex weights, softmax over the two modalities, initialised 1/2).
        modality_dropout (`tuple[float, float]` or `float`, defaults to `(0.0, 0.0)`):
            per-sample probabilities `(p_rgb, p_depth)` of dropping the RGB / the depth input in training (a single
            float means the same probability for both). The two events are exclusive (one uniform draw per sample),
            so a sample never loses both; hence `p_rgb + p_depth <= 1`. A dropped modality is treated exactly as a
            missing one at inference (`pixel_values=None` or `depth_values=None`).
        num_channels (`Literal[3]`, defaults to 3): channels of `pixel_values` (RGB).
        embedding_size (`int`, defaults to 64): channels of the stem (7x7 stride-2 convolution + 3x3 max-pool).
        hidden_sizes (`list[int]`, defaults to `[64, 128, 256, 512]`): output channels of each stage.
        depths (`list[int]`, defaults to `[2, 2, 2, 2]`): residual layers per stage (ResNet-18 by default).
        layer_type (`Literal["basic", "bottleneck"]`, defaults to `"basic"`): `"basic"` (two 3x3 convolutions) or
            `"bottleneck"`.
        hidden_act (`str`, defaults to `"relu"`): activation of the residual layers.
        downsample_in_first_stage (`bool`, defaults to `False`): stride 2 in the first stage.
        downsample_in_bottleneck (`bool`, defaults to `False`): stride in the first 1x1 convolution of a bottleneck.
        se_reduction (`int`, defaults to 16): channel reduction of the multi-stage squeeze-excitation blocks.
        classifier_dropout (`float`, defaults to 0.0): dropout on the pooled features before the classifier.

    Example:
    ```python
    >>> from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification
    >>> config = RgbdCnnConfig(fusion_type="early", depth_channels=3, num_labels=10)  # RGB + HHA, 7 channels
    >>> model = RgbdCnnForImageClassification(config)
    ```

    Wrong types or choices raise `StrictDataclassFieldValidationError`, inconsistent values (sizes, stage counts,
    probabilities) `StrictDataclassClassValidationError`, both naming the field.
    """

    model_type = "rgbd_cnn"
    # What `Trainer` leaves out of the predictions it gathers: the classifier's outputs other than `logits`.
    keys_to_ignore_at_inference = ["hidden_states", "depth_hidden_states", "modality_mask"]
    fusion_types: ClassVar[tuple[str, ...]] = FUSION_TYPES
    feature_fusions: ClassVar[tuple[str, ...]] = FEATURE_FUSIONS

    fusion_type: RgbdCnnFusionType = "multi_stage"
    modalities: RgbdModalities = "rgbd"
    depth_channels: Literal[1, 3] = 1
    use_depth_mask: bool = True
    fill_depth_holes: bool = True
    normalize_depth: bool = True
    feature_fusion: RgbdCnnFeatureFusionMode = "concat"
    modality_dropout: ModalityDropout = (0.0, 0.0)
    num_channels: Literal[3] = 3
    embedding_size: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    layer_type: RgbdCnnLayerType = "basic"
    hidden_act: str = "relu"
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False
    se_reduction: int = 16
    classifier_dropout: float | int = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        self.modality_dropout = normalize_modality_dropout(self.modality_dropout)
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        super().__post_init__(**kwargs)

    # -------------------------------------------------------------------------------------------- validation
    def validate_widths(self) -> None:
        check_positive_int("embedding_size", self.embedding_size)
        check_positive_int("se_reduction", self.se_reduction)

    def validate_stages(self) -> None:
        """`hidden_sizes` and `depths`: as many stages each (at least one), positive ints."""
        for name in ("hidden_sizes", "depths"):
            values = getattr(self, name)
            if not values or not all(value >= 1 for value in values):
                raise ValueError(f"`{name}` must be a non-empty list of positive ints, got {values!r}.")
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"`hidden_sizes` ({len(self.hidden_sizes)} stages) and `depths` ({len(self.depths)} stages) must have "
                "the same length."
            )

    # -------------------------------------------------------------------------------------------- derived sizes
    @property
    def depth_input_channels(self) -> int:
        """Channels the depth stream's stem takes: `depth_channels` (+1 for the mask channel)."""
        return self.depth_channels + int(self.use_depth_mask)

    @property
    def early_input_channels(self) -> int:
        """Channels the early-fusion stem takes: 3 RGB + `depth_channels` (+1 mask): 4(+1), or 6(+1) with HHA."""
        return self.num_channels + self.depth_input_channels

    @property
    def fused_hidden_size(self) -> int:
        """Channels of the fused last feature map and pooled output (twice the last stage for feature concat)."""
        two_streams = self.modalities == "rgbd" and self.fusion_type == "feature" and self.feature_fusion == "concat"
        return self.hidden_sizes[-1] * (2 if two_streams else 1)

    # -------------------------------------------------------------------------------------------- presets
    @classmethod
    def small(cls, **kwargs: Any) -> "RgbdCnnConfig":
        """Preset `small` for 64x64 inputs on CPU: stem 24, stages [24, 48, 96] x [1, 1, 1] basic layers, squeeze-
        excitation reduction 4 (about 0.1M parameters per stream). Keyword arguments override any field."""
        preset = {
            "embedding_size": 24,
            "hidden_sizes": [24, 48, 96],
            "depths": [1, 1, 1],
            "layer_type": "basic",
            "se_reduction": 4,
        }
        preset.update(kwargs)
        return cls(**preset)


__all__ = ["RgbdCnnConfig"]
