"""`hf-rgbd demo`: which way of fusing RGB and depth learns best on the synthetic scenes, and which is most robust
when one modality or both are attacked.

Every family (CNN early, feature and multi-stage fusion; dual encoder; fusion encoder; mixture of experts) gets the
same wall-clock training budget on `make_synthetic_rgbd()`. The transformer families spend `pretrain_fraction` of
it on their own pretraining losses (ITC; ITC + ITM + MDM) and the rest on fine-tuning; the CNNs spend all of it on
classification. Every fused model is trained with modality dropout, so it also runs with one input missing; one
RGB-only and one depth-only model per backbone (CNN, ViT) with the same budget say what each input alone reaches.
Then APGD-CE attacks each fused model with RGB-only, depth-only and joint budgets on a ladder of sizes, and
`AutoAttack` at one joint budget; the report (`report.md`, PNG plots, `results.json`) and the trained models
(`save_pretrained` folders that the pipelines and `hf-rgbd app` load) go to the output directory.

Re-running with the same directory reuses every trained model and every figure already computed with the same
settings. Every file is written under a temporary name and renamed once complete.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS_SCHEMA_VERSION = 1


class DemoError(RuntimeError):
    """A problem the demo reports in one clear line (unwritable output directory, corrupted reused folder)."""


@dataclass(frozen=True)
class FamilySpec:
    """One way of fusing RGB and depth: `name` (folder and key), `title` (report), `model_type` and config
    `overrides`, and `backbone` ("cnn" or "vit": which single-modality reference models it is compared with)."""

    name: str
    title: str
    model_type: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    backbone: str = "vit"


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("cnn_early", "CNN, early fusion", "rgbd_cnn", {"fusion_type": "early"}, "cnn"),
    FamilySpec("cnn_feature", "CNN, feature fusion", "rgbd_cnn", {"fusion_type": "feature"}, "cnn"),
    FamilySpec("cnn_multi_stage", "CNN, multi-stage fusion", "rgbd_cnn", {"fusion_type": "multi_stage"}, "cnn"),
    FamilySpec("dual_encoder", "dual encoder (CLIP-style)", "rgbd_clip"),
    FamilySpec("fusion_encoder", "fusion encoder (ALBEF-style)", "rgbd_albef"),
    FamilySpec("experts", "mixture of modality experts (VLMo-style)", "rgbd_vlmo"),
)
# the single-modality references: one per backbone and input
REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("cnn_rgb", "rgbd_cnn", "rgb"),
    ("cnn_depth", "rgbd_cnn", "depth"),
    ("vit_rgb", "rgbd_clip", "rgb"),
    ("vit_depth", "rgbd_clip", "depth"),
)
THREAT_MODELS = ("rgb", "depth", "joint")


@dataclass(frozen=True)
class DemoSettings:
    """What a run does; every field is in `results.json`, and a re-run reuses only results of equal settings.

    `train_seconds` is each model's training budget (pretraining included), `ladder` the (RGB intensity, depth
    metres) budgets of the APGD-CE curves, `autoattack_budget` the joint budget of the ensemble."""

    image_size: int = 32
    config_size: str = "small"  # of the transformer families ("tiny" for the quick run); the CNNs use "small"
    vit_layers: int = 2  # layers of every transformer tower / trunk (16 patches of image_size / 4)
    num_train: int = 2000
    num_validation: int = 500
    num_test: int = 1000
    train_seconds: float = 45.0
    pretrain_fraction: float = 0.25
    batch_size: int = 64
    attack_samples: int = 100
    apgd_steps: int = 10
    ladder: tuple[tuple[float, float], ...] = ((2 / 255, 0.025), (4 / 255, 0.05), (8 / 255, 0.1))
    autoattack_samples: int = 100
    autoattack_budget: tuple[float, float] = (4 / 255, 0.05)
    square_queries: int = 1000
    grid_scenes: int = 3
    seed: int = 0


FULL = DemoSettings()
QUICK = DemoSettings(
    image_size=32, config_size="tiny", num_train=600, num_validation=200, num_test=200, train_seconds=4.0, batch_size=50,
    attack_samples=40, apgd_steps=5, ladder=((2 / 255, 0.025), (8 / 255, 0.1)), autoattack_samples=16,
    square_queries=500, grid_scenes=2,
)  # fmt: skip


def settings_dict(settings: DemoSettings) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


# ---------------------------------------------------------------------------------------------------------- files
def check_output_dir(path: str | os.PathLike) -> Path:
    """`path` created if needed and checked writable; DemoError naming it otherwise."""
    output = Path(path)
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-check-"):
            pass
    except OSError as err:
        raise DemoError(f"--output-dir {str(output)!r} is not a writable directory ({err.strerror or err}).") from None
    return output


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write `path` under a temporary name in the same folder, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.incomplete")
    temporary.write_bytes(text if isinstance(text, bytes) else text.encode())
    os.replace(temporary, path)


def save_folder_atomic(folder: Path, *saveables: Any) -> None:
    """`save_pretrained` of every object into `folder.incomplete`, renamed to `folder` once all are written."""
    temporary = folder.with_name(folder.name + ".incomplete")
    shutil.rmtree(temporary, ignore_errors=True)
    for saveable in saveables:
        saveable.save_pretrained(temporary)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(temporary, folder)


def load_reused(loader: Callable[..., Any], folder: Path, **kwargs: Any) -> Any:
    """`loader(folder)` for a folder a previous run saved; DemoError naming it when it cannot be read."""
    try:
        return loader(folder, **kwargs)
    except Exception as err:  # a truncated file raises anything from OSError to SafetensorError
        raise DemoError(
            f"the reused model folder {str(folder)!r} is corrupted ({type(err).__name__}: {err}); delete it to train "
            "that model again, or pass another --output-dir."
        ) from None


# ------------------------------------------------------------------------------------------------------- models
def _config(model_type: str, settings: DemoSettings, label_names: list[str], **overrides: Any):
    from .registration import preset_config
    from .training.finetune import _labels_kwargs

    size = "small" if model_type == "rgbd_cnn" else settings.config_size
    _, factory = preset_config(f"{model_type}:{size}")
    return factory(**_labels_kwargs(label_names), **overrides)


def _classification_settings(model_type: str, modalities: str) -> dict[str, Any]:
    """`modalities`, modality dropout and auxiliary-loss weight as `hf-rgbd finetune` sets them by default."""
    from .registration import preset_config
    from .training.finetune import ModelArguments
    from .training.finetune import _classification_settings as finetune_settings

    config_class, _ = preset_config(model_type)
    return finetune_settings(config_class, ModelArguments(model_name_or_path=model_type, modalities=modalities))


def _model_classes(model_type: str) -> dict[str, Any]:
    from . import modeling

    prefix = {"rgbd_cnn": "RgbdCnn", "rgbd_clip": "RgbdClip", "rgbd_albef": "RgbdAlbef", "rgbd_vlmo": "RgbdVlmo"}[model_type]
    classes = {"classification": getattr(modeling, f"{prefix}ForImageClassification")}
    if model_type == "rgbd_clip":
        classes["pretraining"] = modeling.RgbdClipModel
    elif model_type in ("rgbd_albef", "rgbd_vlmo"):
        classes["pretraining"] = getattr(modeling, f"{prefix}ForPreTraining")
        classes["matching"] = getattr(modeling, f"{prefix}ForRgbdMatching")
    return classes


def _step_seconds(model: torch.nn.Module, step: Callable[[torch.nn.Module, torch.optim.Optimizer], None]) -> float:
    """Seconds of one training step of a copy of `model` (median of 3 after one warm-up); the model is untouched."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=1e-6)
    times = []
    for repetition in range(4):
        start = time.perf_counter()
        step(probe, optimizer)
        if repetition:
            times.append(time.perf_counter() - start)
    return sorted(times)[1]


def _subset(inputs: Mapping[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value[index] for key, value in inputs.items()}


def pretrain_for(
    model,
    inputs: Mapping[str, torch.Tensor],
    seconds: float,
    settings: DemoSettings,
    depth_tokens: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Pretrain `model` (its own losses: `model(**batch).loss`) in place for about `seconds`: the number of steps
    is the budget over one measured step, under the library's pretraining optimizer and a warm-up + cosine
    schedule; batches drawn from a seeded generator with aligned flips and shifts. `depth_tokens(batch)` gives
    the depth words of an augmented batch (the fusion families' MDM targets)."""
    from transformers import get_cosine_schedule_with_warmup

    from .data.augmentation import random_flip_shift
    from .training.pretrain import pretraining_optimizer

    count = next(iter(inputs.values())).shape[0]
    generator = torch.Generator().manual_seed(settings.seed)
    batch_size = min(settings.batch_size * 2, count)  # contrastive losses want large batches

    def batch_at(index: torch.Tensor) -> dict[str, torch.Tensor]:
        images = random_flip_shift(_subset(inputs, index), generator)
        images["depth_mask"] = images["depth_mask"].bool()
        if depth_tokens is not None:
            images["depth_token_ids"] = depth_tokens(images)
        return images

    def step(target, optimizer) -> float:
        index = torch.randperm(count, generator=generator)[:batch_size]
        loss = target(**batch_at(index)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in target.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        if callable(getattr(target, "momentum_update", None)):
            target.momentum_update()
        return float(loss.detach())

    steps = max(1, int(seconds / _step_seconds(model, step)))
    optimizer = pretraining_optimizer(model, 1e-3, 0.05, 10.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    model.train()
    start, losses = time.perf_counter(), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for _ in range(steps):
            losses.append(step(model, optimizer))
            scheduler.step()
    model.eval()
    return {"steps": steps, "seconds": time.perf_counter() - start, "first_loss": losses[0], "last_loss": losses[-1]}


def train_for(model, train, validation, seconds: float, settings: DemoSettings) -> dict[str, Any]:
    """`train_classifier` for the number of epochs nearest to what fits `seconds` (one measured step times the
    steps per epoch, plus the validation pass), at least one, stopping after the epoch that reaches `seconds`;
    returns what it measured."""
    from .training import train_classifier

    inputs, labels = train
    count = labels.shape[0]
    generator = torch.Generator().manual_seed(settings.seed)

    def step(target, optimizer) -> None:
        index = torch.randperm(count, generator=generator)[: settings.batch_size]
        loss = target(**_subset(inputs, index), labels=labels[index]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_seconds = _step_seconds(model, step)
    steps_per_epoch = -(-count // settings.batch_size)
    validation_seconds = step_seconds * validation[1].shape[0] / settings.batch_size / 3  # forward only
    epochs = max(1, round(seconds / (step_seconds * steps_per_epoch + validation_seconds)))
    result = train_classifier(
        model, inputs, labels, *validation, epochs=epochs, batch_size=settings.batch_size, seed=settings.seed,
        max_grad_norm=1.0, disable_tqdm=True, max_seconds=seconds if seconds > 0 else None,
    )  # fmt: skip
    return {
        "epochs": len(result.loss_history), "scheduled_epochs": epochs, "seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "best_validation_accuracy": result.best_validation_accuracy,
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------------- data
class DemoData:
    """The synthetic splits and, per processor (one per model type), their model inputs."""

    def __init__(self, settings: DemoSettings, threads: int | None) -> None:
        from .data import make_synthetic_rgbd

        self.settings = settings
        self.splits = make_synthetic_rgbd(
            num_train=settings.num_train, num_validation=settings.num_validation, num_test=settings.num_test,
            image_size=settings.image_size, seed=settings.seed, num_threads=threads,
        )  # fmt: skip
        self.label_names = self.splits["train"].features["label"].names
        self._inputs: dict[str, dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]] = {}

    def processor(self, config):
        from .training.finetune import default_processor

        return default_processor(config, self.splits["train"], self.settings.image_size)

    def inputs(self, processor) -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """{split: (inputs, labels)} processed by `processor` (cached per depth representation)."""
        from .data import split_to_tensors

        key = processor.to_json_string()
        if key not in self._inputs:
            self._inputs[key] = {name: split_to_tensors(split, processor) for name, split in self.splits.items()}
        return self._inputs[key]


def _depth_tokens_for(config, processor) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None:
    """The MDM targets of a batch (its depth words, as `hf-rgbd pretrain` makes them); None without MDM."""
    from .processors import depth_token_ids
    from .training.pretrain import pretraining_depth_vocab

    vocab = pretraining_depth_vocab(config)
    if vocab is None:
        return None

    def tokens(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        metres = processor.depth_image_processor.to_metres(batch["depth_values"], batch["depth_mask"])
        return depth_token_ids(metres, batch["depth_mask"], *vocab)

    return tokens


# ----------------------------------------------------------------------------------------------------- training
def train_model(name: str, model_type: str, modalities: str, overrides: Mapping[str, Any], data: DemoData,
                models_dir: Path, cached: dict[str, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
    """(classifier, processor, record) of one model: loaded from `models_dir/name` when a previous run with the
    same settings saved it there (`cached` is its record), else trained within the budget and saved."""
    from transformers import AutoModelForImageClassification, AutoProcessor

    settings = data.settings
    folder = models_dir / name
    if cached is not None and (folder / "config.json").exists():
        model = load_reused(AutoModelForImageClassification.from_pretrained, folder).eval()
        processor = load_reused(AutoProcessor.from_pretrained, folder)
        return model, processor, cached
    classes = _model_classes(model_type)
    config = _config(model_type, settings, data.label_names, **overrides, **_classification_settings(model_type, modalities))
    processor = data.processor(config)
    splits = data.inputs(processor)
    record: dict[str, Any] = {"model_type": model_type, "modalities": modalities, "folder": str(folder)}
    budget = settings.train_seconds
    torch.manual_seed(settings.seed)
    if "pretraining" in classes and modalities == "rgbd":
        pretraining_config = _config(model_type, settings, data.label_names, **overrides, modalities="rgbd")
        pretraining = classes["pretraining"]._from_config(pretraining_config)
        tokens = _depth_tokens_for(config, processor)
        pretrain_seconds = budget * settings.pretrain_fraction
        record["pretraining"] = pretrain_for(pretraining, splits["train"][0], pretrain_seconds, settings, tokens)
        pretrained_folder = models_dir / f"{name}_pretrained"
        save_folder_atomic(pretrained_folder, pretraining, processor)
        record["pretrained_folder"] = str(pretrained_folder)
        model = classes["classification"].from_pretrained(pretrained_folder, **_classification_settings(model_type, modalities),
                                                          num_labels=config.num_labels, id2label=config.id2label,
                                                          label2id=config.label2id)
        budget -= record["pretraining"]["seconds"]
    else:
        model = classes["classification"]._from_config(config)
    record["training"] = train_for(model, splits["train"], splits["validation"], max(budget, 0.0), settings)
    record["train_seconds"] = record["training"]["seconds"] + record.get("pretraining", {}).get("seconds", 0.0)
    record["parameters"] = sum(p.numel() for p in model.parameters())
    save_folder_atomic(folder, model, processor)
    return model.eval(), processor, record


# --------------------------------------------------------------------------------------------------- evaluation
def clean_accuracies(model, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, modalities: str) -> dict[str, float]:
    """Test accuracy with the model's inputs; for a fused model also with depth missing and with RGB missing."""
    from .training import classification_accuracy

    if modalities == "rgb":
        return {"rgb": classification_accuracy(model, {"pixel_values": inputs["pixel_values"]}, labels, disable_tqdm=True)}
    depth = {key: inputs[key] for key in ("depth_values", "depth_mask")}
    if modalities == "depth":
        return {"depth": classification_accuracy(model, depth, labels, disable_tqdm=True)}
    return {
        "rgbd": classification_accuracy(model, inputs, labels, disable_tqdm=True),
        "depth_missing": classification_accuracy(model, {"pixel_values": inputs["pixel_values"]}, labels, disable_tqdm=True),
        "rgb_missing": classification_accuracy(model, depth, labels, disable_tqdm=True),
    }


def threat_budget(threat: str, rgb: float, depth: float) -> dict[str, float]:
    return {"rgb": {"pixel_values": rgb}, "depth": {"depth_values": depth}, "joint": {"pixel_values": rgb, "depth_values": depth}}[threat]


def robustness(model, processor, split, settings: DemoSettings) -> dict[str, Any]:
    """APGD-CE robust accuracy per threat model over the ladder, and AutoAttack (joint) at one budget, through
    `evaluate_robustness` on the first test samples."""
    from .attacks import APGD, AutoAttack
    from .evaluation import evaluate_robustness

    subset = split.select(range(min(settings.attack_samples, split.num_rows)))
    attacks = {}
    for threat in THREAT_MODELS:
        for rgb, depth in settings.ladder:
            attacks[f"{threat}|{rgb}|{depth}"] = APGD(
                model, threat_budget(threat, rgb, depth), steps=settings.apgd_steps, processor=processor, seed=settings.seed
            )
    start = time.perf_counter()
    report = evaluate_robustness(model, processor, subset, attacks)
    apgd_seconds = time.perf_counter() - start
    curves = {threat: [] for threat in THREAT_MODELS}
    for key, row in report["attacks"].items():
        threat, rgb, depth = key.split("|")
        curves[threat].append({"rgb_budget": float(rgb), "depth_budget_m": float(depth), "robust_accuracy": row["robust_accuracy"]})
    rgb, depth = settings.autoattack_budget
    ensemble_subset = split.select(range(min(settings.autoattack_samples, split.num_rows)))
    ensemble = AutoAttack(model, threat_budget("joint", rgb, depth), threat_model="joint", processor=processor,
                          seed=settings.seed, square_queries=settings.square_queries)  # fmt: skip
    start = time.perf_counter()
    ensemble_report = evaluate_robustness(model, processor, ensemble_subset, {"autoattack": ensemble})
    ensemble_seconds = time.perf_counter() - start
    row = ensemble_report["attacks"]["autoattack"]
    return {
        "samples": subset.num_rows, "clean_accuracy": report["clean_accuracy"], "apgd_steps": settings.apgd_steps,
        "curves": curves, "apgd_seconds": apgd_seconds,
        "autoattack": {
            "seconds": ensemble_seconds, "square_queries": settings.square_queries,
            "samples": ensemble_subset.num_rows, "threat_model": "joint", "rgb_budget": rgb, "depth_budget_m": depth,
            "clean_accuracy": ensemble_report["clean_accuracy"], "robust_accuracy": row["robust_accuracy"],
            "robust_accuracy_after": row.get("robust_accuracy_after", {}),
        },
    }  # fmt: skip


def adversarial_examples(model, processor, inputs, labels, settings: DemoSettings) -> dict[str, torch.Tensor]:
    """Clean and APGD-CE (joint, the AutoAttack budget) RGB in [0, 1] and depth in metres of the first
    `grid_scenes` test scenes, with both predictions."""
    from .attacks import APGD, physical_inputs

    count = settings.grid_scenes
    batch = {key: value[:count] for key, value in inputs.items() if key in ("pixel_values", "depth_values", "depth_mask")}
    attack = APGD(model, threat_budget("joint", *settings.autoattack_budget), steps=settings.apgd_steps,
                  processor=processor, seed=settings.seed)
    adversarial = attack.perturb(batch, labels[:count]).inputs
    clean, attacked = physical_inputs(batch, processor), physical_inputs(adversarial, processor)
    with torch.no_grad():
        predictions = [model(**b).logits.argmax(-1) for b in (batch, {k: adversarial[k] for k in batch})]
    return {
        "rgb": clean["pixel_values"], "rgb_adv": attacked["pixel_values"],
        "depth": clean["depth_values"], "depth_adv": attacked["depth_values"],
        "mask": batch["depth_mask"], "labels": labels[:count], "clean_predictions": predictions[0],
        "adversarial_predictions": predictions[1],
    }  # fmt: skip


def retrieval_and_matching(record: dict[str, Any], data: DemoData) -> dict[str, Any]:
    """Held-out RGB -> depth R@1 of the pretrained ITC embeddings; for the fusion families ITM accuracy on the
    test positives and, for each, the depth map the ITC ranks highest among the wrong ones."""
    import torch.nn.functional as F
    from transformers import AutoProcessor

    from .evaluation import retrieval_metrics

    folder = Path(record["pretrained_folder"])
    classes = _model_classes(record["model_type"])
    pretraining = load_reused(classes["pretraining"].from_pretrained, folder).eval()
    processor = load_reused(AutoProcessor.from_pretrained, folder)
    inputs, _ = data.inputs(processor)["test"]
    trunk = pretraining if record["model_type"] == "rgbd_clip" else pretraining.base_model
    with torch.no_grad():
        rgb = F.normalize(trunk.get_rgb_features(inputs["pixel_values"]).pooler_output, dim=-1)
        depth = F.normalize(trunk.get_depth_features(inputs["depth_values"], inputs["depth_mask"]).pooler_output, dim=-1)
    metrics = retrieval_metrics(rgb, depth)
    result = {"rgb_to_depth_R@1": metrics["rgb_to_depth_R@1"], "depth_to_rgb_R@1": metrics["depth_to_rgb_R@1"],
              "gallery": metrics["num_pairs"]}
    if "matching" in classes:
        matching = load_reused(classes["matching"].from_pretrained, folder).eval()
        similarity = rgb @ depth.t()
        count = similarity.shape[0]
        hardest = similarity.masked_fill(torch.eye(count, dtype=torch.bool), float("-inf")).argmax(dim=1)
        with torch.no_grad():
            positive = matching(**inputs).itm_score.argmax(-1) == 1
            negatives = dict(inputs, depth_values=inputs["depth_values"][hardest], depth_mask=inputs["depth_mask"][hardest])
            negative = matching(**negatives).itm_score.argmax(-1) == 0
        result["itm_accuracy"] = float(torch.cat([positive, negative]).float().mean())
    return result


# -------------------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save_figure(figure, path: Path) -> str:
    temporary = path.with_name(f".{path.stem}.incomplete.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    os.replace(temporary, path)
    return path.name


def plot_accuracy(results: dict[str, Any], path: Path) -> str:
    plt = _pyplot()
    families = results["families"]
    names = [spec.name for spec in FAMILIES if spec.name in families]
    columns = (("rgbd", "RGB + depth"), ("depth_missing", "depth missing (RGB only)"), ("rgb_missing", "RGB missing (depth only)"))
    figure, axis = plt.subplots(figsize=(11, 4.2))
    width = 0.26
    for offset, (key, label) in enumerate(columns):
        values = [100 * families[name]["clean"][key] for name in names]
        axis.bar([i + (offset - 1) * width for i in range(len(names))], values, width, label=label)
    for index, (name, _, modality) in enumerate(REFERENCES):
        if name in results["references"]:
            value = 100 * results["references"][name]["clean"][modality]
            axis.axhline(value, color=f"C{3 + index}", linestyle="--", linewidth=1, label=f"{name.replace('_', ' ')}-only model")
    axis.set_xticks(range(len(names)), [families[name]["title"].replace(" (", "\n(") for name in names], fontsize=8)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Clean test accuracy: each family fused, with one input missing, and single-input models")
    axis.legend(fontsize=7, ncol=4, loc="upper center")  # above the bars, which stay below 100% - legend height
    axis.set_ylim(0, 118)
    axis.set_yticks(range(0, 101, 20))
    return _save_figure(figure, path)


def plot_robustness(results: dict[str, Any], settings: DemoSettings, path: Path) -> str:
    plt = _pyplot()
    families = results["families"]
    names = [spec.name for spec in FAMILIES if spec.name in families]
    columns = 3
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False, sharey=True)
    ticks = [f"{rgb * 255:g}/255\n{depth:g} m" for rgb, depth in settings.ladder]
    for axis, name in zip(axes.flat, names, strict=False):
        curves = families[name]["robustness"]["curves"]
        axis.plot(range(-1, len(ticks)), [100 * families[name]["robustness"]["clean_accuracy"]] * (len(ticks) + 1),
                  color="grey", linestyle=":", linewidth=1, label="clean")
        for threat in THREAT_MODELS:
            axis.plot(range(len(ticks)), [100 * row["robust_accuracy"] for row in curves[threat]], marker="o", label=threat)
        axis.set_xticks(range(len(ticks)), ticks, fontsize=7)
        axis.set_xlim(-0.3, len(ticks) - 0.7)
        axis.set_title(families[name]["title"], fontsize=9)
        axis.set_ylim(0, 100)
    for axis in axes.flat[len(names):]:
        axis.axis("off")
    axes[0][0].set_ylabel("robust accuracy (%)")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"APGD-CE ({settings.apgd_steps} steps): robust accuracy against the budget (RGB, depth)", fontsize=10)
    figure.subplots_adjust(hspace=0.5)  # room for the two-line budget ticks above the next row's titles
    return _save_figure(figure, path)


def plot_examples(examples: dict[str, torch.Tensor], title: str, label_names: list[str], path: Path) -> str:
    plt = _pyplot()
    count = examples["rgb"].shape[0]
    figure, axes = plt.subplots(count, 6, figsize=(13, 2.3 * count), squeeze=False)
    headers = ("clean RGB", "adversarial RGB", "|RGB change| (x10)", "clean depth (m)", "adversarial depth (m)", "depth change (m)")
    for row in range(count):
        rgb, rgb_adv = examples["rgb"][row].permute(1, 2, 0), examples["rgb_adv"][row].permute(1, 2, 0)
        depth, depth_adv = examples["depth"][row, 0], examples["depth_adv"][row, 0]
        valid = examples["mask"][row, 0]
        top = float(depth[valid].max()) if valid.any() else 1.0
        change = (depth_adv - depth).masked_fill(~valid, 0.0)
        limit = max(float(change.abs().max()), 1e-6)
        panels = (
            (rgb.clamp(0, 1), {}), (rgb_adv.clamp(0, 1), {}), (((rgb_adv - rgb).abs() * 10).clamp(0, 1), {}),
            (depth.masked_fill(~valid, float("nan")), {"cmap": "viridis", "vmin": 0, "vmax": top}),
            (depth_adv.masked_fill(~valid, float("nan")), {"cmap": "viridis", "vmin": 0, "vmax": top}),
            (change, {"cmap": "coolwarm", "vmin": -limit, "vmax": limit}),
        )  # fmt: skip
        for column, (image, options) in enumerate(panels):
            axis = axes[row][column]
            shown = axis.imshow(image.numpy(), **options)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(headers[column], fontsize=8)
            if column >= 3:
                figure.colorbar(shown, ax=axis, fraction=0.046)
        truth = label_names[int(examples["labels"][row])]
        axes[row][0].set_ylabel(
            f"true {truth}\nclean: {label_names[int(examples['clean_predictions'][row])]}\n"
            f"attacked: {label_names[int(examples['adversarial_predictions'][row])]}", fontsize=7,
        )  # fmt: skip
    figure.suptitle(title, fontsize=10)
    return _save_figure(figure, path)


def plot_retrieval(results: dict[str, Any], path: Path) -> str:
    plt = _pyplot()
    rows = [(families["title"], families["retrieval"]) for name, families in results["families"].items() if "retrieval" in families]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    axis.bar([i - width / 2 for i in range(len(rows))], [100 * r["rgb_to_depth_R@1"] for _, r in rows], width, label="RGB->depth R@1")
    axis.bar([i + width / 2 for i in range(len(rows))], [100 * r.get("itm_accuracy", float("nan")) for _, r in rows], width,
             label="ITM accuracy (hard negatives)")
    axis.set_xticks(range(len(rows)), [title.replace(" (", "\n(") for title, _ in rows], fontsize=8)
    axis.set_ylim(0, 100)
    axis.set_ylabel("%")
    axis.set_title(f"Retrieval ({rows[0][1]['gallery']}-pair gallery) and matching after pretraining" if rows else "", fontsize=9)
    axis.legend(fontsize=7)
    return _save_figure(figure, path)


# ------------------------------------------------------------------------------------------------------- report
def _percent(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def write_report(results: dict[str, Any], settings: DemoSettings, output: Path) -> str:
    """`report.md` from `results` (every number in it comes from `results.json`)."""
    families, references = results["families"], results["references"]
    names = [spec.name for spec in FAMILIES if spec.name in families]
    lines = [
        "# hf-rgbd demo: which fusion learns best, and which is most robust",
        "",
        f"Synthetic scenes (`make_synthetic_rgbd`, {settings.num_train} / {settings.num_validation} / {settings.num_test} "
        f"scenes at {settings.image_size}x{settings.image_size}, seed {settings.seed}); every model trained for "
        f"{settings.train_seconds:g} s of wall-clock time (the transformer families spend {settings.pretrain_fraction:.0%} "
        f"of it pretraining). Run: {results['wall_seconds']:.0f} s, "
        f"{results.get('workers', 1)} model(s) at a time on {results['threads']} thread(s) each"
        + (" (quick)." if results["quick"] else "."),
        "",
        "## Clean accuracy",
        "",
        "| family | parameters | trained (s) | epochs | RGB + depth | depth missing | RGB missing |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        row = families[name]
        clean = row["clean"]
        lines.append(
            f"| {row['title']} | {row['parameters'] / 1e6:.2f} M | {row['train_seconds']:.1f} | {row['training']['epochs']} | "
            f"{_percent(clean['rgbd'])} | {_percent(clean['depth_missing'])} | {_percent(clean['rgb_missing'])} |"
        )
    lines += ["", "Single-input models with the same budget:", "", "| model | input | test accuracy |", "|---|---|---|"]
    for name, _, modality in REFERENCES:
        if name in references:
            lines.append(f"| {name.split('_')[0].upper()} | {modality} | {_percent(references[name]['clean'][modality])} |")
    lines += ["", "![accuracy](accuracy.png)", "", "## Robustness", ""]
    ladder = settings.ladder
    header = " | ".join(f"{rgb * 255:g}/255, {depth:g} m" for rgb, depth in ladder)
    lines += [
        f"APGD-CE, {settings.apgd_steps} steps, on the first {settings.attack_samples} test scenes: robust accuracy per "
        "threat model (the RGB budget for `rgb`, the depth budget for `depth`, both for `joint`).",
        "",
        f"| family | threat | clean | {header} |",
        "|---|---|---|" + "---|" * len(ladder),
    ]
    for name in names:
        robust = families[name]["robustness"]
        for threat in THREAT_MODELS:
            values = " | ".join(_percent(row["robust_accuracy"]) for row in robust["curves"][threat])
            lines.append(f"| {families[name]['title']} | {threat} | {_percent(robust['clean_accuracy'])} | {values} |")
    rgb, depth = settings.autoattack_budget
    lines += [
        "", "![robustness](robustness.png)", "",
        f"AutoAttack (standard, Square with {settings.square_queries} queries; joint threat model, {rgb * 255:g}/255 "
        f"and {depth:g} m) on the first "
        f"{settings.autoattack_samples} test scenes, robust accuracy after each attack:", "",
    ]  # fmt: skip
    attack_names = next((list(f["robustness"]["autoattack"]["robust_accuracy_after"]) for f in families.values()), [])
    lines += [
        "| family | clean | " + " | ".join(f"after {a}" for a in attack_names) + " |",
        "|---|---|" + "---|" * len(attack_names),
    ]
    for name in names:
        ensemble = families[name]["robustness"]["autoattack"]
        after = " | ".join(_percent(ensemble["robust_accuracy_after"].get(a)) for a in attack_names)
        lines.append(f"| {families[name]['title']} | {_percent(ensemble['clean_accuracy'])} | {after} |")
    with_retrieval = [name for name in names if "retrieval" in families[name]]
    if with_retrieval:
        lines += ["", "## Retrieval and matching after pretraining", "", "| family | RGB->depth R@1 | depth->RGB R@1 | ITM accuracy |", "|---|---|---|---|"]
        for name in with_retrieval:
            r = families[name]["retrieval"]
            lines.append(f"| {families[name]['title']} | {_percent(r['rgb_to_depth_R@1'])} | {_percent(r['depth_to_rgb_R@1'])} | {_percent(r.get('itm_accuracy'))} |")
        lines += ["", "![retrieval](retrieval.png)"]
    lines += ["", "## Adversarial examples", "", f"APGD-CE, joint, {rgb * 255:g}/255 and {depth:g} m, on the first test scenes.", ""]
    for name in names:
        lines += [f"![{name}](examples_{name}.png)", ""]
    lines += ["## Models", "", "Saved with `save_pretrained` (load with `pipeline(\"rgbd-image-classification\", model=FOLDER)`):", ""]
    for name in names:
        lines.append(f"- {families[name]['title']}: `{families[name]['folder']}`")
    text = "\n".join(lines) + "\n"
    write_atomic(output / "report.md", text)
    return text


# ---------------------------------------------------------------------------------------------------------- run
def _model_job(job: tuple, data: DemoData, models_dir: Path) -> tuple[str, str, dict[str, Any], dict | None]:
    """Train (or reuse), evaluate and, for a family, attack one model: (group, name, record, examples)."""
    group, name, model_type, modalities, overrides, cached = job
    settings = data.settings
    overrides = {**_size_overrides(model_type, settings), **overrides}
    model, processor, record = train_model(name, model_type, modalities, overrides, data, models_dir, cached)
    record = dict(record)
    test_inputs, test_labels = data.inputs(processor)["test"]
    if "clean" not in record:
        record["clean"] = clean_accuracies(model, test_inputs, test_labels, modalities)
    example = None
    if group == "families":
        spec = next(spec for spec in FAMILIES if spec.name == name)
        record["title"] = spec.title
        if "robustness" not in record:
            record["robustness"] = robustness(model, processor, data.splits["test"], settings)
        if "pretrained_folder" in record and "retrieval" not in record:
            record["retrieval"] = retrieval_and_matching(record, data)
        example = adversarial_examples(model, processor, test_inputs, test_labels, settings)
    return group, name, record, example


_WORKER_DATA: dict[str, DemoData] = {}  # the synthetic splits of a worker process, made once by `_start_worker`


def _start_worker(settings: DemoSettings, threads: int, bars_disabled: bool) -> None:
    from transformers.utils import logging as transformers_logging

    from .utils import disable_progress_bars

    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    if bars_disabled:
        disable_progress_bars()
    _WORKER_DATA["data"] = DemoData(settings, threads)


def _worker_job(job: tuple, models_dir: Path):
    return _model_job(job, _WORKER_DATA["data"], models_dir)


def default_workers() -> int:
    """Models trained at once by default: one per CPU this process may use, at most 2 (the demo's budgets are
    sized for the 2-core machine: more workers would shorten the run, not change a figure)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cpus))


def _run_jobs(jobs: list[tuple], settings: DemoSettings, models_dir: Path, threads: int | None, workers: int):
    """Yield `_model_job`'s result for every job, as each finishes: in this process when `workers` is 1, else in
    `workers` spawned processes of `threads` torch threads each (every model's budget is its own wall clock, so a
    worker per core trains each model as one process alone would)."""
    if workers == 1:
        data = DemoData(settings, threads)
        for job in jobs:
            yield _model_job(job, data, models_dir)
        return
    import multiprocessing

    from .utils import are_progress_bars_disabled

    context = multiprocessing.get_context("spawn")
    per_worker = threads if threads is not None else 1
    with context.Pool(workers, _start_worker, (settings, per_worker, are_progress_bars_disabled())) as pool:
        # jobs handed out in order (the longest first), results as they finish; a worker's error (e.g. DemoError)
        # is raised here, and leaving the block terminates the pool
        yield from pool.imap_unordered(functools.partial(_worker_job, models_dir=models_dir), jobs)
        pool.close()
        pool.join()


def _size_overrides(model_type: str, settings: DemoSettings) -> dict[str, Any]:
    """Config overrides that size the transformer families for the demo: towers of `settings.vit_layers` layers
    at `settings.image_size` with 16 patches, one fusion layer (fusion encoder) or one layer of fusion experts."""
    if model_type == "rgbd_cnn":
        return {}
    tower = {"image_size": settings.image_size, "patch_size": settings.image_size // 4, "num_hidden_layers": settings.vit_layers}
    overrides: dict[str, Any] = {"rgb_config": tower, "depth_config": tower}
    if model_type == "rgbd_vlmo":
        overrides["num_fusion_layers"] = 1
    if model_type == "rgbd_albef":
        overrides["fusion_config"] = {**tower, "num_hidden_layers": 1}
    return overrides


def run_demo(output_dir: str | os.PathLike, quick: bool = False, threads: int | None = None,
             log: Callable[[str], None] = print, workers: int | None = None) -> dict[str, Any]:
    """The whole demo (see the module docstring); returns what `results.json` holds. transformers' own loading
    bars and load reports (the new classifier heads are expected) are silenced while it runs."""
    from transformers.utils import logging as transformers_logging

    bars, verbosity = transformers_logging.is_progress_bar_enabled(), transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        return _run_demo(output_dir, quick, threads, log, default_workers() if workers is None else workers)
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def _run_demo(output_dir: str | os.PathLike, quick: bool, threads: int | None, log: Callable[[str], None], workers: int):
    from .data.synthetic import CLASS_NAMES  # the synthetic scenes' label names
    from .utils import check_int, progress_bar

    check_int(workers, "workers", 1)
    start = time.perf_counter()
    output = check_output_dir(output_dir)
    models_dir = output / "models"
    models_dir.mkdir(exist_ok=True)
    settings = QUICK if quick else FULL
    results_path = output / "results.json"
    previous: dict[str, Any] = {}
    if results_path.exists():
        try:
            previous = json.loads(results_path.read_text())
        except json.JSONDecodeError as err:
            raise DemoError(f"{str(results_path)!r} is not valid JSON ({err}); delete it to start again.") from None
        if previous.get("settings") != settings_dict(settings) or previous.get("schema_version") != RESULTS_SCHEMA_VERSION:
            log(f"{results_path} holds another run's settings: training everything again")
            previous = {}
    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION, "settings": settings_dict(settings), "quick": quick,
        "threads": torch.get_num_threads() if workers == 1 else (threads or 1), "workers": workers,
        # what a previous run with these settings computed stays until this run has redone it
        "families": dict(previous.get("families", {})), "references": dict(previous.get("references", {})),
    }  # fmt: skip

    def save() -> None:
        write_atomic(results_path, json.dumps({"wall_seconds": time.perf_counter() - start, **results}, indent=2))

    # the families first: they are attacked too, so the longest jobs start first
    jobs = [("families", spec.name, spec.model_type, "rgbd", dict(spec.overrides)) for spec in FAMILIES]
    jobs += [("references", name, model_type, modality, {}) for name, model_type, modality in REFERENCES]
    jobs = [(*job, previous.get(job[0], {}).get(job[1])) for job in jobs]
    examples = {}
    with progress_bar(total=len(jobs), desc="Demo", unit="model") as bar:
        for group, name, record, example in _run_jobs(jobs, settings, models_dir, threads, workers):
            results[group][name] = record
            if example is not None:
                examples[name] = example
            save()
            bar.set_postfix_str(f"{name} done")
            bar.update()
            log(f"{name}: " + ", ".join(f"{key} {_percent(value)}" for key, value in record["clean"].items()))
    figures = [plot_accuracy(results, output / "accuracy.png"), plot_robustness(results, settings, output / "robustness.png")]
    for name, example in examples.items():
        title = f"{results['families'][name]['title']}: APGD-CE, joint budget"
        figures.append(plot_examples(example, title, list(CLASS_NAMES), output / f"examples_{name}.png"))
    if any("retrieval" in row for row in results["families"].values()):
        figures.append(plot_retrieval(results, output / "retrieval.png"))
    results["figures"] = figures
    results["wall_seconds"] = time.perf_counter() - start
    write_report(results, settings, output)
    save()
    return json.loads(results_path.read_text())
