"""Cross-modal retrieval metrics (RGB <-> depth) for paired embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["retrieval_metrics", "retrieval_ranks"]


def _as_matrix(embeds: Any, name: str) -> torch.Tensor:
    if isinstance(embeds, np.ndarray):
        embeds = torch.from_numpy(embeds)
    if not isinstance(embeds, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(embeds).__name__}.")
    if embeds.dim() != 2 or embeds.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty (N, D) matrix, got shape {tuple(embeds.shape)}.")
    if not embeds.is_floating_point():
        embeds = embeds.float()
    if not torch.isfinite(embeds).all():
        raise ValueError(f"`{name}` contains NaN or inf.")
    return embeds.detach().to(torch.float64)


@torch.no_grad()
def retrieval_ranks(
    query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, normalize: bool = True, chunk_size: int = 1024
) -> torch.Tensor:
    """0-based rank of each query's match (query i matches gallery item i) among all gallery items.

    Scores are cosine similarities (dot products with `normalize=False`). Ties count against the query: the rank
    is the number of *other* gallery items scoring at least as high as the match, so a constant embedding gets the
    worst rank, never a lucky one. Returns a (N,) long tensor.
    """
    if normalize:
        query_embeds = F.normalize(query_embeds, dim=-1)
        gallery_embeds = F.normalize(gallery_embeds, dim=-1)
    ranks = []
    for start in range(0, query_embeds.shape[0], chunk_size):
        queries = query_embeds[start : start + chunk_size]
        scores = queries @ gallery_embeds.t()  # (n, N)
        rows = torch.arange(queries.shape[0])
        matched = scores[rows, rows + start].unsqueeze(1)
        at_least = (scores >= matched).sum(dim=1) - 1  # the match itself is always counted once
        ranks.append(at_least)
    return torch.cat(ranks)


def retrieval_metrics(
    rgb_embeds: Any,
    depth_embeds: Any,
    ks: Sequence[int] = (1, 5, 10),
    normalize: bool = True,
) -> dict[str, float]:
    """Recall@k for RGB -> depth and depth -> RGB retrieval over paired embeddings (pair i matches i).

    Args:
        rgb_embeds: (N, D) RGB embeddings (torch or numpy), e.g. `RgbdClipOutput.rgb_embeds`.
        depth_embeds: (N, D) depth embeddings, row i paired with `rgb_embeds[i]`. The other modality's N items are
            the gallery.
        ks: the cut-offs k.
        normalize: score with cosine similarity (True) or raw dot products.

    Returns:
        `{"rgb_to_depth_R@1": r, ..., "depth_to_rgb_R@10": r}`: fractions in [0, 1] of queries whose match is among
        the top k (ties count against the query, see [`retrieval_ranks`]), plus `"rgb_to_depth_median_rank"` /
        `"depth_to_rgb_median_rank"` (1-based) and `"num_pairs"`.
    """
    rgb = _as_matrix(rgb_embeds, "rgb_embeds")
    depth = _as_matrix(depth_embeds, "depth_embeds")
    if rgb.shape != depth.shape:
        raise ValueError(
            f"`rgb_embeds` and `depth_embeds` must be paired (same shape), got {tuple(rgb.shape)} and "
            f"{tuple(depth.shape)}."
        )
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be positive integers, got {ks}.")
    metrics: dict[str, float] = {}
    for name, queries, gallery in (("rgb_to_depth", rgb, depth), ("depth_to_rgb", depth, rgb)):
        ranks = retrieval_ranks(queries, gallery, normalize=normalize)
        for k in ks:
            metrics[f"{name}_R@{k}"] = float((ranks < k).double().mean())
        metrics[f"{name}_median_rank"] = float(ranks.double().median()) + 1.0
    metrics["num_pairs"] = float(rgb.shape[0])
    return metrics
