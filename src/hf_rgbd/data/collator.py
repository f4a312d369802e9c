"""RGB-D batches for a torch ``DataLoader`` or the ``Trainer``: a ``set_transform`` transform and a data collator.

Both run an [`RgbdProcessor`] (and optionally an aligned augmentation such as [`RgbdAugment`]) where they are called,
i.e. in the ``DataLoader`` workers. Used like transformers' image-classification example::

    train = dataset["train"].with_transform(RgbdTransform(processor, augment=RgbdAugment(p_flip=0.5)))
    trainer = Trainer(model, args, train_dataset=train, data_collator=RgbdDataCollator())  # stacks

or without a transform, the collator processing raw rows (any ``datasets`` format)::

    loader = DataLoader(dataset["train"].with_format("numpy"), batch_size=32, num_workers=2,
                        collate_fn=RgbdDataCollator(processor))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["RgbdDataCollator", "RgbdTransform"]

_MODEL_KEYS = ("pixel_values", "depth_values", "depth_mask", "depth_token_ids", "intrinsics")


def _depth_array(value: Any) -> Any:
    """A depth map as the processor takes it: nested lists (``datasets``' python format) become float32 arrays."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.float32)
    return value


def _image_size(image: Any) -> tuple[int, int]:
    if hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):  # PIL: (width, height)
        return int(image.size[1]), int(image.size[0])
    return tuple(np.shape(image)[:2])


class _RgbdBatchProcessor:
    """What the transform and the collator share: column names, the processor call and worker-aware augmentation."""

    def __init__(
        self,
        processor: Any = None,
        augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        image_column: str = "image",
        depth_column: str = "depth",
        intrinsics_column: str | None = "intrinsics",
        label_column: str = "label",
        return_intrinsics: bool = False,
        **processor_kwargs: Any,
    ) -> None:
        if augment is not None and not callable(augment):
            raise ValueError(
                f"`augment` must be callable (e.g. an RgbdAugment) or None, got {type(augment).__name__}."
            )
        self.processor = processor
        self.augment = augment
        self.image_column = image_column
        self.depth_column = depth_column
        self.intrinsics_column = intrinsics_column
        self.label_column = label_column
        self.return_intrinsics = return_intrinsics
        self.processor_kwargs = processor_kwargs
        self._seeded_for: int | None = None

    def _reseed_augment_in_worker(self) -> None:
        """Give each DataLoader worker (and each epoch's new workers) its own augmentation stream: workers start
        from copies of one generator state, which would repeat the same crops and flips in every worker."""
        info = torch.utils.data.get_worker_info()
        generator = getattr(self.augment, "generator", None)
        if info is None or not isinstance(generator, torch.Generator) or self._seeded_for == info.seed:
            return
        generator.manual_seed(info.seed % (2**63))
        self._seeded_for = info.seed

    def _augment(
        self, images: list, depths: list, intrinsics: list | None, seeds: Sequence[int] | None = None
    ) -> tuple[list, list, list | None]:
        """Augment samples grouped by size (one augmentation call per size; with `seeds`, one per sample, each
        sample draws from its own stream). Returns per-sample tensors."""
        if seeds is None:
            self._reseed_augment_in_worker()
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(_image_size(image), []).append(index)
        out_images, out_depths = [None] * len(images), [None] * len(images)
        out_k = None if intrinsics is None else [None] * len(images)
        for members in groups.values():
            batch = {
                "image": [images[i] for i in members],
                "depth": [np.asarray(depths[i], dtype=np.float32) for i in members],
            }
            if intrinsics is not None:
                batch["intrinsics"] = [np.asarray(intrinsics[i], dtype=np.float32) for i in members]
            augmented = self.augment(batch) if seeds is None else self.augment(batch, seeds=[seeds[i] for i in members])
            for j, i in enumerate(members):
                out_images[i], out_depths[i] = augmented["image"][j], augmented["depth"][j]
                if out_k is not None:
                    out_k[i] = augmented["intrinsics"][j]
        return out_images, out_depths, out_k

    def _process(self, columns: Mapping[str, Sequence[Any]], seeds: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Columns (lists of samples) -> ``pixel_values`` (B, 3, H, W), ``depth_values`` (B, C, H, W),
        ``depth_mask`` (B, 1, H, W) bool, ``labels`` (B,) long (when the label column is there)."""
        if self.processor is None:
            raise ValueError("these rows hold no `pixel_values`: pass a `processor` to process raw image/depth rows.")
        missing = [c for c in (self.image_column, self.depth_column) if c not in columns]
        if missing:
            raise ValueError(f"rows lack the column(s) {missing}; they have {sorted(columns)}.")
        images = list(columns[self.image_column])
        depths = [_depth_array(d) for d in columns[self.depth_column]]
        intrinsics = None
        if self.intrinsics_column is not None and columns.get(self.intrinsics_column) is not None:
            intrinsics = [np.asarray(k, dtype=np.float32) for k in columns[self.intrinsics_column]]
        if self.augment is not None:
            images, depths, intrinsics = self._augment(images, depths, intrinsics, seeds)
        batch = self.processor(
            images=images,
            depths=depths,
            intrinsics=intrinsics,
            return_intrinsics=self.return_intrinsics and intrinsics is not None,
            return_tensors="pt",
            **self.processor_kwargs,
        )
        out = dict(batch)
        if self.label_column in columns:
            out["labels"] = torch.as_tensor(np.asarray(columns[self.label_column]), dtype=torch.long)
        return out


class RgbdTransform(_RgbdBatchProcessor):
    """A ``set_transform`` / ``with_transform`` transform turning ``image`` / ``depth`` / ``intrinsics`` / ``label``
    rows into model inputs, in whichever process reads the rows (the ``DataLoader`` workers).

    Args:
        processor: an [`RgbdProcessor`] (its output size must be fixed, e.g. ``size={"height", "width"}``, for rows
            of different sizes to stack).
        augment: optional aligned augmentation called per image size on ``{"image": [...], "depth": [...],
            "intrinsics": [...]}`` (e.g. [`RgbdAugment`]); its torch generator is reseeded per worker.
        image_column, depth_column, intrinsics_column, label_column: column names (``intrinsics_column=None``
            ignores intrinsics).
        return_intrinsics: also return the rescaled ``intrinsics`` (B, 3, 3).
        processor_kwargs: per-call processor overrides (``size``, ``do_center_crop``, ...).

    Returns (per call on a batch of B rows): ``pixel_values`` (B, 3, H, W) float32, ``depth_values`` (B, C, H, W)
    float32, ``depth_mask`` (B, 1, H, W) bool, ``labels`` (B,) int64 (and ``depth_token_ids`` with a depth vocabulary).
    Only these keys are returned, so transformers' ``DefaultDataCollator`` or [`RgbdDataCollator`] stack the rows.
    """

    def __init__(self, processor: Any, augment: Callable | None = None, **kwargs: Any) -> None:
        if processor is None:
            raise ValueError("RgbdTransform needs a `processor` (an RgbdProcessor).")
        super().__init__(processor, augment, **kwargs)

    def __call__(self, batch: Mapping[str, Sequence[Any]], seeds: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Process a batch of rows; `seeds` (one int per row) give each row its own augmentation stream (the
        augmentation must take `seeds`, as [`RgbdAugment`] does)."""
        if seeds is not None and len(seeds) != len(batch[self.image_column]):
            raise ValueError(f"`seeds` must hold one seed per row ({len(batch[self.image_column])}), got {len(seeds)}.")
        return self._process(batch, seeds)


class RgbdDataCollator(_RgbdBatchProcessor):
    """Data collator for RGB-D rows (``collate_fn`` of a ``DataLoader``, ``data_collator`` of the ``Trainer``).

    Rows that already hold ``pixel_values`` / ``depth_values`` (from [`RgbdTransform`]) are stacked, as
    transformers' ``DefaultDataCollator`` does; raw rows (``image``, ``depth`` metres, optional ``intrinsics``,
    ``label``, in any ``datasets`` format) are processed by ``processor`` (and ``augment``) in the calling process.
    Takes the arguments of [`RgbdTransform`]; ``processor`` may be ``None`` when only stacking.

    Returns: ``pixel_values`` (B, 3, H, W), ``depth_values`` (B, C, H, W), ``depth_mask`` (B, 1, H, W) bool,
    ``labels`` (B,) int64, plus ``depth_token_ids`` / ``intrinsics`` when present.
    """

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("RgbdDataCollator got an empty list of rows.")
        first = features[0]
        if "pixel_values" not in first and "depth_values" not in first:
            columns = {key: [row[key] for row in features] for key in first}
            return self._process(columns)
        out = {}
        for key in _MODEL_KEYS:
            if key in first and first[key] is not None:
                values = [
                    torch.as_tensor(np.asarray(row[key]) if not torch.is_tensor(row[key]) else row[key])
                    for row in features
                ]
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) > 1:
                    raise ValueError(
                        f"rows have `{key}` of different shapes {sorted(shapes)}; give the processor a fixed output "
                        'size (size={"height": H, "width": W}, or do_center_crop) so that they stack.'
                    )
                out[key] = torch.stack(values)
        label_key = "labels" if "labels" in first else self.label_column if self.label_column in first else None
        if label_key is not None:
            out["labels"] = torch.as_tensor(
                np.asarray([np.asarray(row[label_key]) for row in features]), dtype=torch.long
            )
        return out
