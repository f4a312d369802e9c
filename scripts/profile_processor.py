"""Profile: where `RgbdProcessor` spends its time on the workload of `benchmark_processor.py` (32 RGB 480x640 uint8
+ 32 depth 480x640 uint16 mm -> 224x224, metric depth, both geometries), next to the floor set by the one
operation it cannot avoid (the antialiased RGB resize, torch's uint8 channels-last kernel on the stacked batch) and
the reference (`CLIPImageProcessor`, RGB only). Per stage: median ms per sample over `--repeats` interleaved runs.

    python scripts/profile_processor.py --threads 2 --repeats 15
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
import torch.nn.functional as F
from benchmark_processor import make_inputs
from transformers import CLIPImageProcessor

from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, depths = make_inputs(args.batch, 480, 640, 0)
    exact = RgbdProcessor(RgbdImageProcessor(), RgbdDepthProcessor(representation="metric"))
    clip_geometry = RgbdProcessor(
        RgbdImageProcessor(size={"shortest_edge": 224}, resample=3, do_center_crop=True),
        RgbdDepthProcessor(representation="metric"),
    )
    reference = CLIPImageProcessor()
    tensors = [torch.from_numpy(image) for image in images]

    def stack_rgb():
        return torch.stack(tensors).permute(0, 3, 1, 2)

    stacked = stack_rgb()
    resized = F.interpolate(stacked, size=(224, 224), mode="bilinear", antialias=True)
    out = torch.empty(resized.shape, dtype=torch.float32)
    stages = {
        "reference: CLIPImageProcessor (RGB)": lambda: reference(images=images, return_tensors="pt"),
        "RgbdProcessor 224x224 (RGB + depth)": lambda: exact(images=images, depths=depths),
        "RgbdProcessor CLIP geometry (RGB + depth)": lambda: clip_geometry(images=images, depths=depths),
        "  RGB only (image processor)": lambda: exact.image_processor(images=images),
        "  depth only (depth processor, 224x224)": lambda: exact.depth_image_processor(depths, output_size=(224, 224)),
        "  stage: stack 32 HWC uint8 frames": stack_rgb,
        "  stage: bilinear antialias resize, uint8 channels-last": lambda: F.interpolate(
            stacked, size=(224, 224), mode="bilinear", antialias=True
        ),
        "  stage: bicubic antialias resize (CLIP geometry), uint8": lambda: F.interpolate(
            stacked, size=(224, 298), mode="bicubic", antialias=True
        ),
        "  stage: uint8 -> normalised float32 at 224x224": lambda: torch.mul(resized, 1 / 255, out=out).sub_(0.5),
    }
    times = {name: [] for name in stages}
    for run in stages.values():
        run()
    for _ in range(args.repeats):
        for name, run in stages.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / args.batch * 1e3)
    reference_ms = statistics.median(times["reference: CLIPImageProcessor (RGB)"])
    print(f"torch {torch.__version__}, threads {args.threads}, {args.repeats} interleaved repeats, batch {args.batch}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:60s} {median:7.3f} ms/sample   reference / this {reference_ms / median:6.2f}x")
    print("\ncProfile of RgbdProcessor 224x224 (RGB + depth), 5 calls, by own time:")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        exact(images=images, depths=depths)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
