"""Registration of hf_rgbd classes with the transformers Auto classes (run once, at `import hf_rgbd`)."""

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

from .modeling import (
    RgbdAlbefConfig,
    RgbdAlbefForDepthCompletion,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdAlbefForRgbdMatching,
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
    RgbdVlmoForRgbdMatching,
    RgbdVlmoModel,
)
from .modeling.modeling_rgbd_common import RgbdAutoMapMixin
from .pipelines import PIPELINE_TASKS, register_pipelines
from .processors import RgbdImageProcessor, RgbdProcessor, RgbdProcessorConfig

# every model family: its config and the model class registered under each Auto class (RgbdVitModel is one tower).
# The RGB-depth matching models go under AutoModelForZeroShotImageClassification, where transformers registers CLIP
# and BLIP-2's image-text matching model: the class the rgbd-matching pipeline loads.
MODEL_FAMILIES = (
    (RgbdVitConfig, {"AutoModel": RgbdVitModel}),
    (
        RgbdClipConfig,
        {
            "AutoModel": RgbdClipModel,
            "AutoModelForImageClassification": RgbdClipForImageClassification,
            "AutoModelForZeroShotImageClassification": RgbdClipModel,
        },
    ),
    (RgbdCnnConfig, {"AutoModel": RgbdCnnModel, "AutoModelForImageClassification": RgbdCnnForImageClassification}),
    (
        RgbdAlbefConfig,
        {
            "AutoModel": RgbdAlbefModel,
            "AutoModelForPreTraining": RgbdAlbefForPreTraining,
            "AutoModelForImageClassification": RgbdAlbefForImageClassification,
            "AutoModelForDepthEstimation": RgbdAlbefForDepthCompletion,
            "AutoModelForZeroShotImageClassification": RgbdAlbefForRgbdMatching,
        },
    ),
    (
        RgbdVlmoConfig,
        {
            "AutoModel": RgbdVlmoModel,
            "AutoModelForPreTraining": RgbdVlmoForPreTraining,
            "AutoModelForImageClassification": RgbdVlmoForImageClassification,
            "AutoModelForZeroShotImageClassification": RgbdVlmoForRgbdMatching,
        },
    ),
)


def register_auto_classes() -> None:
    """Register configs, processors and models with the Auto classes, and the pipeline tasks. Idempotent.

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
    register_pipelines()
    RgbdAutoMapMixin.pipeline_registry = {
        task: (pipeline_class, tuple(auto_class.__name__ for auto_class in auto_classes))
        for task, (pipeline_class, auto_classes) in PIPELINE_TASKS.items()
    }


def preset_config(name: str):
    """`(config class, factory)` for a `family:size` preset name such as `"rgbd_clip:small"` (`family` a
    `model_type` of `MODEL_FAMILIES` with a classifier, `size` one of its config's presets, e.g. `tiny` /
    `small`), or for a family alone (the config's defaults); None when `name` is not a preset (a folder or hub id).
    A family without an image classifier, or an unknown size, raises ValueError listing what exists."""
    family, _, size = name.partition(":")
    families = {config.model_type: (config, models) for config, models in MODEL_FAMILIES}
    if family not in families:
        return None
    config_class, models = families[family]
    if "AutoModelForImageClassification" not in models:
        with_classifier = [t for t, (_, m) in families.items() if "AutoModelForImageClassification" in m]
        raise ValueError(f"{name!r}: {family} has no image classifier; families with one: {with_classifier}.")
    if not size:
        return config_class, config_class
    sizes = [preset for preset in ("tiny", "small", "base") if callable(getattr(config_class, preset, None))]
    if size not in sizes:
        raise ValueError(f"{name!r}: {family} has the sizes {sizes} (as `{family}:SIZE`), not {size!r}.")
    return config_class, getattr(config_class, size)
