"""Mixture of modality experts (VLMo-style): the common model tests of its Auto classes, expert routing, the
unimodal (dual-encoder) and fused passes, missing modalities, pretraining with the shared heads, matching,
staged training, from_vision_pretrained, config validation and bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_mixin import RgbdModelTestMixin
from test_modeling_rgbd_albef import (
    ForcedDrawsRemoteCodeMixin,
    HeadWithoutStatesMixin,
    one_valid_word,
    pretraining_inputs,
    run,
)
from test_modeling_rgbd_clip import _save_vision_checkpoint, make_inputs

from hf_rgbd import (
    RgbdVlmoConfig,
    RgbdVlmoForImageClassification,
    RgbdVlmoForPreTraining,
    RgbdVlmoForRgbdMatching,
    RgbdVlmoModel,
)
from hf_rgbd.modeling import RgbdModalityExperts, RgbdVitConfig
from hf_rgbd.training import TRAINING_STAGES, set_training_stage

torch.set_num_threads(1)

SIZE, PATCH, HIDDEN, LAYERS, HEADS = 32, 8, 32, 2, 2
TOKENS = 1 + (SIZE // PATCH) ** 2


def tiny_config(**overrides) -> RgbdVlmoConfig:
    return RgbdVlmoConfig.tiny(**{"num_labels": 4, **overrides})


def pairs(batch_size: int = 2, seed: int = 0) -> dict:
    return make_inputs(batch_size, seed=seed)


# ----------------------------------------------------------------------------------------------- common tests
class TestRgbdVlmoCommon(RgbdModelTestMixin):
    """The trunk (fused pass) and the classifier."""

    model_classes = (RgbdVlmoModel, RgbdVlmoForImageClassification)
    has_attentions = True
    supports_sdpa = True

    def get_config(self, **overrides) -> RgbdVlmoConfig:
        return tiny_config(**overrides)

    def get_inputs(self, config: RgbdVlmoConfig, batch_size: int = 2) -> dict:
        return make_inputs(batch_size, depth_channels=config.depth_config.num_channels)

    def _length(self, config: RgbdVlmoConfig) -> int:
        return 2 * TOKENS if config.modalities == "rgbd" else TOKENS

    def _lower_layers(self, config: RgbdVlmoConfig) -> int:
        """Layers each stream runs alone in the fused pass (`aligned_fusion`), before the fusion layers."""
        return config.first_fusion_layer if config.modalities == "rgbd" and config.aligned_fusion else 0

    def expected_hidden_state_shapes(self, config: RgbdVlmoConfig, batch_size: int) -> list[tuple[int, ...]]:
        # aligned: the RGB stream's lower layers (input + each layer), the depth stream's, then the fusion layers
        lower = self._lower_layers(config)
        stream = (batch_size, TOKENS, HIDDEN)
        upper = [(batch_size, self._length(config), HIDDEN)] * (LAYERS - lower)
        if lower == 0:
            return [(batch_size, self._length(config), HIDDEN)] + upper
        return [stream] * (1 + lower) + [stream] * lower + upper

    def expected_attention_shapes(self, config: RgbdVlmoConfig, batch_size: int) -> list[tuple[int, ...]]:
        lower, length = self._lower_layers(config), self._length(config)
        return [(batch_size, HEADS, TOKENS, TOKENS)] * (2 * lower) + [(batch_size, HEADS, length, length)] * (
            LAYERS - lower
        )


class TestRgbdVlmoPreTrainingCommon(ForcedDrawsRemoteCodeMixin, HeadWithoutStatesMixin, RgbdModelTestMixin):
    """Pretraining: masked patches and hard negatives come from torch's RNG, so `run_model` seeds before each call."""

    model_classes = (RgbdVlmoForPreTraining,)
    supports_sdpa = True
    modality_options = ("rgbd",)

    def get_config(self, **overrides) -> RgbdVlmoConfig:
        return tiny_config(**{"mdm_mask_ratio": 0.3, **overrides})

    def get_inputs(self, config: RgbdVlmoConfig, batch_size: int = 2) -> dict:
        return pretraining_inputs(batch_size, config=config)

    def run_model(self, model, inputs: dict[str, torch.Tensor], **kwargs):
        torch.manual_seed(0)
        return super().run_model(model, inputs, **kwargs)

    def test_batch_size_independence(self) -> None:
        # negatives and ITC columns depend on the batch by design; each pair's embeddings, MDM scores and positive
        # ITM logit must not (a batch of three against batches of two, masked patch forced)
        config = self.get_config()
        inputs = one_valid_word(self.get_inputs(config, 3))
        model = self.make_model(RgbdVlmoForPreTraining, config)
        batched = self.run_model(model, inputs)
        for rows in ([0, 1], [1, 2], [2, 0]):
            part = self.run_model(model, {k: v[rows] for k, v in inputs.items()})
            for key in ("rgb_embeds", "depth_embeds", "mdm_logits", "mdm_mask"):
                torch.testing.assert_close(part[key], batched[key][rows], atol=self.atol, rtol=1e-4, msg=key)
            torch.testing.assert_close(part.itm_logits[:2], batched.itm_logits[rows], atol=self.atol, rtol=1e-4)

    def test_loss_under_gradient_accumulation(self, tmp_path: Path) -> None:
        # no labels: Trainer's loss with 2 micro-batches of 2 is the mean of the two micro-batch losses
        import copy

        config = self.get_config()
        inputs = one_valid_word(self.get_inputs(config, 4))
        dataset = [{k: v[i] for k, v in inputs.items()} for i in range(4)]
        model = self.make_model(RgbdVlmoForPreTraining, config)
        reference = copy.deepcopy(model).train()
        with torch.no_grad():
            micro = [reference(**{k: v[s] for k, v in inputs.items()}).loss for s in (slice(0, 2), slice(2, 4))]
        accumulated = self.trainer_loss(model, dataset, 2, 2, tmp_path / "2x2")
        assert accumulated == pytest.approx(float(sum(micro) / 2), rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------------------------ experts
@settings(deadline=None, max_examples=20)
@given(rgb_length=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_experts_route_each_token_to_its_modality_below_and_to_the_fusion_expert_on_top(rgb_length, seed):
    torch.manual_seed(seed)
    config = RgbdVitConfig.tiny()
    states = torch.randn(2, 6, HIDDEN)
    lower, top = RgbdModalityExperts(config, False), RgbdModalityExperts(config, True)
    assert set(lower.experts) == {"rgb", "depth"} and set(top.experts) == {"rgb", "depth", "rgbd"}
    with torch.no_grad():
        routed = lower(states, route="rgbd", rgb_length=rgb_length)
        torch.testing.assert_close(routed[:, :rgb_length], lower.experts["rgb"](states[:, :rgb_length]))
        torch.testing.assert_close(routed[:, rgb_length:], lower.experts["depth"](states[:, rgb_length:]))
        torch.testing.assert_close(top(states, route="rgbd", rgb_length=rgb_length), top.experts["rgbd"](states))
        for route in ("rgb", "depth"):
            torch.testing.assert_close(top(states, route=route), top.experts[route](states))
    with pytest.raises(ValueError, match="route"):
        lower(states, route="text")


def test_layers_share_attention_and_carry_fusion_experts_only_on_top():
    model = RgbdVlmoModel(tiny_config(rgb_config={"num_hidden_layers": 3}, num_fusion_layers=2))
    layers = model.encoder.layers
    assert [layer.mlp.has_fusion_expert for layer in layers] == [False, True, True]
    assert all(layer.layernorm_after is None for layer in layers)  # each expert norms its own input
    assert model.config.first_fusion_layer == 1
    names = {name.split(".", 3)[-1] for name, _ in model.named_parameters() if name.startswith("encoder.layers.0.")}
    assert "attention.q_proj.weight" in names  # one attention per layer, no per-modality copy
    assert not any("rgb" in name for name in names if name.startswith("attention"))


# ----------------------------------------------------------------------------------------------- dual and fused
def test_unimodal_features_are_each_modality_alone_through_its_experts():
    torch.manual_seed(0)
    model = RgbdVlmoModel(tiny_config()).eval()
    inputs = pairs(3)
    with torch.no_grad():
        rgb = model.get_rgb_features(inputs["pixel_values"])
        depth = model.get_depth_features(inputs["depth_values"], inputs["depth_mask"])
        embeddings, _ = model.embed("rgb", inputs["pixel_values"])
        states = model.run_trunk(embeddings, None, "rgb")
    assert rgb.pooler_output.shape == (3, 16) and depth.pooler_output.shape == (3, 16)
    torch.testing.assert_close(rgb.pooler_output, model.rgb_projection(states[:, 0]))
    # the RGB pass does not depend on depth, the depth pass not on RGB; the fused pass on both
    with torch.no_grad():
        other = pairs(3, seed=1)
        fused = model(**inputs).pooler_output
        fused_other_depth = model(
            **{**inputs, "depth_values": other["depth_values"], "depth_mask": other["depth_mask"]}
        )
    assert not torch.allclose(fused, fused_other_depth.pooler_output)


def test_missing_rgb_is_its_cls_token_alone_and_equals_a_dropped_image():
    torch.manual_seed(0)
    model = RgbdVlmoModel(tiny_config(modality_dropout=0.2)).eval()
    inputs = pairs(3)
    with torch.no_grad():
        rgb, _ = model.embed("rgb", inputs["pixel_values"])
        depth, depth_keys = model.embed("depth", inputs["depth_values"], inputs["depth_mask"])
        dropped, rgb_length = model.fused_states(rgb, depth, depth_keys, torch.tensor([True, False, True]))
        missing, one = model.fused_states(None, depth, depth_keys)
        full, _ = model.fused_states(rgb, depth, depth_keys)
        no_rgb = model(depth_values=inputs["depth_values"], depth_mask=inputs["depth_mask"])
    assert rgb_length == TOKENS and one == 1
    for row in (0, 2):  # the [CLS] and every depth token: as if the image were missing
        torch.testing.assert_close(dropped[row, 0], missing[row, 0])
        torch.testing.assert_close(dropped[row, rgb_length:], missing[row, 1:])
    torch.testing.assert_close(dropped[1], full[1])
    torch.testing.assert_close(no_rgb.last_hidden_state, missing)
    # missing depth is a map without valid pixel
    no_depth = run(model, pixel_values=inputs["pixel_values"])
    empty = run(model, **{**inputs, "depth_mask": torch.zeros_like(inputs["depth_mask"])})
    torch.testing.assert_close(no_depth.pooler_output, empty.pooler_output)


def test_a_fused_call_with_a_modality_missing_needs_modality_dropout():
    model = RgbdVlmoModel(tiny_config()).eval()
    inputs = pairs(2)
    with pytest.raises(ValueError, match="depth_values.*modality_dropout"):
        model(pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="pixel_values.*modality_dropout"):
        model(depth_values=inputs["depth_values"])
    with pytest.raises(ValueError, match="same batch size"):
        model(pixel_values=inputs["pixel_values"][:1], depth_values=inputs["depth_values"])
    with pytest.raises(ValueError, match="depth_values.*floating-point"):
        model(pixel_values=inputs["pixel_values"], depth_values=inputs["depth_values"].numpy())


def test_classifier_loads_a_pretraining_folder_and_reports_only_its_head(tmp_path, caplog):
    torch.manual_seed(0)
    pretraining = RgbdVlmoForPreTraining(tiny_config())
    pretraining.save_pretrained(tmp_path)
    classifier, info = RgbdVlmoForImageClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert info["unexpected_keys"] == [] or all(
        k.startswith(("itm_head", "mdm_head", "mim_head")) for k in info["unexpected_keys"]
    )
    for key, value in classifier.rgbd_vlmo.state_dict().items():
        assert torch.equal(value, pretraining.rgbd_vlmo.state_dict()[key]), key
    matching = RgbdVlmoForRgbdMatching.from_pretrained(tmp_path)
    assert torch.equal(matching.itm_head.classifier.weight, pretraining.itm_head.classifier.weight)


# -------------------------------------------------------------------------------------------------- pretraining
def test_pretraining_losses_negatives_and_bad_inputs():
    torch.manual_seed(0)
    config = tiny_config(mdm_mask_ratio=0.5)
    model = RgbdVlmoForPreTraining(config).train()
    inputs = pretraining_inputs(4, config=config)
    torch.manual_seed(1)
    out = model(**inputs, scene_ids=torch.tensor([0, 0, 1, 2]))
    assert out.itm_logits.shape == (12, 2) and out.mdm_logits.shape == (4, TOKENS - 1, config.depth_vocab_size)
    torch.testing.assert_close(out.loss, out.loss_itc + out.loss_itm + out.loss_mdm)
    own = torch.arange(4)
    scenes = torch.tensor([0, 0, 1, 2])
    for negatives in (out.negative_depth_index, out.negative_rgb_index):
        assert (negatives != own).all() and (scenes[negatives] != scenes).all()
    out.loss.backward()
    # every parameter but the RGB-only step's pixel head takes part in the paired step
    assert all(p.grad is not None for name, p in model.named_parameters() if not name.startswith("mim_head."))
    with pytest.raises(ValueError, match="batch of one"):
        model(**{k: v[:1] for k, v in inputs.items()})
    with pytest.raises(ValueError, match="depth_token_ids"):
        model(**{k: v for k, v in inputs.items() if k != "depth_token_ids"})
    with pytest.raises(ValueError, match="depth_token_ids.*shape"):
        model(**{**inputs, "depth_token_ids": inputs["depth_token_ids"][:, :-1]})
    with pytest.raises(ValueError, match="scene_ids"):
        model(**inputs, scene_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same number of pairs"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"][:3]})
    with pytest.raises(ValueError, match="pixel_values.*floating-point"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"].tolist()})
    with pytest.raises(ValueError, match="needs both modalities"):
        RgbdVlmoForPreTraining(tiny_config(modalities="rgb"))


def test_matching_scores_and_cosine_similarities():  # MatchingObjective: tests/test_attacks_matching.py
    torch.manual_seed(0)
    model = RgbdVlmoForRgbdMatching(tiny_config()).eval()
    inputs = pairs(3)
    with torch.no_grad():
        itm = model(**inputs).itm_score
        cosine = model(**inputs, use_itm_head=False).itm_score
        rgb = torch.nn.functional.normalize(
            model.rgbd_vlmo.get_rgb_features(inputs["pixel_values"]).pooler_output, dim=-1
        )
        depth = torch.nn.functional.normalize(
            model.rgbd_vlmo.get_depth_features(inputs["depth_values"], inputs["depth_mask"]).pooler_output, dim=-1
        )
    assert itm.shape == (3, 2)
    torch.testing.assert_close(cosine, rgb @ depth.t())
    with pytest.raises(ValueError, match="use_itm_head"):
        model(**inputs, use_itm_head="yes")


# ------------------------------------------------------------------------------------------ unimodal stage steps
def mim_head_input(model, pixel_values: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The token states the pixel head reads in an RGB-only step, and the step's mask (the same draw per seed)."""
    seen = []
    handle = model.mim_head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    torch.manual_seed(seed)
    out = model(pixel_values=pixel_values)
    handle.remove()
    return seen[0], out.mim_mask


def gradients_reach(model, loss: torch.Tensor) -> set[str]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_rgb_alone_is_masked_image_modelling_that_never_sees_the_masked_patches():
    torch.manual_seed(0)
    config = tiny_config(mim_mask_ratio=0.25)
    model = RgbdVlmoForPreTraining(config).train()
    pixels = torch.randn(3, 3, SIZE, SIZE)
    torch.manual_seed(3)
    out = model(pixel_values=pixels)
    num_patches = TOKENS - 1
    assert out.mim_mask.shape == (3, num_patches) and (out.mim_mask.sum(1) == round(0.25 * num_patches)).all()
    assert out.loss_itc is None and out.loss_itm is None and out.loss_mdm is None
    torch.testing.assert_close(out.loss, out.loss_mim)
    reached = gradients_reach(model, out.loss)
    assert "mim_head.weight" in reached and any(name.startswith("rgbd_vlmo.rgb_embeddings.") for name in reached)
    assert any(".experts.rgb." in name for name in reached) and any(".attention." in name for name in reached)
    assert not any("depth" in name or name.startswith(("mdm_head.", "itm_head.")) for name in reached)

    states, mask = mim_head_input(model, pixels)
    pixel_mask = mask.view(3, 1, SIZE // PATCH, SIZE // PATCH).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    masked_changed = pixels + 5.0 * torch.randn_like(pixels) * pixel_mask
    states_masked_changed, same_mask = mim_head_input(model, masked_changed)
    assert torch.equal(mask, same_mask)
    torch.testing.assert_close(states_masked_changed, states, atol=0, rtol=0)  # blanked: invisible
    visible_changed = pixels + 5.0 * torch.randn_like(pixels) * ~pixel_mask
    assert not torch.allclose(mim_head_input(model, visible_changed)[0], states)
    # the target is the masked patches' pixels: changing them changes the loss
    torch.manual_seed(3)
    assert not torch.isclose(model(pixel_values=masked_changed).loss, out.loss)

    with pytest.raises(ValueError, match="mim_mask_ratio"):
        RgbdVlmoForPreTraining(tiny_config(mim_mask_ratio=0.0))(pixel_values=pixels)
    with pytest.raises(ValueError, match="pixel_values.*rgb_config.image_size"):
        model(pixel_values=torch.randn(2, 3, 2 * SIZE, SIZE))


def test_depth_alone_is_masked_depth_modelling_on_the_depth_experts():
    torch.manual_seed(0)
    config = tiny_config(mdm_mask_ratio=0.5)
    model = RgbdVlmoForPreTraining(config).train()
    inputs = pretraining_inputs(2, config=config)
    depth_only = {key: inputs[key] for key in ("depth_values", "depth_mask", "depth_token_ids") if key in inputs}
    out = model(**depth_only)
    assert out.loss_itc is None and out.loss_mim is None and out.itm_logits is None
    assert out.mdm_logits.shape == (2, TOKENS - 1, config.depth_vocab_size)
    torch.testing.assert_close(out.loss, out.loss_mdm)
    reached = gradients_reach(model, out.loss)
    assert "mdm_head.decoder.weight" in reached and any(".experts.depth." in name for name in reached)
    assert not any(
        name.startswith(("rgbd_vlmo.rgb_embeddings.", "mim_head.", "itm_head.")) or ".experts.rgb." in name
        for name in reached
    )
    with pytest.raises(ValueError, match="depth_token_ids"):
        model(**{key: value for key, value in depth_only.items() if key != "depth_token_ids"})
    with pytest.raises(ValueError, match="mdm_mask_ratio"):
        RgbdVlmoForPreTraining(tiny_config(mdm_mask_ratio=0.0))(**depth_only)
    with pytest.raises(ValueError, match=r"depth_values.*depth_config.image_size"):  # not a shape error in torch
        model(**{**depth_only, "depth_values": torch.randn(2, 1, SIZE + 8, SIZE + 8), "depth_mask": None})
    with pytest.raises(ValueError, match=r"depth_values.*depth_config.image_size"):  # the paired step's masking too
        model(**{**inputs, "depth_values": torch.randn(2, 1, SIZE + 8, SIZE + 8), "depth_mask": None})
    with pytest.raises(ValueError, match="pass `pixel_values`, `depth_values` or both|needs `pixel_values`"):
        model(depth_token_ids=inputs["depth_token_ids"])


# ------------------------------------------------------------------------------------------------ staged training
@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stages_set_exactly_their_parts_trainable(stage):
    model = RgbdVlmoForPreTraining(tiny_config())
    summary = set_training_stage(model, stage)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    everything = {name for name, _ in model.named_parameters()}
    assert stage in summary and f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}" in summary
    heads = {name for name in everything if not name.startswith("rgbd_vlmo.")} | {
        "rgbd_vlmo.rgb_projection.weight",
        "rgbd_vlmo.depth_projection.weight",
        "rgbd_vlmo.logit_scale",
    }
    if stage in ("fusion", "joint"):
        assert trainable == everything
        return

    def part_of_stage(name: str) -> bool:
        name = name[len("rgbd_vlmo.") :]
        if name.startswith(f"{stage}_embeddings.") or f".experts.{stage}." in name:
            return True
        shared = name.startswith("layernorm.") or ".attention." in name or ".layernorm_before." in name
        return stage == "rgb" and shared

    expected = {name for name in everything if name.startswith("rgbd_vlmo.") and part_of_stage(name)}
    trunk_trainable = trainable - heads
    assert trunk_trainable == expected
    assert not any(".experts.rgbd." in name for name in trainable)
    if stage == "depth":
        assert not any(".attention." in name for name in trainable)


def test_training_stage_bad_input():
    model = RgbdVlmoForImageClassification(tiny_config())
    with pytest.raises(ValueError, match="stage"):
        set_training_stage(model, "text")
    with pytest.raises(ValueError, match="model"):
        set_training_stage(torch.nn.Linear(2, 2), "rgb")
    with pytest.raises(ValueError, match="depth stream"):
        set_training_stage(RgbdVlmoForImageClassification(tiny_config(modalities="rgb")), "depth")


def test_staged_training_updates_only_the_stage_parts():
    torch.manual_seed(0)
    model = RgbdVlmoForImageClassification(tiny_config(modalities="rgbd")).train()
    set_training_stage(model, "depth")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    inputs = pairs(2)
    model.rgbd_vlmo.get_depth_features(inputs["depth_values"], inputs["depth_mask"]).pooler_output.sum().backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(
        name.startswith("rgbd_vlmo.depth_embeddings.") or ".experts.depth." in name or "depth_projection" in name
        for name in changed
    )


# ---------------------------------------------------------------------------------------------- vision pretrained
@pytest.mark.parametrize("kind", ["vit", "clip_vision"])
def test_from_vision_pretrained_copies_the_trunk_into_every_expert(tmp_path, kind):
    source = _save_vision_checkpoint(tmp_path, kind)
    model = RgbdVlmoModel.from_vision_pretrained(str(tmp_path), num_fusion_layers=1)
    experts = model.encoder.layers[-1].mlp.experts
    assert set(experts) == {"rgb", "depth", "rgbd"}
    for expert in experts.values():
        for key, value in expert.state_dict().items():
            assert torch.equal(value, experts["rgb"].state_dict()[key]), key
    # the RGB stream alone computes what the checkpoint's vision tower computes
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = source(pixel_values=pixels)
        expected_pooled = expected.last_hidden_state[:, 0] if kind == "vit" else expected.pooler_output
        ours = model.encode_modality("rgb", pixels).pooler_output
    torch.testing.assert_close(ours, expected_pooled, atol=1e-5, rtol=1e-5)
    # the depth patch projection is the mean of the RGB channels'
    rgb_weight = model.rgb_embeddings.patch_embeddings.projection.weight
    depth_weight = model.depth_embeddings.patch_embeddings.projection.weight
    torch.testing.assert_close(depth_weight, rgb_weight.mean(dim=1, keepdim=True), atol=0, rtol=0)
    assert model.config.rgb_config.use_pre_layernorm == (kind != "vit")


# ------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_fusion_layers": 3}, "num_fusion_layers"),
        ({"num_fusion_layers": 0}, "num_fusion_layers"),
        ({"depth_config": {"hidden_size": 64}}, "depth_config.hidden_size"),
        ({"depth_config": {"num_hidden_layers": 3}}, "depth_config.num_hidden_layers"),
        ({"depth_vocab_size": 1}, "depth_vocab_size"),
        ({"mdm_mask_ratio": 1.0}, "mdm_mask_ratio"),
        ({"mim_mask_ratio": -0.1}, "mim_mask_ratio"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(StrictDataclassClassValidationError, match=field):
        tiny_config(**overrides)


def test_config_round_trip_and_trunk_defaults():
    config = RgbdVlmoConfig(rgb_config={"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128})
    assert config.depth_config.hidden_size == 64 and config.depth_config.num_attention_heads == 4
    again = RgbdVlmoConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    small = RgbdVlmoConfig.small()
    assert small.num_fusion_layers == 2 and small.depth_config.patch_size_pair == (16, 16)


def test_aligned_fusion_runs_the_streams_alone_below_the_fusion_layers():
    torch.manual_seed(0)
    config = tiny_config()
    assert config.aligned_fusion and config.first_fusion_layer == 1
    model = RgbdVlmoModel(config).eval()
    inputs = pairs(3)
    with torch.no_grad():
        rgb, _ = model.embed("rgb", inputs["pixel_values"])
        depth, depth_keys = model.embed("depth", inputs["depth_values"], inputs["depth_mask"])
        fused, rgb_length = model.fused_states(rgb, depth, depth_keys)
        # pretraining hands over the unimodal passes' lower states: the same fused pass
        lower = model.lower_states("rgb", rgb, None), model.lower_states("depth", depth, depth_keys)
        reused, _ = model.fused_states(*lower, depth_keys, lower_states_given=True)
        # the lower states are those of the unimodal pass: its upper layers on them give the dual-encoder output
        unimodal = model.upper_states(lower[0], None, "rgb")
        features = model.encode_modality("rgb", inputs["pixel_values"]).last_hidden_state
    torch.testing.assert_close(reused, fused)
    torch.testing.assert_close(unimodal, features)
    # without it: VLMo's fused pass, the concatenation from the first layer
    plain = RgbdVlmoModel(tiny_config(aligned_fusion=False)).eval()
    assert plain.aligned_rgb_projection is None and model.aligned_rgb_projection is not None
    with torch.no_grad():
        concatenated = plain.run_trunk(
            torch.cat([rgb, depth], dim=1), torch.cat([torch.ones_like(depth_keys), depth_keys], dim=1), "rgbd", TOKENS
        )
        plain_fused, _ = plain.fused_states(rgb, depth, depth_keys)
    assert rgb_length == TOKENS
    torch.testing.assert_close(plain_fused, concatenated)
