"""`hf-rgbd pretrain`: pretraining of the transformer families on accelerate, from one CPU to many GPUs.

The dual encoder learns ITC; the fusion encoder ITC + ITM (hard negatives) + MDM, with its EMA teacher and queue;
the mixture of modality experts the same losses, one VLMo stage at a time (`--stage`: `rgb` trains on the RGB
images alone (masked image modelling), `depth` on the depth maps alone (masked depth modelling), `fusion` and
`joint` on the pairs). The loop is accelerate's
own example loop: `accelerator.accumulate`, `accelerator.backward`, clipping on the synchronising step,
`save_state` / `load_state` checkpoints, trackers. The same command runs on one process or under
`accelerate launch`; the contrastive losses and hard negatives then use the global batch (the models gather their
embeddings).

    hf-rgbd pretrain --model_name_or_path rgbd_clip:small --dataset synthetic --output_dir clip-pretrained
    accelerate launch --multi_gpu --num_processes 2 -m hf_rgbd.cli pretrain --model_name_or_path rgbd_albef:small \\
        --dataset sunrgbd --dataset_path SUNRGBD --per_device_train_batch_size 50 --output_dir albef-pretrained

Reproducibility: the data order comes from a seeded sampler and every sample's augmentation from a generator
seeded by (seed, epoch, row), so a run does not depend on the number of processes or data workers, and
`--resume_from_checkpoint` continues bit-identically (model, optimizer, scheduler, the teacher and queue, random
states, the position in the data). The output folder ends with the model and processor (`save_pretrained`), which
`hf-rgbd finetune --model_name_or_path` takes, plus `all_results.json` (the last losses and the retrieval of the
held-out split) and `pretraining_log.json` (the loss of every optimizer step).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .finetune import DataArguments, default_processor, load_finetune_dataset, new_model_preset

logger = logging.getLogger(__name__)

#: name of the file that marks a checkpoint folder complete (written last, the folder renamed into place after it)
CHECKPOINT_STATE_FILE = "pretraining_state.json"
#: families with pretraining losses: model_type -> the Auto class registering their pretraining model
PRETRAINING_AUTO_CLASSES = {
    "rgbd_clip": "AutoModel",
    "rgbd_albef": "AutoModelForPreTraining",
    "rgbd_vlmo": "AutoModelForPreTraining",
}
LOSS_NAMES = ("loss", "loss_itc", "loss_itm", "loss_mdm", "loss_mim")
# config fields that describe where a config came from, not the model: ignored when checking a checkpoint
_VOLATILE_CONFIG_KEYS = (
    "_name_or_path",
    "transformers_version",
    "architectures",
    "auto_map",
    "custom_pipelines",
    "dtype",
)


@dataclass
class PretrainModelArguments:
    """Which model to pretrain."""

    model_name_or_path: str = field(
        metadata={
            "help": "A family and size such as `rgbd_clip:small`, `rgbd_albef:small`, `rgbd_vlmo:tiny` (a new "
            "model), or a saved folder / hub id to continue from."
        }
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config fields to override, as `key=value` pairs separated by commas."}
    )
    stage: Literal["rgb", "depth", "fusion", "joint"] | None = field(
        default=None,
        metadata={
            "help": "Mixture of modality experts only: the VLMo training stage (`set_training_stage`); `rgb` trains "
            "on RGB alone (masked image modelling), `depth` on depth alone (masked depth modelling), `fusion` and "
            "`joint` on RGB-D pairs (ITC + ITM + MDM)."
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    attn_implementation: str | None = field(default=None, metadata={"help": "`eager` or `sdpa`."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where models downloaded from the hub are stored."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a hub model."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the stored login)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a model folder's own code."})


@dataclass
class PretrainingArguments:
    """How to pretrain (flag names as in accelerate's examples). Defaults: the recipe of
    `scripts/train_rgbd_clip.py` (AdamW at 1e-3, temperature at 10x, 5% warm-up then cosine, batch 100, 130
    epochs, weight decay 0.05, gradient clipping at 1)."""

    output_dir: str = field(default="hf-rgbd-pretrain", metadata={"help": "Where the model and checkpoints go."})
    per_device_train_batch_size: int = field(default=100, metadata={"help": "Pairs per process per micro-batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    logit_scale_lr_factor: float = field(
        default=10.0, metadata={"help": "The contrastive temperature's learning rate, as a multiple."}
    )
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on norms, biases, ...)."})
    num_train_epochs: int = field(default=130, metadata={"help": "Epochs (unless --max_train_steps is given)."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides the epochs."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "A transformers `get_scheduler` name."})
    num_warmup_steps: int | None = field(default=None, metadata={"help": "Warm-up steps (default: --warmup_ratio)."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Warm-up as a fraction of the optimizer steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed of the model, the data order and the augmentation."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "`bf16` on GPU (and CPU); default: the accelerate config's."}
    )
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save the training state every N optimizer steps, or `epoch`."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or `latest` (the newest in --output_dir)."}
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log every loss to the trackers of --report_to."})
    report_to: str = field(
        default="tensorboard", metadata={"help": "`tensorboard`, `trackio`, `all` ... (as accelerate's `log_with`)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Optimizer steps between tracker / progress updates."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})


# ---------------------------------------------------------------------------------------------------- data
class PretrainingRows(torch.utils.data.Dataset):
    """Rows of a `datasets` split as pretraining inputs, each augmented from its own generator seeded by
    (seed, epoch, row): the same sample gets the same crop, flip and jitter whichever process or worker reads
    it, in whatever batch, and whether or not the run was resumed. `set_epoch` moves on. A `DataLoader` fetches
    whole batches (`__getitems__`: one Arrow read and one processor call per batch).

    Items: `pixel_values` (3, H, W), `depth_values` (C, H, W), `depth_mask` (1, H, W) and, with
    `depth_vocab` = (vocab size, patch size, min depth, max depth), `depth_token_ids` (N,) for MDM.
    """

    def __init__(self, rows, processor, augment=None, seed: int = 0, depth_vocab: tuple | None = None) -> None:
        from ..data import RgbdTransform

        # numpy rows: the depth maps come out of Arrow as arrays, not as nested Python lists (twice as fast)
        self.rows = rows.with_format("numpy")
        self.processor = processor
        self.seed = int(seed)
        self.depth_vocab = depth_vocab
        self.epoch = 0
        self._transform = RgbdTransform(processor, augment=augment)
        self._augmented = augment is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def sample_seed(self, index: int) -> int:
        """The augmentation seed of row `index` in the current epoch."""
        state = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(2, dtype=np.uint32)
        return (int(state[0]) << 31) ^ int(state[1])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        from ..processors import depth_token_ids

        indices = [int(index) for index in indices]
        rows = self.rows[indices]
        columns = {key: rows[key] for key in ("image", "depth", "intrinsics") if key in rows}
        seeds = [self.sample_seed(index) for index in indices] if self._augmented else None
        batch = self._transform(columns, seeds=seeds)
        items = {key: batch[key] for key in ("pixel_values", "depth_values", "depth_mask")}
        if self.depth_vocab is not None:
            vocab_size, patch_size, min_depth, max_depth = self.depth_vocab
            mask = batch["depth_mask"]
            metres = self.processor.depth_image_processor.to_metres(batch["depth_values"], mask)
            items["depth_token_ids"] = depth_token_ids(metres, mask, vocab_size, patch_size, min_depth, max_depth)
        return [{key: value[row] for key, value in items.items()} for row in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]


def pretraining_depth_vocab(config) -> tuple | None:
    """(vocab size, patch size, min depth, max depth) of the depth words MDM predicts, None without MDM."""
    if float(getattr(config, "mdm_mask_ratio", 0.0) or 0.0) <= 0.0:
        return None
    return (
        int(config.depth_vocab_size),
        int(config.depth_config.patch_size_pair[0]),
        float(config.min_depth),
        float(config.max_depth),
    )


# ---------------------------------------------------------------------------------------------------- model
def pretraining_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, logit_scale_lr_factor: float
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on norms, biases, embeddings and the temperature,
    whose learning rate is `logit_scale_lr_factor` times larger (it travels from 1/0.07 to ~1/70 in a run)."""
    decay, no_decay, temperature = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:  # the EMA teacher, a frozen stage
            continue
        if name.endswith("logit_scale"):
            temperature.append(param)
        elif param.ndim < 2 or "embedding" in name or "cls_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        {"params": temperature, "weight_decay": 0.0, "lr": lr * logit_scale_lr_factor},
    ]
    # fused: one kernel per step instead of a loop over the parameters (about 10% of a CPU step at the small size)
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=lr, fused=True)


def build_pretraining_model(model_args: PretrainModelArguments):
    """(model, processor or None): a new pretraining model of a `family:size` preset, or the pretraining model
    of a saved folder / hub id with its processor."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    name = model_args.model_name_or_path
    hub = {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }
    preset = new_model_preset(name)
    config = preset[1]() if preset is not None else AutoConfig.from_pretrained(name, **hub)
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    config.validate()
    if config.model_type not in PRETRAINING_AUTO_CLASSES:
        raise ValueError(
            f"--model_name_or_path {name!r} is a {config.model_type} model, which has no pretraining losses; "
            f"pretraining families: {sorted(PRETRAINING_AUTO_CLASSES)}."
        )
    if model_args.stage is not None and config.model_type != "rgbd_vlmo":
        raise ValueError(
            f"--stage {model_args.stage!r}: only the mixture of modality experts (rgbd_vlmo) has training stages, "
            f"not {config.model_type}."
        )
    auto_class = getattr(transformers, PRETRAINING_AUTO_CLASSES[config.model_type])
    attention = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if preset is not None:
        return auto_class.from_config(config, **attention), None
    model = auto_class.from_pretrained(name, config=config, **attention, **hub)
    try:
        processor = AutoProcessor.from_pretrained(name, **hub)
    except (OSError, ValueError, KeyError) as err:
        logger.warning(f"{name} has no processor ({err}); building one from the train split.")
        processor = None
    return model, processor


# ---------------------------------------------------------------------------------------------------- checkpoints
def _comparable_config(config_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config_dict.items() if key not in _VOLATILE_CONFIG_KEYS}


def save_checkpoint(accelerator, folder: Path, state: dict[str, Any]) -> None:
    """`accelerator.save_state` into `folder` atomically: written as `folder.incomplete`, the state file last,
    then renamed, so an interrupted save never leaves a folder that looks complete."""
    partial = folder.with_name(folder.name + ".incomplete")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / CHECKPOINT_STATE_FILE).write_text(json.dumps(state, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)
    accelerator.wait_for_everyone()


def _checkpoint_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / CHECKPOINT_STATE_FILE).read_text())["completed_steps"])
    except (OSError, ValueError, KeyError):
        return -1


def resolve_checkpoint(value: str, output_dir: str) -> Path:
    """The folder `--resume_from_checkpoint` names (`latest`: the complete checkpoint of most steps in
    `output_dir`), checked to be a complete checkpoint."""
    if value == "latest":
        candidates = [p for p in Path(output_dir).glob("*") if p.is_dir() and _checkpoint_step(p) >= 0]
        if not candidates:
            raise ValueError(
                f"--resume_from_checkpoint latest: {output_dir} holds no complete checkpoint (folders with "
                f"{CHECKPOINT_STATE_FILE})."
            )
        return max(candidates, key=_checkpoint_step)
    folder = Path(value)
    if not folder.is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r}: no such folder.")
    if not (folder / CHECKPOINT_STATE_FILE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {value!r} is not a complete checkpoint (no {CHECKPOINT_STATE_FILE}: an "
            "interrupted save, or not a checkpoint of `hf-rgbd pretrain`)."
        )
    return folder


def check_checkpoint(state: dict[str, Any], config, world_batch: int, value: str) -> None:
    """ValueError naming `--resume_from_checkpoint` when the checkpoint is of another family, config or batch."""
    if state.get("model_type") != config.model_type:
        raise ValueError(
            f"--resume_from_checkpoint {value!r} holds a {state.get('model_type')} model; this run pretrains "
            f"{config.model_type}."
        )
    # compared as JSON holds them (string keys, lists)
    saved = _comparable_config(state.get("config", {}))
    current = _comparable_config(json.loads(json.dumps(config.to_dict(), default=str)))
    differing = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if differing:
        raise ValueError(
            f"--resume_from_checkpoint {value!r} was saved with another config (fields {differing} differ); resume "
            "with the same --model_name_or_path and --config_overrides."
        )
    if state.get("global_batch_size") != world_batch:
        raise ValueError(
            f"--resume_from_checkpoint {value!r} was saved with a global batch of {state.get('global_batch_size')}"
            f" pairs per micro-batch, this run has {world_batch}: the position in the data would not match."
        )


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def retrieval_of(model, loader, accelerator) -> dict[str, float]:
    """RGB <-> depth retrieval (R@1/5/10 both ways) of the unimodal ITC embeddings over all of `loader`."""
    from ..evaluation import retrieval_metrics

    trunk = accelerator.unwrap_model(model).base_model
    model.eval()
    rgb, depth = [], []
    for batch in loader:
        rgb_out = trunk.get_rgb_features(batch["pixel_values"], return_dict=True).pooler_output
        depth_out = trunk.get_depth_features(
            batch["depth_values"], batch["depth_mask"], return_dict=True
        ).pooler_output
        rgb.append(accelerator.gather_for_metrics(torch.nn.functional.normalize(rgb_out.float(), dim=-1)))
        depth.append(accelerator.gather_for_metrics(torch.nn.functional.normalize(depth_out.float(), dim=-1)))
    model.train()
    metrics = retrieval_metrics(torch.cat(rgb), torch.cat(depth))
    return {key: float(value) for key, value in metrics.items()}


# ---------------------------------------------------------------------------------------------------- training
def _checkpointing_every(value: str | None) -> int | str | None:
    if value is None or value == "epoch":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f"--checkpointing_steps must be a positive number of steps or `epoch`, got {value!r}.")


def _check_arguments(args: PretrainingArguments) -> None:
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "logging_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(f"--max_train_steps must be >= 1 (or left out), got {args.max_train_steps}.")
    if not 0.0 <= args.warmup_ratio < 1.0:
        raise ValueError(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}.")
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}.")


def run_pretraining(
    model_args: PretrainModelArguments, data_args: DataArguments, args: PretrainingArguments
) -> dict[str, float]:
    """Pretrain, checkpoint, resume, log and save (see the module docstring). Returns `all_results.json`'s
    figures: the last logged losses and the held-out retrieval."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from ..data import RgbdDataCollator
    from .finetune import training_augment
    from .stages import UNIMODAL_STAGE_DROPPED_INPUTS, set_training_stage

    _check_arguments(args)
    checkpointing_every = _checkpointing_every(args.checkpointing_steps)
    accelerator = Accelerator(
        # without an accelerator, ranks started by `accelerate launch --multi_gpu` (or torchrun) join over gloo:
        # accelerate >= 1.16 only does so when told to use the CPU, and otherwise runs each rank alone
        cpu=not torch.accelerator.is_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to if args.with_tracking else None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # frozen stages and unused heads (MDM off) leave parameters without gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    # every rank says so: a launch that silently starts one process shows
    logger.info(
        f"process {accelerator.process_index} of {accelerator.num_processes} ({accelerator.distributed_type.value}, "
        f"device {accelerator.device})"
    )
    world_batch = args.per_device_train_batch_size * accelerator.num_processes
    dropped_inputs = UNIMODAL_STAGE_DROPPED_INPUTS.get(model_args.stage, ())  # a unimodal stage: one modality
    if world_batch < 2 and not dropped_inputs:
        raise ValueError(
            "--per_device_train_batch_size 1 on one process gives a global batch of one pair: the contrastive "
            "loss needs at least 2 (every other pair of the batch is a negative)."
        )
    set_seed(args.seed)
    data = load_finetune_dataset(data_args, seed=args.seed)
    model, processor = build_pretraining_model(model_args)
    if processor is None:
        processor = default_processor(model.config, data["train"], data_args.image_size)
    if model_args.stage is not None:
        accelerator.print(set_training_stage(model, model_args.stage))
    if model_args.gradient_checkpointing:
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()  # its v5 name
    if accelerator.num_processes > 1 and any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        if accelerator.device.type == "cuda":  # global batch statistics, as one process would compute them
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm runs on accelerators only
            logger.warning("batch norm statistics are per process on CPU (SyncBatchNorm needs an accelerator).")
    augment = training_augment(processor, data_args, args.seed)
    vocab = pretraining_depth_vocab(model.config)
    train = PretrainingRows(data["train"], processor, augment, seed=args.seed, depth_vocab=vocab)
    if len(train) < world_batch:
        raise ValueError(f"the train split has {len(train)} rows, fewer than one global batch ({world_batch}).")
    loader_kwargs = {"collate_fn": RgbdDataCollator(), "num_workers": args.dataloader_num_workers}
    train_loader = torch.utils.data.DataLoader(
        train, batch_size=args.per_device_train_batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(args.seed), **loader_kwargs,
    )  # fmt: skip
    held_out = "test" if "test" in data else "validation"
    eval_loader = torch.utils.data.DataLoader(
        PretrainingRows(data[held_out], processor), batch_size=args.per_device_train_batch_size, **loader_kwargs
    )
    optimizer = pretraining_optimizer(model, args.learning_rate, args.weight_decay, args.logit_scale_lr_factor)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    epochs = math.ceil(max_steps / steps_per_epoch)
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else max(1, int(args.warmup_ratio * max_steps))
    # stepped once per optimizer step on every process (not through `prepare`, which steps it once per process)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)
    accelerator.register_for_checkpointing(scheduler)

    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config
    if args.with_tracking:
        accelerator.init_trackers(
            "hf-rgbd-pretrain",
            {**{k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))},
             "model_type": config.model_type, "num_processes": accelerator.num_processes},
        )  # fmt: skip
    completed_steps, starting_epoch, skip_batches = 0, 0, 0
    log_history: list[dict[str, float]] = []
    if args.resume_from_checkpoint:
        folder = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
        state = json.loads((folder / CHECKPOINT_STATE_FILE).read_text())
        check_checkpoint(state, config, world_batch, args.resume_from_checkpoint)
        accelerator.print(f"resuming from {folder} (step {state['completed_steps']})")
        accelerator.load_state(str(folder))
        completed_steps = int(state["completed_steps"])
        log_history = list(state.get("log_history", []))
        starting_epoch = completed_steps // steps_per_epoch
        skip_batches = (completed_steps % steps_per_epoch) * args.gradient_accumulation_steps

    def checkpoint(name: str, epoch: int) -> None:
        save_checkpoint(
            accelerator,
            Path(args.output_dir) / name,
            {
                "completed_steps": completed_steps, "epoch": epoch, "model_type": config.model_type,
                "config": json.loads(json.dumps(config.to_dict(), default=str)), "global_batch_size": world_batch, "log_history": log_history,
            },
        )  # fmt: skip

    progress = tqdm(
        total=max_steps, initial=completed_steps, desc="pretraining", unit="step",
        disable=args.disable_tqdm or not accelerator.is_local_main_process,
    )  # fmt: skip
    window: dict[str, list[float]] = {}
    model.train()
    for epoch in range(starting_epoch, epochs):
        train_loader.set_epoch(epoch)
        train.set_epoch(epoch)
        batches = train_loader
        if epoch == starting_epoch and skip_batches:
            batches = accelerator.skip_first_batches(train_loader, skip_batches)
        step_losses: dict[str, list[torch.Tensor]] = {}
        for batch in batches:
            with accelerator.accumulate(model):
                inputs = {key: value for key, value in batch.items() if key not in dropped_inputs}
                outputs = model(**inputs, return_loss=True)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for name in LOSS_NAMES:
                if outputs.get(name) is not None:
                    step_losses.setdefault(name, []).append(outputs[name].detach().float())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            if callable(getattr(unwrapped, "momentum_update", None)):  # the EMA teacher (a no-op without one)
                unwrapped.momentum_update()
            completed_steps += 1
            # ITC is already the global batch's on every process; ITM / MDM are per-process means: average them
            losses = {
                name: float(accelerator.reduce(torch.stack(values).mean(), "mean"))
                for name, values in step_losses.items()
            }
            step_losses = {}
            log_history.append({"step": completed_steps, **losses, "learning_rate": scheduler.get_last_lr()[0]})
            for name, value in losses.items():
                window.setdefault(name, []).append(value)
            progress.update(1)
            if completed_steps % args.logging_steps == 0 or completed_steps == max_steps:
                means = {name: float(np.mean(values)) for name, values in window.items()}
                progress.set_postfix({name.removeprefix("loss_"): f"{value:.3f}" for name, value in means.items()})
                if progress.disable and accelerator.is_main_process:  # no bar: a log line instead
                    logger.info(
                        f"step {completed_steps}/{max_steps} (epoch {epoch + 1}/{epochs}): "
                        + ", ".join(f"{name} {value:.4f}" for name, value in means.items())
                    )
                if args.with_tracking:
                    accelerator.log(
                        {**means, "learning_rate": scheduler.get_last_lr()[0], "epoch": epoch}, step=completed_steps
                    )
                window = {}
            if isinstance(checkpointing_every, int) and completed_steps % checkpointing_every == 0:
                checkpoint(f"step_{completed_steps}", epoch)
            if completed_steps >= max_steps:
                break
        if checkpointing_every == "epoch":
            checkpoint(f"epoch_{epoch}", epoch + 1)
        if completed_steps >= max_steps:
            break
    progress.close()

    results = (
        {f"train_{key}": value for key, value in log_history[-1].items() if key.startswith("loss")}
        if log_history
        else {}
    )
    results.update({f"eval_{key}": value for key, value in retrieval_of(model, eval_loader, accelerator).items()})
    results["train_steps"] = completed_steps
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.log(
            {key: value for key, value in results.items() if key.startswith("eval_")}, step=completed_steps
        )
        accelerator.end_training()
    unwrapped.save_pretrained(
        args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    if accelerator.is_main_process:
        processor.save_pretrained(args.output_dir)
        output = Path(args.output_dir)
        (output / "all_results.json").write_text(json.dumps(results, indent=2))
        (output / "pretraining_log.json").write_text(
            json.dumps({"num_processes": accelerator.num_processes, "log_history": log_history}, indent=2)
        )
        accelerator.print(
            f"{completed_steps} steps; held-out ({held_out}) RGB->depth R@1 {100 * results['eval_rgb_to_depth_R@1']:.1f}%"
            f", depth->RGB R@1 {100 * results['eval_depth_to_rgb_R@1']:.1f}%; saved to {args.output_dir}"
        )
    return results


def parse_pretrain_args(argv: Sequence[str] | None = None):
    """(PretrainModelArguments, DataArguments, PretrainingArguments) from the command line or one `.json` file."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((PretrainModelArguments, DataArguments, PretrainingArguments), prog="hf-rgbd pretrain")
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict(json.loads(Path(argv[0]).read_text()))
    return parser.parse_args_into_dataclasses(args=argv)


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-rgbd pretrain`."""
    model_args, data_args, args = parse_pretrain_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_rgbd").setLevel(logging.INFO)
    run_pretraining(model_args, data_args, args)
    return 0


__all__ = [
    "CHECKPOINT_STATE_FILE",
    "PretrainModelArguments",
    "PretrainingArguments",
    "PretrainingRows",
    "build_pretraining_model",
    "parse_pretrain_args",
    "pretrain_main",
    "pretraining_optimizer",
    "run_pretraining",
]
