"""Test-suite settings shared by every test file.

Hypothesis runs a derandomised, bounded profile by default ("ci": the same examples on every run and machine, so
a red CI is reproducible and the suite's time is bounded). `HYPOTHESIS_PROFILE=explore` draws fresh random
examples, more of them, for local bug hunting.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config) -> str:
    """The versions of the libraries whose internals hf-rgbd hooks into, at the top of every run (a fresh CI
    install takes the newest releases; a local venv may hold older ones)."""
    from importlib.metadata import version

    names = ("torch", "transformers", "datasets", "accelerate", "huggingface_hub", "safetensors", "gradio")
    return "hf-rgbd dependencies: " + ", ".join(f"{name} {version(name)}" for name in names)
