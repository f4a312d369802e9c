"""Show that the synthetic RGB-D scenes need both modalities.

Trains `RgbdCnnForImageClassification` (`RgbdCnnConfig.small()`; early fusion for RGB-D) with the same
hyper-parameters and seed on RGB only, depth only and RGB + depth (`hf_rgbd.evaluation.fusion_probe`), and fits a
logistic regression on per-image colour / depth statistics (`statistics_linear_probe`). Prints a table of test
accuracies and the run time.

Usage: .venv/bin/python scripts/probe_synthetic.py [--epochs 60] [--threads 1] [--seed 0] [--data-seed 0]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description="RGB-only vs depth-only vs RGB-D probe on make_synthetic_rgbd()")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-seed", type=int, default=0, help="make_synthetic_rgbd seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fusion_probe's num_threads)")
    parser.add_argument("--modalities", nargs="+", default=["rgb", "depth", "rgbd"], choices=["rgb", "depth", "rgbd"])
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args()

    from hf_rgbd.data import make_synthetic_rgbd
    from hf_rgbd.evaluation import fusion_probe, statistics_linear_probe

    start, cpu_start = time.perf_counter(), time.process_time()
    dataset = make_synthetic_rgbd(seed=args.data_seed, num_threads=args.threads)
    print(
        f"generated {', '.join(f'{k}={v.num_rows}' for k, v in dataset.items())} in {time.perf_counter() - start:.1f} s"
    )
    linear = statistics_linear_probe(dataset)
    print(f"linear probe on RGB / depth mean + std: test accuracy {linear:.4f}", flush=True)
    results = fusion_probe(
        dataset,
        args.modalities,
        epochs=args.epochs,
        seed=args.seed,
        log=print if args.verbose else None,
        num_threads=args.threads,
    )
    print(f"\n{'input':<42} {'test acc':>8} {'val acc':>8} {'best epoch':>10} {'train time':>10}")
    print(f"{'logistic regression on RGB/depth mean+std':<42} {100 * linear:7.2f}%")
    for modality, result in results.items():
        print(
            f"{'RgbdCnnForImageClassification ' + modality:<42} {100 * result['test_accuracy']:7.2f}% "
            f"{100 * result['validation_accuracy']:7.2f}% {result['best_epoch']:>10} {result['train_seconds']:>8.0f} s"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"total runtime {time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU "
        f"(torch threads={args.threads}, epochs={args.epochs}; load average now {load})"
    )


if __name__ == "__main__":
    main()
