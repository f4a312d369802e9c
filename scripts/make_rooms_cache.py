"""Write the SUN RGB-D-layout rooms as a `--data-cache` file for the pretraining scripts.

The pretraining scripts (`train_rgbd_clip.py`, `train_rgbd_albef.py`, `train_rgbd_vlmo.py`) read their data as
tensors per split (`train_rgbd_clip.load_data`). This script renders `write_sunrgbd_rooms` (data of another kind
than `make_synthetic_rgbd()`: JPEG RGB, bit-rotated 16-bit PNG depth with Kinect-like noise and holes, three image
sizes), reads them back with `load_sunrgbd` and resizes every sample to 64x64 (RGB bilinear, depth nearest so that
holes stay holes), with the synthetic scenes' split sizes by default, so that a recipe tuned on the synthetic
scenes can be checked on it unchanged:

    python scripts/make_rooms_cache.py --output /tmp/hf_rgbd_rooms.pt
    python scripts/train_rgbd_albef.py --data-cache /tmp/hf_rgbd_rooms.pt ...
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from PIL import Image

from hf_rgbd.data import load_sunrgbd, write_sunrgbd_rooms


def resized_split(table, size: int) -> dict[str, torch.Tensor]:
    """`image` uint8 (N, 3, size, size), `depth` metres (N, 1, size, size) with 0 at holes, `label` (N,)."""
    images, depths = [], []
    for row in table:
        images.append(np.asarray(row["image"].convert("RGB").resize((size, size), Image.BILINEAR)))
        depth = np.nan_to_num(np.asarray(row["depth"], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        depths.append(np.asarray(Image.fromarray(depth, mode="F").resize((size, size), Image.NEAREST)))
    return {
        "image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "depth": torch.from_numpy(np.stack(depths)).unsqueeze(1),
        "label": torch.as_tensor(table["label"], dtype=torch.long),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the .pt file to write")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-validation", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.size < 1:
        parser.error(f"--size must be a positive number of pixels, got {args.size}")
    with tempfile.TemporaryDirectory() as root:
        splits = write_sunrgbd_rooms(root, args.num_train, args.num_validation, args.num_test, seed=args.seed)
        dataset = load_sunrgbd(root, splits=splits, classes="all", cache_dir=f"{root}/cache")
        data = {split: resized_split(table, args.size) for split, table in dataset.items()}
    torch.save(data, args.output)
    for split, values in data.items():
        valid = values["depth"] > 0
        print(
            f"{split}: {len(values['label'])} samples, {values['label'].unique().numel()} classes, "
            f"{valid.float().mean():.1%} valid depth pixels, depth {values['depth'][valid].min():.2f}-"
            f"{values['depth'][valid].max():.2f} m"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
