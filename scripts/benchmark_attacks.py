"""Cost of a PGD step: hf-rgbd PGD vs a raw loop of forward + input-gradient backward, and vs torchattacks' PGD on
an adapter module (one [0, 1] tensor -> normalise -> model with depth fixed -> logits).

Repetitions are interleaved (raw, hf-rgbd, torchattacks, ... in turn); medians and interquartile ranges of the time
per step are reported, with ratios of the medians.

    python scripts/benchmark_attacks.py --repeats 30 --threads 2           # full run (CNN small + ViT small)
    python scripts/benchmark_attacks.py --quick                            # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _attack_script_utils import Adapter

from hf_rgbd import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
)
from hf_rgbd.attacks import PGD


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def bench_model(name, model, processor, batch_size, image_size, steps, repeats, device):
    import torchattacks

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
    depths = 0.5 + 5 * torch.rand(batch_size, 1, image_size, image_size, generator=generator)
    batch = processor(images=images, depths=depths).to(device)
    labels = torch.randint(0, model.config.num_labels, (batch_size,), generator=generator).to(device)
    mean = torch.tensor(processor.image_processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std, device=device).view(1, 3, 1, 1)
    physical = batch["pixel_values"] * std + mean
    model = model.to(device).eval()
    adapter = Adapter(model, mean, std, batch["depth_values"], batch["depth_mask"]).eval()
    budget, alpha = {"pixel_values": 8 / 255}, {"pixel_values": 2 / 255}
    ours = PGD(model, budget=budget, alpha=alpha, steps=steps, random_start=True, processor=processor)
    ours_joint = PGD(model, steps=steps, processor=processor)
    reference = torchattacks.PGD(adapter, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=True)

    def raw():  # the floor: forward + input-gradient backward + a sign step, nothing else
        x = physical.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            logits = adapter(x)
            grad = torch.autograd.grad(F.cross_entropy(logits, labels), x)[0]
            x = (x.detach() + 2 / 255 * grad.sign()).clamp(0, 1)

    runs = {
        "raw forward+input-grad": raw,
        "hf-rgbd PGD (RGB)": lambda: ours(batch, labels),
        "torchattacks PGD (adapter)": lambda: reference(physical, labels),
        "hf-rgbd PGD (RGB + depth)": lambda: ours_joint(batch, labels),
    }
    for run in runs.values():  # warm-up
        run()
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - start) / steps * 1000)
    print(f"\n{name}: batch {batch_size}, {image_size}x{image_size}, {steps} steps, {repeats} interleaved repeats")
    print(f"{'':30s} {'median ms/step':>15s} {'IQR':>17s} {'vs raw':>8s} {'vs torchattacks':>16s}")
    raw_median = statistics.median(times["raw forward+input-grad"])
    ta_median = statistics.median(times["torchattacks PGD (adapter)"])
    for key, values in times.items():
        low, median, high = quartiles(values)
        print(
            f"{key:30s} {median:15.3f} {low:8.3f}-{high:8.3f} {median / raw_median:7.3f}x {median / ta_median:15.3f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", default="cnn,vit")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batch_size, args.image_size, args.steps = 3, 4, 32, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": args.image_size, "width": args.image_size}),
        RgbdDepthProcessor(representation="log"),
    )
    torch.manual_seed(0)
    for name in args.models.split(","):
        if name == "cnn":
            model = RgbdCnnForImageClassification(RgbdCnnConfig.small(num_labels=8, fusion_type="multi_stage"))
            label = "RgbdCnn small (multi-stage fusion)"
        elif name == "vit":
            tower = {"image_size": args.image_size}
            config = RgbdClipConfig.small(num_labels=8, rgb_config=tower, depth_config=tower)
            model = RgbdClipForImageClassification(config)
            label = "RgbdClip small (two ViT towers)"
        else:
            raise ValueError(f"unknown model {name!r}; use cnn and/or vit")
        bench_model(label, model, processor, args.batch_size, args.image_size, args.steps, args.repeats, device)


if __name__ == "__main__":
    main()
