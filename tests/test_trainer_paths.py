"""The documented user paths, run to the end as a user would: transformers' image-classification tutorial with our
models and processor swapped in (`Trainer(processing_class=processor)`, `with_transform`, the tutorial's
`compute_metrics`), the label-free `RgbdClipModel` (`eval_loss`), `AdversarialTrainer` on its default path, and the
processor fed the columns of `make_synthetic_rgbd()` as `datasets` returns them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import DefaultDataCollator, Trainer, TrainingArguments
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
