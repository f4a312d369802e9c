"""Fusion encoder (ALBEF-style): the common model tests of its four Auto classes, loading between heads, the EMA
teacher and feature queue, hard negatives, masked depth modelling, missing modalities, depth completion, matching,
bad inputs, processor and config validation, from_vision_pretrained, and the Trainer's momentum callback."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from hypothesis import assume, given
from hypothesis import strategies as st
from model_test_mixin import RgbdModelTestMixin, assert_outputs_close
from test_modeling_rgbd_clip import _save_vision_checkpoint, make_inputs

from hf_rgbd import RgbdAlbefConfig, RgbdAlbefForDepthCompletion, RgbdAlbefForImageClassification
from hf_rgbd.modeling import RgbdAlbefForPreTraining, RgbdAlbefForRgbdMatching, RgbdAlbefModel
from hf_rgbd.modeling.modeling_rgbd_pretraining import draw_mdm_mask, sample_hard_negatives
from hf_rgbd.processors import RgbdDepthProcessor, RgbdProcessor, depth_token_ids

torch.set_num_threads(1)

SIZE, PATCH, HIDDEN, LAYERS, HEADS, FUSION_LAYERS = 32, 8, 32, 2, 2, 1
NUM_PATCHES = (SIZE // PATCH) ** 2
TOKENS = 1 + NUM_PATCHES
VOCAB = 16
FIELD_ERROR, CLASS_ERROR = StrictDataclassFieldValidationError, StrictDataclassClassValidationError


def tiny_config(**overrides) -> RgbdAlbefConfig:
    return RgbdAlbefConfig.tiny(**{"num_labels": 4, **overrides})


def pretraining_inputs(batch_size: int = 2, seed: int = 0, config: RgbdAlbefConfig | None = None) -> dict:
    """`make_inputs` plus the depth words the processor would make of that depth (in metres) for `config`."""
    config = config or tiny_config()
    inputs = make_inputs(batch_size, seed=seed)
    inputs["depth_token_ids"] = depth_token_ids(
        inputs["depth_values"],
        inputs["depth_mask"],
        config.depth_vocab_size,
        PATCH,
        config.min_depth,
        config.max_depth,
    )
    return inputs


def one_valid_word(inputs: dict) -> dict:
    """The inputs with one depth word per sample kept (patch `1 + i`), the others -100: MDM then masks that patch
    and no other, so the masked patches are the same in every call and every batch (a forced draw)."""
    tokens = torch.full_like(inputs["depth_token_ids"], -100)
    rows = torch.arange(tokens.shape[0])
    tokens[rows, 1 + rows % (NUM_PATCHES - 1)] = inputs["depth_token_ids"][rows, 1 + rows % (NUM_PATCHES - 1)]
    return {**inputs, "depth_token_ids": tokens}


def run(model, **inputs):
    with torch.no_grad():
        return model(**inputs)


def seeded(model, seed: int = 0, **inputs):
    """A forward pass without gradient after `torch.manual_seed(seed)` (masked patches and hard negatives are drawn
    from torch's RNG)."""
    torch.manual_seed(seed)
    return run(model, **inputs)


# ----------------------------------------------------------------------------------------------- common tests
class TestRgbdAlbefCommon(RgbdModelTestMixin):
    """The trunk and the classifier (the classifier's trunk is the trunk: same inputs, same hidden states)."""

    model_classes = (RgbdAlbefModel, RgbdAlbefForImageClassification)
    has_attentions = True
    supports_sdpa = True

    def get_config(self, **overrides) -> RgbdAlbefConfig:
        return tiny_config(**overrides)

    def get_inputs(self, config: RgbdAlbefConfig, batch_size: int = 2) -> dict:
        return make_inputs(batch_size, depth_channels=config.depth_config.num_channels)

    def expected_hidden_state_shapes(self, config: RgbdAlbefConfig, batch_size: int) -> list[tuple[int, ...]]:
        # RGB tower, depth tower, then the fusion encoder (embeddings + one state per layer each)
        layers = (LAYERS + 1) * len(config.active_modalities) + (FUSION_LAYERS + 1) * (config.modalities == "rgbd")
        return [(batch_size, TOKENS, HIDDEN)] * layers

    def expected_attention_shapes(self, config: RgbdAlbefConfig, batch_size: int) -> list[tuple[int, ...]]:
        layers = LAYERS * len(config.active_modalities) + FUSION_LAYERS * (config.modalities == "rgbd")
        return [(batch_size, HEADS, TOKENS, TOKENS)] * layers

    def test_attentions_of_the_parts_and_cross_attentions(self) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            torch.manual_seed(0)
            model = model_class._from_config(config, attn_implementation="eager").eval()
            out = self.run_model(model, inputs, output_attentions=True)
            for part in (out.rgb_model_output, out.depth_model_output):
                assert [tuple(a.shape) for a in part.attentions] == [(2, HEADS, TOKENS, TOKENS)] * LAYERS
            fusion = out.fusion_model_output
            assert [tuple(a.shape) for a in fusion.attentions] == [(2, HEADS, TOKENS, TOKENS)] * FUSION_LAYERS
            assert [tuple(a.shape) for a in fusion.cross_attentions] == [(2, HEADS, TOKENS, TOKENS)] * FUSION_LAYERS
            assert out.attentions[-1] is fusion.attentions[-1] and out.cross_attentions == fusion.cross_attentions
            # sample 0's top-left depth patch has no valid pixel: no depth token attends to it, in either encoder
            assert out.depth_model_output.attentions[0][0, :, :, 1].abs().max() == 0
            assert fusion.attentions[0][0, :, :, 1].abs().max() == 0
            torch.testing.assert_close(fusion.cross_attentions[0].sum(-1), torch.ones(2, HEADS, TOKENS))
            plain = self.run_model(model, inputs)
            assert plain.cross_attentions is None and plain.fusion_model_output.attentions is None


class HeadWithoutStatesMixin:
    """For heads whose outputs carry no hidden states or attentions (pretraining, depth completion): asking for
    them is accepted and changes none of the outputs (the common tests of those fields need the fields)."""

    def _assert_flag_changes_nothing(self, **flags) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            torch.manual_seed(0)
            model = model_class._from_config(config, attn_implementation="eager").eval()
            plain = self.run_model(model, inputs)
            assert not hasattr(plain, "hidden_states") and not hasattr(plain, "attentions")
            assert_outputs_close(self.run_model(model, inputs, **flags), plain, atol=0, rtol=0, what=str(flags))

    def test_hidden_states_output(self) -> None:
        self._assert_flag_changes_nothing(output_hidden_states=True)

    def test_attention_outputs(self) -> None:
        self._assert_flag_changes_nothing(output_attentions=True)


class ForcedDrawsRemoteCodeMixin:
    """The remote-code test of a pretraining model: the child process calls the model without seeding torch, so
    its inputs keep one valid depth word per sample (the masked patch is forced) and two pairs (each pair's hard
    negative is the other one): nothing is left to chance."""

    def test_remote_code_load_without_package(self, tmp_path: Path) -> None:
        inputs_hook = self.get_inputs
        self.get_inputs = lambda config, batch_size=2: one_valid_word(inputs_hook(config, batch_size))
        try:
            super().test_remote_code_load_without_package(tmp_path)
        finally:
            del self.get_inputs


class TestRgbdAlbefPreTrainingCommon(ForcedDrawsRemoteCodeMixin, HeadWithoutStatesMixin, RgbdModelTestMixin):
    """Pretraining with everything on: MDM, distillation and a queue (so the saved state has teacher and queue, and
    `move_buffers`' training step fills the queue). Its masked patches and hard negatives come from torch's RNG, so
    `run_model` seeds it before each call: the same draws in every compared call."""

    model_classes = (RgbdAlbefForPreTraining,)
    supports_sdpa = True
    modality_options = ("rgbd",)  # pretraining needs both towers (`modalities="rgb"` is a config error, see below)

    fixed_overrides: dict = {}

    def get_config(self, **overrides) -> RgbdAlbefConfig:
        defaults = {"mdm_mask_ratio": 0.3, "distillation_alpha": 0.4, "queue_size": 8}
        return tiny_config(**{**defaults, **self.fixed_overrides, **overrides})

    def get_inputs(self, config: RgbdAlbefConfig, batch_size: int = 2) -> dict:
        return pretraining_inputs(batch_size, config=config)

    def run_model(self, model, inputs: dict[str, torch.Tensor], **kwargs):
        torch.manual_seed(0)
        return super().run_model(model, inputs, **kwargs)

    def test_gradient_checkpointing(self) -> None:
        # The queue grows in every training forward, so the mixin's two passes (without and with checkpointing) would
        # see different ITC columns: checkpointing is compared without a queue (MDM and distillation on).
        self.fixed_overrides = {"queue_size": 0}
        try:
            super().test_gradient_checkpointing()
        finally:
            del self.fixed_overrides

    def test_batch_size_independence(self) -> None:
        # A batch of one is an error (ITM draws negatives from the batch), and the negatives and the ITC columns
        # depend on the batch by design. What must not: each pair's embeddings, MDM scores and positive ITM logit,
        # compared between a batch of three and batches of two (the masked patch forced as above).
        config = self.get_config()
        inputs = one_valid_word(self.get_inputs(config, 3))
        model = self.make_model(RgbdAlbefForPreTraining, config)
        batched = self.run_model(model, inputs)
        for rows in ([0, 1], [1, 2], [2, 0]):
            part = self.run_model(model, {k: v[rows] for k, v in inputs.items()})
            for key in ("rgb_embeds", "depth_embeds", "mdm_logits", "mdm_mask"):
                torch.testing.assert_close(part[key], batched[key][rows], atol=self.atol, rtol=1e-4, msg=key)
            torch.testing.assert_close(part.itm_logits[:2], batched.itm_logits[rows], atol=self.atol, rtol=1e-4)
            assert torch.equal(part.itm_labels, torch.tensor([1, 1, 0, 0, 0, 0]))

    def test_loss_under_gradient_accumulation(self, tmp_path: Path) -> None:
        # No labels (the mixin's version needs them). Trainer's loss with 2 micro-batches of 2 is the mean of the two
        # micro-batch losses of the model in train mode, the queue filled by the first before the second (draws forced
        # as above). A batch of 4 is another loss (other negatives and ITC columns): contrastive by design.
        config = self.get_config()
        inputs = one_valid_word(self.get_inputs(config, 4))
        dataset = [{k: v[i] for k, v in inputs.items()} for i in range(4)]
        model = self.make_model(RgbdAlbefForPreTraining, config)
        reference = copy.deepcopy(model).train()
        with torch.no_grad():
            micro = [reference(**{k: v[s] for k, v in inputs.items()}).loss for s in (slice(0, 2), slice(2, 4))]
        assert reference.queue.size == 4
        accumulated = self.trainer_loss(model, dataset, 2, 2, tmp_path / "2x2")
        assert accumulated == pytest.approx(float(sum(micro) / 2), rel=1e-5, abs=1e-6)


class TestRgbdAlbefDepthCompletionCommon(HeadWithoutStatesMixin, RgbdModelTestMixin):
    """Depth completion: inputs with the depth in metres, labels the true depth (B, H, W).
    `loss_independent_of_batch_composition = False`: the loss is the mean error over each batch's known hole pixels,
    whose number differs between micro-batches, so their mean is not the large batch's mean."""

    model_classes = (RgbdAlbefForDepthCompletion,)
    supports_sdpa = True
    modality_options = ("rgbd",)  # completion needs the fused model
    loss_independent_of_batch_composition = False

    def get_config(self, **overrides) -> RgbdAlbefConfig:
        return tiny_config(**overrides)

    def get_inputs(self, config: RgbdAlbefConfig, batch_size: int = 2) -> dict:
        inputs = make_inputs(batch_size)
        return {**inputs, "depth_metres": inputs["depth_values"]}  # make_inputs' depth is 0.5 - 1.5 (metres)

    def get_labels(self, config: RgbdAlbefConfig, batch_size: int) -> torch.Tensor:
        labels = 0.5 + torch.rand(batch_size, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        labels[:, ::3] = 0  # unknown true depth on some rows
        return labels


# ----------------------------------------------------------------------------------------------- loading between heads
def _pretrained_folder(tmp_path: Path, **overrides) -> tuple[RgbdAlbefForPreTraining, Path]:
    """A pretraining model (teacher moved away from the student, queue filled) saved to `tmp_path / "pretraining"`."""
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(**{"queue_size": 8, "momentum": 0.5, **overrides})).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(2):
        torch.manual_seed(step)
        model(**pretraining_inputs(3, seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.momentum_update()
    folder = tmp_path / "pretraining"
    model.eval().save_pretrained(folder)
    return model, folder


def _assert_same_weights(loaded: torch.nn.Module, source: torch.nn.Module, prefix: str = "") -> None:
    source_state = source.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, source_state[prefix + key]), key


def test_downstream_heads_load_a_pretraining_folder(tmp_path):
    source, folder = _pretrained_folder(tmp_path)
    classifier, info = RgbdAlbefForImageClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert classifier.classifier.out_features == 3
    _assert_same_weights(classifier.rgbd_albef, source.rgbd_albef)
    for head_class, head in ((RgbdAlbefForRgbdMatching, "itm_head"), (RgbdAlbefForDepthCompletion, "mdm_head")):
        model, info = head_class.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        _assert_same_weights(model.rgbd_albef, source.rgbd_albef)
        _assert_same_weights(getattr(model, head), getattr(source, head))
        assert not any(key.startswith(("teacher.", "queue.")) for key in model.state_dict())


def test_matching_model_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RgbdAlbefForRgbdMatching(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    loaded, info = RgbdAlbefForRgbdMatching.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _assert_same_weights(loaded, model)
    inputs = make_inputs(3)
    for use_itm_head in (True, False):
        assert_outputs_close(
            run(loaded.eval(), **inputs, use_itm_head=use_itm_head), run(model, **inputs, use_itm_head=use_itm_head),
            atol=0, rtol=0,
        )  # fmt: skip


def test_pretraining_from_a_classifier_folder_copies_the_student_into_the_teacher(tmp_path):
    torch.manual_seed(0)
    RgbdAlbefForImageClassification(tiny_config()).save_pretrained(tmp_path)
    model, info = RgbdAlbefForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(key.startswith("teacher.") for key in info["missing_keys"])
    assert {key.split(".")[0] for key in info["missing_keys"]} == {"itm_head", "mdm_head"}
    _assert_same_weights(model.teacher.model, model.rgbd_albef)
    _assert_same_weights(model.teacher.mdm_head, model.mdm_head)
    assert not any(p.requires_grad for p in model.teacher.parameters())


# ----------------------------------------------------------------------------------------------- teacher and queue
def test_teacher_is_frozen_gets_no_gradient_and_is_saved_bit_exactly(tmp_path):
    source, folder = _pretrained_folder(tmp_path)
    teacher_state = {k: v.clone() for k, v in source.teacher.state_dict().items()}
    queue_state = {k: v.clone() for k, v in source.queue.state_dict().items()}
    assert int(queue_state["filled"]) == int(queue_state["pointer"]) == 6  # two training steps of 3 pairs
    assert any(
        not torch.equal(v, source.rgbd_albef.state_dict()[k]) for k, v in source.teacher.model.state_dict().items()
    )
    assert not any(p.requires_grad for p in source.teacher.parameters())
    source.train().zero_grad()
    torch.manual_seed(0)
    source(**pretraining_inputs(3)).loss.backward()
    assert all(p.grad is None for p in source.teacher.parameters())
    assert all(p.grad is not None for n, p in source.rgbd_albef.named_parameters() if "rgb_model" in n)
    loaded = RgbdAlbefForPreTraining.from_pretrained(folder)
    assert loaded.teacher.state_dict().keys() == teacher_state.keys()
    for key, value in loaded.teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key  # loaded, not reset to the student
    assert not any(p.requires_grad for p in loaded.teacher.parameters())
    for key, value in loaded.queue.state_dict().items():
        assert torch.equal(value, queue_state[key]), key


def test_momentum_update_is_the_ema_of_teacher_and_student():
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(momentum=0.9))
    with torch.no_grad():
        for parameter in model.teacher.parameters():
            parameter.add_(torch.randn_like(parameter))
    teacher = {n: p.detach().double().clone() for n, p in model.teacher.named_parameters()}
    student = {**{"model." + n: p for n, p in model.rgbd_albef.named_parameters()},
               **{"mdm_head." + n: p for n, p in model.mdm_head.named_parameters()}}  # fmt: skip
    assert teacher.keys() == student.keys()
    model.momentum_update()
    for name, parameter in model.teacher.named_parameters():
        expected = 0.9 * teacher[name] + 0.1 * student[name].detach().double()
        torch.testing.assert_close(parameter.double(), expected, atol=1e-6, rtol=1e-6, msg=name)
        assert (parameter.double() - teacher[name]).abs().max() > 1e-3, name  # every parameter moved (noised above)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_no_teacher_without_distillation_or_queue():
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(distillation_alpha=0.0, queue_size=0)).train()
    assert model.teacher is None and model.queue is None and not model.config.uses_teacher
    assert not any(key.startswith(("teacher.", "queue.")) for key in model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.momentum_update()  # a no-op
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    out = seeded(model, **pretraining_inputs(3))
    assert torch.isfinite(out.loss) and out.logits_per_rgb.shape == (3, 3)
    assert RgbdAlbefForPreTraining(tiny_config(distillation_alpha=0.0, queue_size=4)).teacher is not None


def test_queue_holds_the_last_teacher_embeddings_and_extends_the_itc_columns():
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(queue_size=8, mdm_mask_ratio=0.0, momentum=0.5)).train()
    queue, batches, teacher_embeds = model.queue, [pretraining_inputs(3, seed=s) for s in range(3)], []
    for step, batch in enumerate(batches):
        filled_before = queue.size
        queue_depth = queue.depth.clone()
        out = seeded(model, step, **batch)
        with torch.no_grad():
            teacher = model.teacher.model
            rgb = torch.nn.functional.normalize(teacher.get_rgb_features(batch["pixel_values"]).pooler_output, dim=-1)
            depth = teacher.get_depth_features(batch["depth_values"], batch["depth_mask"]).pooler_output
            teacher_embeds.append((rgb, torch.nn.functional.normalize(depth, dim=-1)))
        assert out.logits_per_rgb.shape == (3, 3 + filled_before)
        scale = model.rgbd_albef.scaled_logit_scale()
        torch.testing.assert_close(out.logits_per_rgb[:, 3:], scale * out.rgb_embeds @ queue_depth.T)
        model.momentum_update()
    # 3 + 3 + 3 rows into 8: the third batch wrapped around (rows 6, 7, 0), the second is in rows 3 - 5
    assert queue.size == 8 and int(queue.pointer) == 1
    torch.testing.assert_close(queue.rgb_queue[3:6], teacher_embeds[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(queue.depth_queue[3:6], teacher_embeds[1][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(queue.rgb_queue[[6, 7, 0]], teacher_embeds[2][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(queue.depth_queue[[6, 7, 0]], teacher_embeds[2][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(queue.rgb_queue[1:3], teacher_embeds[0][0][1:], atol=1e-6, rtol=0)
    assert torch.equal(queue.id_queue, torch.full((8,), -1))
    # evaluation enqueues nothing
    state = {k: v.clone() for k, v in queue.state_dict().items()}
    seeded(model.eval(), **batches[0])
    assert all(torch.equal(v, state[k]) for k, v in queue.state_dict().items())


# ----------------------------------------------------------------------------------------------- hard negatives
@given(
    scene_ids=st.lists(st.integers(0, 3), min_size=2, max_size=8) | st.integers(2, 8),
    seed=st.integers(0, 2**16),
)
def test_hard_negatives_are_never_the_positive_nor_of_its_scene(scene_ids, seed):
    batch_size = scene_ids if isinstance(scene_ids, int) else len(scene_ids)
    ids = None if isinstance(scene_ids, int) else torch.tensor(scene_ids)
    assume(ids is None or all((ids != ids[i]).any() for i in range(batch_size)))
    generator = torch.Generator().manual_seed(seed)
    logits_per_rgb = 10 * torch.randn(batch_size, batch_size + 3, generator=generator)  # + 3 queue columns
    logits_per_depth = 10 * torch.randn(batch_size, batch_size, generator=generator)
    logits_per_rgb.diagonal().add_(50.0)  # the positive is by far the most similar: still never drawn
    torch.manual_seed(seed)
    negative_depth, negative_rgb = sample_hard_negatives(logits_per_rgb, logits_per_depth, ids)
    rows = torch.arange(batch_size)
    for negatives in (negative_depth, negative_rgb):
        assert negatives.shape == (batch_size,) and negatives.dtype == torch.long
        assert ((negatives >= 0) & (negatives < batch_size)).all() and (negatives != rows).all()
        if ids is not None:
            assert (ids[negatives] != ids).all()


def test_hard_negatives_follow_the_similarities_and_fail_without_candidates():
    # one candidate far more similar than the others is drawn (almost) always
    logits = torch.zeros(4, 4)
    logits[:, 2], logits[2, 3] = 30.0, 30.0
    torch.manual_seed(0)
    negative_depth, _ = sample_hard_negatives(logits, logits)
    assert negative_depth.tolist() == [2, 2, 3, 2]
    with pytest.raises(RuntimeError, match="no possible negative"):
        sample_hard_negatives(torch.zeros(3, 3), torch.zeros(3, 3), torch.tensor([5, 5, 5]))


# ----------------------------------------------------------------------------------------------- masked depth modelling
@given(
    valid=st.lists(st.lists(st.booleans(), min_size=NUM_PATCHES, max_size=NUM_PATCHES), min_size=1, max_size=4),
    ratio=st.sampled_from([0.05, 0.1, 0.15, 0.25, 0.3, 0.4, 0.6, 0.75, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_mdm_mask_covers_valid_patches_only_and_the_rounded_ratio(valid, ratio, seed):
    valid = torch.tensor(valid)
    counts = valid.sum(1)
    assume(all(abs(ratio * int(n) % 1 - 0.5) > 1e-3 for n in counts))  # no rounding ties
    tokens = torch.where(
        valid, torch.randint(0, VOCAB, valid.shape, generator=torch.Generator().manual_seed(seed)), -100
    )
    torch.manual_seed(seed)
    mask = draw_mdm_mask(tokens, ratio)
    assert mask.dtype == torch.bool and mask.shape == valid.shape
    assert not (mask & ~valid).any()
    expected = [max(1, round(ratio * int(n))) if n > 0 else 0 for n in counts]
    assert mask.sum(1).tolist() == expected


def test_model_masks_patches_with_valid_words_and_hides_them_entirely():
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(mdm_mask_ratio=0.3)).eval()
    inputs = pretraining_inputs(3)
    out = seeded(model, **inputs)
    valid_words = inputs["depth_token_ids"] >= 0
    assert not valid_words.all()  # sample 0 has a patch without depth
    assert not (out.mdm_mask & ~valid_words).any()
    assert out.mdm_mask.sum(1).tolist() == [round(0.3 * int(n)) for n in valid_words.sum(1)]
    assert out.mdm_logits.shape == (3, NUM_PATCHES, VOCAB) and torch.isfinite(out.loss_mdm) and out.loss_mdm > 0
    # the depth under the masked patches changes nothing at all (same draws: re-seeded)
    pixels = out.mdm_mask.view(3, 1, 4, 4).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    changed = {
        **inputs,
        "depth_values": torch.where(pixels, 9.0 * torch.rand_like(inputs["depth_values"]), inputs["depth_values"]),
    }
    assert_outputs_close(seeded(model, **changed), out, atol=0, rtol=0)
    # ... while the same change on patches not masked does change the outputs
    other = {**inputs, "depth_values": torch.where(~pixels, 0.9 * inputs["depth_values"], inputs["depth_values"])}
    assert not torch.equal(seeded(model, **other).depth_embeds, out.depth_embeds)
    # MDM off: no mask, no depth words needed, loss_mdm 0
    off = RgbdAlbefForPreTraining(tiny_config(mdm_mask_ratio=0.0)).eval()
    out = seeded(off, **{k: v for k, v in inputs.items() if k != "depth_token_ids"})
    assert out.mdm_mask is None and out.loss_mdm == 0 and torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------------ aligned fusion
def _trunk_states(model: RgbdAlbefModel, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        rgb = model.get_rgb_features(inputs["pixel_values"], return_dict=True).last_hidden_state
        depth = model.get_depth_features(inputs["depth_values"], inputs["depth_mask"], return_dict=True).last_hidden_state
    return rgb, depth, model.depth_key_mask(inputs["depth_values"], inputs["depth_mask"])


def test_aligned_fusion_adds_the_rgb_token_of_the_same_place_and_nothing_for_a_dropped_image():
    torch.manual_seed(0)
    model = RgbdAlbefModel(tiny_config()).eval()
    inputs = make_inputs(3)
    rgb, depth, key_mask = _trunk_states(model, inputs)
    with torch.no_grad():
        aligned = model.aligned_rgb(rgb, depth.shape[1])
        torch.testing.assert_close(aligned, model.aligned_rgb_projection(rgb))
        fused = model.fuse(depth, key_mask, rgb).last_hidden_state
        # the same as plain cross-attention fusion of the depth tokens with the RGB tokens added
        plain = RgbdAlbefModel(tiny_config(aligned_fusion=False)).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(plain.fuse(depth + aligned, key_mask, rgb).last_hidden_state, fused)
        # a dropped image is a missing image: the missing-RGB token as the only key and nothing added
        dropped = model.fuse(depth, key_mask, rgb, torch.tensor([True, False, True])).last_hidden_state
        missing = model.fuse(depth, key_mask, None).last_hidden_state
        torch.testing.assert_close(dropped[[0, 2]], missing[[0, 2]])
        torch.testing.assert_close(dropped[1], fused[1])
    assert plain.aligned_rgb_projection is None
    assert set(model.state_dict()) - set(plain.state_dict()) == {"aligned_rgb_projection.weight", "aligned_rgb_projection.bias"}


@given(value=st.floats(-2.0, 2.0), cls_value=st.floats(-2.0, 2.0))
def test_aligned_fusion_resizes_an_rgb_grid_of_another_shape(value, cls_value):
    torch.manual_seed(0)
    model = RgbdAlbefModel(tiny_config(rgb_config={"patch_size": 4})).eval()  # RGB grid 8x8, depth grid 4x4
    with torch.no_grad():
        model.aligned_rgb_projection.weight.copy_(torch.eye(HIDDEN))
        model.aligned_rgb_projection.bias.zero_()
        states = torch.full((2, 1 + 64, HIDDEN), value)
        states[:, 0] = cls_value
        aligned = model.aligned_rgb(states, TOKENS)
    assert aligned.shape == (2, TOKENS, HIDDEN)
    torch.testing.assert_close(aligned[:, 0], torch.full((2, HIDDEN), cls_value))
    torch.testing.assert_close(aligned[:, 1:], torch.full((2, NUM_PATCHES, HIDDEN), value))  # constants stay constant
    out = run(model, **make_inputs(2))
    assert out.last_hidden_state.shape == (2, TOKENS, HIDDEN) and torch.isfinite(out.last_hidden_state).all()
    with pytest.raises(ValueError, match="aligned_fusion"):
        model.aligned_rgb(torch.zeros(2, 1 + 36, HIDDEN), TOKENS)


# ----------------------------------------------------------------------------------------------- downstream heads
def test_classification_with_one_modality_missing_in_eval():
    torch.manual_seed(0)
    model = RgbdAlbefForImageClassification(tiny_config()).eval()
    inputs, labels = make_inputs(3), torch.tensor([0, 1, 3])
    full = run(model, **inputs, labels=labels)
    rgb_only = run(model, pixel_values=inputs["pixel_values"], labels=labels)
    depth_only = run(model, depth_values=inputs["depth_values"], depth_mask=inputs["depth_mask"], labels=labels)
    for out in (rgb_only, depth_only):
        assert out.logits.shape == (3, 4) and torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
        assert not torch.allclose(out.logits, full.logits)
    assert rgb_only.depth_model_output is None and depth_only.rgb_model_output is None
    # missing depth is a depth map without any valid pixel
    no_depth = run(model, **{**inputs, "depth_mask": torch.zeros_like(inputs["depth_mask"])}, labels=labels)
    torch.testing.assert_close(rgb_only.logits, no_depth.logits, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="pixel_values.*depth_values"):
        model()


def test_depth_completion_keeps_valid_pixels_and_fills_holes_within_the_range():
    torch.manual_seed(0)
    config = tiny_config(min_depth=0.2, max_depth=5.0)
    model = RgbdAlbefForDepthCompletion(config).eval()
    inputs = make_inputs(3)
    metres = inputs["depth_values"].clone()
    metres[1, 0, 5, 5] = float("nan")  # a NaN in metres is a hole too, even where depth_mask says valid
    out = run(model, **inputs, depth_metres=metres)
    predicted, holes = out.predicted_depth, out.hole_mask
    valid = inputs["depth_mask"][:, 0] & torch.isfinite(metres[:, 0])
    assert predicted.shape == holes.shape == (3, SIZE, SIZE) and torch.equal(holes, ~valid)
    assert torch.equal(predicted[valid], metres[:, 0][valid])  # bit-identical
    filled = predicted[holes]
    assert torch.isfinite(filled).all() and (filled >= 0.2).all() and (filled <= 5.0).all()
    assert out.predicted_patch_depth.shape == (3, NUM_PATCHES)
    # a hole pixel takes its patch's depth
    patch = out.predicted_patch_depth.view(3, 4, 4).repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    assert torch.equal(filled, patch[holes])
    # without depth every pixel is estimated; with labels the loss is the error over the known hole pixels
    estimated = run(model, pixel_values=inputs["pixel_values"])
    assert (
        estimated.hole_mask.all() and ((estimated.predicted_depth >= 0.2) & (estimated.predicted_depth <= 5.0)).all()
    )
    labels = torch.full((3, SIZE, SIZE), 1.0)
    labels[0] = 0  # unknown
    with_loss = run(model, **inputs, depth_metres=metres, labels=labels)
    known = holes & (labels > 0)
    torch.testing.assert_close(with_loss.loss, (predicted[known] - 1.0).abs().mean())
    with pytest.raises(ValueError, match="depth_metres"):
        model(**inputs)
    with pytest.raises(ValueError, match="depth_metres"):
        model(**inputs, depth_metres=metres[:2])
    with pytest.raises(ValueError, match="depth_metres.*floating-point"):
        model(**inputs, depth_metres=metres.numpy())
    with pytest.raises(ValueError, match="labels.*floating-point"):
        model(**inputs, depth_metres=metres, labels=labels.tolist())


def test_matching_scores_and_cosine_similarities():
    torch.manual_seed(0)
    model = RgbdAlbefForRgbdMatching(tiny_config()).eval()
    inputs = make_inputs(3)
    pairs = run(model, **inputs)
    assert pairs.itm_score.shape == (3, 2) and pairs.last_hidden_state.shape == (3, TOKENS, HIDDEN)
    cosine = run(model, pixel_values=inputs["pixel_values"], depth_values=inputs["depth_values"][:2],
                 depth_mask=inputs["depth_mask"][:2], use_itm_head=False)  # fmt: skip
    assert cosine.itm_score.shape == (3, 2) and cosine.last_hidden_state is None
    torch.testing.assert_close(cosine.itm_score, cosine.rgb_embeds @ cosine.depth_embeds.T, atol=0, rtol=0)
    assert (cosine.itm_score.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(cosine.rgb_embeds.norm(dim=-1), torch.ones(3))
    # the same embeddings as the fused pass computes, and as the ITC of the trunk
    torch.testing.assert_close(cosine.rgb_embeds, pairs.rgb_embeds, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cosine.depth_embeds, pairs.depth_embeds[:2], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="use_itm_head"):
        model(**inputs, use_itm_head="yes")
    with pytest.raises(ValueError, match="same number of pairs"):
        model(pixel_values=inputs["pixel_values"], depth_values=inputs["depth_values"][:2])
    with pytest.raises(ValueError, match="depth_values"):
        model(pixel_values=inputs["pixel_values"])


# ----------------------------------------------------------------------------------------------- bad inputs
def test_pretraining_bad_inputs_raise_errors_naming_the_argument():
    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config()).eval()
    inputs = pretraining_inputs(2)
    coarse_config = tiny_config(depth_config={"patch_size": 16})
    coarse = depth_token_ids(inputs["depth_values"], inputs["depth_mask"], VOCAB, 16, 0.1, 10.0)
    assert coarse_config.depth_config.num_patches == coarse.shape[1] == 4
    cases = [
        ({k: v for k, v in inputs.items() if k != "depth_token_ids"}, "depth_token_ids.*mdm_mask_ratio"),
        ({k: v[:1] for k, v in inputs.items()}, "at least 2 pairs"),
        ({**inputs, "pixel_values": torch.randn(3, 3, SIZE, SIZE)}, "pixel_values.*depth_values"),
        ({**inputs, "scene_ids": torch.tensor([0, 1, 2])}, "scene_ids"),
        ({**inputs, "scene_ids": torch.tensor([0.0, 1.0])}, "scene_ids"),
        ({**inputs, "depth_token_ids": coarse}, "depth_token_ids.*depth_patch_size"),
        ({**inputs, "depth_token_ids": inputs["depth_token_ids"].float()}, "depth_token_ids"),
        ({k: v for k, v in inputs.items() if k != "pixel_values"}, "pixel_values"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**kwargs)
    too_large = inputs["depth_token_ids"].clone()
    too_large[1, 3] = VOCAB
    with pytest.raises(RuntimeError, match="depth_token_ids"):  # torch._assert_async: no host sync on accelerators
        model(**{**inputs, "depth_token_ids": too_large})


def test_check_processor_names_the_setting_that_differs():
    config = tiny_config(min_depth=0.2, max_depth=8.0)
    settings = dict(depth_vocab_size=VOCAB, depth_patch_size=PATCH, min_depth=0.2, max_depth=8.0)
    for processor in (
        RgbdDepthProcessor(**settings),
        RgbdProcessor(depth_image_processor=RgbdDepthProcessor(**settings)),
    ):
        config.check_processor(processor)  # matching: accepted
    changes = {"depth_vocab_size": 32, "depth_patch_size": 16, "min_depth": 0.1, "max_depth": 10.0}
    for name, value in changes.items():
        depth_processor = RgbdDepthProcessor(**{**settings, name: value})
        for processor in (depth_processor, RgbdProcessor(depth_image_processor=depth_processor)):
            with pytest.raises(ValueError, match=name):
                config.check_processor(processor)
    with pytest.raises(ValueError, match="depth_vocab_size"):  # a processor that makes no depth words
        config.check_processor(RgbdDepthProcessor(depth_patch_size=PATCH, min_depth=0.2, max_depth=8.0))


@pytest.mark.parametrize(
    "overrides, field, error",
    [
        (
            {"fusion_encoder_config": {"hidden_size": 48, "num_attention_heads": 2}},
            "fusion_encoder_config.hidden_size",
            CLASS_ERROR,
        ),
        ({"depth_vocab_size": 1}, "depth_vocab_size", CLASS_ERROR),
        ({"depth_vocab_size": "16"}, "depth_vocab_size", FIELD_ERROR),
        ({"mdm_mask_ratio": 1.0}, "mdm_mask_ratio", CLASS_ERROR),
        ({"mdm_mask_ratio": -0.1}, "mdm_mask_ratio", CLASS_ERROR),
        ({"queue_size": -1}, "queue_size", CLASS_ERROR),
        ({"aligned_fusion": 1}, "aligned_fusion", FIELD_ERROR),
        ({"queue_size": 2.0}, "queue_size", FIELD_ERROR),
        ({"momentum": 1.5}, "momentum", CLASS_ERROR),
        ({"distillation_alpha": -0.5}, "distillation_alpha", CLASS_ERROR),
        ({"min_depth": 5.0, "max_depth": 1.0}, "min_depth", CLASS_ERROR),
        ({"projection_dim": 0}, "projection_dim", CLASS_ERROR),
        ({"modalities": "depth", "auxiliary_loss_weight": 0.5}, "auxiliary_loss_weight", CLASS_ERROR),
    ],
)
def test_config_validation_names_the_field(overrides, field, error):
    with pytest.raises(error, match=field):
        tiny_config(**overrides)


def test_config_fusion_alias_defaults_and_round_trip():
    alias = RgbdAlbefConfig(fusion_config={"num_hidden_layers": 3})
    assert alias.fusion_encoder_config.num_hidden_layers == 3 and alias.fusion_encoder_config.modality == "depth"
    assert "fusion_config" not in alias.to_dict()  # transformers reads config.fusion_config itself
    with pytest.raises((ValueError, CLASS_ERROR), match="fusion_encoder_config.*fusion_config"):
        RgbdAlbefConfig(fusion_config={}, fusion_encoder_config={})
    default = RgbdAlbefConfig(depth_config={"num_hidden_layers": 4})
    assert default.fusion_encoder_config.num_hidden_layers == 2  # half the depth tower's layers
    tiny = tiny_config(queue_size=4)
    reloaded = RgbdAlbefConfig.from_dict(tiny.to_dict())
    assert reloaded.to_dict() == tiny.to_dict() and reloaded.fusion_encoder_config.num_hidden_layers == FUSION_LAYERS
    assert tiny.depth_config.num_patches == NUM_PATCHES and tiny.depth_vocab_size == VOCAB
    for model_class in (RgbdAlbefForPreTraining, RgbdAlbefForRgbdMatching, RgbdAlbefForDepthCompletion):
        with pytest.raises(ValueError, match="modalities"):
            model_class(tiny_config(modalities="rgb"))


# ----------------------------------------------------------------------------------------------- pretrained ViT
def test_from_vision_pretrained_loads_both_towers_and_copies_them_into_the_teacher(tmp_path):
    source = _save_vision_checkpoint(tmp_path, "vit")
    model = RgbdAlbefForPreTraining.from_vision_pretrained(str(tmp_path), projection_dim=8, depth_vocab_size=VOCAB)
    trunk = model.rgbd_albef
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = source(pixel_values=pixels).last_hidden_state  # after ViT's final layernorm
        mine = trunk.rgb_model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-5)
    source_state = source.state_dict()
    source_patch = source_state["embeddings.patch_embeddings.projection.weight"]
    depth_patch = trunk.depth_model.embeddings.patch_embeddings.projection.weight
    torch.testing.assert_close(depth_patch, source_patch.mean(dim=1, keepdim=True), atol=0, rtol=0)
    for tower in (trunk.rgb_model, trunk.depth_model):
        query = tower.encoder.layers[1].attention.q_proj.weight
        torch.testing.assert_close(query, source_state["layers.1.attention.q_proj.weight"], atol=0, rtol=0)
    assert model.config.fusion_encoder_config.num_hidden_layers == LAYERS // 2
    assert model.config.projection_dim == 8 and model.config.depth_vocab_size == VOCAB
    # the teacher starts as an exact copy of the loaded student, frozen
    _assert_same_weights(model.teacher.model, trunk)
    _assert_same_weights(model.teacher.mdm_head, model.mdm_head)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    out = seeded(model, **pretraining_inputs(2))
    assert torch.isfinite(out.loss)


# ----------------------------------------------------------------------------------------------- Trainer
class _PairDataset(torch.utils.data.Dataset):
    """Pretraining samples as the processor makes them (dicts of per-sample tensors, depth words included)."""

    def __init__(self, count: int) -> None:
        self.inputs = pretraining_inputs(count)

    def __len__(self) -> int:
        return self.inputs["pixel_values"].shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.inputs.items()}


def test_momentum_callback_updates_the_teacher_once_per_optimizer_step(tmp_path, monkeypatch):
    from transformers import Trainer, TrainingArguments

    from hf_rgbd.training import MomentumUpdateCallback

    torch.manual_seed(0)
    model = RgbdAlbefForPreTraining(tiny_config(momentum=0.5, queue_size=4))
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    updates, forwards = [], []
    original_update = model.momentum_update
    monkeypatch.setattr(model, "momentum_update", lambda: (updates.append(1), original_update())[1])
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_PairDataset(8), callbacks=[MomentumUpdateCallback()])
    trainer.train()
    assert trainer.state.global_step == 2 and len(forwards) == 4  # 4 micro-batches, 2 optimizer steps
    assert len(updates) == 2
    changed = [k for k, v in model.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert any(k.startswith("model.rgb_model.") for k in changed) and any(k.startswith("mdm_head.") for k in changed)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised and not optimised & {id(p) for p in model.teacher.parameters()}
    assert {id(p) for p in model.rgbd_albef.parameters()} <= optimised


def test_momentum_callback_leaves_models_without_a_teacher_alone():
    from transformers import TrainerControl, TrainerState

    from hf_rgbd.training import MomentumUpdateCallback

    callback, calls = MomentumUpdateCallback(), []

    class Wrapper(torch.nn.Module):  # as DDP: the trained model under `.module`
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Linear(2, 2)
    inner.momentum_update = lambda: calls.append(1)
    callback.on_step_end(None, TrainerState(), TrainerControl(), model=Wrapper(inner))
    callback.on_step_end(None, TrainerState(), TrainerControl(), model=torch.nn.Linear(2, 2))  # no momentum_update
    callback.on_step_end(None, TrainerState(), TrainerControl())
    assert calls == [1]
