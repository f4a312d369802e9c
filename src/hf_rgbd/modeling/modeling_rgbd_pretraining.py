"""Pretraining pieces shared by the RGB-D transformer families: contrastive alignment (ITC) over the global
batch, RGB-depth matching (ITM) with hard negatives mined from the ITC similarities, masked depth modelling (MDM),
the EMA teacher of momentum distillation and its feature queue.

Written once, used by the fusion encoder ([`RgbdAlbefForPreTraining`]) and the mixture of modality experts. Under
`torch.distributed`, embeddings and token states are gathered *with* gradient (as open_clip's
`gather_with_grad`), so every process computes the loss of the global batch and, after DDP's gradient averaging,
the gradients equal those of one process holding the whole batch. Random draws (hard negatives, masked patches) are
made for the global batch from the global torch RNG and each process keeps its own rows, so with the same seed
one and several processes draw the same.

Part of the flat `hf_rgbd.modeling` folder (single-dot imports only), so saved model folders carry it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .modeling_rgbd_common import check_flag, check_same_batch, effective_depth_mask

IGNORE_INDEX = -100  # depth token of a patch without valid depth (as the processor writes it)


# ----------------------------------------------------------------------------------------------- distributed
def distributed_world() -> tuple[int, int]:
    """`(rank, world_size)` of the initialised default process group, `(0, 1)` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (B, ...) of every process along dim 0, differentiably (the backward pass sums the
    gradients of all processes into each one's slice). Returns `tensor` itself in a single process. Every process
    must pass the same shape."""
    _, world_size = distributed_world()
    if world_size == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gather_without_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (B, ...) of every process along dim 0 (no gradient; ids, teacher features)."""
    _, world_size = distributed_world()
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def local_rows(global_batch: torch.Tensor, local_size: int) -> torch.Tensor:
    """This process's rows `[rank * local_size, (rank + 1) * local_size)` of a global-batch tensor."""
    rank, _ = distributed_world()
    return global_batch[rank * local_size : (rank + 1) * local_size]


def global_uniform(local_size: int, *shape: int, device: torch.device) -> torch.Tensor:
    """Uniform noise (local_size, *shape) that is this process's rows of noise drawn for the global batch, so the
    draw does not depend on how the batch is split over processes (given the same torch seed everywhere)."""
    _, world_size = distributed_world()
    noise = torch.rand(local_size * world_size, *shape, device=device)
    return local_rows(noise, local_size)


# ------------------------------------------------------------------------------------------------ input checks
def check_fused_config(config: Any, what: str) -> None:
    """ValueError unless `config.modalities == "rgbd"` (`what` needs both modalities)."""
    if config.modalities != "rgbd":
        raise ValueError(f"{what} needs both modalities, but `modalities={config.modalities!r}`.")


def check_pairs(pixel_values: Any, depth_values: Any, what: str) -> int:
    """The number of RGB-D pairs; ValueError when a modality is missing or the batch sizes differ."""
    if pixel_values is None or depth_values is None:
        raise ValueError(f"{what} needs `pixel_values` and `depth_values`.")
    check_same_batch(pixel_values, depth_values)
    return pixel_values.shape[0]


def check_pretraining_batch(pixel_values: Any, depth_values: Any, what: str) -> int:
    """`check_pairs`, and at least 2 pairs in the global batch (ITM draws its negatives from it)."""
    batch_size = check_pairs(pixel_values, depth_values, what)
    _, world_size = distributed_world()
    if batch_size * world_size < 2:
        raise ValueError(
            f"{what} needs at least 2 pairs per (global) batch: ITM draws its negatives from the batch (and ITC too "
            "without a queue); got a batch of one."
        )
    return batch_size


def check_scene_ids(scene_ids: Any, batch_size: int) -> torch.Tensor | None:
    """`scene_ids` as a (B,) long tensor (or None); ValueError naming it for another dtype or length."""
    if scene_ids is None:
        return None
    if not isinstance(scene_ids, torch.Tensor) or scene_ids.is_floating_point() or scene_ids.dtype == torch.bool:
        raise ValueError(
            f"`scene_ids` must be an integer tensor, got {getattr(scene_ids, 'dtype', type(scene_ids).__name__)}."
        )
    if tuple(scene_ids.shape) != (batch_size,):
        raise ValueError(
            f"`scene_ids` must have one id per pair, shape ({batch_size},), got {tuple(scene_ids.shape)}."
        )
    return scene_ids.long()


def check_depth_token_ids(depth_token_ids: Any, batch_size: int, config: Any) -> torch.Tensor:
    """The depth words (B, N) as long, checked against `config.depth_vocab_size` and the depth stream's patch grid
    (`config.depth_config`); ValueError naming `depth_token_ids` otherwise (values checked without a host sync)."""
    num_patches = config.depth_config.num_patches
    if depth_token_ids is None:
        raise ValueError(
            "`depth_token_ids` are required for masked depth modelling (`mdm_mask_ratio` > 0): make them with a "
            f"processor whose `depth_vocab_size={config.depth_vocab_size}` and `depth_patch_size` is the depth "
            "stream's patch size, or set `mdm_mask_ratio=0`."
        )
    if (
        not isinstance(depth_token_ids, torch.Tensor)
        or depth_token_ids.is_floating_point()
        or depth_token_ids.dtype == torch.bool
    ):
        raise ValueError(
            f"`depth_token_ids` must be an integer tensor, got {getattr(depth_token_ids, 'dtype', type(depth_token_ids).__name__)}."
        )
    if tuple(depth_token_ids.shape) != (batch_size, num_patches):
        raise ValueError(
            f"`depth_token_ids` must have shape ({batch_size}, {num_patches}) (one word per depth patch of "
            f"{config.depth_config.patch_size_pair[0]} pixels), got {tuple(depth_token_ids.shape)}: was it made with "
            "another `depth_patch_size` or image size?"
        )
    depth_token_ids = depth_token_ids.long()
    valid = ((depth_token_ids >= 0) & (depth_token_ids < config.depth_vocab_size)) | (depth_token_ids == IGNORE_INDEX)
    torch._assert_async(
        valid.all(),
        f"`depth_token_ids` must lie in [0, {config.depth_vocab_size}) (config.depth_vocab_size) or be -100: they "
        "come from a processor with another `depth_vocab_size`.",
    )
    return depth_token_ids


# ------------------------------------------------------------------------------------------------------- ITC
def contrastive_targets(
    batch_size: int,
    num_columns: int,
    device: torch.device,
    row_ids: torch.Tensor | None,
    column_ids: torch.Tensor | None,
) -> torch.Tensor:
    """ITC targets (B, C): row i's positive is column i, or, with ids, every column of the same id (uniformly).
    Ids < 0 (unknown) match only their own column."""
    targets = torch.zeros(batch_size, num_columns, device=device)
    targets[:, :batch_size] = torch.eye(batch_size, device=device)
    if row_ids is None or column_ids is None:
        return targets
    same = (row_ids[:, None] == column_ids[None, :]) & (row_ids[:, None] >= 0)
    targets = torch.where(same, torch.ones_like(targets), targets)
    return targets / targets.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `-sum_j targets_ij log softmax(logits)_ij`; `targets` rows sum to 1."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def global_contrastive_loss(
    rgb_embeds: torch.Tensor,
    depth_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    scene_ids: torch.Tensor | None = None,
    queue: RgbdFeatureQueue | None = None,
    teacher_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
    distillation_alpha: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between L2-normalised embeddings over the global batch (and the queue, if given).

    Args:
        rgb_embeds, depth_embeds: (B, P) L2-normalised, pair i = (rgb i, depth i); gathered over processes here.
        logit_scale: scalar, the already exponentiated scale (1 / temperature).
        scene_ids: (B,) long or None; pairs of one scene are all positives of each other (never negatives).
        queue: feature queue of earlier teacher embeddings, appended as extra negatives (columns).
        teacher_embeds: `(rgb, depth)` (B, P) teacher embeddings (no gradient): the columns of the similarity
            matrix when a queue or distillation is used, as ALBEF (the student's rows against the teacher's
            columns); with `distillation_alpha > 0` the targets are `alpha * softmax(teacher similarities) +
            (1 - alpha) * hard targets`.

    Returns:
        `(loss, logits_per_rgb, logits_per_depth)`: the loss (scalar) and this process's rows of the RGB -> depth
        and depth -> RGB logits, (B, B_global [+ queue_size]) each; the first B_global columns are the global batch.
    """
    local_size = rgb_embeds.shape[0]
    all_rgb, all_depth = gather_with_grad(rgb_embeds), gather_with_grad(depth_embeds)
    all_ids = gather_without_grad(scene_ids) if scene_ids is not None else None
    if teacher_embeds is not None:
        column_rgb = gather_without_grad(teacher_embeds[0])
        column_depth = gather_without_grad(teacher_embeds[1])
    else:
        column_rgb, column_depth = all_rgb, all_depth
    column_ids = all_ids
    if queue is not None and queue.size > 0:
        column_rgb = torch.cat([column_rgb, queue.rgb.to(column_rgb.dtype)], dim=0)
        column_depth = torch.cat([column_depth, queue.depth.to(column_depth.dtype)], dim=0)
        if all_ids is not None:
            column_ids = torch.cat([all_ids, queue.ids], dim=0)
    logits_per_rgb = logit_scale * all_rgb @ column_depth.t()
    logits_per_depth = logit_scale * all_depth @ column_rgb.t()
    targets = contrastive_targets(all_rgb.shape[0], column_depth.shape[0], all_rgb.device, all_ids, column_ids)
    rgb_targets = depth_targets = targets
    if teacher_embeds is not None and distillation_alpha > 0:
        with torch.no_grad():
            teacher_rgb, teacher_depth = gather_without_grad(teacher_embeds[0]), gather_without_grad(teacher_embeds[1])
            teacher_rgb_logits = logit_scale * teacher_rgb @ column_depth.t()
            teacher_depth_logits = logit_scale * teacher_depth @ column_rgb.t()
            rgb_targets = distillation_alpha * teacher_rgb_logits.softmax(-1) + (1 - distillation_alpha) * targets
            depth_targets = distillation_alpha * teacher_depth_logits.softmax(-1) + (1 - distillation_alpha) * targets
    loss = (soft_cross_entropy(logits_per_rgb, rgb_targets) + soft_cross_entropy(logits_per_depth, depth_targets)) / 2
    return loss, local_rows(logits_per_rgb, local_size), local_rows(logits_per_depth, local_size)


class RgbdFeatureQueue(nn.Module):
    """FIFO queue of teacher embeddings (MoCo / ALBEF) used as extra ITC negatives; part of the saved state.

    Buffers: `rgb`, `depth` (queue_size, projection_dim) L2-normalised, `ids` (queue_size,) scene ids (-1 unknown),
    `filled` (number of valid rows) and `pointer` (next row to write). Rows beyond `filled` are never used.
    """

    def __init__(self, queue_size: int, projection_dim: int):
        super().__init__()
        self.queue_size = queue_size
        self.register_buffer("rgb_queue", torch.zeros(queue_size, projection_dim))
        self.register_buffer("depth_queue", torch.zeros(queue_size, projection_dim))
        self.register_buffer("id_queue", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.filled)

    @property
    def rgb(self) -> torch.Tensor:
        return self.rgb_queue[: self.size]

    @property
    def depth(self) -> torch.Tensor:
        return self.depth_queue[: self.size]

    @property
    def ids(self) -> torch.Tensor:
        return self.id_queue[: self.size]

    @torch.no_grad()
    def enqueue(self, rgb: torch.Tensor, depth: torch.Tensor, ids: torch.Tensor | None) -> None:
        """Append the global batch's teacher embeddings (gathered here), overwriting the oldest rows."""
        rgb, depth = gather_without_grad(rgb), gather_without_grad(depth)
        ids = gather_without_grad(ids) if ids is not None else torch.full((rgb.shape[0],), -1, device=rgb.device)
        count = min(rgb.shape[0], self.queue_size)
        rows = (self.pointer + torch.arange(count, device=rgb.device)) % self.queue_size
        self.rgb_queue[rows] = rgb[-count:].to(self.rgb_queue.dtype)
        self.depth_queue[rows] = depth[-count:].to(self.depth_queue.dtype)
        self.id_queue[rows] = ids[-count:].to(torch.long)
        self.pointer.copy_((self.pointer + count) % self.queue_size)
        self.filled.copy_(torch.clamp(self.filled + count, max=self.queue_size))


# ------------------------------------------------------------------------------------------------------- ITM
def sample_hard_negatives(
    logits_per_rgb: torch.Tensor, logits_per_depth: torch.Tensor, scene_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every RGB a depth map and for every depth map an RGB image of the global batch, drawn with probability
    `softmax` of the ITC similarity, the positive (and, with `scene_ids`, every pair of the same scene) excluded:
    ALBEF's hard-negative sampling.

    Args:
        logits_per_rgb, logits_per_depth: (B, B_global[+ ...]) this process's rows of the ITC logits; only the
            first B_global columns (the global batch) are used.
        scene_ids: (B_global,) long, or None.

    Returns:
        `(negative_depth_for_rgb, negative_rgb_for_depth)`, (B,) long indices into the global batch. The draw uses
        the Gumbel-max trick on noise drawn for the whole global batch (see the module docstring). A pair without
        any possible negative (a batch of one, or every pair of one scene) fails with an error naming it.
    """
    local_size = logits_per_rgb.shape[0]
    rank, world_size = distributed_world()
    total = local_size * world_size
    device = logits_per_rgb.device
    columns = torch.arange(total, device=device)
    own = rank * local_size + torch.arange(local_size, device=device)
    excluded = own[:, None] == columns[None, :]
    if scene_ids is not None:
        excluded = excluded | (local_rows(scene_ids, local_size)[:, None] == scene_ids[None, :])
    torch._assert_async(
        (~excluded).any(dim=1).all(),
        "hard negatives: a pair has no possible negative (the batch holds one pair, or every other pair has the "
        "same `scene_ids`): use larger batches, fewer pairs per scene, or a feature queue for ITC.",
    )
    negatives = []
    for logits in (logits_per_rgb, logits_per_depth):
        scores = logits[:, :total].detach().float().masked_fill(excluded, float("-inf"))
        uniform = global_uniform(local_size, total, device=device).clamp_(1e-20, 1.0)
        negatives.append((scores - torch.log(-torch.log(uniform))).argmax(dim=1))
    return negatives[0], negatives[1]


class RgbdMatchingHead(nn.Module):
    """ITM head: fused [CLS] (B, D) -> logits (B, 2), index 1 = matched."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, fused_cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(fused_cls)


def matching_loss(itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the ITM logits (N, 2) against 1 (matched) / 0 (not matched) / -100 (left out); 0 when all
    are left out."""
    loss = F.cross_entropy(itm_logits.float(), itm_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / (itm_labels != IGNORE_INDEX).sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------------- MDM
def draw_mdm_mask(depth_token_ids: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Which depth patches to mask: per sample `round(mask_ratio * n_valid)` (at least one when `n_valid > 0`) of
    the patches with a valid token (id >= 0), uniformly. (B, N) long -> (B, N) bool. Noise from `global_uniform`."""
    batch_size, num_patches = depth_token_ids.shape
    valid = depth_token_ids >= 0
    noise = global_uniform(batch_size, num_patches, device=depth_token_ids.device)
    noise = noise.masked_fill(~valid, 2.0)  # invalid patches sort last
    rank = noise.argsort(dim=1).argsort(dim=1)
    num_valid = valid.sum(dim=1, keepdim=True)
    count = torch.where(
        num_valid > 0,
        (num_valid.float() * mask_ratio).round().clamp(min=1),
        torch.zeros_like(num_valid, dtype=torch.float),
    )
    return (rank < count) & valid


def check_masking_size(values: torch.Tensor, stream_config: Any, name: str, field: str) -> None:
    """ValueError naming `name` unless `values` (B, C, H, W) has the configured `stream_config.image_size`
    (`field` names the config field): a patch mask covers the configured patch grid only."""
    expected = tuple(stream_config.image_size_pair)
    if tuple(values.shape[-2:]) != expected:
        raise ValueError(
            f"`{name}` must be {expected} (`{field}.image_size`) for masked modelling, whose patch mask covers the "
            f"configured grid; got {tuple(values.shape[-2:])}."
        )


def patch_mask_to_pixels(
    patch_mask: torch.Tensor, grid_size: tuple[int, int], patch_size: tuple[int, int]
) -> torch.Tensor:
    """(B, N) bool patch mask (row-major grid) -> (B, 1, H, W) bool pixel mask."""
    batch_size = patch_mask.shape[0]
    grid = patch_mask.view(batch_size, 1, grid_size[0], grid_size[1])
    return grid.repeat_interleave(patch_size[0], dim=2).repeat_interleave(patch_size[1], dim=3)


class RgbdMaskedDepthHead(nn.Module):
    """MDM head, as BERT's MLM head: dense + activation + LayerNorm, then a decoder to the depth vocabulary.
    (B, N, D) -> (B, N, depth_vocab_size)."""

    def __init__(
        self, hidden_size: int, depth_vocab_size: int, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12
    ):
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, depth_vocab_size)

    def forward(self, token_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(token_states))))


def masked_depth_loss(
    mdm_logits: torch.Tensor,
    depth_token_ids: torch.Tensor | None,
    mdm_mask: torch.Tensor | None,
    teacher_logits: torch.Tensor | None = None,
    distillation_alpha: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of the depth words of the masked patches (mean over masked patches; 0 if there are none, and
    a float32 0 when MDM is off, `mdm_mask=None`). With teacher logits and `distillation_alpha > 0`:
    `(1 - alpha) * CE(hard) + alpha * CE(teacher softmax)`, as ALBEF's distilled MLM.

    Args: mdm_logits (B, N, V); depth_token_ids (B, N) or None; mdm_mask (B, N) bool or None; teacher_logits
    (B, N, V) or None.
    """
    if mdm_mask is None:
        return torch.zeros((), dtype=torch.float32, device=mdm_logits.device)
    selected = mdm_mask & (depth_token_ids >= 0)
    count = selected.sum().clamp(min=1)
    log_probs = F.log_softmax(mdm_logits.float(), dim=-1)
    targets = depth_token_ids.clamp(min=0)
    hard = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    per_patch = hard
    if teacher_logits is not None and distillation_alpha > 0:
        soft = -(teacher_logits.float().softmax(-1) * log_probs).sum(-1)
        per_patch = (1 - distillation_alpha) * hard + distillation_alpha * soft
    return (per_patch * selected).sum() / count


def image_patches(pixel_values: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * p_h * p_w): the non-overlapping patches in the row-major order of the token grid."""
    return F.unfold(pixel_values, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def masked_image_loss(
    predicted_patches: torch.Tensor, pixel_values: torch.Tensor, mim_mask: torch.Tensor, patch_size: tuple[int, int]
) -> torch.Tensor:
    """Masked image modelling (SimMIM's L1, on MAE's per-patch normalised pixels): the mean absolute error between
    `predicted_patches` (B, N, C * p_h * p_w) and each masked patch of `pixel_values` (B, C, H, W) normalised to
    zero mean and unit variance over its own pixels; mean over the masked patches `mim_mask` (B, N) bool."""
    target = image_patches(pixel_values.float(), patch_size)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
    per_patch = (predicted_patches.float() - target).abs().mean(-1)
    return (per_patch * mim_mask).sum() / mim_mask.sum().clamp(min=1)


def depth_bin_centres(vocab_size: int, min_depth: float, max_depth: float) -> torch.Tensor:
    """Geometric centres (vocab_size,) in metres of the processor's log-spaced depth bins over [min, max]."""
    low, high = math.log(min_depth), math.log(max_depth)
    return torch.exp(low + (torch.arange(vocab_size, dtype=torch.float64) + 0.5) / vocab_size * (high - low)).float()


# ---------------------------------------------------------------------------------------------- EMA teacher
@torch.no_grad()
def ema_update(teacher: Iterable[torch.Tensor], student: Iterable[torch.Tensor], momentum: float) -> None:
    """`teacher = momentum * teacher + (1 - momentum) * student`, parameter by parameter."""
    teacher, student = list(teacher), list(student)
    if len(teacher) != len(student):
        raise ValueError("the teacher and the student must have the same parameters.")
    torch._foreach_lerp_(teacher, student, 1.0 - momentum)


# ----------------------------------------------------------------------------------------------- shared steps
def empty_depth(depth_config: Any, batch_size: int, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(depth_values, depth_mask)` of `batch_size` depth maps of `depth_config`'s size without any valid pixel (a
    missing modality), on `reference`'s device and in its dtype."""
    height, width = depth_config.image_size_pair
    values = torch.zeros(
        batch_size, depth_config.num_channels, height, width, dtype=reference.dtype, device=reference.device
    )
    return values, torch.zeros(batch_size, 1, height, width, dtype=torch.bool, device=reference.device)


def mask_depth_for_mdm(
    config: Any, depth_values: torch.Tensor, depth_mask: torch.Tensor | None, depth_token_ids: Any, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The one masked depth pass of a pretraining step: `(depth_mask, depth_token_ids, mdm_mask)` with the MDM
    patches (`config.mdm_mask_ratio` of the valid ones, drawn by `draw_mdm_mask`) turned into holes of
    `depth_mask` (B, 1, H, W); `depth_token_ids` checked (B, N) and `mdm_mask` (B, N), both None with MDM off."""
    depth_mask = effective_depth_mask(depth_values, depth_mask)
    if config.mdm_mask_ratio <= 0:
        return depth_mask, None, None
    depth_token_ids = check_depth_token_ids(depth_token_ids, batch_size, config)
    check_masking_size(depth_values, config.depth_config, "depth_values", "depth_config")
    mdm_mask = draw_mdm_mask(depth_token_ids, float(config.mdm_mask_ratio))
    depth_config = config.depth_config
    depth_mask = depth_mask & ~patch_mask_to_pixels(mdm_mask, depth_config.grid_size, depth_config.patch_size_pair)
    return depth_mask, depth_token_ids, mdm_mask


def place_on_grid(
    tokens: torch.Tensor, num_target_tokens: int, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """Token states (B, 1 + N_source, D) of one modality placed on the other's patch grid: (B, 1 + N_target, D),
    [CLS] first; resized (bilinear) from `source_grid` to `target_grid` when the token counts differ. RGB and
    depth are pixel-registered, so the same grid place is the same part of the scene (`aligned_fusion`)."""
    if tokens.shape[1] == num_target_tokens:
        return tokens
    if (
        tokens.shape[1] != 1 + source_grid[0] * source_grid[1]
        or num_target_tokens != 1 + target_grid[0] * target_grid[1]
    ):
        raise ValueError(
            f"`aligned_fusion` needs the RGB and depth token grids: got {tokens.shape[1] - 1} RGB and "
            f"{num_target_tokens - 1} depth patches, which are neither equal nor the configured grids {source_grid} "
            f"and {target_grid} (inputs of another size with different patch sizes); give both modalities the "
            "same patch grid or set `aligned_fusion=False`."
        )
    patches = tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, *source_grid)
    patches = F.interpolate(patches, size=tuple(target_grid), mode="bilinear", align_corners=False)
    return torch.cat([tokens[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


def matching_pairs(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    depth_key_mask: torch.Tensor,
    negative_depth: torch.Tensor,
    negative_rgb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3B ITM pairs of this process's B pairs: `(rgb, depth, depth_key_mask)` for the positives, then (RGB i,
    its hard negative depth map), then (its hard negative RGB image, depth i). `rgb` (B, L_rgb, D) and `depth`
    (B, L_depth, D) are token states (or embeddings), gathered over processes with gradient for the negatives
    (`negative_*` index the global batch)."""
    all_rgb, all_depth = gather_with_grad(rgb), gather_with_grad(depth)
    all_key_mask = gather_without_grad(depth_key_mask)
    return (
        torch.cat([rgb, rgb, all_rgb[negative_rgb]]),
        torch.cat([depth, all_depth[negative_depth], depth]),
        torch.cat([depth_key_mask, all_key_mask[negative_depth], depth_key_mask]),
    )


def matching_labels(batch_size: int, drop_rgb: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """ITM labels (3B,) of `matching_pairs`: 1 for the positives (-100 where the RGB image was dropped), 0 for the
    2B negatives."""
    positive = torch.ones(batch_size, dtype=torch.long, device=device)
    if drop_rgb is not None:
        positive = torch.where(drop_rgb, torch.full_like(positive, IGNORE_INDEX), positive)
    return torch.cat([positive, positive.new_zeros(2 * batch_size)])


def matching_rgb_drop(drop_rgb: torch.Tensor | None) -> torch.Tensor | None:
    """The RGB dropout (B,) of the positives spread over the 3B `matching_pairs` (negatives keep their image)."""
    if drop_rgb is None:
        return None
    return torch.cat([drop_rgb, torch.zeros_like(drop_rgb), torch.zeros_like(drop_rgb)])


def draw_pretraining_rgb_dropout(
    config: Any, training: bool, batch_size: int, device: torch.device
) -> torch.Tensor | None:
    """Which positives lose their RGB image in a pretraining step (`config.modality_dropout[0]`, drawn for the
    global batch), (B,) bool, or None when off."""
    if not training or config.modality_dropout[0] <= 0:
        return None
    return global_uniform(batch_size, device=device) < config.modality_dropout[0]


@dataclass
class RgbdMatchingOutput(ModelOutput):
    r"""Output of an RGB-D matching model ([`RgbdAlbefForRgbdMatching`], [`RgbdVlmoForRgbdMatching`]), as
    `BlipImageTextMatchingModelOutput`.

    Args:
        itm_score (`torch.Tensor`): with `use_itm_head=True` the ITM logits (B, 2) of the pairs (RGB i, depth i),
            index 1 = matched; with `use_itm_head=False` the cosine similarities (B_rgb, B_depth) of the ITC
            embeddings.
        rgb_embeds / depth_embeds (`torch.Tensor` (B, projection_dim)): L2-normalised ITC embeddings.
        last_hidden_state (`torch.Tensor` (B, L, D)): fused token states (`use_itm_head=True` only).
    """

    itm_score: torch.Tensor | None = None
    rgb_embeds: torch.Tensor | None = None
    depth_embeds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class RgbdMatchingMixin:
    """`forward` of the matching models (as `BlipForImageTextRetrieval`): the model holds its trunk as `base_model`
    (with `get_rgb_features` / `get_depth_features` and a fused forward returning `pooler_output`) and an
    `itm_head` ([`RgbdMatchingHead`])."""

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        depth_values: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        use_itm_head: bool = True,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> RgbdMatchingOutput:
        """Score RGB-D pairs.

        Args:
            pixel_values: (B_rgb, 3, H, W); depth_values: (B_depth, C_d, H, W); depth_mask: (B_depth, 1, H, W).
            use_itm_head: True: pairs (RGB i, depth i), B_rgb == B_depth, ITM logits (B, 2). False: every RGB
                against every depth map, cosine similarities (B_rgb, B_depth).
        """
        if pixel_values is None or depth_values is None:
            raise ValueError("matching needs `pixel_values` and `depth_values`.")
        trunk = self.base_model
        kwargs = {key: value for key, value in kwargs.items() if key != "return_dict"}
        if check_flag(use_itm_head, "use_itm_head"):
            check_pairs(pixel_values, depth_values, "matching with `use_itm_head=True`")
            outputs = trunk(
                pixel_values=pixel_values,
                depth_values=depth_values,
                depth_mask=depth_mask,
                interpolate_pos_encoding=interpolate_pos_encoding,
                return_dict=True,
                **kwargs,
            )
            return RgbdMatchingOutput(
                itm_score=self.itm_head(outputs.pooler_output),
                rgb_embeds=getattr(outputs, "rgb_embeds", None),
                depth_embeds=getattr(outputs, "depth_embeds", None),
                last_hidden_state=outputs.last_hidden_state,
            )
        kwargs = dict(kwargs, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        rgb_embeds = F.normalize(trunk.get_rgb_features(pixel_values, **kwargs).pooler_output, dim=-1)
        depth_embeds = F.normalize(trunk.get_depth_features(depth_values, depth_mask, **kwargs).pooler_output, dim=-1)
        return RgbdMatchingOutput(
            itm_score=rgb_embeds @ depth_embeds.t(), rgb_embeds=rgb_embeds, depth_embeds=depth_embeds
        )


__all__ = [
    "IGNORE_INDEX",
    "RgbdFeatureQueue",
    "RgbdMaskedDepthHead",
    "RgbdMatchingHead",
    "RgbdMatchingMixin",
    "RgbdMatchingOutput",
    "check_depth_token_ids",
    "check_fused_config",
    "check_masking_size",
    "check_pairs",
    "check_pretraining_batch",
    "check_scene_ids",
    "contrastive_targets",
    "depth_bin_centres",
    "distributed_world",
    "draw_mdm_mask",
    "draw_pretraining_rgb_dropout",
    "ema_update",
    "empty_depth",
    "gather_with_grad",
    "gather_without_grad",
    "global_contrastive_loss",
    "global_uniform",
    "image_patches",
    "local_rows",
    "mask_depth_for_mdm",
    "masked_depth_loss",
    "masked_image_loss",
    "matching_labels",
    "matching_loss",
    "matching_pairs",
    "matching_rgb_drop",
    "patch_mask_to_pixels",
    "sample_hard_negatives",
    "soft_cross_entropy",
]
