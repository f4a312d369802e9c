"""Benchmark: RgbdProcessor (RGB + depth) against transformers' CLIPImageProcessor (RGB only), per sample.

Workload: 32 RGB 480x640 uint8 images + 32 depth maps 480x640 (uint16 millimetres, with holes) -> 224x224, metric
representation, no tokens. The reference is transformers' CLIPImageProcessor with its Pillow backend (the one
available without torchvision) on the RGB images alone, measured in the same run. Runs are interleaved
(reference, candidate, reference, ...) so that drifts in machine load hit both alike.

    python scripts/benchmark_processor.py --repeats 30 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import transformers
from transformers import CLIPImageProcessor

from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor


def make_inputs(batch: int, height: int, width: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # Smooth-ish images (random noise is not representative of JPEG-decoded photos, but costs the same to resize).
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    depths = []
    for _ in range(batch):
        depth_mm = rng.uniform(500, 6000, (height, width)).astype(np.uint16)
        depth_mm[rng.random((height, width)) < 0.05] = 0  # holes
        depths.append(depth_mm)
    return images, depths


def summarise(times: list[float], batch: int) -> str:
    per_sample = sorted(t / batch * 1e3 for t in times)
    q1, median, q3 = np.percentile(per_sample, [25, 50, 75])
    return (
        f"median {median:7.3f} ms/sample  IQR [{q1:.3f}, {q3:.3f}]  min {per_sample[0]:.3f}  max {per_sample[-1]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 30:
        parser.error("--repeats must be at least 30")
    torch.set_num_threads(args.threads)

    images, depths = make_inputs(args.batch, 480, 640, args.seed)
    reference = CLIPImageProcessor()  # resize shortest edge 224 (bicubic) + center crop 224, Pillow backend
    candidates = {
        "RgbdProcessor (224x224 exact, bilinear)": RgbdProcessor(
            RgbdImageProcessor(), RgbdDepthProcessor(representation="metric")
        ),
        "RgbdProcessor (CLIP geometry: shortest edge 224 bicubic + crop)": RgbdProcessor(
            RgbdImageProcessor(size={"shortest_edge": 224}, resample=3, do_center_crop=True),
            RgbdDepthProcessor(representation="metric"),
        ),
    }

    def run_reference():
        return reference(images=images, return_tensors="pt")["pixel_values"]

    runs = {"CLIPImageProcessor (RGB only)": run_reference}
    for name, processor in candidates.items():
        runs[name] = lambda processor=processor: processor(images=images, depths=depths, return_tensors="pt")

    # Check outputs once (shapes) and warm up.
    for name, run in runs.items():
        out = run()
        shapes = {k: tuple(v.shape) for k, v in out.items()} if hasattr(out, "items") else tuple(out.shape)
        print(f"{name}: {shapes}")
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    print(
        f"\ntorch {torch.__version__}, transformers {transformers.__version__}, reference class "
        f"{type(reference).__name__}, threads {torch.get_num_threads()}, {args.repeats} interleaved repeats, "
        f"batch {args.batch} x 480x640 -> 224x224"
    )
    reference_median = statistics.median(times["CLIPImageProcessor (RGB only)"])
    for name, values in times.items():
        speedup = reference_median / statistics.median(values)
        print(f"{name:66s} {summarise(values, args.batch)}  speed-up x{speedup:.2f}")


if __name__ == "__main__":
    main()
