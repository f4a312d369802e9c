"""`hf-rgbd finetune`: `Trainer` fine-tuning of any family's `...ForImageClassification` on any loader's data.

Arguments come through `HfArgumentParser`: [`ModelArguments`], [`DataArguments`] and `TrainingArguments`, as in
transformers' image-classification example; one `.json` file holding them all works as well. The `TrainingArguments`
defaults are replaced by the recipe of [`RECIPE_DEFAULTS`] (any of them can still be given on the command line).

    hf-rgbd finetune --model_name_or_path rgbd_cnn:small --dataset synthetic --output_dir cnn-synthetic
    hf-rgbd finetune --model_name_or_path ./pretrained_albef --dataset sunrgbd --dataset_path SUNRGBD \\
        --split_files train=train.txt test=test.txt --output_dir albef-sunrgbd

At the end the output folder holds the model, its processor, `all_results.json` (`eval_accuracy`,
`eval_accuracy_without_rgb`, `eval_accuracy_without_depth`, and the same for `test_` when the data set has a test
split) and a model card (`README.md`) with the metrics and the RGB-D section (`RgbdTrainer`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

DATASETS = ("synthetic", "nyuv2", "sunrgbd", "folder")

#: `TrainingArguments` defaults of `hf-rgbd finetune` (the in-memory recipe of the README's classifier tables:
#: AdamW at 2e-3 with 20% warm-up then cosine decay, weight decay 0.05, batch 64, best validation epoch kept)
RECIPE_DEFAULTS: dict[str, Any] = {
    "output_dir": "hf-rgbd-finetune",
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "warmup_steps": 0.2,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 40,
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 250,
    "max_grad_norm": 1.0,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "save_total_limit": 1,
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "remove_unused_columns": False,  # the transform reads the raw `image` / `depth` columns
    "report_to": "none",
    "do_train": True,
}


@dataclass
class ModelArguments:
    """Which model to fine-tune and how to configure it."""

    model_name_or_path: str = field(
        metadata={
            "help": "A local folder, a hub id, or a family and size such as `rgbd_clip:small` / `rgbd_cnn:small` "
            "(a new model of that preset; a family alone takes its config's defaults)."
        }
    )
    modalities: Literal["rgbd", "rgb", "depth"] = field(
        default="rgbd", metadata={"help": "What the classifier reads: both modalities (fused), RGB only or depth only."}
    )
    modality_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Per-sample probability of dropping each modality in training (fused models only; default 0.1 "
            "for `rgbd`, so that the model still works when one is missing)."
        },
    )
    auxiliary_loss_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the per-tower auxiliary classification losses of the transformer families (fused "
            "only; default 1.0 for them, ignored by the CNN family)."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to override, as `key=value` pairs separated by commas (`fusion_type=early`)."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where models downloaded from the hub are stored."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a hub model."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the stored login)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow a model folder's own code (not needed for hf_rgbd models)."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Re-initialise a loaded classifier head whose number of labels differs."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "`eager` or `sdpa` (transformers only)."})


@dataclass
class DataArguments:
    """Which data to train and evaluate on."""

    dataset: Literal["synthetic", "nyuv2", "sunrgbd", "folder"] = field(
        default="synthetic",
        metadata={
            "help": "`synthetic` (make_synthetic_rgbd, offline), `nyuv2` (the labeled .mat), `sunrgbd` (sample "
            "folders) or `folder` (rgb/ + depth/)."
        },
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "The .mat file (nyuv2) or the data set's folder (sunrgbd, folder)."}
    )
    splits_path: str | None = field(default=None, metadata={"help": "nyuv2: the official splits.mat."})
    split_files: list[str] | None = field(
        default=None,
        metadata={"help": "sunrgbd: `NAME=FILE` pairs, each file listing one sample folder per line (`train=a.txt`)."},
    )
    depth_variant: Literal["raw", "filled"] = field(
        default="raw", metadata={"help": "nyuv2 / sunrgbd: raw sensor depth (holes as 0) or the filled maps."}
    )
    classes: str | None = field(
        default=None,
        metadata={
            "help": "nyuv2: `nyu10` (default) or `all`; sunrgbd: `sunrgbd19` (default) or `all`; any loader: a "
            "comma-separated list of class names."
        },
    )
    depth_scale: float = field(default=0.001, metadata={"help": "folder: metres per unit of 16-bit depth PNGs."})
    labels_file: str | None = field(
        default=None, metadata={"help": "folder: a file of `name,label` lines (default: class subfolders)."}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Side of the processed images and depth maps for a new model's processor (default: the "
            "transformer towers' image size, 64 for the CNN family). A loaded processor keeps its own."
        },
    )
    train_val_split: float = field(
        default=0.15,
        metadata={"help": "Fraction of `train` held out for validation when the data set has no validation split."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the validation and test splits (debugging)."}
    )
    augmentation: Literal["crop", "shift"] = field(
        default="crop",
        metadata={
            "help": "Training augmentation (aligned for RGB and depth): `crop` = random resized crops (`crop_scale`) "
            "and flips; `shift` = flips and translations by up to `max_shift` pixels (holes shifted in), as "
            "`train_classifier`. Colour jitter (`colour_jitter`) applies to both."
        },
    )
    crop_scale: float = field(
        default=0.6, metadata={"help": "Training augmentation: smallest random crop, as a fraction of the area."}
    )
    max_shift: int = field(default=4, metadata={"help": "`--augmentation shift`: largest translation in pixels."})
    colour_jitter: float = field(
        default=0.1, metadata={"help": "Training augmentation: brightness / contrast / saturation jitter strength."}
    )
    synthetic_num_train: int = field(default=2000, metadata={"help": "synthetic: scenes in train."})
    synthetic_num_validation: int = field(default=500, metadata={"help": "synthetic: scenes in validation."})
    synthetic_num_test: int = field(default=1000, metadata={"help": "synthetic: scenes in test."})
    synthetic_image_size: int = field(default=64, metadata={"help": "synthetic: side of the rendered scenes."})
    synthetic_seed: int = field(
        default=0,
        metadata={
            "help": "synthetic: seed of the rendered scenes (a fixed data set, whatever --seed: `hf-rgbd pretrain` "
            "and `hf-rgbd finetune` see the same scenes, those of `make_synthetic_rgbd()`)."
        },
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes the loaders write Arrow files with."})
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "Where the loaders write Arrow files."})


# ---------------------------------------------------------------------------------------------------- data
def _class_list(value: str | None, default: str) -> str | list[str]:
    if value is None:
        return default
    return value if value in ("all", default) else [name.strip() for name in value.split(",") if name.strip()]


def _split_files(pairs: Sequence[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    splits = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--split_files takes NAME=FILE pairs (e.g. train=train.txt), got {pair!r}.")
        splits[name] = path
    return splits


def load_finetune_dataset(data_args: DataArguments, seed: int = 0):
    """The `DatasetDict` `data_args` names, with a `validation` split (carved from `train` with `train_val_split`
    and `seed` when the data set has none) and truncated as `max_train_samples` / `max_eval_samples` ask. The
    synthetic scenes come from `data_args.synthetic_seed`, not from `seed`."""
    import datasets

    from ..data import load_nyuv2, load_rgbd_folder, load_sunrgbd, make_synthetic_rgbd

    if data_args.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {data_args.dataset!r}.")
    if data_args.dataset != "synthetic" and not data_args.dataset_path:
        raise ValueError(f"--dataset {data_args.dataset} needs --dataset_path.")
    if data_args.dataset == "synthetic" and not (isinstance(data_args.synthetic_seed, int) and data_args.synthetic_seed >= 0):
        raise ValueError(f"--synthetic_seed must be a non-negative integer, got {data_args.synthetic_seed!r}.")
    for name in ("max_train_samples", "max_eval_samples"):
        limit = getattr(data_args, name)
        if limit is not None and limit < 1:
            raise ValueError(f"--{name} must be a positive number of samples (or left out), got {limit}.")
    common = {"cache_dir": data_args.dataset_cache_dir, "num_proc": data_args.num_proc}
    if data_args.dataset == "synthetic":
        data = make_synthetic_rgbd(
            num_train=data_args.synthetic_num_train, num_validation=data_args.synthetic_num_validation,
            num_test=data_args.synthetic_num_test, image_size=data_args.synthetic_image_size,
            seed=data_args.synthetic_seed,
        )
    elif data_args.dataset == "nyuv2":
        data = load_nyuv2(
            data_args.dataset_path, data_args.splits_path, depth=data_args.depth_variant,
            classes=_class_list(data_args.classes, "nyu10"), **common,
        )
    elif data_args.dataset == "sunrgbd":
        data = load_sunrgbd(
            data_args.dataset_path, splits=_split_files(data_args.split_files), depth=data_args.depth_variant,
            classes=_class_list(data_args.classes, "sunrgbd19"), **common,
        )
    else:  # a folder's classes are every label found unless a list is given
        classes = None if data_args.classes in (None, "all") else _class_list(data_args.classes, "all")
        data = load_rgbd_folder(
            data_args.dataset_path, depth_scale=data_args.depth_scale, labels=data_args.labels_file, classes=classes,
            **common,
        )
    if "train" not in data:
        raise ValueError(f"the {data_args.dataset} data set has no `train` split (it has {sorted(data)}).")
    if "validation" not in data:
        if not 0.0 < data_args.train_val_split < 1.0:
            raise ValueError(
                f"the data set has no validation split and --train_val_split is {data_args.train_val_split}; "
                "expected a fraction in (0, 1)."
            )
        parts = data["train"].train_test_split(test_size=data_args.train_val_split, seed=seed, stratify_by_column="label")
        data = datasets.DatasetDict({**data, "train": parts["train"], "validation": parts["test"]})
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                         ("test", data_args.max_eval_samples)):
        if limit is not None and split in data and len(data[split]) > limit:
            data[split] = data[split].select(range(limit))
    return data


def depth_statistics(split, max_rows: int = 256) -> dict[str, float]:
    """Mean, standard deviation and 99.9th percentile (metres) of the valid depth of the first `max_rows` rows."""
    rows = split.select_columns(["depth"]).select(range(min(max_rows, len(split)))).with_format("numpy")
    values = []
    for row in rows:
        depth = np.asarray(row["depth"], dtype=np.float32)
        values.append(depth[np.isfinite(depth) & (depth > 0)])
    valid = np.concatenate(values) if values else np.zeros(0, np.float32)
    if valid.size == 0:
        raise ValueError("the train split's first rows hold no valid depth (every pixel is a hole).")
    return {"mean": float(valid.mean()), "std": float(max(valid.std(), 1e-3)), "max": float(np.percentile(valid, 99.9))}


# ---------------------------------------------------------------------------------------------------- model
def _default_image_size(config, image_size: int | None) -> int:
    tower = getattr(config, "rgb_config", None)
    if tower is not None:
        if image_size is not None and image_size != tower.image_size:
            raise ValueError(
                f"--image_size {image_size} differs from the model's towers ({tower.image_size}); a new model's "
                "image size is a config field: give --config_overrides or a model of that size."
            )
        return int(tower.image_size)
    return 64 if image_size is None else int(image_size)


def default_processor(config, train_split, image_size: int | None = None):
    """The processor of a new model: resize to the model's image size, ImageNet RGB statistics, and depth in metres
    with the range (and for the transformer families the mean / std) measured on the train split; the CNN family
    reads `"metric"` depth (it normalises inside), the transformer families `"dataset"` depth."""
    from ..processors import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

    side = _default_image_size(config, image_size)
    stats = depth_statistics(train_split)
    max_depth = float(getattr(config, "max_depth", 0.0)) or max(1.0, math.ceil(stats["max"] * 2) / 2)
    min_depth = float(getattr(config, "min_depth", 0.0)) or 0.1
    if config.model_type == "rgbd_cnn":
        depth_processor = RgbdDepthProcessor(representation="metric", min_depth=min_depth, max_depth=max_depth)
    else:
        depth_processor = RgbdDepthProcessor(
            representation="dataset", min_depth=min_depth, max_depth=max_depth, depth_mean=stats["mean"],
            depth_std=stats["std"],
        )
    return RgbdProcessor(RgbdImageProcessor(size={"height": side, "width": side}), depth_processor)


def _labels_kwargs(label_names: Sequence[str]) -> dict[str, Any]:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def _classification_settings(config_class_or_config, model_args: ModelArguments) -> dict[str, Any]:
    settings: dict[str, Any] = {"modalities": model_args.modalities}
    fused = model_args.modalities == "rgbd"
    dropout = model_args.modality_dropout if model_args.modality_dropout is not None else 0.1
    settings["modality_dropout"] = (dropout, dropout) if fused else (0.0, 0.0)
    if hasattr(config_class_or_config, "auxiliary_loss_weight"):
        weight = model_args.auxiliary_loss_weight if model_args.auxiliary_loss_weight is not None else 1.0
        settings["auxiliary_loss_weight"] = weight if fused else 0.0
    return settings


def new_model_preset(name: str):
    """`preset_config(name)` for a `--model_name_or_path` that names a new model of a preset, None for a folder
    (which wins over a preset of the same name) or a hub id."""
    from ..registration import preset_config

    return None if os.path.isdir(name) else preset_config(name)


def build_model(model_args: ModelArguments, label_names: Sequence[str]):
    """(model, processor or None): a new model of a `family:size` preset, or the classifier of a saved model with
    its processor (None when the folder has none)."""
    from transformers import AutoConfig, AutoModelForImageClassification, AutoProcessor

    attention = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    name = model_args.model_name_or_path
    preset = new_model_preset(name)
    hub = {
        "cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }
    if preset is not None:
        config_class, make = preset
        config = make(**_labels_kwargs(label_names), **_classification_settings(config_class, model_args))
    else:
        config = AutoConfig.from_pretrained(name, **_labels_kwargs(label_names), **hub)
        for key, value in _classification_settings(config, model_args).items():
            setattr(config, key, value)
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    config.validate()
    if preset is not None:
        return AutoModelForImageClassification.from_config(config, **attention), None
    model = AutoModelForImageClassification.from_pretrained(
        name, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **attention, **hub
    )
    try:
        processor = AutoProcessor.from_pretrained(name, **hub)
    except (OSError, ValueError, KeyError) as err:  # a folder saved without its processor
        logger.warning(f"{name} has no processor ({err}); building one from the train split.")
        processor = None
    return model, processor


# ---------------------------------------------------------------------------------------------------- training
def compute_metrics(eval_pred) -> dict[str, float]:
    """Top-1 accuracy of the logits, as transformers' image-classification example computes it."""
    predictions, labels = eval_pred
    return {"accuracy": float(np.mean(np.argmax(predictions, axis=1) == labels))}


class WithoutInputs:
    """A data collator that calls `collator` and leaves `keys` out of the batch (a modality missing at inference)."""

    def __init__(self, collator: Callable, keys: Sequence[str]):
        self.collator = collator
        self.keys = tuple(keys)

    def __call__(self, features):
        batch = self.collator(features)
        return {key: value for key, value in batch.items() if key not in self.keys}


MISSING_MODALITY_INPUTS = {"without_rgb": ("pixel_values",), "without_depth": ("depth_values", "depth_mask")}


def missing_modality_metrics(trainer, dataset, prefix: str, modalities: str) -> dict[str, float]:
    """`{prefix}_accuracy_without_rgb` / `_without_depth`: the accuracy with that modality left out of every batch
    (only those the model can answer: a model reading one modality gets the other left out)."""
    collator = trainer.data_collator
    metrics = {}
    try:
        for name, keys in MISSING_MODALITY_INPUTS.items():
            if name == f"without_{modalities}":  # an RGB-only model without RGB has nothing to read
                continue
            trainer.data_collator = WithoutInputs(collator, keys)
            output = trainer.predict(dataset, metric_key_prefix=prefix)
            metrics[f"{prefix}_accuracy_{name}"] = output.metrics[f"{prefix}_accuracy"]
    finally:
        trainer.data_collator = collator
    return metrics


def _fixed_output_size(processor) -> tuple[int, int]:
    """(height, width) of every processed sample: rows of different sizes must stack into one batch."""
    image_processor = processor.image_processor
    size = image_processor.crop_size if image_processor.do_center_crop else image_processor.size
    if "height" not in size or "width" not in size:
        raise ValueError(
            f"the processor's image size {dict(size)} is not a fixed (height, width); fine-tuning stacks rows of "
            'different sizes, so it needs size={"height": H, "width": W} or a center crop.'
        )
    return int(size["height"]), int(size["width"])


def training_augment(processor, data_args: DataArguments, seed: int):
    """The aligned training augmentation `data_args` asks for (crops, flips, colour jitter) at the processor's
    output size, drawing from a generator seeded with `seed`."""
    from ..data import RgbdAugment

    jitter = data_args.colour_jitter
    if data_args.augmentation not in ("crop", "shift"):
        raise ValueError(f"`--augmentation` must be 'crop' or 'shift', got {data_args.augmentation!r}.")
    geometry = (
        dict(crop_scale=(data_args.crop_scale, 1.0))
        if data_args.augmentation == "crop"
        else dict(p_crop=0.0, max_shift=data_args.max_shift)
    )
    return RgbdAugment(
        output_size=_fixed_output_size(processor), p_flip=0.5, brightness=jitter, contrast=jitter, saturation=jitter,
        generator=seed, **geometry,
    )  # fmt: skip


def run_finetune(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict[str, float]:
    """Fine-tune, evaluate with each modality and with one missing, save model, processor, metrics and model card.
    Returns every final metric (as `all_results.json` holds them)."""
    from transformers import set_seed

    from ..data import RgbdDataCollator, RgbdTransform
    from .rgbd_trainer import RgbdTrainer

    if training_args.remove_unused_columns:
        raise ValueError(
            "--remove_unused_columns must be False: the transform reads the raw `image` / `depth` columns."
        )
    set_seed(training_args.seed)
    data = load_finetune_dataset(data_args, seed=training_args.seed)
    label_names = data["train"].features["label"].names
    model, processor = build_model(model_args, label_names)
    if processor is None:
        processor = default_processor(model.config, data["train"], data_args.image_size)
    augment = training_augment(processor, data_args, training_args.seed)
    train = data["train"].with_transform(RgbdTransform(processor, augment=augment))
    evaluation = {split: data[split].with_transform(RgbdTransform(processor)) for split in ("validation", "test") if split in data}
    trainer = RgbdTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation["validation"],
        data_collator=RgbdDataCollator(),
        processing_class=processor,
        compute_metrics=compute_metrics,
        model_card={
            # the card is named as the hub repo when pushing, else as the output folder
            "model_name": (
                training_args.hub_model_id.rsplit("/", 1)[-1]
                if training_args.push_to_hub and training_args.hub_model_id
                else os.path.basename(os.path.normpath(training_args.output_dir))
            ),
            "tasks": "image-classification",
            "dataset": data_args.dataset,
            "tags": ["rgbd", "hf-rgbd", model.config.model_type],
        },
        trained_from_scratch=new_model_preset(model_args.model_name_or_path) is not None,
    )
    results: dict[str, float] = {}
    if training_args.do_train:
        output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", output.metrics)
        trainer.save_metrics("train", output.metrics)
        trainer.save_state()
        results.update(output.metrics)
    modalities = model.config.modalities
    final = trainer.evaluate()
    final.update(missing_modality_metrics(trainer, evaluation["validation"], "eval", modalities))
    trainer.log_metrics("eval", final)
    trainer.save_metrics("eval", final)
    results.update(final)
    if "test" in evaluation:
        test = trainer.predict(evaluation["test"], metric_key_prefix="test").metrics
        test.update(missing_modality_metrics(trainer, evaluation["test"], "test", modalities))
        trainer.log_metrics("test", test)
        trainer.save_metrics("test", test)
        results.update(test)
    # the model card lists the last logged evaluation: log the complete one
    trainer.log({key: value for key, value in final.items() if key.startswith("eval_")})
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    else:
        trainer.create_model_card()
    return results


def parse_finetune_args(argv: Sequence[str] | None = None):
    """(ModelArguments, DataArguments, TrainingArguments) from the command line (or one `.json` file), with the
    recipe's `TrainingArguments` defaults."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), prog="hf-rgbd finetune")
    # pinned memory only helps an accelerator (and warns on every DataLoader without one)
    defaults = {**RECIPE_DEFAULTS, "dataloader_pin_memory": torch.accelerator.is_available()}
    parser.set_defaults(**defaults)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict({**defaults, **json.loads(Path(argv[0]).read_text())})
    return parser.parse_args_into_dataclasses(args=argv)


def finetune_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-rgbd finetune`."""
    import transformers

    model_args, data_args, training_args = parse_finetune_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    run_finetune(model_args, data_args, training_args)
    return 0


__all__ = [
    "DataArguments",
    "ModelArguments",
    "RECIPE_DEFAULTS",
    "default_processor",
    "finetune_main",
    "load_finetune_dataset",
    "parse_finetune_args",
    "run_finetune",
]
