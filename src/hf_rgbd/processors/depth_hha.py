"""HHA depth encoding (Gupta et al., ECCV 2014), batched in torch.

HHA turns a metric depth map into three geocentric channels:

1. **H**\\ orizontal disparity: ``31000 / max(depth_cm, 100)`` (saturates at 255 for depths below ~1.22 m);
2. **H**\\ eight above the lowest point of the scene, in cm;
3. **A**\\ ngle between the local surface normal and the estimated gravity ("up") direction, in degrees,
   stored with an offset of ``+128 - 90`` (so floors are 38 and walls 128 in the uint8 original).

Pipeline (all batched; only the gravity refinement loops, over its few iterations):

* back-projection with the pinhole model ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, ``z = depth``
  (camera coordinates: x right, y down, z forward);
* surface normals from a least-squares plane fit over a ``k x k`` window of *valid* pixels: the window
  covariance is built from box-filtered moments (one depthwise convolution over the sums of 1, x, y, z, xx, xy,
  ..., with points centred on the image centroid to limit float32 cancellation) and its smallest-eigenvalue
  eigenvector is found in closed form (much faster than ``torch.linalg.eigh`` on millions of 3x3 matrices);
  normals are oriented towards the camera;
* gravity: starting from the camera up axis ``(0, -1, 0)``, normals nearly parallel to the current estimate
  (floors/ceilings) and nearly perpendicular to it (walls) are collected (45 deg window on the first iteration,
  15 deg afterwards) and the new estimate is the smallest-eigenvalue eigenvector of
  ``sum(n_perp n_perp^T) - sum(n_par n_par^T) - mu g_prev g_prev^T`` (a small proximal term that only matters
  when the scene leaves gravity unconstrained, e.g. a single wall), signed to agree with the previous estimate;
* height: projection of each point on the up vector minus the lowest point, where the lowest point is
  ``min(q-quantile of the projections, -1.3 m)`` (the original convention: a camera is assumed to be at least
  1.3 m above the floor when the floor is not seen; the low quantile makes it robust to outliers).

This module imports only ``torch``, the standard library and the argument checks of ``validation_rgbd`` (a
single-dot import), so that it is copied alongside Hugging Face remote code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .validation_rgbd import (
    check_depth_mask,
    check_image_tensor,
    check_int,
    check_intrinsics,
    check_pinhole_values,
    check_real,
)

__all__ = ["HHAComponents", "hha_components", "compute_hha"]

# Offset applied to the angle channel by the original implementation (angle + 128 - 90).
ANGLE_OFFSET_DEG = 128.0 - 90.0


@dataclass
class HHAComponents:
    """Intermediate HHA quantities (all zero at holes).

    Attributes:
        disparity: (B,1,H,W) ``31000 / max(depth_cm, 100)``, unclipped, 0 at holes.
        height: (B,1,H,W) metres above the lowest point (may be slightly negative below it), 0 at holes.
        angle: (B,1,H,W) degrees between the surface normal and "up" (0 floor, 90 wall, 180 ceiling);
            90 at valid pixels whose normal is undefined (too few valid neighbours), 0 at holes.
        normals: (B,3,H,W) unit normals in camera coordinates, facing the camera; 0 at holes / where undefined.
        gravity: (B,3) unit "up" vector in camera coordinates.
    """

    disparity: torch.Tensor
    height: torch.Tensor
    angle: torch.Tensor
    normals: torch.Tensor
    gravity: torch.Tensor


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def _validate(depth_m: torch.Tensor, valid_mask: torch.Tensor, intrinsics: torch.Tensor | None) -> None:
    """Raise ``ValueError`` naming the offending argument."""
    check_image_tensor(depth_m, "depth_m", channels=1)
    check_depth_mask(valid_mask, depth_m, values_name="depth_m", name="valid_mask")
    if intrinsics is None:
        raise ValueError("HHA requires camera intrinsics: pass intrinsics as a (B,3,3) tensor, got None")
    check_pinhole_values(check_intrinsics(intrinsics, depth_m.shape[0]))


def _sanitize(depth_m: torch.Tensor, valid_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Working-dtype depth with holes set to 0, and the effective validity mask (both (B,1,H,W))."""
    dtype = torch.float64 if depth_m.dtype == torch.float64 else torch.float32
    depth = depth_m.detach().to(dtype)
    valid = valid_mask.detach().bool() & torch.isfinite(depth) & (depth > 0)
    return torch.where(valid, depth, torch.zeros_like(depth)), valid


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def _box_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-channel sum over a k x k window (zero padded, same size). x: (B,C,H,W)."""
    c = x.shape[1]
    return torch.nn.functional.conv2d(x, x.new_ones(c, 1, k, k), padding=k // 2, groups=c)


def _smallest_eigvec_sym3(
    a00: torch.Tensor,
    a01: torch.Tensor,
    a02: torch.Tensor,
    a11: torch.Tensor,
    a12: torch.Tensor,
    a22: torch.Tensor,
    rel_tol: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form smallest-eigenvalue eigenvector of symmetric PSD 3x3 matrices given element-wise.

    Much faster than ``torch.linalg.eigh`` on millions of matrices. The smallest eigenvalue comes from the
    trigonometric method (Smith 1961); the eigenvector is the largest cross product of two rows of
    ``A - lambda_min I`` (its norm is ~ (l_mid - l_min)(l_max - l_min)).

    Returns ``(vx, vy, vz, ok)`` (unit components, 0 where not ok); ``ok`` is False where the eigenvector is
    ill-defined (empty, isotropic or line-like neighbourhood: cross product below ``rel_tol * trace^2``,
    i.e. roughly ``l_mid - l_min < rel_tol * trace``).
    """
    tr = a00 + a11 + a22
    q = tr / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    p = torch.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    p3 = p * p * p
    # r = det(A - qI) / (2 p^3), clamped for round-off (and 0/0 where p == 0)
    det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    r = (det / torch.where(p3 > 0, 2.0 * p3, torch.ones_like(p3))).clamp(-1.0, 1.0)
    lam_min = q + 2.0 * p * torch.cos(torch.acos(r) / 3.0 + 2.0 * math.pi / 3.0)
    m00, m11, m22 = a00 - lam_min, a11 - lam_min, a22 - lam_min
    # cross products of the rows (m00,a01,a02), (a01,m11,a12), (a02,a12,m22)
    c01 = (a01 * a12 - a02 * m11, a02 * a01 - m00 * a12, m00 * m11 - a01 * a01)
    c02 = (a01 * m22 - a02 * a12, a02 * a02 - m00 * m22, m00 * a12 - a01 * a02)
    c12 = (m11 * m22 - a12 * a12, a12 * a02 - a01 * m22, a01 * a12 - m11 * a02)
    n01 = c01[0] * c01[0] + c01[1] * c01[1] + c01[2] * c01[2]
    n02 = c02[0] * c02[0] + c02[1] * c02[1] + c02[2] * c02[2]
    n12 = c12[0] * c12[0] + c12[1] * c12[1] + c12[2] * c12[2]
    use02 = n02 > n01
    best = torch.where(use02, n02, n01)
    use12 = n12 > best
    best = torch.where(use12, n12, best)
    ok = (best > (rel_tol * rel_tol) * (tr * tr) ** 2) & (best > 0)
    inv = torch.where(ok, torch.rsqrt(torch.where(ok, best, torch.ones_like(best))), torch.zeros_like(best))
    out = []
    for i in range(3):
        comp = torch.where(use12, c12[i], torch.where(use02, c02[i], c01[i]))
        out.append(comp * inv)
    return out[0], out[1], out[2], ok


def _backproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) depth -> (B,3,H,W) camera-frame points (x right, y down, z forward)."""
    b, _, h, w = depth.shape
    k = intrinsics.to(depth.dtype)
    fx, fy = k[:, 0, 0].view(b, 1, 1, 1), k[:, 1, 1].view(b, 1, 1, 1)
    cx, cy = k[:, 0, 2].view(b, 1, 1, 1), k[:, 1, 2].view(b, 1, 1, 1)
    u = torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, 1, w)
    v = torch.arange(h, device=depth.device, dtype=depth.dtype).view(1, 1, h, 1)
    return torch.cat([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=1)


def _surface_normals(points: torch.Tensor, valid: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares plane normals over a ``window x window`` neighbourhood of valid pixels.

    points: (B,3,H,W) camera-frame points; valid: (B,1,H,W) bool.
    Returns normals (B,3,H,W) facing the camera (0 where undefined) and the defined mask (B,1,H,W).
    A normal is undefined where fewer than a quarter of the window is valid or the fit is degenerate.
    """
    w = valid.to(points.dtype)
    # centre on each image's centroid: shrinks E[pp^T] - E[p]E[p]^T cancellation error in float32
    centroid = (points * w).sum((2, 3), keepdim=True) / w.sum((2, 3), keepdim=True).clamp(min=1.0)
    p = (points - centroid) * w
    x, y, z = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    s = _box_sum(torch.cat([w, x, y, z, x * x, x * y, x * z, y * y, y * z, z * z], dim=1), window)
    n = s[:, 0]
    inv_n = 1.0 / n.clamp(min=1.0)
    mx, my, mz = s[:, 1] * inv_n, s[:, 2] * inv_n, s[:, 3] * inv_n
    # window covariance (clamp round-off on the diagonal)
    vx, vy, vz, ok = _smallest_eigvec_sym3(
        (s[:, 4] * inv_n - mx * mx).clamp(min=0.0),
        s[:, 5] * inv_n - mx * my,
        s[:, 6] * inv_n - mx * mz,
        (s[:, 7] * inv_n - my * my).clamp(min=0.0),
        s[:, 8] * inv_n - my * mz,
        (s[:, 9] * inv_n - mz * mz).clamp(min=0.0),
    )
    # need a 2-D spread of valid neighbours: at least a quarter of the window (and 3 points)
    min_count = max(3.0, math.ceil(window * window / 4))
    defined = (ok & (n >= min_count)).unsqueeze(1) & valid
    # orient towards the camera (n . p <= 0) and zero undefined normals in one sign factor
    facing = vx * points[:, 0] + vy * points[:, 1] + vz * points[:, 2]
    sign = torch.where(facing > 0, -1.0, 1.0).unsqueeze(1) * defined
    normals = torch.stack([vx, vy, vz], dim=1) * sign
    return normals, defined


def _estimate_gravity(
    normals: torch.Tensor, defined: torch.Tensor, iterations: int, prior_weight: float = 0.02
) -> torch.Tensor:
    """Iterative gravity ("up") estimate from normals. normals: (B,3,H,W); defined: (B,1,H,W). Returns (B,3).

    Each iteration minimises ``g^T A g - mu (g . g_prev)^2`` over unit ``g`` with
    ``A = sum(n_perp n_perp^T) - sum(n_par n_par^T)``; the small proximal term (``mu = prior_weight`` times the
    number of selected normals) keeps the previous estimate where the scene leaves ``g`` unconstrained (e.g. a
    single wall) and does not move the fixed point.
    """
    b = normals.shape[0]
    nf = normals.flatten(2)  # (B,3,P)
    df = defined.flatten(2)
    g = torch.zeros(b, 3, dtype=torch.float64, device=normals.device)
    g[:, 1] = -1.0  # camera up axis (image v grows downward)
    for it in range(iterations):
        thr = math.radians(45.0 if it == 0 else 15.0)
        cos = torch.bmm(g.to(nf.dtype).unsqueeze(1), nf).abs()  # (B,1,P); |cos| handles floors and ceilings
        par = (cos > math.cos(thr)) & df
        perp = (cos < math.sin(thr)) & df
        wgt = perp.to(nf.dtype) - par.to(nf.dtype)
        a = torch.bmm(nf * wgt, nf.transpose(1, 2)).double()  # sum n_perp n_perp^T - sum n_par n_par^T
        used = (par | perp).flatten(1).sum(-1).double()  # (B,)
        a = a - (prior_weight * used).view(b, 1, 1) * (g.unsqueeze(-1) * g.unsqueeze(-2))
        g_new = torch.linalg.eigh(a)[1][..., 0]  # smallest eigenvalue's eigenvector
        g_new = g_new * torch.where((g_new * g).sum(-1, keepdim=True) < 0, -1.0, 1.0)  # keep pointing "up"
        g = torch.where((used > 0).unsqueeze(-1), g_new, g)
    return g.to(normals.dtype)


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def hha_components(
    depth_m: torch.Tensor,
    valid_mask: torch.Tensor,
    intrinsics: torch.Tensor | None,
    *,
    normal_window: int = 5,
    gravity_iterations: int = 5,
    lowest_point_quantile: float = 0.01,
    min_camera_height_m: float = 1.3,
) -> HHAComponents:
    """Compute the HHA intermediate quantities.

    Args:
        depth_m: (B,1,H,W) float depth in metres, 0 at holes.
        valid_mask: (B,1,H,W) bool, True where depth is valid. Pixels with non-finite or non-positive depth are
            also treated as holes.
        intrinsics: (B,3,3) pinhole intrinsics ``[[fx,0,cx],[0,fy,cy],[0,0,1]]`` for this resolution (pixel
            indices: column ``u``, row ``v``, 0-based).
        normal_window: odd window size ``k >= 3`` of the plane fit for normals. The window must span well more
            than the depth noise: 5 suits ~224 px maps; use ~11-21 for raw 640x480 sensor depth, otherwise noisy
            normals keep the gravity estimate near the camera up axis.
        gravity_iterations: number of gravity refinement iterations (0 keeps the camera up axis).
        lowest_point_quantile: quantile (in [0, 1]) of the up-projections used as the robust lowest point.
        min_camera_height_m: the lowest point is at least this far below the camera (original: 1.3 m).

    Returns:
        :class:`HHAComponents` in the floating dtype of ``depth_m`` (float32 unless float64), on its device.
    """
    _validate(depth_m, valid_mask, intrinsics)
    if check_int(normal_window, "normal_window", 3) % 2 == 0:
        raise ValueError(f"`normal_window` must be odd, got {normal_window!r}.")
    check_int(gravity_iterations, "gravity_iterations", 0)
    if not 0.0 <= check_real(lowest_point_quantile, "lowest_point_quantile") <= 1.0:
        raise ValueError(f"`lowest_point_quantile` must be in [0, 1], got {lowest_point_quantile!r}.")
    min_camera_height_m = check_real(min_camera_height_m, "min_camera_height_m")

    depth, valid = _sanitize(depth_m, valid_mask)
    b = depth.shape[0]
    zeros1 = torch.zeros_like(depth)

    # 1) horizontal disparity
    disparity = torch.where(valid, 31000.0 / torch.clamp(depth * 100.0, min=100.0), zeros1)

    # 2) normals and gravity
    points = _backproject(depth, intrinsics.detach()) * valid
    normals, defined = _surface_normals(points, valid, normal_window)
    gravity = _estimate_gravity(normals, defined, gravity_iterations)

    # 3) height above the (robust) lowest point
    proj = (points * gravity.view(b, 3, 1, 1)).sum(1, keepdim=True)  # (B,1,H,W)
    flat = torch.where(valid, proj, torch.full_like(proj, math.inf)).flatten(1)  # (B,P)
    count = valid.flatten(1).sum(-1)  # (B,)
    kth = (float(lowest_point_quantile) * (count - 1).clamp(min=0).to(torch.float64)).floor().long()
    k_max = int(kth.max().item()) + 1 if b > 0 else 1
    smallest = torch.topk(flat, min(k_max, flat.shape[1]), dim=1, largest=False, sorted=True).values
    low = smallest.gather(1, kth.clamp(max=smallest.shape[1] - 1).unsqueeze(1)).squeeze(1)
    low = torch.where(count > 0, low, torch.zeros_like(low)).clamp(max=-float(min_camera_height_m))
    height = torch.where(valid, proj - low.view(b, 1, 1, 1), zeros1)

    # 4) angle between normal and up; undefined normals -> 90 deg (expected angle of a random direction)
    cos = (normals * gravity.view(b, 3, 1, 1)).sum(1, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    angle = torch.where(defined, angle, torch.full_like(angle, 90.0))
    angle = torch.where(valid, angle, zeros1)

    return HHAComponents(disparity=disparity, height=height, angle=angle, normals=normals, gravity=gravity)


@torch.no_grad()
def compute_hha(
    depth_m: torch.Tensor,
    valid_mask: torch.Tensor,
    intrinsics: torch.Tensor | None,
    **kwargs,
) -> torch.Tensor:
    """HHA image scaled to [0, 1].

    The standard uint8 HHA image divided by 255 (no rounding) and clipped to [0, 1]:

    * channel 0: ``min(31000 / max(depth_cm, 100), 255) / 255`` (horizontal disparity);
    * channel 1: ``clip(height_cm, 0, 255) / 255`` (height above the lowest point);
    * channel 2: ``clip(angle_deg + 38, 0, 255) / 255`` (angle to gravity, offset ``+128 - 90``).

    Every channel is exactly 0 at holes (``valid_mask`` False, or non-finite / non-positive depth).

    Args:
        depth_m: (B,1,H,W) depth in metres, 0 at holes.
        valid_mask: (B,1,H,W) bool.
        intrinsics: (B,3,3) camera intrinsics for this resolution (required).
        **kwargs: forwarded to :func:`hha_components` (``normal_window``, ``gravity_iterations``, ...).

    Returns:
        (B,3,H,W) float32 tensor in [0, 1] on the device of ``depth_m``.
    """
    comp = hha_components(depth_m, valid_mask, intrinsics, **kwargs)
    _, valid = _sanitize(depth_m, valid_mask)
    hha = (
        torch.cat(
            [
                comp.disparity.clamp(max=255.0),
                (comp.height * 100.0).clamp(0.0, 255.0),
                (comp.angle + ANGLE_OFFSET_DEG).clamp(0.0, 255.0),
            ],
            dim=1,
        )
        / 255.0
    )
    hha = torch.where(valid, hha, torch.zeros_like(hha))
    return hha.to(torch.float32).clamp(0.0, 1.0)
