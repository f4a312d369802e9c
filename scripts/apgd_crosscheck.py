"""APGD strength: hf-rgbd APGD-CE vs pyautoattack's APGD-CE on a trained fused classifier (RGB budget, depth fixed,
through an adapter for pyautoattack), same steps, fixed seeds, on the synthetic test split.

    python scripts/apgd_crosscheck.py --num-test 1000 --epochs 30 --eps 1 2 4 --steps 100 --threads 2
    python scripts/apgd_crosscheck.py --quick
"""

from __future__ import annotations

import argparse
import time

import torch
from _attack_script_utils import Adapter, accuracy, add_data_arguments, fused_classifier, make_processor, process_split

from hf_rgbd.attacks import APGD
from hf_rgbd.data import make_synthetic_rgbd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--eps", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="RGB budgets, in 1/255")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.num_train, args.num_validation, args.num_test, args.image_size, args.epochs, args.steps = (
            32,
            8,
            16,
            32,
            1,
            5,
        )
        args.eps, args.batch_size = [2.0], 8
    if args.threads:
        torch.set_num_threads(args.threads)
    from autoattack.autopgd_pt import APGDAttack

    data = make_synthetic_rgbd(
        args.num_train, args.num_validation, args.num_test, image_size=args.image_size, seed=args.seed
    )
    processor = make_processor(args.image_size)
    train, train_labels = process_split(processor, data["train"])
    test, test_labels = process_split(processor, data["test"])
    model = fused_classifier(data, processor, args.model_dir, epochs=args.epochs, seed=args.seed)
    print(f"clean test accuracy: {accuracy(model, test, test_labels):.4f} ({len(test_labels)} samples)")
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)

    print(
        f"{'eps':>8s} {'pyautoattack APGD-CE':>22s} {'hf-rgbd APGD-CE':>17s} {'difference':>11s} {'time (s) ref / ours':>20s}"
    )
    for eps in args.eps:
        robust = {"ref": 0, "ours": 0}
        seconds = {"ref": 0.0, "ours": 0.0}
        for start in range(0, len(test_labels), args.batch_size):
            batch = {key: value[start : start + args.batch_size] for key, value in test.items()}
            labels = test_labels[start : start + args.batch_size]
            with torch.no_grad():
                clean = model(**batch).logits.argmax(1) == labels
            # Both attacks see only the clean-correct samples (pyautoattack attacks a subset it selects itself,
            # which the adapter's fixed depth could not follow).
            batch = {key: value[clean] for key, value in batch.items()}
            labels = labels[clean]
            if len(labels) == 0:
                continue
            clean = torch.ones_like(labels, dtype=torch.bool)
            adapter = Adapter(model, mean, std, batch["depth_values"], batch["depth_mask"]).eval()
            images = batch["pixel_values"] * std + mean
            reference = APGDAttack(adapter, n_iter=args.steps, norm="Linf", eps=eps / 255, seed=args.seed, loss="ce",
                                   device="cpu")  # fmt: skip
            begin = time.perf_counter()
            still_correct, _ = reference.perturb(images, labels, cheap=True)
            seconds["ref"] += time.perf_counter() - begin
            robust["ref"] += int((still_correct.cpu() & clean).sum())
            attack = APGD(
                model, budget={"pixel_values": eps / 255}, steps=args.steps, processor=processor, seed=args.seed
            )
            begin = time.perf_counter()
            adversarial = attack(batch, labels)
            seconds["ours"] += time.perf_counter() - begin
            with torch.no_grad():
                robust["ours"] += int(((model(**adversarial).logits.argmax(1) == labels) & clean).sum())
        n = len(test_labels)
        ref, ours = robust["ref"] / n, robust["ours"] / n
        print(
            f"{eps:6.2f}/255 {ref:22.4f} {ours:17.4f} {100 * (ours - ref):+10.2f}pt {seconds['ref']:9.1f} / {seconds['ours']:.1f}"
        )


if __name__ == "__main__":
    main()
