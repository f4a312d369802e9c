"""A small seeded training loop for RGB-D classifiers on in-memory tensors (CPU experiments, probes, benchmarks).

For data that fits in memory (the synthetic scenes: 2000 pairs at 64x64 are ~150 MB as float tensors) this loop
avoids the per-step overhead of a `DataLoader` + `Trainer`: the split is processed once by an `RgbdProcessor`,
mini-batches are index views, and the aligned augmentation (random horizontal flip and translation) runs batched.
Any model whose forward takes the processor's keys and `labels` and returns `.loss` / `.logits` works
(`RgbdCnnForImageClassification`, `RgbdClipForImageClassification`, ...). Use `transformers.Trainer` for
everything else; these models work with it too.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.augmentation import random_flip_shift
from ..processors.validation_rgbd import check_int, is_number
from ..utils import progress_bar

INPUT_KEYS = ("pixel_values", "depth_values", "depth_mask")
#: the model inputs each value of the shared `modalities` config field reads
MODALITY_INPUT_KEYS = {
    "rgbd": INPUT_KEYS,
    "rgb": ("pixel_values",),
    "depth": ("depth_values", "depth_mask"),
}


@dataclass
class ClassifierTrainingResult:
    """What [`train_classifier`] did.

    Attributes:
        best_validation_accuracy: highest validation accuracy over the epochs (None without validation data).
        best_epoch: 1-based epoch whose weights the model holds at the end (the last one without validation data).
        validation_history: validation accuracy after every epoch.
        loss_history: mean training loss of every epoch.
        train_seconds / train_cpu_seconds: wall-clock and process CPU time of the training epochs (validation and
            weight copies excluded).
    """

    best_validation_accuracy: float | None = None
    best_epoch: int = 0
    validation_history: list[float] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0


def to_channels_last(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """4-D tensors of `inputs` in `torch.channels_last` memory format (faster CPU convolutions); others as they are."""
    return {
        key: value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
        for key, value in inputs.items()
    }


@torch.no_grad()
def classification_accuracy(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int = 250,
    disable_tqdm: bool | None = None,
) -> float:
    """Top-1 accuracy of `model(**inputs).logits` against `labels` (N,), in eval mode (the caller's mode is
    restored), `batch_size` samples per forward. A progress bar counts the samples (`disable_tqdm=True` or
    `hf_rgbd.disable_progress_bars()` turn it off)."""
    check_int(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    correct = 0
    bar = progress_bar(total=labels.shape[0], desc="Evaluating", unit="sample", leave=False, disable_tqdm=disable_tqdm)
    with bar:
        for start in range(0, labels.shape[0], batch_size):
            batch = {key: value[start : start + batch_size] for key, value in inputs.items()}
            correct += int((model(**batch).logits.argmax(-1) == labels[start : start + batch_size]).sum())
            bar.update(min(batch_size, labels.shape[0] - start))
    model.train(was_training)
    return correct / max(labels.shape[0], 1)


def train_classifier(
    model: nn.Module,
    train_inputs: Mapping[str, torch.Tensor],
    train_labels: torch.Tensor,
    validation_inputs: Mapping[str, torch.Tensor] | None = None,
    validation_labels: torch.Tensor | None = None,
    epochs: int = 60,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_ratio: float = 0.2,
    max_shift: int = 4,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    max_grad_norm: float | None = None,
    disable_tqdm: bool | None = None,
    max_seconds: float | None = None,
    bf16: bool = False,
) -> ClassifierTrainingResult:
    """Train `model` in place with AdamW and a one-cycle learning-rate schedule, keeping the best validation epoch.

    Args:
        model: classifier called as `model(**batch, labels=labels)`, returning `.loss` and `.logits`.
        train_inputs: (N, ...) tensors keyed by the model's input names (e.g. from [`split_to_tensors`]).
        train_labels: (N,) class indices.
        validation_inputs, validation_labels: evaluated after every epoch; the weights of the best epoch are
            restored at the end. Without them the last epoch's weights are kept.
        epochs, batch_size, learning_rate, weight_decay: the optimisation (peak learning rate of the one-cycle
            schedule, `warmup_ratio` of the steps rising to it).
        max_shift: translation range of [`random_flip_shift`] (0 with no flips disables augmentation: pass -1).
        seed: seeds batch order, augmentation and the model's own random draws (modality dropout, dropout)
            through a private generator and a forked global RNG: the caller's RNG state is left untouched.
        log: called with one line per epoch (e.g. `print`).
        max_grad_norm: clip the gradients' global norm to this value before each step (as the Trainer's
            `max_grad_norm`); None (the default) does not clip.
        disable_tqdm: True hides the progress bar over the training steps (as `TrainingArguments.disable_tqdm`);
            `hf_rgbd.disable_progress_bars()` or `HF_RGBD_DISABLE_PROGRESS_BARS=1` hide it everywhere.
        max_seconds: a wall-clock cap: training stops after the epoch that brings `train_seconds` to it (the
            schedule stays sized for `epochs`; `len(result.loss_history)` says how many ran). None: no cap.
        bf16: run the training forward passes under bfloat16 autocast (as `TrainingArguments.bf16`; on the CPU it
            pays where the CPU has native bfloat16, AVX512-BF16 or AMX); the weights, optimizer and validation stay
            in float32.

    Returns:
        [`ClassifierTrainingResult`]; the model is left in eval mode.
    """
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 1)
    if max_grad_norm is not None and not (is_number(max_grad_norm) and max_grad_norm > 0):
        raise ValueError(f"`max_grad_norm` must be a positive number or None, got {max_grad_norm!r}.")
    if max_seconds is not None and not (is_number(max_seconds) and max_seconds > 0):
        raise ValueError(f"`max_seconds` must be a positive number or None, got {max_seconds!r}.")
    if not isinstance(bf16, bool):
        raise ValueError(f"`bf16` must be a bool, got {bf16!r}.")
    if (validation_inputs is None) != (validation_labels is None):
        raise ValueError("pass both `validation_inputs` and `validation_labels`, or neither.")
    count = train_labels.shape[0]
    for key, value in train_inputs.items():
        if value.shape[0] != count:
            raise ValueError(f"`train_inputs[{key!r}]` has {value.shape[0]} rows, `train_labels` {count}.")
    parameters = [param for param in model.parameters() if param.requires_grad]
    # the fused kernel (CPU and CUDA) does one pass per step instead of a loop over the parameters
    fused = all(param.device.type in ("cpu", "cuda") and param.is_floating_point() for param in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=fused or None)
    device_type = parameters[0].device.type if parameters else "cpu"
    steps_per_epoch = -(-count // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=warmup_ratio
    )
    generator = torch.Generator().manual_seed(seed)
    result = ClassifierTrainingResult()
    best_state = None
    bar = progress_bar(total=epochs * steps_per_epoch, desc="Training", unit="step", disable_tqdm=disable_tqdm)
    with torch.random.fork_rng(devices=[]), bar:
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            model.train()
            order = torch.randperm(count, generator=generator)
            loss_sum = 0.0
            for begin in range(0, count, batch_size):
                index = order[begin : begin + batch_size]
                batch = {key: value[index] for key, value in train_inputs.items()}
                if max_shift >= 0:
                    batch = random_flip_shift(batch, generator, max_shift)
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(**batch, labels=train_labels[index]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
                optimizer.step()
                schedule.step()
                loss_sum += float(loss.detach()) * index.shape[0]
                bar.update()
            result.train_seconds += time.perf_counter() - start
            result.train_cpu_seconds += time.process_time() - cpu_start
            result.loss_history.append(loss_sum / count)
            line = f"epoch {epoch}/{epochs}: loss {loss_sum / count:.4f}"
            postfix = {"epoch": epoch, "loss": f"{loss_sum / count:.4f}"}
            if validation_inputs is not None:
                accuracy = classification_accuracy(model, validation_inputs, validation_labels, disable_tqdm=True)
                result.validation_history.append(accuracy)
                line += f", validation accuracy {accuracy:.4f}"
                postfix["validation accuracy"] = f"{accuracy:.4f}"
                if result.best_validation_accuracy is None or accuracy > result.best_validation_accuracy:
                    result.best_validation_accuracy, result.best_epoch = accuracy, epoch
                    best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(postfix, refresh=False)
            if log is not None:
                log(line)
            if max_seconds is not None and result.train_seconds >= max_seconds:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.loss_history)
    model.eval()
    return result


def train_cnn_classifier(
    train: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    validation: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    class_names: list[str],
    config_overrides: dict[str, Any] | None = None,
    seed: int = 0,
    memory_format: torch.memory_format = torch.contiguous_format,
    **training_kwargs: Any,
) -> tuple[nn.Module, ClassifierTrainingResult]:
    """Build `RgbdCnnForImageClassification(RgbdCnnConfig.small(**config_overrides))` (weights seeded with `seed`,
    the caller's RNG untouched) and train it with [`train_classifier`].

    Args:
        train, validation: `(inputs, labels)` pairs as [`split_to_tensors`] returns them (only the keys the
            configured `modalities` reads; see `MODALITY_INPUT_KEYS`).
        class_names: label names (`num_labels`, `id2label`, `label2id`).
        config_overrides: `RgbdCnnConfig` fields (`fusion_type`, `modalities`, `depth_channels`, ...).
        seed: weight initialisation and `train_classifier`'s seed.
        memory_format: of the model's weights (`torch.channels_last` speeds up CPU convolutions when the inputs are
            channels-last too, see [`to_channels_last`]).
        training_kwargs: the rest of [`train_classifier`]'s arguments (`epochs`, `learning_rate`, `log`, ...).

    Returns:
        the trained model (eval mode, best validation epoch) and the [`ClassifierTrainingResult`].
    """
    from ..modeling import RgbdCnnConfig, RgbdCnnForImageClassification

    config = RgbdCnnConfig.small(
        num_labels=len(class_names),
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
        **(config_overrides or {}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RgbdCnnForImageClassification(config).to(memory_format=memory_format)
    result = train_classifier(model, *train, *validation, seed=seed, **training_kwargs)
    return model, result


__all__ = [
    "MODALITY_INPUT_KEYS",
    "ClassifierTrainingResult",
    "classification_accuracy",
    "to_channels_last",
    "train_classifier",
    "train_cnn_classifier",
]
