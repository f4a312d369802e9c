"""Benchmark: overhead of `pipeline("rgbd-image-classification")` over calling the processor and the model directly.

A dual-encoder classifier (`RgbdClipForImageClassification`) with ViT-S/16-sized towers at 224x224 (hidden 384, 12
layers, 6 heads, MLP 1536, sdpa attention) classifies the same 64 RGB-D pairs (RGB 240x320 uint8 arrays, depth
240x320 uint16 millimetres with holes) two ways:
- pipeline: `pipe(images, depths=depths, batch_size=16, top_k=5)` (the pipeline processes each pair, batches 16
  pairs, runs the model, and makes the top-5 label lists);
- direct: for each batch of 16 pairs, `processor(images=..., depths=...)`, `model(**inputs)` under
  `torch.inference_mode()` and the same top-5 label lists from the softmax.
Repetitions are interleaved (the order alternates), so load drifts hit both alike. Reports seconds per run for
each (median and range) and the per-repetition ratio pipeline / direct (median and range); the goal is at most
1.15x. Also checks that both give the same labels.

    python scripts/benchmark_pipeline.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import transformers
from transformers import pipeline

from hf_rgbd import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
    disable_progress_bars,
)

VIT_S16 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)


def top_labels(probabilities: torch.Tensor, id2label: dict[int, str], top_k: int) -> list[list[dict]]:
    values, indices = probabilities.topk(top_k, dim=-1)
    return [
        [{"label": id2label[int(i)], "score": float(v)} for v, i in zip(row_values, row_indices)]
        for row_values, row_indices in zip(values, indices)
    ]


def direct(model, processor, images, depths, batch_size: int, top_k: int) -> list[list[dict]]:
    results = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = processor(images=images[start : start + batch_size], depths=depths[start : start + batch_size])
            logits = model(
                pixel_values=batch["pixel_values"], depth_values=batch["depth_values"], depth_mask=batch["depth_mask"]
            ).logits
            results.extend(top_labels(logits.softmax(dim=-1), model.config.id2label, top_k))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    disable_progress_bars()
    torch.manual_seed(0)
    tower = dict(VIT_S16, image_size=args.image_size, patch_size=16)
    config = RgbdClipConfig(
        rgb_config=tower, depth_config=tower, projection_dim=384, num_labels=10, attn_implementation="sdpa"
    )
    model = RgbdClipForImageClassification(config).eval()
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": args.image_size, "width": args.image_size}),
        RgbdDepthProcessor(representation="dataset", depth_mean=2.5, depth_std=1.0),
    )
    pipe = pipeline("rgbd-image-classification", model=model, processor=processor)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(args.pairs)]
    depths = []
    for _ in range(args.pairs):
        depth = rng.integers(500, 6000, (240, 320)).astype(np.uint16)
        depth[rng.random((240, 320)) < 0.1] = 0
        depths.append(depth)

    def run_pipeline():
        return pipe(images, depths=depths, batch_size=args.batch_size, top_k=args.top_k)

    def run_direct():
        return direct(model, processor, images, depths, args.batch_size, args.top_k)

    # warm-up, and the same answers both ways
    from_pipeline, from_direct = run_pipeline(), run_direct()
    same = all(
        [r["label"] for r in a] == [r["label"] for r in b] for a, b in zip(from_pipeline, from_direct, strict=True)
    )
    times = {"pipeline": [], "direct": []}
    for repeat in range(args.repeats):
        order = ("pipeline", "direct") if repeat % 2 == 0 else ("direct", "pipeline")
        for name in order:
            start = time.perf_counter()
            run_pipeline() if name == "pipeline" else run_direct()
            times[name].append(time.perf_counter() - start)
    ratios = [p / d for p, d in zip(times["pipeline"], times["direct"])]
    print(
        f"{args.pairs} RGB-D pairs, batch {args.batch_size}, ViT-S/16 dual-encoder classifier at "
        f"{args.image_size}x{args.image_size}, {args.threads} threads, {args.repeats} interleaved repeats"
    )
    for name, values in times.items():
        print(
            f"  {name:<8} median {statistics.median(values):.3f} s per run ({min(values):.3f}-{max(values):.3f}); "
            f"{args.pairs / statistics.median(values):.1f} pairs/s"
        )
    print(
        f"  pipeline / direct: median {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}); "
        f"goal <= 1.15x: {'PASS' if statistics.median(ratios) <= 1.15 else 'FAIL'}"
    )
    print(f"  same top-{args.top_k} labels both ways: {same}")


if __name__ == "__main__":
    main()
