"""Pieces shared by every hf_rgbd model family.

Part of the flat `hf_rgbd.modeling` folder: it imports nothing from hf_rgbd, so saved model folders carry it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class RgbdAutoMapMixin:
    """Makes a saved folder loadable under every Auto class of its family with `trust_remote_code=True`.

    `save_pretrained` of a class registered with `register_for_auto_class` writes only that class's entry into the
    config's `auto_map`; this mixin (placed before `PreTrainedModel` in the bases) adds `AutoConfig` and every
    entry of `auto_map_classes` (`{"AutoModel": "RgbdCnnModel", ...}`, classes of the model's own module).
    """

    auto_map_classes: ClassVar[dict[str, str]] = {}

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_auto_class", None) is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]  # also right when loaded as remote code
            config_class = type(self.config)
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", f"{config_class.__module__.rsplit('.', 1)[-1]}.{config_class.__name__}")
            for auto_class, class_name in self.auto_map_classes.items():
                auto_map.setdefault(auto_class, f"{module}.{class_name}")
            self.config.auto_map = auto_map
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


def check_labels(labels: Any, batch_size: int) -> None:
    """ValueError naming `labels` unless it is a tensor with one entry (or row) per sample."""
    if not isinstance(labels, torch.Tensor) or labels.ndim == 0 or labels.shape[0] != batch_size:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must have one entry per sample ({batch_size}), got {shape}.")


__all__ = ["RgbdAutoMapMixin", "check_labels", "draw_modality_dropout"]
