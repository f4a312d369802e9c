"""Property tests over what users pass in: model inputs of every family (dtypes, shapes, NaN / inf placement, masks,
labels, batch sizes, train / eval mode) and attack arguments (budgets, steps, alpha, seeds, losses, labels with
-100, non-finite inputs). Every call returns a result satisfying the documented invariants or raises a ValueError /
TypeError naming the argument, never an error from inside torch. Tiny models are built once per module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_attacks import make_batch, make_processor

from hf_rgbd import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdVitConfig,
    RgbdVitModel,
)
from hf_rgbd.attacks import APGD, BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM

torch.set_num_threads(1)

NUM_LABELS = 4
TINY_CNN = {
    "embedding_size": 8,
    "hidden_sizes": [8, 16],
    "depths": [1, 1],
    "num_labels": NUM_LABELS,
    "se_reduction": 4,
}
INPUT_NAMES = ("pixel_values", "depth_values", "depth_mask", "labels")


def _build(factory):
    torch.manual_seed(0)
    return factory()


# name -> (model, spatial size)
MODELS = {
    "cnn-early": (_build(lambda: RgbdCnnForImageClassification(RgbdCnnConfig(**TINY_CNN))), 16),
    "cnn-feature": (
        _build(lambda: RgbdCnnForImageClassification(RgbdCnnConfig(**TINY_CNN, fusion_type="feature"))),
        16,
    ),
    "cnn-multi-stage": (
        _build(lambda: RgbdCnnForImageClassification(RgbdCnnConfig(**TINY_CNN, fusion_type="multi_stage"))),
        16,
    ),
    "clip-classifier": (_build(lambda: RgbdClipForImageClassification(RgbdClipConfig.tiny(num_labels=4))), 32),
    "clip-conv-stem": (
        _build(
            lambda: RgbdClipForImageClassification(
                RgbdClipConfig.tiny(
                    num_labels=4,
                    rgb_config={"patch_embedding_type": "conv_stem"},
                    depth_config={"patch_embedding_type": "conv_stem"},
                )
            )
        ),
        32,
    ),
    "clip-model": (_build(lambda: RgbdClipModel(RgbdClipConfig.tiny())), 32),
    "vit-depth-tower": (_build(lambda: RgbdVitModel(RgbdVitConfig.tiny("depth"))), 32),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _named_error(error: BaseException, names: tuple[str, ...] = INPUT_NAMES) -> bool:
    return isinstance(error, (ValueError, TypeError)) and any(f"`{name}" in str(error) for name in names)


def _has_labels(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith("ForImageClassification")


def _output_tensors(outputs) -> list[torch.Tensor]:
    keys = ("logits", "logits_per_rgb", "rgb_embeds", "depth_embeds", "last_hidden_state", "pooler_output")
    return [outputs[key] for key in keys if outputs.get(key) is not None]


@st.composite
def model_calls(draw):
    name = draw(st.sampled_from(sorted(MODELS)))
    model, size = MODELS[name]
    fault = draw(st.sampled_from(["none"] * 6 + ["empty-batch", "wrong-size-mask", "labels-too-large",
                                                 "labels-negative", "labels-float"]))  # fmt: skip
    batch_size = 0 if fault == "empty-batch" else draw(st.sampled_from([1, 3]))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    depth_values = 0.5 + torch.rand(batch_size, 1, size, size, generator=generator)
    mask = torch.rand(batch_size, 1, size, size, generator=generator) > 0.2
    non_finite = draw(st.sampled_from(["none", "nan-at-holes", "inf-at-valid", "nan-everywhere", "-inf-at-valid"]))
    corrupt = torch.rand(batch_size, 1, size, size, generator=generator) > 0.7
    if non_finite == "nan-at-holes":
        depth_values = torch.where(mask, depth_values, torch.nan)
    elif non_finite == "inf-at-valid":
        depth_values = torch.where(mask & corrupt, torch.inf, depth_values)
    elif non_finite == "-inf-at-valid":
        depth_values = torch.where(mask & corrupt, -torch.inf, depth_values)
    elif non_finite == "nan-everywhere":
        depth_values = torch.full_like(depth_values, torch.nan)
    mask_kind = "wrong-size" if fault == "wrong-size-mask" else draw(st.sampled_from(["given", "none", "float"]))
    inputs = {"pixel_values": pixel_values.to(dtype), "depth_values": depth_values.to(dtype)}
    if mask_kind == "given":
        inputs["depth_mask"] = mask
    elif mask_kind == "wrong-size":
        inputs["depth_mask"] = mask[..., : size // 2, : size // 2]
    elif mask_kind == "float":
        inputs["depth_mask"] = mask.float()
    label_kind = "none"
    if _has_labels(model):
        label_kind = draw(
            st.sampled_from(["none", "valid", "some-ignored", "all-ignored", "too-large", "negative", "float"])
        )
        labels = torch.randint(0, NUM_LABELS, (batch_size,), generator=generator)
        if label_kind == "some-ignored" and batch_size:
            labels[0] = -100
        elif label_kind == "all-ignored":
            labels[:] = -100
        elif label_kind == "too-large" and batch_size:
            labels[-1] = NUM_LABELS
        elif label_kind == "negative" and batch_size:
            labels[0] = -3
        elif label_kind == "float":
            labels = labels.float()
        if label_kind != "none":
            inputs["labels"] = labels
    missing = draw(st.sampled_from(["none"] * 4 + ["pixel_values", "depth_values"]))  # a modality not given
    if missing == "depth_values":
        inputs.pop("depth_mask", None)
    inputs.pop(missing, None)
    training = draw(st.booleans())
    case = {"batch_size": batch_size, "mask": mask_kind, "labels": label_kind, "training": training}
    return name, inputs, {**case, "missing": missing}


@settings(max_examples=3 * settings().max_examples)  # cheap examples: three times the profile's count
@given(model_calls())
def test_model_inputs_give_a_result_or_a_named_error(call):
    name, inputs, case = call
    model, _ = MODELS[name]
    model.train(case["training"])
    bad_labels = case["labels"] == "float" or (case["batch_size"] > 0 and case["labels"] in ("too-large", "negative"))
    # the base dual encoder needs both inputs, the depth tower its depth; the others predict from either modality
    required = {"clip-model": ("pixel_values", "depth_values"), "vit-depth-tower": ("depth_values",)}
    missing_required = case["missing"] in required.get(name, ())
    wrong_mask = case["mask"] == "wrong-size" and case["missing"] != "depth_values"
    must_fail = case["batch_size"] == 0 or wrong_mask or bad_labels or missing_required
    try:
        outputs = model(**inputs)
    except RuntimeError as error:
        # in training, out-of-range class indices are caught by torch._assert_async (no host sync), named
        assert case["training"] and bad_labels and "`labels`" in str(error), repr(error)
        event("labels rejected in training")
        return
    except Exception as error:  # noqa: BLE001 - the property: only named ValueError / TypeError
        assert _named_error(error), repr(error)
        assert must_fail, f"unexpected error for {case}: {error!r}"
        event("named error")
        return
    finally:
        model.eval()
    assert not must_fail, f"{case} should have raised"
    event(f"result ({name})")
    for tensor in _output_tensors(outputs):
        assert tensor.shape[0] == case["batch_size"]
        assert torch.isfinite(tensor).all(), f"non-finite output for {case}"
    if "labels" in inputs:
        assert torch.isfinite(outputs.loss)
        if case["labels"] == "all-ignored":
            assert outputs.loss.item() == 0.0


@st.composite
def hole_placements(draw):
    name = draw(st.sampled_from(sorted(MODELS)))
    _, size = MODELS[name]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    garbage = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    with_mask = draw(st.booleans())
    return name, size, generator, garbage, with_mask


@given(hole_placements())
def test_non_finite_depth_is_a_hole_in_every_family(case):
    """NaN / inf depth gives exactly the output of a hole (mask False, value 0), mask given or not."""
    name, size, generator, garbage, with_mask = case
    model, _ = MODELS[name]
    model.eval()
    depth = 0.5 + torch.rand(2, 1, size, size, generator=generator)
    corrupt = torch.rand(2, 1, size, size, generator=generator) > 0.8
    mask = torch.rand(2, 1, size, size, generator=generator) > 0.1
    pixel_values = torch.randn(2, 3, size, size, generator=generator)
    given_mask = {"depth_mask": mask} if with_mask else {}
    valid = mask if with_mask else torch.ones_like(mask)
    with torch.no_grad():
        corrupted = model(pixel_values=pixel_values, depth_values=torch.where(corrupt, garbage, depth), **given_mask)
        holes = model(
            pixel_values=pixel_values,
            depth_values=torch.where(corrupt, 0.0, depth),
            depth_mask=valid & ~corrupt,
        )
    for actual, expected in zip(_output_tensors(corrupted), _output_tensors(holes), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_all_ignored_labels_give_zero_loss_and_zero_gradients():
    for name in ("cnn-early", "clip-classifier"):
        model, size = MODELS[name]
        model.train()
        try:
            inputs = {"pixel_values": torch.randn(2, 3, size, size), "depth_values": torch.rand(2, 1, size, size)}
            loss = model(**inputs, labels=torch.tensor([-100, -100])).loss
            loss.backward()
            assert loss.item() == 0.0
            assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters())
        finally:
            model.zero_grad(set_to_none=True)
            model.eval()


def test_batch_of_one_with_a_1x1_last_map_in_training_is_a_named_error():
    model, _ = MODELS["cnn-early"]
    inputs = {"pixel_values": torch.randn(1, 3, 4, 4), "depth_values": torch.rand(1, 1, 4, 4)}
    model.train()
    try:
        with pytest.raises(ValueError, match="pixel_values"):
            model(**inputs)
    finally:
        model.eval()
    assert model(**inputs).logits.shape == (1, NUM_LABELS)  # eval mode: running statistics, fine


def test_dtypes_behave_the_same_in_every_family():
    for name, (model, size) in MODELS.items():
        generator = torch.Generator().manual_seed(0)
        inputs = {"pixel_values": torch.randn(2, 3, size, size, generator=generator)}
        inputs["depth_values"] = 0.5 + torch.rand(2, 1, size, size, generator=generator)
        with torch.no_grad():
            reference = _output_tensors(model.eval()(**inputs))
            for dtype, tolerance in ((torch.float64, 1e-5), (torch.float16, 5e-2), (torch.bfloat16, 2e-1)):
                outputs = model(**{key: value.to(dtype) for key, value in inputs.items()})
                for actual, expected in zip(_output_tensors(outputs), reference, strict=True):
                    assert actual.dtype == torch.float32, (name, dtype)
                    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)


# ------------------------------------------------------------------------------------------------ attacks
ATTACK_CLASSES = {"FGSM": FGSM, "RFGSM": RFGSM, "BIM": BIM, "PGD": PGD, "PGDL2": PGDL2, "MIFGSM": MIFGSM, "APGD": APGD}
ATTACK_MODEL = MODELS["cnn-early"][0]
PROCESSOR = make_processor()  # log depth in [0.5, 6] m, RGB mean / std of the attack tests


def _attack_batch(seed: int, batch_size: int = 3) -> dict:
    return dict(make_batch(PROCESSOR, batch_size, seed)[0])


# One fault per call (or none): (argument it concerns, the bad value or what is done to the batch).
SETTING_FAULTS = {
    "budget-nan": ("budget", math.nan),
    "budget-inf": ("budget", math.inf),
    "budget-negative": ("budget", -0.01),
    "budget-string": ("budget", "8/255"),
    "budget-bool": ("budget", True),
    "budget-grey-levels": ("budget", 8.0),  # meant 8 / 255: an error for L-inf attacks, a valid L2 budget
    "alpha-nan": ("alpha", math.nan),
    "alpha-negative": ("alpha", -0.01),
    "alpha-grey-levels": ("alpha", 2.0),
    "steps-zero": ("steps", 0),
    "steps-negative": ("steps", -1),
    "steps-float": ("steps", 1.5),
    "steps-bool": ("steps", True),
    "steps-string": ("steps", "2"),
    "seed-negative": ("seed", -1),
    "seed-too-large": ("seed", 2**64),
    "seed-float": ("seed", 1.0),
    "seed-string": ("seed", "0"),
    "loss-unknown": ("loss", "hinge"),
    "decay-nan": ("decay", math.nan),
    "decay-negative": ("decay", -1.0),
    "decay-inf": ("decay", math.inf),
    "decay-string": ("decay", "1"),
    "rho-nan": ("rho", math.nan),
    "rho-zero": ("rho", 0.0),
    "rho-large": ("rho", 2.0),
}
CALL_FAULTS = ("labels-too-large", "labels-negative", "labels-float", "pixel-nan", "pixel-inf")
DATA_CASES = ("clean", "nan-depth-at-holes", "inf-depth-at-valid", "all-ignored")
TAKES = {
    "alpha": ("RFGSM", "BIM", "PGD", "PGDL2", "MIFGSM"),
    "steps": ("BIM", "PGD", "PGDL2", "MIFGSM", "APGD"),
    "decay": ("MIFGSM",),
    "rho": ("APGD",),
}


def _expected_setting_error(name: str, argument: str, value, budget: dict) -> bool:
    """Whether `name` must refuse `argument=value` (the faults above that the attack takes)."""
    if value == 8.0 or value == 2.0:  # grey levels instead of intensity: an L-inf RGB mistake only
        return name != "PGDL2" and "pixel_values" in budget
    if argument == "steps" and value == 0:  # BIM's steps=0 is Kurakin's rule (with an RGB budget); MIFGSM's
        # min_steps is 0 (pinned by test_step_counts_are_checked_once)
        return name not in ("BIM", "MIFGSM") or (name == "BIM" and "pixel_values" not in budget)
    return True


@st.composite
def attack_calls(draw):
    name = draw(st.sampled_from(sorted(ATTACK_CLASSES)))
    modalities = draw(st.sampled_from([("pixel_values",), ("depth_values",), ("pixel_values", "depth_values")]))
    budget = {m: (4 / 255 if m == "pixel_values" else 0.05) for m in modalities}
    if name == "PGDL2":
        budget = {m: 0.5 for m in modalities}
    numpy_budget = draw(st.booleans())
    if numpy_budget:
        budget = {m: np.float32(value) for m, value in budget.items()}
    kwargs: dict = {"budget": budget, "processor": PROCESSOR, "seed": draw(st.sampled_from([0, 7, 2**63]))}
    if name in TAKES["steps"]:
        kwargs["steps"] = draw(st.sampled_from([1, 2]))
    kwargs["loss"] = draw(st.sampled_from(["ce", "margin", "dlr"]))
    fault = draw(st.sampled_from(["none"] * 12 + sorted(SETTING_FAULTS) + list(CALL_FAULTS)))
    expected_error = None
    if fault in SETTING_FAULTS:
        argument, value = SETTING_FAULTS[fault]
        if argument in TAKES and name not in TAKES[argument]:
            fault = "none"
        else:
            if argument in ("budget", "alpha"):
                target = draw(st.sampled_from(modalities))
                kwargs[argument] = {**budget, target: value} if argument == "budget" else {target: value}
                if value in (8.0, 2.0) and target != "pixel_values":
                    kwargs[argument][target] = value = 0.01  # grey levels are an RGB mistake only: a valid call
            else:
                kwargs[argument] = value
            if value != 0.01 and _expected_setting_error(name, argument, value, kwargs["budget"]):
                expected_error = argument
    labels = torch.as_tensor(draw(st.lists(st.sampled_from([0, 1, 2, 3, -100]), min_size=3, max_size=3)))
    data_case = draw(st.sampled_from(DATA_CASES))
    batch = _attack_batch(draw(st.integers(0, 1000)))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    batch = {key: value.to(dtype) if value.is_floating_point() else value for key, value in batch.items()}
    if data_case == "nan-depth-at-holes":
        batch["depth_values"] = torch.where(batch["depth_mask"], batch["depth_values"], math.nan)
    elif data_case == "inf-depth-at-valid":
        batch["depth_values"] = batch["depth_values"].clone()
        batch["depth_values"][0, 0, 5, 5] = math.inf
        batch["depth_mask"] = batch["depth_mask"].clone()
        batch["depth_mask"][0, 0, 5, 5] = True
    elif data_case == "all-ignored":
        labels[:] = -100
    call_error = None
    if fault == "labels-too-large":
        labels[1], call_error = NUM_LABELS, "labels"
    elif fault == "labels-negative":
        labels[1], call_error = -5, "labels"
    elif fault == "labels-float":
        labels, call_error = labels.float(), "labels"
    elif fault in ("pixel-nan", "pixel-inf"):
        batch["pixel_values"] = batch["pixel_values"].clone()
        batch["pixel_values"][1, 0, 3, 3] = math.nan if fault == "pixel-nan" else math.inf
        call_error = "pixel_values"
    return name, kwargs, expected_error, batch, labels, call_error


def _physical(batch):
    image = PROCESSOR.image_processor
    mean = torch.tensor(image.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image.image_std).view(1, 3, 1, 1)
    mask = batch["depth_mask"] & torch.isfinite(batch["depth_values"])
    depth = PROCESSOR.depth_image_processor.to_metres(torch.where(mask, batch["depth_values"], 0.0), mask)
    return {"pixel_values": batch["pixel_values"] * std + mean, "depth_values": depth}, mask


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN equal to NaN."""
    return bool(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0), b.nan_to_num(0)))


@settings(max_examples=3 * settings().max_examples)  # cheap examples: three times the profile's count
@given(attack_calls())
def test_attack_arguments_give_a_result_or_a_named_error(call):
    name, kwargs, expected_error, batch, labels, call_error = call
    try:
        attack = ATTACK_CLASSES[name](ATTACK_MODEL, **kwargs)
    except Exception as error:  # noqa: BLE001 - the property: only named ValueError / TypeError
        assert expected_error is not None, f"{name}({kwargs}) raised {error!r}"
        assert _named_error(error, (expected_error,)), repr(error)
        event("construction error")
        return
    assert expected_error is None, f"{name}({kwargs}) should have refused `{expected_error}`"
    try:
        result = attack.perturb(batch, labels)
    except Exception as error:  # noqa: BLE001
        assert call_error is not None and _named_error(error, (call_error,)), repr(error)
        event("perturb error")
        return
    assert call_error is None, f"should have raised for `{call_error}`"
    event(f"result ({name})")
    assert all(result.inputs[key].dtype == batch[key].dtype for key in batch)
    # budgets on the returned batch; half-precision batches are attacked in float32 and rounded on return, so
    # their budgets are checked on the reported norms
    exact = batch["pixel_values"].dtype in (torch.float32, torch.float64)
    clean, valid = _physical(
        {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}
    )
    adversarial, _ = _physical({**result.inputs, "depth_mask": batch["depth_mask"]})
    ignored = labels == -100
    assert torch.equal(result.ignored, ignored) and not result.success[ignored].any()
    for key in ("pixel_values", "depth_values"):
        before, after = batch[key], result.inputs[key]
        assert _same(after[ignored], before[ignored]), "ignored samples must come back exactly as given"
        if key == "depth_values":
            assert _same(after.masked_select(~valid), before.masked_select(~valid)), "holes must not change"
        if key not in attack.budget:
            assert _same(after, before)
            continue
        eps = attack.budget[key]
        delta = (adversarial[key].double() - clean[key]).flatten(1)
        assert torch.isfinite(delta).all()
        norm = delta.norm(dim=1) if name == "PGDL2" else delta.abs().amax(dim=1)
        if not exact:
            norm = result.l2[key] if name == "PGDL2" else result.linf[key]
        assert (norm <= eps * (1 + 1e-4) + 1e-4).all(), (key, norm, eps)
        assert (result.linf[key][ignored] == 0).all()
