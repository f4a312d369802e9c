"""hf_rgbd.data: synthetic RGB-D data (scenes in memory, rooms in the SUN RGB-D layout), loaders for real RGB-D
data sets, aligned RGB-D augmentation, a collator and a transform for DataLoader / Trainer input, and splits as
model-input tensors."""

from .augmentation import RgbdAugment, random_flip_shift
from .collator import RgbdDataCollator, RgbdTransform
from .loaders import (
    NYU10_CLASSES,
    NYU_KINECT_INTRINSICS,
    NYU_SCENE_TYPES,
    SUNRGBD19_CLASSES,
    load_nyuv2,
    load_rgbd_folder,
    load_sunrgbd,
    nyu10_class,
    rgbd_features,
)
from .rooms import ROOM_CLASSES, write_sunrgbd_rooms
from .splits import split_to_tensors
from .synthetic import CLASS_NAMES, make_synthetic_rgbd, render_rgbd_scenes

__all__ = [
    "CLASS_NAMES",
    "NYU10_CLASSES",
    "NYU_KINECT_INTRINSICS",
    "NYU_SCENE_TYPES",
    "ROOM_CLASSES",
    "SUNRGBD19_CLASSES",
    "RgbdAugment",
    "RgbdDataCollator",
    "RgbdTransform",
    "load_nyuv2",
    "load_rgbd_folder",
    "load_sunrgbd",
    "make_synthetic_rgbd",
    "nyu10_class",
    "random_flip_shift",
    "render_rgbd_scenes",
    "rgbd_features",
    "split_to_tensors",
    "write_sunrgbd_rooms",
]
