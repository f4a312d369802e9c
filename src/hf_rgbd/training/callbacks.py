"""`transformers.Trainer` callbacks of the pretraining models."""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.modeling_utils import unwrap_model


class MomentumUpdateCallback(TrainerCallback):
    r"""
    Updates the EMA teacher of momentum distillation after every optimizer step: `on_step_end` (once per optimizer
    step, after gradient accumulation, not once per micro-batch) calls `momentum_update()` on the trained model,
    unwrapped from DDP / accelerate / `torch.compile` wrappers. Models without `momentum_update` are left alone.

    ```python
    trainer = Trainer(model=RgbdAlbefForPreTraining(config), args=args, train_dataset=dataset,
                      callbacks=[MomentumUpdateCallback()])
    ```
    """

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            return
        update = getattr(unwrap_model(model, recursive=True), "momentum_update", None)
        if callable(update):
            update()
