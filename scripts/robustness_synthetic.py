"""Robust accuracy of a fused RgbdCnn classifier on the synthetic test split under RGB-only, depth-only and joint
PGD-20 at three budgets each, before and after Madry adversarial training (AdversarialTrainer).

    python scripts/robustness_synthetic.py --epochs 30 --adv-epochs 10 --threads 2 --output-dir robustness_synthetic
    python scripts/robustness_synthetic.py --quick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _attack_script_utils import accuracy, add_data_arguments, fused_classifier, make_processor, process_split
from transformers import TrainingArguments

from hf_rgbd.attacks import PGD
from hf_rgbd.data import make_synthetic_rgbd
from hf_rgbd.evaluation import evaluate_robustness
from hf_rgbd.training import AdversarialTrainer

RGB_BUDGETS = (1 / 255, 2 / 255, 4 / 255)
DEPTH_BUDGETS = (0.01, 0.02, 0.05)  # metres


def make_attacks(model, processor, steps: int) -> dict:
    attacks = {}
    for rgb, depth in zip(RGB_BUDGETS, DEPTH_BUDGETS, strict=True):
        for kind, budget in (
            ("rgb", {"pixel_values": rgb}),
            ("depth", {"depth_values": depth}),
            ("joint", {"pixel_values": rgb, "depth_values": depth}),
        ):
            name = f"{kind} " + " + ".join(f"{k.split('_')[0]}={v:.4g}" for k, v in budget.items())
            attacks[name] = PGD(model, budget=budget, steps=steps, processor=processor, seed=0)
    return attacks


class _Rows(torch.utils.data.Dataset):
    def __init__(self, batch, labels):
        self.batch, self.labels = batch, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {**{key: value[index] for key, value in self.batch.items()}, "labels": self.labels[index]}


def adversarial_training(model, processor, batch, labels, epochs: int, steps: int, output_dir: Path, seed: int):
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"), per_device_train_batch_size=64, num_train_epochs=epochs,
        learning_rate=2e-3, lr_scheduler_type="cosine", weight_decay=1e-4, report_to=[],
        save_strategy="no", logging_steps=20, use_cpu=not torch.cuda.is_available(), seed=seed,
        dataloader_num_workers=0,
    )  # fmt: skip
    # Madry: PGD with the largest joint budget, random start, `steps` steps of budget / 4.
    attack = PGD(
        model, budget={"pixel_values": RGB_BUDGETS[-1], "depth_values": DEPTH_BUDGETS[-1]}, steps=steps,
        processor=processor, seed=seed,
    )  # fmt: skip
    AdversarialTrainer(model=model, args=args, train_dataset=_Rows(batch, labels), attack=attack).train()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=60, help="clean training epochs")
    parser.add_argument("--adv-epochs", type=int, default=10, help="adversarial fine-tuning epochs")
    parser.add_argument("--train-steps", type=int, default=7, help="PGD steps during adversarial training")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps of the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output-dir", default="robustness_synthetic")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.num_train, args.num_validation, args.num_test, args.image_size = 32, 8, 16, 32
        args.epochs, args.adv_epochs, args.train_steps, args.steps = 1, 1, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    data = make_synthetic_rgbd(
        args.num_train, args.num_validation, args.num_test, image_size=args.image_size, seed=args.seed
    )
    processor = make_processor(args.image_size)
    train, train_labels = process_split(processor, data["train"])
    model = fused_classifier(data, processor, args.model_dir, epochs=args.epochs, seed=args.seed)

    reports = {}
    for stage in ("before", "after"):
        if stage == "after":
            adversarial_training(model, processor, train, train_labels, args.adv_epochs, args.train_steps, output_dir,
                                 args.seed)  # fmt: skip
        attacks = make_attacks(model, processor, args.steps)
        reports[stage] = evaluate_robustness(
            model, processor, data["test"], attacks, batch_size=100, output_dir=output_dir / stage
        )
    print(
        f"\nclean accuracy: before {reports['before']['clean_accuracy']:.4f}, after {reports['after']['clean_accuracy']:.4f}"
    )
    print(f"{'PGD-' + str(args.steps) + ' attack':40s} {'before':>8s} {'after':>8s}")
    for name in reports["before"]["attacks"]:
        before = reports["before"]["attacks"][name]["robust_accuracy"]
        after = reports["after"]["attacks"][name]["robust_accuracy"]
        print(f"{name:40s} {before:8.4f} {after:8.4f}")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(json.dumps(reports, indent=2))
    print(f"train accuracy (clean) after adversarial training: {accuracy(model, train, train_labels):.4f}")


if __name__ == "__main__":
    main()
