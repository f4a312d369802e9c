"""RGB and depth processors. A flat folder with single-dot imports only, so that saved processors carry it."""

from .depth_processing_rgbd import (
    DEPTH_ENCODINGS,
    INVERTIBLE_REPRESENTATIONS,
    REPRESENTATIONS,
    RgbdDepthProcessor,
    decode_sunrgbd_depth,
    depth_token_ids,
)
from .geometry_rgbd import ResizeCropPlan
from .image_processing_rgbd import RgbdImageProcessor
from .processing_rgbd import RgbdProcessor, RgbdProcessorConfig, processor_from_vision_pretrained

__all__ = [
    "DEPTH_ENCODINGS",
    "INVERTIBLE_REPRESENTATIONS",
    "REPRESENTATIONS",
    "ResizeCropPlan",
    "RgbdDepthProcessor",
    "RgbdImageProcessor",
    "RgbdProcessor",
    "RgbdProcessorConfig",
    "decode_sunrgbd_depth",
    "depth_token_ids",
    "processor_from_vision_pretrained",
]
