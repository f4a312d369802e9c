"""`RgbdTrainer`: `transformers.Trainer` whose model card also describes the RGB-D model."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from ..pipelines.pipeline_rgbd_card import write_model_card


class RgbdTrainer(Trainer):
    """`Trainer` whose model card (`create_model_card`, which `push_to_hub` also runs) gets the RGB-D section: the
    pipeline tasks the model serves, its modalities, its depth representation and units, and a pipeline call. The
    `processing_class` must be the model's [`RgbdProcessor`]."""

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            tasks = list(getattr(self.model, "pipeline_tasks", ()))
            write_model_card(self.args.output_dir, self.model, self.processing_class, tasks)
