"""Madry-style adversarial training as a `transformers.Trainer` subclass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

from ..attacks import PGD, RgbdAttack
from ..processors.validation_rgbd import check_flag


class AdversarialTrainer(Trainer):
    r"""
    [`~transformers.Trainer`] that trains on adversarial examples (Madry et al., 2018): every training batch is
    first attacked with `attack` (default: [`PGD`] with its defaults, `{"pixel_values": 8/255, "depth_values":
    0.05}`, 10 steps of budget / 4, random start, built on the trained model and `processing_class`), then the
    usual loss is computed on the attacked inputs.

    The attack runs the model in eval mode (batch-norm running statistics, no dropout) and restores train mode
    before the training forward pass; it takes gradients with respect to the inputs only, so no weight gradient
    leaks into the optimiser step. Evaluation (`evaluate()`, `predict()`) stays on clean inputs unless
    `adversarial_evaluation=True`.

    Args:
        attack ([`RgbdAttack`] or callable, *optional*): an attack on the trained model, or a factory
            `model -> attack`. Default: `PGD(model, processor=processing_class)`, which needs `processing_class` to
            be the [`RgbdProcessor`] that made the batches (for the physical units of the budgets).
        use_final_iterate (`bool`, defaults to True): train on the attack's final iterate (Madry); False uses the
            attack's chosen example per sample (a successful iterate when one was found).
        adversarial_evaluation (`bool`, defaults to False): also attack evaluation batches.
        args, kwargs: as for [`~transformers.Trainer`].
    """

    def __init__(
        self,
        *args: Any,
        attack: RgbdAttack | Callable[[torch.nn.Module], RgbdAttack] | None = None,
        use_final_iterate: bool = True,
        adversarial_evaluation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if attack is None:
            processor = self.processing_class
            if not (hasattr(processor, "image_processor") and hasattr(processor, "depth_image_processor")):
                raise ValueError(
                    "`attack` is not given, and the default PGD needs `processing_class` to be the RgbdProcessor "
                    "that made the batches; pass one of them."
                )
            attack = PGD(self.model, processor=processor)
        elif not isinstance(attack, RgbdAttack):
            if not callable(attack):
                raise ValueError(f"`attack` must be an RgbdAttack or a callable model -> attack, got {attack!r}.")
            attack = attack(self.model)
            if not isinstance(attack, RgbdAttack):
                raise ValueError(f"the `attack` factory must return an RgbdAttack, got {type(attack).__name__}.")
        if attack.model is not self.model:
            raise ValueError("`attack` must attack the model being trained (`attack.model is trainer.model`).")
        self.attack = attack
        self.use_final_iterate = check_flag(use_final_iterate, "use_final_iterate")
        self.adversarial_evaluation = check_flag(adversarial_evaluation, "adversarial_evaluation")

    def adversarial_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """`inputs` with the attacked entries replaced by their adversarial versions (labels from `inputs`)."""
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError("adversarial training needs `labels` in every batch.")
        batch = {key: value for key, value in inputs.items() if key != "labels"}
        result = self.attack.perturb(batch, labels)
        adversarial = result.final_inputs if self.use_final_iterate else result.inputs
        return {**inputs, **{key: adversarial[key] for key in adversarial}}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if model.training or self.adversarial_evaluation:
            inputs = self.adversarial_inputs(inputs)
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )


__all__ = ["AdversarialTrainer"]
