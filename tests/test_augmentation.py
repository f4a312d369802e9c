"""Tests for hf_rgbd.data.RgbdAugment (aligned RGB-D augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_rgbd.data import RgbdAugment, make_synthetic_rgbd

torch.set_num_threads(1)

NO_COLOUR = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


def _coordinate_batch(n: int = 16, h: int = 40, w: int = 56) -> dict[str, torch.Tensor]:
    """RGB encodes the source pixel coordinates (R = u / (W-1), G = v / (H-1)); depth is a known linear function
    of the same coordinates; intrinsics are a generic pinhole (with a little skew)."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([u / (w - 1), v / (h - 1), torch.full_like(u, 0.5)])[None].repeat(n, 1, 1, 1)
    depth = (1.0 + 0.02 * u + 0.01 * v)[None, None].repeat(n, 1, 1, 1)
    k = torch.tensor([[50.0, 0.3, 27.0], [0.0, 48.0, 19.5], [0.0, 0.0, 1.0]])
    return {"image": image, "depth": depth, "intrinsics": k.expand(n, 3, 3).clone(), "label": torch.arange(n)}


def _rays(k: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Normalised camera rays K^-1 [u, v, 1] for (B, H, W) pixel coordinates -> (B, H, W, 3)."""
    pix = torch.stack([u, v, torch.ones_like(u)], -1)
    return torch.einsum("bij,bhwj->bhwi", torch.linalg.inv(k.double()), pix.double())


@pytest.mark.parametrize("output_size", [None, 24, (30, 44)])
def test_crop_flip_keeps_rgb_depth_and_intrinsics_aligned(output_size):
    n, h, w = 16, 40, 56
    batch = _coordinate_batch(n, h, w)
    aug = RgbdAugment(output_size=output_size, crop_scale=(0.2, 0.9), p_flip=0.5, generator=7, **NO_COLOUR)
    out = aug(batch)
    oh, ow = (
        (h, w)
        if output_size is None
        else ((output_size, output_size) if isinstance(output_size, int) else output_size)
    )
    assert out["image"].shape == (n, 3, oh, ow) and out["depth"].shape == (n, 1, oh, ow)
    assert out["intrinsics"].shape == (n, 3, 3) and torch.equal(out["label"], batch["label"])

    # source coordinates seen by each output pixel (bilinear interpolation of a linear ramp is exact)
    u_src = out["image"][:, 0] * (w - 1)
    v_src = out["image"][:, 1] * (h - 1)
    # depth is sampled with nearest neighbour: within half a source pixel of the RGB coordinates
    expected = 1.0 + 0.02 * u_src + 0.01 * v_src
    assert (out["depth"][:, 0] - expected).abs().max() <= 0.02 * 0.5 + 0.01 * 0.5 + 1e-4

    flipped = u_src[:, :, -1] < u_src[:, :, 0]  # u decreases left to right
    assert 0 < flipped[:, 0].sum() < n and torch.equal(flipped.all(1), flipped.any(1))

    # the new intrinsics map every output pixel to the same camera ray as its source pixel (mirrored for flips)
    vv, uu = torch.meshgrid(
        torch.arange(oh, dtype=torch.float32), torch.arange(ow, dtype=torch.float32), indexing="ij"
    )
    new_rays = _rays(out["intrinsics"], uu.expand(n, oh, ow), vv.expand(n, oh, ow))
    old_rays = _rays(batch["intrinsics"], u_src, v_src)
    sign = torch.where(flipped[:, 0], -1.0, 1.0).double()[:, None, None]
    torch.testing.assert_close(new_rays[..., 0], sign * old_rays[..., 0], atol=2e-4, rtol=0)
    torch.testing.assert_close(new_rays[..., 1], old_rays[..., 1], atol=2e-4, rtol=0)


def test_backprojection_stays_consistent_on_a_plane():
    """A tilted plane rendered with K stays a plane with the same (mirrored) equation when back-projected with K'."""
    n, h, w = 8, 48, 48
    k = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]])
    normal, offset = torch.tensor([0.2, -0.3, 0.93]), 2.0
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    rays = torch.stack([(u - 23.5) / 40, (v - 23.5) / 40, torch.ones_like(u)], -1)
    depth = offset / (rays @ normal)
    batch = {
        "image": torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0)),
        "depth": depth.expand(n, 1, h, w),
        "intrinsics": k,
    }
    out = RgbdAugment(output_size=32, crop_scale=(0.3, 1.0), p_flip=0.5, generator=3)(batch)
    vv, uu = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    pts = _rays(out["intrinsics"], uu.expand(n, 32, 32), vv.expand(n, 32, 32)) * out["depth"][:, 0, ..., None].double()
    mirrored = normal.double() * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    resid_plain = (pts @ normal.double() - offset).abs().amax((1, 2))
    resid_mirror = (pts @ mirrored - offset).abs().amax((1, 2))
    # nearest-neighbour depth: at most half a source pixel of plane slope (~2 cm here) off the plane
    assert (torch.minimum(resid_plain, resid_mirror) < 0.03).all()
    assert (resid_plain < 0.03).any() and (resid_mirror < 0.03).any()  # both flipped and unflipped samples


def test_identity_when_all_random_ops_are_off():
    batch = _coordinate_batch(4)
    batch["depth"][:, :, ::3, ::5] = 0.0
    out = RgbdAugment(p_crop=0.0, p_flip=0.0, generator=0, **NO_COLOUR)(batch)
    torch.testing.assert_close(out["image"], batch["image"], atol=1e-5, rtol=0)
    assert torch.equal(out["depth"], batch["depth"])
    torch.testing.assert_close(out["intrinsics"], batch["intrinsics"])


def test_holes_stay_holes_and_are_never_blended():
    gen = torch.Generator().manual_seed(1)
    n, h, w = 8, 32, 32
    depth = 2.0 + torch.rand(n, 1, h, w, generator=gen)  # valid depth in [2, 3]
    holes = torch.rand(n, 1, h, w, generator=gen) < 0.3
    depth[holes] = 0.0
    depth[:, :, 0, 0] = float("nan")  # non-finite -> hole
    mask = torch.ones(n, 1, h, w, dtype=torch.bool)
    mask[:, :, 5, :] = False  # valid depth explicitly masked out -> hole
    batch = {"image": torch.rand(n, 3, h, w, generator=gen), "depth": depth, "depth_mask": mask}
    out = RgbdAugment(output_size=20, crop_scale=(0.3, 1.0), generator=2)(batch)
    d, m = out["depth"], out["depth_mask"]
    assert m.dtype == torch.bool and torch.equal(m, d > 0) and torch.isfinite(d).all()
    assert ((d[m] >= 2.0) & (d[m] <= 3.0)).all()  # no value blended with a hole (0) or NaN
    source_values = set(depth[torch.isfinite(depth) & (depth > 0)].tolist())
    assert set(d[m].tolist()) <= source_values  # nearest neighbour: values are copied, never interpolated
    assert 0.15 < (~m).float().mean() < 0.5


def test_depth_noise_grows_with_depth_on_valid_pixels_only():
    n, h, w = 4, 64, 64
    depth = torch.ones(n, 1, h, w)
    depth[..., w // 2 :] = 3.0
    depth[..., ::4, ::4] = 0.0
    out = RgbdAugment(p_crop=0.0, p_flip=0.0, depth_noise=0.01, generator=0, **NO_COLOUR)(
        {"image": torch.zeros(n, 3, h, w), "depth": depth}
    )
    diff = out["depth"] - depth
    assert (out["depth"][depth == 0] == 0).all()
    near, far = diff[..., : w // 2][depth[..., : w // 2] > 0], diff[..., w // 2 :][depth[..., w // 2 :] > 0]
    assert near.std() == pytest.approx(0.01, rel=0.15)  # sigma = 0.01 * 1^2
    assert far.std() == pytest.approx(0.09, rel=0.15)  # sigma = 0.01 * 3^2


def test_extra_holes():
    n, h, w = 32, 48, 48
    batch = {
        "image": torch.rand(n, 3, h, w),
        "depth": torch.full((n, 1, h, w), 2.0),
        "depth_mask": torch.ones(n, 1, h, w, dtype=torch.bool),
    }
    out = RgbdAugment(p_crop=0.0, p_flip=0.0, p_extra_holes=1.0, hole_fraction=0.2, generator=0, **NO_COLOUR)(batch)
    frac = (~out["depth_mask"]).float().mean((1, 2, 3))
    assert torch.equal(out["depth_mask"], out["depth"] > 0)
    assert (frac > 0.1).all() and (frac < 0.3).all() and frac.mean() == pytest.approx(0.2, abs=0.03)
    torch.testing.assert_close(out["image"], batch["image"], atol=1e-5, rtol=0)  # RGB untouched
    none = RgbdAugment(p_crop=0.0, p_flip=0.0, p_extra_holes=0.0, hole_fraction=0.2, generator=0, **NO_COLOUR)(batch)
    assert none["depth_mask"].all()


def test_modality_dropout_is_exclusive():
    n = 64
    batch = {
        "image": torch.rand(n, 3, 16, 16) * 0.5 + 0.25,
        "depth": torch.full((n, 1, 16, 16), 1.5),
        "depth_mask": torch.ones(n, 1, 16, 16, dtype=torch.bool),
    }
    out = RgbdAugment(p_drop_rgb=0.5, p_drop_depth=0.5, generator=0)(batch)
    rgb_dropped = (out["image"] == 0).flatten(1).all(1)
    depth_dropped = (~out["depth_mask"]).flatten(1).all(1)
    assert torch.equal(rgb_dropped, ~depth_dropped)  # exactly one modality dropped for every sample
    assert 10 < rgb_dropped.sum() < n - 10
    assert (out["depth"][depth_dropped] == 0).all() and (out["image"][~rgb_dropped] > 0).all()
    only_rgb = RgbdAugment(p_drop_rgb=1.0, generator=0)(batch)
    assert (only_rgb["image"] == 0).all() and only_rgb["depth_mask"].all()
    with pytest.raises(ValueError, match="p_drop_rgb \\+ p_drop_depth"):
        RgbdAugment(p_drop_rgb=0.6, p_drop_depth=0.5)


def test_colour_jitter_touches_rgb_only_and_uint8_matches_float():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8, generator=gen)
    depth = torch.rand(6, 20, 20, generator=gen) + 0.5
    kwargs = {"p_crop": 0.0, "p_flip": 0.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
    out_u8 = RgbdAugment(generator=5, **kwargs)({"image": image, "depth": depth})
    out_f = RgbdAugment(generator=5, **kwargs)({"image": image.float() / 255, "depth": depth})
    torch.testing.assert_close(out_u8["image"], out_f["image"])
    assert out_u8["image"].dtype == torch.float32 and out_u8["image"].min() >= 0 and out_u8["image"].max() <= 1
    assert not torch.allclose(out_u8["image"], image.float() / 255, atol=1e-3)
    assert out_u8["depth"].shape == (6, 20, 20) and torch.equal(out_u8["depth"], depth)  # rank kept, values kept


def test_determinism_and_global_rng_untouched():
    batch = _coordinate_batch(8)
    kwargs = {
        "output_size": 24,
        "depth_noise": 0.01,
        "p_extra_holes": 0.5,
        "p_drop_rgb": 0.2,
        "p_drop_depth": 0.2,
        "hue": 0.1,
    }
    state = torch.get_rng_state()
    a = RgbdAugment(generator=123, **kwargs)(batch)
    b = RgbdAugment(generator=torch.Generator().manual_seed(123), **kwargs)(batch)
    assert torch.equal(state, torch.get_rng_state())
    for key in ("image", "depth", "intrinsics"):
        assert torch.equal(a[key], b[key])
    c = RgbdAugment(generator=124, **kwargs)(batch)
    assert not torch.equal(a["depth"], c["depth"])
    aug = RgbdAugment(generator=123, **kwargs)
    first, second = aug(batch), aug(batch)  # the generator advances between calls
    assert torch.equal(first["depth"], a["depth"]) and not torch.equal(first["depth"], second["depth"])


def test_datasets_set_transform_path_matches_tensor_path():
    ds = make_synthetic_rgbd(num_train=6, num_validation=0, num_test=0, image_size=32, seed=0)["train"]
    raw = ds.with_format("numpy")[:4]
    kwargs = {"output_size": 24, "crop_scale": (0.4, 0.9), "p_flip": 0.5, "depth_noise": 0.001}
    ds.set_transform(RgbdAugment(generator=9, **kwargs))
    batch = ds[:4]
    assert batch["image"].shape == (4, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["depth"].shape == (4, 24, 24) and batch["intrinsics"].shape == (4, 3, 3)
    assert list(batch["label"]) == raw["label"].tolist()
    reference = RgbdAugment(generator=9, **kwargs)(
        {
            "image": torch.from_numpy(raw["image"]).permute(0, 3, 1, 2),
            "depth": torch.from_numpy(raw["depth"]),
            "intrinsics": torch.from_numpy(raw["intrinsics"]),
        }
    )
    for key in ("image", "depth", "intrinsics"):
        torch.testing.assert_close(batch[key], reference[key])
    # geometry is aligned: hole pixels (0) in depth coincide with the source mask resampled the same way
    valid = batch["depth"] > 0
    assert valid.float().mean() > 0.5
    k0 = torch.from_numpy(raw["intrinsics"][0])
    scale = batch["intrinsics"][:, 0, 0] / k0[0, 0]  # output pixels per source pixel, >= 1 for crops of a 32px image
    assert (scale >= 24 / 32 - 1e-5).all() and (scale <= 24 / (32 * 0.4**0.5 * (3 / 4) ** 0.5) + 1e-3).all()
    single = ds[0]  # one row: unbatched tensors
    assert single["image"].shape == (3, 24, 24) and single["depth"].shape == (24, 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_flip": 1.5}, "p_flip"),
        ({"p_crop": -0.1}, "p_crop"),
        ({"p_extra_holes": 2}, "p_extra_holes"),
        ({"hole_fraction": 1.1}, "hole_fraction"),
        ({"p_drop_depth": -1}, "p_drop_depth"),
        ({"crop_scale": (0.9, 0.5)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_scale": (0.5, 1.2)}, "crop_scale"),
        ({"crop_ratio": (2.0, 1.0)}, "crop_ratio"),
        ({"crop_ratio": 1.0}, "crop_ratio"),
        ({"brightness": -0.1}, "brightness"),
        ({"contrast": 1.5}, "contrast"),
        ({"hue": 0.6}, "hue"),
        ({"depth_noise": float("nan")}, "depth_noise"),
        ({"output_size": 0}, "output_size"),
        ({"output_size": (10, 10, 3)}, "output_size"),
        ({"generator": "seed"}, "generator"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RgbdAugment(**kwargs)


def test_bad_batches():
    aug = RgbdAugment(generator=0)
    good = {"image": torch.rand(2, 3, 8, 8), "depth": torch.ones(2, 1, 8, 8)}
    with pytest.raises(ValueError, match="image"):
        aug({"image": torch.rand(2, 4, 8, 8), "depth": good["depth"]})
    with pytest.raises(ValueError, match="depth"):
        aug({"image": good["image"], "depth": torch.ones(2, 1, 8, 9)})
    with pytest.raises(ValueError, match="depth_mask"):
        aug({**good, "depth_mask": torch.ones(2, 1, 4, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="intrinsics"):
        aug({**good, "intrinsics": torch.eye(4)})
    with pytest.raises(ValueError, match="'image' and 'depth'"):
        aug({"image": good["image"]})
    with pytest.raises(ValueError, match="image"):
        aug({"image": torch.zeros(2, 3, 8, 8, dtype=torch.int32), "depth": good["depth"]})


def test_accepts_numpy_and_list_inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)]
    depths = [rng.uniform(1, 2, (12, 12)).astype(np.float32).tolist() for _ in range(3)]
    out = RgbdAugment(p_crop=0.0, p_flip=0.0, generator=0, **NO_COLOUR)(
        {"image": images, "depth": depths, "intrinsics": [np.eye(3)] * 3}
    )
    torch.testing.assert_close(
        out["image"], torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out["depth"], torch.tensor(depths))


@settings(max_examples=15, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 2**62), min_size=2, max_size=5, unique=True),
    position=st.integers(0, 4),
)
def test_per_sample_seeds_make_a_sample_independent_of_its_batch(seeds, position):
    """With `seeds`, a sample's crop, flip, jitter, noise, holes and dropout depend on its own seed only."""
    position = position % len(seeds)
    generator = torch.Generator().manual_seed(len(seeds))
    image = torch.rand(len(seeds), 3, 24, 32, generator=generator)
    depth = 0.5 + 4 * torch.rand(len(seeds), 1, 24, 32, generator=generator)
    intrinsics = torch.tensor([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]])
    augment = RgbdAugment(
        output_size=16, depth_noise=0.01, p_extra_holes=0.5, p_drop_rgb=0.2, p_drop_depth=0.2, hue=0.1, generator=0
    )
    batch = augment({"image": image, "depth": depth, "intrinsics": intrinsics}, seeds=seeds)
    alone = augment(
        {"image": image[position : position + 1], "depth": depth[position : position + 1], "intrinsics": intrinsics},
        seeds=seeds[position : position + 1],
    )
    for key in ("image", "depth", "intrinsics"):
        torch.testing.assert_close(batch[key][position], alone[key][0], rtol=0, atol=1e-6)
    # the instance's own generator was not used
    assert torch.equal(augment.generator.get_state(), torch.Generator().manual_seed(0).get_state())
    with pytest.raises(ValueError, match="one seed per sample"):
        augment({"image": image, "depth": depth}, seeds=seeds[:1])


@settings(max_examples=20, deadline=None)
@given(max_shift=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), p_flip=st.sampled_from([0.0, 0.5, 1.0]))
def test_shift_translates_rgb_depth_mask_and_intrinsics_together(max_shift, seed, p_flip):
    """With crops off, every output is the (flipped) input translated by one integer (dx, dy) within
    `max_shift`: black RGB and holes where pixels come from outside, the principal point moved by (dx, dy)."""
    n, h, w = 6, 20, 24
    batch = _coordinate_batch(n, h, w)
    batch["depth_mask"] = torch.ones(n, 1, h, w, dtype=torch.bool)
    out = RgbdAugment(p_crop=0.0, p_flip=p_flip, max_shift=max_shift, generator=seed, **NO_COLOUR)(batch)
    plain = RgbdAugment(p_crop=0.0, p_flip=p_flip, generator=seed, **NO_COLOUR)(batch)  # the same flips
    for index in range(n):
        valid = out["depth_mask"][index, 0]
        rows, cols = valid.any(1).nonzero()[:, 0], valid.any(0).nonzero()[:, 0]
        # the valid region is one rectangle touching opposite borders: the translation
        dy = int(rows[0]) if rows[0] > 0 else -(h - 1 - int(rows[-1]))
        dx = int(cols[0]) if cols[0] > 0 else -(w - 1 - int(cols[-1]))
        assert abs(dx) <= max_shift and abs(dy) <= max_shift
        assert int(valid.sum()) == (h - abs(dy)) * (w - abs(dx))
        moved = torch.roll(plain["image"][index], shifts=(dy, dx), dims=(1, 2))
        assert torch.allclose(out["image"][index][:, valid], moved[:, valid], atol=1e-5)
        assert (out["image"][index][:, ~valid] == 0).all() and (out["depth"][index, 0][~valid] == 0).all()
        moved_depth = torch.roll(plain["depth"][index, 0], shifts=(dy, dx), dims=(0, 1))
        assert torch.allclose(out["depth"][index, 0][valid], moved_depth[valid])
        expected_k = plain["intrinsics"][index].clone()
        expected_k[0, 2] += dx
        expected_k[1, 2] += dy
        assert torch.allclose(out["intrinsics"][index], expected_k, atol=1e-4)


def test_shift_off_leaves_the_random_stream_unchanged():
    batch = _coordinate_batch(4, 16, 16)
    settings_ = dict(crop_scale=(0.5, 1.0), p_flip=0.5, brightness=0.2, generator=3)
    assert torch.equal(RgbdAugment(**settings_)(batch)["image"], RgbdAugment(**settings_, max_shift=0)(batch)["image"])
    with pytest.raises(ValueError, match="max_shift"):
        RgbdAugment(max_shift=-1)
