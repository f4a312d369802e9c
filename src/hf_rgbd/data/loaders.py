"""Loaders for real RGB-D data: NYU Depth v2 (labeled ``.mat``), SUN RGB-D (sample folders) and plain folders.

Every loader returns a ``datasets.DatasetDict`` with the columns of :func:`rgbd_features`: ``image`` (encoded RGB),
``depth`` (H, W) float32 metres with holes as 0 (any size per sample), ``label`` (``ClassLabel``), ``intrinsics``
(3, 3) float32 pinhole ``K`` of the image's pixel grid (pixel centres at integer coordinates, 0-based) and ``scene``
(the raw scene name). Splits are written sample by sample with ``datasets.Dataset.from_generator`` into memory-mapped
Arrow files (``cache_dir``, ``num_proc`` passed through): no loader holds a whole data set in memory.

Cheap checks (files present, split lists, scene names, array names and shapes) run before anything is written; the
rest (decoding, bit depth, sizes) while writing. Either way a broken input raises ``FileNotFoundError`` or
``ValueError`` naming the file and what was expected, and no cache is left behind: ``datasets`` writes each split to a
temporary folder that is removed on error. Each cache key includes every input file's size and modification time, so
a changed file is read again rather than served from a stale cache.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..processors.depth_processing_rgbd import decode_sunrgbd_depth

__all__ = [
    "NYU10_CLASSES",
    "NYU_KINECT_INTRINSICS",
    "NYU_SCENE_TYPES",
    "SUNRGBD19_CLASSES",
    "load_nyuv2",
    "load_rgbd_folder",
    "load_sunrgbd",
    "nyu10_class",
    "rgbd_features",
]

PathLike = str | os.PathLike

# The 27 raw scene types of the NYU Depth v2 labeled set and the usual 10-class protocol (the rest -> "others").
NYU_SCENE_TYPES: tuple[str, ...] = (
    "basement", "bathroom", "bedroom", "bookstore", "cafe", "classroom", "computer_lab", "conference_room",
    "dinette", "dining_room", "exercise_room", "foyer", "furniture_store", "home_office", "home_storage",
    "indoor_balcony", "kitchen", "laundry_room", "living_room", "office", "office_kitchen", "playroom",
    "printer_room", "reception_room", "student_lounge", "study", "study_room",
)  # fmt: skip
NYU10_CLASSES: tuple[str, ...] = (
    "bedroom", "kitchen", "living_room", "bathroom", "dining_room", "office", "home_office", "classroom",
    "bookstore", "others",
)  # fmt: skip
# The 19-class SUN RGB-D scene protocol (scenes with enough samples); other scenes are dropped.
SUNRGBD19_CLASSES: tuple[str, ...] = (
    "bathroom", "bedroom", "classroom", "computer_room", "conference_room", "corridor", "dining_area",
    "dining_room", "discussion_area", "furniture_store", "home_office", "kitchen", "lab", "lecture_theatre",
    "library", "living_room", "office", "rest_space", "study_space",
)  # fmt: skip
# Kinect RGB camera of NYU Depth v2 (toolbox camera_params.m), converted from MATLAB's 1-based pixel coordinates.
NYU_KINECT_INTRINSICS = np.array(
    [[518.8579, 0.0, 325.5824 - 1.0], [0.0, 519.4696, 253.7362 - 1.0], [0.0, 0.0, 1.0]], dtype=np.float32
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_WRITER_BATCH_SIZE = 32  # examples buffered before each Arrow write (bounds memory for 640 x 480 depth maps)


def nyu10_class(scene: str) -> str:
    """The 10-class protocol name of a raw NYU Depth v2 scene type (``"others"`` outside the nine kept ones)."""
    return scene if scene in NYU10_CLASSES else "others"


def rgbd_features(class_names: Sequence[str]):
    """``datasets.Features`` of the loaders: ``image``, ``depth`` (H, W) float32 of any size, ``label``,
    ``intrinsics`` (3, 3) and ``scene``.

    ``depth`` is ``List(List(float32))``: ``datasets.Array2D`` only allows a dynamic first dimension, and this type
    reads back as (H, W) float32 numpy arrays / tensors in the ``"numpy"`` / ``"torch"`` formats.
    """
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "depth": datasets.List(datasets.List(datasets.Value("float32"))),
            "label": datasets.ClassLabel(names=list(class_names)),
            "intrinsics": datasets.Array2D((3, 3), "float32"),
            "scene": datasets.Value("string"),
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# file readers: every error names the file


def _signature(path: Path) -> tuple[str, int, int]:
    """(path, size, mtime) of an existing file: part of the cache key, so a changed file is read again."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file.")
    return str(path), stat.st_size, stat.st_mtime_ns


def _encoded_image(path: Path) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes, checked to decode completely. Returns ``(bytes, (height, width))``."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.height, image.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path} is not a readable image (truncated or corrupt?): {err}") from None
    return data, size


def _png_uint16(path: Path) -> np.ndarray:
    """A single-channel 16-bit PNG as (H, W) uint16; other bit depths or modes raise ``ValueError``."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            image.load()
            values = np.asarray(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path} is not a readable depth PNG (truncated or corrupt?): {err}") from None
    if mode not in ("I;16", "I;16B", "I;16L", "I") or values.ndim != 2:
        bits = "8-bit" if mode in ("L", "P", "1") else f"mode {mode!r}"
        raise ValueError(f"{path} is a {bits} image; expected a single-channel 16-bit depth PNG.")
    if values.size and (int(values.min()) < 0 or int(values.max()) > 0xFFFF):
        raise ValueError(f"{path} holds values outside [0, 65535]; expected a 16-bit depth PNG.")
    return values.astype(np.uint16)


def _depth_npy(path: Path) -> np.ndarray:
    """An (H, W) float ``.npy`` of metres; non-finite values become holes (0)."""
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npy file (truncated or corrupt?): {err}") from None
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
        raise ValueError(
            f"{path} holds a {values.dtype} array of shape {values.shape}; expected (H, W) float depth in metres."
        )
    values = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
    if (values < 0).any():
        raise ValueError(f"{path} holds negative depths; expected metres >= 0 (0 = hole).")
    return values


def _read_matrix(path: Path) -> np.ndarray:
    """A 3x3 row-major camera matrix from a text file (9 numbers, any whitespace)."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path} must hold 9 numbers (a 3x3 row-major camera matrix).") from None
    if values.shape != (9,) or not np.isfinite(values).all():
        raise ValueError(f"{path} must hold 9 finite numbers (a 3x3 row-major camera matrix), got {values.size}.")
    return values.reshape(3, 3).astype(np.float32)


def _fov_intrinsics(height: int, width: int, fov_degrees: float = 60.0) -> np.ndarray:
    """Pinhole ``K`` with a horizontal field of view ``fov_degrees`` and the principal point at the centre."""
    f = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float32)


def _as_matrix(value: Any, name: str) -> np.ndarray:
    matrix = np.asarray(value, dtype=np.float32)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"`{name}` must be a finite (3, 3) camera matrix, got shape {matrix.shape}.")
    return matrix


# ----------------------------------------------------------------------------------------------------------------
# building splits


class _FileSample(NamedTuple):
    """One sample of a folder layout, as the generator receives it (picklable, hashed into the cache key)."""

    image: tuple[str, int, int]
    depth: tuple[str, int, int]
    depth_format: str  # "sunrgbd" (bit-rotated mm PNG), "png" (uint16 * depth_scale) or "npy" (metres)
    intrinsics: tuple[str, int, int] | tuple[float, ...] | None  # a file, 9 numbers, or None (60 degree FOV)
    label: int
    scene: str


def _file_examples(samples: list[_FileSample], depth_scale: float, max_depth: float | None) -> Iterator[dict]:
    for sample in samples:
        image_path, depth_path = Path(sample.image[0]), Path(sample.depth[0])
        data, size = _encoded_image(image_path)
        if sample.depth_format == "npy":
            depth = _depth_npy(depth_path)
        else:
            raw = _png_uint16(depth_path)
            if sample.depth_format == "sunrgbd":
                raw = decode_sunrgbd_depth(raw).numpy()
            depth = (raw.astype(np.float64) * depth_scale).astype(np.float32)
        if max_depth is not None:
            depth = np.minimum(depth, np.float32(max_depth))
        if depth.shape != size:
            raise ValueError(
                f"{depth_path} is {depth.shape[1]}x{depth.shape[0]} (width x height) but {image_path} is "
                f"{size[1]}x{size[0]}; expected an image and depth map of the same size."
            )
        if sample.intrinsics is None:
            intrinsics = _fov_intrinsics(*size)
        elif isinstance(sample.intrinsics[0], str):
            intrinsics = _read_matrix(Path(sample.intrinsics[0]))
        else:
            intrinsics = np.asarray(sample.intrinsics, dtype=np.float32).reshape(3, 3)
        yield {
            "image": {"bytes": data, "path": str(image_path)},
            "depth": depth,
            "label": sample.label,
            "intrinsics": intrinsics,
            "scene": sample.scene,
        }


def _loader_error(err: BaseException) -> BaseException | None:
    """The loader's own error (a ValueError / OSError naming the file) in the cause chain of ``err``, if any."""
    from datasets.exceptions import DatasetGenerationError

    cause = err.__cause__ or err.__context__
    while cause is not None and (
        isinstance(cause, DatasetGenerationError) or not isinstance(cause, (ValueError, OSError))
    ):
        cause = cause.__cause__ or cause.__context__
    return cause


def _build_split(
    generator: Any,
    gen_kwargs: dict[str, Any],
    class_names: Sequence[str],
    split: str,
    cache_dir: PathLike | None,
    num_proc: int | None,
):
    """One split through ``Dataset.from_generator``. On failure the loader's own error is raised instead of
    ``datasets``' generic ``DatasetGenerationError``; a worker process's error loses its cause on the way back, so
    the samples are then read again here (one at a time, nothing written) to raise it."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    rows = next(v for v in gen_kwargs.values() if isinstance(v, list))
    if num_proc is not None and num_proc > 1:
        num_proc = min(num_proc, max(len(rows), 1))
    try:
        return datasets.Dataset.from_generator(
            generator,
            features=rgbd_features(class_names),
            cache_dir=None if cache_dir is None else str(cache_dir),
            gen_kwargs=gen_kwargs,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            split=datasets.NamedSplit(split),
            writer_batch_size=_WRITER_BATCH_SIZE,
        )
    except DatasetGenerationError as err:
        cause = _loader_error(err)
        if cause is None:
            try:
                for _ in generator(**gen_kwargs):
                    pass
            except (ValueError, OSError) as found:
                cause = found
        if cause is None:
            raise
        raise cause.with_traceback(None) from None


def _class_names(
    classes: str | Sequence[str], found: Sequence[str], protocol: str, protocol_names: Sequence[str], source: str
) -> list[str]:
    """Resolve ``classes``: the protocol's names, ``"all"`` (every scene found, sorted) or the user's list."""
    if isinstance(classes, str):
        if classes == protocol:
            return list(protocol_names)
        if classes == "all":
            return sorted(set(found))
        raise ValueError(f"`classes` must be {protocol!r}, 'all' or a list of scene names, got {classes!r}.")
    names = [str(name) for name in classes]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"`classes` must be a non-empty list of distinct scene names, got {names!r}.")
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise ValueError(
            f"`classes` names scenes that no sample of {source} has: {unknown}; scenes found: {sorted(set(found))}."
        )
    return names


def _check_num_proc(num_proc: int | None) -> None:
    if num_proc is not None and (not isinstance(num_proc, int) or isinstance(num_proc, bool) or num_proc < 1):
        raise ValueError(f"`num_proc` must be None or an int >= 1, got {num_proc!r}.")


# ----------------------------------------------------------------------------------------------------------------
# NYU Depth v2


def _h5_array(f: Any, name: str, path: Path, ndim: int) -> Any:
    import h5py

    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise ValueError(f"{path} has no array {name!r}; expected the NYU Depth v2 labeled .mat (keys: {sorted(f)}).")
    array = f[name]
    if array.ndim != ndim:
        raise ValueError(f"{path}: {name!r} has shape {array.shape}; expected {ndim} dimensions.")
    return array


def _nyu_scenes(f: Any, path: Path) -> list[str]:
    import h5py

    if "sceneTypes" not in f:
        raise ValueError(f"{path} has no array 'sceneTypes'; expected the NYU Depth v2 labeled .mat.")
    refs = np.asarray(f["sceneTypes"]).reshape(-1)
    scenes = []
    for index, ref in enumerate(refs):
        try:
            chars = np.asarray(f[ref]).reshape(-1)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: sceneTypes[{index}] is not a reference to a character array ({err}).") from None
        if not isinstance(ref, h5py.Reference) or not np.issubdtype(chars.dtype, np.integer):
            raise ValueError(f"{path}: sceneTypes[{index}] is not a reference to a uint16 character array.")
        scenes.append("".join(map(chr, chars.tolist())))
    return scenes


def _nyu_examples(
    indices: list[int], path: str, depth_key: str, labels: Mapping[str, int], signature: tuple
) -> Iterator[dict]:
    import h5py

    intrinsics = NYU_KINECT_INTRINSICS
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} cannot be read as a MATLAB v7.3 (HDF5) file: {err}") from None
    with f:
        scenes = _nyu_scenes(f, Path(path))
        for index in indices:
            try:
                rgb = np.ascontiguousarray(np.asarray(f["images"][index]).transpose(2, 1, 0))
                depth = np.asarray(f[depth_key][index], dtype=np.float32).T
            except (OSError, ValueError) as err:
                raise ValueError(f"{path}: sample {index + 1} cannot be read (truncated file?): {err}") from None
            buffer = io.BytesIO()
            Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
            scene = scenes[index]
            yield {
                "image": {"bytes": buffer.getvalue(), "path": None},
                "depth": np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32),
                "label": labels[scene] if scene in labels else labels[nyu10_class(scene)],
                "intrinsics": intrinsics,
                "scene": scene,
            }


def _nyu_splits(splits_path: Path, num_samples: int) -> dict[str, list[int]]:
    import scipy.io

    _signature(splits_path)
    try:
        mat = scipy.io.loadmat(str(splits_path))
    except (OSError, ValueError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as err:
        raise ValueError(f"{splits_path} cannot be read as a MATLAB v5 splits.mat: {err}") from None
    splits = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        if key not in mat:
            raise ValueError(f"{splits_path} has no array {key!r}; expected 'trainNdxs' and 'testNdxs' (1-based).")
        values = np.asarray(mat[key]).reshape(-1)
        if values.size and (not np.all(values == np.round(values)) or values.min() < 1 or values.max() > num_samples):
            raise ValueError(
                f"{splits_path}: {key!r} names samples outside 1..{num_samples} (the labeled .mat holds "
                f"{num_samples}); expected 1-based indices of existing samples."
            )
        splits[split] = [int(v) - 1 for v in values]
    return splits


def load_nyuv2(
    path: PathLike,
    splits_path: PathLike | None = None,
    depth: str = "raw",
    classes: str | Sequence[str] = "nyu10",
    cache_dir: PathLike | None = None,
    num_proc: int | None = None,
):
    """Load the NYU Depth v2 labeled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5) for scene classification.

    Args:
        path: the labeled ``.mat``: ``images`` (N, 3, W, H) uint8, ``depths`` / ``rawDepths`` (N, W, H) float32
            metres (MATLAB's transposed storage) and ``sceneTypes`` (1, N) references to uint16 character arrays.
        splits_path: the official ``splits.mat`` (MATLAB v5, 1-based ``trainNdxs`` / ``testNdxs``) giving the
            ``train`` and ``test`` splits; ``None`` puts every sample in ``train``.
        depth: ``"raw"`` (``rawDepths``, sensor holes as 0) or ``"filled"`` (``depths``, inpainted).
        classes: ``"nyu10"`` (the 10-class protocol, other scene types as ``others``), ``"all"`` (every scene type
            found) or a list of scene types (samples of other types are dropped).
        cache_dir: where ``datasets`` writes the Arrow files (default: its cache).
        num_proc: processes writing each split.

    Returns:
        ``DatasetDict`` with the columns of :func:`rgbd_features`: ``image`` (H, W) RGB, ``depth`` (H, W) float32
        metres, ``label``, ``intrinsics`` (3, 3) = :data:`NYU_KINECT_INTRINSICS` (the file has none) and ``scene``.
    """
    import datasets
    import h5py

    if depth not in ("raw", "filled"):
        raise ValueError(f"`depth` must be 'raw' or 'filled', got {depth!r}.")
    _check_num_proc(num_proc)
    path = Path(path)
    signature = _signature(path)
    depth_key = "rawDepths" if depth == "raw" else "depths"
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path} cannot be read as a MATLAB v7.3 (HDF5) file (truncated or not v7.3?): {err}"
        ) from None
    with f:
        images = _h5_array(f, "images", path, 4)
        depths = _h5_array(f, depth_key, path, 3)
        n, channels, width, height = images.shape
        if channels != 3:
            raise ValueError(f"{path}: 'images' has shape {images.shape}; expected (N, 3, W, H).")
        if depths.shape != (n, width, height):
            raise ValueError(
                f"{path}: {depth_key!r} has shape {depths.shape} but 'images' {images.shape}; expected an image and "
                f"depth map of the same size, ({n}, {width}, {height})."
            )
        scenes = _nyu_scenes(f, path)
    if len(scenes) != n:
        raise ValueError(f"{path}: 'sceneTypes' holds {len(scenes)} entries; expected one per image ({n}).")
    unknown = sorted(set(scenes) - set(NYU_SCENE_TYPES))
    if unknown:
        raise ValueError(
            f"{path} holds unknown scene types {unknown}; expected NYU Depth v2 scene types {list(NYU_SCENE_TYPES)}."
        )
    names = _class_names(classes, scenes, "nyu10", NYU10_CLASSES, str(path))
    labels = {name: i for i, name in enumerate(names)}
    splits = {"train": list(range(n))} if splits_path is None else _nyu_splits(Path(splits_path), n)
    result = {}
    for split, indices in splits.items():
        kept = [i for i in indices if classes in ("nyu10", "all") or scenes[i] in labels]
        gen_kwargs = {
            "indices": kept,
            "path": str(path),
            "depth_key": depth_key,
            "labels": labels,
            "signature": signature,
        }
        result[split] = _build_split(_nyu_examples, gen_kwargs, names, split, cache_dir, num_proc)
    return datasets.DatasetDict(result)


# ----------------------------------------------------------------------------------------------------------------
# SUN RGB-D


def _single_file(folder: Path, suffixes: tuple[str, ...], what: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; expected a folder with the sample's {what}.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if len(files) != 1:
        raise FileNotFoundError(f"{folder} holds {len(files)} {'/'.join(suffixes)} files; expected one ({what}).")
    return files[0]


def _sunrgbd_sample_folders(root: Path) -> list[Path]:
    """Every folder below ``root`` holding ``image/`` and ``intrinsics.txt`` (not descending into samples)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if "image" in subfolders and "intrinsics.txt" in files:
            found.append(Path(folder))
            subfolders[:] = []
        else:
            subfolders.sort()
    return sorted(found)


def _split_entries(name: str, value: PathLike | Sequence[str]) -> tuple[list[str], str]:
    """Entries of one split (a text file with one sample folder per line, or a list) and how to name its source."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"split {name!r}: {path} does not exist; expected a list of sample folders.")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()], str(path)
    return [str(v) for v in value], f"split {name!r}"


def _relative_sample(entry: str) -> str:
    """A split entry as a path relative to the SUN RGB-D root (absolute paths are cut after ``SUNRGBD/``)."""
    entry = entry.replace("\\", "/").rstrip("/")
    if "SUNRGBD/" in entry:
        entry = entry.split("SUNRGBD/", 1)[1]
    return entry.lstrip("/")


def load_sunrgbd(
    root: PathLike,
    splits: Mapping[str, PathLike | Sequence[str]] | None = None,
    depth: str = "raw",
    classes: str | Sequence[str] = "sunrgbd19",
    max_depth: float = 8.0,
    cache_dir: PathLike | None = None,
    num_proc: int | None = None,
):
    """Load SUN RGB-D sample folders for scene classification.

    A sample is any folder below ``root`` with ``image/*.jpg``, ``depth/*.png`` (raw) and ``depth_bfx/*.png``
    (filled), ``intrinsics.txt`` (3x3 row-major) and ``scene.txt``. Depth PNGs hold uint16 millimetres rotated left
    by 3 bits; they are decoded to metres and capped at ``max_depth`` (the toolbox's 8 m).

    Args:
        root: the SUN RGB-D folder (e.g. ``.../SUNRGBD``).
        splits: ``{split name: sample folders}``, each a list or a text file with one folder per line, relative to
            ``root`` or absolute with a ``SUNRGBD/`` component (as the official lists write them). ``None`` puts
            every sample in ``train``.
        depth: ``"raw"`` (``depth/``) or ``"filled"`` (``depth_bfx/``).
        classes: ``"sunrgbd19"`` (the 19-class protocol; other scenes dropped), ``"all"`` (every scene found) or a
            list of scene names (other scenes dropped; a name no sample has is an error).
        max_depth: cap in metres (``None``: no cap).
        cache_dir, num_proc: passed to ``datasets.Dataset.from_generator``.

    Returns:
        ``DatasetDict`` with the columns of :func:`rgbd_features`.
    """
    import datasets

    if depth not in ("raw", "filled"):
        raise ValueError(f"`depth` must be 'raw' or 'filled', got {depth!r}.")
    _check_num_proc(num_proc)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; expected the SUN RGB-D folder.")
    folders = _sunrgbd_sample_folders(root)
    if not folders:
        raise FileNotFoundError(f"{root} holds no SUN RGB-D sample folder (with image/ and intrinsics.txt).")
    scenes = {}
    for folder in folders:
        scene_file = folder / "scene.txt"
        if not scene_file.is_file():
            raise FileNotFoundError(f"{scene_file} does not exist; expected the sample's scene name.")
        scene = scene_file.read_text().strip()
        if not scene or len(scene.split()) != 1:
            raise ValueError(f"{scene_file} holds {scene!r}; expected one scene name such as 'bedroom'.")
        scenes[folder] = scene
    names = _class_names(classes, list(scenes.values()), "sunrgbd19", SUNRGBD19_CLASSES, str(root))
    labels = {name: i for i, name in enumerate(names)}
    by_relative = {folder.relative_to(root).as_posix(): folder for folder in folders}
    if splits is None:
        split_folders = {"train": folders}
    else:
        split_folders = {}
        for split, value in splits.items():
            entries, source = _split_entries(split, value)
            absent = [e for e in entries if _relative_sample(e) not in by_relative]
            if absent:
                raise FileNotFoundError(
                    f"{source} names {len(absent)} sample folder(s) absent from {root}, e.g. {absent[:3]}; expected "
                    "folders (relative to root) with image/ and intrinsics.txt."
                )
            split_folders[split] = [by_relative[_relative_sample(e)] for e in entries]
    depth_folder = "depth" if depth == "raw" else "depth_bfx"
    result = {}
    for split, members in split_folders.items():
        samples = []
        for folder in members:
            if scenes[folder] not in labels:
                continue
            image = _single_file(folder / "image", (".jpg", ".jpeg", ".png"), "RGB image")
            depth_png = _single_file(folder / depth_folder, (".png",), "depth PNG")
            samples.append(
                _FileSample(
                    _signature(image),
                    _signature(depth_png),
                    "sunrgbd",
                    _signature(folder / "intrinsics.txt"),
                    labels[scenes[folder]],
                    scenes[folder],
                )
            )
        gen_kwargs = {"samples": samples, "depth_scale": 0.001, "max_depth": max_depth}
        result[split] = _build_split(_file_examples, gen_kwargs, names, split, cache_dir, num_proc)
    return datasets.DatasetDict(result)


# ----------------------------------------------------------------------------------------------------------------
# plain folders


def _read_label_file(path: Path) -> dict[str, str]:
    """``name<comma or whitespace>label`` lines (a header line ``name,label`` is skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a labels file with lines 'name,label'.")
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in (line.split(",") if "," in line else line.split())]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}, line {number}: {line!r}; expected 'name,label'.")
        if number == 1 and parts == ["name", "label"]:
            continue
        labels[Path(parts[0]).with_suffix("").as_posix() if Path(parts[0]).suffix else parts[0]] = parts[1]
    return labels


def _folder_samples(split_root: Path) -> list[tuple[str, Path, Path, str]]:
    """``(name, rgb file, depth file, depth format)`` for every RGB file below ``split_root/rgb``."""
    rgb_root, depth_root = split_root / "rgb", split_root / "depth"
    if not depth_root.is_dir():
        raise FileNotFoundError(f"{depth_root} does not exist; expected depth/ beside {rgb_root}.")
    found = []
    for rgb in sorted(p for p in rgb_root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES):
        name = rgb.relative_to(rgb_root).with_suffix("").as_posix()
        candidates = [depth_root / f"{name}{suffix}" for suffix in (".png", ".npy")]
        present = [c for c in candidates if c.is_file()]
        if len(present) != 1:
            what = "none" if not present else "both"
            raise FileNotFoundError(
                f"{rgb} has {what} of {candidates[0]} / {candidates[1]}; expected exactly one depth file."
            )
        found.append((name, rgb, present[0], present[0].suffix[1:]))
    if not found:
        raise FileNotFoundError(f"{rgb_root} holds no .png / .jpg images.")
    return found


def load_rgbd_folder(
    root: PathLike,
    depth_scale: float = 0.001,
    labels: PathLike | None = None,
    classes: Sequence[str] | None = None,
    intrinsics: Any = None,
    max_depth: float | None = None,
    cache_dir: PathLike | None = None,
    num_proc: int | None = None,
):
    """Load a folder of RGB-D pairs: ``rgb/NAME.png|jpg`` and ``depth/NAME.png`` (uint16, metres =
    value * ``depth_scale``) or ``depth/NAME.npy`` ((H, W) float metres).

    Splits: ``root/rgb`` + ``root/depth`` is one ``train`` split; otherwise every subfolder of ``root`` holding
    ``rgb/`` is a split named after it (``train/``, ``test/``, ...). Labels come from a file (``labels``: lines
    ``name,label``, ``name`` the path below ``rgb/`` without extension) or, without one, from class subfolders
    (``rgb/CLASS/NAME.png`` with ``depth/CLASS/NAME.png``). ``scene`` holds the label name.

    Args:
        root: the folder.
        depth_scale: metres per unit of 16-bit depth PNGs (0.001 for millimetres).
        labels: a labels file for every split (``None``: class subfolders).
        classes: class names in label order (default: every label found, sorted); a label outside it is an error.
        intrinsics: a (3, 3) camera matrix for every image; ``None`` reads ``intrinsics.txt`` in the split folder or
            ``root`` (3x3 row-major) and, without one, uses a pinhole with a 60 degree horizontal field of view.
        max_depth: optional cap in metres.
        cache_dir, num_proc: passed to ``datasets.Dataset.from_generator``.
    """
    import datasets

    _check_num_proc(num_proc)
    if not (isinstance(depth_scale, (int, float)) and math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"`depth_scale` must be a positive number (metres per unit), got {depth_scale!r}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; expected a folder with rgb/ and depth/.")
    if (root / "rgb").is_dir():
        split_roots = {"train": root}
    else:
        split_roots = {p.name: p for p in sorted(root.iterdir()) if (p / "rgb").is_dir()}
        if not split_roots:
            raise FileNotFoundError(f"{root} holds neither rgb/ nor split folders with rgb/ (e.g. train/rgb/).")
    label_map = None if labels is None else _read_label_file(Path(labels))
    fixed = None if intrinsics is None else tuple(_as_matrix(intrinsics, "intrinsics").reshape(-1).tolist())
    per_split = {}
    for split, split_root in split_roots.items():
        rows = []
        for name, rgb, depth_file, depth_format in _folder_samples(split_root):
            if label_map is not None:
                if name not in label_map:
                    raise ValueError(f"{labels} has no label for {name!r} ({rgb}); expected a line '{name},LABEL'.")
                scene = label_map[name]
            elif "/" in name:
                scene = name.split("/", 1)[0]
            else:
                raise ValueError(
                    f"{rgb} is not in a class subfolder and no `labels` file was given; expected rgb/CLASS/NAME or "
                    "a labels file with lines 'name,label'."
                )
            rows.append((rgb, depth_file, depth_format, scene))
        per_split[split] = (split_root, rows)
    found = sorted({row[3] for _, rows in per_split.values() for row in rows})
    if classes is None:
        names = found
    else:
        names = [str(c) for c in classes]
        unknown = sorted(set(found) - set(names))
        if unknown:
            source = labels if labels is not None else f"{root} (class subfolders)"
            raise ValueError(f"{source} has labels {unknown} outside `classes` {names}.")
    label_ids = {name: i for i, name in enumerate(names)}
    result = {}
    for split, (split_root, rows) in per_split.items():
        k = fixed
        if k is None:
            for candidate in (split_root / "intrinsics.txt", root / "intrinsics.txt"):
                if candidate.is_file():
                    _read_matrix(candidate)
                    k = _signature(candidate)
                    break
        samples = [
            _FileSample(_signature(rgb), _signature(depth_file), depth_format, k, label_ids[scene], scene)
            for rgb, depth_file, depth_format, scene in rows
        ]
        gen_kwargs = {"samples": samples, "depth_scale": float(depth_scale), "max_depth": max_depth}
        result[split] = _build_split(_file_examples, gen_kwargs, names, split, cache_dir, num_proc)
    return datasets.DatasetDict(result)
