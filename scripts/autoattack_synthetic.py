"""AutoAttack acceptance on the synthetic scenes: hf-rgbd's `AutoAttack` and `Square` against pyautoattack, and a
sanity table that would reveal gradient masking, for a fused CNN and a dual-encoder classifier.

1. Data: `make_synthetic_rgbd(image_size=--image-size)`; two classifiers trained on it: the early-fusion
   `RgbdCnnForImageClassification` and the dual-encoder `RgbdClipForImageClassification` (small configs scaled to
   the image size, the dual encoder's towers with `--dual-encoder-layers` layers; `train_classifier` with its
   defaults for `--epochs` epochs, best validation epoch).
2. Cross-check, on the first `--samples` test samples, RGB-only threat model at 2/255 and 4/255 (L-inf):
   - `AutoAttack(version="standard", threat_model="rgb")` (seed 0) against pyautoattack's standard version (seeds
     0, 1, 2) on an adapter model that takes one tensor: RGB in [0, 1] plus one channel that carries the sample's
     index in binary (rounded away from the perturbation, so the adapter looks up the sample's fixed depth; the
     channel has no gradient and no effect on the logits). Both use K - 1 target classes for APGD-T and FAB-T
     (pyautoattack's 9 need 10 classes). Goal: robust accuracy within max(1.5 points, pyautoattack's spread over
     its 3 seeds) of pyautoattack's median, in at most pyautoattack's median wall time.
   - `Square(n_queries=1000)` alone against pyautoattack's Square alone (1000 queries), seed 0 each, 3 seeds of
     pyautoattack: within 2 points of pyautoattack's median.
3. Sanity table on the first `--sanity-samples` test samples, per family and threat model (rgb, depth, joint,
   either), over a ladder of budgets: robust accuracy after the white-box attacks (APGD-CE, APGD-T) and after
   Square alone (1000 queries). It checks that robust accuracy decreases with the budget, reaches 0 at the largest
   budget, and that Square never beats the white-box attacks by more than 2 points.

    python scripts/autoattack_synthetic.py --threads 2
    python scripts/autoattack_synthetic.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _attack_script_utils import make_processor, process_split

from hf_rgbd import RgbdClipConfig, RgbdClipForImageClassification, RgbdCnnConfig, RgbdCnnForImageClassification
from hf_rgbd.attacks import AutoAttack
from hf_rgbd.attacks.square import Square
from hf_rgbd.attacks.subsets import select_samples
from hf_rgbd.data import make_synthetic_rgbd
from hf_rgbd.training import classification_accuracy, train_classifier

INDEX_BITS = 16
CROSSCHECK_BUDGETS = (2 / 255, 4 / 255)
# the sanity ladder: RGB intensity and depth metres, the last large enough to break every sample
RGB_LADDER = (2 / 255, 8 / 255, 64 / 255)
DEPTH_LADDER = (0.025, 0.1, 2.0)


class IndexedAdapter(torch.nn.Module):
    """A single-tensor model for pyautoattack: input (B, 3 + 1, H, W) in [0, 1], the RGB image plus one channel
    whose first `INDEX_BITS` pixels hold the sample's index in binary. The adapter normalises the RGB, rounds the
    index bits (a perturbation below 0.5 cannot flip them; rounding has no gradient) and calls the RGB-D model
    with that sample's fixed depth, so any subset of samples can be attacked."""

    def __init__(self, model, mean, std, depth_values, depth_mask):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std
        self.depth_values, self.depth_mask = depth_values, depth_mask
        self.weights = 2 ** torch.arange(INDEX_BITS)

    @staticmethod
    def encode(rgb: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = rgb.shape
        bits = (torch.arange(batch)[:, None] >> torch.arange(INDEX_BITS)) & 1
        channel = torch.zeros(batch, 1, height * width)
        channel[:, 0, :INDEX_BITS] = bits.float()
        return torch.cat([rgb, channel.view(batch, 1, height, width)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = x[:, 3].flatten(1)[:, :INDEX_BITS].detach().round().long()
        index = (bits * self.weights).sum(dim=1)
        return self.model(
            pixel_values=(x[:, :3] - self.mean) / self.std,
            depth_values=self.depth_values[index],
            depth_mask=self.depth_mask[index],
        ).logits


def train_models(data, processor, args) -> dict:
    train = process_split(processor, data["train"])
    validation = process_split(processor, data["validation"])
    labels = data["train"].features["label"].names
    label_kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels))}
    side = args.image_size
    torch.manual_seed(args.seed)  # the initial weights: a script run is reproducible
    # 16 tokens, as the small config at 64x64; 2 layers (not 4) keep the script within its 60 minutes
    tower = {"image_size": side, "patch_size": max(side // 4, 4), "num_hidden_layers": args.dual_encoder_layers}
    models = {
        "fused CNN": RgbdCnnForImageClassification(RgbdCnnConfig.small(fusion_type="early", **label_kwargs)),
        "dual encoder": RgbdClipForImageClassification(
            RgbdClipConfig.small(rgb_config=tower, depth_config=tower, **label_kwargs)
        ),
    }
    for name, model in models.items():
        start = time.perf_counter()
        result = train_classifier(model, *train, *validation, epochs=args.epochs, seed=args.seed, disable_tqdm=True)
        model.eval()
        print(
            f"trained the {name} for {args.epochs} epochs in {time.perf_counter() - start:.0f} s: best validation "
            f"accuracy {result.best_validation_accuracy:.1%} (epoch {result.best_epoch})"
        )
    return models


def robust_accuracy(model, batch, labels) -> float:
    return classification_accuracy(model, batch, labels)


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def import_pyautoattack():
    """pyautoattack's AutoAttack class. Its FAB module imports `torch.autograd.gradcheck.zero_gradients`, which
    torch 2 removed: the same one-liner is put back first (zero a tensor's gradient if it has one)."""
    import sys

    import torch.autograd.gradcheck  # noqa: F401  (the module; `torch.autograd.gradcheck` names its function)

    gradcheck = sys.modules["torch.autograd.gradcheck"]
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = lambda x: x.grad.zero_() if getattr(x, "grad", None) is not None else None
    from autoattack import AutoAttack as ReferenceAutoAttack

    return ReferenceAutoAttack


def pyautoattack_run(model, processor, batch, labels, eps, seed, attacks, n_queries=None):
    """pyautoattack on the adapter: (robust accuracy, seconds)."""
    ReferenceAutoAttack = import_pyautoattack()

    image_processor = processor.image_processor
    mean = torch.tensor(image_processor.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, -1, 1, 1)
    adapter = IndexedAdapter(model, mean, std, batch["depth_values"], batch["depth_mask"]).eval()
    rgb = batch["pixel_values"] * std + mean
    x = IndexedAdapter.encode(rgb)
    num_classes = model.config.num_labels
    adversary = ReferenceAutoAttack(adapter, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu", verbose=False)
    adversary.apgd_targeted.n_target_classes = num_classes - 1
    adversary.fab.n_target_classes = num_classes - 1
    adversary.attacks_to_run = list(attacks)
    if n_queries is not None:
        adversary.square.n_queries = n_queries
    x_adv, seconds = timed(lambda: adversary.run_standard_evaluation(x, labels, bs=x.shape[0]))
    assert (x_adv[:, :3] - x[:, :3]).abs().max() <= eps + 1e-6
    with torch.no_grad():
        accuracy = float((adapter(x_adv).argmax(dim=1) == labels).float().mean())
    return accuracy, seconds


def ours_run(model, processor, batch, labels, eps, seed, square_only=False, n_queries=1000):
    """hf-rgbd on the same samples: (robust accuracy, seconds)."""
    budget = {"pixel_values": eps}
    if square_only:
        def run():
            with torch.no_grad():
                correct = model(**{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}).logits
            index = (correct.argmax(dim=1) == labels).nonzero().flatten()
            if index.numel() == 0:  # nothing classified correctly: nothing to attack
                return 0.0
            attack = Square(
                model, budget, n_queries=n_queries, rescale_schedule=False, processor=processor, seed=seed
            )  # AutoAttack's Square, as pyautoattack runs it alone
            result = attack.perturb(select_samples(batch, index), labels[index])
            return robust_accuracy(model, result.inputs, labels[index]) * index.numel() / labels.numel()
    else:
        def run():
            attack = AutoAttack(model, budget, threat_model="rgb", processor=processor, seed=seed)
            return robust_accuracy(model, attack.perturb(batch, labels).inputs, labels)
    return timed(run)


def crosscheck(models, processor, batch, labels, args) -> dict:
    report = {}
    for name, model in models.items():
        for eps in CROSSCHECK_BUDGETS:
            key = f"{name}, RGB {eps * 255:.0f}/255"
            ours, ours_seconds = ours_run(model, processor, batch, labels, eps, seed=0)
            reference = [
                pyautoattack_run(model, processor, batch, labels, eps, seed, ("apgd-ce", "apgd-t", "fab-t", "square"))
                for seed in args.reference_seeds
            ]
            accuracies = [a for a, _ in reference]
            median, spread = statistics.median(accuracies), max(accuracies) - min(accuracies)
            reference_seconds = statistics.median(s for _, s in reference)
            tolerance = max(0.015, spread)
            square, square_seconds = ours_run(model, processor, batch, labels, eps, seed=0, square_only=True)
            square_reference = [
                pyautoattack_run(model, processor, batch, labels, eps, seed, ("square",), n_queries=1000)
                for seed in args.reference_seeds
            ]
            square_median = statistics.median(a for a, _ in square_reference)
            report[key] = {
                "autoattack": ours,
                "autoattack_seconds": ours_seconds,
                "pyautoattack": accuracies,
                "pyautoattack_seconds": [s for _, s in reference],
                "within_tolerance": abs(ours - median) <= tolerance + 1e-9,
                "tolerance": tolerance,
                "not_slower": ours_seconds <= reference_seconds,
                "square": square,
                "square_seconds": square_seconds,
                "pyautoattack_square": [a for a, _ in square_reference],
                "square_within_2_points": abs(square - square_median) <= 0.02 + 1e-9,
            }
            print(
                f"{key}: AutoAttack {ours:.1%} in {ours_seconds:.0f} s; pyautoattack "
                f"{' / '.join(f'{a:.1%}' for a in accuracies)} (median {median:.1%}, spread {spread:.1%}) in median "
                f"{reference_seconds:.0f} s -> within max(1.5, spread) = {tolerance:.1%}: "
                f"{report[key]['within_tolerance']}; not slower: {report[key]['not_slower']}\n"
                f"    Square (1000 queries) {square:.1%} in {square_seconds:.0f} s; pyautoattack Square "
                f"{' / '.join(f'{a:.1%}' for a, _ in square_reference)} -> within 2 points of the median: "
                f"{report[key]['square_within_2_points']}",
                flush=True,
            )
    return report


def sanity(models, processor, batch, labels, args) -> dict:
    table = {}
    for name, model in models.items():
        for threat in ("rgb", "depth", "joint", "either"):
            rows = []
            for rgb, depth in zip(RGB_LADDER, DEPTH_LADDER, strict=True):
                budget = {"rgb": {"pixel_values": rgb}, "depth": {"depth_values": depth}}.get(
                    threat, {"pixel_values": rgb, "depth_values": depth}
                )
                white = AutoAttack(
                    model, budget, threat_model=threat, processor=processor, attacks_to_run=("apgd-ce", "apgd-t")
                )
                black = AutoAttack(
                    model, budget, threat_model=threat, processor=processor, attacks_to_run=("square",),
                    square_queries=1000,
                )  # fmt: skip
                white_accuracy = robust_accuracy(model, white.perturb(batch, labels).inputs, labels)
                black_accuracy = robust_accuracy(model, black.perturb(batch, labels).inputs, labels)
                rows.append({"budget": budget, "white_box": white_accuracy, "square": black_accuracy})
            white = [row["white_box"] for row in rows]
            checks = {
                "decreasing": all(a >= b for a, b in zip(white, white[1:], strict=False)),
                "zero_at_largest": white[-1] == 0.0,
                "square_not_better_by_2_points": all(row["square"] >= row["white_box"] - 0.02 for row in rows),
            }
            table[f"{name} / {threat}"] = {"rows": rows, "checks": checks}
            cells = ", ".join(f"{r['white_box']:.0%}|{r['square']:.0%}" for r in rows)
            print(f"{name:<12} {threat:<6} white-box|Square per budget: {cells}; {checks}", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dual-encoder-layers", type=int, default=2, help="layers of each dual-encoder tower")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sanity-samples", type=int, default=100)
    parser.add_argument("--reference-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["crosscheck", "sanity"])
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args()
    sizes = {"num_train": 2000, "num_validation": 500, "num_test": 1000}
    if args.quick:
        sizes = {"num_train": 64, "num_validation": 16, "num_test": 16}
        args.epochs, args.samples, args.sanity_samples, args.reference_seeds = 1, 8, 8, [0]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = make_synthetic_rgbd(image_size=args.image_size, seed=args.seed, num_threads=args.threads, **sizes)
    processor = make_processor(args.image_size)
    models = train_models(data, processor, args)
    test_batch, test_labels = process_split(processor, data["test"])
    report = {"arguments": vars(args)}
    for name, model in models.items():
        print(f"{name}: clean test accuracy {robust_accuracy(model, test_batch, test_labels):.1%}")
    if "crosscheck" not in args.skip:
        index = torch.arange(args.samples)
        report["crosscheck"] = crosscheck(
            models, processor, select_samples(test_batch, index), test_labels[index], args
        )
    if "sanity" not in args.skip:
        index = torch.arange(args.sanity_samples)
        report["sanity"] = sanity(models, processor, select_samples(test_batch, index), test_labels[index], args)
    report["total_seconds"] = time.perf_counter() - start
    print(f"total {report['total_seconds']:.0f} s")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
