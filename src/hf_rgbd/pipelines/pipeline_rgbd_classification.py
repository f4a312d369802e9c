"""`pipeline("rgbd-image-classification")`: classify RGB-D pairs with any hf_rgbd classifier."""

from __future__ import annotations

from typing import Any

import torch

from .pipeline_rgbd_common import RgbdPipeline, top_k_parameter

#: `function_to_apply` values, as transformers' image-classification pipeline
CLASSIFICATION_FUNCTIONS = ("softmax", "sigmoid", "none")


def class_scores(logits: torch.Tensor, function_to_apply: str) -> torch.Tensor:
    """(num_labels,) scores from one sample's logits."""
    logits = logits.float()
    if function_to_apply == "softmax":
        return logits.softmax(dim=-1)
    if function_to_apply == "sigmoid":
        return logits.sigmoid()
    return logits


def top_labels(scores: torch.Tensor, id2label: dict[int, str], top_k: int) -> list[dict[str, Any]]:
    """`[{"label", "score"}]` of the `top_k` highest scores, best first."""
    values, indices = scores.topk(min(top_k, scores.numel()))
    return [{"label": id2label[int(i)], "score": float(v)} for v, i in zip(values, indices)]


class RgbdImageClassificationPipeline(RgbdPipeline):
    """Classify RGB-D pairs, as transformers' `image-classification` pipeline does images.

    ```python
    >>> import hf_rgbd
    >>> from transformers import pipeline
    >>> classifier = pipeline("rgbd-image-classification", model="path/to/model")
    >>> classifier("scene.jpg", depths="scene_depth.png", depth_scale=0.001, top_k=2)
    [{'label': 'sphere', 'score': 0.93}, {'label': 'cube', 'score': 0.04}]
    ```

    Call: `pipe(images, depths=None, intrinsics=None, depth_scale=None, depth_encoding=None, top_k=5,
    function_to_apply=None, allow_aspect_change=None, batch_size=None)`.
    - `images`: an RGB image (path, URL, PIL image, array (H, W, 3)), a list of them, a dict with `image` /
      `depth` (/ `intrinsics`) keys or a list of such dicts. None (depth only) for models that take depth alone.
    - `depths`: one depth map per image: a path (16-bit PNG of integer units with `depth_scale`, a SUN RGB-D PNG
      with `depth_encoding="sunrgbd"`, a `.npy` or float TIFF in metres), an array or a PIL image. A model
      trained with modality dropout also answers without it (`depths=None`).
    - `top_k`: labels returned per pair (at most `num_labels`); `function_to_apply`: `"softmax"` (default for
      single-label models), `"sigmoid"` (default for multi-label models or one label) or `"none"`.

    Returns `[{"label", "score"}]` (best first) for one input, a list of those for a list of inputs.
    """

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        depth_scale: float | None = None,
        depth_encoding: str | None = None,
        allow_aspect_change: bool | None = None,
    ) -> tuple[dict, dict, dict]:
        postprocess: dict[str, Any] = {}
        postprocess.update(top_k_parameter(top_k))
        if function_to_apply is not None:
            function_to_apply = str(function_to_apply).lower()
            if function_to_apply not in CLASSIFICATION_FUNCTIONS:
                raise ValueError(f"`function_to_apply` must be one of {CLASSIFICATION_FUNCTIONS}, got {function_to_apply!r}.")
            postprocess["function_to_apply"] = function_to_apply
        return self._input_parameters(depth_scale, depth_encoding, allow_aspect_change), {}, postprocess

    def preprocess(self, item: dict[str, Any], **settings: Any) -> Any:
        return self.process_pair(item, **settings)

    def _forward(self, model_inputs: Any) -> dict[str, torch.Tensor]:
        return {"logits": self.model_forward(model_inputs).logits}

    def default_function(self) -> str:
        """`"sigmoid"` for multi-label models and single-logit models, else `"softmax"` (transformers' rule)."""
        config = self.model.config
        if getattr(config, "problem_type", None) == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def postprocess(
        self, model_outputs: dict[str, torch.Tensor], top_k: int = 5, function_to_apply: str | None = None
    ) -> list[dict[str, Any]]:
        scores = class_scores(model_outputs["logits"][0], function_to_apply or self.default_function())
        return top_labels(scores, self.model.config.id2label, top_k)
