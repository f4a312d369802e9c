"""The RGB-D part of a model card: the tasks a saved model serves, its modalities, its depth representation and
units, and how to call it; written into the folder's `README.md` (a new card, or a section added to an existing
one such as the card `Trainer` writes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

_SECTION_START = "<!-- hf-rgbd:begin -->"
_SECTION_END = "<!-- hf-rgbd:end -->"
_MODALITIES = {"rgbd": "RGB and depth", "rgb": "RGB only", "depth": "depth only"}
_REPRESENTATIONS = {
    "metric": "depth / max_depth, in (0, 1]",
    "disparity": "baseline * fx / depth (needs `intrinsics`)",
    "log": "log depth scaled to [0, 1] over [min_depth, max_depth]",
    "per_image": "depth standardised over each map's valid pixels",
    "dataset": "(depth - depth_mean) / depth_std",
    "hha": "HHA: horizontal disparity, height above the lowest point, angle to gravity (needs `intrinsics`)",
}


def _depth_lines(depth_processor: Any) -> list[str]:
    representation = depth_processor.representation
    statistics = ""
    if representation == "dataset":
        statistics = f" with depth_mean {depth_processor.depth_mean:g} m, depth_std {depth_processor.depth_std:g} m"
    lines = [
        f"- **Depth representation**: `{representation}`: {_REPRESENTATIONS.get(representation, representation)}"
        f"{statistics}.",
        f"- **Depth units**: metres. Float maps (`.npy`, float TIFF, arrays) are metres; integer maps (16-bit PNGs) are "
        f"multiplied by `depth_scale` (default {depth_processor.depth_scale:g} m per unit"
        f"{', i.e. millimetres' if depth_processor.depth_scale == 0.001 else ''}); SUN RGB-D PNGs need "
        '`depth_encoding="sunrgbd"`.',
        f"- **Valid depth**: [{depth_processor.min_depth:g}, {depth_processor.max_depth:g}] m. Zeros, NaN, inf and "
        "values outside the range are holes, carried in `depth_mask`.",
    ]
    if depth_processor.depth_vocab_size is not None:
        lines.append(
            f"- **Depth tokens**: {depth_processor.depth_vocab_size} log-spaced depth words per "
            f"{depth_processor.depth_patch_size}x{depth_processor.depth_patch_size} patch."
        )
    return lines


def model_card_section(model: Any, processor: Any, tasks: list[str]) -> str:
    """Markdown describing how to use a saved RGB-D model: tasks, modalities, inputs, depth units, a pipeline call."""
    config = model.config
    modalities = getattr(config, "modalities", "rgbd")
    dropout = tuple(getattr(config, "modality_dropout", (0.0, 0.0)) or (0.0, 0.0))
    size = processor.image_processor.size
    lines = [
        _SECTION_START,
        "## RGB-D model (hf-rgbd)",
        "",
        f"- **Model**: `{type(model).__name__}` (`{config.model_type}`).",
        f"- **Pipeline tasks**: {', '.join(f'`{task}`' for task in tasks) or 'none'}.",
        f"- **Modalities**: {_MODALITIES.get(modalities, modalities)} (`modalities={modalities!r}`)"
        + (
            f"; trained with modality dropout (p_rgb, p_depth) = {dropout}, so it also answers with a modality missing."
            if any(dropout)
            else "."
        ),
        f"- **RGB input**: resized to {size.get('height')}x{size.get('width')}, normalised with mean "
        f"{list(processor.image_processor.image_mean)} and std {list(processor.image_processor.image_std)}.",
        *_depth_lines(processor.depth_image_processor),
    ]
    labels = getattr(config, "id2label", None)
    if getattr(config, "num_labels", 0) and labels and "classification" in " ".join(tasks):
        lines.append(f"- **Labels** ({len(labels)}): {', '.join(str(labels[i]) for i in sorted(labels))}.")
    if tasks:
        call = 'pipe("rgb.png", depths="depth.png", depth_scale=0.001)'
        lines += [
            "",
            "```python",
            "from transformers import pipeline",
            "",
            "# with hf-rgbd installed (`import hf_rgbd`), or trust_remote_code=True without it",
            f'pipe = pipeline("{tasks[0]}", model="<this repo or folder>", trust_remote_code=True)',
            call,
            "```",
        ]
        if "rgbd-adversarial-attack" in tasks:
            lines.append("\nThe `rgbd-adversarial-attack` pipeline runs hf-rgbd's attacks: it needs hf-rgbd installed.")
    lines.append(_SECTION_END)
    return "\n".join(lines) + "\n"


def write_model_card(
    folder: str | os.PathLike, model: Any, processor: Any, tasks: list[str], metrics: dict[str, float] | None = None
) -> Path:
    """Write the RGB-D section into `folder/README.md`: replaced if the card has one, appended to another card,
    or as a new card (with `metrics`, tags and the pipeline tag) when there is none. Returns the card's path."""
    path = Path(folder) / "README.md"
    section = model_card_section(model, processor, tasks)
    if metrics:
        section = section.replace(
            _SECTION_END,
            "\n| metric | value |\n|---|---|\n"
            + "".join(f"| {name} | {value:.4g} |\n" for name, value in sorted(metrics.items()))
            + _SECTION_END,
        )
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if _SECTION_START in text and _SECTION_END in text:
            before, _, rest = text.partition(_SECTION_START)
            text = before + section.rstrip("\n") + rest.partition(_SECTION_END)[2]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        path.write_text(text, encoding="utf-8")
        return path
    data = ModelCardData(
        library_name="transformers",
        tags=["rgbd", "hf-rgbd", model.config.model_type],
        pipeline_tag="image-classification" if "rgbd-image-classification" in tasks else None,
    )
    title = f"# {Path(folder).resolve().name}\n\n"
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{title}{section}").save(path)
    return path
