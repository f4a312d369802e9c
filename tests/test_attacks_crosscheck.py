"""Agreement with torchattacks 3.3.0 (FGSM, PGD without random start, MI-FGSM) on an adapter module: one tensor
in [0, 1] -> the processor's normalisation -> the RGB-D model with depth fixed -> logits."""

from __future__ import annotations

import pytest
import torch

from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification, RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
from hf_rgbd.attacks import FGSM, MIFGSM, PGD

torchattacks = pytest.importorskip("torchattacks")

torch.set_num_threads(1)

SIZE = 16
BATCH = 8  # a power of two: hf-rgbd sums per-sample losses, torchattacks averages; the gradients then agree exactly


class Adapter(torch.nn.Module):
    """[0, 1] RGB -> normalised `pixel_values` -> model(pixel_values, fixed depth) -> logits."""

    def __init__(self, model, mean, std, depth_values, depth_mask):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.depth_values, self.depth_mask = depth_values, depth_mask

    def forward(self, images):
        pixel_values = (images - self.mean) / self.std
        return self.model(pixel_values=pixel_values, depth_values=self.depth_values, depth_mask=self.depth_mask).logits


@pytest.fixture(scope="module")
def setup():
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    config = RgbdCnnConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, fusion_type="feature", se_reduction=4
    )
    model = RgbdCnnForImageClassification(config).eval()
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.485, 0.456, 0.406],
                           image_std=[0.229, 0.224, 0.225]),
        RgbdDepthProcessor(representation="metric"),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    images[0, :, :3] = 0.0  # pixels at the ends of the valid range
    images[1, :, :3] = 1.0
    depths = 0.5 + 4 * torch.rand(BATCH, 1, SIZE, SIZE, generator=generator)
    batch = processor(images=images, depths=depths)
    labels = torch.randint(0, 5, (BATCH,), generator=generator)
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    # The adapter's [0, 1] input is the batch's RGB in physical units, computed as the attack computes it.
    physical = batch["pixel_values"] * std + mean
    adapter = Adapter(model, mean, std, batch["depth_values"], batch["depth_mask"]).eval()
    yield model, processor, batch, labels, adapter, physical
    torch.use_deterministic_algorithms(False)


def _compare(ours, reference, adapter, batch):
    expected = (reference - adapter.mean) / adapter.std
    assert torch.equal(ours.final_inputs["pixel_values"], expected)
    # The returned batch is the final iterate wherever no evaluated iterate already succeeded.
    keep = ~ours.success
    assert torch.equal(ours.inputs["pixel_values"][keep], expected[keep])
    assert torch.equal(ours.inputs["depth_values"], batch["depth_values"])


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_fgsm(setup, eps):
    model, processor, batch, labels, adapter, physical = setup
    reference = torchattacks.FGSM(adapter, eps=eps)(physical, labels)
    ours = FGSM(model, budget={"pixel_values": eps}, processor=processor).perturb(batch, labels)
    _compare(ours, reference, adapter, batch)


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_without_random_start(setup, steps):
    model, processor, batch, labels, adapter, physical = setup
    reference = torchattacks.PGD(adapter, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)(
        physical, labels
    )
    ours = PGD(
        model, budget={"pixel_values": 8 / 255}, alpha={"pixel_values": 2 / 255}, steps=steps, random_start=False,
        processor=processor,
    ).perturb(batch, labels)  # fmt: skip
    _compare(ours, reference, adapter, batch)


def test_pgd_targeted(setup):
    model, processor, batch, labels, adapter, physical = setup
    targets = (labels + 2) % 5
    attack = torchattacks.PGD(adapter, eps=8 / 255, alpha=1 / 255, steps=5, random_start=False)
    attack.set_mode_targeted_by_function(lambda images, labels: labels)
    reference = attack(physical, targets)
    ours = PGD(
        model, budget={"pixel_values": 8 / 255}, alpha={"pixel_values": 1 / 255}, steps=5, random_start=False,
        targeted=True, processor=processor,
    ).perturb(batch, targets)  # fmt: skip
    _compare(ours, reference, adapter, batch)


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mifgsm(setup, decay):
    model, processor, batch, labels, adapter, physical = setup
    reference = torchattacks.MIFGSM(adapter, eps=8 / 255, alpha=2 / 255, steps=6, decay=decay)(physical, labels)
    ours = MIFGSM(
        model, budget={"pixel_values": 8 / 255}, alpha={"pixel_values": 2 / 255}, steps=6, decay=decay,
        processor=processor,
    ).perturb(batch, labels)  # fmt: skip
    _compare(ours, reference, adapter, batch)
