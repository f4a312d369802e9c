"""hf_rgbd.training."""

from .classification import (
    MODALITY_INPUT_KEYS,
    ClassifierTrainingResult,
    classification_accuracy,
    random_flip_shift,
    split_to_tensors,
    to_channels_last,
    train_classifier,
    train_cnn_classifier,
)

__all__ = [
    "MODALITY_INPUT_KEYS",
    "ClassifierTrainingResult",
    "classification_accuracy",
    "random_flip_shift",
    "split_to_tensors",
    "to_channels_last",
    "train_classifier",
    "train_cnn_classifier",
]
