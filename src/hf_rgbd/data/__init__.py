"""hf_rgbd.data: synthetic RGB-D data and aligned RGB-D augmentation."""

from .augmentation import RgbdAugment
from .synthetic import CLASS_NAMES, make_synthetic_rgbd, render_rgbd_scenes

__all__ = ["CLASS_NAMES", "RgbdAugment", "make_synthetic_rgbd", "render_rgbd_scenes"]
