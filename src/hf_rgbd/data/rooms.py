"""Rendered rooms written in the SUN RGB-D folder layout, whose scene classes need both modalities.

A second offline data set of another kind than `make_synthetic_rgbd()`, for validating recipes on data they were
not tuned on and for exercising `load_sunrgbd` on realistic files. Each sample is a room seen by a pinhole camera:
a floor plane, a back wall, and one box-shaped object facing the camera. The scene class is the pair

- object colour (RGB only): warm (red / orange hues) or cool (blue / cyan hues), on random wall and floor colours;
- object distance (depth only): near (0.9-1.6 m) or far (2.2-3.2 m), the object's physical size drawn so that its
  apparent size and image position are the same for both, so RGB alone cannot tell the distance.

RGB-only and depth-only classifiers can therefore reach at most about 50% on the four classes; a fused one 100%.
Images differ in size from sample to sample (three sensor geometries, as SUN RGB-D mixes four sensors), depth has
Kinect-like noise (sigma = 1.2 mm + 1.9 mm * (z - 0.4 m)^2), millimetre quantisation, a shadow band of holes beside
the object and scattered dropouts, and RGB has a lighting gradient, sensor noise and JPEG compression.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["ROOM_CLASSES", "write_sunrgbd_rooms"]

#: scene names (from the SUN RGB-D 19-class protocol) of the four (colour, distance) classes
ROOM_CLASSES = {
    ("warm", "near"): "bedroom",
    ("warm", "far"): "kitchen",
    ("cool", "near"): "office",
    ("cool", "far"): "living_room",
}
# (height, width, focal length in pixels) of the sensor geometries samples are drawn from
_GEOMETRIES = ((96, 128, 118.0), (120, 160, 150.0), (108, 144, 128.0))
_SPLITS = ("train", "validation", "test")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _render_room(rng: np.random.Generator, colour: str, distance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB (H, W, 3) uint8, depth (H, W) uint16 millimetres with 0 = hole, intrinsics (3, 3))."""
    h, w, focal = _GEOMETRIES[rng.integers(len(_GEOMETRIES))]
    focal *= rng.uniform(0.95, 1.05)
    cx, cy = (w - 1) / 2 + rng.uniform(-2, 2), (h - 1) / 2 + rng.uniform(-2, 2)
    k = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], dtype=np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)

    # floor plane (camera height above it) and a back wall; the nearer surface wins
    camera_height = rng.uniform(1.0, 1.5)
    wall_distance = rng.uniform(3.8, 5.5)
    below = v - cy
    floor_depth = np.where(below > 0.5, camera_height * focal / np.maximum(below, 0.5), np.inf)
    depth = np.minimum(floor_depth, wall_distance)
    is_floor = floor_depth < wall_distance

    # the object: a frontal box face whose apparent size / position do not depend on its distance
    z_object = rng.uniform(0.9, 1.6) if distance == "near" else rng.uniform(2.2, 3.2)
    box_h, box_w = int(h * rng.uniform(0.25, 0.45)), int(w * rng.uniform(0.2, 0.4))
    top, left = int(rng.integers(h // 8, h - box_h - h // 8)), int(rng.integers(w // 8, w - box_w - w // 8))
    on_object = np.zeros((h, w), dtype=bool)
    on_object[top : top + box_h, left : left + box_w] = True
    depth = np.where(on_object, z_object, depth)

    # RGB: wall / floor colours, the object's hue class, a lighting gradient, noise
    wall_rgb = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.9))
    floor_rgb = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.7))
    hue = rng.uniform(-0.04, 0.10) % 1.0 if colour == "warm" else rng.uniform(0.50, 0.64)
    object_rgb = _hsv_to_rgb(hue, rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.9))
    rgb = np.where(is_floor[..., None], floor_rgb, wall_rgb)
    rgb = np.where(on_object[..., None], object_rgb, rgb)
    light = 1.0 + rng.uniform(-0.25, 0.25) * (u / w - 0.5) + rng.uniform(-0.2, 0.2) * (v / h - 0.5)
    rgb = rgb * light[..., None] + rng.normal(0.0, 0.02, size=(h, w, 3))
    rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    # Kinect-like depth: axial noise, mm quantisation, a shadow band of holes beside the object, dropouts
    noisy = depth + rng.normal(size=depth.shape) * (0.0012 + 0.0019 * (depth - 0.4) ** 2)
    mm = np.round(noisy * 1000.0)
    shadow = max(1, int(round(0.075 * focal / z_object)))  # projector baseline 7.5 cm
    holes = np.zeros((h, w), dtype=bool)
    holes[top : top + box_h, max(0, left - shadow) : left] = True
    holes |= rng.random((h, w)) < 0.02
    mm[holes] = 0
    return rgb, np.clip(mm, 0, 65535).astype(np.uint16), k


def write_sunrgbd_rooms(
    root: str | os.PathLike,
    num_train: int = 800,
    num_validation: int = 200,
    num_test: int = 400,
    seed: int = 0,
    jpeg_quality: int = 90,
) -> dict[str, Path]:
    """Render rooms (see the module docstring) into `root` in the SUN RGB-D layout and return the split files.

    Each sample is `root/rooms/<split>/<index>/` with `image/<index>.jpg`, `depth/<index>.png` (uint16 millimetres
    rotated left by 3 bits, as SUN RGB-D stores them; 0 = hole), `depth_bfx/<index>.png` (the noise-free depth),
    `intrinsics.txt` and `scene.txt`. The split files `root/<split>.txt` list the sample folders, one per line, as
    `load_sunrgbd(root, splits=...)` takes them. Classes are balanced in every split; the same arguments always
    write the same files.

    Returns:
        `{"train": root/train.txt, "validation": ..., "test": ...}`.
    """
    from PIL import Image

    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"`num_{name}` must be a positive int, got {count!r}.")
    root = Path(root)
    classes = list(ROOM_CLASSES.items())
    split_files = {}
    for split_index, split in enumerate(_SPLITS):
        rng = np.random.default_rng([seed, split_index])
        labels = np.arange(counts[split]) % len(classes)
        rng.shuffle(labels)
        lines = []
        for index, label in enumerate(labels):
            (colour, distance), scene = classes[label]
            rgb, mm, k = _render_room(rng, colour, distance)
            rel = f"rooms/{split}/{index:05d}"
            folder = root / rel
            for sub in ("image", "depth", "depth_bfx"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / "image" / f"{index:05d}.jpg", quality=jpeg_quality)
            for sub, values in (("depth", mm), ("depth_bfx", _filled(mm))):
                rotated = ((values.astype(np.uint32) << 3) | (values.astype(np.uint32) >> 13)) & 0xFFFF
                Image.fromarray(rotated.astype(np.uint16)).save(folder / sub / f"{index:05d}.png")
            (folder / "intrinsics.txt").write_text("\n".join(" ".join(f"{x:.6f}" for x in row) for row in k) + "\n")
            (folder / "scene.txt").write_text(scene + "\n")
            lines.append(rel)
        split_files[split] = root / f"{split}.txt"
        split_files[split].write_text("\n".join(lines) + "\n")
    return split_files


def _filled(mm: np.ndarray) -> np.ndarray:
    """Holes filled from the nearest valid pixel to the left on the same row (else to the right)."""
    out = mm.copy()
    for row in out:
        valid = np.flatnonzero(row)
        if valid.size == 0:
            continue
        index = np.searchsorted(valid, np.arange(row.size), side="right") - 1
        row[:] = row[valid[np.clip(index, 0, None)]]
    return out
