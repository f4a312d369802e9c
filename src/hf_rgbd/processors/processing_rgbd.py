"""`RgbdProcessor`: one call turns RGB images and depth maps into aligned model inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.image_processing_base import ImageProcessingMixin
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .depth_processing_rgbd import RgbdDepthProcessor
from .image_processing_rgbd import RgbdImageProcessor
from .validation_rgbd import RETURN_TENSORS, check_choice, check_flag, nested_list_depth, nested_list_to_array

_IMAGE_KWARGS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


@strict
class RgbdProcessorConfig(PreTrainedConfig):
    """Configuration that maps a folder or repo to [`RgbdProcessor`] through `AutoProcessor` / `AutoImageProcessor`.

    It carries no parameters of its own: the processor's settings live in `processor_config.json`. Model families
    register their own configurations with `AutoProcessor` too, so a saved model folder loads its processor.
    """

    model_type = "rgbd_processor"


class NoTextTokenizer:
    """The text tokenizer an RGB-D processor does not have: no special tokens, nothing to decode.

    `Trainer.train()` reads `processing_class.tokenizer` of every `ProcessorMixin` to align the model's
    `bos_token_id` / `eos_token_id` / `pad_token_id` with it (`transformers.trainer_utils.align_special_tokens`);
    with every id None there is nothing to align and the model config stays as it is.
    """

    bos_token_id = None
    eos_token_id = None
    pad_token_id = None

    def decode(self, *args: Any, **kwargs: Any) -> str:
        raise ValueError("RgbdProcessor has no text tokenizer: there are no text tokens to decode.")

    batch_decode = decode

    def __repr__(self) -> str:
        return "NoTextTokenizer()"


class RgbdProcessor(ProcessorMixin):
    r"""
    Pairs an [`RgbdImageProcessor`] (which owns the geometry) with an [`RgbdDepthProcessor`] (which follows it).

    ```python
    processor = RgbdProcessor(RgbdImageProcessor(), RgbdDepthProcessor(representation="disparity"))
    batch = processor(images=rgb_list, depths=depth_list, intrinsics=k, return_tensors="pt")
    batch["pixel_values"]  # (B, 3, H, W)
    batch["depth_values"]  # (B, 1, H, W), 3 channels for HHA
    batch["depth_mask"]    # (B, 1, H, W) bool, False at holes
    ```

    Args:
        image_processor ([`RgbdImageProcessor`], *optional*): default `RgbdImageProcessor()`.
        depth_image_processor ([`RgbdDepthProcessor`], *optional*): default `RgbdDepthProcessor()`.

    `tokenizer` is a [`NoTextTokenizer`] (no special tokens), which is what `Trainer(processing_class=processor)`
    reads of it before training.
    """

    tokenizer: ClassVar[NoTextTokenizer] = NoTextTokenizer()

    def __init__(
        self,
        image_processor: RgbdImageProcessor | None = None,
        depth_image_processor: RgbdDepthProcessor | None = None,
        **kwargs: Any,
    ) -> None:
        image_processor = RgbdImageProcessor() if image_processor is None else image_processor
        depth_image_processor = RgbdDepthProcessor() if depth_image_processor is None else depth_image_processor
        super().__init__(image_processor, depth_image_processor, **kwargs)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        expected = {"image_processor": RgbdImageProcessor, "depth_image_processor": RgbdDepthProcessor}
        if argument_name in expected:
            if not isinstance(argument, expected[argument_name]):
                raise TypeError(
                    f"`{argument_name}` must be an {expected[argument_name].__name__}, got {type(argument).__name__}."
                )
            return expected[argument_name]
        return super().check_argument_for_proper_class(argument_name, argument)

    # Keyword arguments of `from_pretrained` that only locate files; the sub-processors built below take none of
    # them, so they are not passed on to `from_dict` (transformers' generic loading consumes them the same way).
    _HUB_LOADING_KWARGS: ClassVar[frozenset[str]] = frozenset(
        {
            "cache_dir",
            "force_download",
            "local_files_only",
            "proxies",
            "revision",
            "token",
            "subfolder",
            "trust_remote_code",
            "code_revision",
            "_from_auto",
            "_commit_hash",
            "return_unused_kwargs",
        }
    )

    @classmethod
    def _subprocessors_from_dict(
        cls, pretrained_model_name_or_path: Any, processor_dict: dict[str, Any] | None
    ) -> dict[str, ImageProcessingMixin] | None:
        """Builds both sub-processors from the dicts stored in processor_config.json, or returns `None` without them.

        Uses the classes of this module, which works the same with hf_rgbd installed and from a folder's copied
        remote code (transformers' generic lookup of a second custom image processor does not).
        """
        processor_dict = processor_dict or {}
        if not all(
            isinstance(processor_dict.get(name), dict) for name in ("image_processor", "depth_image_processor")
        ):
            return None
        subprocessors = {}
        for name, processor_class in (
            ("image_processor", RgbdImageProcessor),
            ("depth_image_processor", RgbdDepthProcessor),
        ):
            config = dict(processor_dict[name])
            type_name = config.pop("image_processor_type", processor_class.__name__)
            config.pop("auto_map", None)
            if type_name != processor_class.__name__:
                raise ValueError(
                    f"`{name}` in {pretrained_model_name_or_path} is a {type_name}; RgbdProcessor expects a "
                    f"{processor_class.__name__}."
                )
            subprocessors[name] = processor_class(**config)
        return subprocessors

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers <= 5.24 builds the sub-processors here.
        subprocessors = cls._subprocessors_from_dict(pretrained_model_name_or_path, processor_dict)
        if subprocessors is None:
            return super()._get_arguments_from_pretrained(pretrained_model_name_or_path, processor_dict, **kwargs)
        return list(subprocessors.values())

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        # transformers >= 5.25 builds the sub-processors here and returns the processor dict holding them.
        subprocessors = cls._subprocessors_from_dict(pretrained_model_name_or_path, processor_dict)
        if subprocessors is None:
            return super()._resolve_subprocessors(pretrained_model_name_or_path, processor_dict, **kwargs)
        remaining = {key: value for key, value in kwargs.items() if key not in cls._HUB_LOADING_KWARGS}
        return {**processor_dict, **subprocessors}, remaining

    def __call__(
        self,
        images: Any = None,
        depths: Any = None,
        intrinsics: Any = None,
        return_tensors: str | None = "pt",
        allow_aspect_change: bool = False,
        depth_scale: float | None = None,
        return_intrinsics: bool = False,
        depth_encoding: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process RGB images and/or depth maps into one batch.

        Args:
            images: RGB image(s), any input [`RgbdImageProcessor`] accepts, also as nested lists (H, W, 3) or a
                `datasets` column. Optional when `depths` is given.
            depths: depth map(s), any input [`RgbdDepthProcessor`] accepts, one per image, also as nested lists
                (H, W) or a `datasets` column. Optional when `images` is given.
            intrinsics: (3, 3), (B, 3, 3) or a list of (3, 3) camera matrices in each depth map's pixel grid (arrays,
                tensors or nested lists: a 3x3 nested list is one matrix).
            return_tensors: `"pt"` (default) or `"np"`.
            allow_aspect_change: accept RGB and depth of different aspect ratios (depth is stretched).
            depth_scale: metres per integer depth unit for this call.
            return_intrinsics: also return the rescaled `intrinsics` (B, 3, 3).
            depth_encoding: `"plain"` or `"sunrgbd"` for this call (default: the depth processor's setting).
            kwargs: image-processor overrides (`size`, `do_center_crop`, `crop_size`, ...).

        Returns:
            `BatchFeature` with `pixel_values` (B, 3, H, W) when `images` is given; `depth_values` (B, C, H, W),
            `depth_mask` (B, 1, H, W) and, with a depth vocabulary, `depth_token_ids` (B, N) when `depths` is given.
        """
        unknown = set(kwargs) - set(_IMAGE_KWARGS)
        if unknown:
            raise TypeError(f"RgbdProcessor got unexpected keyword arguments {sorted(unknown)}.")
        if images is None and depths is None:
            raise ValueError("pass `images`, `depths` or both.")
        check_choice(return_tensors, "return_tensors", RETURN_TENSORS)
        images = _batch_structure(images, "images", is_item=_is_one_image)
        depths = _batch_structure(depths, "depths", is_item=_is_one_matrix)
        intrinsics = _batch_structure(intrinsics, "intrinsics", is_item=_is_one_matrix)
        if isinstance(intrinsics, list) and not intrinsics:
            raise ValueError("`intrinsics` is an empty list; pass one (3, 3) matrix or one per depth map.")
        data = {}
        if images is not None:
            data["pixel_values"], plans = self.image_processor.preprocess_with_plans(images, **kwargs)
        else:
            geometry = {k: kwargs[k] for k in ("do_resize", "size", "do_center_crop", "crop_size") if k in kwargs}

            def plans(input_size: tuple[int, int]):
                return self.image_processor.plan_geometry(input_size, **geometry)

        if depths is not None:
            data.update(
                self.depth_image_processor.preprocess(
                    depths,
                    intrinsics=intrinsics,
                    plans=plans,
                    depth_scale=depth_scale,
                    allow_aspect_change=allow_aspect_change,
                    return_intrinsics=return_intrinsics,
                    return_tensors=None,
                    depth_encoding=depth_encoding,
                )
            )
        elif intrinsics is not None or check_flag(return_intrinsics, "return_intrinsics"):
            raise ValueError("`intrinsics` describe depth maps; pass `depths` with them.")
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return self.image_processor.model_input_names + self.depth_image_processor.model_input_names


def _is_one_matrix(value: list | tuple) -> bool:
    """Whether a nested list is one 2-D item: a depth map (H, W) or a (3, 3) camera matrix."""
    return nested_list_depth(value) == 2


def _is_one_image(value: list | tuple) -> bool:
    """Whether a nested list is one image: (H, W) grey, or (H, W, 3) (its first pixel holds three values; a list of
    (H, W) grey images otherwise)."""
    nesting = nested_list_depth(value)
    return nesting == 2 or (nesting == 3 and len(value[0][0]) == 3)


def _batch_structure(inputs: Any, name: str, is_item: Callable[[list | tuple], bool]) -> Any:
    """`inputs` in the structure the sub-processors take (one item, or a list of items), from what `datasets`
    returns: a column (`dataset["depth"]`, a `Sequence`) becomes a list, a nested list of numbers that `is_item`
    calls one item one numpy array, and each nested-list item of a list a numpy array."""
    if isinstance(inputs, Sequence) and not isinstance(inputs, (list, tuple, str, bytes)):
        inputs = list(inputs)
    if not isinstance(inputs, (list, tuple)):
        return inputs
    if nested_list_depth(inputs) and is_item(inputs):
        return nested_list_to_array(inputs, name)
    return [
        nested_list_to_array(item, f"{name}[{index}]") if nested_list_depth(item) else item
        for index, item in enumerate(inputs)
    ]


def processor_from_vision_pretrained(
    pretrained_model_name_or_path: str,
    image_size: int | tuple[int, int] | None = None,
    depth_image_processor: RgbdDepthProcessor | None = None,
    **pretrained_kwargs: Any,
) -> RgbdProcessor:
    """An [`RgbdProcessor`] whose RGB normalisation matches a ViT / CLIP checkpoint.

    `image_mean`, `image_std`, `do_rescale` / `rescale_factor` come from the checkpoint's image-processor config
    (`preprocessor_config.json`) when it has one (defaults otherwise); the output size is `image_size` (default:
    the checkpoint's `image_size`). `depth_image_processor` defaults to `RgbdDepthProcessor()`.
    `pretrained_kwargs` go to the config / processor lookup (`revision`, `cache_dir`, `local_files_only`, ...).
    """
    if image_size is None:
        source_config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **pretrained_kwargs)
        vision_config = getattr(source_config, "vision_config", None) or source_config
        image_size = vision_config.image_size
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        checkpoint_dict, _ = ImageProcessingMixin.get_image_processor_dict(
            pretrained_model_name_or_path, **pretrained_kwargs
        )
    except OSError:
        checkpoint_dict = {}
    image_kwargs: dict[str, Any] = {"size": {"height": int(height), "width": int(width)}}
    for name in ("image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize"):
        if checkpoint_dict.get(name) is not None:
            image_kwargs[name] = checkpoint_dict[name]
    depth_image_processor = RgbdDepthProcessor() if depth_image_processor is None else depth_image_processor
    return RgbdProcessor(RgbdImageProcessor(**image_kwargs), depth_image_processor)
