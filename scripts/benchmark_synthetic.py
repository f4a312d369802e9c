"""Benchmark ``make_synthetic_rgbd`` generation speed (rendering + building the ``datasets.Dataset``).

Usage: .venv/bin/python scripts/benchmark_synthetic.py [--samples 2000] [--repeats 5] [--image-size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="samples per timed run (all in the train split)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (after one warm-up run)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    args = parser.parse_args()

    # limit every threading layer before numpy / torch start their pools
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    from hf_rgbd.data import make_synthetic_rgbd

    def run(seed: int) -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        ds = make_synthetic_rgbd(args.samples, 0, 0, image_size=args.image_size, seed=seed, num_threads=args.threads)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert ds["train"].num_rows == args.samples
        return args.samples / wall, args.samples / cpu

    run(0)  # warm-up (imports, allocator)
    results = [run(seed) for seed in range(1, args.repeats + 1)]
    print(
        f"make_synthetic_rgbd: {args.samples} samples at {args.image_size}x{args.image_size}, "
        f"torch threads={torch.get_num_threads()}, repeats={args.repeats}, os.cpu_count()={os.cpu_count()}"
    )
    for name, rates in (("wall-clock", [r[0] for r in results]), ("per CPU second", [r[1] for r in results])):
        median = statistics.median(rates)
        print(
            f"{name:>15}: median {median:.0f} samples/s  (min {min(rates):.0f}, max {max(rates):.0f}, "
            f"spread {100 * (max(rates) - min(rates)) / median:.1f}% of median)"
        )
    if hasattr(os, "getloadavg"):
        print(f"load average during the run: {os.getloadavg()[0]:.2f} (other processes compete for the CPU if > 1)")


if __name__ == "__main__":
    main()
