"""hf_rgbd.training: the classifier training loop and Madry adversarial training (`AdversarialTrainer`)."""

from .classification import (
    MODALITY_INPUT_KEYS,
    ClassifierTrainingResult,
    classification_accuracy,
    to_channels_last,
    train_classifier,
    train_cnn_classifier,
)

__all__ = [
    "MODALITY_INPUT_KEYS",
    "AdversarialTrainer",
    "ClassifierTrainingResult",
    "classification_accuracy",
    "to_channels_last",
    "train_classifier",
    "train_cnn_classifier",
]


def __getattr__(name: str):
    # `AdversarialTrainer` imports `transformers.Trainer` (about a second): loaded on first use, not at import.
    if name == "AdversarialTrainer":
        from .adversarial_training import AdversarialTrainer

        return AdversarialTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
