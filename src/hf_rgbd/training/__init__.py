"""hf_rgbd.training."""

from .classification import (
    ClassifierTrainingResult,
    classification_accuracy,
    random_flip_shift,
    split_to_tensors,
    to_channels_last,
    train_classifier,
)

__all__ = [
    "ClassifierTrainingResult",
    "classification_accuracy",
    "random_flip_shift",
    "split_to_tensors",
    "to_channels_last",
    "train_classifier",
]
