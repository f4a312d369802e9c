"""`pipeline("rgbd-adversarial-attack")`: attack an RGB-D classifier or matching model on RGB-D pairs.

The attack algorithms live in `hf_rgbd.attacks`, which is not copied into saved model folders: this pipeline needs
hf_rgbd installed (the other pipelines also run as remote code).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from PIL import Image

from .pipeline_rgbd_classification import class_scores, top_labels
from .pipeline_rgbd_common import RgbdPipeline, top_k_parameter, pair_inputs
from .pipeline_rgbd_matching import has_itm_head

#: arguments the pipeline sets itself and that are not the attack's to take
_PIPELINE_SET = ("model", "budget", "processor", "seed")


def hf_rgbd_attacks() -> Any:
    """The `hf_rgbd.attacks` module; ImportError saying what to install where hf_rgbd is not installed (this
    module loaded as remote code)."""
    try:
        from hf_rgbd import attacks
    except ImportError as error:
        raise ImportError(
            "the rgbd-adversarial-attack pipeline runs the attacks of hf_rgbd, which is not installed here: "
            "`pip install hf-rgbd` (the classification and matching pipelines work without it)."
        ) from error
    return attacks


def attack_classes() -> dict[str, type]:
    """Every attack of `hf_rgbd.attacks` by its lower-case class name (`"pgd"`, `"apgd"`, ...)."""
    found: dict[str, type] = {}
    pending = [hf_rgbd_attacks().RgbdAttack]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.startswith("hf_rgbd."):
                found[subclass.__name__.lower()] = subclass
            pending.append(subclass)
    return dict(sorted(found.items()))


def _label_index(label: Any, label2id: dict[str, int], num_labels: int, name: str) -> int:
    if isinstance(label, str):
        if label not in label2id:
            raise ValueError(f"`{name}`: unknown label {label!r}; the model's labels are {sorted(label2id)}.")
        return int(label2id[label])
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= int(label) < num_labels:
        return int(label)
    raise ValueError(f"`{name}` must be a label name or a class index in [0, {num_labels}), got {label!r}.")


class RgbdAdversarialAttackPipeline(RgbdPipeline):
    """Adversarial RGB-D pairs from any attack of `hf_rgbd.attacks`, with a budget per modality in physical units.

    ```python
    >>> attacker = pipeline(
    ...     "rgbd-adversarial-attack", model="path/to/model", attack="pgd",
    ...     budget={"pixel_values": 8 / 255, "depth_values": 0.05}, steps=20,
    ... )
    >>> result = attacker("scene.jpg", depths="scene_depth.png", depth_scale=0.001)
    >>> result["predictions_before"][0]["label"], result["predictions_after"][0]["label"]
    ```

    Construction (or call) parameters: `attack` (lower-case class name, default `"pgd"`), `budget` (per input, RGB
    in [0, 1] units, depth in metres; default the attack's), `seed` (default 0: the same call gives the same
    result), `top_k` (labels in the predictions), and any argument of the attack class (`steps`, `alpha`,
    `n_restarts`, `loss`, `random_start`, `targeted`, ...); plus the input parameters of every RGB-D pipeline. A
    classifier is attacked untargeted on its own clean prediction, unless `labels` (one label name or class index
    per input, the targets with `targeted=True`) are given; a model with an ITM head is attacked so that its
    matched pairs read as not matched (`MatchingObjective`).

    Returns per input a dict:
    - `adversarial_image`: the adversarial RGB as an 8-bit PIL image at the processor's output size (rounding to
      8 bits moves each value by at most 0.5/255); `adversarial_rgb`: the same in float (H, W, 3) in [0, 1], on
      which `predictions_after` and `perturbation` are measured. None when the model takes no RGB.
    - `adversarial_depth`: (H, W) float32 metres at the output size, 0 at the input's holes (which the attack leaves
      unchanged). None when the model takes no depth or its representation does not convert back to metres.
    - `clean_rgb`, `clean_depth`: the attacked input as the model saw it, in the same units and size (the
      perturbation maps are the differences).
    - `predictions_before`, `predictions_after`: `[{"label", "score"}]` (classifiers) or `{"score",
      "score_type": "itm"}` (the matched probability).
    - `success`: whether the attack reached its goal; `perturbation`: per perturbed input `{"linf", "l2"}` in
      physical units; the `attack`, its `budget` and `seed`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._attack_classes = attack_classes()
        # known before `Pipeline.__init__` checks the construction parameters (it builds the attack once)
        self.matching = has_itm_head(kwargs["model"] if "model" in kwargs else args[0])
        super().__init__(*args, **kwargs)
        if not self.matching and getattr(self.model.config, "num_labels", 0) < 1:
            raise ValueError(
                f"`model` ({type(self.model).__name__}) is neither a classifier nor a model with an ITM head; the "
                "attack pipeline attacks predictions (a ...ForImageClassification) or matching (...ForRgbdMatching)."
            )

    def __call__(self, images: Any = None, depths: Any = None, **kwargs: Any) -> Any:
        labels = kwargs.pop("labels", None)
        inputs = pair_inputs(images, depths, kwargs.pop("intrinsics", None))
        if labels is not None:
            items = [inputs] if isinstance(inputs, dict) else inputs
            labels = list(labels) if isinstance(labels, (list, tuple)) else [labels] * len(items)
            if len(labels) != len(items):
                raise ValueError(f"`labels` has {len(labels)} entries for {len(items)} inputs.")
            for item, label in zip(items, labels):
                item["label"] = label
        return super(RgbdPipeline, self).__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        attack: str | None = None,
        budget: dict[str, float] | None = None,
        seed: int | None = None,
        top_k: int | None = None,
        depth_scale: float | None = None,
        depth_encoding: str | None = None,
        allow_aspect_change: bool | None = None,
        **attack_arguments: Any,
    ) -> tuple[dict, dict, dict]:
        forward: dict[str, Any] = {}
        if attack is not None:
            if not isinstance(attack, str) or attack.lower() not in self._attack_classes:
                raise ValueError(f"`attack` must be one of {sorted(self._attack_classes)}, got {attack!r}.")
            forward["attack"] = attack.lower()
        if budget is not None:
            self._check_budget(budget)
            forward["budget"] = dict(budget)
        if seed is not None:
            forward["seed"] = seed
        # the result names the attack and seed it was made with
        postprocess = {key: forward[key] for key in ("attack", "seed", "budget") if key in forward}
        if attack_arguments:
            forward["attack_arguments"] = attack_arguments
        if forward:  # check the attack's arguments once, here, not at the first forward
            self._make_attack({**getattr(self, "_forward_params", {}), **forward})
        postprocess.update(top_k_parameter(top_k))
        return self._input_parameters(depth_scale, depth_encoding, allow_aspect_change), forward, postprocess

    def _check_budget(self, budget: Any) -> None:
        """`budget` names only inputs this model takes."""
        if not isinstance(budget, dict) or not budget:
            raise ValueError(f"`budget` must be a non-empty dict input name -> budget, got {budget!r}.")
        modalities = getattr(self.model.config, "modalities", "rgbd")
        taken = {"rgbd": ("pixel_values", "depth_values"), "rgb": ("pixel_values",), "depth": ("depth_values",)}
        extra = sorted(set(budget) - set(taken[modalities]))
        if extra:
            raise ValueError(
                f"`budget` names {extra}, which this model (modalities={modalities!r}) does not take; it takes "
                f"{list(taken[modalities])}."
            )

    def _make_attack(self, forward: dict[str, Any]) -> Any:
        """The attack these forward parameters describe (ValueError naming an argument the attack does not take)."""
        name = forward.get("attack", "pgd")
        attack_class = self._attack_classes[name]
        arguments = dict(forward.get("attack_arguments", {}))
        accepted = set()
        for cls in attack_class.__mro__:
            if "__init__" in vars(cls):
                accepted |= set(inspect.signature(cls.__init__).parameters)
        accepted |= {"loss", "targeted", "seed"}  # the shared settings every attack takes
        unknown = sorted((set(arguments) - accepted) | (set(arguments) & set(_PIPELINE_SET)))
        if unknown:
            raise ValueError(
                f"the {name} attack takes no argument {unknown}; its arguments: "
                f"{sorted(accepted - {'self', 'settings', *_PIPELINE_SET})} (and `budget`, `seed` of the pipeline)."
            )
        if self.matching and "loss" not in arguments:
            arguments["loss"] = hf_rgbd_attacks().MatchingObjective()
        return attack_class(
            self.model,
            budget=forward.get("budget"),
            processor=self.processor,
            seed=forward.get("seed", 0),
            **arguments,
        )

    def preprocess(self, item: dict[str, Any], **settings: Any) -> Any:
        batch = self.process_pair(
            {key: value for key, value in item.items() if key != "label"},
            return_intrinsics=item.get("intrinsics") is not None and item.get("depth") is not None,
            **settings,
        )
        if item.get("label") is not None:
            config = self.model.config
            batch["labels"] = torch.tensor(
                [_label_index(item["label"], config.label2id, config.num_labels, "labels")], dtype=torch.long
            )
        return batch

    def _forward(self, model_inputs: Any, **forward: Any) -> dict[str, torch.Tensor]:
        attack = self._make_attack(forward)
        labels = model_inputs.pop("labels", None)
        before = self.prediction(model_inputs)
        if labels is None and not self.matching:
            labels = before.argmax(dim=-1)
        result = attack.perturb(model_inputs, labels)
        outputs = {"before": before, "after": self.prediction(result.inputs), "success": result.success}
        physical_inputs = hf_rgbd_attacks().physical_inputs
        for prefix, batch in (("clean", model_inputs), ("adversarial", result.inputs)):
            for name, values in physical_inputs(batch, self.processor).items():
                outputs[f"{prefix}_{name}"] = values
        for name in result.linf:
            outputs[f"linf_{name}"] = result.linf[name]
            outputs[f"l2_{name}"] = result.l2[name]
        return outputs

    def prediction(self, batch: Any) -> torch.Tensor:
        """(B, num_labels) logits of a classifier, or (B,) matched probability of an ITM model."""
        if self.matching:
            logits = self.model_forward(batch, use_itm_head=True).itm_score
            return logits.float().softmax(dim=-1)[:, 1]
        return self.model_forward(batch).logits.float()

    def describe(self, prediction: torch.Tensor, top_k: int) -> Any:
        if self.matching:
            return {"score": float(prediction[0]), "score_type": "itm"}
        return top_labels(class_scores(prediction[0], "softmax"), self.model.config.id2label, top_k)

    def postprocess(
        self,
        model_outputs: dict[str, torch.Tensor],
        top_k: int = 5,
        attack: str = "pgd",
        seed: int = 0,
        budget: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        def rgb_array(prefix: str) -> np.ndarray | None:
            rgb = model_outputs.get(f"{prefix}_pixel_values")
            return None if rgb is None else rgb[0].permute(1, 2, 0).float().cpu().numpy()

        def depth_array(prefix: str) -> np.ndarray | None:
            depth = model_outputs.get(f"{prefix}_depth_values")
            return None if depth is None else depth[0, 0].float().cpu().numpy()

        adversarial_rgb = rgb_array("adversarial")
        perturbation = {
            key.removeprefix("linf_"): {
                "linf": float(model_outputs[key][0]),
                "l2": float(model_outputs["l2_" + key.removeprefix("linf_")][0]),
            }
            for key in model_outputs
            if key.startswith("linf_")
        }
        return {
            "adversarial_image": None
            if adversarial_rgb is None
            else Image.fromarray(np.clip(np.rint(adversarial_rgb * 255.0), 0, 255).astype(np.uint8)),
            "adversarial_rgb": adversarial_rgb,
            "adversarial_depth": depth_array("adversarial"),
            "clean_rgb": rgb_array("clean"),
            "clean_depth": depth_array("clean"),
            "predictions_before": self.describe(model_outputs["before"], top_k),
            "predictions_after": self.describe(model_outputs["after"], top_k),
            "success": bool(model_outputs["success"][0]),
            "perturbation": perturbation,
            "attack": attack,
            "budget": dict(budget or self._attack_classes[attack].default_budget),
            "seed": seed,
        }
