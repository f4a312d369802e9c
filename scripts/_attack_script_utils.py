"""Helpers shared by the attack scripts: the synthetic data as model inputs and one trained fused classifier.

The classifier is the early-fusion `RgbdCnnForImageClassification` (`RgbdCnnConfig.small()`) trained exactly as
in `scripts/benchmark_cnn_fusion.py` (`hf_rgbd.training.train_classifier` defaults: 60 epochs, flips and shifts, best
validation epoch). With `model_dir` it is saved there after training and loaded back by the next script
(`from_pretrained`), so that the attack scripts share one model instead of training it again each time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers.image_processing_utils import BatchFeature

from hf_rgbd import RgbdCnnForImageClassification, RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
from hf_rgbd.data import split_to_tensors
from hf_rgbd.training import classification_accuracy, train_cnn_classifier

accuracy = classification_accuracy


class Adapter(torch.nn.Module):
    """One tensor in [0, 1] (RGB) -> the processor's normalisation -> the RGB-D model with depth fixed -> logits: the
    single-input model that torchattacks and pyautoattack can attack. The fixed depth belongs to the whole batch."""

    def __init__(self, model, mean, std, depth_values, depth_mask):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std
        self.depth_values, self.depth_mask = depth_values, depth_mask

    def forward(self, images):
        if images.shape[0] != self.depth_values.shape[0]:
            raise ValueError("the adapter's fixed depth belongs to the whole batch; attack whole batches only.")
        return self.model(
            pixel_values=(images - self.mean) / self.std, depth_values=self.depth_values, depth_mask=self.depth_mask
        ).logits


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic split sizes, the image size and the shared classifier's folder (`--model-dir`)."""
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-validation", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model-dir", default=None, help="load the trained classifier from / save it to this folder")


def make_processor(image_size: int) -> RgbdProcessor:
    """RGB normalised with the ImageNet defaults, metric depth (invertible: depth budgets are in metres)."""
    return RgbdProcessor(
        RgbdImageProcessor(size={"height": image_size, "width": image_size}),
        RgbdDepthProcessor(representation="metric"),
    )


def process_split(processor: RgbdProcessor, split) -> tuple[BatchFeature, torch.Tensor]:
    """The whole split as one `BatchFeature` of model inputs (N, ...) and its labels (N,)."""
    inputs, labels = split_to_tensors(split, processor)
    return BatchFeature(inputs), labels


def fused_classifier(data, processor: RgbdProcessor, model_dir: str | None, epochs: int = 60, seed: int = 0):
    """The trained early-fusion classifier: loaded from `model_dir` if a model is saved there, else trained on
    `data["train"]` (best epoch on `data["validation"]`) and saved to `model_dir` (when given). Eval mode."""
    if model_dir is not None and (Path(model_dir) / "config.json").exists():
        print(f"loading the fused classifier from {model_dir}")
        return RgbdCnnForImageClassification.from_pretrained(model_dir).eval()
    train = process_split(processor, data["train"])
    validation = process_split(processor, data["validation"])
    start = time.perf_counter()
    model, result = train_cnn_classifier(
        train, validation, data["train"].features["label"].names, {"fusion_type": "early"}, seed=seed, epochs=epochs
    )
    print(
        f"trained the fused classifier (early fusion, RgbdCnnConfig.small()) for {epochs} epochs in "
        f"{time.perf_counter() - start:.0f} s; best validation accuracy {result.best_validation_accuracy:.4f} "
        f"(epoch {result.best_epoch})"
    )
    if model_dir is not None:
        model.save_pretrained(model_dir)
    return model.eval()
