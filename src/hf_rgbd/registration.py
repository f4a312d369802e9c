"""Registration of hf_rgbd classes with the transformers Auto classes (run once, at `import hf_rgbd`)."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoProcessor

from .modeling import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdCnnModel,
    RgbdVitConfig,
    RgbdVitModel,
)
from .processors import RgbdImageProcessor, RgbdProcessor, RgbdProcessorConfig

# (config, base model, classification model or None) of every model family; RgbdVitModel is one tower
MODEL_FAMILIES = (
    (RgbdVitConfig, RgbdVitModel, None),
    (RgbdClipConfig, RgbdClipModel, RgbdClipForImageClassification),
    (RgbdCnnConfig, RgbdCnnModel, RgbdCnnForImageClassification),
)


def register_auto_classes() -> None:
    """Register configs, processors and models with the Auto classes. Idempotent.

    Saved folders of the registered models carry their code and list AutoConfig, AutoModel and (where there is one)
    AutoModelForImageClassification in their `auto_map`, so they load with `trust_remote_code=True` without
    hf_rgbd; `AutoProcessor` maps every family's config to `RgbdProcessor`.
    """
    AutoConfig.register(RgbdProcessorConfig.model_type, RgbdProcessorConfig, exist_ok=True)
    AutoImageProcessor.register(
        RgbdProcessorConfig,
        image_processor_classes={"torchvision": RgbdImageProcessor, "pil": RgbdImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(RgbdProcessorConfig, RgbdProcessor, exist_ok=True)
    RgbdProcessor.register_for_auto_class("AutoProcessor")

    for config_class, model_class, classification_class in MODEL_FAMILIES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoProcessor.register(config_class, RgbdProcessor, exist_ok=True)
        config_class.register_for_auto_class("AutoConfig")
        model_class.register_for_auto_class("AutoModel")
        if classification_class is not None:
            AutoModelForImageClassification.register(config_class, classification_class, exist_ok=True)
            classification_class.register_for_auto_class("AutoModelForImageClassification")
