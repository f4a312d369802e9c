"""Dual encoder (CLIP-style) and the shared ViT blocks: the common model tests, plus depth holes, attention
implementations, position interpolation, the contrastive loss, modality dropout, ViT / CLIP initialisation,
bad inputs and config validation."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from model_test_mixin import RgbdModelTestMixin
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    ViTConfig,
    ViTModel,
)

from hf_rgbd import RgbdClipConfig, RgbdClipForImageClassification, RgbdClipModel, RgbdVitConfig, RgbdVitModel
from hf_rgbd.modeling import RgbdVitLayer, rgbd_contrastive_loss
from hf_rgbd.modeling.modeling_rgbd_clip import LOGIT_SCALE_MAX

torch.set_num_threads(1)

SIZE, PATCH, HIDDEN, LAYERS, HEADS = 32, 8, 32, 2, 2
TOKENS = 1 + (SIZE // PATCH) ** 2


def tiny_config(**overrides) -> RgbdClipConfig:
    return RgbdClipConfig.tiny(**{"num_labels": 4, **overrides})


def make_inputs(batch_size: int = 2, size: int = SIZE, depth_channels: int = 1, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    depth_mask = torch.rand(batch_size, 1, size, size, generator=generator) > 0.15
    depth_mask[0, :, :PATCH, :PATCH] = False  # sample 0: the top-left patch has no valid depth at all
    depth_values = 0.5 + torch.rand(batch_size, depth_channels, size, size, generator=generator)
    depth_values = depth_values * depth_mask  # like the processor: exactly 0 at holes
    return {
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator),
        "depth_values": depth_values,
        "depth_mask": depth_mask,
    }


class TestRgbdClipCommon(RgbdModelTestMixin):
    model_classes = (RgbdClipModel, RgbdClipForImageClassification)
    has_attentions = True
    supports_sdpa = True
    batch_coupled_outputs = ("logits_per_rgb", "logits_per_depth")

    def get_config(self, **overrides) -> RgbdClipConfig:
        return tiny_config(**overrides)

    def get_inputs(self, config: RgbdClipConfig, batch_size: int = 2) -> dict:
        return make_inputs(batch_size, depth_channels=config.depth_config.num_channels)

    def expected_hidden_state_shapes(self, config: RgbdClipConfig, batch_size: int) -> list[tuple[int, ...]]:
        towers = len(config.active_modalities)
        return [(batch_size, TOKENS, HIDDEN)] * ((LAYERS + 1) * towers)

    def expected_attention_shapes(self, config: RgbdClipConfig, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, HEADS, TOKENS, TOKENS)] * (LAYERS * len(config.active_modalities))


CONV_STEM = {"patch_embedding_type": "conv_stem"}


class TestRgbdVitCommon(RgbdModelTestMixin):
    """The common tests for one depth tower (registered for `AutoModel` like the other families)."""

    model_classes = (RgbdVitModel,)
    has_attentions = True
    supports_sdpa = True
    modality_options = ()

    def get_config(self, **overrides) -> RgbdVitConfig:
        return RgbdVitConfig.tiny("depth", **overrides)

    def get_inputs(self, config: RgbdVitConfig, batch_size: int = 2) -> dict:
        inputs = make_inputs(batch_size, depth_channels=config.num_channels)
        return {"depth_values": inputs["depth_values"], "depth_mask": inputs["depth_mask"]}

    def expected_hidden_state_shapes(self, config: RgbdVitConfig, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, TOKENS, HIDDEN)] * (LAYERS + 1)

    def expected_attention_shapes(self, config: RgbdVitConfig, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, HEADS, TOKENS, TOKENS)] * LAYERS


class TestRgbdClipConvStemCommon(TestRgbdClipCommon):
    """The same common tests with convolutional patch stems in both towers (batch norm: in training, a sample's
    output depends on the rest of its batch, so the gradient-accumulation loss matches only per micro-batch)."""

    loss_independent_of_batch_composition = False

    def get_config(self, **overrides) -> RgbdClipConfig:
        return tiny_config(rgb_config=CONV_STEM, depth_config=CONV_STEM, **overrides)


def run(model, **inputs):
    with torch.no_grad():
        return model(**inputs)


# ----------------------------------------------------------------------------------------------- depth holes
@pytest.mark.parametrize("patch_embedding_type", ["linear", "conv_stem"])
@pytest.mark.parametrize("mask_missing", [True, False])
def test_depth_under_holes_changes_nothing(mask_missing, patch_embedding_type):
    torch.manual_seed(0)
    depth_config = {"mask_missing_depth_patches": mask_missing, "patch_embedding_type": patch_embedding_type}
    model = RgbdClipModel(tiny_config(depth_config=depth_config)).eval()
    inputs = make_inputs(3)
    reference = run(model, **inputs, output_hidden_states=True)
    changed = dict(inputs)
    holes = ~inputs["depth_mask"]
    changed["depth_values"] = torch.where(holes, torch.full_like(inputs["depth_values"], 7.0), inputs["depth_values"])
    changed["depth_values"][0, 0, 0, 0] = float("nan")  # a hole (the fully missing top-left patch)
    other = run(model, **changed, output_hidden_states=True)
    torch.testing.assert_close(other.depth_embeds, reference.depth_embeds, atol=0, rtol=0)
    for mine, theirs in zip(
        other.depth_model_output.hidden_states, reference.depth_model_output.hidden_states, strict=True
    ):
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0)
    # ... and the gradient with respect to depth at holes is exactly zero (attacks leave holes untouched)
    depth = inputs["depth_values"].clone().requires_grad_(True)
    model(**{**inputs, "depth_values": depth}).loss.backward()
    assert depth.grad[holes].abs().max() == 0 and depth.grad[~holes].abs().max() > 0


def test_missing_depth_patch_is_replaced_and_masked_out_of_attention():
    torch.manual_seed(0)
    config = RgbdVitConfig.tiny("depth")
    tower = RgbdVitModel._from_config(config, attn_implementation="eager").eval()  # attention weights need eager
    inputs = make_inputs(2)
    depth, mask = inputs["depth_values"], inputs["depth_mask"]
    out = run(tower, depth_values=depth, depth_mask=mask, output_attentions=True)
    assert len(out.attentions) == LAYERS
    # no token attends to the missing patch (token 1 of sample 0); sample 1 has none missing
    for weights in out.attentions:
        assert weights[0, :, :, 1].abs().max() == 0
        assert weights[1, :, :, 1].abs().min() > 0
    # the missing patch's embedding is the learned token: changing it moves only that token's own output
    out = run(tower, depth_values=depth, depth_mask=mask)
    with torch.no_grad():
        tower.embeddings.missing_depth_embedding.add_(torch.randn(HIDDEN))
    moved = run(tower, depth_values=depth, depth_mask=mask)
    torch.testing.assert_close(moved.pooler_output, out.pooler_output, atol=0, rtol=0)
    assert (moved.last_hidden_state[0, 1] - out.last_hidden_state[0, 1]).abs().max() > 1e-2
    # without key masking the missing token takes part in attention and reaches [CLS]
    open_config = RgbdVitConfig.tiny("depth", mask_missing_depth_patches=False)
    open_tower = RgbdVitModel(open_config).eval()
    open_tower.load_state_dict(tower.state_dict())
    before = run(open_tower, depth_values=depth, depth_mask=mask).pooler_output
    with torch.no_grad():
        open_tower.embeddings.missing_depth_embedding.add_(torch.randn(HIDDEN))
    after = run(open_tower, depth_values=depth, depth_mask=mask).pooler_output
    assert (before[0] - after[0]).abs().max() > 1e-3 and torch.equal(before[1], after[1])
    # a map without any valid depth still gives finite outputs ([CLS] is never masked)
    empty = run(tower, depth_values=depth, depth_mask=torch.zeros_like(mask))
    assert torch.isfinite(empty.last_hidden_state).all()
    # partially valid patches know their hole fraction through the learned partial-hole embedding
    with torch.no_grad():
        tower.embeddings.partial_hole_embedding.add_(torch.randn(HIDDEN))
    partial = run(tower, depth_values=depth, depth_mask=mask).pooler_output
    assert (partial - moved.pooler_output).abs().max() > 1e-3


def test_depth_key_mask_is_given_without_reading_the_mask():
    # the key mask does not depend on whether a patch is missing (no host read of the mask inside the forward);
    # without missing patches it is all True and changes nothing
    torch.manual_seed(0)
    tower = RgbdVitModel(RgbdVitConfig.tiny("depth")).eval()
    open_tower = RgbdVitModel(RgbdVitConfig.tiny("depth", mask_missing_depth_patches=False)).eval()
    open_tower.load_state_dict(tower.state_dict())
    inputs = make_inputs(2)
    full_mask = torch.ones_like(inputs["depth_mask"])
    _, key_mask = tower.embeddings(inputs["depth_values"], depth_mask=full_mask)
    assert key_mask.shape == (2, TOKENS) and key_mask.all()
    assert open_tower.embeddings(inputs["depth_values"], depth_mask=full_mask)[1] is None
    for implementation in ("eager", "sdpa"):
        tower.config._attn_implementation = open_tower.config._attn_implementation = implementation
        masked = run(tower, depth_values=inputs["depth_values"], depth_mask=full_mask).last_hidden_state
        unmasked = run(open_tower, depth_values=inputs["depth_values"], depth_mask=full_mask).last_hidden_state
        torch.testing.assert_close(masked, unmasked, atol=1e-6, rtol=0)


@pytest.mark.parametrize("patch_embedding_type", ["linear", "conv_stem"])
def test_training_step_reads_no_tensor_value_on_the_host(monkeypatch, patch_embedding_type):
    # a Python-level read of a tensor value (bool / item / tolist) would be a device sync in every training step
    def host_read(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    tower = {"patch_embedding_type": patch_embedding_type}
    torch.manual_seed(0)
    config = tiny_config(modality_dropout=(0.2, 0.3), rgb_config=tower, depth_config=tower)
    model = RgbdClipForImageClassification(config).train()
    inputs, labels = make_inputs(4), torch.tensor([0, 1, 2, 3])
    for name in ("__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    model(**inputs, labels=labels).loss.backward()


def test_capture_outputs_records_self_and_cross_attention_of_the_shared_layers():
    # how a family with cross-attention layers records its outputs: one more recorder on the `crossattention` modules
    from transformers.modeling_outputs import BaseModelOutputWithCrossAttentions
    from transformers.utils.output_capturing import OutputRecorder, capture_outputs

    from hf_rgbd.modeling import RgbdVitAttention, RgbdVitEncoder, RgbdVitPreTrainedModel

    class CrossEncoderModel(RgbdVitPreTrainedModel):
        _can_record_outputs = {
            **RgbdVitPreTrainedModel._can_record_outputs,
            "cross_attentions": OutputRecorder(RgbdVitAttention, index=1, layer_name="crossattention"),
        }

        def __init__(self, config):
            super().__init__(config)
            layers = [RgbdVitLayer(config, add_cross_attention=True) for _ in range(config.num_hidden_layers)]
            self.encoder = RgbdVitEncoder(config, layers)
            self.post_init()

        @capture_outputs
        def forward(self, hidden_states, encoder_hidden_states, **kwargs):
            output = self.encoder(hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)
            return BaseModelOutputWithCrossAttentions(last_hidden_state=output.last_hidden_state)

    torch.manual_seed(0)
    model = CrossEncoderModel._from_config(RgbdVitConfig.tiny(), attn_implementation="eager").eval()
    queries, context = torch.randn(2, 5, HIDDEN), torch.randn(2, 7, HIDDEN)
    out = run(model, hidden_states=queries, encoder_hidden_states=context, output_attentions=True)
    assert [tuple(a.shape) for a in out.attentions] == [(2, HEADS, 5, 5)] * LAYERS
    assert [tuple(a.shape) for a in out.cross_attentions] == [(2, HEADS, 5, 7)] * LAYERS
    assert out.hidden_states is None
    out = run(model, hidden_states=queries, encoder_hidden_states=context, output_hidden_states=True)
    assert len(out.hidden_states) == LAYERS + 1 and torch.equal(out.hidden_states[0], queries)
    assert out.attentions is None and out.cross_attentions is None


def test_attention_implementations_agree_with_holes_and_cross_attention():
    inputs = make_inputs(2)
    for modality_config in (RgbdVitConfig.tiny("depth"), RgbdVitConfig.tiny("rgb")):
        outputs = {}
        for implementation in ("eager", "sdpa"):
            torch.manual_seed(0)
            tower = RgbdVitModel._from_config(modality_config, attn_implementation=implementation).eval()
            outputs[implementation] = run(tower, **inputs).last_hidden_state
        torch.testing.assert_close(outputs["sdpa"], outputs["eager"], atol=1e-5, rtol=1e-4)
    # the shared layer: cross-attention with a key mask and a custom MLP (as modality experts would use it)
    calls = []

    class ScaledMLP(torch.nn.Module):
        def forward(self, hidden_states, scale=1.0):
            calls.append(scale)
            return hidden_states * scale

    results = {}
    for implementation in ("eager", "sdpa"):
        config = RgbdVitConfig.tiny("rgb")
        config._attn_implementation = implementation
        torch.manual_seed(0)
        layer = RgbdVitLayer(config, mlp=ScaledMLP(), add_cross_attention=True).eval()
        queries, context = torch.randn(2, 5, HIDDEN), torch.randn(2, 7, HIDDEN)
        context_mask = torch.ones(2, 7, dtype=torch.bool)
        context_mask[0, 3:] = False
        from transformers.masking_utils import create_bidirectional_mask

        prepared = create_bidirectional_mask(
            config=config, inputs_embeds=queries, attention_mask=context_mask, encoder_hidden_states=context
        )
        with torch.no_grad():
            hidden = layer(queries, None, context, prepared, mlp_kwargs={"scale": 0.5})
            changed = context.clone()
            changed[0, 3:] += 10.0  # masked context tokens change nothing
            hidden_changed = layer(queries, None, changed, prepared, mlp_kwargs={"scale": 0.5})
        torch.testing.assert_close(hidden_changed, hidden, atol=0, rtol=0)
        results[implementation] = hidden
    torch.testing.assert_close(results["sdpa"], results["eager"], atol=1e-5, rtol=1e-4)
    assert calls and set(calls) == {0.5}


def test_output_attentions_need_eager_as_in_transformers():
    # as transformers 5 models (e.g. CLIPVisionModel): sdpa computes no weights, warns, and returns none of them
    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    assert model.config._attn_implementation == "sdpa"
    out = run(model, **make_inputs(2), output_attentions=True, output_hidden_states=True)
    assert out.attentions == () and out.rgb_model_output.attentions == () and len(out.hidden_states) == 2 * 3
    torch.manual_seed(0)
    eager = RgbdClipModel._from_config(tiny_config(), attn_implementation="eager").eval()
    out = run(eager, **make_inputs(2), output_attentions=True)
    assert len(out.attentions) == 2 * LAYERS and out.attentions[0].shape == (2, HEADS, TOKENS, TOKENS)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, HEADS, TOKENS))


def test_conv_stem_structure_and_validation():
    from hf_rgbd.modeling import RgbdConvStem, RgbdVitConfig, RgbdVitModel

    config = RgbdVitConfig.tiny("depth", patch_embedding_type="conv_stem", patch_size=8)
    torch.manual_seed(0)
    tower = RgbdVitModel(config).eval()
    stem = tower.embeddings.patch_embeddings.projection
    assert isinstance(stem, RgbdConvStem)
    assert [conv.out_channels for conv in stem.convolutions] == [8, 16, 32]  # log2(8) stride-2 layers up to hidden
    assert [conv.stride for conv in stem.convolutions] == [(2, 2)] * 3 and len(stem.normalizations) == 2
    assert stem.convolutions[0].in_channels == 1
    # torch's default convolution initialisation (not the 0.02 normal of the linear layers)
    bound = 1 / math.sqrt(stem.convolutions[1].weight[0].numel())
    assert stem.convolutions[1].weight.abs().max() <= bound and stem.convolutions[1].weight.std() > 0.5 * bound / 2
    out = tower(depth_values=torch.rand(2, 1, 32, 32), depth_mask=torch.ones(2, 1, 32, 32, dtype=torch.bool))
    assert out.last_hidden_state.shape == (2, 1 + 16, 32)
    for bad in ({"patch_size": 6}, {"patch_size": (8, 16)}):
        with pytest.raises(StrictDataclassClassValidationError, match="conv_stem"):
            RgbdVitConfig.tiny(patch_embedding_type="conv_stem", **bad)
    with pytest.raises(StrictDataclassFieldValidationError, match="patch_embedding_type"):
        RgbdVitConfig.tiny(patch_embedding_type="overlapping")


# ----------------------------------------------------------------------------------------------- sizes
def test_interpolate_pos_encoding():
    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    native = make_inputs(2)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(**make_inputs(2, size=48))
    same = run(model, **native, interpolate_pos_encoding=True)
    torch.testing.assert_close(same.logits_per_rgb, run(model, **native).logits_per_rgb, atol=0, rtol=0)
    big = make_inputs(2, size=48)
    big["pixel_values"] = torch.randn(2, 3, 48, 64)
    big["depth_values"], big["depth_mask"] = big["depth_values"][..., :40], big["depth_mask"][..., :40]
    out = run(model, **big, interpolate_pos_encoding=True, output_hidden_states=True)
    assert out.rgb_model_output.last_hidden_state.shape == (2, 1 + 6 * 8, HIDDEN)
    assert out.depth_model_output.last_hidden_state.shape == (2, 1 + 6 * 5, HIDDEN)
    assert out.logits_per_rgb.shape == (2, 2) and torch.isfinite(out.loss)
    # the interpolated grid reproduces the stored one when the size does not change
    embeddings = model.rgb_model.embeddings
    from hf_rgbd.modeling.modeling_rgbd_vit import resize_position_embeddings

    torch.testing.assert_close(
        resize_position_embeddings(embeddings.position_embeddings, (4, 4), (4, 4)), embeddings.position_embeddings
    )


# ----------------------------------------------------------------------------------------------- contrastive
def test_contrastive_loss_known_value_and_clamped_temperature():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert rgbd_contrastive_loss(logits).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    asymmetric = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    rows = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(3))) / 2
    cols = (math.log(1 + math.exp(2)) + math.log(1 + math.exp(0))) / 2
    assert rgbd_contrastive_loss(asymmetric).item() == pytest.approx((rows + cols) / 2, abs=1e-6)

    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    assert model.logit_scale.item() == pytest.approx(2.6592)
    inputs = make_inputs(3)
    out = run(model, **inputs)
    rgb = model.get_rgb_features(inputs["pixel_values"]).pooler_output
    depth = model.get_depth_features(inputs["depth_values"], inputs["depth_mask"]).pooler_output
    cosine = torch.nn.functional.normalize(rgb, dim=-1) @ torch.nn.functional.normalize(depth, dim=-1).T
    torch.testing.assert_close(out.logits_per_rgb, cosine * math.exp(2.6592), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_per_depth, out.logits_per_rgb.T)
    torch.testing.assert_close(out.loss, rgbd_contrastive_loss(out.logits_per_rgb))
    assert run(model, **inputs, return_loss=False).loss is None
    # the temperature is clamped at 100 (gradient zero beyond), as CLIP
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    out = model(**inputs)
    torch.testing.assert_close(out.logits_per_rgb, cosine.detach() * 100.0, atol=1e-4, rtol=1e-5)
    out.loss.backward()
    assert model.logit_scale.grad.item() == 0.0 and LOGIT_SCALE_MAX == pytest.approx(math.log(100))


def test_get_features_return_what_clip_returns():
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
            vision_config=dict(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=16,
                patch_size=8,
            ),
            projection_dim=8,
        )
    ).eval()
    reference = clip.get_image_features(torch.randn(2, 3, 16, 16))
    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    inputs = make_inputs(2)
    rgb = model.get_rgb_features(inputs["pixel_values"])
    depth = model.get_depth_features(inputs["depth_values"], depth_mask=inputs["depth_mask"])
    for features in (rgb, depth):
        assert type(features) is type(reference)
        assert [f.name for f in dataclasses.fields(features)] == [f.name for f in dataclasses.fields(reference)]
        assert features.pooler_output.shape == (2, model.config.projection_dim)
    as_tuple = model.get_rgb_features(inputs["pixel_values"], return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], rgb.pooler_output)


# ----------------------------------------------------------------------------------------------- classification
def test_missing_modalities_and_modality_dropout():
    inputs = make_inputs(4)
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    model = RgbdClipForImageClassification(tiny_config(modality_dropout=(0.0, 1.0))).eval()
    rgb_only = run(model, pixel_values=inputs["pixel_values"], labels=labels)  # depth_values=None at inference
    depth_only = run(model, depth_values=inputs["depth_values"], depth_mask=inputs["depth_mask"])
    assert rgb_only.logits.shape == depth_only.logits.shape == (4, 4) and torch.isfinite(rgb_only.loss)
    # a modality dropped in training is processed exactly as a missing one
    model.train()
    torch.testing.assert_close(run(model, **inputs).logits, rgb_only.logits, atol=1e-6, rtol=1e-5)
    # (p_rgb, p_depth) = (0.5, 0.5): every sample loses exactly one modality, never both; seeded by torch's RNG
    model.config.modality_dropout = [0.5, 0.5]
    torch.manual_seed(123)
    first = run(model, **inputs).fused_embeds
    torch.manual_seed(123)
    torch.testing.assert_close(run(model, **inputs).fused_embeds, first, atol=0, rtol=0)
    projection = model.config.projection_dim
    rgb_missing = (first[:, :projection] == model.missing_rgb_embedding).all(-1)
    depth_missing = (first[:, projection:] == model.missing_depth_embedding).all(-1)
    assert torch.all(rgb_missing ^ depth_missing)
    model.eval()  # no dropout at inference
    assert not (run(model, **inputs).fused_embeds[:, projection:] == model.missing_depth_embedding).all(-1).any()


def test_single_modality_variants_build_one_tower():
    inputs = make_inputs(2)
    for modality, kept in (("rgb", "pixel_values"), ("depth", "depth_values")):
        model = RgbdClipForImageClassification(tiny_config(modalities=modality)).eval()
        clip = model.rgbd_clip
        assert (clip.rgb_model is None) == (modality == "depth") and (clip.depth_model is None) == (modality == "rgb")
        assert model.classifier.in_features == model.config.projection_dim
        out = run(model, **inputs)
        assert out.logits.shape == (2, 4)
        with pytest.raises(ValueError, match=kept):
            model(**{k: v for k, v in inputs.items() if k != kept})
        base = RgbdClipModel(tiny_config(modalities=modality)).eval()
        base_out = run(base, **inputs)
        assert base_out.logits_per_rgb is None and base_out.loss is None
        with pytest.raises(ValueError, match="modalities"):
            (base.get_depth_features if modality == "rgb" else base.get_rgb_features)(inputs[kept])


def test_auxiliary_heads_add_weighted_per_modality_losses(tmp_path):
    inputs = make_inputs(4)
    labels = torch.tensor([0, 1, 2, 3])
    assert RgbdClipForImageClassification(tiny_config()).rgb_classifier is None  # weight 0: no extra heads
    torch.manual_seed(0)
    model = RgbdClipForImageClassification(tiny_config(auxiliary_loss_weight=0.5)).eval()
    out = run(model, **inputs, labels=labels)
    clip = model.rgbd_clip
    with torch.no_grad():
        rgb_embeds = clip.get_rgb_features(inputs["pixel_values"]).pooler_output
        depth_embeds = clip.get_depth_features(inputs["depth_values"], inputs["depth_mask"]).pooler_output
        expected_rgb, expected_depth = model.rgb_classifier(rgb_embeds), model.depth_classifier(depth_embeds)
        fused = model.classifier(torch.cat([rgb_embeds, depth_embeds], -1))
    torch.testing.assert_close(out.rgb_logits, expected_rgb)
    torch.testing.assert_close(out.depth_logits, expected_depth)
    torch.testing.assert_close(out.logits, fused)  # the prediction is the fused classifier's alone
    cross_entropy = torch.nn.functional.cross_entropy
    expected_loss = cross_entropy(fused, labels) + 0.5 * (
        cross_entropy(expected_rgb, labels) + cross_entropy(expected_depth, labels)
    )
    torch.testing.assert_close(out.loss, expected_loss)
    # a missing modality has no auxiliary logits and adds no auxiliary loss
    rgb_only = run(model, pixel_values=inputs["pixel_values"], labels=labels)
    assert rgb_only.depth_logits is None
    expected_loss = cross_entropy(rgb_only.logits, labels) + 0.5 * cross_entropy(expected_rgb, labels)
    torch.testing.assert_close(rgb_only.loss, expected_loss)
    # modality dropout replaces the fused input, never what the auxiliary heads read
    model.config.modality_dropout = [0.5, 0.5]
    model.train()
    dropped = run(model, **inputs)
    torch.testing.assert_close(dropped.rgb_logits, expected_rgb)
    torch.testing.assert_close(dropped.depth_logits, expected_depth)
    # the heads are saved and loaded with the rest
    model.eval().save_pretrained(tmp_path)
    reloaded = RgbdClipForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(run(reloaded, **inputs).rgb_logits, expected_rgb)


# ----------------------------------------------------------------------------------------------- save / load / auto
def test_init_weights_restores_parameters_missing_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(4.0)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoModelForZeroShotImageClassification"
    }
    weights = load_file(tmp_path / "model.safetensors")
    del weights["logit_scale"], weights["depth_model.embeddings.missing_depth_embedding"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = RgbdClipModel.from_pretrained(tmp_path)
    assert loaded.logit_scale.item() == pytest.approx(2.6592)  # set by _init_weights, not meta-device garbage
    missing = loaded.depth_model.embeddings.missing_depth_embedding
    assert torch.isfinite(missing).all() and 0 < missing.std() < 0.1
    assert dict(loaded.named_buffers()).keys() == dict(model.named_buffers()).keys()
    for name, buffer in model.named_buffers():
        assert torch.equal(dict(loaded.named_buffers())[name], buffer)
    # the same folder loads under every registered Auto class
    assert type(AutoModel.from_pretrained(tmp_path)) is RgbdClipModel
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert type(classifier) is RgbdClipForImageClassification
    torch.testing.assert_close(
        classifier.rgbd_clip.rgb_model.embeddings.position_embeddings, model.rgb_model.embeddings.position_embeddings
    )


# ----------------------------------------------------------------------------------------------- pretrained ViT / CLIP
def _save_vision_checkpoint(folder, kind: str):
    torch.manual_seed(0)
    common = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=48,
        image_size=SIZE,
        patch_size=PATCH,
    )
    if kind == "vit":
        model = ViTModel(ViTConfig(**common, qkv_bias=True))
        processor = {
            "image_processor_type": "ViTImageProcessor",
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "size": {"height": SIZE, "width": SIZE},
        }
    elif kind == "clip_vision":
        model = CLIPVisionModel(CLIPVisionConfig(**common))
        processor = {
            "image_processor_type": "CLIPImageProcessor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "size": {"shortest_edge": SIZE},
        }
    else:
        model = CLIPModel(
            CLIPConfig(
                text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                vision_config=common,
                projection_dim=12,
            )
        )
        with torch.no_grad():
            model.logit_scale.fill_(3.0)
        processor = None
    # make the layer norms non-trivial so that a wrong mapping shows up
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model.eval()


@pytest.mark.parametrize("kind", ["vit", "clip_vision", "clip"])
def test_from_vision_pretrained(tmp_path, kind):
    source = _save_vision_checkpoint(tmp_path, kind)
    result = RgbdClipForImageClassification.from_vision_pretrained(
        str(tmp_path), return_processor=kind != "clip", num_labels=5
    )
    model, processor = result if kind != "clip" else (result, None)
    clip = model.rgbd_clip
    vision = source.vision_model if kind == "clip" else source
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = vision(pixel_values=pixels)
        expected_pooled = expected.last_hidden_state[:, 0] if kind == "vit" else expected.pooler_output
        mine = clip.rgb_model(pixel_values=pixels).pooler_output
    torch.testing.assert_close(mine, expected_pooled, atol=1e-5, rtol=1e-5)  # same function, not just same weights
    patch_key = "embeddings.patch_embeddings.projection.weight"
    source_state = vision.state_dict()
    source_patch = source_state[
        "embeddings.patch_embeddings.projection.weight" if kind == "vit" else "embeddings.patch_embedding.weight"
    ]
    torch.testing.assert_close(clip.rgb_model.state_dict()[patch_key], source_patch, atol=0, rtol=0)
    torch.testing.assert_close(
        clip.depth_model.state_dict()[patch_key], source_patch.mean(dim=1, keepdim=True), atol=0, rtol=0
    )
    first_q = "layers.0.attention.q_proj.weight" if kind == "vit" else "encoder.layers.0.self_attn.q_proj.weight"
    for tower in (clip.rgb_model, clip.depth_model):
        torch.testing.assert_close(
            tower.encoder.layers[0].attention.q_proj.weight, source_state[first_q], atol=0, rtol=0
        )
    assert model.config.rgb_config.use_pre_layernorm == (kind != "vit")
    assert model.config.num_labels == 5 and model.classifier.out_features == 5
    if kind == "clip":
        torch.testing.assert_close(clip.rgb_projection.weight, source.visual_projection.weight, atol=0, rtol=0)
        torch.testing.assert_close(clip.depth_projection.weight, source.visual_projection.weight, atol=0, rtol=0)
        assert clip.logit_scale.item() == pytest.approx(3.0)
    else:
        checkpoint = json.loads((tmp_path / "preprocessor_config.json").read_text())
        assert list(processor.image_processor.image_mean) == pytest.approx(checkpoint["image_mean"])
        assert list(processor.image_processor.image_std) == pytest.approx(checkpoint["image_std"])
        assert processor.image_processor.size == {"height": SIZE, "width": SIZE}


def test_processor_from_vision_pretrained_lives_in_the_processors(tmp_path, monkeypatch):
    import hf_rgbd.modeling
    from hf_rgbd.processors import RgbdProcessor, processor_from_vision_pretrained

    _save_vision_checkpoint(tmp_path, "vit")
    processor = processor_from_vision_pretrained(str(tmp_path), image_size=48)
    assert isinstance(processor, RgbdProcessor) and processor.image_processor.size == {"height": 48, "width": 48}
    assert hf_rgbd.modeling.processor_from_vision_pretrained is processor_from_vision_pretrained  # old home
    monkeypatch.setitem(sys.modules, "hf_rgbd.processors", None)  # as in copied remote code without hf_rgbd
    with pytest.raises(ImportError, match="hf_rgbd package"):
        RgbdClipModel.from_vision_pretrained(str(tmp_path), return_processor=True)


def test_from_vision_pretrained_overrides_hha_and_image_size(tmp_path):
    source = _save_vision_checkpoint(tmp_path, "vit")
    model = RgbdClipModel.from_vision_pretrained(
        str(tmp_path), projection_dim=8, depth_config={"num_channels": 3}, rgb_config={"image_size": 48}
    )
    patch = model.depth_model.embeddings.patch_embeddings.projection.weight
    source_patch = source.embeddings.patch_embeddings.projection.weight
    assert patch.shape[1] == 3
    for channel in range(3):
        torch.testing.assert_close(patch[:, channel], source_patch.mean(dim=1), atol=0, rtol=0)
    assert model.rgb_model.embeddings.position_embeddings.shape == (1, 1 + 36, HIDDEN)
    out = run(model, **make_inputs(2, depth_channels=3) | {"pixel_values": torch.randn(2, 3, 48, 48)})
    assert out.rgb_embeds.shape == (2, 8) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="model_type"):
        RgbdClipModel.from_vision_pretrained(str(_save_bert_like(tmp_path / "other")))
    with pytest.raises(ValueError, match="depth_config.*linear"):
        RgbdClipModel.from_vision_pretrained(str(tmp_path), depth_config={"patch_embedding_type": "conv_stem"})


def _save_bert_like(folder):
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(
        folder
    )
    return folder


# ----------------------------------------------------------------------------------------------- bad inputs / config
def test_bad_inputs_raise_value_errors_naming_the_argument():
    torch.manual_seed(0)
    model = RgbdClipModel(tiny_config()).eval()
    classifier = RgbdClipForImageClassification(tiny_config()).eval()
    inputs = make_inputs(2)
    cases = [
        (model, {k: v for k, v in inputs.items() if k != "pixel_values"}, "pixel_values"),
        (model, {k: v for k, v in inputs.items() if k != "depth_values"}, "depth_values"),
        (model, {**inputs, "pixel_values": torch.randn(3, 3, SIZE, SIZE)}, "batch sizes"),
        (model, {**inputs, "pixel_values": torch.randn(2, 4, SIZE, SIZE)}, "pixel_values.*channels"),
        (model, {**inputs, "depth_values": torch.randn(2, 3, SIZE, SIZE)}, "depth_values.*channels"),
        (model, {**inputs, "depth_mask": inputs["depth_mask"][:, :, :16]}, "depth_mask"),
        (model, {**inputs, "pixel_values": torch.randn(2, 3, SIZE)}, "pixel_values"),
        (model, {**make_inputs(2, size=36)}, "patch size|interpolate_pos_encoding"),
        (classifier, {}, "pixel_values.*depth_values"),
        (classifier, {**inputs, "depth_values": inputs["depth_values"][:1], "depth_mask": None}, "batch size"),
        (classifier, {**inputs, "labels": torch.tensor([0, 1, 2])}, "labels"),
        (classifier, {**inputs, "labels": [0, 1]}, "labels"),
        (model, {**inputs, "pixel_values": (inputs["pixel_values"] * 50).to(torch.uint8)}, "pixel_values.*float"),
    ]
    for target, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            target(**kwargs)
    with pytest.raises(ValueError, match="patch size"):
        model(**make_inputs(2, size=36), interpolate_pos_encoding=True)


FIELD_ERROR, CLASS_ERROR = StrictDataclassFieldValidationError, StrictDataclassClassValidationError


@pytest.mark.parametrize(
    "overrides, field, error",
    [
        ({"modalities": "rgbx"}, "modalities", FIELD_ERROR),
        ({"modality_dropout": 1.5}, "modality_dropout", CLASS_ERROR),
        ({"modality_dropout": (0.7, 0.6)}, "modality_dropout", CLASS_ERROR),
        ({"modalities": "rgb", "modality_dropout": 0.1}, "modality_dropout", CLASS_ERROR),
        ({"projection_dim": 0}, "projection_dim", CLASS_ERROR),
        ({"classifier_dropout": 1.0}, "classifier_dropout", CLASS_ERROR),
        ({"auxiliary_loss_weight": -0.1}, "auxiliary_loss_weight", CLASS_ERROR),
        ({"modalities": "depth", "auxiliary_loss_weight": 0.5}, "auxiliary_loss_weight", CLASS_ERROR),
        ({"rgb_config": {"hidden_size": 31}}, "hidden_size", CLASS_ERROR),
        ({"depth_config": {"image_size": 30}}, "image_size", CLASS_ERROR),
        ({"depth_config": {"modality": "rgb"}}, "depth_config.modality", CLASS_ERROR),
        ({"rgb_config": {"modality": "sonar"}}, "modality", FIELD_ERROR),
        ({"rgb_config": {"position_embedding_init": "zeros"}}, "position_embedding_init", FIELD_ERROR),
    ],
)
def test_config_validation_names_the_field(overrides, field, error):
    with pytest.raises(error, match=field):
        if "modality" in overrides.get("depth_config", {}) or "modality" in overrides.get("rgb_config", {}):
            RgbdClipConfig(**overrides)
        else:
            tiny_config(**overrides)


def test_config_defaults_and_named_configs():
    config = RgbdClipConfig()
    assert config.rgb_config.hidden_size == 768 and config.rgb_config.patch_size == 16
    assert config.depth_config.modality == "depth" and config.depth_config.num_channels == 1
    assert config.logit_scale_init_value == pytest.approx(2.6592) and config.modalities == "rgbd"
    assert RgbdClipConfig(depth_config={"num_channels": 3}).depth_config.modality == "depth"
    small = RgbdClipConfig.small(num_labels=8)
    assert small.rgb_config.image_size == 64 and small.num_labels == 8
    assert small.rgb_config.patch_embedding_type == small.depth_config.patch_embedding_type == "conv_stem"
    assert (
        RgbdClipConfig.small(rgb_config={"patch_embedding_type": "linear"}).rgb_config.patch_embedding_type == "linear"
    )
    reloaded = RgbdClipConfig.from_dict(small.to_dict())
    assert reloaded.depth_config.to_dict() == small.depth_config.to_dict()


def test_sincos_position_initialisation_is_shared_by_the_towers():
    from hf_rgbd.modeling.modeling_rgbd_vit import sincos_position_embeddings

    model = RgbdClipModel(
        tiny_config(
            rgb_config={"position_embedding_init": "sincos"}, depth_config={"position_embedding_init": "sincos"}
        )
    )
    table = sincos_position_embeddings((4, 4), HIDDEN)
    assert table.shape == (1, TOKENS, HIDDEN) and torch.equal(table[0, 0], torch.zeros(HIDDEN))
    for tower in (model.rgb_model, model.depth_model):
        torch.testing.assert_close(tower.embeddings.position_embeddings.detach(), table, atol=0, rtol=0)
    # distinct positions get distinct codes, and the small named config uses this initialisation
    assert torch.cdist(table[0, 1:], table[0, 1:]).add(torch.eye(16)).min() > 0.1
    assert RgbdClipConfig.small().rgb_config.position_embedding_init == "sincos"
