"""hf_rgbd.data: synthetic RGB-D data, aligned RGB-D augmentation and splits as model-input tensors."""

from .augmentation import RgbdAugment, random_flip_shift
from .splits import split_to_tensors
from .synthetic import CLASS_NAMES, make_synthetic_rgbd, render_rgbd_scenes

__all__ = [
    "CLASS_NAMES",
    "RgbdAugment",
    "make_synthetic_rgbd",
    "random_flip_shift",
    "render_rgbd_scenes",
    "split_to_tensors",
]
