"""VLMo's staged training of a mixture-of-modality-experts model: which parts train in each stage."""

from __future__ import annotations

import logging

from torch import nn

from ..modeling import RgbdVlmoModel

logger = logging.getLogger(__name__)

TRAINING_STAGES = ("rgb", "depth", "fusion", "joint")
# the batch inputs a unimodal stage leaves out: it trains on the other modality alone
UNIMODAL_STAGE_DROPPED_INPUTS = {
    "rgb": ("depth_values", "depth_mask", "depth_token_ids", "scene_ids"),
    "depth": ("pixel_values", "scene_ids"),
}


def set_training_stage(model: nn.Module, stage: str) -> str:
    """Set `requires_grad` of a mixture-of-modality-experts model ([`RgbdVlmoModel`] or a model holding one as its
    `base_model`) for one stage of VLMo's staged training, and return (and log) a one-line summary.

    Stages of the trunk (every parameter outside it, the heads, projections and temperature, stays trainable: the
    stage's objective decides which of them get a gradient):

    * `"rgb"`: the shared attention (with its LayerNorms), the shared final norms, the RGB patch embedding and the
      RGB expert of every layer (train on RGB);
    * `"depth"`: the depth patch embedding and the depth expert of every layer, the attention and the shared norms
      frozen (train on depth);
    * `"fusion"`: everything (train on RGB-D pairs, after the unimodal stages);
    * `"joint"`: everything (all objectives from the start).

    Raises:
        ValueError: `stage` is not one of `TRAINING_STAGES`, or `model` has no mixture-of-experts trunk.
    """
    if stage not in TRAINING_STAGES:
        raise ValueError(f"`stage` must be one of {TRAINING_STAGES}, got {stage!r}.")
    trunk = model if isinstance(model, RgbdVlmoModel) else getattr(model, "base_model", None)
    if not isinstance(trunk, RgbdVlmoModel):
        raise ValueError(
            f"`model` must be a mixture-of-modality-experts model (RgbdVlmo...), got {type(model).__name__}."
        )
    trunk_ids = {id(p) for p in trunk.parameters()}
    for parameter in trunk.parameters():
        parameter.requires_grad_(stage in ("fusion", "joint"))
    for parameter in model.parameters():
        if id(parameter) not in trunk_ids:
            parameter.requires_grad_(True)
    if stage in ("rgb", "depth"):
        embeddings = trunk.rgb_embeddings if stage == "rgb" else trunk.depth_embeddings
        if embeddings is None:
            raise ValueError(f"stage {stage!r} needs the {stage} stream, but `modalities={trunk.config.modalities!r}`.")
        parts: list[nn.Module] = [embeddings]
        parts += [layer.mlp.experts[stage] for layer in trunk.encoder.layers]
        if stage == "rgb":
            parts += [trunk.layernorm] + ([trunk.pre_layernorm] if trunk.pre_layernorm is not None else [])
            parts += [module for layer in trunk.encoder.layers for module in (layer.layernorm_before, layer.attention)]
        for part in parts:
            part.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    described = {
        "rgb": "attention, shared norms, RGB embedding and experts",
        "depth": "depth embedding and experts (attention frozen)",
        "fusion": "everything",
        "joint": "everything",
    }[stage]
    summary = (
        f"training stage {stage!r}: {trainable:,} of {total:,} parameters trainable "
        f"({100 * trainable / max(total, 1):.1f}%: {described}, and the heads)"
    )
    logger.info(summary)
    return summary


__all__ = ["TRAINING_STAGES", "UNIMODAL_STAGE_DROPPED_INPUTS", "set_training_stage"]
