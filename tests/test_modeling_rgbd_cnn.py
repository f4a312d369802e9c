"""CNN fusion family: the common model tests for each fusion type, plus HF ResNet loading, HHA early fusion,
missing modalities, modality dropout, depth holes, bad inputs and config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from model_test_mixin import RgbdModelTestMixin
from transformers import AutoProcessor, ResNetConfig, ResNetForImageClassification, ResNetModel

from hf_rgbd import (
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdCnnModel,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
)
from hf_rgbd.modeling.modeling_rgbd_cnn import (
    RgbdCnnEarlyFusion,
    RgbdCnnFeatureFusion,
    RgbdCnnMultiStageFusion,
    RgbdCnnSingleModality,
    fill_depth_holes,
)

torch.set_num_threads(1)

TINY = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 4, "se_reduction": 4}
SIZE = 32
FUSIONS = [
    {"fusion_type": "early"},
    {"fusion_type": "feature", "feature_fusion": "concat"},
    {"fusion_type": "feature", "feature_fusion": "sum"},
    {"fusion_type": "feature", "feature_fusion": "weighted"},
    {"fusion_type": "multi_stage"},
]
FUSION_IDS = ["early", "feature-concat", "feature-sum", "feature-weighted", "multi_stage"]


def tiny_config(**overrides) -> RgbdCnnConfig:
    return RgbdCnnConfig(**{**TINY, **overrides})


def make_inputs(config: RgbdCnnConfig, batch_size: int = 2, size: int = SIZE, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator),
        "depth_values": 0.5 + 2 * torch.rand(batch_size, config.depth_channels, size, size, generator=generator),
        "depth_mask": torch.rand(batch_size, 1, size, size, generator=generator) > 0.15,
    }


class _RgbdCnnCommonTests(RgbdModelTestMixin):
    model_classes = (RgbdCnnModel, RgbdCnnForImageClassification)
    loss_independent_of_batch_composition = False  # batch norm: train-mode losses depend on the micro-batch
    fusion: dict = {}

    def get_config(self, **overrides) -> RgbdCnnConfig:
        return tiny_config(**{**self.fusion, **overrides})

    def get_inputs(self, config: RgbdCnnConfig, batch_size: int = 2) -> dict:
        return make_inputs(config, batch_size)

    def expected_hidden_state_shapes(self, config: RgbdCnnConfig, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, 8, 8, 8), (batch_size, 8, 8, 8), (batch_size, 16, 4, 4)]


class TestRgbdCnnEarlyCommon(_RgbdCnnCommonTests):
    fusion = {"fusion_type": "early"}


class TestRgbdCnnFeatureCommon(_RgbdCnnCommonTests):
    fusion = {"fusion_type": "feature", "feature_fusion": "weighted"}


class TestRgbdCnnMultiStageCommon(_RgbdCnnCommonTests):
    fusion = {"fusion_type": "multi_stage"}


# ------------------------------------------------------------------------------------------------- fusions
def test_feature_fusion_sizes_and_weighted_init():
    inputs = make_inputs(tiny_config(), 2)
    reference_state = RgbdCnnModel(tiny_config(fusion_type="feature")).state_dict()  # same streams for all modes
    outputs = {}
    for mode in ("concat", "sum", "weighted"):
        config = tiny_config(fusion_type="feature", feature_fusion=mode)
        model = RgbdCnnModel(config).eval()
        model.load_state_dict(reference_state, strict=mode != "weighted")
        with torch.no_grad():
            outputs[mode] = model(**inputs)
        assert outputs[mode].pooler_output.shape == (2, config.fused_hidden_size)
    assert outputs["concat"].pooler_output.shape[1] == 32 and outputs["sum"].pooler_output.shape[1] == 16
    concat = outputs["concat"].last_hidden_state
    torch.testing.assert_close(outputs["sum"].last_hidden_state, concat[:, :16] + concat[:, 16:])
    # learned weights start at 1/2 each
    torch.testing.assert_close(outputs["weighted"].last_hidden_state, 0.5 * outputs["sum"].last_hidden_state)


@pytest.mark.parametrize("use_mask, channels", [(True, 7), (False, 6)])
def test_hha_early_fusion_is_six_plus_mask_channels(use_mask, channels):
    config = tiny_config(fusion_type="early", depth_channels=3, use_depth_mask=use_mask)
    assert config.early_input_channels == channels
    model = RgbdCnnForImageClassification(config).eval()
    assert model.rgbd_cnn.rgbd_stream.embedder.embedder.convolution.in_channels == channels
    inputs = make_inputs(config, 2)
    assert inputs["depth_values"].shape[1] == 3
    with torch.no_grad():
        assert model(**inputs).logits.shape == (2, 4)
    with pytest.raises(ValueError, match="depth_values"):
        model(**make_inputs(tiny_config(), 2))  # one depth channel for an HHA model


# ------------------------------------------------------------------------------------------------- missing modalities
@pytest.mark.parametrize("fusion", FUSIONS, ids=FUSION_IDS)
def test_dropped_modality_equals_missing_modality(fusion):
    """A modality dropped in training is processed exactly like a missing input (None)."""
    inputs = make_inputs(tiny_config(), 3)
    for dropout, missing in (((0.0, 1.0), "depth_values"), ((1.0, 0.0), "pixel_values")):
        torch.manual_seed(0)
        model = RgbdCnnForImageClassification(tiny_config(modality_dropout=dropout, **fusion)).train()
        with torch.no_grad():
            dropped = model(**inputs)
            reduced = {k: v for k, v in inputs.items() if k != missing}
            if missing == "depth_values":
                reduced.pop("depth_mask")
            absent = model(**reduced)
        torch.testing.assert_close(dropped.logits, absent.logits, atol=1e-6, rtol=1e-5)
        assert torch.equal(dropped.modality_mask, absent.modality_mask)
        column = 1 if missing == "depth_values" else 0
        assert not dropped.modality_mask[:, column].any() and dropped.modality_mask[:, 1 - column].all()


@pytest.mark.parametrize("fusion", FUSIONS, ids=FUSION_IDS)
def test_missing_modality_at_inference(fusion):
    config = tiny_config(modality_dropout=(0.25, 0.25), **fusion)
    model = RgbdCnnForImageClassification(config).eval()
    inputs = make_inputs(config, 2)
    with torch.no_grad():
        rgb_only = model(pixel_values=inputs["pixel_values"])
        depth_only = model(depth_values=inputs["depth_values"], depth_mask=inputs["depth_mask"])
        both = model(**inputs)
    for output in (rgb_only, depth_only, both):
        assert output.logits.shape == (2, 4) and torch.isfinite(output.logits).all()
    assert rgb_only.modality_mask.tolist() == [[True, False]] * 2
    assert depth_only.modality_mask.tolist() == [[False, True]] * 2
    assert both.modality_mask.all()  # no dropout in eval mode
    assert not torch.allclose(rgb_only.logits, both.logits)


def test_early_fusion_missing_depth_is_all_holes():
    config = tiny_config(fusion_type="early", modality_dropout=(0.0, 0.5))
    model = RgbdCnnModel(config)
    inputs = make_inputs(config, 2)
    holes = {**inputs, "depth_mask": torch.zeros_like(inputs["depth_mask"])}
    with torch.no_grad():
        model.train()(**inputs)  # running statistics of the depth normalisation move away from (0, 1)
        model.eval()
        torch.testing.assert_close(
            model(pixel_values=inputs["pixel_values"]).pooler_output, model(**holes).pooler_output, atol=0, rtol=0
        )


def test_modality_dropout_is_seeded_and_never_drops_both():
    config = tiny_config(fusion_type="feature", feature_fusion="sum", modality_dropout=(0.3, 0.4))
    model = RgbdCnnModel(config).train()
    inputs = make_inputs(config, 400, size=8)
    with torch.no_grad():
        torch.manual_seed(7)
        first = model(**inputs).modality_mask
        torch.manual_seed(7)
        again = model(**inputs).modality_mask
        other = model(**inputs).modality_mask
        evaluated = model.eval()(**inputs).modality_mask
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.any(dim=1).all(), "a sample lost both modalities"
    rgb_dropped, depth_dropped = (~first).float().mean(dim=0).tolist()
    assert abs(rgb_dropped - 0.3) < 0.08 and abs(depth_dropped - 0.4) < 0.08
    assert evaluated.all()


@pytest.mark.parametrize(
    "overrides, fusion_class, has_depth_maps",
    [
        ({"fusion_type": "early"}, RgbdCnnEarlyFusion, False),
        ({"fusion_type": "feature"}, RgbdCnnFeatureFusion, True),
        ({"fusion_type": "multi_stage"}, RgbdCnnMultiStageFusion, True),
        ({"modalities": "rgb"}, RgbdCnnSingleModality, False),
        ({"modalities": "depth"}, RgbdCnnSingleModality, False),
    ],
    ids=["early", "feature", "multi_stage", "rgb", "depth"],
)
def test_recorded_feature_maps(overrides, fusion_class, has_depth_maps):
    """The fusion module is chosen at construction; `output_hidden_states` records `hidden_states` (and the depth
    stream's `depth_hidden_states` for the two-stream fusions); a stream that did not run leaves its field None;
    tuples keep the field order."""
    config = tiny_config(modality_dropout=(0.25, 0.25) if "fusion_type" in overrides else 0.0, **overrides)
    model = RgbdCnnModel(config).eval()
    assert type(model.fusion) is fusion_class
    inputs = make_inputs(config, 2)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
        as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
        assert model(**inputs).depth_hidden_states is None
        if has_depth_maps:
            rgb_only = model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
            depth_only = model(depth_values=inputs["depth_values"], output_hidden_states=True)
    assert len(output.hidden_states) == 3
    assert (output.depth_hidden_states is not None) == has_depth_maps
    if has_depth_maps:
        assert [tuple(h.shape) for h in output.depth_hidden_states] == [(2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 4, 4)]
        assert rgb_only.depth_hidden_states is None and depth_only.depth_hidden_states is not None
        # feature-level fusion records the RGB stream's maps; multi-stage fusion the fused maps
        assert (depth_only.hidden_states is None) == (fusion_class is RgbdCnnFeatureFusion)
    assert len(as_tuple) == len(output.to_tuple()) and torch.equal(as_tuple[-1], output.modality_mask)


# ------------------------------------------------------------------------------------------------- holes
@pytest.mark.parametrize("fusion", FUSIONS[:2] + FUSIONS[4:], ids=["early", "feature", "multi_stage"])
@pytest.mark.parametrize("fill", [True, False], ids=["filled", "zeros"])
def test_depth_holes_are_ignored_and_masked(fusion, fill):
    config = tiny_config(fill_depth_holes=fill, **fusion)
    model = RgbdCnnModel(config).eval()
    inputs = make_inputs(config, 2)
    holes = ~inputs["depth_mask"]
    garbage = {
        **inputs,
        "depth_values": torch.where(holes, torch.full_like(inputs["depth_values"], 99.0), inputs["depth_values"]),
    }
    nan_no_mask = {
        "pixel_values": inputs["pixel_values"],
        "depth_values": torch.where(
            holes, torch.full_like(inputs["depth_values"], float("nan")), inputs["depth_values"]
        ),
    }
    flipped = {**inputs, "depth_mask": inputs["depth_mask"].clone()}
    flipped["depth_mask"][:, :, :4, :4] = ~flipped["depth_mask"][:, :, :4, :4]
    with torch.no_grad():
        reference = model(**inputs).pooler_output
        torch.testing.assert_close(model(**garbage).pooler_output, reference, atol=0, rtol=0)
        torch.testing.assert_close(model(**nan_no_mask).pooler_output, reference, atol=0, rtol=0)
        assert not torch.allclose(model(**flipped).pooler_output, reference)  # the mask is an input


def test_fill_depth_holes():
    depth = torch.tensor([[[[1.0, 2.0, 0.0, 4.0], [1.0, 9.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    mask = depth > 0
    mask[0, 0, 1, 1] = False  # a hole with a garbage value
    filled = fill_depth_holes(depth, mask)
    assert torch.equal(filled[mask], depth[mask])
    # a hole takes the mean of the valid pixels of its 2x2 block, else of its 4x4 block
    assert filled[0, 0, 1, 1].item() == pytest.approx((1 + 2 + 1) / 3)
    assert filled[0, 0, 0, 2].item() == pytest.approx((4 + 3 + 4) / 3)
    assert filled[0, 0, 3, 0].item() == pytest.approx((1 + 2 + 1 + 4 + 3 + 4) / 6)
    assert torch.equal(fill_depth_holes(depth, torch.zeros_like(mask)), torch.zeros_like(depth))  # missing depth
    big = torch.rand(2, 3, 37, 45)
    big_mask = torch.rand(2, 1, 37, 45) > 0.3
    big_filled = fill_depth_holes(big, big_mask)
    assert torch.equal(big_filled[big_mask.expand_as(big)], big[big_mask.expand_as(big)])
    assert (big_filled > 0).all()


def test_hole_filling_changes_the_depth_input():
    inputs = make_inputs(tiny_config(), 2)
    outputs = {}
    for fill in (True, False):
        torch.manual_seed(0)
        model = RgbdCnnModel(tiny_config(fusion_type="early", fill_depth_holes=fill)).eval()
        with torch.no_grad():
            outputs[fill] = model(**inputs).pooler_output
    assert not torch.allclose(outputs[True], outputs[False])


# ------------------------------------------------------------------------------------------------- HF ResNet
@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory):
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    torch.manual_seed(0)
    model = ResNetForImageClassification(config).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.train()(torch.randn(4, 3, SIZE, SIZE))
    folder = tmp_path_factory.mktemp("tiny-resnet")
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("fusion", FUSIONS[:2] + FUSIONS[4:], ids=["early", "feature", "multi_stage"])
def test_from_resnet_pretrained_copies_streams(resnet_folder, fusion):
    resnet = ResNetModel.from_pretrained(resnet_folder).eval()
    resnet_state = resnet.state_dict()
    model = RgbdCnnForImageClassification.from_resnet_pretrained(resnet_folder, num_labels=5, **fusion)
    assert model.config.hidden_sizes == [8, 16] and model.config.num_labels == 5
    state = model.state_dict()
    stem = "embedder.embedder.convolution.weight"
    rgb_stem = resnet_state[stem]
    mean = rgb_stem.mean(dim=1, keepdim=True)
    if fusion["fusion_type"] == "early":
        stream_keys = {"rgbd_cnn.rgbd_stream.": None}
        torch.testing.assert_close(state[f"rgbd_cnn.rgbd_stream.{stem}"], torch.cat([rgb_stem, mean, 0 * mean], 1))
    else:
        stream_keys = {"rgbd_cnn.rgb_stream.": None, "rgbd_cnn.depth_stream.": None}
        torch.testing.assert_close(state[f"rgbd_cnn.rgb_stream.{stem}"], rgb_stem, atol=0, rtol=0)
        torch.testing.assert_close(state[f"rgbd_cnn.depth_stream.{stem}"], torch.cat([mean, 0 * mean], 1))
    for prefix in stream_keys:
        for key, value in resnet_state.items():
            if key != stem:
                assert torch.equal(state[prefix + key], value), prefix + key


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_rgb_stream_reproduces_resnet(tmp_path, layer_type):
    config = ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 2], layer_type=layer_type)
    torch.manual_seed(1)
    resnet = ResNetModel(config)
    with torch.no_grad():
        resnet.train()(torch.randn(4, 3, SIZE, SIZE))
    resnet.eval().save_pretrained(tmp_path)
    model = RgbdCnnModel.from_resnet_pretrained(tmp_path, modalities="rgb").eval()
    pixel_values = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = resnet(pixel_values, output_hidden_states=True)
        actual = model(pixel_values=pixel_values, output_hidden_states=True)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output.flatten(1), atol=0, rtol=0)
    assert len(actual.hidden_states) == len(expected.hidden_states)


def test_from_resnet_pretrained_hha_depth_only_and_conflicts(resnet_folder):
    model = RgbdCnnModel.from_resnet_pretrained(resnet_folder, modalities="depth", depth_channels=3)
    rgb_stem = ResNetModel.from_pretrained(resnet_folder).state_dict()["embedder.embedder.convolution.weight"]
    mean = rgb_stem.mean(dim=1, keepdim=True)
    torch.testing.assert_close(
        model.depth_stream.embedder.embedder.convolution.weight, torch.cat([mean, mean, mean, 0 * mean], 1)
    )
    with pytest.raises(ValueError, match="hidden_sizes"):
        RgbdCnnModel.from_resnet_pretrained(resnet_folder, hidden_sizes=[4, 4])


# ------------------------------------------------------------------------------------------------- processor
def test_auto_processor_from_model_folder(tmp_path):
    config = tiny_config(fusion_type="multi_stage")
    model = RgbdCnnForImageClassification(config).eval()
    processor = RgbdProcessor(RgbdImageProcessor(size={"height": SIZE, "width": SIZE}), RgbdDepthProcessor())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, RgbdProcessor)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    depths = [rng.uniform(0.5, 4.0, (40, 40)).astype(np.float32) for _ in range(2)]
    batch = loaded(images=images, depths=depths)
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 4)


# ------------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_value_errors_naming_the_argument():
    config = tiny_config(fusion_type="feature")
    model = RgbdCnnForImageClassification(config).eval()
    good = make_inputs(config, 2)
    cases = [
        ({**good, "pixel_values": good["pixel_values"][:, :2]}, "pixel_values"),
        ({**good, "pixel_values": good["pixel_values"][0]}, "pixel_values"),
        ({**good, "depth_values": good["depth_values"].repeat(1, 2, 1, 1)}, "depth_values"),
        ({**good, "depth_values": good["depth_values"][:1], "depth_mask": good["depth_mask"][:1]}, "batch size"),
        ({**good, "depth_mask": good["depth_mask"][:, :, :8]}, "depth_mask"),
        ({"pixel_values": good["pixel_values"], "depth_mask": good["depth_mask"]}, "depth_mask"),
        ({**good, "pixel_values": good["pixel_values"][:, :, :16, :16]}, "depth_values"),
        ({}, "pixel_values"),
        ({**good, "labels": torch.tensor([0, 1, 2])}, "labels"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            model(**kwargs)
    rgb_model = RgbdCnnModel(tiny_config(modalities="rgb"))
    with pytest.raises(ValueError, match="pixel_values"):
        rgb_model(depth_values=good["depth_values"])
    depth_model = RgbdCnnModel(tiny_config(modalities="depth"))
    with pytest.raises(ValueError, match="depth_values"):
        depth_model(pixel_values=good["pixel_values"])


FIELD_ERROR, CLASS_ERROR = StrictDataclassFieldValidationError, StrictDataclassClassValidationError


@pytest.mark.parametrize(
    "kwargs, field, error",
    [
        ({"fusion_type": "late"}, "fusion_type", FIELD_ERROR),
        ({"feature_fusion": "max"}, "feature_fusion", FIELD_ERROR),
        ({"modalities": "rgbdt"}, "modalities", FIELD_ERROR),
        ({"depth_channels": 2}, "depth_channels", FIELD_ERROR),
        ({"layer_type": "dense"}, "layer_type", FIELD_ERROR),
        ({"hidden_sizes": [8, 16, 32]}, "hidden_sizes", CLASS_ERROR),
        ({"depths": [1, 0]}, "depths", CLASS_ERROR),
        ({"embedding_size": 0}, "embedding_size", CLASS_ERROR),
        ({"modality_dropout": (0.6, 0.6)}, "modality_dropout", CLASS_ERROR),
        ({"modality_dropout": (0.1, 0.2, 0.3)}, "modality_dropout", CLASS_ERROR),
        ({"modality_dropout": -0.1}, "modality_dropout", CLASS_ERROR),
        ({"modalities": "rgb", "modality_dropout": 0.2}, "modality_dropout", CLASS_ERROR),
        ({"num_channels": 4}, "num_channels", FIELD_ERROR),
        ({"use_depth_mask": "yes"}, "use_depth_mask", FIELD_ERROR),
        ({"fill_depth_holes": 1}, "fill_depth_holes", FIELD_ERROR),
        ({"classifier_dropout": 1.0}, "classifier_dropout", CLASS_ERROR),
        ({"se_reduction": 0}, "se_reduction", CLASS_ERROR),
    ],
)
def test_config_validation(kwargs, field, error):
    with pytest.raises(error, match=field):
        tiny_config(**kwargs)


def test_config_round_trip_and_preset(tmp_path):
    config = RgbdCnnConfig.small(fusion_type="feature", feature_fusion="sum", modality_dropout=0.2, num_labels=8)
    config.save_pretrained(tmp_path)
    loaded = RgbdCnnConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.modality_dropout == [0.2, 0.2] and loaded.hidden_sizes == [24, 48, 96]


@pytest.mark.parametrize("fusion", FUSIONS, ids=FUSION_IDS)
def test_training_step_reads_no_tensor_value_on_the_host(monkeypatch, fusion):
    # a Python-level read of a tensor value (bool / item / tolist) would be a device sync in every training step;
    # the label check in training is torch._assert_async, the depth holes torch.where
    def host_read(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    torch.manual_seed(0)
    config = tiny_config(**fusion, modality_dropout=(0.2, 0.3), num_labels=4)
    model = RgbdCnnForImageClassification(config).train()
    inputs, labels = make_inputs(config, 4), torch.tensor([0, 1, -100, 3])
    inputs["depth_values"][0, 0, 0, 0] = float("nan")
    for name in ("__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    model(**inputs, labels=labels).loss.backward()
