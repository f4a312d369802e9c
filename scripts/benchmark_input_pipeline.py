"""Benchmark: does the input pipeline keep the model fed?

Input pipeline: the `Trainer`'s path of `hf-rgbd finetune`, i.e. a `datasets` split read through
`with_transform(RgbdTransform(processor, augment=RgbdAugment(...)))`, batched by `RgbdDataCollator()` in a torch
`DataLoader` with `--workers` worker processes (0 = in the main process): file decode (JPEG / 16-bit PNG for the
SUN RGB-D-layout rooms, Arrow for the synthetic scenes), aligned augmentation, processing, collation. Samples/s
over `--batches` batches after one warm-up batch.

Training step: forward + backward + AdamW step of the classifiers on a batch of the same geometry, samples/s
(median of `--repeats`): at 64x64 the `small()` configs of the CNN, dual-encoder, fusion-encoder and experts
families; at 224x224 the dual encoder with ViT-S/16 towers (hidden 384, 12 layers, 6 heads).

The ratio pipeline / step says how many times faster than the model the data arrive (>= 1: the model is fed).
Both are measured in the same run, on the same threads (`--threads` for the step; workers run one thread each).

    python scripts/benchmark_input_pipeline.py --threads 2 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hf_rgbd import (
    RgbdAlbefConfig,
    RgbdClipConfig,
    RgbdCnnConfig,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
    RgbdVitConfig,
    RgbdVlmoConfig,
    disable_progress_bars,
)
from hf_rgbd.data import RgbdAugment, RgbdDataCollator, RgbdTransform, load_sunrgbd, make_synthetic_rgbd
from hf_rgbd.data.rooms import write_sunrgbd_rooms

VIT_S16 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=16,
               image_size=224, patch_embedding_type="linear")


def processor_for(side: int) -> RgbdProcessor:
    return RgbdProcessor(
        RgbdImageProcessor(size={"height": side, "width": side}),
        RgbdDepthProcessor(representation="metric", max_depth=10.0),
    )


def pipeline_rate(split, side: int, workers: int, batch_size: int, batches: int, seed: int) -> float:
    augment = RgbdAugment(output_size=side, crop_scale=(0.6, 1.0), brightness=0.1, contrast=0.1, saturation=0.1,
                          generator=seed)
    dataset = split.with_transform(RgbdTransform(processor_for(side), augment=augment))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=RgbdDataCollator(), generator=torch.Generator().manual_seed(seed),
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start, first decode
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        count += batch["pixel_values"].shape[0]
    return count / (time.perf_counter() - start)


def step_rate(model: torch.nn.Module, side: int, batch_size: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.randn(batch_size, 3, side, side, generator=generator),
        "depth_values": torch.rand(batch_size, 1, side, side, generator=generator),
        "depth_mask": torch.ones(batch_size, 1, side, side, dtype=torch.bool),
        "labels": torch.randint(0, model.config.num_labels, (batch_size,), generator=generator),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        if repeat:  # the first one warms up
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    disable_progress_bars()
    from transformers import AutoModelForImageClassification

    work = Path(tempfile.mkdtemp(prefix="hf_rgbd_pipeline_"))
    files = write_sunrgbd_rooms(work / "SUNRGBD", num_train=400, num_validation=1, num_test=1, seed=args.seed)
    rooms = load_sunrgbd(work / "SUNRGBD", splits={"train": files["train"]}, classes="all", cache_dir=work / "cache")["train"]
    synthetic = make_synthetic_rgbd(num_train=800, num_validation=1, num_test=1, seed=args.seed)["train"]

    geometries = {
        64: {"batch": 64, "data": {"synthetic scenes (Arrow, 64x64)": synthetic, "SUN RGB-D-layout rooms (JPEG + PNG)": rooms}},
        224: {"batch": 16, "data": {"SUN RGB-D-layout rooms (JPEG + PNG)": rooms}},
    }
    models = {
        64: {
            "rgbd_cnn small (multi-stage)": RgbdCnnConfig.small(num_labels=8),
            "rgbd_clip small": RgbdClipConfig.small(num_labels=8),
            "rgbd_albef small": RgbdAlbefConfig.small(num_labels=8),
            "rgbd_vlmo small": RgbdVlmoConfig.small(num_labels=8),
        },
        224: {
            "rgbd_clip ViT-S/16": RgbdClipConfig(
                rgb_config=RgbdVitConfig(modality="rgb", **VIT_S16).to_dict(),
                depth_config=RgbdVitConfig(modality="depth", **VIT_S16).to_dict(),
                num_labels=8,
            ),
        },
    }
    print(f"torch {torch.__version__}, threads {args.threads}, workers {args.workers}, {args.batches} batches per pipeline run")
    for side, setting in geometries.items():
        batch_size = setting["batch"]
        print(f"\n{side}x{side}, batch {batch_size}")
        steps = {}
        for name, config in models[side].items():
            torch.manual_seed(0)
            model = AutoModelForImageClassification.from_config(config)
            steps[name] = step_rate(model, side, batch_size, args.repeats)
            print(f"  training step {name:40s} {steps[name]:8.1f} samples/s")
        slowest_model = min(steps.values())
        fastest_model = max(steps.values())
        for data_name, split in setting["data"].items():
            for workers in args.workers:
                rate = pipeline_rate(split, side, workers, batch_size, args.batches, args.seed)
                print(f"  input pipeline {data_name:38s} workers {workers}: {rate:8.1f} samples/s "
                      f"= {rate / fastest_model:.2f}x the fastest step, {rate / slowest_model:.2f}x the slowest")


if __name__ == "__main__":
    main()
