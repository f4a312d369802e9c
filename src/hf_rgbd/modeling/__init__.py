"""hf_rgbd.modeling."""

from .configuration_rgbd_albef import RgbdAlbefConfig
from .configuration_rgbd_clip import RgbdClipConfig
from .configuration_rgbd_cnn import RgbdCnnConfig
from .configuration_rgbd_vit import RgbdVitConfig
from .configuration_rgbd_vlmo import RgbdVlmoConfig
from .modeling_rgbd_albef import (
    RgbdAlbefForDepthCompletion,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdAlbefForPreTrainingOutput,
    RgbdAlbefForRgbdMatching,
    RgbdAlbefImageClassifierOutput,
    RgbdAlbefModel,
    RgbdAlbefModelOutput,
    RgbdAlbefPreTrainedModel,
    RgbdDepthCompletionOutput,
    RgbdFusionEncoder,
    RgbdMatchingOutput,
)
from .modeling_rgbd_clip import (
    RgbdClipForImageClassification,
    RgbdClipImageClassifierOutput,
    RgbdClipModel,
    RgbdClipOutput,
    RgbdClipPreTrainedModel,
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
from .modeling_rgbd_vlmo import (
    RgbdModalityExpert,
    RgbdModalityExperts,
    RgbdVlmoForImageClassification,
    RgbdVlmoForPreTraining,
    RgbdVlmoForPreTrainingOutput,
    RgbdVlmoForRgbdMatching,
    RgbdVlmoImageClassifierOutput,
    RgbdVlmoModel,
    RgbdVlmoModelOutput,
    RgbdVlmoPreTrainedModel,
)

__all__ = [
    "RgbdVlmoConfig",
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
    "RgbdAlbefConfig",
    "RgbdAlbefForDepthCompletion",
    "RgbdAlbefForImageClassification",
    "RgbdAlbefForPreTraining",
    "RgbdAlbefForPreTrainingOutput",
    "RgbdAlbefForRgbdMatching",
    "RgbdAlbefImageClassifierOutput",
    "RgbdAlbefModel",
    "RgbdAlbefModelOutput",
    "RgbdAlbefPreTrainedModel",
    "RgbdDepthCompletionOutput",
    "RgbdFusionEncoder",
    "RgbdMatchingOutput",
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
    "rgbd_contrastive_loss",
    "RgbdCnnConfig",
    "RgbdCnnForImageClassification",
    "RgbdCnnImageClassifierOutput",
    "RgbdCnnModel",
    "RgbdCnnModelOutput",
    "RgbdCnnPreTrainedModel",
]


def __getattr__(name: str):
    # moved to `hf_rgbd.processors`; still reachable here (imported lazily: modeling does not import processors)
    if name == "processor_from_vision_pretrained":
        from hf_rgbd.processors import processor_from_vision_pretrained

        return processor_from_vision_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
