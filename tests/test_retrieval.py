"""`hf_rgbd.evaluation.retrieval_metrics`: known values, ties, symmetry, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_rgbd.evaluation import retrieval_metrics, retrieval_ranks


def test_perfect_pairs_give_full_recall():
    embeds = torch.eye(12)
    metrics = retrieval_metrics(embeds, embeds * 3.0)  # cosine: the scale does not matter
    for direction in ("rgb_to_depth", "depth_to_rgb"):
        for k in (1, 5, 10):
            assert metrics[f"{direction}_R@{k}"] == 1.0
        assert metrics[f"{direction}_median_rank"] == 1.0
    assert metrics["num_pairs"] == 12


def test_hand_made_ranks():
    # rgb is the identity, so rgb query i scores depth j with depth[j, i]; depth query i scores rgb j with depth[i, j]
    rgb = torch.eye(3)
    depth = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.8], [0.0, 0.5, 0.6]])
    # rgb -> depth: query 0 sees (1.0, 0.9, 0.0): rank 0; query 1 sees (0.0, 0.1, 0.5): rank 1;
    # query 2 sees (0.0, 0.8, 0.6): rank 1
    assert retrieval_ranks(rgb, depth, normalize=False).tolist() == [0, 1, 1]
    # depth -> rgb: (1.0, 0.0, 0.0): rank 0; (0.9, 0.1, 0.8): rank 2; (0.0, 0.5, 0.6): rank 0
    assert retrieval_ranks(depth, rgb, normalize=False).tolist() == [0, 2, 0]
    metrics = retrieval_metrics(rgb, depth, ks=(1, 2), normalize=False)
    assert metrics["rgb_to_depth_R@1"] == pytest.approx(1 / 3)
    assert metrics["rgb_to_depth_R@2"] == pytest.approx(1.0)
    assert metrics["depth_to_rgb_R@1"] == pytest.approx(2 / 3)
    assert metrics["depth_to_rgb_R@2"] == pytest.approx(2 / 3)
    assert metrics["rgb_to_depth_median_rank"] == 2.0 and metrics["depth_to_rgb_median_rank"] == 1.0


def test_known_values_with_shifted_pairs_and_numpy_inputs():
    # depth i is the rgb embedding of pair (i + 1) mod N: rgb i finds its depth at rank... never first
    generator = torch.Generator().manual_seed(0)
    rgb = torch.nn.functional.normalize(torch.randn(20, 64, generator=generator), dim=-1)
    depth = torch.roll(rgb, shifts=-1, dims=0)
    metrics = retrieval_metrics(rgb.numpy(), depth.numpy())
    assert metrics["rgb_to_depth_R@1"] == 0.0 and metrics["depth_to_rgb_R@1"] == 0.0
    # half the pairs correct, the other half's depth embeddings cycled among themselves: those matches score 0
    # against a 1 elsewhere and tie with every other 0, so they rank last (19)
    rgb = torch.eye(20)
    depth = torch.eye(20)
    depth[10:] = torch.roll(torch.eye(20)[10:], shifts=1, dims=0)
    metrics = retrieval_metrics(rgb.numpy(), depth)
    for direction in ("rgb_to_depth", "depth_to_rgb"):
        for k in (1, 5, 10):
            assert metrics[f"{direction}_R@{k}"] == pytest.approx(0.5)
    torch.testing.assert_close(retrieval_ranks(rgb, depth)[10:], torch.full((10,), 19))


def test_ties_count_against_the_query():
    constant = torch.ones(10, 4)
    metrics = retrieval_metrics(constant, constant)
    assert metrics["rgb_to_depth_R@1"] == 0.0 and metrics["rgb_to_depth_R@10"] == 1.0
    assert metrics["rgb_to_depth_R@5"] == 0.0


def test_chunking_does_not_change_ranks():
    generator = torch.Generator().manual_seed(1)
    rgb, depth = torch.randn(50, 8, generator=generator), torch.randn(50, 8, generator=generator)
    torch.testing.assert_close(retrieval_ranks(rgb, depth, chunk_size=7), retrieval_ranks(rgb, depth))


def test_bad_inputs():
    with pytest.raises(ValueError, match="paired"):
        retrieval_metrics(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="rgb_embeds"):
        retrieval_metrics(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="depth_embeds"):
        retrieval_metrics(torch.randn(4, 3), torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(torch.randn(4, 3), torch.randn(4, 3), ks=(0,))
    with pytest.raises(TypeError, match="rgb_embeds"):
        retrieval_metrics([[1.0]], np.ones((1, 1)))
