"""The in-memory training loop, its augmentation, and the fusion probe built on it."""

from __future__ import annotations

import pytest
import torch

from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification
from hf_rgbd.data import make_synthetic_rgbd, random_flip_shift, split_to_tensors
from hf_rgbd.evaluation import fusion_probe, image_statistics
from hf_rgbd.training import classification_accuracy, train_classifier


def tiny_classifier(seed: int = 0) -> RgbdCnnForImageClassification:
    config = RgbdCnnConfig(fusion_type="early", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    torch.manual_seed(seed)
    return RgbdCnnForImageClassification(config)


def random_inputs(count: int = 24, size: int = 16, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (count,), generator=generator)
    pixel_values = torch.randn(count, 3, size, size, generator=generator) + labels[:, None, None, None]
    depth_values = torch.rand(count, 1, size, size, generator=generator) * (1 + labels[:, None, None, None])
    depth_mask = torch.rand(count, 1, size, size, generator=generator) > 0.1
    return {"pixel_values": pixel_values, "depth_values": depth_values, "depth_mask": depth_mask}, labels


def test_flip_shift_moves_every_map_of_a_sample_identically():
    height, width = 6, 7
    coordinates = torch.arange(height * width, dtype=torch.float32).reshape(1, 1, height, width) + 1
    inputs = {
        "pixel_values": coordinates.expand(32, 3, height, width).clone(),
        "depth_values": coordinates.expand(32, 1, height, width) * 10,
        "depth_mask": torch.ones(32, 1, height, width, dtype=torch.bool),
    }
    out = random_flip_shift(inputs, torch.Generator().manual_seed(0), max_shift=2)
    assert out["depth_mask"].dtype == torch.bool
    torch.testing.assert_close(out["depth_values"], out["pixel_values"][:, :1] * 10, atol=0, rtol=0)
    # pixels shifted in from outside are zeros, and holes in the mask exactly there
    assert torch.equal(out["depth_mask"], out["pixel_values"][:, :1] > 0)
    # every output is the input (or its mirror image) translated by at most 2 pixels
    seen_flip = seen_shift = False
    for sample in out["pixel_values"][:, 0]:
        kept = sample[sample > 0].long() - 1
        rows, cols = kept // width, kept % width
        found = (sample > 0).nonzero()
        dy, dx = found[:, 0] - rows, found[:, 1] - cols
        mirrored_dx = found[:, 1] - (width - 1 - cols)
        assert torch.all(dy == dy[0]) and abs(int(dy[0])) <= 2
        assert torch.all(dx == dx[0]) or torch.all(mirrored_dx == mirrored_dx[0])
        seen_flip |= not bool(torch.all(dx == dx[0]))
        seen_shift |= bool(dy[0] != 0)
    assert seen_flip and seen_shift
    with pytest.raises(ValueError, match="max_shift"):
        random_flip_shift(inputs, torch.Generator(), max_shift=-2)


def test_train_classifier_is_seeded_and_keeps_the_best_epoch():
    inputs, labels = random_inputs()
    validation, validation_labels = random_inputs(seed=1)
    models, results = [], []
    for _ in range(2):
        model = tiny_classifier()
        results.append(
            train_classifier(model, inputs, labels, validation, validation_labels, epochs=4, batch_size=8, seed=3)
        )
        models.append(model)
    first, second = results
    assert first.validation_history == second.validation_history
    assert first.loss_history == second.loss_history and len(first.loss_history) == 4
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    best = max(first.validation_history)
    assert first.best_validation_accuracy == best
    assert first.best_epoch == first.validation_history.index(best) + 1
    assert not models[0].training
    assert classification_accuracy(models[0], validation, validation_labels) == pytest.approx(best)
    assert first.train_seconds > 0


def test_train_classifier_does_not_touch_the_global_rng():
    inputs, labels = random_inputs()
    model = tiny_classifier()
    state = torch.get_rng_state()
    train_classifier(model, inputs, labels, epochs=1, batch_size=8)
    assert torch.equal(state, torch.get_rng_state())


def test_train_classifier_learns_a_separable_problem():
    inputs, labels = random_inputs(count=48)
    model = tiny_classifier()
    before = classification_accuracy(model, inputs, labels)
    result = train_classifier(model, inputs, labels, epochs=8, batch_size=16, learning_rate=1e-2, max_shift=-1)
    assert result.loss_history[-1] < result.loss_history[0]
    assert classification_accuracy(model, inputs, labels) > max(before, 0.8)


def test_train_classifier_clips_the_gradient_norm(monkeypatch):
    inputs, labels = random_inputs(24)
    clip = torch.nn.utils.clip_grad_norm_
    norms = []  # (before, after) clipping, per step

    def recording_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = clip(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        norms.append((float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    train_classifier(tiny_classifier(), inputs, labels, epochs=1, batch_size=8)
    assert norms == []  # no clipping by default
    train_classifier(tiny_classifier(), inputs, labels, epochs=1, batch_size=8, max_grad_norm=1e-3)
    assert len(norms) == 3  # one per step
    assert all(before > 1e-3 and after == pytest.approx(1e-3, rel=1e-3) for before, after in norms)


def test_train_classifier_stops_at_max_seconds(monkeypatch):
    import hf_rgbd.training.classification as classification

    inputs, labels = random_inputs()
    clock = iter(range(0, 10_000, 10))  # every perf_counter() call is 10 s after the previous one
    monkeypatch.setattr(classification.time, "perf_counter", lambda: float(next(clock)))
    result = train_classifier(tiny_classifier(), inputs, labels, *random_inputs(seed=1), epochs=9, batch_size=8, max_seconds=25)
    assert len(result.loss_history) == len(result.validation_history) == 3  # 10 s per epoch: stops once at 30 s
    assert result.train_seconds == 30.0 and 1 <= result.best_epoch <= 3
    uncapped = train_classifier(tiny_classifier(), inputs, labels, epochs=4, batch_size=8)
    assert len(uncapped.loss_history) == 4 and uncapped.best_epoch == 4


def test_train_classifier_bf16_autocasts_the_training_forward_only():
    inputs, labels = random_inputs()
    model = tiny_classifier()
    seen = []  # (training?, dtype of the classifier head's output)
    model.classifier.register_forward_hook(lambda module, args, output: seen.append((module.training, output.dtype)))
    result = train_classifier(model, inputs, labels, *random_inputs(seed=1), epochs=2, batch_size=8, bf16=True)
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation stays float32
    assert all(param.dtype == torch.float32 for param in model.parameters())
    assert len(result.loss_history) == 2 and all(torch.isfinite(torch.tensor(result.loss_history)))
    seen.clear()
    train_classifier(model, inputs, labels, epochs=1, batch_size=8)
    assert {dtype for _, dtype in seen} == {torch.float32}  # off by default


def test_train_classifier_bad_arguments():
    inputs, labels = random_inputs()
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(tiny_classifier(), inputs, labels, epochs=0)
    with pytest.raises(ValueError, match="validation_labels"):
        train_classifier(tiny_classifier(), inputs, labels, validation_inputs=inputs)
    for max_grad_norm in (0.0, float("nan"), "1.0"):
        with pytest.raises(ValueError, match="max_grad_norm"):
            train_classifier(tiny_classifier(), inputs, labels, max_grad_norm=max_grad_norm)
    for max_seconds in (0, -1.0, "5"):
        with pytest.raises(ValueError, match="max_seconds"):
            train_classifier(tiny_classifier(), inputs, labels, max_seconds=max_seconds)
    with pytest.raises(ValueError, match="bf16"):
        train_classifier(tiny_classifier(), inputs, labels, bf16="yes")
    with pytest.raises(ValueError, match="pixel_values"):
        train_classifier(tiny_classifier(), {**inputs, "pixel_values": inputs["pixel_values"][:3]}, labels)


@pytest.fixture(scope="module")
def tiny_scenes():
    return make_synthetic_rgbd(num_train=16, num_validation=8, num_test=8, image_size=32, seed=0)


def test_split_to_tensors_matches_the_processor(tiny_scenes):
    from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

    processor = RgbdProcessor(RgbdImageProcessor(size=32), RgbdDepthProcessor(representation="metric"))
    inputs, labels = split_to_tensors(tiny_scenes["train"], processor, batch_size=5)
    assert labels.tolist() == tiny_scenes["train"]["label"]
    assert inputs["pixel_values"].shape == (16, 3, 32, 32) and inputs["depth_mask"].dtype == torch.bool
    row = tiny_scenes["train"][7]
    reference = processor(images=[row["image"]], depths=[torch.tensor(row["depth"])], intrinsics=[row["intrinsics"]])
    for key in ("pixel_values", "depth_values", "depth_mask"):
        torch.testing.assert_close(inputs[key][7:8], reference[key], atol=0, rtol=0)


def test_image_statistics_values(tiny_scenes):
    features = image_statistics(tiny_scenes["test"])
    row = tiny_scenes["test"].with_format("numpy")[2]
    depth = torch.tensor(row["depth"], dtype=torch.float64)
    valid = depth[depth > 0]
    rgb = torch.tensor(row["image"], dtype=torch.float64) / 255
    torch.testing.assert_close(features[2, :3], rgb.mean((0, 1)))
    torch.testing.assert_close(features[2, 6], valid.mean())
    torch.testing.assert_close(features[2, 7], valid.std(unbiased=False))


def test_fusion_probe_reports_every_modality(tiny_scenes):
    results = fusion_probe(tiny_scenes, epochs=1, config_overrides={"embedding_size": 8, "hidden_sizes": [8, 8, 8]})
    assert list(results) == ["rgb", "depth", "rgbd"]
    for result in results.values():
        assert 0.0 <= result["test_accuracy"] <= 1.0 and result["best_epoch"] == 1
    with pytest.raises(ValueError, match="modalities"):
        fusion_probe(tiny_scenes, modalities=["rgb", "hha"], epochs=1)
