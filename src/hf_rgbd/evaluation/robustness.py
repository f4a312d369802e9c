"""Robustness evaluation of an RGB-D classifier under a set of attacks."""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature

from ..attacks import AttackResult, AutoAttack, RgbdAttack
from ..attacks.base import model_device, model_inputs
from ..data.splits import split_to_tensors
from ..processors.validation_rgbd import check_int
from ..utils import progress_bar


def _batches(processor: Any, dataset: Any, batch_size: int) -> list[tuple[BatchFeature, torch.Tensor]]:
    """Process the split once (`split_to_tensors`, with the rescaled intrinsics): a list of (batch, labels (B,))."""
    inputs, labels = split_to_tensors(dataset, processor, return_intrinsics=True)
    return [
        (
            BatchFeature({key: value[start : start + batch_size] for key, value in inputs.items()}),
            labels[start : start + batch_size],
        )
        for start in range(0, labels.shape[0], batch_size)
    ]


def _modality_group(attack: RgbdAttack) -> str:
    names = set(attack.budget)
    return "joint" if len(names) == 2 else ("rgb" if "pixel_values" in names else "depth")


def _split_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W+", "_", name).strip("_") or "attack"
    candidate, index = base, 1
    while candidate in taken:
        index += 1
        candidate = f"{base}_{index}"
    taken.add(candidate)
    return candidate


def evaluate_robustness(
    model: torch.nn.Module,
    processor: Any,
    dataset: Any,
    attacks: Mapping[str, RgbdAttack] | None = None,
    batch_size: int = 64,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Clean and robust accuracy of a classifier on a data split, per attack.

    Args:
        model: an RGB-D classifier (`model(**batch).logits`, (B, K)).
        processor ([`RgbdProcessor`]): turns the split's `image`, `depth` (metres) and `intrinsics` into model
            inputs. Attacks should be built with the same processor (budgets in physical units).
        dataset: a split as `make_synthetic_rgbd` returns it (`image`, `depth`, `label`, optionally `intrinsics`).
        attacks (`dict[str, RgbdAttack]`, *optional*): name -> untargeted attack on `model`, [`AutoAttack`]
            included. Default: `{"autoattack": AutoAttack(model, processor=processor)}` (the standard L-inf ensemble,
            8/255 on RGB and 0.05 m on depth, both at once).
        batch_size (`int`, defaults to 64): samples per batch.
        output_dir (`str`, *optional*): where to write `robustness.json`, accuracy-versus-budget curves
            (`accuracy_vs_budget_{rgb,depth,joint}.png`, one per kind of attack present: RGB-only, depth-only, joint;
            joint attacks are plotted against their RGB budget) and the adversarial examples as a
            `datasets.DatasetDict` saved with `save_to_disk` in `adversarial_examples/` (one split per attack, its
            name made a valid split name; float32 model inputs stored exactly as `Array3D` features, plus `index`,
            `label`, `clean_prediction`, `adversarial_prediction`).

    Returns:
        `dict` with `num_samples`, `num_ignored` (samples labelled -100: left unperturbed and out of every rate),
        `clean_accuracy` (over the other samples) and `attacks`: per name, `robust_accuracy` (fraction of the
        counted samples classified correctly after the attack), `success_rate` (fraction of the clean-correct
        samples the attack misclassifies), `budget`, for an `AutoAttack` `robust_accuracy_after` (the robust accuracy
        after each of its attacks, in order), and `perturbation` per attacked input in physical units (RGB intensity,
        depth metres): `mean_linf`, `max_linf`, `mean_l2`, `max_l2` over the counted samples. With `output_dir`, also
        `figures` (paths) and `examples_path`.
    """
    if attacks is None:
        attacks = {"autoattack": AutoAttack(model, processor=processor)}
    if not isinstance(attacks, Mapping) or not attacks:
        raise ValueError("`attacks` must be a non-empty dict name -> attack.")
    for name, attack in attacks.items():
        if not isinstance(attack, RgbdAttack):
            raise ValueError(f"`attacks[{name!r}]` must be an hf-rgbd attack, got {type(attack).__name__}.")
        if attack.targeted:
            raise ValueError(f"`attacks[{name!r}]` is targeted; robustness is evaluated with untargeted attacks.")
    check_int(batch_size, "batch_size", 1)
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty.")

    device = model_device(model)
    was_training = [(module, module.training) for module in model.modules()]
    model.eval()
    output_path = None if output_dir is None else Path(output_dir)
    try:
        batches = _batches(processor, dataset, batch_size)
        clean_predictions = []
        with torch.no_grad():
            for batch, _ in batches:
                logits = model(**model_inputs(model, batch.to(device))).get("logits")
                if logits is None:
                    raise ValueError(
                        f"`model` must be a classifier returning `logits`; {type(model).__name__} does not."
                    )
                clean_predictions.append(logits.argmax(dim=1).cpu())
        clean_predictions = torch.cat(clean_predictions)
        all_labels = torch.cat([labels for _, labels in batches])
        counted = all_labels != -100  # samples labelled -100 are ignored: left out of every rate
        clean_correct = (clean_predictions == all_labels) & counted
        num_samples = clean_correct.numel()
        num_counted = int(counted.sum())
        report: dict[str, Any] = {
            "num_samples": num_samples,
            "num_ignored": num_samples - num_counted,
            "clean_accuracy": _fraction(int(clean_correct.sum()), num_counted),
            "attacks": {},
        }
        scratch = None if output_path is None else Path(tempfile.mkdtemp(prefix="adversarial_examples_"))
        split_paths: dict[str, Path] = {}
        taken: set[str] = set()
        progress = progress_bar(total=len(attacks) * len(batches), desc="robustness", unit="batch")
        for name, attack in attacks.items():
            correct, norms, columns = [], {}, {}
            after: dict[str, float] = {}  # AutoAttack: robust samples after each of its attacks, summed over batches
            offset = 0
            for batch, labels in batches:
                batch = batch.to(device)
                result: AttackResult = attack.perturb(batch, labels.to(device))
                with torch.no_grad():
                    prediction = model(**model_inputs(model, result.inputs)).logits.argmax(dim=1).cpu()
                correct.append(prediction == labels)
                for key, accuracy in getattr(result, "robust_accuracy_after", {}).items():
                    after[key] = after.get(key, 0.0) + accuracy * max(int((labels != -100).sum()), 1)
                for key in result.linf:
                    norms.setdefault(key, {"linf": [], "l2": []})
                    norms[key]["linf"].append(result.linf[key].cpu())
                    norms[key]["l2"].append(result.l2[key].cpu())
                if scratch is not None:
                    size = labels.shape[0]
                    columns.setdefault("index", []).append(np.arange(offset, offset + size, dtype=np.int64))
                    columns.setdefault("label", []).append(labels.numpy())
                    columns.setdefault("clean_prediction", []).append(
                        clean_predictions[offset : offset + size].numpy()
                    )
                    columns.setdefault("adversarial_prediction", []).append(prediction.numpy())
                    for key in ("pixel_values", "depth_values", "depth_mask"):
                        if key in result.inputs:
                            columns.setdefault(key, []).append(result.inputs[key].detach().cpu().numpy())
                    offset += size
                progress.update(1)
            correct = torch.cat(correct) & counted
            fooled = int((clean_correct & ~correct).sum())
            entry = {
                "attack": repr(attack),
                "budget": dict(attack.budget),
                "robust_accuracy": _fraction(int(correct.sum()), num_counted),
                "success_rate": _fraction(fooled, int(clean_correct.sum())),
                "perturbation": {},
            }
            if after:
                entry["robust_accuracy_after"] = {key: _fraction(round(total), num_counted) for key, total in after.items()}
            for key, values in norms.items():
                linf, l2 = torch.cat(values["linf"])[counted], torch.cat(values["l2"])[counted]
                entry["perturbation"][key] = {
                    "mean_linf": linf.mean().item() if num_counted else math.nan,
                    "max_linf": linf.max().item() if num_counted else math.nan,
                    "mean_l2": l2.mean().item() if num_counted else math.nan,
                    "max_l2": l2.max().item() if num_counted else math.nan,
                }
            report["attacks"][name] = entry
            if scratch is not None:
                split = _split_name(name, taken)
                split_paths[split] = scratch / split
                _examples_dataset(columns, name).save_to_disk(str(split_paths[split]))
        progress.close()

        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
            report["figures"] = _plot_curves(report, attacks, output_path)
            import datasets

            examples = datasets.DatasetDict({k: datasets.load_from_disk(str(p)) for k, p in split_paths.items()})
            examples_path = output_path / "adversarial_examples"
            if examples_path.exists():
                shutil.rmtree(examples_path)
            examples.save_to_disk(str(examples_path))
            del examples
            shutil.rmtree(scratch, ignore_errors=True)
            report["examples_path"] = str(examples_path)
            (output_path / "robustness.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        for module, training in was_training:
            module.training = training


def _fraction(count: int, total: int) -> float:
    """`count / total`, NaN when `total` is 0 (e.g. every sample ignored)."""
    return count / total if total else math.nan


def _examples_dataset(columns: dict[str, list[np.ndarray]], attack_name: str):
    import datasets

    data = {key: np.concatenate(parts) for key, parts in columns.items()}
    features = {
        "index": datasets.Value("int64"),
        "label": datasets.Value("int64"),
        "clean_prediction": datasets.Value("int64"),
        "adversarial_prediction": datasets.Value("int64"),
    }
    for key in ("pixel_values", "depth_values", "depth_mask"):
        if key in data:
            dtype = "bool" if key == "depth_mask" else "float32"
            data[key] = data[key].astype(dtype)
            features[key] = datasets.Array3D(shape=tuple(data[key].shape[1:]), dtype=dtype)
    dataset = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    return dataset.add_column("attack", [attack_name] * len(dataset))


def _plot_curves(report: dict[str, Any], attacks: Mapping[str, RgbdAttack], output_dir: Path) -> list[str]:
    """One PNG per kind of attack (rgb, depth, joint): robust accuracy versus budget, one line per attack family
    (class, loss and steps), starting at the clean accuracy (budget 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, dict[str, list[tuple[float, float, str]]]] = {}
    for name, attack in attacks.items():
        group = _modality_group(attack)
        family = f"{type(attack).__name__} ({attack.objective.loss_name}, {attack.steps} steps)"
        budget = attack.budget["depth_values"] if group == "depth" else attack.budget["pixel_values"]
        label = f"{attack.budget['depth_values']:.3g} m" if group == "joint" else ""
        accuracy = report["attacks"][name]["robust_accuracy"]
        lines.setdefault(group, {}).setdefault(family, []).append((budget, accuracy, label))
    axis = {
        "rgb": "RGB budget (L-inf, intensity x 255)",
        "depth": "depth budget (L-inf, metres)",
        "joint": "RGB budget (intensity x 255); depth budget annotated",
    }
    paths = []
    for group, families in lines.items():
        figure, ax = plt.subplots(figsize=(5.5, 4))
        scale = 1.0 if group == "depth" else 255.0
        for family, points in families.items():
            points = sorted(points)
            xs = [0.0] + [p[0] * scale for p in points]
            ys = [report["clean_accuracy"]] + [p[1] for p in points]
            ax.plot(xs, ys, marker="o", label=family)
            for x, y, text in zip(xs[1:], ys[1:], [p[2] for p in points], strict=True):
                if text:
                    ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(axis[group])
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{group}-only attacks" if group != "joint" else "joint RGB + depth attacks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figure.tight_layout()
        path = output_dir / f"accuracy_vs_budget_{group}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(str(path))
    return paths


__all__ = ["evaluate_robustness"]
