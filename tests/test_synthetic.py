"""Tests for hf_rgbd.data.synthetic (procedural RGB-D benchmark)."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_rgbd.data import CLASS_NAMES, make_synthetic_rgbd, render_rgbd_scenes
from hf_rgbd.data.synthetic import class_attributes, intrinsics_for_size
from hf_rgbd.evaluation import statistics_linear_probe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    return make_synthetic_rgbd(num_train=24, num_validation=16, num_test=16, image_size=32, seed=3)


@pytest.fixture(scope="module")
def scenes():
    """48 rendered 64x64 scenes (6 per class) with clean depth, surface ids and scene parameters."""
    labels = torch.arange(48) % 8
    return render_rgbd_scenes(labels, 64, generator=11, return_extras=True)


def _backproject(depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(H, W) depth -> (H*W, 3) camera-frame points z * K^-1 [u, v, 1]."""
    h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    return (pix @ torch.linalg.inv(k).T) * depth.reshape(-1, 1)


def test_structure_and_features(small):
    assert isinstance(small, datasets.DatasetDict)
    assert set(small) == {"train", "validation", "test"}
    assert [small[s].num_rows for s in ("train", "validation", "test")] == [24, 16, 16]
    feats = small["train"].features
    assert isinstance(feats["image"], datasets.Image)
    assert feats["depth"] == datasets.Array2D((32, 32), "float32")
    assert feats["intrinsics"] == datasets.Array2D((3, 3), "float32")
    assert feats["label"].names == list(CLASS_NAMES) and len(CLASS_NAMES) >= 8
    row = small["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB" and row["image"].size == (32, 32)
    depth = np.asarray(row["depth"], dtype=np.float32)
    assert depth.shape == (32, 32)
    np.testing.assert_allclose(np.asarray(row["intrinsics"]), intrinsics_for_size(32).numpy())


def test_intrinsics_scale_with_size():
    k32, k64 = intrinsics_for_size(32), intrinsics_for_size(64)
    assert k64[0, 0] == pytest.approx(2 * k32[0, 0]) and k64[0, 0] == k64[1, 1]
    assert k64[0, 2] == pytest.approx(31.5) and k64[1, 2] == pytest.approx(31.5)


def test_labels_balanced_and_attributes(small):
    counts = np.bincount(small["train"]["label"], minlength=8)
    assert counts.max() - counts.min() <= 1
    assert class_attributes(5) == {"shape": "cube", "texture": "striped", "printed": True}
    assert {class_attributes(i)["printed"] for i in range(8)} == {True, False}
    with pytest.raises(ValueError, match="label"):
        class_attributes(8)


def test_deterministic_per_seed_and_splits_disjoint(small):
    again = make_synthetic_rgbd(num_train=24, num_validation=16, num_test=16, image_size=32, seed=3)
    other = make_synthetic_rgbd(num_train=24, num_validation=16, num_test=16, image_size=32, seed=4)
    for split in small:
        a, b = small[split].with_format("numpy")[:], again[split].with_format("numpy")[:]
        for key in ("image", "depth", "label", "intrinsics"):
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["depth"], other[split].with_format("numpy")[:]["depth"])
    digests = {split: {d.tobytes() for d in small[split].with_format("numpy")[:]["depth"]} for split in small}
    assert all(len(d) == small[s].num_rows for s, d in digests.items())  # no duplicate inside a split
    assert not digests["train"] & digests["validation"] and not digests["train"] & digests["test"]
    assert not digests["validation"] & digests["test"]


def test_images_roundtrip_losslessly(scenes):
    ds = make_synthetic_rgbd(num_train=8, num_validation=0, num_test=0, image_size=16, seed=0)["train"]
    raw = ds.with_format("arrow")[:]["image"].to_pylist()
    for entry, decoded in zip(raw, ds.with_format("numpy")[:]["image"], strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(entry["bytes"])).convert("RGB")), decoded)


def test_depth_sensor_properties(scenes):
    depth, clean = scenes["depth"], scenes["clean_depth"]
    assert depth.dtype == torch.float32 and torch.isfinite(depth).all() and (depth >= 0).all()
    valid = depth > 0
    assert 0.02 < (~valid).float().mean() < 0.4  # holes exist but most pixels are measured
    mm = depth[valid] * 1000
    assert (mm - mm.round()).abs().max() < 0.02  # 1 mm quantisation
    # noise grows with depth (sigma ~ z^2): compare residual spread near 2 m and near 6 m
    resid = (depth - clean)[valid]
    z = clean[valid]
    near, far = resid[(z > 1.5) & (z < 2.5)], resid[(z > 5.0) & (z < 7.0)]
    assert far.std() > 4 * near.std()
    assert near.std() < 0.02


def test_holes_at_depth_discontinuities(scenes):
    clean, depth = scenes["clean_depth"], scenes["depth"]
    # far side of a jump > 30 cm between horizontal neighbours
    jump = clean[:, :, :-1] - clean[:, :, 1:]
    far_right = jump < -0.3  # right pixel is much farther
    far_pixels = depth[:, :, 1:][far_right]
    assert far_pixels.numel() > 100
    assert (far_pixels == 0).float().mean() > 0.75
    smooth = (jump.abs() < 0.01) & (clean[:, :, 1:] < 4)
    assert (depth[:, :, 1:][smooth] == 0).float().mean() < 0.1


def test_backprojection_matches_scene_geometry(scenes):
    """z * K^-1 [u, v, 1], rotated into the world frame, lands on the rendered object surfaces."""
    k, params = scenes["intrinsics"], scenes["params"]
    checked = 0
    for i, label in enumerate(scenes["label"].tolist()):
        attrs = class_attributes(label)
        target = (scenes["surface_id"][i] == 3) | (scenes["surface_id"][i] == 6)
        for depth, tol in ((scenes["clean_depth"][i], 1e-4), (scenes["depth"][i], None)):
            pts = _backproject(depth, k) @ params["cam_r"][i].T - params["sph_c"][i, 0]
            m = (target & (depth > 0)).reshape(-1)
            if attrs["printed"]:
                resid = pts[m] @ params["print_normal"][i]
            elif attrs["shape"] == "ball":
                resid = pts[m].norm(dim=1) - params["obj_radius"][i]
            else:
                resid = (pts[m] @ params["obj_rot"][i]).abs().amax(1) - 0.78 * params["obj_radius"][i]
            if tol is None:  # noisy depth: within a few sigma (sigma <= 0.0025 z^2) plus quantisation
                z = depth.reshape(-1)[m]
                tol_v = 6 * 0.0025 * z**2 + 0.001
                assert (resid.abs() <= tol_v * 1.8).float().mean() > 0.97
            else:
                assert resid.abs().max() < tol * (1 + params["sph_c"][i, 0].norm())
        checked += int(target.sum())
    assert checked > 1000


def test_fusion_design_print_and_texture_pairs():
    """Same generator stream: a print renders the identical RGB with different depth; a texture swap changes
    RGB with identical depth."""
    base = torch.tensor([0, 2, 4, 6])
    real = render_rgbd_scenes(base, 32, generator=5)
    printed = render_rgbd_scenes(base + 1, 32, generator=5)
    texture_swapped = render_rgbd_scenes(torch.tensor([2, 0, 6, 4]), 32, generator=5)
    assert torch.equal(real["image"], printed["image"])
    for i in range(4):
        assert not torch.equal(real["depth"][i], printed["depth"][i])
        assert not torch.equal(real["image"][i], texture_swapped["image"][i])
    assert torch.equal(real["depth"], texture_swapped["depth"])


def test_printed_target_is_flat_and_real_is_not(scenes):
    """Plane fit residual of back-projected target points (clean depth): ~0 for prints, large for real objects."""
    k = scenes["intrinsics"]
    for i, label in enumerate(scenes["label"].tolist()):
        target = ((scenes["surface_id"][i] == 3) | (scenes["surface_id"][i] == 6)).reshape(-1)
        pts = _backproject(scenes["clean_depth"][i], k)[target].double()
        centred = pts - pts.mean(0)
        smallest_sv = torch.linalg.svdvals(centred)[-1] / centred.shape[0] ** 0.5
        if class_attributes(label)["printed"]:
            assert smallest_sv < 1e-4
        else:
            assert smallest_sv > 0.02


def test_global_statistics_do_not_reveal_the_class():
    ds = make_synthetic_rgbd(num_train=800, num_validation=0, num_test=400, image_size=64, seed=1)
    assert statistics_linear_probe(ds) <= 0.5


def test_global_rng_untouched():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    make_synthetic_rgbd(num_train=4, num_validation=2, num_test=2, image_size=16, seed=0)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert all(np.array_equal(a, b) for a, b in zip(np_state[1:2], np.random.get_state()[1:2], strict=True))


def test_render_accepts_generator_and_seed():
    a = render_rgbd_scenes([0, 5], 16, generator=torch.Generator().manual_seed(9))
    b = render_rgbd_scenes([0, 5], 16, generator=9)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert a["image"].shape == (2, 16, 16, 3) and a["image"].dtype == torch.uint8
    assert a["depth"].shape == (2, 16, 16) and a["label"].tolist() == [0, 5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_train": -1}, "num_train"),
        ({"num_validation": 1.5}, "num_validation"),
        ({"num_test": True}, "num_test"),
        ({"image_size": 4}, "image_size"),
        ({"seed": "zero"}, "seed"),
        ({"seed": -1}, "seed"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_rgbd(**{"num_train": 2, "num_validation": 2, "num_test": 2, **kwargs})


def test_render_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        render_rgbd_scenes([0, 8], 16)
    with pytest.raises(ValueError, match="image_size"):
        render_rgbd_scenes([0], 7)
    with pytest.raises(ValueError, match="generator"):
        render_rgbd_scenes([0], 16, generator="seed")
