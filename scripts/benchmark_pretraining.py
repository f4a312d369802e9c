"""Pretraining throughput and model FLOPs utilisation of the dual encoder, as `hf-rgbd pretrain` steps it.

The step is `hf-rgbd pretrain`'s: accelerate (`--mixed_precision`, bf16 by default on a GPU), its optimizer
(`pretraining_optimizer`), `accelerator.backward`, clipping, ITC loss over the batch. Inputs are random tensors
of the model's sizes already on the device, so the figure is the model's, not the input pipeline's. The FLOPs of
one step (forward + backward) are counted by `torch.utils.flop_counter.FlopCounterMode` on the first step;
MFU = FLOPs per second / `--peak-tflops` (the accelerator's dense peak at that precision, e.g. 989 for an
H100 / H200 in bf16; on a CPU give a measured or nominal peak, or leave it out).

    python scripts/benchmark_pretraining.py --size vit-b16 --batch-size 256 --steps 30 --peak-tflops 989
    python scripts/benchmark_pretraining.py --size small --batch-size 100 --steps 10 --mixed-precision no
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from accelerate import Accelerator
from torch.utils.flop_counter import FlopCounterMode

from hf_rgbd import RgbdClipConfig, RgbdClipModel
from hf_rgbd.training.pretrain import pretraining_optimizer

# ViT-B/16 towers (CLIP ViT-B/16 vision sizes), linear patch embedding, projection 512
VIT_B16 = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, image_size=224,
    patch_size=16, patch_embedding_type="linear",
)  # fmt: skip


def make_config(size: str, attention: str) -> RgbdClipConfig:
    if size == "vit-b16":
        config = RgbdClipConfig(rgb_config=dict(VIT_B16), depth_config=dict(VIT_B16), projection_dim=512)
    else:
        config = getattr(RgbdClipConfig, size)()
    config._attn_implementation = attention
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "small", "vit-b16"), default="vit-b16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the accelerator, TFLOP/s")
    args = parser.parse_args()
    accelerated = torch.accelerator.is_available()
    precision = args.mixed_precision or ("bf16" if accelerated else "no")
    accelerator = Accelerator(mixed_precision=precision, cpu=not accelerated)
    torch.manual_seed(0)
    model = RgbdClipModel(make_config(args.size, args.attention))
    optimizer = pretraining_optimizer(model, 1e-4, 0.05, 10.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    config = accelerator.unwrap_model(model).config
    side, channels = config.rgb_config.image_size, config.depth_config.num_channels
    device = accelerator.device
    batch = {
        "pixel_values": torch.randn(args.batch_size, 3, side, side, device=device),
        "depth_values": torch.randn(args.batch_size, channels, side, side, device=device),
        "depth_mask": torch.ones(args.batch_size, 1, side, side, dtype=torch.bool, device=device),
    }

    def step() -> None:
        loss = model(**batch, return_loss=True).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        if accelerated:
            torch.accelerator.synchronize()
        start = time.perf_counter()
        step()
        if accelerated:
            torch.accelerator.synchronize()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    parameters = sum(p.numel() for p in model.parameters())
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.size} dual encoder ({parameters / 1e6:.1f} M parameters), batch {args.batch_size}, {precision}, "
        f"{args.attention} attention, on {device_name}"
    )
    print(
        f"step: median {1000 * median:.1f} ms (min {1000 * min(seconds):.1f}, max {1000 * max(seconds):.1f}) over "
        f"{args.steps} steps -> {args.batch_size / median:.1f} pairs/s"
    )
    achieved = flops_per_step / median / 1e12
    print(
        f"model FLOPs per step (forward + backward, counted): {flops_per_step / 1e9:.1f} GFLOP -> "
        f"{1000 * achieved:.1f} GFLOP/s"
    )
    if args.peak_tflops:
        print(f"MFU: {100 * achieved / args.peak_tflops:.1f}% of {args.peak_tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
