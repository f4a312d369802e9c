"""hf-rgbd: RGB-D (colour + depth) multimodal learning and adversarial robustness on Hugging Face.

Importing the package registers its configurations, processors and models with the transformers Auto classes.
"""

from .attacks import APGD, BIM, FAB, FGSM, MIFGSM, PGD, PGDL2, RFGSM, AutoAttack, RgbdAttack, Square
from .evaluation import evaluate_robustness
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
from .processors import (
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
    RgbdProcessorConfig,
)
from .registration import register_auto_classes
from .utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

__version__ = "0.1.0.dev0"

register_auto_classes()

__all__ = [
    "APGD",
    "AutoAttack",
    "BIM",
    "FAB",
    "FGSM",
    "MIFGSM",
    "PGD",
    "PGDL2",
    "RFGSM",
    "AdversarialTrainer",
    "RgbdAttack",
    "Square",
    "evaluate_robustness",
    "RgbdAlbefConfig",
    "RgbdVlmoConfig",
    "RgbdVlmoForImageClassification",
    "RgbdVlmoForPreTraining",
    "RgbdVlmoForRgbdMatching",
    "RgbdVlmoModel",
    "RgbdAlbefForDepthCompletion",
    "RgbdAlbefForImageClassification",
    "RgbdAlbefForPreTraining",
    "RgbdAlbefForRgbdMatching",
    "RgbdAlbefModel",
    "RgbdClipConfig",
    "RgbdClipForImageClassification",
    "RgbdClipModel",
    "RgbdVitConfig",
    "RgbdVitModel",
    "RgbdCnnConfig",
    "RgbdCnnForImageClassification",
    "RgbdCnnModel",
    "RgbdDepthProcessor",
    "RgbdImageProcessor",
    "RgbdProcessor",
    "RgbdProcessorConfig",
    "are_progress_bars_disabled",
    "disable_progress_bars",
    "enable_progress_bars",
    "register_auto_classes",
]


def __getattr__(name: str):
    # lazy, like `hf_rgbd.training.AdversarialTrainer` (it imports `transformers.Trainer`)
    if name == "AdversarialTrainer":
        from .training.adversarial_training import AdversarialTrainer

        return AdversarialTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
