"""Default thread settings vs forced torch thread counts, on an idle and on a loaded machine.

Times two workloads: `make_synthetic_rgbd` (rendering + building the datasets) and a short fusion probe
(`fusion_probe`: processing the splits, training `RgbdCnnConfig.small()` on RGB-D, test accuracy). Each runs with
the library's defaults (`num_threads=1` inside, torch's global count untouched) and with the scoped limit switched
off (`num_threads=None`) at `torch.set_num_threads(1)` and `(2)`, under three conditions: no competitor started by
this script, one busy competitor process not pinned, and one pinned to the last CPU (`--competitor spin`:
`while True: pass`; `matmul`: a single-threaded torch matmul loop). Settings are interleaved within each repeat;
medians (and min-max) over `--repeats`; the ratio is default / best median.

Usage: .venv/bin/python scripts/benchmark_threads.py [--repeats 5] [--samples 500] [--probe-train 512]
    [--probe-epochs 1] [--competitor spin|matmul] [--conditions idle busy pinned]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from hf_rgbd import disable_progress_bars
from hf_rgbd.data import make_synthetic_rgbd
from hf_rgbd.evaluation import fusion_probe

COMPETITORS = {
    "spin": "while True: pass",
    "matmul": "import torch\ntorch.set_num_threads(1)\na = torch.rand(256, 256)\nwhile True: a @ a",
}


def start_competitor(kind: str, pinned: bool) -> subprocess.Popen:
    cpu = max(os.sched_getaffinity(0))
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if pinned else None
    process = subprocess.Popen([sys.executable, "-c", COMPETITORS[kind]], preexec_fn=preexec)
    time.sleep(1.0)  # let it start spinning
    return process


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500, help="scenes per make_synthetic_rgbd run")
    parser.add_argument("--probe-train", type=int, default=512, help="train scenes of the probe (1/4 val, 1/4 test)")
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--competitor", choices=sorted(COMPETITORS), default="spin")
    parser.add_argument(
        "--conditions", nargs="+", choices=["idle", "busy", "pinned"], default=["idle", "busy", "pinned"]
    )
    args = parser.parse_args()
    disable_progress_bars()
    default_threads = torch.get_num_threads()
    probe_data = make_synthetic_rgbd(args.probe_train, args.probe_train // 4, args.probe_train // 4, seed=1)

    def generate(num_threads: int | None) -> Callable[[], object]:
        return lambda: make_synthetic_rgbd(args.samples, 0, 0, seed=2, num_threads=num_threads)

    def probe(num_threads: int | None) -> Callable[[], object]:
        return lambda: fusion_probe(
            probe_data, ["rgbd"], epochs=args.probe_epochs, num_threads=num_threads, disable_tqdm=True
        )

    settings = {"default": (default_threads, 1), "threads=1": (1, None), "threads=2": (2, None)}
    workloads = {"make_synthetic_rgbd": generate, "fusion_probe": probe}
    print(
        f"torch default threads {default_threads}, os.cpu_count() {os.cpu_count()}, repeats {args.repeats}, "
        f"generation {args.samples} scenes at 64x64, probe {args.probe_train} train scenes x {args.probe_epochs} "
        f"epoch(s) (RGB-D), competitor {args.competitor!r}"
    )
    print(f"{'condition':<8} {'workload':<20} " + " ".join(f"{name:>22}" for name in settings) + "  default/best")
    for condition in args.conditions:
        competitor = None if condition == "idle" else start_competitor(args.competitor, condition == "pinned")
        try:
            times = {(w, s): [] for w in workloads for s in settings}
            for _ in range(args.repeats):
                for workload, make_run in workloads.items():
                    for name, (torch_threads, num_threads) in settings.items():
                        torch.set_num_threads(torch_threads)
                        times[workload, name].append(timed(make_run(num_threads)))
            torch.set_num_threads(default_threads)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        load = os.getloadavg()[0]
        for workload in workloads:
            medians = {name: statistics.median(times[workload, name]) for name in settings}
            cells = " ".join(
                f"{medians[name]:>7.2f} s ({min(times[workload, name]):.2f}-{max(times[workload, name]):.2f})"
                for name in settings
            )
            ratio = medians["default"] / min(medians.values())
            print(f"{condition:<8} {workload:<20} {cells:>22}  {ratio:.2f}x  (load average {load:.1f})", flush=True)


if __name__ == "__main__":
    main()
