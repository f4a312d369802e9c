"""What every RGB-D pipeline shares: reading RGB and depth from files or arrays, pairing them, processing a pair.

Pipeline modules import only transformers, torch, numpy, PIL and single-dot siblings, so that a saved model folder
carries them and `pipeline(task, model=folder, trust_remote_code=True)` works where hf_rgbd is not installed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import HfApi
from PIL import Image
from transformers import Pipeline
from transformers.image_utils import load_image

from .pipeline_rgbd_card import write_model_card

#: file suffixes read as depth images (16-bit integer units, or 32-bit float metres) and as arrays (`.npy`)
DEPTH_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
DEPTH_ARRAY_SUFFIXES = (".npy",)
#: PIL modes of a depth image: integer units times `depth_scale`, or float metres
_DEPTH_IMAGE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
#: what the pipelines pass from a processed pair to the model (depth tokens and intrinsics serve pretraining and the
#: attacks, not the models' inference forward)
MODEL_INPUTS = ("pixel_values", "depth_values", "depth_mask")


def _as_path(value: Any) -> Path | None:
    """`value` as a local path when it is one (a `str` that is not a URL or a `PathLike`), else None."""
    if isinstance(value, os.PathLike):
        return Path(value)
    if isinstance(value, str) and not value.startswith(("http://", "https://", "data:")):
        return Path(value)
    return None


def _existing_file(path: Path, name: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"`{name}`: no such file: {str(path)!r}.")
    return path


def read_rgb(image: Any, name: str) -> Any:
    """One RGB image for the processor: a path (any format PIL reads) or a URL becomes an RGB PIL image; PIL images,
    numpy arrays (H, W, 3) and tensors (3, H, W) pass through."""
    path = _as_path(image)
    if path is not None:
        image = load_image(str(_existing_file(path, name)))
    elif isinstance(image, str):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    raise ValueError(
        f"`{name}` must be a path, a PIL image, a numpy array or a torch tensor, got {type(image).__name__}."
    )


def read_depth(depth: Any, name: str) -> Any:
    """One depth map for the processor. Paths: `.npy` (metres if float, units times `depth_scale` if integer),
    16-bit PNG / TIFF (integer units times `depth_scale`; SUN RGB-D PNGs with `depth_encoding="sunrgbd"`) or a
    32-bit float TIFF (metres). 8-bit images are refused: they cannot hold depth. Arrays, tensors and PIL images
    pass through (the processor checks them)."""
    path = _as_path(depth)
    if path is None:
        return depth
    suffix = _existing_file(path, name).suffix.lower()
    if suffix in DEPTH_ARRAY_SUFFIXES:
        return np.load(path, allow_pickle=False)
    if suffix not in DEPTH_IMAGE_SUFFIXES:
        raise ValueError(
            f"`{name}` ({str(path)!r}): depth files must be {' / '.join(DEPTH_IMAGE_SUFFIXES + DEPTH_ARRAY_SUFFIXES)}, "
            f"got {suffix or 'no suffix'!r}."
        )
    with Image.open(path) as opened:
        if opened.mode not in _DEPTH_IMAGE_MODES:
            raise ValueError(
                f"`{name}` ({str(path)!r}) is an 8-bit or colour image (PIL mode {opened.mode!r}), which cannot hold "
                "depth: pass a 16-bit PNG (integer units times `depth_scale`, e.g. millimetres with 0.001), a SUN "
                'RGB-D PNG with `depth_encoding="sunrgbd"`, a float TIFF or a float .npy in metres.'
            )
        if opened.mode == "F":
            return np.asarray(opened, dtype=np.float32)
        return np.asarray(opened).astype(np.int32)


def _is_pair(value: Any) -> bool:
    return isinstance(value, Mapping) and ("image" in value or "depth" in value)


def _is_batch(value: Any) -> bool:
    """A batch of inputs is a non-empty list or tuple of items; a nested list of numbers is one array, as in the
    processor."""
    return isinstance(value, (list, tuple)) and bool(value) and not isinstance(value[0], (int, float, list, tuple))


def _per_item_intrinsics(intrinsics: Any, count: int) -> list[Any]:
    """One (3, 3) camera matrix per item from one shared matrix or one per item."""
    shape = np.asarray(intrinsics, dtype=np.float64).shape
    if shape == (3, 3):
        return [intrinsics] * count
    if shape == (count, 3, 3):
        return list(intrinsics)
    raise ValueError(
        f"`intrinsics` must be one (3, 3) matrix shared by the inputs or one per input ({count}, 3, 3), got shape "
        f"{shape}."
    )


def pair_inputs(images: Any, depths: Any, intrinsics: Any = None) -> dict | list[dict]:
    """The pipeline's items, each a dict with `image` and `depth` (either may be None) and optionally
    `intrinsics`, from what a user passes: `images` and `depths` (one each, or lists of the same length), or
    `images` as a dict / list of dicts with `image` / `depth` (/ `intrinsics`) keys. `intrinsics` is one (3, 3)
    matrix shared by all items or one per item."""
    if _is_pair(images) or (_is_batch(images) and all(_is_pair(item) for item in images)):
        if depths is not None:
            raise ValueError("pass `depths` either inside the input dicts (`depth` key) or as `depths`, not both.")
        single = _is_pair(images)
        items = [dict(images)] if single else [dict(item) for item in images]
    else:
        if images is None and depths is None:
            raise ValueError("pass `images`, `depths` or both (or dicts with `image` / `depth` keys).")
        single = not (_is_batch(images) or _is_batch(depths))
        image_list = list(images) if _is_batch(images) else [images]
        depth_list = list(depths) if _is_batch(depths) else [depths]
        if images is None:
            image_list = [None] * len(depth_list)
        if depths is None:
            depth_list = [None] * len(image_list)
        if len(image_list) != len(depth_list):
            raise ValueError(
                f"`images` has {len(image_list)} items and `depths` {len(depth_list)}; pass one depth map per image."
            )
        items = [{"image": image, "depth": depth} for image, depth in zip(image_list, depth_list)]
    for index, item in enumerate(items):
        unknown = set(item) - {"image", "depth", "intrinsics"}
        if unknown:
            raise ValueError(f"input {index} has unknown keys {sorted(unknown)}; expected `image`, `depth`, `intrinsics`.")
    if intrinsics is not None:
        for item, matrix in zip(items, _per_item_intrinsics(intrinsics, len(items))):
            item.setdefault("intrinsics", matrix)
    return items[0] if single else items


def check_trained_head(model: torch.nn.Module) -> None:
    """ValueError when `model` is a classifier built on a checkpoint of another class (its `architectures`, e.g. a
    pretraining checkpoint): its classification head would be untrained."""
    architectures = getattr(model.config, "architectures", None) or []
    if type(model).__name__.endswith("ForImageClassification") and architectures:
        if not any(name.endswith("ForImageClassification") for name in architectures):
            raise ValueError(
                f"`model` was loaded as {type(model).__name__} from a checkpoint of {architectures}, so its "
                "classification head is untrained: fine-tune it first (`hf-rgbd finetune`), or use the task that "
                "checkpoint serves (rgbd-matching for pretraining checkpoints)."
            )


class RgbdPipeline(Pipeline):
    """Base of the RGB-D pipelines: the items are RGB-D pairs (`pair_inputs`), each processed by the model's
    [`RgbdProcessor`] into one batch of one pair (a missing modality is left out of the batch).

    Call parameters shared by every RGB-D pipeline: `intrinsics` ((3, 3) shared, or one per pair), `depth_scale`
    (metres per integer depth unit), `depth_encoding` (`"plain"` or `"sunrgbd"`), `allow_aspect_change` (RGB and
    depth of different aspect ratios are refused unless True; the depth map is then stretched to the RGB field of
    view).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                f"{type(self).__name__} needs the model's RgbdProcessor: pass `processor=` (or a model folder that "
                "holds one)."
            )
        # the generic batching of transformers pipelines stacks image tensors when an image processor is set, and
        # pads text when a tokenizer is (the processor's stand-in tokenizer has no text to pad)
        self.image_processor = self.processor.image_processor
        self.tokenizer = None
        check_trained_head(self.model)
        self.model.eval()

    def save_pretrained(
        self, save_directory: str | os.PathLike, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        """Save the model (with the pipeline code and `custom_pipelines`), the whole processor, and the model card's
        RGB-D section (tasks, modalities, depth representation and units, and `metrics` if given) in README.md."""
        image_processor, self.image_processor = self.image_processor, None  # saved inside the processor
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.image_processor = image_processor
        self.processor.save_pretrained(save_directory)
        tasks = list(getattr(self.model, "pipeline_tasks", ()) or [self.task])
        write_model_card(save_directory, self.model, self.processor, tasks, metrics)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        metrics: dict[str, float] | None = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Push model, processor, pipeline code and model card (see `save_pretrained`) to the hub repo `repo_id`
        (created if needed) in one commit. Returns the commit info."""
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, metrics=metrics)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self.model).__name__} with its RGB-D pipelines",
                revision=revision,
                create_pr=create_pr,
            )

    def __call__(self, images: Any = None, depths: Any = None, **kwargs: Any) -> Any:
        """Run the pipeline on one RGB-D pair or a list of them (see `pair_inputs`); other keyword arguments are
        the pipeline's parameters (and `batch_size`, `num_workers`)."""
        return super().__call__(pair_inputs(images, depths, kwargs.pop("intrinsics", None)), **kwargs)

    @staticmethod
    def _input_parameters(
        depth_scale: float | None = None, depth_encoding: str | None = None, allow_aspect_change: bool | None = None
    ) -> dict[str, Any]:
        """The preprocess parameters that every RGB-D pipeline takes (None: the processor's settings)."""
        settings = {"depth_scale": depth_scale, "depth_encoding": depth_encoding, "allow_aspect_change": allow_aspect_change}
        return {key: value for key, value in settings.items() if value is not None}

    def process_pair(self, item: Mapping[str, Any], index: int = 0, **settings: Any) -> Any:
        """The processor's batch of one pair (`pixel_values` and/or `depth_values`, `depth_mask`, ...) with the
        model's floating dtype."""
        image = None if item.get("image") is None else read_rgb(item["image"], f"images[{index}]")
        depth = None if item.get("depth") is None else read_depth(item["depth"], f"depths[{index}]")
        if image is None and depth is None:
            raise ValueError(f"input {index} has neither an image nor a depth map.")
        batch = self.processor(
            images=image,
            depths=depth,
            intrinsics=item.get("intrinsics") if depth is not None else None,
            return_tensors="pt",
            **settings,
        )
        return batch.to(self.dtype) if self.dtype is not None else batch

    def model_forward(self, batch: Mapping[str, Any], **kwargs: Any) -> Any:
        """`self.model` on the `MODEL_INPUTS` of `batch` (a missing modality left out)."""
        return self.model(**{key: batch[key] for key in MODEL_INPUTS if key in batch}, **kwargs)


def top_k_parameter(top_k: Any) -> dict[str, int]:
    """`{"top_k": top_k}` for the postprocess parameters (empty when None); ValueError unless a positive int."""
    if top_k is None:
        return {}
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    return {"top_k": top_k}


def gallery_list(gallery: Any, name: str) -> list[Any]:
    """A retrieval gallery as a non-empty list."""
    if isinstance(gallery, (str, os.PathLike)) or not isinstance(gallery, Iterable):
        raise ValueError(f"`{name}` must be a list of items to rank, got {type(gallery).__name__}.")
    items = list(gallery)
    if not items:
        raise ValueError(f"`{name}` is empty.")
    return items
