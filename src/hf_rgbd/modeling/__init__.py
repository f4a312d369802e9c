"""hf_rgbd.modeling."""

from .configuration_rgbd_clip import RgbdClipConfig
from .configuration_rgbd_cnn import RgbdCnnConfig
from .configuration_rgbd_vit import RgbdVitConfig
from .modeling_rgbd_clip import (
    RgbdClipForImageClassification,
    RgbdClipImageClassifierOutput,
    RgbdClipModel,
    RgbdClipOutput,
    RgbdClipPreTrainedModel,
    processor_from_vision_pretrained,
    rgbd_contrastive_loss,
)
from .modeling_rgbd_cnn import (
    RgbdCnnForImageClassification,
    RgbdCnnImageClassifierOutput,
    RgbdCnnModel,
    RgbdCnnModelOutput,
    RgbdCnnPreTrainedModel,
)
from .modeling_rgbd_vit import (
    RgbdConvStem,
    RgbdPatchEmbeddings,
    RgbdVitAttention,
    RgbdVitEmbeddings,
    RgbdVitEncoder,
    RgbdVitLayer,
    RgbdVitMLP,
    RgbdVitModel,
    RgbdVitPreTrainedModel,
)

__all__ = [
    "RgbdClipConfig",
    "RgbdClipForImageClassification",
    "RgbdClipImageClassifierOutput",
    "RgbdClipModel",
    "RgbdClipOutput",
    "RgbdClipPreTrainedModel",
    "RgbdConvStem",
    "RgbdPatchEmbeddings",
    "RgbdVitAttention",
    "RgbdVitConfig",
    "RgbdVitEmbeddings",
    "RgbdVitEncoder",
    "RgbdVitLayer",
    "RgbdVitMLP",
    "RgbdVitModel",
    "RgbdVitPreTrainedModel",
    "processor_from_vision_pretrained",
    "rgbd_contrastive_loss",
    "RgbdCnnConfig",
    "RgbdCnnForImageClassification",
    "RgbdCnnImageClassifierOutput",
    "RgbdCnnModel",
    "RgbdCnnModelOutput",
    "RgbdCnnPreTrainedModel",
]
