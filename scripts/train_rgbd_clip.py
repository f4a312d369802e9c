"""Acceptance run of the CLIP-style RGB-D dual encoder on the synthetic benchmark (CPU).

1. Contrastive pretraining (ITC) of `RgbdClipModel(RgbdClipConfig.small())` on the `make_synthetic_rgbd()` train
   split (2000 pairs), with aligned random crops, flips and colour jitter (`RgbdAugment`, in physical units).
2. RGB -> depth and depth -> RGB retrieval on the 1000 test pairs (the whole test split is the gallery).
3. Fine-tuning of `RgbdClipForImageClassification` from the pretrained weights, once per variant (`modalities`
   "rgbd" (fused), "rgb", "depth"), same config, epochs and hyper-parameters (`hf_rgbd.training.train_classifier`:
   AdamW, one-cycle, gradient clipping, flips and shifts, best validation epoch kept); test accuracy. The fused
   variant alone adds what only a two-modality model can use: modality dropout and the per-modality auxiliary
   heads (`auxiliary_loss_weight`), without which it leans on whichever modality is learnt first.

The budget is fixed in epochs (not wall time), chosen to fit 10 minutes of an idle 2-core CPU per variant
(pretraining + that variant's fine-tuning); the measured times are printed as they are. Generating the data
is not counted (`--data-cache` keeps it between runs).

    python scripts/train_rgbd_clip.py --threads 2 --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_rgbd import RgbdClipConfig, RgbdClipForImageClassification, RgbdClipModel, RgbdDepthProcessor
from hf_rgbd.data import RgbdAugment, make_synthetic_rgbd
from hf_rgbd.evaluation import retrieval_metrics
from hf_rgbd.training import classification_accuracy, train_classifier
from hf_rgbd.training.finetune import DataArguments, default_processor, training_augment
from hf_rgbd.training.pretrain import PretrainingRows
from hf_rgbd.training.pretrain import (
    pretraining_optimizer as contrastive_optimizer,  # the `hf-rgbd pretrain` optimizer
)

BUDGET_SECONDS = 600.0


# ------------------------------------------------------------------------------------------------------ data
def load_data(cache: str | None, dataset=None) -> dict[str, dict[str, torch.Tensor]]:
    """`make_synthetic_rgbd()` (defaults; or `dataset`, those scenes already made) as tensors per split: `image`
    uint8 (N, 3, 64, 64), `depth` metres (N, 1, 64, 64) with 0 at holes, `label` (N,)."""
    if cache and os.path.exists(cache):
        return torch.load(cache)
    dataset = make_synthetic_rgbd() if dataset is None else dataset
    data = {}
    for split, table in dataset.items():
        images = np.stack([np.asarray(image) for image in table["image"]])
        depth = np.asarray(table.with_format("numpy")["depth"][:], dtype=np.float32)
        data[split] = {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "depth": torch.from_numpy(depth).unsqueeze(1),
            "label": torch.as_tensor(np.asarray(table["label"]), dtype=torch.long),
        }
    if cache:
        torch.save(data, cache)
    return data


def dataset_statistics(train: dict[str, torch.Tensor]) -> dict[str, object]:
    """Per-channel RGB mean / std (in [0, 1]) and mean / std of the valid depth (metres) of the train split."""
    image = train["image"].float() / 255.0
    depth = train["depth"][train["depth"] > 0]
    return {
        "image_mean": image.mean(dim=(0, 2, 3)).tolist(),
        "image_std": image.std(dim=(0, 2, 3)).tolist(),
        "depth_mean": float(depth.mean()),
        "depth_std": float(depth.std()),
    }


class Batcher:
    """Model inputs from raw tensors: optional aligned augmentation in physical units, then RGB normalisation
    (`image_mean` / `image_std`, as an `RgbdImageProcessor` with those statistics does) and the depth
    representation of `depth_processor` (holes and depth outside [min_depth, max_depth] masked)."""

    def __init__(
        self,
        depth_processor: RgbdDepthProcessor,
        augment: RgbdAugment | None,
        image_mean: list[float],
        image_std: list[float],
        sample_seeds=None,
    ):
        self.depth_processor = depth_processor
        self.augment = augment
        self.image_mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std).view(1, 3, 1, 1)
        # `sample_seeds(index)`: one augmentation seed per row (`PretrainingRows.sample_seed`, as `hf-rgbd
        # pretrain` draws them); None: the augmentation's own generator, shared by the batch
        self.sample_seeds = sample_seeds

    def __call__(self, split: dict[str, torch.Tensor], index: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        image, depth = split["image"][index], split["depth"][index]
        if train and self.augment is not None:
            seeds = None if self.sample_seeds is None else self.sample_seeds(index)
            out = self.augment({"image": image, "depth": depth, "depth_mask": depth > 0}, seeds=seeds)
            image, depth, mask = out["image"], out["depth"], out["depth_mask"]
        else:
            image = image.float() / 255.0
            mask = depth > 0
        mask = mask & (depth >= self.depth_processor.min_depth) & (depth <= self.depth_processor.max_depth)
        return {
            "pixel_values": (image - self.image_mean) / self.image_std,
            "depth_values": self.depth_processor.from_metres(depth, mask),
            "depth_mask": mask,
        }

    def whole_split(self, split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The un-augmented model inputs of every row of `split`."""
        return self(split, torch.arange(split["label"].shape[0]), train=False)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------------------------------ stages
def pretrain(
    model: RgbdClipModel,
    train: dict[str, torch.Tensor],
    validation_inputs: dict[str, torch.Tensor],
    batcher,
    args,
    rows: PretrainingRows,
) -> float:
    """ITC pretraining in place on the raw `train` split (augmented per batch); `validation_inputs` are the
    processed validation pairs for the periodic retrieval check. The random streams are `hf-rgbd pretrain`'s: the
    order of epoch `e` is a permutation drawn from a generator seeded `seed + e` (accelerate's seedable sampler),
    each row's augmentation comes from `rows.sample_seed` in that epoch, and the schedule is transformers'
    `get_scheduler("cosine")` with 5% warm-up. Returns the wall time in seconds (validation retrieval excluded)."""
    from transformers import get_scheduler

    count = train["label"].shape[0]
    if not 1 <= args.pretrain_batch_size <= count:
        raise ValueError(
            f"`--pretrain-batch-size` must be in [1, {count}] (the train split), got {args.pretrain_batch_size}."
        )
    steps_per_epoch = count // args.pretrain_batch_size
    total = steps_per_epoch * args.pretrain_epochs
    optimizer = contrastive_optimizer(model, args.pretrain_lr, args.weight_decay, args.logit_scale_lr_factor)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=max(1, int(0.05 * total)), num_training_steps=total)
    train_seconds = 0.0
    for epoch in range(args.pretrain_epochs):
        start = time.perf_counter()
        model.train()
        rows.set_epoch(epoch)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(args.seed + epoch))
        losses = []
        for step in range(steps_per_epoch):
            index = order[step * args.pretrain_batch_size : (step + 1) * args.pretrain_batch_size]
            loss = model(**batcher(train, index, train=True), return_loss=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        train_seconds += time.perf_counter() - start
        message = (
            f"  pretrain epoch {epoch + 1}/{args.pretrain_epochs}: ITC loss {np.mean(losses):.3f}, "
            f"temperature 1/{model.scaled_logit_scale().item():.1f}, {train_seconds:.0f} s"
        )
        if args.eval_every and (epoch + 1) % args.eval_every == 0:
            metrics = retrieval_metrics(*embed(model, validation_inputs))
            message += f", validation RGB->depth R@1 {100 * metrics['rgb_to_depth_R@1']:.1f}% (500 pairs)"
        print(message, flush=True)
    return train_seconds


@torch.no_grad()
def embed(model: RgbdClipModel, inputs: dict[str, torch.Tensor], batch_size: int = 250):
    """L2-normalised `(rgb_embeds, depth_embeds)`, each (N, projection_dim), in eval mode."""
    model.eval()
    rgb, depth = [], []
    for start in range(0, inputs["pixel_values"].shape[0], batch_size):
        out = model(**{key: value[start : start + batch_size] for key, value in inputs.items()})
        rgb.append(out.rgb_embeds)
        depth.append(out.depth_embeds)
    return torch.cat(rgb), torch.cat(depth)


def attribute_accuracies(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of each attribute of the synthetic classes (label = 4 * shape + 2 * texture + printed)."""
    return {
        "shape": float(((predictions // 4) == (labels // 4)).float().mean()),
        "texture": float(((predictions // 2 % 2) == (labels // 2 % 2)).float().mean()),
        "printed": float(((predictions % 2) == (labels % 2)).float().mean()),
    }


@torch.no_grad()
def predict(model, inputs: dict[str, torch.Tensor], batch_size: int = 250) -> torch.Tensor:
    model.eval()
    count = next(iter(inputs.values())).shape[0]
    return torch.cat(
        [
            model(**{key: value[start : start + batch_size] for key, value in inputs.items()}).logits.argmax(-1)
            for start in range(0, count, batch_size)
        ]
    )


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-cache", default=None, help="torch file caching the generated dataset tensors")
    parser.add_argument("--pretrain-epochs", type=int, default=130)
    parser.add_argument("--pretrain-batch-size", type=int, default=100)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--logit-scale-lr-factor", type=float, default=10.0)
    parser.add_argument("--crop-scale", type=float, default=0.6, help="smallest random crop (fraction of the area)")
    parser.add_argument("--colour-jitter", type=float, default=0.1, help="brightness / contrast / saturation")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, both stages")
    parser.add_argument("--finetune-epochs", type=int, default=55)
    parser.add_argument("--finetune-batch-size", type=int, default=64)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--finetune-max-shift", type=int, default=4)
    parser.add_argument("--modality-dropout", type=float, default=0.1, help="per modality, fused variant only")
    parser.add_argument(
        "--auxiliary-loss-weight", type=float, default=1.0, help="per-modality auxiliary heads, fused variant only"
    )
    parser.add_argument("--eval-every", type=int, default=20, help="pretraining epochs between validation checks")
    parser.add_argument("--variants", nargs="+", default=["rgbd", "rgb", "depth"])
    parser.add_argument("--output-dir", default=None, help="where to keep the models and results (default: temp)")
    args = parser.parse_args()
    if args.pretrain_batch_size < 1:  # (the fine-tuning arguments are checked by train_classifier)
        parser.error(f"--pretrain-batch-size must be >= 1, got {args.pretrain_batch_size}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    print("arguments: " + json.dumps(vars(args)), flush=True)
    load_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())

    start = time.perf_counter()
    # the scenes as `hf-rgbd pretrain` reads them: its processor (`default_processor`: RGB statistics, depth range
    # and depth mean / std from the train split) and its per-row augmentation seeds come from them, so that both
    # runs see the same inputs
    dataset = make_synthetic_rgbd(num_threads=args.threads)
    data = load_data(args.data_cache, dataset)
    sizes = ", ".join(f"{name} {split['label'].shape[0]}" for name, split in data.items())
    print(f"data: {sizes} ({time.perf_counter() - start:.0f} s, not counted)", flush=True)
    processor = default_processor(RgbdClipConfig.small(), dataset["train"], 64)
    rows = PretrainingRows(dataset["train"], processor, seed=args.seed)
    augment = training_augment(
        processor, DataArguments(crop_scale=args.crop_scale, colour_jitter=args.colour_jitter), args.seed
    )
    image_processor = processor.image_processor
    batcher = Batcher(
        processor.depth_image_processor, augment, image_processor.image_mean, image_processor.image_std,
        sample_seeds=lambda index: [rows.sample_seed(row) for row in index.tolist()],
    )  # fmt: skip
    inputs = {split: batcher.whole_split(data[split]) for split in data}
    labels = {split: data[split]["label"] for split in data}
    cpu_start = time.process_time()

    # 1. contrastive pretraining
    model = RgbdClipModel(RgbdClipConfig.small(num_labels=8))
    params = sum(p.numel() for p in model.parameters())
    print(
        f"RgbdClipConfig.small(): {params / 1e6:.2f} M parameters; pretraining {args.pretrain_epochs} epochs of "
        f"{data['train']['label'].shape[0] // args.pretrain_batch_size} steps (batch {args.pretrain_batch_size})",
        flush=True,
    )
    pretrain_seconds = pretrain(model, data["train"], inputs["validation"], batcher, args, rows)

    # 2. retrieval, the whole test split as gallery
    start = time.perf_counter()
    retrieval = retrieval_metrics(*embed(model, inputs["test"]))
    print(
        f"retrieval on {int(retrieval['num_pairs'])} test pairs ({time.perf_counter() - start:.1f} s): "
        + ", ".join(f"{key} {100 * value:.1f}%" for key, value in retrieval.items() if "R@" in key),
        flush=True,
    )
    output_dir = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="rgbd_clip_"))
    model.save_pretrained(output_dir / "pretrained")

    # 3. fine-tuning, one classifier per variant from the same pretrained weights
    results = {}
    for variant in args.variants:
        is_fused = variant == "rgbd"
        classifier = RgbdClipForImageClassification.from_pretrained(
            output_dir / "pretrained",
            num_labels=8,
            modalities=variant,
            modality_dropout=(args.modality_dropout, args.modality_dropout) if is_fused else (0.0, 0.0),
            auxiliary_loss_weight=args.auxiliary_loss_weight if is_fused else 0.0,
        )
        run = train_classifier(
            classifier,
            inputs["train"],
            labels["train"],
            inputs["validation"],
            labels["validation"],
            epochs=args.finetune_epochs,
            batch_size=args.finetune_batch_size,
            learning_rate=args.finetune_lr,
            weight_decay=args.weight_decay,
            max_shift=args.finetune_max_shift,
            seed=args.seed,
            max_grad_norm=args.max_grad_norm,
            log=lambda line, variant=variant: print(f"  [{variant}] {line}", flush=True),
        )
        predictions = predict(classifier, inputs["test"])
        row = {
            "test_accuracy": float((predictions == labels["test"]).float().mean()),
            "attributes": attribute_accuracies(predictions, labels["test"]),
            "best_epoch": run.best_epoch,
            "finetune_seconds": run.train_seconds,
            "total_seconds": pretrain_seconds + run.train_seconds,
        }
        if is_fused:
            rgb_only = {"pixel_values": inputs["test"]["pixel_values"]}
            depth_only = {key: inputs["test"][key] for key in ("depth_values", "depth_mask")}
            row["test_accuracy_depth_values_none"] = classification_accuracy(classifier, rgb_only, labels["test"])
            row["test_accuracy_pixel_values_none"] = classification_accuracy(classifier, depth_only, labels["test"])
        results[variant] = row
        print(f"  [{variant}] test accuracy {100 * row['test_accuracy']:.1f}%", flush=True)

    load_end = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nthreads {torch.get_num_threads()}; pretraining {pretrain_seconds:.0f} s wall; process CPU time "
        f"{time.process_time() - cpu_start:.0f} s; load average at start {load_start}, at end {load_end} "
        f"(on {os.cpu_count()} cores)"
    )
    print(
        "| variant | test accuracy | shape / texture / printed | best epoch | fine-tune (s) | pretrain + fine-tune (s) |"
    )
    print("|---|---|---|---|---|---|")
    for variant, row in results.items():
        attributes = " / ".join(f"{100 * value:.1f}" for value in row["attributes"].values())
        print(
            f"| {variant} | {100 * row['test_accuracy']:.1f}% | {attributes} | {row['best_epoch']} | "
            f"{row['finetune_seconds']:.0f} | {row['total_seconds']:.0f} |"
        )
    if "rgbd" in results:
        row = results["rgbd"]
        print(
            f"fused classifier with one input missing: depth_values=None {100 * row['test_accuracy_depth_values_none']:.1f}%, "
            f"pixel_values=None {100 * row['test_accuracy_pixel_values_none']:.1f}%"
        )
    print(
        f"retrieval (1000-pair gallery): RGB->depth R@1 {100 * retrieval['rgb_to_depth_R@1']:.1f}%, "
        f"R@5 {100 * retrieval['rgb_to_depth_R@5']:.1f}%, R@10 {100 * retrieval['rgb_to_depth_R@10']:.1f}%; "
        f"depth->RGB R@1 {100 * retrieval['depth_to_rgb_R@1']:.1f}%"
    )
    (output_dir / "results.json").write_text(
        json.dumps({"arguments": vars(args), "retrieval": retrieval, "variants": results}, indent=2)
    )
    fused = results.get("rgbd", {}).get("test_accuracy", 0.0)
    checks = {
        "fused test accuracy >= 95%": fused >= 0.95,
        "fused above every single-modality variant": all(
            fused > row["test_accuracy"] for variant, row in results.items() if variant != "rgbd"
        ),
        "RGB->depth R@1 >= 90% (1000 pairs)": retrieval["rgb_to_depth_R@1"] >= 0.90,
        "pretrain + fine-tune <= 10 min per variant": all(
            row["total_seconds"] <= BUDGET_SECONDS for row in results.values()
        ),
    }
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}: {name}")
    print(f"results: {output_dir / 'results.json'}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
