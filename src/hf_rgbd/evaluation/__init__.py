"""hf_rgbd.evaluation."""

from .fusion_probe import PROBE_MODALITIES, fusion_probe, image_statistics, statistics_linear_probe
from .retrieval import retrieval_metrics, retrieval_ranks

__all__ = [
    "PROBE_MODALITIES",
    "fusion_probe",
    "image_statistics",
    "retrieval_metrics",
    "retrieval_ranks",
    "statistics_linear_probe",
]
