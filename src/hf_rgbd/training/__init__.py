"""hf_rgbd.training: the classifier training loop, Madry adversarial training (`AdversarialTrainer`), the
Trainer callback of momentum distillation (`MomentumUpdateCallback`) and the staged training of the mixture of
modality experts (`set_training_stage`)."""

from .classification import (
    MODALITY_INPUT_KEYS,
    ClassifierTrainingResult,
    classification_accuracy,
    to_channels_last,
    train_classifier,
    train_cnn_classifier,
)
from .stages import TRAINING_STAGES, set_training_stage

__all__ = [
    "MODALITY_INPUT_KEYS",
    "AdversarialTrainer",
    "ClassifierTrainingResult",
    "MomentumUpdateCallback",
    "RgbdTrainer",
    "TRAINING_STAGES",
    "classification_accuracy",
    "to_channels_last",
    "train_classifier",
    "train_cnn_classifier",
    "set_training_stage",
]


def __getattr__(name: str):
    # `AdversarialTrainer`, `RgbdTrainer` and `MomentumUpdateCallback` import `transformers.Trainer` (about a
    # second): loaded on first use, not at import.
    if name == "AdversarialTrainer":
        from .adversarial_training import AdversarialTrainer

        return AdversarialTrainer
    if name == "RgbdTrainer":
        from .rgbd_trainer import RgbdTrainer

        return RgbdTrainer
    if name == "MomentumUpdateCallback":
        from .callbacks import MomentumUpdateCallback

        return MomentumUpdateCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
