"""`scripts/train_rgbd_clip.py` (the dual encoder's reference run) and `hf-rgbd pretrain` consume the same random
streams: the script's batches equal the accelerate loader's bit for bit, so their runs can be compared."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def reference_script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_rgbd_clip

        yield train_rgbd_clip
    finally:
        sys.path.remove(str(SCRIPTS))


def _tensors(split) -> dict[str, torch.Tensor]:
    """A split as the script's `load_data` holds it: uint8 images, depth in metres (0 at holes), labels."""
    images = np.stack([np.asarray(image) for image in split["image"]])
    depth = np.asarray(split.with_format("numpy")["depth"][:], dtype=np.float32)
    return {
        "image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "depth": torch.from_numpy(depth).unsqueeze(1),
        "label": torch.as_tensor(np.asarray(split["label"]), dtype=torch.long),
    }


def test_the_reference_script_batches_equal_the_pretrain_loader(reference_script):
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import set_seed

    from hf_rgbd import RgbdClipConfig
    from hf_rgbd.data import RgbdDataCollator, make_synthetic_rgbd
    from hf_rgbd.training.finetune import DataArguments, default_processor, training_augment
    from hf_rgbd.training.pretrain import PretrainingRows

    seed, count, batch_size = 3, 24, 8
    set_seed(seed)  # as `hf-rgbd pretrain` does: the seedable sampler starts from the global seed
    data = make_synthetic_rgbd(num_train=count, num_validation=2, num_test=2, image_size=32, seed=0)
    processor = default_processor(RgbdClipConfig.tiny(), data["train"], 32)
    train = PretrainingRows(data["train"], processor, training_augment(processor, DataArguments(), seed), seed=seed)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    loader = accelerator.prepare(
        torch.utils.data.DataLoader(
            train, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=RgbdDataCollator(),
            generator=torch.Generator().manual_seed(seed),
        )
    )  # fmt: skip
    rows = PretrainingRows(data["train"], processor, seed=seed)
    image_processor = processor.image_processor
    batcher = reference_script.Batcher(
        processor.depth_image_processor, training_augment(processor, DataArguments(), seed),
        image_processor.image_mean, image_processor.image_std,
        sample_seeds=lambda index: [rows.sample_seed(row) for row in index.tolist()],
    )  # fmt: skip
    raw = _tensors(data["train"])
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        train.set_epoch(epoch)
        rows.set_epoch(epoch)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch))
        for step, expected in enumerate(loader):
            index = order[step * batch_size : (step + 1) * batch_size]
            ours = batcher(raw, index, train=True)
            for key in ("pixel_values", "depth_values", "depth_mask"):
                torch.testing.assert_close(ours[key], expected[key], atol=0, rtol=0, msg=f"epoch {epoch} step {step} {key}")
