"""Procedural RGB-D scenes in which neither modality alone identifies the class.

Each sample is rendered by ray casting (vectorised over a batch of scenes and all pixels) through a pinhole
camera (OpenCV convention: x right, y down, z forward). A scene holds one textured target object in front of a
tilted back wall with posters, a floor and random background clutter (spheres and boxes), lit by a random
directional light (Lambert + Blinn-Phong); the camera has a random roll / pitch / yaw.

Classes are ``shape x texture x {real object, printed photo}``:

* ``shape`` (ball or cube) is visible in RGB (silhouette and shading) and in depth (silhouette / relief);
* ``texture`` (stripes or a 3-D checker, same two colours, same area fraction) is visible in RGB only;
* a *printed photo* is a flat cut-out placed where the object would be (facing the camera, tilted up to 12
  degrees). Its colours are exactly those rendered for the real object (same shading and highlights), but its
  depth is a plane, so it differs in depth only.

Hence RGB alone can tell ``shape + texture`` (4 of 8 groups) and depth alone ``shape + real/print`` (4 of 8
groups): both are needed to reach full accuracy. Depth is the z-coordinate in the camera frame (metres) with sensor
effects: Gaussian noise with sigma = k z^2, 1 mm quantisation and holes (stored as 0) at depth discontinuities,
at grazing incidence, on IR-absorbing (dark) posters and clutter, under specular glare on glossy clutter, and as
random speckle. The target itself gets no glare holes, so that real vs print can only be told from 3-D shape.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import progress_bar, torch_thread_limit

__all__ = [
    "CLASS_NAMES",
    "class_attributes",
    "intrinsics_for_size",
    "make_synthetic_rgbd",
    "render_rgbd_scenes",
    "synthetic_features",
]

# label = 4 * shape + 2 * texture + is_print
CLASS_NAMES: tuple[str, ...] = (
    "striped_ball",
    "striped_ball_photo",
    "checkered_ball",
    "checkered_ball_photo",
    "striped_cube",
    "striped_cube_photo",
    "checkered_cube",
    "checkered_cube_photo",
)
NUM_CLASSES = len(CLASS_NAMES)
HORIZONTAL_FOV_DEG = 60.0
_GENERATOR_VERSION = "1"  # bump whenever the rendered content changes (used in dataset fingerprints)
_CUBE_HALF_SIZE = 0.78  # cube half-size relative to the ball radius (similar projected area)
_N_SPHERES = 3  # slot 0: target ball (disabled for cube classes), slots 1..: clutter
_N_BOXES = 3  # slot 0: target cube (disabled for ball classes), slots 1..: clutter
_N_POSTERS = 3  # flat patches on the back wall
_CHUNK = 8  # samples rendered at once (keeps intermediates cache-sized)


def class_attributes(label: int) -> dict[str, Any]:
    """Decode a label into ``{"shape": "ball"|"cube", "texture": "striped"|"checkered", "printed": bool}``."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}")
    label = int(label)
    return {
        "shape": ("ball", "cube")[label // 4],
        "texture": ("striped", "checkered")[(label // 2) % 2],
        "printed": bool(label % 2),
    }


def intrinsics_for_size(image_size: int) -> torch.Tensor:
    """Pinhole intrinsics ``K`` (3, 3) float32 for a square ``image_size`` image with a 60 degree field of view.

    Pixel centres sit at integer coordinates, so the principal point is ``(image_size - 1) / 2``.
    """
    f = 0.5 * image_size / math.tan(math.radians(HORIZONTAL_FOV_DEG) / 2)
    c = (image_size - 1) / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=torch.float32)


def synthetic_features(image_size: int):
    """The ``datasets.Features`` of :func:`make_synthetic_rgbd` for a given image size."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "depth": datasets.Array2D((image_size, image_size), "float32"),
            "label": datasets.ClassLabel(names=list(CLASS_NAMES)),
            "intrinsics": datasets.Array2D((3, 3), "float32"),
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# random helpers (all draws go through an explicit generator)


def _u(gen: torch.Generator, shape, lo: float | torch.Tensor, hi: float | torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def _bern(gen: torch.Generator, shape, p: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen) < p


def _random_rotations(gen: torch.Generator, shape) -> torch.Tensor:
    """Uniformly random rotation matrices (*shape, 3, 3) from normalised Gaussian quaternions."""
    q = torch.randn(*shape, 4, generator=gen)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, -1).reshape(*shape, 3, 3)


def _basis(first: torch.Tensor, helper: torch.Tensor) -> torch.Tensor:
    """Orthonormal right-handed bases (N, 3, 3) whose first column is ``first`` (N, 3, unit); ``helper`` (N, 3)
    (any vector not parallel to ``first``) fixes the rotation about it."""
    second = F.normalize(helper - (helper * first).sum(-1, keepdim=True) * first, dim=-1)
    return torch.stack([first, second, torch.linalg.cross(first, second)], -1)


def _euler_xyz(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation ``Rx(pitch) @ Ry(yaw) @ Rz(roll)`` for batched angles (N,) -> (N, 3, 3)."""
    o, z = torch.ones_like(pitch), torch.zeros_like(pitch)
    cx, sx, cy, sy, cz, sz = pitch.cos(), pitch.sin(), yaw.cos(), yaw.sin(), roll.cos(), roll.sin()
    rx = torch.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(-1, 3, 3)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(-1, 3, 3)
    rz = torch.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(-1, 3, 3)
    return rx @ ry @ rz


def _random_colours(gen: torch.Generator, n: int, lum_lo: float, lum_hi: float) -> torch.Tensor:
    """(n, 3) colours with random chroma whose brightest channel lies in [lum_lo, lum_hi]."""
    chroma = _u(gen, (n, 3), 0.25, 1.0)
    chroma = chroma / chroma.amax(-1, keepdim=True)
    return chroma * _u(gen, (n, 1), lum_lo, lum_hi)


# ----------------------------------------------------------------------------------------------------------------
# scene sampling


def _sample_scenes(labels: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw every per-sample scene parameter (world frame = untilted camera frame)."""
    n = labels.shape[0]
    is_cube = labels // 4 == 1
    checker = (labels // 2) % 2 == 1
    printed = labels % 2 == 1
    p: dict[str, torch.Tensor] = {"is_cube": is_cube, "checker": checker, "printed": printed}

    deg = math.pi / 180
    cam_r = _euler_xyz(_u(gen, n, -10 * deg, 10 * deg), _u(gen, n, -6 * deg, 6 * deg), _u(gen, n, -12 * deg, 12 * deg))
    p["cam_r"] = cam_r  # world-from-camera

    # target: angular radius alpha sets the image size, z the distance; the ball radius is alpha * z.
    alpha = _u(gen, n, 0.2, 0.28)
    z = _u(gen, n, 1.6, 3.2)
    radius = alpha * z
    bound = torch.where(is_cube, math.sqrt(3) * _CUBE_HALF_SIZE, 1.0) * radius  # bounding-sphere radius
    half_fov = math.tan(math.radians(HORIZONTAL_FOV_DEG) / 2)
    margin = (half_fov - 1.05 * bound / z - 0.04).clamp_min(0.0)
    xy = _u(gen, (n, 2), -1.0, 1.0) * margin[:, None]
    centre_cam = torch.stack([xy[:, 0] * z, xy[:, 1] * z, z], -1)
    centre = (cam_r @ centre_cam[..., None])[..., 0]
    # orientation: balls uniformly random; cubes show a corner (three faces) to the camera, up to a random
    # spin about the view axis and a perturbation, so that a real cube is never a single plane in depth
    towards_cam = -centre / centre.norm(dim=-1, keepdim=True)
    corner = F.normalize(torch.ones(n, 3) + 0.3 * torch.randn(n, 3, generator=gen), dim=-1)
    cube_rot = _basis(towards_cam, torch.randn(n, 3, generator=gen)) @ _basis(
        corner, torch.randn(n, 3, generator=gen)
    ).transpose(1, 2)
    p["obj_rot"] = torch.where(is_cube[:, None, None], cube_rot, _random_rotations(gen, (n,)))
    p["obj_radius"] = radius

    # texture: solid (3-D) pattern in object coordinates, scaled by the object size
    p["tex_freq"] = _u(gen, n, 2.4 * math.pi, 3.2 * math.pi)
    p["tex_phase"] = _u(gen, (n, 3), 0.0, 2 * math.pi)
    bright = _random_colours(gen, n, 0.6, 0.95)
    dark = _random_colours(gen, n, 0.12, 0.4)
    swap = _bern(gen, (n, 1), 0.5)
    p["tex_a"] = torch.where(swap, dark, bright)
    p["tex_b"] = torch.where(swap, bright, dark)
    obj_gloss = _bern(gen, n, 0.6)

    # printed photo: a plane through the object centre, facing the camera with a tilt of up to 12 degrees
    jitter = torch.randn(n, 3, generator=gen)
    jitter = jitter - (jitter * towards_cam).sum(-1, keepdim=True) * towards_cam
    jitter = jitter / jitter.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    tilt = _u(gen, (n, 1), 0.0, 12 * deg)
    p["print_normal"] = towards_cam * tilt.cos() + jitter * tilt.sin()

    # light (unit vector towards the light, mostly from above and in front), intensity, ambient, tint
    light = torch.stack([_u(gen, n, -1.0, 1.0), _u(gen, n, -1.2, -0.1), _u(gen, n, -1.2, -0.2)], -1)
    p["light_dir"] = light / light.norm(dim=-1, keepdim=True)
    p["light_int"] = _u(gen, n, 0.45, 0.9)
    p["ambient"] = _u(gen, n, 0.15, 0.4)
    p["tint"] = _u(gen, (n, 3), 0.85, 1.15)

    # clutter: spheres and boxes behind the target (in Euclidean distance), in front of the wall
    nc_s, nc_b = _N_SPHERES - 1, _N_BOXES - 1
    obj_dist = centre.norm(dim=-1)
    c_rad = _u(gen, (n, nc_s + nc_b), 0.1, 0.35)
    c_bound = torch.cat([c_rad[:, :nc_s], c_rad[:, nc_s:] * math.sqrt(3) * 0.75], 1)
    near = obj_dist[:, None] + 1.5 * bound[:, None] + c_bound + 0.05
    wall_d = torch.maximum(_u(gen, n, 5.0, 7.0), near.amax(1) + c_bound.amax(1) + 0.6)
    far = wall_d[:, None] - c_bound - 0.1
    c_dist = near + torch.rand(n, nc_s + nc_b, generator=gen) * (far - near)
    c_dir = torch.cat([_u(gen, (n, nc_s + nc_b, 2), -0.75, 0.75), torch.ones(n, nc_s + nc_b, 1)], -1)
    c_dir = (cam_r[:, None] @ c_dir[..., None])[..., 0]
    c_centre = c_dir / c_dir.norm(dim=-1, keepdim=True) * c_dist[..., None]
    c_present = _bern(gen, (n, nc_s + nc_b), 0.7)

    # floor (plane y = h, below the camera) must stay under the target and the clutter
    floor_h = torch.maximum(_u(gen, n, 1.2, 1.9), centre[:, 1] + 1.7 * bound)
    c_centre[..., 1] = torch.minimum(c_centre[..., 1], floor_h[:, None] - c_bound - 0.02)

    # back wall: plane {X : n . X = d} with a tilted normal pointing away from the camera
    wall_n = _euler_xyz(_u(gen, n, -15 * deg, 15 * deg), _u(gen, n, -15 * deg, 15 * deg), torch.zeros(n))[..., 2]
    p["wall_n"], p["wall_d"] = wall_n, wall_d
    p["floor_h"] = floor_h

    # sphere slots: 0 = target ball, then clutter spheres
    p["sph_c"] = torch.cat([centre[:, None], c_centre[:, :nc_s]], 1)
    p["sph_r"] = torch.cat([radius[:, None], c_rad[:, :nc_s]], 1)
    p["sph_on"] = torch.cat([~is_cube[:, None], c_present[:, :nc_s]], 1)
    # box slots: 0 = target cube, then clutter boxes
    p["box_c"] = torch.cat([centre[:, None], c_centre[:, nc_s:]], 1)
    p["box_h"] = torch.cat([(_CUBE_HALF_SIZE * radius)[:, None], c_rad[:, nc_s:] * 0.75], 1)
    p["box_on"] = torch.cat([is_cube[:, None], c_present[:, nc_s:]], 1)
    p["box_rot"] = torch.cat([p["obj_rot"][:, None], _random_rotations(gen, (n, nc_b))], 1)

    # materials per surface id: 0 none, 1 floor, 2 wall, 3.. spheres, 3 + _N_SPHERES.. boxes
    n_surf = 3 + _N_SPHERES + _N_BOXES
    albedo = torch.zeros(n, n_surf, 3)
    albedo[:, 1] = _random_colours(gen, n, 0.3, 0.8)
    albedo[:, 2] = _random_colours(gen, n, 0.3, 0.9)
    clutter_col = _random_colours(gen, n * (nc_s + nc_b), 0.15, 0.95).reshape(n, nc_s + nc_b, 3)
    absorb = torch.zeros(n, n_surf, dtype=torch.bool)
    c_absorb = _bern(gen, (n, nc_s + nc_b), 0.25)
    clutter_col = torch.where(c_absorb[..., None], clutter_col * 0.12, clutter_col)
    albedo[:, 4 : 3 + _N_SPHERES] = clutter_col[:, :nc_s]
    albedo[:, 4 + _N_SPHERES :] = clutter_col[:, nc_s:]
    absorb[:, 4 : 3 + _N_SPHERES] = c_absorb[:, :nc_s]
    absorb[:, 4 + _N_SPHERES :] = c_absorb[:, nc_s:]
    gloss = _bern(gen, (n, n_surf), 0.35)
    gloss[:, :3] = False
    gloss[:, 3] = obj_gloss
    gloss[:, 3 + _N_SPHERES] = obj_gloss
    p["albedo"], p["absorb"], p["gloss"] = albedo, absorb, gloss
    p["shininess"] = _u(gen, n, 20.0, 60.0)
    p["spec_k"] = _u(gen, n, 0.3, 0.7)

    # wall decoration: low-frequency shading and rectangular posters (some absorbing -> depth holes)
    p["wall_wave"] = torch.cat([_u(gen, (n, 2), 0.3, 1.5), _u(gen, (n, 2), 0.0, 2 * math.pi)], 1)
    p["poster_box"] = torch.cat([_u(gen, (n, _N_POSTERS, 2), -3.0, 3.0), _u(gen, (n, _N_POSTERS, 2), 0.15, 0.9)], -1)
    p["poster_on"] = _bern(gen, (n, _N_POSTERS), 0.7)
    poster_absorb = _bern(gen, (n, _N_POSTERS), 0.35)
    poster_col = _random_colours(gen, n * _N_POSTERS, 0.15, 0.95).reshape(n, _N_POSTERS, 3)
    p["poster_col"] = torch.where(poster_absorb[..., None], poster_col * 0.1, poster_col)
    p["poster_absorb"] = poster_absorb

    # sensor
    p["depth_noise"] = _u(gen, n, 0.0008, 0.0018)  # sigma = k * z^2 metres
    p["rgb_noise"] = _u(gen, n, 0.004, 0.015)
    return p


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over dim 1 of (B, 3, ...) tensors."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _argmin_slots(values: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise minimum over a few same-shaped tensors and the index of the first minimum (int64).

    Pairwise ``minimum`` / ``where`` is several times faster than ``stack(...).min(0)`` for a handful of slots."""
    best, index = values[0], torch.zeros(values[0].shape, dtype=torch.int64)
    for i, v in enumerate(values[1:], start=1):
        closer = v < best
        best = torch.where(closer, v, best)
        index = torch.where(closer, i, index)
    return best, index


def _render_chunk(p: dict[str, torch.Tensor], size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Ray-cast a chunk of B scenes at ``size`` x ``size``; returns float RGB (B,3,P), depth (B,P) and extras."""
    b, npx = p["cam_r"].shape[0], size * size
    k = intrinsics_for_size(size)
    v, u = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    d_cam = torch.stack([(u.reshape(-1) - k[0, 2]) / k[0, 0], (v.reshape(-1) - k[1, 2]) / k[1, 1], torch.ones(npx)])
    dd = (d_cam * d_cam).sum(0)  # |d|^2 (P,), rotation invariant
    d = p["cam_r"] @ d_cam  # (B, 3, P) world-frame rays with camera-frame z = 1, so t is the depth
    inf = torch.tensor(float("inf"))

    # floor y = h and wall n . X = d
    t_floor = torch.where(d[:, 1] > 1e-6, p["floor_h"][:, None] / d[:, 1], inf)
    nd_wall = (p["wall_n"][:, :, None] * d).sum(1)
    t_wall = torch.where(nd_wall > 1e-6, p["wall_d"][:, None] / nd_wall, inf)

    # spheres: |t d - c|^2 = r^2
    c = p["sph_c"]
    dc = c @ d  # (B, S, P)
    cc_r2 = ((c * c).sum(-1) - p["sph_r"] ** 2)[..., None]
    disc = dc * dc - dd * cc_r2
    t_sph = (dc - disc.clamp_min(1e-20).sqrt()) / dd  # (sqrt of exact zeros hits a slow path in some math libs)
    t_sph = torch.where((disc > 0) & p["sph_on"][..., None], t_sph, inf)
    t_sph, i_sph = _argmin_slots(t_sph.unbind(1))

    # boxes: slab test in each box frame
    rot_t = p["box_rot"].transpose(-1, -2)  # local-from-world (B, N, 3, 3)
    o_loc = -(rot_t @ p["box_c"][..., None])  # (B, N, 3, 1)
    d_loc = (rot_t.reshape(b, -1, 3) @ d).reshape(b, -1, 3, npx)  # (B, N, 3, P)
    inv = 1.0 / d_loc
    mid = o_loc * inv  # slab entry / exit: -mid -+ half * |inv|
    span = inv.abs_().mul_(p["box_h"][..., None, None])
    lo = -mid - span
    hi = span.sub_(mid)
    t_near = torch.maximum(torch.maximum(lo[:, :, 0], lo[:, :, 1]), lo[:, :, 2])
    t_far = torch.minimum(torch.minimum(hi[:, :, 0], hi[:, :, 1]), hi[:, :, 2])
    t_box = torch.where((t_near <= t_far) & (t_near > 0) & p["box_on"][..., None], t_near, inf)
    t_box, i_box = _argmin_slots(t_box.unbind(1))

    # nearest surface and its id
    t, kind = _argmin_slots((t_floor, t_wall, t_sph, t_box))  # kind 0 floor, 1 wall, 2 sphere, 3 box
    hit = torch.isfinite(t)
    sid = torch.where(
        kind == 0, 1, torch.where(kind == 1, 2, torch.where(kind == 2, 3 + i_sph, 3 + _N_SPHERES + i_box))
    )
    sid = torch.where(hit, sid, 0)
    t = torch.where(hit, t, 0.0)
    x = d * t[:, None]  # hit points (B, 3, P)

    def per_pixel(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Gather a (B, K, C) per-slot table at a (B, P) slot index -> (B, C, P)."""
        return torch.gather(table.transpose(1, 2), 2, index[:, None].expand(-1, table.shape[2], -1))

    # normals
    n_sph = (x - per_pixel(p["sph_c"], i_sph)) / per_pixel(p["sph_r"][..., None], i_sph)
    d_loc_pix = torch.gather(d_loc, 1, i_box[:, None, None].expand(-1, 1, 3, npx))[:, 0]
    p_loc = per_pixel(o_loc[..., 0], i_box) + d_loc_pix * t[:, None]
    p_loc = p_loc.abs_() / per_pixel(p["box_h"][..., None], i_box)  # face axis = largest |p| / half-size
    a0, a1, a2 = p_loc.unbind(1)
    axis = torch.where((a0 >= a1) & (a0 >= a2), 0, torch.where(a1 >= a2, 1, 2))
    cols = p["box_rot"].transpose(-1, -2).reshape(b, -1, 3)  # (B, N*3, 3): column j of box i at row 3i+j
    n_box = per_pixel(cols, i_box * 3 + axis)
    n_box = n_box * _dot(n_box, d).sign_().neg_()[:, None]  # the visible face points towards the camera
    n_floor = torch.tensor([0.0, -1.0, 0.0])[None, :, None]
    n_wall = -p["wall_n"][:, :, None]
    kind3 = kind[:, None]
    normal = torch.where(kind3 == 0, n_floor, torch.where(kind3 == 1, n_wall, torch.where(kind3 == 2, n_sph, n_box)))

    # albedo: per-surface colours, wall decoration, target texture
    albedo = per_pixel(p["albedo"], sid)
    wave = p["wall_wave"]
    shade = 1.0 + 0.15 * torch.sin(wave[:, 0:1] * x[:, 0] + wave[:, 2:3]) * torch.sin(
        wave[:, 1:2] * x[:, 1] + wave[:, 3:4]
    )
    on_wall = sid == 2
    absorb = torch.gather(p["absorb"], 1, sid)
    poster = torch.full_like(sid, -1)  # index of the top-most poster under each wall pixel
    for j in range(_N_POSTERS):
        bx = p["poster_box"][:, j]
        inside = ((x[:, 0] - bx[:, 0:1]).abs() < bx[:, 2:3]) & ((x[:, 1] - bx[:, 1:2]).abs() < bx[:, 3:4])
        poster = torch.where(inside & on_wall & p["poster_on"][:, j : j + 1], j, poster)
    on_poster = poster >= 0
    poster = poster.clamp_min(0)
    poster_col = per_pixel(p["poster_col"], poster)
    albedo = torch.where(on_poster[:, None], poster_col, albedo)
    absorb = absorb | (on_poster & torch.gather(p["poster_absorb"], 1, poster))
    albedo = torch.where(on_wall[:, None], albedo * shade[:, None], albedo)

    target = (sid == 3) | (sid == 3 + _N_SPHERES)
    centre = p["sph_c"][:, 0, :, None]
    q = p["obj_rot"].transpose(-1, -2) @ (x - centre) / p["obj_radius"][:, None, None]
    arg = q * p["tex_freq"][:, None, None] + p["tex_phase"][:, :, None]
    stripes = torch.sin(arg[:, 0])
    checker = stripes * torch.sin(arg[:, 1]) * torch.sin(arg[:, 2])
    pattern = torch.where(p["checker"][:, None], checker, stripes) > 0
    tex = torch.where(pattern[:, None], p["tex_a"][:, :, None], p["tex_b"][:, :, None])
    albedo = torch.where(target[:, None], tex, albedo)

    # Blinn-Phong shading; the printed photo shows exactly this (real-object) shading.
    # With unit view v = -d/|d| and light l: n.h = (n.l + n.v) / |l + v| and |l + v|^2 = 2 + 2 l.v
    inv_len = dd.rsqrt()
    light = p["light_dir"][:, :, None]
    n_dot_l = _dot(normal, light)
    n_dot_v = -_dot(normal, d) * inv_len
    l_dot_v = -_dot(light, d) * inv_len
    n_dot_h = (n_dot_l + n_dot_v) * (2.0 + 2.0 * l_dot_v).clamp_min(1e-6).rsqrt()
    gloss = torch.gather(p["gloss"], 1, sid)
    # (n.h)^shininess as exp(s log x) on x >= 0.5: avoids pow's slow path and denormal results
    spec = torch.exp(p["shininess"][:, None] * torch.log(n_dot_h.clamp_min(0.5))) * ((n_dot_h > 0.5) & gloss)
    inten = p["light_int"][:, None]
    lit = (p["ambient"][:, None] + inten * n_dot_l.clamp_min(0))[:, None] * albedo * p["tint"][:, :, None]
    rgb = lit + (inten * spec * p["spec_k"][:, None])[:, None]
    rgb = (rgb + torch.randn(rgb.shape, generator=gen) * p["rgb_noise"][:, None, None]).clamp(0, 1)

    # depth: printed photos replace the target's depth by the print plane
    pn = p["print_normal"][:, :, None]
    t_print = (pn * centre).sum(1) / (pn * d).sum(1)
    as_print = target & p["printed"][:, None]
    depth = torch.where(as_print, t_print, t)
    depth_normal = torch.where(as_print[:, None], pn, normal)

    # sensor holes: absorbing materials, specular glare on glossy clutter, grazing incidence, depth
    # discontinuities (mostly on the far side), random speckle. The target gets no glare holes: they would tell
    # a real object from its print without looking at its 3-D shape.
    holes = (~hit) | absorb | ((spec > 0.5) & ~target)
    cos_inc = _dot(depth_normal, d).abs() * inv_len
    holes |= (cos_inc < 0.2) & _bern(gen, (b, npx), 0.7)
    z = depth.reshape(b, size, size)
    far = torch.zeros(b, size, size, dtype=torch.bool)
    near = torch.zeros_like(far)
    for dz, sl_a, sl_b in (
        (
            z[:, :, 1:] - z[:, :, :-1],
            (slice(None), slice(None), slice(1, None)),
            (slice(None), slice(None), slice(None, -1)),
        ),
        (z[:, 1:] - z[:, :-1], (slice(None), slice(1, None)), (slice(None), slice(None, -1))),
    ):
        thr = 0.05 * torch.minimum(z[sl_a], z[sl_b]) + 0.02
        jump = dz.abs() > thr
        far[sl_a] |= jump & (dz > 0)
        far[sl_b] |= jump & (dz < 0)
        near[sl_a] |= jump & (dz < 0)
        near[sl_b] |= jump & (dz > 0)
    u_edge = torch.rand(b, size, size, generator=gen)
    holes |= ((far & (u_edge < 0.9)) | (near & (u_edge < 0.25))).reshape(b, npx)
    holes |= _bern(gen, (b, npx), 0.003)

    noisy = depth + torch.randn(b, npx, generator=gen) * p["depth_noise"][:, None] * depth * depth
    noisy = torch.round(noisy * 1000.0) / 1000.0  # 1 mm quantisation
    noisy = torch.where(holes | (noisy <= 0), 0.0, noisy)
    return {"rgb": rgb, "depth": noisy, "clean_depth": depth, "surface_id": sid, "holes": holes}


def render_rgbd_scenes(
    labels: torch.Tensor | np.ndarray | list[int],
    image_size: int = 64,
    generator: torch.Generator | int | None = None,
    return_extras: bool = False,
    num_threads: int | None = 1,
) -> dict[str, torch.Tensor]:
    """Render one random scene per label.

    Args:
        labels: (N,) integer class ids in ``[0, 8)`` (see :data:`CLASS_NAMES`).
        image_size: output height = width in pixels (>= 8).
        generator: ``torch.Generator`` or int seed (default seed 0). Only this generator is used.
        return_extras: also return ``clean_depth`` (N, H, W) float32 noise- and hole-free depth,
            ``surface_id`` (N, H, W) int64 (3: target ball, 3 + 3: target cube) and ``params`` (scene parameters).
        num_threads: at most this many torch threads while rendering (restored afterwards); None keeps torch's
            setting. The rendering is many small ops, which one thread runs fastest when another process keeps a
            core busy and about as fast as two on an idle machine. The values never depend on it.

    Returns:
        dict with ``image`` (N, H, W, 3) uint8, ``depth`` (N, H, W) float32 metres (0 = hole),
        ``label`` (N,) int64 and ``intrinsics`` (3, 3) float32.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be integers in [0, {NUM_CLASSES}), got range [{labels.min()}, {labels.max()}]")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    gen = _as_generator(generator)
    with torch_thread_limit(num_threads, "num_threads"):
        return _render_scenes(labels, image_size, gen, return_extras)


def _render_scenes(
    labels: torch.Tensor, s: int, gen: torch.Generator, return_extras: bool, progress: Any = None
) -> dict[str, torch.Tensor]:
    """[`render_rgbd_scenes`] on checked arguments; `progress` (a tqdm bar) advances by each chunk's size."""
    n = labels.shape[0]
    params = _sample_scenes(labels, gen)
    image = torch.empty(n, s, s, 3, dtype=torch.uint8)
    depth = torch.empty(n, s, s, dtype=torch.float32)
    extras: dict[str, list[torch.Tensor]] = {"clean_depth": [], "surface_id": []}
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        out = _render_chunk({k: v[start:stop] for k, v in params.items()}, s, gen)
        rgb = (out["rgb"] * 255.0).round_().to(torch.uint8)
        image[start:stop] = rgb.reshape(stop - start, 3, s, s).permute(0, 2, 3, 1)
        depth[start:stop] = out["depth"].reshape(stop - start, s, s)
        if return_extras:
            extras["clean_depth"].append(out["clean_depth"].reshape(stop - start, s, s))
            extras["surface_id"].append(out["surface_id"].reshape(stop - start, s, s))
        if progress is not None:
            progress.update(stop - start)
    result = {"image": image, "depth": depth, "label": labels, "intrinsics": intrinsics_for_size(s)}
    if return_extras:
        empty = torch.empty(0, s, s)
        result["clean_depth"] = torch.cat(extras["clean_depth"]) if n else empty
        result["surface_id"] = torch.cat(extras["surface_id"]) if n else empty.long()
        result["params"] = params
    return result


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if not isinstance(generator, (int, np.integer)) or isinstance(generator, bool):
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return torch.Generator().manual_seed(int(generator))


def _split_seed(seed: int, split: str) -> int:
    """Independent 63-bit seed per (seed, split): splits never share a random stream."""
    state = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, zlib.crc32(split.encode())]
    )
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# ----------------------------------------------------------------------------------------------------------------
# datasets assembly


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _encode_pngs(images: np.ndarray) -> list[bytes]:
    """Lossless PNG bytes for (N, H, W, 3) uint8 images.

    A minimal encoder for speed: no scanline filter and "stored" (uncompressed) deflate blocks, which any PNG
    decoder reads. About 30x faster than PIL's compressed PNG, at ~1.5x the size (12 KB for 64 x 64).
    """
    n, h, w, _ = images.shape
    scanlines = np.zeros((n, h, w * 3 + 1), dtype=np.uint8)  # leading 0 per row: filter type "None"
    scanlines[:, :, 1:] = images.reshape(n, h, w * 3)
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    tail = _png_chunk(b"IEND", b"")
    return [head + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 0)) + tail for rows in scanlines]


def _nested_list_array(values: np.ndarray):
    """(N, H, W) float32 -> pyarrow list<list<float>> (the storage of ``datasets.Array2D``) without Python loops."""
    import pyarrow as pa

    n, h, w = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, n * h * w + 1, w, dtype=np.int32)), flat)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * h + 1, h, dtype=np.int32)), rows)


def _build_dataset(rendered: dict[str, torch.Tensor], split: str, fingerprint: str):
    import datasets
    import pyarrow as pa

    images = rendered["image"].numpy()
    depth = rendered["depth"].numpy()
    n, s = depth.shape[0], depth.shape[1]
    features = synthetic_features(s)
    pngs = _encode_pngs(images)
    image_col = pa.StructArray.from_arrays(
        [pa.array(pngs, type=pa.binary()), pa.nulls(n, type=pa.string())], names=["bytes", "path"]
    )
    schema = features.arrow_schema
    intr = np.broadcast_to(rendered["intrinsics"].numpy(), (n, 3, 3))
    columns = [
        image_col,
        pa.ExtensionArray.from_storage(schema.field("depth").type, _nested_list_array(depth)),
        pa.array(rendered["label"].numpy(), type=pa.int64()),
        pa.ExtensionArray.from_storage(schema.field("intrinsics").type, _nested_list_array(intr)),
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    info = datasets.DatasetInfo(description="hf_rgbd synthetic RGB-D scenes", features=features)
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=info, split=split, fingerprint=fingerprint)


def _check_count(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def make_synthetic_rgbd(
    num_train: int = 2000,
    num_validation: int = 500,
    num_test: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    num_threads: int | None = 1,
):
    """Generate the synthetic RGB-D classification benchmark as a ``datasets.DatasetDict``.

    Splits ``train`` / ``validation`` / ``test`` have class-balanced labels (counts differ by at most one) and
    features ``image`` (RGB uint8, ``image_size`` x ``image_size``), ``depth`` (Array2D float32 metres, 0 = hole),
    ``label`` (ClassLabel over :data:`CLASS_NAMES`) and ``intrinsics`` (Array2D (3, 3) float32 pinhole ``K``:
    a valid pixel (u, v) with depth z back-projects to ``z * K^-1 [u, v, 1]`` in the camera frame).

    The same arguments always give identical data; each split draws from its own generator derived from
    ``(seed, split name)``. The global torch / numpy random states are never touched. ``num_threads`` caps torch's
    threads while rendering, as in :func:`render_rgbd_scenes` (the values never depend on it). A progress bar
    counts the rendered scenes (off with ``hf_rgbd.disable_progress_bars()`` or
    ``HF_RGBD_DISABLE_PROGRESS_BARS=1``).
    """
    import datasets

    counts = {
        "train": _check_count("num_train", num_train),
        "validation": _check_count("num_validation", num_validation),
        "test": _check_count("num_test", num_test),
    }
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    splits = {}
    bar = progress_bar(total=sum(counts.values()), desc="Rendering synthetic RGB-D scenes", unit="scene")
    with torch_thread_limit(num_threads, "num_threads"), bar:
        for split, n in counts.items():
            gen = torch.Generator().manual_seed(_split_seed(int(seed), split))
            labels = torch.arange(n) % NUM_CLASSES
            labels = labels[torch.randperm(n, generator=gen)]
            rendered = _render_scenes(labels, int(image_size), gen, False, bar)
            key = f"{_GENERATOR_VERSION}-{seed}-{split}-{n}-{image_size}"
            fingerprint = "synthetic-rgbd-" + hashlib.sha256(key.encode()).hexdigest()[:24]
            splits[split] = _build_dataset(rendered, split, fingerprint)
    return datasets.DatasetDict(splits)
