"""Pieces shared by every hf_rgbd model family.

Part of the flat `hf_rgbd.modeling` folder: it imports nothing from hf_rgbd, so saved model folders carry it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from transformers.dynamic_module_utils import custom_object_save


class RgbdAutoMapMixin:
    """Makes a saved folder loadable under every Auto class of its family with `trust_remote_code=True`, and
    usable by `pipeline(task, model=folder, trust_remote_code=True)` for the RGB-D tasks the model serves.

    `save_pretrained` of a class registered with `register_for_auto_class` writes only that class's entry into the
    config's `auto_map`; this mixin (placed before `PreTrainedModel` in the bases) adds `AutoConfig` and every
    entry of `auto_map_classes` (`{"AutoModel": "RgbdCnnModel", ...}`, classes of the model's own module). For each
    of the class's `pipeline_tasks` that `hf_rgbd.pipelines` registered (in `pipeline_registry`), it writes the
    task into the config's `custom_pipelines` and copies the pipeline code into the folder.
    """

    auto_map_classes: ClassVar[dict[str, str]] = {}
    #: the RGB-D pipeline tasks a saved folder of this class serves
    pipeline_tasks: ClassVar[tuple[str, ...]] = ()
    #: task -> (pipeline class, names of the transformers Auto classes that load its model); filled at
    #: `import hf_rgbd` (empty where this module runs as remote code)
    pipeline_registry: ClassVar[dict[str, tuple[type, tuple[str, ...]]]] = {}

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_auto_class", None) is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]  # also right when loaded as remote code
            config_class = type(self.config)
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", f"{config_class.__module__.rsplit('.', 1)[-1]}.{config_class.__name__}")
            for auto_class, class_name in self.auto_map_classes.items():
                auto_map.setdefault(auto_class, f"{module}.{class_name}")
            self.config.auto_map = auto_map
            pipelines = {task: self.pipeline_registry[task] for task in self.pipeline_tasks if task in self.pipeline_registry}
            if pipelines:
                self.config.custom_pipelines = {
                    task: {
                        "impl": f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}",
                        "pt": list(auto_classes),
                        "tf": [],
                        "type": "multimodal",
                    }
                    for task, (cls, auto_classes) in pipelines.items()
                }
                if kwargs.get("is_main_process", True):  # before saving: `push_to_hub=True` uploads the folder
                    os.makedirs(save_directory, exist_ok=True)
                    for cls, _ in pipelines.values():
                        custom_object_save(cls, save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)


def draw_modality_dropout(
    modality_dropout: tuple[float, float] | list[float], batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples lose a modality in training: `(drop_rgb, drop_depth)`, (B,) bool each.

    One uniform draw `u` per sample from torch's global generator drops RGB if `u < p_rgb` and depth if
    `p_rgb <= u < p_rgb + p_depth`, so a sample never loses both (`modality_dropout = (p_rgb, p_depth)`).
    """
    p_rgb, p_depth = modality_dropout
    draw = torch.rand(batch_size, device=device)
    return draw < p_rgb, (draw >= p_rgb) & (draw < p_rgb + p_depth)


# ------------------------------------------------------------------------------------- input checks (one each)
# These read shapes and dtypes only, never tensor values, so they cost no host sync inside a training step.
def check_image_tensor(values: Any, name: str, channels: int | None = None, channels_field: str = "") -> None:
    """ValueError naming `name` unless `values` is a floating-point (B, C, H, W) tensor with B >= 1 (an empty batch
    is an error in every family), with `C == channels` when given (`channels_field` names the config field it comes from, e.g. `"config.num_channels"`)."""
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating-point torch.Tensor, got {getattr(values, 'dtype', type(values).__name__)}."
        )
    if values.ndim != 4:
        raise ValueError(f"`{name}` must be (batch, channels, height, width), got shape {tuple(values.shape)}.")
    if 0 in values.shape:
        raise ValueError(f"`{name}` is empty (shape {tuple(values.shape)}): pass at least one sample of size >= 1.")
    if channels is not None and values.shape[1] != channels:
        raise ValueError(
            f"`{name}` has {values.shape[1]} channels but the model expects {channels} ({channels_field}); shape "
            f"{tuple(values.shape)}."
        )


def check_same_batch(pixel_values: Any, depth_values: Any) -> None:
    """ValueError naming the argument unless each given input (None: not given) is an image tensor
    ([`check_image_tensor`]), and both, when given, hold the same number of samples."""
    for name, values in (("pixel_values", pixel_values), ("depth_values", depth_values)):
        if values is not None:
            check_image_tensor(values, name)
    if pixel_values is not None and depth_values is not None and pixel_values.shape[0] != depth_values.shape[0]:
        raise ValueError(
            "`pixel_values` and `depth_values` must hold the same number of pairs (the same batch size), got batch "
            f"sizes {pixel_values.shape[0]} and {depth_values.shape[0]}."
        )


def check_depth_mask(depth_mask: Any, depth_values: torch.Tensor) -> torch.Tensor:
    """Validate `depth_mask` against `depth_values` (B, C, H, W); return it as (B, 1, H, W) bool (non-zero = valid).

    A (B, H, W) mask is accepted and given its channel axis."""
    if not isinstance(depth_mask, torch.Tensor):
        raise ValueError(f"`depth_mask` must be a torch.Tensor, got {type(depth_mask).__name__}.")
    if depth_mask.dim() == 3:
        depth_mask = depth_mask.unsqueeze(1)
    expected = (depth_values.shape[0], 1, *depth_values.shape[-2:])
    if tuple(depth_mask.shape) != expected:
        raise ValueError(
            f"`depth_mask` must have shape {expected} (batch, 1, height, width) like `depth_values`, "
            f"got {tuple(depth_mask.shape)}."
        )
    return depth_mask if depth_mask.dtype == torch.bool else depth_mask != 0


def check_labels(labels: Any, batch_size: int) -> None:
    """ValueError naming `labels` unless it is a tensor with one entry (or row) per sample."""
    if not isinstance(labels, torch.Tensor) or labels.ndim == 0 or labels.shape[0] != batch_size:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must have one entry per sample ({batch_size}), got {shape}.")


def effective_depth_mask(depth_values: torch.Tensor, depth_mask: Any = None) -> torch.Tensor:
    """The mask a model uses, (B, 1, H, W) bool: `depth_mask` (checked by `check_depth_mask`; None: all valid) and
    every channel of `depth_values` finite, so NaN / inf depth is a hole in every family. Non-syncing."""
    finite = torch.isfinite(depth_values).all(dim=1, keepdim=True)
    if depth_mask is None:
        return finite
    return check_depth_mask(depth_mask, depth_values) & finite


def check_batch_norm_batch(batch_size: int, spatial_size: tuple[int, int], training: bool, name: str) -> None:
    """ValueError naming `name` when a batch norm in training would see a single value per channel (batch of one
    sample whose smallest feature map is 1x1): torch's own error would not say which input or what to do."""
    if training and batch_size * spatial_size[0] * spatial_size[1] == 1:
        raise ValueError(
            f"`{name}` holds one sample whose smallest feature map is 1x1: batch norm in training needs more than "
            "one value per channel; use a batch of at least 2 samples, larger images, or `model.eval()`."
        )


def label_problem_type(labels: torch.Tensor, config: Any) -> str:
    """The loss transformers' classification loss picks for `labels` (without writing it into `config`)."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    is_integer = not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool
    return "single_label_classification" if is_integer else "multi_label_classification"


def check_classification_labels(labels: Any, logits: torch.Tensor, config: Any, check_values: bool) -> torch.Tensor:
    """`labels` ready for the classification loss of `logits` (B, num_labels): integer class indices (B,) as long,
    or float targets (B, num_labels) / (B,) for the multi-label / regression losses; ValueError naming `labels`
    otherwise.

    Class indices must lie in [0, num_labels) or be -100 (ignored). With `check_values` (outside training) that is
    checked on the host (ValueError); in training it is `torch._assert_async` (no host sync: on CPU it raises a
    RuntimeError naming `labels` at once, on an accelerator it fails the step at the next synchronisation), the
    same guard torch's own kernels have, but with a message that names the argument."""
    batch_size, num_labels = logits.shape[0], config.num_labels
    check_labels(labels, batch_size)
    if num_labels < 1:
        raise ValueError("`labels` need a classification head, but this model has `config.num_labels=0`.")
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"`labels` must be integer class indices or float targets, got {labels.dtype}.")
    problem_type = label_problem_type(labels, config)
    if problem_type == "single_label_classification":
        if labels.is_floating_point() or labels.ndim != 1:
            raise ValueError(
                f"`labels` must be integer class indices of shape ({batch_size},) for "
                f"problem_type='single_label_classification', got {labels.dtype} {tuple(labels.shape)}."
            )
        labels = labels.long()
        valid = ((labels >= 0) & (labels < num_labels)) | (labels == -100)
        message = f"`labels` must be class indices in [0, {num_labels}) or -100 (ignored)."
        if check_values:
            if not bool(valid.all()):
                raise ValueError(f"{message} Got {labels[~valid].unique()[:8].tolist()}.")
        else:
            torch._assert_async(valid.all(), message)
        return labels
    expected = (batch_size,) if problem_type == "regression" and num_labels == 1 else (batch_size, num_labels)
    if tuple(labels.shape) not in {expected, (batch_size, num_labels)}:
        raise ValueError(
            f"`labels` for problem_type={problem_type!r} must have shape {expected}, got {tuple(labels.shape)}."
        )
    labels = labels.to(logits.dtype)
    if check_values and not bool(torch.isfinite(labels).all()):
        raise ValueError("`labels` must be finite.")
    return labels


def classification_loss(
    loss_function: Callable[..., torch.Tensor], labels: torch.Tensor, logits: torch.Tensor, config: Any, **kwargs: Any
) -> torch.Tensor:
    """`loss_function(labels, logits, config, **kwargs)` (transformers' classification loss), but 0 (a sum over no
    items, with zero gradients) instead of NaN when every class label is -100. `labels` as returned by
    `check_classification_labels`."""
    loss = loss_function(labels=labels, pooled_logits=logits, config=config, **kwargs)
    if labels.is_floating_point():
        return loss
    counted = (labels != -100).any()
    return torch.where(counted, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def fused_classification_loss(
    loss_function: Callable[..., torch.Tensor],
    labels: torch.Tensor,
    logits: torch.Tensor,
    auxiliary_logits: tuple[torch.Tensor | None, ...],
    config: Any,
) -> torch.Tensor:
    """`classification_loss` of the fused `logits` plus `config.auxiliary_loss_weight` times that of each given
    per-modality auxiliary head's logits (None: that head or modality is absent)."""
    loss = classification_loss(loss_function, labels, logits, config)
    for head_logits in auxiliary_logits:
        if head_logits is not None:
            loss = loss + config.auxiliary_loss_weight * classification_loss(loss_function, labels, head_logits, config)
    return loss


def check_flag(value: Any, name: str) -> bool:
    """`value` if it is a bool (or None, read as False); ValueError naming `name` otherwise (a tensor or a string
    here is a misplaced argument, and its truth value would be silently wrong)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool, got {type(value).__name__}.")
    return value


__all__ = [
    "RgbdAutoMapMixin",
    "check_same_batch",
    "check_batch_norm_batch",
    "check_classification_labels",
    "check_depth_mask",
    "check_flag",
    "check_image_tensor",
    "check_labels",
    "classification_loss",
    "draw_modality_dropout",
    "effective_depth_mask",
    "fused_classification_loss",
    "label_problem_type",
]
