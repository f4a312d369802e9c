"""hf_rgbd.evaluation: retrieval metrics, the fusion probe and robustness evaluation under attacks."""

from .fusion_probe import PROBE_MODALITIES, fusion_probe, image_statistics, statistics_linear_probe
from .retrieval import retrieval_metrics, retrieval_ranks
from .robustness import evaluate_robustness

__all__ = [
    "PROBE_MODALITIES",
    "evaluate_robustness",
    "fusion_probe",
    "image_statistics",
    "retrieval_metrics",
    "retrieval_ranks",
    "statistics_linear_probe",
]
