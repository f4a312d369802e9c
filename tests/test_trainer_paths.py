"""The documented user paths, run to the end as a user would: transformers' image-classification tutorial with our
models and processor swapped in (`Trainer(processing_class=processor)`, `with_transform`, the tutorial's
`compute_metrics`), the label-free `RgbdClipModel` (`eval_loss`), `AdversarialTrainer` on its default path, and the
processor fed the columns of `make_synthetic_rgbd()` as `datasets` returns them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoProcessor, DefaultDataCollator, Trainer, TrainingArguments
from transformers.trainer_utils import align_special_tokens

from hf_rgbd import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
)
from hf_rgbd.data import make_synthetic_rgbd, split_to_tensors
from hf_rgbd.modeling.modeling_rgbd_clip import RgbdClipImageClassifierOutput
from hf_rgbd.modeling.modeling_rgbd_cnn import RgbdCnnImageClassifierOutput
from hf_rgbd.training import AdversarialTrainer

SIZE = 32  # RgbdClipConfig.tiny() towers take 32x32
NUM_LABELS = 8


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_rgbd(num_train=8, num_validation=4, num_test=4, image_size=SIZE, seed=0)


def make_processor(representation: str = "metric") -> RgbdProcessor:
    return RgbdProcessor(RgbdImageProcessor(size=SIZE), RgbdDepthProcessor(representation=representation))


def tiny_cnn() -> RgbdCnnForImageClassification:
    torch.manual_seed(0)
    config = RgbdCnnConfig(
        fusion_type="multi_stage", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=NUM_LABELS
    )
    return RgbdCnnForImageClassification(config)


def tiny_clip_classifier() -> RgbdClipForImageClassification:
    torch.manual_seed(0)
    return RgbdClipForImageClassification(RgbdClipConfig.tiny(num_labels=NUM_LABELS, auxiliary_loss_weight=1.0))


def compute_metrics(eval_pred):
    # transformers' image-classification tutorial, with numpy's mean for `evaluate.load("accuracy")`
    predictions, labels = eval_pred
    predictions = np.argmax(predictions, axis=1)
    return {"accuracy": float(np.mean(predictions == labels))}


def tutorial_args(output_dir, **overrides) -> TrainingArguments:
    args = dict(
        output_dir=str(output_dir),
        remove_unused_columns=False,  # with_transform needs the raw columns
        eval_strategy="epoch",
        save_strategy="epoch",
        learning_rate=5e-3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=3,  # 4 samples: a last batch of one
        num_train_epochs=2,
        logging_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**args, **overrides})


def with_processor(split, processor: RgbdProcessor, labels: bool = True):
    """The tutorial's `transforms`, with the RGB-D processor: the columns as `datasets` gives them."""

    def transforms(examples):
        batch = processor(images=examples["image"], depths=examples["depth"], intrinsics=examples["intrinsics"])
        return {**batch, "label": examples["label"]} if labels else dict(batch)

    return split.with_transform(transforms)


# ------------------------------------------------------------------------------------ Trainer(processing_class=...)
@pytest.mark.parametrize("make_model", [tiny_cnn, tiny_clip_classifier], ids=["cnn", "clip"])
def test_image_classification_tutorial_trains_evaluates_predicts_and_saves(tmp_path, scenes, make_model):
    processor = make_processor()
    model = make_model()
    special_tokens = {
        name: getattr(model.config, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    before = {key: value.clone() for key, value in model.state_dict().items()}
    trainer = Trainer(
        model=model,
        args=tutorial_args(tmp_path),
        data_collator=DefaultDataCollator(),
        train_dataset=with_processor(scenes["train"], processor),
        eval_dataset=with_processor(scenes["validation"], processor),
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    output = trainer.train()
    assert output.global_step == 4 and np.isfinite(output.training_loss)
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert {name: getattr(model.config, name, None) for name in special_tokens} == special_tokens

    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])
    prediction = trainer.predict(with_processor(scenes["test"], processor))
    assert isinstance(prediction.predictions, np.ndarray)
    assert prediction.predictions.shape == (4, NUM_LABELS)  # the logits, nothing else
    assert prediction.label_ids.tolist() == scenes["test"]["label"]
    model.eval()
    expected = model(**split_to_tensors(scenes["test"], processor)[0]).logits
    np.testing.assert_allclose(prediction.predictions, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert (
        prediction.metrics["test_accuracy"]
        == compute_metrics((prediction.predictions, prediction.label_ids))["accuracy"]
    )

    # every checkpoint holds the processor, which loads back and gives the same batches
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    loaded = AutoProcessor.from_pretrained(checkpoints[-1])
    assert isinstance(loaded, RgbdProcessor)
    row = scenes["test"][0]
    for key, value in processor(images=row["image"], depths=row["depth"], intrinsics=row["intrinsics"]).items():
        again = loaded(images=row["image"], depths=row["depth"], intrinsics=row["intrinsics"])[key]
        torch.testing.assert_close(again, value, atol=0, rtol=0)
    trainer.save_model(tmp_path / "final")
    assert (tmp_path / "final" / "processor_config.json").is_file()


def test_trainer_on_a_dataset_preprocessed_with_map(tmp_path, scenes):
    # the other route: preprocess once with `map`, then Trainer's defaults (remove_unused_columns, collator)
    processor = make_processor()

    def preprocess(examples):
        return dict(processor(images=examples["image"], depths=examples["depth"], intrinsics=examples["intrinsics"]))

    processed = scenes.map(preprocess, batched=True, batch_size=3, remove_columns=["image", "depth", "intrinsics"])
    trainer = Trainer(
        model=tiny_cnn(),
        args=tutorial_args(tmp_path, remove_unused_columns=True, save_strategy="no", load_best_model_at_end=False),
        train_dataset=processed["train"],
        eval_dataset=processed["validation"],
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    assert trainer.train().global_step == 4
    assert 0.0 <= trainer.evaluate()["eval_accuracy"] <= 1.0
    assert trainer.predict(processed["test"]).predictions.shape == (4, NUM_LABELS)


def test_clip_model_reports_eval_loss_without_labels(tmp_path, scenes):
    processor = make_processor()
    torch.manual_seed(0)
    model = RgbdClipModel(RgbdClipConfig.tiny())
    trainer = Trainer(
        model=model,
        args=tutorial_args(tmp_path, save_strategy="no", load_best_model_at_end=False, metric_for_best_model=None),
        data_collator=DefaultDataCollator(),
        train_dataset=with_processor(scenes["train"], processor, labels=False),
        eval_dataset=with_processor(scenes["validation"], processor, labels=False),
        processing_class=processor,
    )
    output = trainer.train()
    assert output.global_step == 4 and np.isfinite(output.training_loss)
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    # the contrastive loss over the whole split (one batch of 4) is what evaluate reports for batch size 4
    model.eval()
    inputs = split_to_tensors(scenes["validation"], processor)[0]
    with torch.no_grad():
        expected = float(model(**inputs, return_loss=True).loss)
    trainer.args.per_device_eval_batch_size = 4
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-5)


def test_adversarial_trainer_default_path_trains_evaluates_and_predicts(tmp_path, scenes):
    # the documented default: no `attack`, `processing_class` the processor that made the batches -> PGD
    processor = make_processor()
    model = tiny_cnn()
    perturbed = []
    trainer = AdversarialTrainer(
        model=model,
        args=tutorial_args(tmp_path, num_train_epochs=1),
        data_collator=DefaultDataCollator(),
        train_dataset=with_processor(scenes["train"], processor),
        eval_dataset=with_processor(scenes["validation"], processor),
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    assert trainer.attack.steps == 10 and trainer.attack.processor is processor
    perturb = trainer.attack.perturb

    def recording_perturb(inputs, labels=None):
        result = perturb(inputs, labels)
        perturbed.append(not torch.equal(result.final_inputs["pixel_values"], inputs["pixel_values"]))
        return result

    trainer.attack.perturb = recording_perturb
    output = trainer.train()
    assert output.global_step == 2 and np.isfinite(output.training_loss)
    assert perturbed == [True, True]  # every training batch was attacked
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and len(perturbed) == 2  # clean evaluation
    prediction = trainer.predict(with_processor(scenes["test"], processor))
    assert prediction.predictions.shape == (4, NUM_LABELS)
    trainer.adversarial_evaluation = True
    adversarial_metrics = trainer.evaluate()
    assert len(perturbed) == 4 and np.isfinite(adversarial_metrics["eval_loss"])  # both evaluation batches attacked
    assert AutoProcessor.from_pretrained(tmp_path / "checkpoint-2").depth_image_processor.to_dict() == (
        processor.depth_image_processor.to_dict()
    )


def test_processor_has_no_text_tokenizer(tmp_path):
    processor = make_processor()
    tokenizer = processor.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (None, None, None)
    with pytest.raises(ValueError, match="no text tokenizer"):
        processor.decode([1, 2])
    with pytest.raises(ValueError, match="no text tokenizer"):
        processor.batch_decode([[1, 2]])
    model = tiny_cnn()
    config = model.config.to_dict()
    align_special_tokens(model, processor)
    assert model.config.to_dict() == config
    processor.save_pretrained(tmp_path)
    assert "tokenizer" not in (tmp_path / "processor_config.json").read_text()
    assert not [path.name for path in tmp_path.iterdir() if "tokenizer" in path.name or "vocab" in path.name]


# ------------------------------------------------------------------------------------ what Trainer gathers
@pytest.mark.parametrize(
    "config_class, output_class",
    [(RgbdCnnConfig, RgbdCnnImageClassifierOutput), (RgbdClipConfig, RgbdClipImageClassifierOutput)],
)
def test_keys_to_ignore_at_inference_lists_every_classifier_output_but_logits(config_class, output_class):
    fields = {field.name for field in dataclasses.fields(output_class)}
    assert set(config_class.keys_to_ignore_at_inference) == fields - {"loss", "logits"}
    assert isinstance(config_class.keys_to_ignore_at_inference, list)  # Trainer adds ["loss"] to it


@pytest.mark.parametrize("make_model", [tiny_cnn, tiny_clip_classifier], ids=["cnn", "clip"])
def test_prediction_step_gathers_the_logits_alone(tmp_path, scenes, make_model):
    model = make_model().eval()
    model.config.output_hidden_states = True  # every optional output present
    inputs, labels = split_to_tensors(scenes["validation"], make_processor())
    trainer = Trainer(model=model, args=tutorial_args(tmp_path, eval_strategy="no", save_strategy="no"))
    loss, logits, label_ids = trainer.prediction_step(model, {**inputs, "labels": labels}, False)
    outputs = model(**inputs)
    assert len(outputs) > 2  # the model returns more than logits, and Trainer keeps the logits alone
    torch.testing.assert_close(logits, outputs.logits)
    assert torch.equal(label_ids, labels) and torch.isfinite(loss)


# ------------------------------------------------------------------------------------ datasets columns
def reference_batch(split, processor: RgbdProcessor) -> dict[str, torch.Tensor]:
    """The processor's output from tensors built by hand from the numpy-format rows."""
    rows = split.with_format("numpy")
    return processor(
        images=[rows[i]["image"] for i in range(len(split))],
        depths=[torch.from_numpy(rows[i]["depth"]) for i in range(len(split))],
        intrinsics=torch.stack([torch.from_numpy(rows[i]["intrinsics"]) for i in range(len(split))]),
        return_intrinsics=True,
    )


@pytest.mark.parametrize("data_format", [None, "numpy", "torch"])
def test_processor_takes_dataset_columns_in_every_format(scenes, data_format):
    processor = make_processor("disparity")  # reads fx of every map's intrinsics
    split = scenes["train"].with_format(data_format)
    expected = reference_batch(scenes["train"], processor)
    columns = processor(
        images=split["image"], depths=split["depth"], intrinsics=split["intrinsics"], return_intrinsics=True
    )
    assert columns.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(columns[key], expected[key], atol=0, rtol=0)
    row = split[3]
    one = processor(images=row["image"], depths=row["depth"], intrinsics=row["intrinsics"], return_intrinsics=True)
    for key in expected:
        torch.testing.assert_close(one[key], expected[key][3:4], atol=0, rtol=0)


def test_processor_in_with_transform_and_batched_map(scenes):
    processor = make_processor("hha")  # needs intrinsics per map
    split = scenes["train"]
    expected = reference_batch(split, processor)

    def transforms(examples):
        return dict(processor(images=examples["image"], depths=examples["depth"], intrinsics=examples["intrinsics"]))

    transformed = split.with_transform(transforms)
    sliced = transformed[2:5]
    torch.testing.assert_close(sliced["depth_values"], expected["depth_values"][2:5], atol=0, rtol=0)
    torch.testing.assert_close(transformed[6]["pixel_values"], expected["pixel_values"][6], atol=0, rtol=0)
    mapped = split.map(transforms, batched=True, batch_size=3, remove_columns=split.column_names).with_format("torch")
    torch.testing.assert_close(mapped["depth_values"][:], expected["depth_values"], atol=0, rtol=0)


matrices = st.tuples(st.floats(1.0, 500.0), st.floats(1.0, 500.0), st.floats(0.0, 64.0), st.floats(0.0, 64.0)).map(
    lambda f: [[f[0], 0.0, f[2]], [0.0, f[1], f[3]], [0.0, 0.0, 1.0]]
)


@given(matrix_list=st.lists(matrices, min_size=1, max_size=3), as_tuples=st.booleans())
def test_nested_list_intrinsics_are_one_matrix_or_one_per_map(matrix_list, as_tuples):
    processor = make_processor("disparity")
    count = len(matrix_list)
    depths = [np.full((8, 8), 1.5, np.float32)] * count
    expected = processor(depths=depths, intrinsics=np.array(matrix_list), return_intrinsics=True)
    nested = [tuple(map(tuple, k)) for k in matrix_list] if as_tuples else matrix_list
    per_map = processor(depths=depths, intrinsics=nested, return_intrinsics=True)
    torch.testing.assert_close(per_map["intrinsics"], expected["intrinsics"], atol=0, rtol=0)
    torch.testing.assert_close(per_map["depth_values"], expected["depth_values"], atol=0, rtol=0)
    # one 3x3 nested list is ONE matrix, shared by every map
    shared = processor(depths=depths, intrinsics=nested[0], return_intrinsics=True)
    first = processor(depths=depths, intrinsics=np.array(matrix_list[0]), return_intrinsics=True)
    torch.testing.assert_close(shared["intrinsics"], first["intrinsics"], atol=0, rtol=0)


@given(
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    count=st.integers(1, 3),
    integer_depth=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_nested_list_images_and_depths_read_as_arrays(height, width, count, integer_depth, seed):
    processor = RgbdProcessor(RgbdImageProcessor(size={"height": 4, "width": 4}), RgbdDepthProcessor())
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3)) for _ in range(count)]
    if integer_depth:  # millimetres, with holes
        depths = [rng.integers(0, 5000, (height, width)) for _ in range(count)]
    else:  # metres, with 0 / NaN / inf holes
        depths = [rng.choice([0.0, np.nan, np.inf, 0.7, 2.5, 9.0], (height, width)) for _ in range(count)]
    kwargs = dict(allow_aspect_change=True)
    expected = processor(images=[i.astype(np.uint8) for i in images], depths=depths, **kwargs)
    lists = processor(images=[i.tolist() for i in images], depths=[d.tolist() for d in depths], **kwargs)
    for key in expected:
        torch.testing.assert_close(lists[key], expected[key], atol=0, rtol=0, equal_nan=True)
    if count == 1:  # a single item as nested lists
        single = processor(images=images[0].tolist(), depths=depths[0].tolist(), **kwargs)
        for key in expected:
            torch.testing.assert_close(single[key], expected[key], atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depths": [[1.0, 2.0], [1.0]]}, "`depths` must be nested lists of numbers with a regular shape"),
        ({"depths": [[[1.0, 2.0]], [[1.0, "x"]]]}, r"`depths\[1\]` must be nested lists of numbers"),
        ({"depths": [[None, 1.0], [1.0, 1.0]]}, "`depths` must be nested lists of numbers"),
        ({"depths": [[2**70, 1], [1, 1]]}, "`depths` must be nested lists of numbers"),
        ({"images": [[["a"] * 3] * 4] * 4}, "`images` must be nested lists of numbers"),
        (
            {"images": [[[0, 0, 0]] * 4] * 3 + [[[0, 0]] * 4]},
            "`images` must be nested lists of numbers with a regular",
        ),
        ({"depths": np.ones((4, 4)), "intrinsics": []}, "`intrinsics` is an empty list"),
        ({"depths": np.ones((4, 4)), "intrinsics": [[1.0, 0.0], [0.0]]}, "`intrinsics` must be nested lists"),
        ({"depths": np.ones((4, 4)), "intrinsics": [["a", 0, 0], [0, 1, 0], [0, 0, 1]]}, "`intrinsics` must be"),
        ({"depths": np.ones((4, 4)), "intrinsics": [1.0, 0, 2, 0, 1.0, 2, 0, 0, 1]}, "intrinsics"),
        ({"depths": [np.ones((4, 4))] * 2, "intrinsics": [np.eye(3).tolist()] * 3}, "3 matrices for 2"),
    ],
)
def test_bad_nested_lists_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_processor()(**kwargs)


def test_a_list_of_grey_nested_lists_is_a_batch_of_images():
    # (H, W, 3) nested lists are one image, a list of (H, W) nested lists B grey images (never one (B, H, W) image)
    processor = RgbdProcessor(RgbdImageProcessor(size=4))
    grey = [[0, 64, 128, 255]] * 4
    colour = [[[0, 64, 128]] * 4] * 4
    assert processor(images=colour)["pixel_values"].shape == (1, 3, 4, 4)
    assert processor(images=[colour, colour])["pixel_values"].shape == (2, 3, 4, 4)
    try:  # grey RGB is the image processor's to accept (replicated to 3 channels) or reject
        assert processor(images=[grey, grey])["pixel_values"].shape == (2, 3, 4, 4)
    except ValueError as error:
        assert "`images[0]`" in str(error) and "(4, 4)" in str(error)
