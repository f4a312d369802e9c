"""Benchmark: forward + backward throughput of the RGB tower (`RgbdVitModel`) against transformers' `ViTModel`.

Both models have the same size (by default ViT-S/16 at 224x224: hidden 384, 12 layers, 6 heads, MLP 1536), use
sdpa attention, get the same input batch and the same loss (mean square of `last_hidden_state`), and run in
training mode (dropout 0). `ViTModel` is built without its pooler (the RGB tower has none). Repetitions are
interleaved (the order of the two models alternates), so machine-load drifts hit both alike; the table reports
the median and the interquartile range of images/s per model and of the per-repetition ratio.

    python scripts/benchmark_vit_tower.py --threads 2 --repeats 30
    python scripts/benchmark_vit_tower.py --preset base --batch-size 4   # ViT-B/16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import transformers
from transformers import ViTConfig, ViTModel

from hf_rgbd import RgbdVitConfig, RgbdVitModel

PRESETS = {
    "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def step(model: torch.nn.Module, pixel_values: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss = model(pixel_values=pixel_values).last_hidden_state.float().pow(2).mean()
    loss.backward()


def timed(model: torch.nn.Module, pixel_values: torch.Tensor) -> float:
    start = time.perf_counter()
    step(model, pixel_values)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = dict(PRESETS[args.preset], image_size=args.image_size, patch_size=args.patch_size)
    reference = ViTModel._from_config(
        ViTConfig(**size, layer_norm_eps=1e-12), add_pooling_layer=False, attn_implementation="sdpa"
    ).train()
    candidate = RgbdVitModel._from_config(
        RgbdVitConfig(modality="rgb", **size, layer_norm_eps=1e-12), attn_implementation="sdpa"
    ).train()
    if not reference.config._attn_implementation == candidate.config._attn_implementation == "sdpa":
        raise RuntimeError("both models must run sdpa attention for this comparison.")
    n_ref = sum(p.numel() for p in reference.parameters())
    n_cand = sum(p.numel() for p in candidate.parameters())
    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size)

    models = {"ViTModel": reference, "RgbdVitModel": candidate}
    for _ in range(args.warmup):
        for model in models.values():
            step(model, pixel_values)
    times: dict[str, list[float]] = {name: [] for name in models}
    ratios = []
    for repeat in range(args.repeats):
        order = list(models) if repeat % 2 == 0 else list(models)[::-1]
        measured = {name: timed(models[name], pixel_values) for name in order}
        for name, seconds in measured.items():
            times[name].append(seconds)
        ratios.append(measured["ViTModel"] / measured["RgbdVitModel"])  # > 1: the RGB tower is faster

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(
        f"preset {args.preset}: hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, "
        f"{size['num_attention_heads']} heads, MLP {size['intermediate_size']}, {args.image_size}x{args.image_size} "
        f"patch {args.patch_size}; batch {args.batch_size}; forward + backward, sdpa; {args.repeats} interleaved "
        f"repetitions after {args.warmup} warm-up"
    )
    print(f"parameters: ViTModel {n_ref / 1e6:.2f} M, RgbdVitModel {n_cand / 1e6:.2f} M")
    print("| model | images/s median | images/s IQR | s/step median |")
    print("|---|---|---|---|")
    for name, values in times.items():
        throughput = [args.batch_size / t for t in values]
        q1, q3 = np.percentile(throughput, [25, 75])
        print(
            f"| {name} | {statistics.median(throughput):.2f} | {q1:.2f}-{q3:.2f} | {statistics.median(values):.3f} |"
        )
    q1, q3 = np.percentile(ratios, [25, 75])
    print(
        f"throughput ratio RgbdVitModel / ViTModel (per repetition): median {statistics.median(ratios):.3f}, "
        f"IQR {q1:.3f}-{q3:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} (target >= 0.95)"
    )


if __name__ == "__main__":
    main()
