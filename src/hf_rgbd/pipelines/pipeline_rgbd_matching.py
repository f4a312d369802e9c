"""`pipeline("rgbd-matching")`: does this depth map belong to this RGB image, and retrieval against a gallery."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .pipeline_rgbd_common import RgbdPipeline, top_k_parameter, gallery_list, pair_inputs

#: `score_type` values: the ITM head's matched probability, or the cosine similarity of the unimodal embeddings
SCORE_TYPES = ("itm", "cosine")


def has_itm_head(model: torch.nn.Module) -> bool:
    return getattr(model, "itm_head", None) is not None


def is_dual_encoder(model: torch.nn.Module) -> bool:
    """A model that embeds each modality alone and returns `rgb_embeds` / `depth_embeds` (`RgbdClipModel`)."""
    return callable(getattr(model, "get_rgb_features", None)) and callable(getattr(model, "get_depth_features", None))


class RgbdMatchingPipeline(RgbdPipeline):
    """Score how well RGB images and depth maps belong together, or rank a gallery.

    The model is an RGB-depth matching model with an ITM head ([`RgbdAlbefForRgbdMatching`],
    [`RgbdVlmoForRgbdMatching`]; `score_type="itm"`, the matched probability, by default) or a dual encoder
    ([`RgbdClipModel`]; `score_type="cosine"`, the cosine similarity of the two embeddings). ITM models also give
    `score_type="cosine"` (their ITC embeddings).

    ```python
    >>> matcher = pipeline("rgbd-matching", model="path/to/model")
    >>> matcher("scene.jpg", depths="scene_depth.png")
    {'score': 0.97, 'score_type': 'itm'}
    >>> matcher("scene.jpg", depth_gallery=["a.png", "b.png", "c.png"], top_k=2)
    [{'index': 1, 'score': 0.95}, {'index': 0, 'score': 0.11}]
    ```

    Call: `pipe(images, depths=None, depth_gallery=None, image_gallery=None, top_k=5, score_type=None, ...)`
    with the input parameters of every RGB-D pipeline (`intrinsics`, `depth_scale`, `depth_encoding`,
    `allow_aspect_change`).
    - pairs: `images` and `depths` (one each or lists of the same length, or dicts with `image` / `depth` keys):
      `{"score", "score_type"}` per pair.
    - retrieval: one RGB image (`images`) against `depth_gallery`, or one depth map (`depths`) against
      `image_gallery`: the `top_k` gallery entries `[{"index", "score"}]`, best first. The gallery is scored in one
      forward pass (an ITM model scores every (query, entry) pair).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (has_itm_head(self.model) or is_dual_encoder(self.model)):
            raise ValueError(
                f"`model` ({type(self.model).__name__}) has no matching head: rgbd-matching needs a model with an ITM "
                "head (RgbdAlbefForRgbdMatching, RgbdVlmoForRgbdMatching) or a dual encoder (RgbdClipModel); load a "
                "folder with AutoModelForZeroShotImageClassification to get one."
            )

    def __call__(
        self,
        images: Any = None,
        depths: Any = None,
        depth_gallery: Any = None,
        image_gallery: Any = None,
        **kwargs: Any,
    ) -> Any:
        if depth_gallery is None and image_gallery is None:
            return super().__call__(images, depths, **kwargs)
        if depth_gallery is not None and image_gallery is not None:
            raise ValueError("pass `depth_gallery` (an RGB query) or `image_gallery` (a depth query), not both.")
        intrinsics = kwargs.pop("intrinsics", None)
        if depth_gallery is not None:
            if images is None or depths is not None:
                raise ValueError("retrieval in `depth_gallery` takes one RGB query as `images` and no `depths`.")
            gallery = [{"image": None, "depth": d} for d in gallery_list(depth_gallery, "depth_gallery")]
            query = pair_inputs(images, None)
        else:
            if depths is None or images is not None:
                raise ValueError("retrieval in `image_gallery` takes one depth query as `depths` and no `images`.")
            gallery = [{"image": i, "depth": None} for i in gallery_list(image_gallery, "image_gallery")]
            query = pair_inputs(None, depths, intrinsics)
        if not isinstance(query, dict):
            raise ValueError("retrieval takes one query; call the pipeline once per query.")
        if intrinsics is not None and depth_gallery is not None:
            gallery = pair_inputs(gallery, None, intrinsics)
        return super(RgbdPipeline, self).__call__({"query": query, "gallery": gallery}, **kwargs)

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        score_type: str | None = None,
        depth_scale: float | None = None,
        depth_encoding: str | None = None,
        allow_aspect_change: bool | None = None,
    ) -> tuple[dict, dict, dict]:
        scoring: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if score_type is not None:
            if score_type not in SCORE_TYPES:
                raise ValueError(f"`score_type` must be one of {SCORE_TYPES}, got {score_type!r}.")
            if score_type == "itm" and not has_itm_head(self.model):
                raise ValueError(f'`score_type="itm"` needs an ITM head; {type(self.model).__name__} gives "cosine".')
            scoring["score_type"] = score_type
        postprocess.update(top_k_parameter(top_k))
        preprocess = self._input_parameters(depth_scale, depth_encoding, allow_aspect_change)
        return preprocess, scoring, {**scoring, **postprocess}

    def default_score_type(self) -> str:
        return "itm" if has_itm_head(self.model) else "cosine"

    def preprocess(self, item: dict[str, Any], **settings: Any) -> Any:
        if "query" not in item:  # one pair: the processor's flat batch, so that pairs batch like images
            if item.get("image") is None or item.get("depth") is None:
                raise ValueError("matching scores pairs: every input needs an image and a depth map.")
            return self.process_pair(item, **settings)
        query = self.process_pair(item["query"], **settings)
        entries = [self.process_pair(entry, index, **settings) for index, entry in enumerate(item["gallery"])]
        gallery = {key: torch.cat([entry[key] for entry in entries]) for key in entries[0]}
        return {"query": dict(query), "gallery": gallery}

    def _forward(self, model_inputs: Any, score_type: str | None = None) -> dict[str, torch.Tensor]:
        score_type = score_type or self.default_score_type()
        if "query" not in model_inputs:
            if score_type == "itm":
                return {"scores": self.matched_probability(model_inputs)}
            return {"scores": self.similarities(model_inputs).diagonal()}
        query, gallery = model_inputs["query"], model_inputs["gallery"]
        if score_type == "itm":  # the query paired with every gallery entry
            count = next(iter(gallery.values())).shape[0]
            pairs = {key: value.expand(count, *value.shape[1:]) for key, value in query.items()}
            return {"gallery_scores": self.matched_probability({**pairs, **gallery})}
        # one embedding per image and per depth map: (1, N) for an RGB query, (N, 1) for a depth query
        return {"gallery_scores": self.similarities({**query, **gallery}).flatten()}

    def matched_probability(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B,) probability from the ITM head that RGB i and depth i belong together."""
        return self.model_forward(batch, use_itm_head=True).itm_score.float().softmax(dim=-1)[:, 1]

    def similarities(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B_rgb, B_depth) cosine similarities of every RGB image's embedding with every depth map's."""
        if has_itm_head(self.model):
            return self.model_forward(batch, use_itm_head=False).itm_score.float()
        rgb = self.model.get_rgb_features(batch["pixel_values"], return_dict=True).pooler_output
        depth = self.model.get_depth_features(batch["depth_values"], batch.get("depth_mask"), return_dict=True).pooler_output
        return (F.normalize(rgb.float(), dim=-1) @ F.normalize(depth.float(), dim=-1).t())

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int = 5, score_type: str | None = None) -> Any:
        if "scores" in model_outputs:
            return {"score": float(model_outputs["scores"][0]), "score_type": score_type or self.default_score_type()}
        scores = model_outputs["gallery_scores"]
        values, indices = scores.topk(min(top_k, scores.numel()))
        return [{"index": int(i), "score": float(v)} for v, i in zip(values, indices)]
