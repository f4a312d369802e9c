"""Registration of hf_rgbd classes with the transformers Auto classes (run once, at `import hf_rgbd`)."""

from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

from .processors import RgbdImageProcessor, RgbdProcessor, RgbdProcessorConfig


def register_auto_classes() -> None:
    """Register configs, processors (and, as families land, models) with the Auto classes. Idempotent."""
    AutoConfig.register(RgbdProcessorConfig.model_type, RgbdProcessorConfig, exist_ok=True)
    AutoImageProcessor.register(
        RgbdProcessorConfig,
        image_processor_classes={"torchvision": RgbdImageProcessor, "pil": RgbdImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(RgbdProcessorConfig, RgbdProcessor, exist_ok=True)
    # Saved processors carry their code and an auto_map, so they load with trust_remote_code=True without hf_rgbd.
    RgbdProcessor.register_for_auto_class("AutoProcessor")
