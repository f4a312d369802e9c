"""hf_rgbd.pipelines: `pipeline("rgbd-image-classification" | "rgbd-matching" | "rgbd-adversarial-attack")`.

`register_pipelines()` (run at `import hf_rgbd`) registers the tasks with transformers; saved model folders list
the tasks their model serves in `custom_pipelines` and carry the pipeline code (see `RgbdAutoMapMixin`).
"""

from transformers import AutoModelForImageClassification, AutoModelForZeroShotImageClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline_rgbd_attack import RgbdAdversarialAttackPipeline, attack_classes
from .pipeline_rgbd_classification import RgbdImageClassificationPipeline
from .pipeline_rgbd_common import RgbdPipeline, pair_inputs, read_depth, read_rgb
from .pipeline_rgbd_matching import RgbdMatchingPipeline

#: task -> (pipeline class, the transformers Auto classes that load its model, in the order tried)
PIPELINE_TASKS = {
    "rgbd-image-classification": (RgbdImageClassificationPipeline, (AutoModelForImageClassification,)),
    "rgbd-matching": (RgbdMatchingPipeline, (AutoModelForZeroShotImageClassification,)),
    "rgbd-adversarial-attack": (
        RgbdAdversarialAttackPipeline,
        (AutoModelForImageClassification, AutoModelForZeroShotImageClassification),
    ),
}


def register_pipelines() -> None:
    """Register the RGB-D tasks with transformers' `pipeline(...)`. Idempotent."""
    for task, (pipeline_class, auto_classes) in PIPELINE_TASKS.items():
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_classes, type="multimodal")


__all__ = [
    "PIPELINE_TASKS",
    "RgbdAdversarialAttackPipeline",
    "RgbdImageClassificationPipeline",
    "RgbdMatchingPipeline",
    "RgbdPipeline",
    "attack_classes",
    "pair_inputs",
    "read_depth",
    "read_rgb",
    "register_pipelines",
]
