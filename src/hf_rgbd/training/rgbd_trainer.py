"""`RgbdTrainer`: `transformers.Trainer` whose model card also describes the RGB-D model."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from ..pipelines.pipeline_rgbd_card import write_model_card


class RgbdTrainer(Trainer):
    """`Trainer` whose model card (`create_model_card`, which `save_model` and `push_to_hub` run when pushing) gets
    the RGB-D section: the pipeline tasks the model serves, its modalities, its depth representation and units,
    and a pipeline call. The `processing_class` must be the model's [`RgbdProcessor`].

    Args:
        model_card (`dict`, *optional*): defaults for every `create_model_card` call (`model_name`, `tasks`,
            `dataset`, `tags`, ...), so that the cards pushed during training say the same as the last one.
        trained_from_scratch (`bool`, defaults to False): the model was not initialised from a checkpoint: the card
            says "trained from scratch" (it would otherwise link the config's `_name_or_path`).
        args, kwargs: those of `Trainer`.
    """

    def __init__(
        self, *args: Any, model_card: dict[str, Any] | None = None, trained_from_scratch: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.model_card_defaults = dict(model_card or {})
        self.trained_from_scratch = trained_from_scratch

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        kwargs = {**self.model_card_defaults, **kwargs}
        config = self.model.config
        name_or_path = config._name_or_path
        if self.trained_from_scratch:  # the card links `_name_or_path` as the base model unless it is a folder
            config._name_or_path = self.args.output_dir
        try:
            super().create_model_card(*args, **kwargs)
        finally:
            config._name_or_path = name_or_path
        if self.is_world_process_zero():
            tasks = list(getattr(self.model, "pipeline_tasks", ()))
            write_model_card(self.args.output_dir, self.model, self.processing_class, tasks)
