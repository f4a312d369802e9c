"""Registration of hf_rgbd classes with the transformers Auto classes (run once, at `import hf_rgbd`)."""

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

from .modeling import (
    RgbdAlbefConfig,
    RgbdAlbefForDepthCompletion,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdAlbefModel,
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdCnnModel,
    RgbdVitConfig,
    RgbdVitModel,
    RgbdVlmoConfig,
    RgbdVlmoForImageClassification,
    RgbdVlmoForPreTraining,
    RgbdVlmoModel,
)
from .processors import RgbdImageProcessor, RgbdProcessor, RgbdProcessorConfig

# every model family: its config and the model class registered under each Auto class (RgbdVitModel is one tower)
MODEL_FAMILIES = (
    (RgbdVitConfig, {"AutoModel": RgbdVitModel}),
    (RgbdClipConfig, {"AutoModel": RgbdClipModel, "AutoModelForImageClassification": RgbdClipForImageClassification}),
    (RgbdCnnConfig, {"AutoModel": RgbdCnnModel, "AutoModelForImageClassification": RgbdCnnForImageClassification}),
    (
        RgbdAlbefConfig,
        {
            "AutoModel": RgbdAlbefModel,
            "AutoModelForPreTraining": RgbdAlbefForPreTraining,
            "AutoModelForImageClassification": RgbdAlbefForImageClassification,
            "AutoModelForDepthEstimation": RgbdAlbefForDepthCompletion,
        },
    ),
    (
        RgbdVlmoConfig,
        {
            "AutoModel": RgbdVlmoModel,
            "AutoModelForPreTraining": RgbdVlmoForPreTraining,
            "AutoModelForImageClassification": RgbdVlmoForImageClassification,
        },
    ),
)


def register_auto_classes() -> None:
    """Register configs, processors and models with the Auto classes. Idempotent.

    Saved folders of the registered models carry their code and list AutoConfig and every Auto class of their
    family in their `auto_map`, so they load with `trust_remote_code=True` without hf_rgbd; `AutoProcessor` maps
    every family's config to `RgbdProcessor`.
    """
    AutoConfig.register(RgbdProcessorConfig.model_type, RgbdProcessorConfig, exist_ok=True)
    AutoImageProcessor.register(
        RgbdProcessorConfig,
        image_processor_classes={"torchvision": RgbdImageProcessor, "pil": RgbdImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(RgbdProcessorConfig, RgbdProcessor, exist_ok=True)
    RgbdProcessor.register_for_auto_class("AutoProcessor")

    for config_class, models in MODEL_FAMILIES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoProcessor.register(config_class, RgbdProcessor, exist_ok=True)
        config_class.register_for_auto_class("AutoConfig")
        for auto_class_name, model_class in models.items():
            getattr(transformers, auto_class_name).register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class_name)
