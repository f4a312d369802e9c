"""Does a data set need both modalities? Probes that answer it on `make_synthetic_rgbd` splits.

* [`statistics_linear_probe`]: logistic regression on global per-image statistics (mean and standard deviation of
  R, G, B and of valid depth). A data set whose classes it separates can be solved without looking at shape or
  texture.
* [`fusion_probe`]: the same `RgbdCnnForImageClassification` (`RgbdCnnConfig.small()`, early fusion for RGB-D),
  the same hyper-parameters and seed, trained on RGB only, on depth only and on both; test accuracy of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PROBE_MODALITIES = ("rgb", "depth", "rgbd")


def image_statistics(split: Any) -> torch.Tensor:
    """(N, 8) float64 features of a split: per image the mean and std of R, G, B (in [0, 1]) and of the valid
    depth (metres; holes are 0 in `depth` and are left out)."""
    columns = split.with_format("numpy")[:]
    rgb = torch.from_numpy(np.ascontiguousarray(columns["image"])).double().flatten(1, 2) / 255.0  # (N, HW, 3)
    depth = torch.from_numpy(np.ascontiguousarray(columns["depth"])).double().flatten(1)  # (N, HW)
    valid = (depth > 0).double()
    count = valid.sum(1).clamp_min(1.0)
    depth_mean = (depth * valid).sum(1) / count
    depth_std = (((depth - depth_mean[:, None]) ** 2 * valid).sum(1) / count).sqrt()
    return torch.cat([rgb.mean(1), rgb.std(1), depth_mean[:, None], depth_std[:, None]], dim=1)


def statistics_linear_probe(dataset: Any, max_iterations: int = 500, l2: float = 1e-4) -> float:
    """Test accuracy of a multinomial logistic regression on [`image_statistics`] (standardised with the train
    split's moments, L-BFGS, L2 penalty `l2`), fitted on `dataset["train"]`. Deterministic."""
    train, test = image_statistics(dataset["train"]), image_statistics(dataset["test"])
    train_labels = torch.as_tensor(np.asarray(dataset["train"]["label"]), dtype=torch.long)
    test_labels = torch.as_tensor(np.asarray(dataset["test"]["label"]), dtype=torch.long)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    train, test = (train - mean) / std, (test - mean) / std
    num_classes = dataset["train"].features["label"].num_classes
    weight = torch.zeros(train.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train @ weight + bias, train_labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((test @ weight + bias).argmax(1) == test_labels).double().mean())


def fusion_probe(
    dataset: Any,
    modalities: Sequence[str] = PROBE_MODALITIES,
    epochs: int = 60,
    seed: int = 0,
    config_overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    num_threads: int | None = 1,
    disable_tqdm: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Train the probe classifier once per entry of `modalities` and measure its test accuracy.

    The model is `RgbdCnnForImageClassification(RgbdCnnConfig.small(modalities=m, fusion_type="early"))`: one
    ResNet stream on RGB, on depth (+ its validity mask), or on both stacked. Inputs come from an `RgbdProcessor`
    at the data's resolution with metric depth; training is [`train_classifier`] (AdamW, one-cycle, flips and
    shifts, 60 epochs, the best validation epoch kept), identical for every modality.

    Args:
        dataset: a `DatasetDict` from `make_synthetic_rgbd` (`train`, `validation`, `test`).
        modalities: any of `"rgb"`, `"depth"`, `"rgbd"`.
        epochs, seed: passed to [`train_classifier`]; `seed` also seeds the weight initialisation.
        config_overrides: extra `RgbdCnnConfig` fields for every probe.
        log: called with progress lines.
        num_threads: at most this many torch threads for the whole probe (restored afterwards); None keeps torch's
            setting. The probe's ops are small: with another process busy on a core, one thread trains several
            times faster than two (`scripts/benchmark_threads.py`). The thread count is part of the result:
            oneDNN's convolution gradients round differently with another count, and the accuracies differ.
        disable_tqdm: True hides the training and evaluation progress bars (see [`train_classifier`]).

    Returns:
        `{modality: {"test_accuracy", "validation_accuracy", "best_epoch", "train_seconds"}}`.
    """
    from ..utils import torch_thread_limit

    unknown = [m for m in modalities if m not in PROBE_MODALITIES]
    if unknown or not modalities:
        raise ValueError(
            f"`modalities` must be a non-empty sequence drawn from {PROBE_MODALITIES}, got {modalities!r}."
        )
    with torch_thread_limit(num_threads, "num_threads"):
        return _run_fusion_probe(dataset, modalities, epochs, seed, config_overrides, log, disable_tqdm)


def _run_fusion_probe(
    dataset: Any,
    modalities: Sequence[str],
    epochs: int,
    seed: int,
    config_overrides: dict[str, Any] | None,
    log: Callable[[str], None] | None,
    disable_tqdm: bool | None,
) -> dict[str, dict[str, float]]:
    """[`fusion_probe`] after its argument checks, inside its thread limit."""
    from ..data.splits import split_to_tensors
    from ..processors import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
    from ..training.classification import (
        MODALITY_INPUT_KEYS,
        classification_accuracy,
        to_channels_last,
        train_cnn_classifier,
    )

    height, width = np.asarray(dataset["train"][0]["depth"]).shape
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": height, "width": width}), RgbdDepthProcessor(representation="metric")
    )
    tensors = {name: split_to_tensors(dataset[name], processor) for name in ("train", "validation", "test")}
    features = dataset["train"].features["label"]
    results = {}
    for modality in modalities:
        keys = MODALITY_INPUT_KEYS[modality]
        splits = {
            name: (to_channels_last({key: inputs[key] for key in keys}), labels)
            for name, (inputs, labels) in tensors.items()
        }
        prefix = f"[{modality}] "
        model, training = train_cnn_classifier(
            splits["train"],
            splits["validation"],
            features.names,
            {"modalities": modality, "fusion_type": "early", **(config_overrides or {})},
            seed=seed,
            memory_format=torch.channels_last,
            epochs=epochs,
            log=(lambda line, prefix=prefix: log(prefix + line)) if log is not None else None,
            disable_tqdm=disable_tqdm,
        )
        results[modality] = {
            "test_accuracy": classification_accuracy(model, *splits["test"], disable_tqdm=disable_tqdm),
            "validation_accuracy": training.best_validation_accuracy,
            "best_epoch": training.best_epoch,
            "train_seconds": training.train_seconds,
        }
    return results


__all__ = ["PROBE_MODALITIES", "fusion_probe", "image_statistics", "statistics_linear_probe"]
