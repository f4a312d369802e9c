"""Fixed cases whose outputs are pinned by `tests/fixtures/reference/` (see `test_reference_outputs.py`).

`record_reference.py` ran these cases once on main at commit 58a4e8c (before the transformers-5 house rework) and
stored the tiny model folders it saved and every output tensor. The test runs the same cases on the current code,
loading those folders, and compares. The cases only use public API that stays the same across that rework.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import ModelOutput

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "reference"
MODELS_DIR = FIXTURE_DIR / "models"
OUTPUTS_FILE = FIXTURE_DIR / "reference_outputs.safetensors"
SIZE = 32
BATCH = 3
NUM_LABELS = 4
REPRESENTATIONS = ("metric", "disparity", "log", "per_image", "dataset", "hha")


def model_cases() -> dict[str, tuple[type, Any]]:
    """name -> (model class, config) of every family the fixture covers."""
    from hf_rgbd import (
        RgbdClipConfig,
        RgbdClipForImageClassification,
        RgbdClipModel,
        RgbdCnnConfig,
        RgbdCnnForImageClassification,
        RgbdCnnModel,
        RgbdVitConfig,
        RgbdVitModel,
    )

    cnn = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": NUM_LABELS, "se_reduction": 4}
    return {
        "vit_rgb": (RgbdVitModel, RgbdVitConfig.tiny("rgb", use_pre_layernorm=True)),
        "vit_depth": (RgbdVitModel, RgbdVitConfig.tiny("depth")),
        "vit_depth_conv_stem": (
            RgbdVitModel,
            RgbdVitConfig.tiny("depth", patch_embedding_type="conv_stem", position_embedding_init="sincos"),
        ),
        "clip": (RgbdClipModel, RgbdClipConfig.tiny()),
        "clip_classifier": (
            RgbdClipForImageClassification,
            RgbdClipConfig.tiny(num_labels=NUM_LABELS, auxiliary_loss_weight=0.5),
        ),
        "clip_classifier_rgb": (
            RgbdClipForImageClassification,
            RgbdClipConfig.tiny(num_labels=NUM_LABELS, modalities="rgb"),
        ),
        "cnn_model_multi_stage": (RgbdCnnModel, RgbdCnnConfig(**cnn, fusion_type="multi_stage")),
        "cnn_early": (RgbdCnnForImageClassification, RgbdCnnConfig(**cnn, fusion_type="early")),
        "cnn_early_hha": (
            RgbdCnnForImageClassification,
            RgbdCnnConfig(**cnn, fusion_type="early", depth_channels=3),
        ),
        "cnn_feature_concat": (
            RgbdCnnForImageClassification,
            RgbdCnnConfig(**cnn, fusion_type="feature", feature_fusion="concat"),
        ),
        "cnn_feature_sum": (
            RgbdCnnForImageClassification,
            RgbdCnnConfig(**cnn, fusion_type="feature", feature_fusion="sum"),
        ),
        "cnn_feature_weighted": (
            RgbdCnnForImageClassification,
            RgbdCnnConfig(**cnn, fusion_type="feature", feature_fusion="weighted"),
        ),
        "cnn_multi_stage": (RgbdCnnForImageClassification, RgbdCnnConfig(**cnn, fusion_type="multi_stage")),
        "cnn_depth_only": (RgbdCnnForImageClassification, RgbdCnnConfig(**cnn, modalities="depth")),
    }


def is_transformer(name: str) -> bool:
    return name.startswith(("vit", "clip"))


def model_inputs(config: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """Model inputs with holes (and, for transformer towers, one fully missing depth patch) and labels."""
    generator = torch.Generator().manual_seed(seed)
    depth_channels = getattr(config, "depth_channels", None)
    if depth_channels is None:
        depth_config = getattr(config, "depth_config", config)
        depth_channels = getattr(depth_config, "num_channels", 1)
    depth_mask = torch.rand(BATCH, 1, SIZE, SIZE, generator=generator) > 0.2
    depth_mask[0, :, :8, :8] = False
    depth_values = (0.3 + torch.rand(BATCH, depth_channels, SIZE, SIZE, generator=generator)) * depth_mask
    inputs = {
        "pixel_values": torch.randn(BATCH, 3, SIZE, SIZE, generator=generator),
        "depth_values": depth_values,
        "depth_mask": depth_mask,
    }
    return inputs


def labels_for(model: torch.nn.Module) -> torch.Tensor | None:
    """Class labels for the classification heads, None for the base models."""
    if not type(model).__name__.endswith("ForImageClassification"):
        return None
    return torch.tensor([0, 3, 1])


def flatten(output: Any, prefix: str) -> dict[str, torch.Tensor]:
    """{"prefix.logits": t, "prefix.hidden_states.0": t, ...} for every tensor in a ModelOutput / tuple."""
    if isinstance(output, torch.Tensor):
        return {prefix: output.detach().clone().contiguous()}
    if isinstance(output, (ModelOutput, Mapping)):
        items = list(output.items())
    elif isinstance(output, (tuple, list)):
        items = [(str(index), value) for index, value in enumerate(output)]
    else:
        return {}
    flat: dict[str, torch.Tensor] = {}
    for key, value in items:
        if value is not None:
            flat.update(flatten(value, f"{prefix}.{key}"))
    return flat


def perturb_weights(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (zero-initialised ones too) and the running statistics of batch
    norms, so that the fixture pins the role of each weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1.0 + 0.2 * torch.rand(module.running_var.shape, generator=generator))


def model_outputs(name: str, model: torch.nn.Module, eager_model: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """Eval-mode outputs with hidden states (and attention weights from the eager model), sdpa logits, and one
    train-mode forward's loss / logits under a fixed global seed."""
    config = model.config
    inputs = model_inputs(config)
    labels = labels_for(model)
    extra = {"labels": labels} if labels is not None else {}
    if name.startswith("clip") and labels is None:
        extra = {"return_loss": True}
    results: dict[str, torch.Tensor] = {}
    model.eval()
    with torch.no_grad():
        results.update(flatten(model(**inputs, **extra, output_hidden_states=True), f"{name}.eval"))
        if eager_model is not None:
            eager_model.eval()
            eager = eager_model(**inputs, **extra, output_hidden_states=True, output_attentions=True)
            results.update(flatten(eager, f"{name}.eager"))
        torch.manual_seed(1234)
        model.train()
        results.update(flatten(model(**inputs, **extra), f"{name}.train"))
    model.eval()
    return results


def processor_outputs() -> dict[str, torch.Tensor]:
    """Every depth representation through `RgbdProcessor` on uint16 millimetre maps with holes, with tokens and the
    rescaled intrinsics, and each invertible representation's `to_metres`."""
    from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    depths = []
    for _ in range(2):
        ys, xs = np.mgrid[0:48, 0:64]
        depth = (800 + 40 * ys + 10 * xs + rng.integers(0, 30, (48, 64))).astype(np.uint16)
        depth[rng.random((48, 64)) < 0.15] = 0
        depths.append(depth)
    intrinsics = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    results: dict[str, torch.Tensor] = {}
    for representation in REPRESENTATIONS:
        depth_processor = RgbdDepthProcessor(
            representation=representation,
            min_depth=0.3,
            max_depth=6.0,
            depth_mean=2.0,
            depth_std=0.8,
            depth_vocab_size=16,
            depth_patch_size=8,
        )
        processor = RgbdProcessor(
            RgbdImageProcessor(
                size={"height": 24, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.2, 0.3]
            ),
            depth_processor,
        )
        batch = processor(images=images, depths=depths, intrinsics=intrinsics, return_intrinsics=True)
        results.update(flatten(dict(batch), f"processor.{representation}"))
        if representation in ("metric", "disparity", "log", "dataset"):
            metres = depth_processor.to_metres(batch["depth_values"], batch["depth_mask"], batch["intrinsics"])
            results[f"processor.{representation}.to_metres"] = metres.contiguous()
    return results


def attack_cases() -> list[tuple[str, type, dict[str, Any]]]:
    from hf_rgbd.attacks import APGD, BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM

    joint = {"pixel_values": 8 / 255, "depth_values": 0.05}
    return [
        ("fgsm", FGSM, {"budget": joint}),
        ("rfgsm", RFGSM, {"budget": joint}),
        ("bim", BIM, {"budget": joint, "steps": 3}),
        ("pgd", PGD, {"budget": joint, "steps": 3}),
        ("pgd_margin_restarts", PGD, {"budget": joint, "steps": 2, "n_restarts": 2, "loss": "margin"}),
        ("pgd_depth_targeted", PGD, {"budget": {"depth_values": 0.1}, "steps": 3, "targeted": True}),
        ("pgdl2", PGDL2, {"budget": {"pixel_values": 0.5, "depth_values": 0.3}, "steps": 3}),
        ("mifgsm", MIFGSM, {"budget": joint, "steps": 3}),
        ("apgd_ce", APGD, {"budget": joint, "steps": 4}),
        ("apgd_dlr", APGD, {"budget": joint, "steps": 4, "loss": "dlr"}),
    ]


def attack_processor():
    from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

    return RgbdProcessor(
        RgbdImageProcessor(
            size={"height": SIZE, "width": SIZE}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
        ),
        RgbdDepthProcessor(
            representation="log", min_depth=0.5, max_depth=6.0, depth_vocab_size=16, depth_patch_size=8
        ),
    )


def attack_batch(processor):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(BATCH)]
    depths = []
    for _ in range(BATCH):
        depth = rng.uniform(0.6, 5.9, (SIZE, SIZE)).astype(np.float32)
        depth[rng.random((SIZE, SIZE)) < 0.2] = 0.0
        depths.append(depth)
    images[0][:2] = 0
    images[0][2:4] = 255
    return processor(images=images, depths=depths), torch.tensor([0, 3, 1])


def attack_outputs(cnn_model: torch.nn.Module, clip_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every attack on the early-fusion CNN classifier, and PGD with the retrieval objective on the dual encoder,
    each seeded with `manual_seed(0)`: adversarial inputs, final iterates, success and norms."""
    from hf_rgbd.attacks import PGD, RetrievalObjective

    processor = attack_processor()
    batch, labels = attack_batch(processor)
    results: dict[str, torch.Tensor] = {}

    def record(prefix: str, result: Any) -> None:
        results.update(flatten(dict(result.inputs), f"{prefix}.inputs"))
        results.update(flatten(dict(result.final_inputs), f"{prefix}.final_inputs"))
        results[f"{prefix}.success"] = result.success.clone()
        results.update(flatten(dict(result.linf), f"{prefix}.linf"))
        results.update(flatten(dict(result.l2), f"{prefix}.l2"))

    cnn_model.eval()
    for name, attack_class, kwargs in attack_cases():
        attack = attack_class(cnn_model, processor=processor, **kwargs).manual_seed(0)
        attack_labels = (labels + 1) % NUM_LABELS if kwargs.get("targeted") else labels
        record(f"attack.{name}", attack.perturb(batch, attack_labels))
    clip_model.eval()
    retrieval = PGD(
        clip_model, budget={"depth_values": 0.1}, steps=3, loss=RetrievalObjective(), processor=processor
    ).manual_seed(0)
    record("attack.retrieval_pgd", retrieval.perturb(batch))
    return results
