"""Acceptance benchmark of the CNN fusion family on the synthetic RGB-D scenes.

Trains every variant (RGB only, depth only, early, early + HHA, feature-level concat / sum / weighted, multi-stage)
with the same backbone, `RgbdCnnConfig.small()` (stem 24, stages [24, 48, 96] x [1, 1, 1] basic layers, default
depth handling: standardised over valid pixels, holes filled, mask channel), and the same hyper-parameters on
`make_synthetic_rgbd()` (defaults: 2000 train / 500 validation / 1000 test at 64x64), then prints one table: test
accuracy, parameters, inference throughput (measured), training time (wall and CPU).

The data are rendered once and turned into tensors once per depth representation with `RgbdProcessor`
(`RgbdImageProcessor(size=64)` + `RgbdDepthProcessor`: metric depth, or HHA with the scenes' intrinsics), kept in
memory. Training is a plain seeded loop: AdamW (lr 2e-3, weight decay 0.05), one-cycle schedule, batch 64, 60
epochs, random horizontal flips and +-4 px translations applied to RGB, depth and mask together. The epoch with the
best validation accuracy is kept; the test split is used once, for the table. One torch thread by default: on a
2-core machine shared with other jobs, two threads stall on each other (measured ~10x slower per step).

Usage: .venv/bin/python scripts/benchmark_cnn_fusion.py [--epochs 60] [--threads 1] [--variants early,multi_stage]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "rgb": {"modalities": "rgb"},
    "depth": {"modalities": "depth"},
    "early": {"fusion_type": "early"},
    "early_hha": {"fusion_type": "early", "depth_channels": 3},
    "feature_concat": {"fusion_type": "feature", "feature_fusion": "concat"},
    "feature_sum": {"fusion_type": "feature", "feature_fusion": "sum"},
    "feature_weighted": {"fusion_type": "feature", "feature_fusion": "weighted"},
    "multi_stage": {"fusion_type": "multi_stage"},
}
FUSED = {name for name, spec in VARIANTS.items() if "fusion_type" in spec}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--max-shift", type=int, default=4, help="random translation in pixels (augmentation)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: other jobs share the 2 cores)"
    )
    parser.add_argument("--seed", type=int, default=0, help="model init / shuffling / augmentation seed")
    parser.add_argument("--data-seed", type=int, default=0, help="make_synthetic_rgbd seed")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS)
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args()


def build_tensors(data_seed: int) -> tuple[dict[str, dict], list[str], float]:
    """{split: {"metric": inputs, "hha": inputs, "labels": tensor}}, the class names, and the seconds it took."""
    from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
    from hf_rgbd.data import make_synthetic_rgbd, split_to_tensors

    start = time.perf_counter()
    dataset = make_synthetic_rgbd(seed=data_seed)
    processors = {
        "metric": RgbdProcessor(RgbdImageProcessor(size=64), RgbdDepthProcessor(representation="metric")),
        "hha": RgbdProcessor(RgbdImageProcessor(size=64), RgbdDepthProcessor(representation="hha")),
    }
    tensors = {}
    for split in ("train", "validation", "test"):
        tensors[split] = {}
        for name, processor in processors.items():
            tensors[split][name], tensors[split]["labels"] = split_to_tensors(dataset[split], processor)
    class_names = dataset["train"].features["label"].names
    return tensors, class_names, time.perf_counter() - start


def throughput(model, batch: dict, batch_size: int = 250) -> float:
    """Inference samples/s over the whole split (eval mode, no_grad), after one warm-up batch."""
    import torch

    model.eval()
    count = next(iter(batch.values())).shape[0]
    with torch.no_grad():
        model(**{key: value[:batch_size] for key, value in batch.items()})
        start = time.perf_counter()
        for begin in range(0, count, batch_size):
            model(**{key: value[begin : begin + batch_size] for key, value in batch.items()})
        return count / (time.perf_counter() - start)


def train_variant(name: str, tensors: dict, class_names: list[str], args: argparse.Namespace) -> dict:
    import torch

    from hf_rgbd.training import MODALITY_INPUT_KEYS, classification_accuracy, to_channels_last, train_cnn_classifier

    spec = VARIANTS[name]
    representation = "hha" if spec.get("depth_channels") == 3 else "metric"
    keys = MODALITY_INPUT_KEYS[spec.get("modalities", "rgbd")]
    splits = {
        split: to_channels_last({key: tensors[split][representation][key] for key in keys})
        for split in ("train", "validation", "test")
    }
    labels = {split: tensors[split]["labels"] for split in splits}
    model, training = train_cnn_classifier(
        (splits["train"], labels["train"]),
        (splits["validation"], labels["validation"]),
        class_names,
        spec,
        seed=args.seed,
        memory_format=torch.channels_last,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        max_shift=args.max_shift,
    )
    return {
        "variant": name,
        "config": spec,
        "depth": representation if "pixel_values" not in keys or len(keys) > 1 else "-",
        "validation_accuracy": training.best_validation_accuracy,
        "best_epoch": training.best_epoch,
        "validation_history": [round(value, 4) for value in training.validation_history],
        "test_accuracy": classification_accuracy(model, splits["test"], labels["test"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "throughput": throughput(model, splits["test"]),
        "train_seconds": training.train_seconds,
        "train_cpu_seconds": training.train_cpu_seconds,
    }


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    total_start = time.perf_counter()
    print(f"load average at start: {', '.join(f'{value:.1f}' for value in os.getloadavg())}", flush=True)
    tensors, class_names, data_seconds = build_tensors(args.data_seed)
    print(
        f"data: make_synthetic_rgbd(seed={args.data_seed}) 2000/500/1000 at 64x64 -> tensors (metric + HHA) in "
        f"{data_seconds:.0f} s; backbone RgbdCnnConfig.small(); epochs={args.epochs}, batch={args.batch_size}, "
        f"AdamW lr={args.lr} (one-cycle) wd={args.weight_decay}, h-flip + shift {args.max_shift}px; seed={args.seed}; "
        f"torch threads={torch.get_num_threads()}",
        flush=True,
    )
    results = []
    for name in names:
        result = train_variant(name, tensors, class_names, args)
        results.append(result)
        print(
            f"  {name}: test {result['test_accuracy']:.3f}, val {result['validation_accuracy']:.3f} "
            f"(epoch {result['best_epoch']}), train {result['train_seconds']:.0f} s, val history "
            f"{result['validation_history']}",
            flush=True,
        )
    header = f"| {'variant':<17} | {'depth':<6} | {'test acc':>8} | {'val acc':>7} | {'params':>7} | "
    header += f"{'infer samples/s':>15} | {'train time':>10} | {'train CPU':>9} |"
    print()
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for r in results:
        print(
            f"| {r['variant']:<17} | {r['depth']:<6} | {100 * r['test_accuracy']:>7.1f}% | "
            f"{100 * r['validation_accuracy']:>6.1f}% | {r['parameters']:>7,} | {r['throughput']:>15,.0f} | "
            f"{r['train_seconds']:>8.0f} s | {r['train_cpu_seconds']:>7.0f} s |"
        )
    total = time.perf_counter() - total_start
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"train time: wall seconds; train CPU: CPU seconds of this process (all threads); load average now {load}")
    missed = [r["variant"] for r in results if r["variant"] in FUSED and r["test_accuracy"] < 0.95]
    print(f"\ntotal runtime {total:.0f} s (data {data_seconds:.0f} s); fused variants below 95%: {missed or 'none'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results, "total_seconds": total}, handle, indent=2)


if __name__ == "__main__":
    main()
