"""`hf-rgbd finetune`: argument parsing, presets, every family end to end on tiny data (train, the three final
accuracies, the saved folder reproducing them), fine-tuning from a pretrained folder, SUN RGB-D-layout rooms, and
the bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, AutoProcessor, Trainer, pipeline

from hf_rgbd import RgbdAlbefConfig, RgbdAlbefForPreTraining, RgbdClipConfig, RgbdCnnConfig, RgbdProcessor
from hf_rgbd.cli import main
from hf_rgbd.data import load_sunrgbd, split_to_tensors
from hf_rgbd.data.rooms import ROOM_CLASSES, write_sunrgbd_rooms
from hf_rgbd.registration import preset_config
from hf_rgbd.training import classification_accuracy
from hf_rgbd.training.finetune import (
    RECIPE_DEFAULTS,
    DataArguments,
    ModelArguments,
    WithoutInputs,
    build_model,
    default_processor,
    load_finetune_dataset,
    parse_finetune_args,
    training_augment,
)

TINY_DATA = [
    "--dataset", "synthetic", "--synthetic_num_train", "24", "--synthetic_num_validation", "10",
    "--synthetic_num_test", "6", "--synthetic_image_size", "32",
]
FAST = ["--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--disable_tqdm", "True", "--seed", "0"]


def run_cli(tmp_path, *arguments: str) -> dict:
    assert main(["finetune", *arguments, "--output_dir", str(tmp_path / "out")]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


# ------------------------------------------------------------------------------------------------ arguments
def test_preset_names():
    assert preset_config("rgbd_clip:tiny") == (RgbdClipConfig, RgbdClipConfig.tiny)
    assert preset_config("rgbd_cnn") == (RgbdCnnConfig, RgbdCnnConfig)
    assert preset_config("someone/a-model") is None and preset_config("./folder") is None
    with pytest.raises(ValueError, match=r"rgbd_cnn has the sizes \['small'\].*'tiny'"):
        preset_config("rgbd_cnn:tiny")
    with pytest.raises(ValueError, match="rgbd_vit has no image classifier"):
        preset_config("rgbd_vit:small")


def test_recipe_defaults_command_line_overrides_and_json_file(tmp_path):
    model_args, data_args, training_args = parse_finetune_args(["--model_name_or_path", "rgbd_cnn:small"])
    for key in ("learning_rate", "num_train_epochs", "warmup_steps", "weight_decay", "per_device_train_batch_size"):
        assert getattr(training_args, key) == RECIPE_DEFAULTS[key]
    assert training_args.remove_unused_columns is False and training_args.load_best_model_at_end
    assert training_args.metric_for_best_model == "accuracy" and training_args.do_train
    assert model_args.modalities == "rgbd" and data_args.dataset == "synthetic"

    _, _, training_args = parse_finetune_args(["--model_name_or_path", "rgbd_cnn:small", "--learning_rate", "1e-3"])
    assert training_args.learning_rate == 1e-3
    file = tmp_path / "args.json"
    file.write_text(json.dumps({"model_name_or_path": "rgbd_clip:tiny", "modalities": "rgb", "num_train_epochs": 3}))
    model_args, _, training_args = parse_finetune_args([str(file)])
    assert model_args.modalities == "rgb" and training_args.num_train_epochs == 3
    assert training_args.learning_rate == RECIPE_DEFAULTS["learning_rate"]


def test_bad_arguments_name_what_was_expected(tmp_path):
    out = ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--remove_unused_columns must be False"):
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", *TINY_DATA, "--remove_unused_columns", "True", *out])
    with pytest.raises(ValueError, match="--dataset sunrgbd needs --dataset_path"):
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", "--dataset", "sunrgbd", *out])
    with pytest.raises(ValueError, match="NAME=FILE pairs.*'train.txt'"):
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", "--dataset", "sunrgbd", "--dataset_path",
              str(tmp_path), "--split_files", "train.txt", *out])
    with pytest.raises(ValueError, match="--image_size 48 differs from the model's towers \\(32\\)"):
        main(["finetune", "--model_name_or_path", "rgbd_clip:tiny", *TINY_DATA, "--image_size", "48", *out])
    with pytest.raises(ValueError, match="--max_train_samples must be a positive number of samples"):
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", *TINY_DATA, "--max_train_samples", "0", *out])
    with pytest.raises(SystemExit):  # argparse: a --modalities value outside its choices
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", "--modalities", "hha", *out])


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("model", ["rgbd_cnn:small", "rgbd_clip:tiny", "rgbd_albef:tiny", "rgbd_vlmo:tiny"])
def test_every_family_trains_reports_the_three_accuracies_and_saves_a_folder_that_reproduces_them(tmp_path, model):
    results = run_cli(tmp_path, "--model_name_or_path", model, *TINY_DATA, *FAST)
    for prefix in ("eval", "test"):
        for key in ("accuracy", "accuracy_without_rgb", "accuracy_without_depth"):
            assert 0.0 <= results[f"{prefix}_{key}"] <= 1.0
    assert np.isfinite(results["train_loss"])
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 3  # 24 samples / batch 8, 2 epochs
    assert [entry["epoch"] for entry in state["log_history"] if "eval_accuracy" in entry][:2] == [1.0, 2.0]

    # the folder: model + processor through the Auto classes, predicting what the final evaluation measured
    loaded = AutoModelForImageClassification.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(processor, RgbdProcessor) and loaded.config.num_labels == 8
    data = _tiny_data()
    inputs, labels = split_to_tensors(data["validation"], processor)
    assert classification_accuracy(loaded, inputs, labels) == pytest.approx(results["eval_accuracy"])
    without_rgb = {k: v for k, v in inputs.items() if k != "pixel_values"}
    assert classification_accuracy(loaded, without_rgb, labels) == pytest.approx(results["eval_accuracy_without_rgb"])
    card = (out / "README.md").read_text()
    assert "Accuracy Without Rgb" in card and "Accuracy Without Depth" in card and "hf-rgbd" in card
    assert "trained from scratch on the synthetic dataset" in card
    # the RGB-D section: tasks, modalities, depth representation and units
    assert "`rgbd-image-classification`" in card and "RGB and depth" in card
    assert f"`{processor.depth_image_processor.representation}`" in card and "**Depth units**: metres" in card
    # the folder serves the classification pipeline, which predicts as the model does
    classifier = pipeline("rgbd-image-classification", model=str(out))
    first = classifier({"image": data["validation"][0]["image"], "depth": np.asarray(data["validation"][0]["depth"])})
    assert first[0]["label"] == loaded.config.id2label[int(loaded(**{k: v[:1] for k, v in inputs.items()}).logits.argmax())]


def test_shift_augmentation_trains_through_the_command_line(tmp_path):
    results = run_cli(
        tmp_path, "--model_name_or_path", "rgbd_cnn:small", *TINY_DATA, *FAST, "--augmentation", "shift",
        "--max_shift", "3",
    )  # fmt: skip
    assert np.isfinite(results["train_loss"]) and 0.0 <= results["test_accuracy"] <= 1.0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 3
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    shift = training_augment(processor, DataArguments(augmentation="shift", max_shift=3), seed=0)
    crop = training_augment(processor, DataArguments(), seed=0)
    assert (shift.p_crop, shift.max_shift) == (0.0, 3) and (crop.p_crop, crop.max_shift) == (1.0, 0)
    with pytest.raises(SystemExit):  # argparse: a value outside the Literal's choices
        main(["finetune", "--model_name_or_path", "rgbd_cnn:small", "--augmentation", "rotate",
              "--output_dir", str(tmp_path / "bad")])  # fmt: skip


def _tiny_data():
    return load_finetune_dataset(
        DataArguments(synthetic_num_train=24, synthetic_num_validation=10, synthetic_num_test=6, synthetic_image_size=32)
    )


def test_the_synthetic_scenes_do_not_follow_the_training_seed():
    sizes = dict(synthetic_num_train=6, synthetic_num_validation=2, synthetic_num_test=2, synthetic_image_size=16)
    first = load_finetune_dataset(DataArguments(**sizes), seed=0)
    same = load_finetune_dataset(DataArguments(**sizes), seed=42)  # `hf-rgbd finetune`'s default --seed
    other = load_finetune_dataset(DataArguments(**sizes, synthetic_seed=1), seed=0)
    depth = lambda data: np.asarray(data["train"].with_format("numpy")["depth"])  # noqa: E731
    np.testing.assert_array_equal(depth(first), depth(same))
    assert not np.array_equal(depth(first), depth(other))
    with pytest.raises(ValueError, match="--synthetic_seed must be a non-negative integer, got -1"):
        load_finetune_dataset(DataArguments(**sizes, synthetic_seed=-1))


def test_a_single_modality_model_reports_only_the_accuracy_it_can_have(tmp_path):
    results = run_cli(tmp_path, "--model_name_or_path", "rgbd_clip:tiny", "--modalities", "rgb", *TINY_DATA, *FAST)
    assert "eval_accuracy_without_rgb" not in results
    assert results["eval_accuracy_without_depth"] == results["eval_accuracy"]  # it never reads depth
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["modalities"] == "rgb" and config["modality_dropout"] == [0.0, 0.0]


def test_fine_tuning_a_pretrained_folder_keeps_its_encoders_and_processor(tmp_path):
    torch.manual_seed(0)
    pretrained = RgbdAlbefForPreTraining(RgbdAlbefConfig.tiny())
    data = _tiny_data()
    processor = default_processor(pretrained.config, data["train"])
    pretrained.save_pretrained(tmp_path / "pretrained")
    processor.save_pretrained(tmp_path / "pretrained")
    names = data["train"].features["label"].names
    model, loaded_processor = build_model(ModelArguments(str(tmp_path / "pretrained")), names)
    assert type(model).__name__ == "RgbdAlbefForImageClassification" and model.config.num_labels == len(names)
    assert model.config.id2label[0] == names[0] and model.config.modality_dropout == (0.1, 0.1)
    for key, value in pretrained.rgbd_albef.rgb_model.state_dict().items():
        torch.testing.assert_close(model.rgbd_albef.rgb_model.state_dict()[key], value, rtol=0, atol=0)
    for part in ("image_processor", "depth_image_processor"):
        assert getattr(loaded_processor, part).to_dict() == getattr(processor, part).to_dict()
    results = run_cli(tmp_path, "--model_name_or_path", str(tmp_path / "pretrained"), *TINY_DATA, *FAST)
    assert 0.0 <= results["test_accuracy"] <= 1.0


def test_without_inputs_leaves_the_modality_out_of_every_batch():
    collator = WithoutInputs(lambda rows: {"pixel_values": 1, "depth_values": 2, "depth_mask": 3, "labels": 4}, ["pixel_values"])
    assert collator([{}]) == {"depth_values": 2, "depth_mask": 3, "labels": 4}


def test_push_to_hub_passes_through_to_the_trainer(tmp_path, monkeypatch):
    pushed = {}

    def fake_push(self, **kwargs):  # the real upload: tests/test_hub_server.py, against the local hub server
        pushed.update(self.model_card_defaults, **kwargs, hub_model_id=self.args.hub_model_id)

    monkeypatch.setattr(Trainer, "push_to_hub", fake_push)
    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, token=None: None)
    run_cli(tmp_path, "--model_name_or_path", "rgbd_cnn:small", *TINY_DATA, *FAST, "--push_to_hub", "True",
            "--hub_model_id", "me/cnn", "--save_strategy", "no", "--load_best_model_at_end", "False")
    assert pushed["hub_model_id"] == "me/cnn" and pushed["tasks"] == "image-classification"
    assert pushed["dataset"] == "synthetic" and pushed["model_name"] == "cnn"  # the card is named as the repo


# ------------------------------------------------------------------------------------------------ rooms
def test_rooms_need_both_modalities_and_load_as_sunrgbd(tmp_path):
    files = write_sunrgbd_rooms(tmp_path / "SUNRGBD", num_train=16, num_validation=4, num_test=4, seed=3)
    data = load_sunrgbd(tmp_path / "SUNRGBD", splits=files, classes="all", cache_dir=tmp_path / "cache")
    assert {split: len(data[split]) for split in data} == {"train": 16, "validation": 4, "test": 4}
    assert sorted(data["train"].features["label"].names) == sorted(ROOM_CLASSES.values())
    assert np.bincount(data["train"]["label"]).tolist() == [4, 4, 4, 4]  # balanced
    again = write_sunrgbd_rooms(tmp_path / "again", num_train=16, num_validation=4, num_test=4, seed=3)
    for split, file in files.items():  # the same arguments write the same files
        first = file.read_text().split()
        assert first == again[split].read_text().split()
        for rel in first[:2]:
            for sub in ("image", "depth"):
                a = sorted((tmp_path / "SUNRGBD" / rel / sub).iterdir())[0].read_bytes()
                b = sorted((tmp_path / "again" / rel / sub).iterdir())[0].read_bytes()
                assert a == b
    rows = data["train"].with_format("numpy")
    for row in rows:
        depth = np.asarray(row["depth"])
        scene = row["scene"]
        distance = next(d for (c, d), name in ROOM_CLASSES.items() if name == scene)
        assert 0.0 < (depth == 0).mean() < 0.2  # shadow band + dropouts are holes
        # the object is the nearest surface: its distance gives the class's depth half
        nearest = np.percentile(depth[depth > 0], 2)
        assert (nearest < 1.7) == (distance == "near")
    with pytest.raises(ValueError, match="`num_train` must be a positive int"):
        write_sunrgbd_rooms(tmp_path / "bad", num_train=0)


def test_sunrgbd_rooms_through_the_command_line(tmp_path):
    files = write_sunrgbd_rooms(tmp_path / "SUNRGBD", num_train=16, num_validation=8, num_test=8, seed=1)
    results = run_cli(
        tmp_path, "--model_name_or_path", "rgbd_cnn:small", "--dataset", "sunrgbd", "--dataset_path",
        str(tmp_path / "SUNRGBD"), "--classes", "all", "--dataset_cache_dir", str(tmp_path / "cache"),
        "--split_files", *(f"{name}={file}" for name, file in files.items()), "--image_size", "32", *FAST,
    )
    assert 0.0 <= results["test_accuracy_without_depth"] <= 1.0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(ROOM_CLASSES.values())
    processor = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert processor["image_processor"]["size"] == {"height": 32, "width": 32}


def test_a_data_set_without_validation_split_gets_one_carved_from_train(tmp_path):
    files = write_sunrgbd_rooms(tmp_path / "SUNRGBD", num_train=40, num_validation=4, num_test=4, seed=2)
    args = DataArguments(
        dataset="sunrgbd", dataset_path=str(tmp_path / "SUNRGBD"), split_files=[f"train={files['train']}"],
        classes="all", dataset_cache_dir=str(tmp_path / "cache"), train_val_split=0.25,
    )
    data = load_finetune_dataset(args, seed=0)
    assert (len(data["train"]), len(data["validation"])) == (30, 10)
    assert np.bincount(data["validation"]["label"]).min() >= 2  # stratified
    assert not set(data["train"]["scene"]) - set(ROOM_CLASSES.values())
    args.train_val_split = 1.5
    with pytest.raises(ValueError, match="--train_val_split is 1.5; expected a fraction in \\(0, 1\\)"):
        load_finetune_dataset(args)


def test_image_classification_example_with_the_rgbd_pieces_swapped_in(tmp_path):
    # transformers' examples/pytorch/image-classification/run_image_classification.py, reduced to its Trainer part:
    # its TrainingArguments (remove_unused_columns=False), with_transform for train and eval, its compute_metrics;
    # swapped in: the model, the processor, the data set (SUN RGB-D layout) and the collator
    from transformers import TrainingArguments

    from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification
    from hf_rgbd.data import RgbdAugment, RgbdDataCollator, RgbdTransform

    files = write_sunrgbd_rooms(tmp_path / "SUNRGBD", num_train=16, num_validation=8, num_test=4, seed=4)
    dataset = load_sunrgbd(tmp_path / "SUNRGBD", splits=files, classes="all", cache_dir=tmp_path / "cache")
    labels = dataset["train"].features["label"].names
    label2id, id2label = {label: i for i, label in enumerate(labels)}, dict(enumerate(labels))
    torch.manual_seed(0)
    model = RgbdCnnForImageClassification(
        RgbdCnnConfig.small(num_labels=len(labels), label2id=label2id, id2label=id2label)
    )
    processor = default_processor(model.config, dataset["train"], image_size=32)
    dataset["train"].set_transform(RgbdTransform(processor, augment=RgbdAugment(output_size=32, generator=0)))
    dataset["validation"].set_transform(RgbdTransform(processor))

    def compute_metrics(p):  # the example's, with numpy for `evaluate.load("accuracy")` (offline)
        return {"accuracy": float(np.mean(np.argmax(p.predictions, axis=1) == p.label_ids))}

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), remove_unused_columns=False, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="accuracy", num_train_epochs=2, learning_rate=2e-3,
        per_device_train_batch_size=8, per_device_eval_batch_size=8, report_to="none", disable_tqdm=True, seed=0,
    )
    before = {key: value.clone() for key, value in model.state_dict().items()}
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset["train"], eval_dataset=dataset["validation"],
        compute_metrics=compute_metrics, processing_class=processor, data_collator=RgbdDataCollator(),
    )
    train_result = trainer.train()
    assert train_result.global_step == 4 and np.isfinite(train_result.training_loss)
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["epoch"] == 2.0
    trainer.save_model()
    assert isinstance(AutoProcessor.from_pretrained(tmp_path / "out"), RgbdProcessor)


def test_a_folder_data_set_takes_every_label_with_classes_all(tmp_path):
    from PIL import Image

    for index, label in enumerate(["chair", "desk", "chair", "desk"]):
        for sub in ("rgb", "depth"):
            (tmp_path / "data" / sub / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 8, 3), 40 * index, np.uint8)).save(tmp_path / "data" / "rgb" / label / f"{index}.png")
        np.save(tmp_path / "data" / "depth" / label / f"{index}.npy", np.full((6, 8), 1.5, np.float32))
    for classes in (None, "all"):
        args = DataArguments(dataset="folder", dataset_path=str(tmp_path / "data"), classes=classes,
                             dataset_cache_dir=str(tmp_path / "cache"), train_val_split=0.5)
        data = load_finetune_dataset(args)
        assert data["train"].features["label"].names == ["chair", "desk"]
        assert len(data["train"]) == len(data["validation"]) == 2


def test_a_loaded_processor_without_a_fixed_size_is_named(tmp_path):
    torch.manual_seed(0)
    from hf_rgbd import RgbdCnnForImageClassification, RgbdDepthProcessor, RgbdImageProcessor

    RgbdCnnForImageClassification(RgbdCnnConfig.small(num_labels=8)).save_pretrained(tmp_path / "model")
    RgbdProcessor(RgbdImageProcessor(size={"shortest_edge": 32}), RgbdDepthProcessor()).save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=r"image size \{'shortest_edge': 32\} is not a fixed \(height, width\)"):
        run_cli(tmp_path, "--model_name_or_path", str(tmp_path / "model"), *TINY_DATA, *FAST)
