"""A data split as model-input tensors: every row through a processor, concatenated."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def split_to_tensors(
    split: Any, processor: Any, batch_size: int = 500, return_intrinsics: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Process a `make_synthetic_rgbd` split (or any dataset with `image`, `depth`, `label`, `intrinsics`).

    Args:
        split: a `datasets.Dataset` with `image`, `depth` (metres, 0 = hole), `label` and optionally `intrinsics`.
        processor: an `RgbdProcessor` (its depth representation decides `depth_values`; HHA uses `intrinsics`).
        batch_size: rows processed per call (bounds the temporary memory).
        return_intrinsics: also return the rescaled `intrinsics` (N, 3, 3) when the split has them.

    Returns:
        `inputs`, every entry the processor returns, concatenated: `pixel_values` (N, 3, H, W), `depth_values`
        (N, C_d, H, W), `depth_mask` (N, 1, H, W) bool (and `depth_token_ids`, `intrinsics` when asked for);
        and `labels` (N,) long.
    """
    missing = sorted({"image", "depth", "label"} - set(split.column_names))
    if missing:
        raise ValueError(
            f"`split` needs the columns image, depth and label (as make_synthetic_rgbd makes them); it lacks {missing}."
        )
    parts: dict[str, list[torch.Tensor]] = {}
    labels = []
    numpy_split = split.with_format("numpy")
    for start in range(0, split.num_rows, batch_size):
        columns = numpy_split[start : start + batch_size]
        intrinsics = columns.get("intrinsics")
        batch = processor(
            images=columns["image"],
            depths=columns["depth"][:, None],
            intrinsics=intrinsics,
            return_intrinsics=return_intrinsics and intrinsics is not None,
        )
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
        labels.append(torch.as_tensor(np.asarray(columns["label"]), dtype=torch.long))
    return {key: torch.cat(value) for key, value in parts.items()}, torch.cat(labels)


__all__ = ["split_to_tensors"]
