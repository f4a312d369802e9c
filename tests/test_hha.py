"""Tests for the batched HHA encoding (hf_rgbd.processors.depth_hha).

A tiny ray-caster renders a floor + wall scene seen by a pitched and rolled camera, so that the camera y axis
is *not* gravity: passing requires a real gravity estimate.
"""

from __future__ import annotations

import math

import pytest
import torch

from hf_rgbd.processors.depth_hha import compute_hha, hha_components

H, W = 96, 128
FX = FY = 110.0
CAM_HEIGHT = 1.4  # metres above the floor
WALL_DIST = 3.0  # metres in front of the camera (horizontal)


def _rot_x(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _intrinsics(b: int = 1) -> torch.Tensor:
    k = torch.tensor([[FX, 0.0, (W - 1) / 2], [0.0, FY, (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return k.expand(b, 3, 3).clone()


def render(
    pitch_deg: float,
    roll_deg: float,
    noise_m: float = 0.002,
    holes: bool = True,
    seed: int = 0,
    wall_dist: float = WALL_DIST,
):
    """Ray-cast floor (world Z = 0) and wall (world Y = wall_dist); camera at (0, 0, CAM_HEIGHT).

    World: X right, Y forward, Z up. Returns depth (1,1,H,W) float32 with holes = 0, valid (1,1,H,W),
    true up vector in camera coordinates (3,), true world height of each pixel (H,W), floor mask (H,W),
    distance of each floor pixel to the wall line (H,W).
    """
    gen = torch.Generator().manual_seed(seed)
    # camera axes (columns) in world coordinates: x right, y down, z forward, then pitch down and roll
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    r_wc = base @ _rot_x(math.radians(-pitch_deg)) @ _rot_z(math.radians(roll_deg))
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    d_cam = torch.stack([(u - (W - 1) / 2) / FX, (v - (H - 1) / 2) / FY, torch.ones_like(u)], -1)  # z = 1
    d_w = d_cam @ r_wc.T
    inf = torch.full_like(u, math.inf)
    t_floor = torch.where(d_w[..., 2] < 0, -CAM_HEIGHT / d_w[..., 2], inf)
    t_wall = torch.where(d_w[..., 1] > 0, wall_dist / d_w[..., 1], inf)
    t = torch.minimum(t_floor, t_wall)
    assert torch.isfinite(t).all()
    floor = t_floor < t_wall
    p_w = d_w * t.unsqueeze(-1) + torch.tensor([0.0, 0.0, CAM_HEIGHT], dtype=torch.float64)
    depth = t + noise_m * (2 * torch.rand(H, W, generator=gen, dtype=torch.float64) - 1)  # z_cam = t
    depth = depth.float().view(1, 1, H, W)
    if holes:
        idx = torch.randperm(H * W, generator=gen)[:300]
        depth.view(-1)[idx[:150]] = 0.0
        depth.view(-1)[idx[150:]] = float("nan")
        depth[..., 10:16, 20:30] = 0.0  # a block-shaped hole
    valid = torch.isfinite(depth) & (depth > 0)
    depth = torch.nan_to_num(depth, nan=0.0)
    up_cam = (r_wc.T @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).float()
    return depth, valid, up_cam, p_w[..., 2].float(), floor, (wall_dist - p_w[..., 1]).float()


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(math.acos(float((a / a.norm()).dot(b / b.norm()).clamp(-1, 1))))


@pytest.fixture(scope="module")
def tilted():
    depth, valid, up, height, floor, to_wall = render(pitch_deg=20.0, roll_deg=10.0)
    k = _intrinsics()
    return depth, valid, k, up, height, floor, to_wall, hha_components(depth, valid, k), compute_hha(depth, valid, k)


def test_camera_axis_is_not_gravity(tilted):
    up = tilted[3]
    assert _angle_deg(up, torch.tensor([0.0, -1.0, 0.0])) > 15.0


def test_gravity_recovered(tilted):
    _, _, _, up, _, _, _, comp, _ = tilted
    assert comp.gravity.shape == (1, 3)
    assert abs(float(comp.gravity.norm()) - 1.0) < 1e-5
    assert _angle_deg(comp.gravity[0], up) < 3.0


def test_normals_and_angles(tilted):
    _, valid, _, up, _, floor, to_wall, comp, _ = tilted
    v = valid[0, 0]
    floor_px = v & floor & (to_wall > 0.3)
    wall_px = v & ~floor & (torch.arange(H).view(H, 1) < H // 3)  # upper part of the image: wall only
    assert floor_px.sum() > 500 and wall_px.sum() > 500
    angle = comp.angle[0, 0]
    assert abs(float(angle[floor_px].median())) < 3.0
    assert abs(float(angle[wall_px].median()) - 90.0) < 3.0
    # normals: unit at defined pixels, zero at holes, facing the camera
    n = comp.normals[0]
    norm = n.norm(dim=0)
    assert torch.all(norm[~v] == 0)
    defined = norm > 0
    assert torch.allclose(norm[defined], torch.ones_like(norm[defined]), atol=1e-4)
    floor_normal = n[:, floor_px].median(dim=1).values
    assert _angle_deg(floor_normal, up) < 3.0


def test_height(tilted):
    _, valid, _, _, true_h, floor, to_wall, comp, _ = tilted
    v = valid[0, 0]
    h = comp.height[0, 0]
    floor_px = v & floor & (to_wall > 0.3)
    assert abs(float(h[floor_px].median())) < 0.03
    wall_1m = v & ~floor & ((true_h - 1.0).abs() < 0.05)
    assert wall_1m.sum() > 20
    assert abs(float(h[wall_1m].median()) - 1.0) < 0.04
    # per-pixel agreement on the wall (away from the floor edge)
    wall_px = v & ~floor & (true_h > 0.3)
    assert float((h[wall_px] - true_h[wall_px]).abs().median()) < 0.04


def test_disparity_exact(tilted):
    depth, valid, _, _, _, _, _, comp, hha = tilted
    v = valid
    expected = 31000.0 / torch.clamp(100.0 * depth, min=100.0)
    assert torch.equal(comp.disparity[v], expected[v])
    assert torch.equal(hha[:, 0:1][v], (torch.clamp(expected, max=255.0) / 255.0)[v])


def test_hha_scaling_and_holes(tilted):
    depth, valid, _, _, _, _, _, comp, hha = tilted
    assert hha.shape == (1, 3, H, W) and hha.dtype == torch.float32
    assert torch.isfinite(hha).all()
    assert hha.min() >= 0 and hha.max() <= 1
    holes = ~valid.expand_as(hha)
    assert holes.any()
    assert torch.all(hha[holes] == 0)
    for t in (comp.disparity, comp.height, comp.angle, comp.normals):
        assert torch.isfinite(t).all()
        assert torch.all(t[~valid.expand_as(t)] == 0)
    v = valid[0, 0]
    assert torch.allclose(hha[0, 1][v], (comp.height[0, 0][v] * 100).clamp(0, 255) / 255)
    assert torch.allclose(hha[0, 2][v], (comp.angle[0, 0][v] + 38).clamp(0, 255) / 255)


def test_nan_in_masked_depth_does_not_leak(tilted):
    depth, valid, k, _, _, _, _, _, hha = tilted
    d = depth.clone()
    d[~valid] = float("nan")
    out = compute_hha(d, valid, k)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, hha, atol=1e-6)


@pytest.mark.parametrize("wall_dist", [WALL_DIST, 6.0])  # 3 m: only the wall is in view; 6 m: floor too
def test_untilted_camera_gravity_is_minus_y(wall_dist):
    depth, valid, up, _, floor, *_ = render(pitch_deg=0.0, roll_deg=0.0, seed=1, wall_dist=wall_dist)
    assert _angle_deg(up, torch.tensor([0.0, -1.0, 0.0])) < 1e-6
    assert bool(floor.any()) == (wall_dist > WALL_DIST)
    g = hha_components(depth, valid, _intrinsics()).gravity[0]
    assert _angle_deg(g, torch.tensor([0.0, -1.0, 0.0])) < 2.0


def test_batched_matches_single(tilted):
    d1, v1, k1, *_ = tilted
    d2, v2, *_ = render(pitch_deg=5.0, roll_deg=-15.0, seed=2)
    batch = compute_hha(torch.cat([d1, d2]), torch.cat([v1, v2]), _intrinsics(2))
    assert torch.allclose(batch[0:1], compute_hha(d1, v1, k1), atol=1e-5)
    assert torch.allclose(batch[1:2], compute_hha(d2, v2, _intrinsics()), atol=1e-5)


def test_all_hole_map_is_zero():
    depth = torch.zeros(2, 1, 16, 20)
    valid = torch.zeros(2, 1, 16, 20, dtype=torch.bool)
    k = torch.tensor([[20.0, 0, 10], [0, 20.0, 8], [0, 0, 1]]).expand(2, 3, 3)
    comp = hha_components(depth, valid, k)
    assert torch.equal(comp.gravity, torch.tensor([[0.0, -1.0, 0.0]] * 2))
    hha = compute_hha(depth, valid, k)
    assert hha.shape == (2, 3, 16, 20)
    assert torch.isfinite(hha).all() and torch.all(hha == 0)


def test_single_plane_keeps_finite_output():
    # one fronto-parallel wall: gravity is only constrained to lie in the wall plane; must not produce NaN
    depth = torch.full((1, 1, 24, 32), 2.0)
    valid = torch.ones_like(depth, dtype=torch.bool)
    k = torch.tensor([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]]).unsqueeze(0)
    comp = hha_components(depth, valid, k)
    assert torch.isfinite(comp.gravity).all()
    assert _angle_deg(comp.gravity[0], torch.tensor([0.0, -1.0, 0.0])) < 1.0
    assert torch.isfinite(compute_hha(depth, valid, k)).all()


def test_input_validation():
    depth = torch.ones(1, 1, 8, 8)
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    k = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]).unsqueeze(0)
    with pytest.raises(ValueError, match="intrinsics"):
        compute_hha(depth, valid, None)
    with pytest.raises(ValueError, match="intrinsics"):
        compute_hha(depth, valid, k[0])
    with pytest.raises(ValueError, match="intrinsics"):
        compute_hha(depth, valid, k.expand(2, 3, 3))
    bad = k.clone()
    bad[0, 1, 1] = 0.0
    with pytest.raises(ValueError, match="fy"):
        compute_hha(depth, valid, bad)
    with pytest.raises(ValueError, match="depth_m"):
        compute_hha(depth[0], valid[0], k)
    with pytest.raises(ValueError, match="depth_m"):
        compute_hha(depth.expand(1, 3, 8, 8), valid, k)
    with pytest.raises(ValueError, match="valid_mask"):
        compute_hha(depth, valid[..., :4], k)
    with pytest.raises(ValueError, match="normal_window"):
        compute_hha(depth, valid, k, normal_window=4)


def test_hha_through_the_processor_follows_the_rgb_geometry():
    """HHA computed by RgbdProcessor at the output resolution, with intrinsics rescaled by the resize and crop."""
    import numpy as np

    from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

    depth, _, _, height_true, floor, _ = render(20.0, 10.0)
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": 48, "width": 64}, do_center_crop=True, crop_size=(40, 56)),
        RgbdDepthProcessor(representation="hha"),
    )
    out = processor(
        images=np.zeros((H, W, 3), np.uint8), depths=depth[0, 0].numpy(), intrinsics=_intrinsics()[0].numpy()
    )
    hha, mask = out["depth_values"][0], out["depth_mask"][0, 0]
    assert hha.shape == (3, 40, 56)
    # a 2x downscale then a crop at offset (4, 4): output pixel (i, j) samples source pixel (2i + 9, 2j + 9)
    floor_out = floor[9:89:2, 9:121:2]
    height_out = height_true[9:89:2, 9:121:2]
    angle = hha[2] * 255 - 38  # degrees
    assert abs(float(angle[floor_out & mask].median())) < 4.0
    assert abs(float(angle[~floor_out & mask].median()) - 90.0) < 4.0
    height_m = hha[1] * 255 / 100
    wall = ~floor_out & mask & (height_out > 0.5) & (height_out < 1.5)
    assert float((height_m[wall] - height_out[wall]).abs().median()) < 0.05
    assert float((height_m[floor_out & mask] - height_out[floor_out & mask]).abs().median()) < 0.03
    assert bool((hha[:, ~mask] == 0).all())
