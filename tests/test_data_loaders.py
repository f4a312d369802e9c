"""Loaders (NYU Depth v2, SUN RGB-D, plain folders), the RGB-D collator and transform, on tiny fixtures written in
the data sets' exact layouts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from torch.utils.data import DataLoader

from hf_rgbd.data import (
    NYU10_CLASSES,
    NYU_KINECT_INTRINSICS,
    SUNRGBD19_CLASSES,
    RgbdAugment,
    RgbdDataCollator,
    RgbdTransform,
    load_nyuv2,
    load_rgbd_folder,
    load_sunrgbd,
)
from hf_rgbd.data.loaders import _png_uint16
from hf_rgbd.processors import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------------------------
# fixture writers


def _rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _depth_mm(h: int, w: int) -> np.ndarray:
    mm = RNG.integers(300, 9000, (h, w)).astype(np.uint16)
    mm[0, :2] = 0  # holes
    return mm


def rotate_left3(mm: np.ndarray) -> np.ndarray:
    """SUN RGB-D's PNG encoding of millimetres (the inverse of the loader's decoding)."""
    mm = mm.astype(np.uint32)
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


def write_png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def write_nyu_mat(path: Path, images, depths, raw, scenes, skip: tuple[str, ...] = ()) -> None:
    """A labeled .mat as MATLAB v7.3 writes it: HDF5, arrays transposed, sceneTypes as references to uint16 chars."""
    n, h, w, _ = images.shape
    with h5py.File(path, "w", userblock_size=512) as f:
        arrays = {
            "images": images.transpose(0, 3, 2, 1),  # (N, 3, W, H)
            "depths": depths.transpose(0, 2, 1).astype(np.float32),
            "rawDepths": raw.transpose(0, 2, 1).astype(np.float32),
            "labels": np.zeros((n, w, h), np.uint16),
        }
        for name, value in arrays.items():
            if name not in skip:
                f.create_dataset(name, data=value)
        if "sceneTypes" not in skip:
            refs = f.create_group("#refs#")
            table = f.create_dataset("sceneTypes", (1, n), dtype=h5py.ref_dtype)
            for i, scene in enumerate(scenes):
                chars = refs.create_dataset(f"s{i}", data=np.array([ord(c) for c in scene], np.uint16)[:, None])
                table[0, i] = chars.ref


@pytest.fixture()
def nyu(tmp_path):
    n, h, w = 4, 6, 8
    images = np.stack([_rgb(h, w) for _ in range(n)])
    filled = RNG.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    raw = filled.copy()
    raw[:, 0, 0] = 0.0
    raw[:, 1, 1] = np.nan
    scenes = ["kitchen", "cafe", "bedroom", "study"]
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    write_nyu_mat(path, images, filled, raw, scenes)
    splits = tmp_path / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [3], [4]]), "testNdxs": np.array([[2]])})
    return {"path": path, "splits": splits, "images": images, "filled": filled, "raw": raw, "scenes": scenes}


def write_sun_sample(root: Path, rel: str, scene: str, h: int, w: int, k=None, jpg_quality: int = 95) -> dict:
    folder = root / rel
    name = Path(rel).name
    rgb, mm, filled = _rgb(h, w), _depth_mm(h, w), _depth_mm(h, w)
    (folder / "image").mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "image" / f"{name}.jpg", quality=jpg_quality)
    write_png16(folder / "depth" / f"{name}.png", rotate_left3(mm))
    write_png16(folder / "depth_bfx" / f"{name}.png", rotate_left3(filled))
    k = np.array([[500.0, 0, w / 2], [0, 510.0, h / 2], [0, 0, 1]]) if k is None else k
    (folder / "intrinsics.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in k) + "\n")
    (folder / "scene.txt").write_text(scene)
    return {"folder": folder, "mm": mm, "filled": filled, "k": k, "name": name}


@pytest.fixture()
def sun(tmp_path):
    root = tmp_path / "SUNRGBD"
    samples = {
        "kv1/NYUdata/NYU0001": write_sun_sample(root, "kv1/NYUdata/NYU0001", "bedroom", 6, 8),
        "kv2/kinect2data/000002": write_sun_sample(root, "kv2/kinect2data/000002", "office", 5, 7),
        "xtion/sun3d/000003": write_sun_sample(root, "xtion/sun3d/000003", "idk", 4, 4),
        "realsense/lg/000004": write_sun_sample(root, "realsense/lg/000004", "bedroom", 4, 6),
    }
    return root, samples


def sun_metres(mm: np.ndarray) -> np.ndarray:
    return np.minimum((mm.astype(np.float64) * 0.001).astype(np.float32), np.float32(8.0))


def no_arrow_files(cache: Path) -> bool:
    return not list(cache.rglob("*.arrow")) and not list(cache.rglob("*.incomplete"))


# ----------------------------------------------------------------------------------------------------------------
# bit rotation and 16-bit PNG reading


@settings(max_examples=25)
@given(hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6)))
def test_sunrgbd_bit_rotation_round_trips_through_png(mm):
    from hf_rgbd.processors import decode_sunrgbd_depth

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.png"
        write_png16(path, rotate_left3(mm))
        raw = _png_uint16(path)
    assert raw.dtype == np.uint16 and raw.shape == mm.shape
    np.testing.assert_array_equal(decode_sunrgbd_depth(raw).numpy(), mm.astype(np.int64))


@settings(max_examples=25)
@given(st.integers(0, 65535), st.sampled_from([0.001, 0.0001, 0.00025]))
def test_png_depth_scale_is_exact_within_quantisation(units, scale):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.png"
        write_png16(path, np.full((2, 3), units, np.uint16))
        raw = _png_uint16(path)
    metres = (raw.astype(np.float64) * scale).astype(np.float32)
    assert np.all(np.abs(metres.astype(np.float64) - units * scale) <= max(units * scale * 2**-23, 1e-12))


# ----------------------------------------------------------------------------------------------------------------
# NYU Depth v2


def test_nyuv2_values_splits_labels_and_intrinsics(nyu, tmp_path):
    ds = load_nyuv2(nyu["path"], nyu["splits"], depth="raw", cache_dir=tmp_path / "cache")
    assert sorted(ds) == ["test", "train"] and ds["train"].num_rows == 3 and ds["test"].num_rows == 1
    train = ds["train"].with_format("numpy")
    assert ds["train"].features["label"].names == list(NYU10_CLASSES)
    assert list(ds["train"]["scene"]) == ["kitchen", "bedroom", "study"]  # 1-based indices 1, 3, 4
    assert list(ds["test"]["scene"]) == ["cafe"]
    names = ds["train"].features["label"].names
    assert [names[i] for i in ds["train"]["label"]] == ["kitchen", "bedroom", "others"]
    for row, index in zip(train, [0, 2, 3], strict=True):
        np.testing.assert_array_equal(row["image"], nyu["images"][index])
        expected = np.nan_to_num(nyu["raw"][index], nan=0.0)
        np.testing.assert_array_equal(row["depth"], expected)
        assert row["depth"].dtype == np.float32 and row["depth"][0, 0] == 0 and row["depth"][1, 1] == 0
        np.testing.assert_array_equal(row["intrinsics"], NYU_KINECT_INTRINSICS)
    filled = load_nyuv2(nyu["path"], depth="filled", cache_dir=tmp_path / "cache")
    assert list(filled) == ["train"] and filled["train"].num_rows == 4
    np.testing.assert_array_equal(filled["train"].with_format("numpy")[1]["depth"], nyu["filled"][1])


def test_nyuv2_class_choices_and_num_proc(nyu, tmp_path):
    every = load_nyuv2(nyu["path"], classes="all", cache_dir=tmp_path / "c", num_proc=2)["train"]
    assert every.features["label"].names == ["bedroom", "cafe", "kitchen", "study"]
    assert sorted(every["scene"]) == sorted(nyu["scenes"])  # shards of both processes kept
    chosen = load_nyuv2(nyu["path"], classes=["study", "cafe"], cache_dir=tmp_path / "c")["train"]
    assert list(chosen["scene"]) == ["cafe", "study"] and list(chosen["label"]) == [1, 0]


# ----------------------------------------------------------------------------------------------------------------
# SUN RGB-D


def test_sunrgbd_depth_metres_holes_cap_intrinsics_and_protocol(sun, tmp_path):
    root, samples = sun
    ds = load_sunrgbd(root, cache_dir=tmp_path / "cache")["train"]
    assert ds.features["label"].names == list(SUNRGBD19_CLASSES)
    assert ds.num_rows == 3 and "idk" not in ds["scene"]  # outside the 19 classes: dropped
    numpy_rows = list(ds.with_format("numpy"))
    by_shape = {row["depth"].shape: row for row in numpy_rows}
    assert set(by_shape) == {(6, 8), (5, 7), (4, 6)}  # a different size per sample
    for rel in ("kv1/NYUdata/NYU0001", "kv2/kinect2data/000002", "realsense/lg/000004"):
        sample = samples[rel]
        row = by_shape[sample["mm"].shape]
        np.testing.assert_array_equal(row["depth"], sun_metres(sample["mm"]))
        assert row["depth"][0, 0] == 0 and row["depth"].max() <= 8.0
        assert (sample["mm"] > 8000).any() and (row["depth"] == 8.0).any()  # capped, not dropped
        np.testing.assert_allclose(row["intrinsics"], sample["k"], atol=1e-6)
        assert row["image"].shape == (*sample["mm"].shape, 3)
        assert ds.features["label"].names[row["label"]] == row["scene"]
    filled = load_sunrgbd(root, depth="filled", classes="all", cache_dir=tmp_path / "cache")["train"]
    assert filled.features["label"].names == ["bedroom", "idk", "office"] and filled.num_rows == 4
    first = filled.with_format("numpy")[0]
    np.testing.assert_array_equal(first["depth"], sun_metres(samples["kv1/NYUdata/NYU0001"]["filled"]))


def test_sunrgbd_split_lists_and_user_classes(sun, tmp_path):
    root, _ = sun
    train_list = tmp_path / "train.txt"
    train_list.write_text("/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001/\nrealsense/lg/000004\n")
    ds = load_sunrgbd(
        root,
        splits={"train": train_list, "test": ["kv2/kinect2data/000002", "xtion/sun3d/000003"]},
        classes=["office", "bedroom"],
        cache_dir=tmp_path / "cache",
    )
    assert ds["train"].num_rows == 2 and list(ds["train"]["label"]) == [1, 1]
    assert list(ds["test"]["scene"]) == ["office"]  # "idk" is not in the user's classes: dropped


# ----------------------------------------------------------------------------------------------------------------
# plain folders


def test_rgbd_folder_class_subfolders_png_and_npy(tmp_path):
    root = tmp_path / "mine"
    rgb_a, mm = _rgb(5, 6), _depth_mm(5, 6)
    rgb_b = _rgb(3, 4)
    metres = RNG.uniform(0.2, 3.0, (3, 4)).astype(np.float32)
    metres[0, 0] = np.nan
    (root / "rgb" / "cat").mkdir(parents=True)
    (root / "rgb" / "dog").mkdir(parents=True)
    (root / "depth" / "dog").mkdir(parents=True)
    Image.fromarray(rgb_a).save(root / "rgb" / "cat" / "a.png")
    write_png16(root / "depth" / "cat" / "a.png", mm)
    Image.fromarray(rgb_b).save(root / "rgb" / "dog" / "b.png")
    np.save(root / "depth" / "dog" / "b.npy", metres)
    ds = load_rgbd_folder(root, depth_scale=0.001, cache_dir=tmp_path / "cache")["train"]
    assert ds.features["label"].names == ["cat", "dog"] and list(ds["scene"]) == ["cat", "dog"]
    a, b = list(ds.with_format("numpy"))
    np.testing.assert_array_equal(a["image"], rgb_a)
    np.testing.assert_array_equal(a["depth"], (mm.astype(np.float64) * 0.001).astype(np.float32))
    assert a["depth"][0, 0] == 0
    np.testing.assert_array_equal(b["depth"], np.nan_to_num(metres, nan=0.0))
    np.testing.assert_allclose(b["intrinsics"][0, 2], 1.5)  # 60 degree default pinhole, centred
    np.testing.assert_allclose(b["intrinsics"][0, 0], 2.0 / np.tan(np.pi / 6), rtol=1e-6)


def test_rgbd_folder_labels_file_splits_and_intrinsics(tmp_path):
    root = tmp_path / "mine"
    for split, names in (("train", ["x", "y"]), ("test", ["z"])):
        for name in names:
            (root / split / "rgb").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(4, 4)).save(root / split / "rgb" / f"{name}.jpg")
            write_png16(root / split / "depth" / f"{name}.png", _depth_mm(4, 4))
    (root / "intrinsics.txt").write_text("100 0 2\n0 100 2\n0 0 1\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\nx,wet\ny,dry\nz,dry\n")
    ds = load_rgbd_folder(root, labels=labels, cache_dir=tmp_path / "cache")
    assert sorted(ds) == ["test", "train"]
    assert ds["train"].features["label"].names == ["dry", "wet"] and list(ds["train"]["label"]) == [1, 0]
    assert list(ds["test"]["scene"]) == ["dry"]
    np.testing.assert_array_equal(
        ds["test"].with_format("numpy")[0]["intrinsics"], [[100, 0, 2], [0, 100, 2], [0, 0, 1]]
    )
    fixed = load_rgbd_folder(root, labels=labels, intrinsics=np.eye(3), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(fixed["train"].with_format("numpy")[0]["intrinsics"], np.eye(3))


# ----------------------------------------------------------------------------------------------------------------
# collator and transform


def _processor(size: int = 8) -> RgbdProcessor:
    return RgbdProcessor(RgbdImageProcessor(size={"height": size, "width": size}), RgbdDepthProcessor())


def _check_batch(batch: dict, b: int, size: int = 8) -> None:
    assert set(batch) == {"pixel_values", "depth_values", "depth_mask", "labels"}
    assert batch["pixel_values"].shape == (b, 3, size, size) and batch["pixel_values"].dtype == torch.float32
    assert batch["depth_values"].shape == (b, 1, size, size) and batch["depth_values"].dtype == torch.float32
    assert batch["depth_mask"].shape == (b, 1, size, size) and batch["depth_mask"].dtype == torch.bool
    assert batch["labels"].shape == (b,) and batch["labels"].dtype == torch.long


def test_transform_and_collator_feed_a_dataloader_with_workers(sun, tmp_path):
    root, _ = sun
    split = load_sunrgbd(root, classes="all", cache_dir=tmp_path / "cache")["train"]  # sizes differ per sample
    transformed = split.with_transform(RgbdTransform(_processor()))
    loader = DataLoader(transformed, batch_size=2, num_workers=2, collate_fn=RgbdDataCollator())
    batches = list(loader)
    assert [b["labels"].tolist() for b in batches] == [list(split["label"][:2]), list(split["label"][2:])]
    for batch in batches:
        _check_batch(batch, 2)
    assert not batches[0]["depth_mask"].all()  # holes survive as False
    raw = DataLoader(
        split.with_format("numpy"), batch_size=4, num_workers=2, collate_fn=RgbdDataCollator(_processor())
    )
    (batch,) = list(raw)
    _check_batch(batch, 4)
    torch.testing.assert_close(batch["pixel_values"][:2], batches[0]["pixel_values"])
    python_rows = RgbdDataCollator(_processor())([split[0], split[1]])  # python format: PIL + nested lists
    torch.testing.assert_close(python_rows["depth_values"], batches[0]["depth_values"])
    from transformers import DefaultDataCollator

    default = DefaultDataCollator()([transformed[0], transformed[1]])
    torch.testing.assert_close(default["pixel_values"], batches[0]["pixel_values"])


def test_transform_with_augment_reseeds_per_worker(tmp_path):
    root = tmp_path / "same"
    rgb, mm = _rgb(12, 12), _depth_mm(12, 12)
    for i in range(4):
        (root / "rgb" / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "rgb" / "c" / f"{i}.png")
        write_png16(root / "depth" / "c" / f"{i}.png", mm)
    split = load_rgbd_folder(root, cache_dir=tmp_path / "cache")["train"]
    augment = RgbdAugment(output_size=10, crop_scale=(0.3, 0.6), p_flip=0.5, generator=0)
    transform = RgbdTransform(_processor(), augment=augment)
    loader = DataLoader(split.with_transform(transform), batch_size=1, num_workers=2, collate_fn=RgbdDataCollator())
    batches = list(loader)  # batches alternate workers 0, 1, 0, 1 on identical rows
    for batch in batches:
        _check_batch(batch, 1)
    assert not torch.equal(batches[0]["pixel_values"], batches[1]["pixel_values"])  # not the same stream


def test_collator_rejects_unstackable_rows_and_missing_processor():
    rows = [{"pixel_values": torch.zeros(3, 4, 4), "labels": 0}, {"pixel_values": torch.zeros(3, 5, 4), "labels": 1}]
    with pytest.raises(ValueError, match="different shapes"):
        RgbdDataCollator()(rows)
    with pytest.raises(ValueError, match="processor"):
        RgbdDataCollator()([{"image": np.zeros((4, 4, 3), np.uint8), "depth": np.ones((4, 4)), "label": 0}])


# ----------------------------------------------------------------------------------------------------------------
# bad input: clear errors naming the file, nothing half-written


def test_nyuv2_bad_inputs(nyu, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        load_nyuv2(tmp_path / "absent.mat", cache_dir=cache)
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(nyu["path"].read_bytes()[:3000])
    with pytest.raises(ValueError, match="truncated.mat"):
        load_nyuv2(truncated, cache_dir=cache)
    no_raw = tmp_path / "no_raw.mat"
    write_nyu_mat(no_raw, nyu["images"], nyu["filled"], nyu["raw"], nyu["scenes"], skip=("rawDepths",))
    with pytest.raises(ValueError, match=r"no_raw\.mat has no array 'rawDepths'"):
        load_nyuv2(no_raw, cache_dir=cache)
    assert load_nyuv2(no_raw, depth="filled", cache_dir=cache)["train"].num_rows == 4
    no_scenes = tmp_path / "no_scenes.mat"
    write_nyu_mat(no_scenes, nyu["images"], nyu["filled"], nyu["raw"], nyu["scenes"], skip=("sceneTypes",))
    with pytest.raises(ValueError, match=r"no_scenes\.mat has no array 'sceneTypes'"):
        load_nyuv2(no_scenes, cache_dir=cache)
    unknown = tmp_path / "unknown.mat"
    write_nyu_mat(unknown, nyu["images"], nyu["filled"], nyu["raw"], ["kitchen", "spaceship", "bedroom", "cafe"])
    with pytest.raises(ValueError, match=r"unknown\.mat holds unknown scene types \['spaceship'\]"):
        load_nyuv2(unknown, cache_dir=cache)
    mismatch = tmp_path / "mismatch.mat"
    write_nyu_mat(mismatch, nyu["images"], nyu["filled"], nyu["raw"][:, :5], nyu["scenes"])
    with pytest.raises(ValueError, match=r"mismatch\.mat: 'rawDepths' has shape .* same size"):
        load_nyuv2(mismatch, cache_dir=cache)
    bad_splits = tmp_path / "bad_splits.mat"
    scipy.io.savemat(bad_splits, {"trainNdxs": np.array([[1], [5]]), "testNdxs": np.array([[2]])})
    with pytest.raises(ValueError, match=r"bad_splits\.mat: 'trainNdxs' names samples outside 1\.\.4"):
        load_nyuv2(nyu["path"], bad_splits, cache_dir=cache)
    no_test = tmp_path / "no_test.mat"
    scipy.io.savemat(no_test, {"trainNdxs": np.array([[1]])})
    with pytest.raises(ValueError, match=r"no_test\.mat has no array 'testNdxs'"):
        load_nyuv2(nyu["path"], no_test, cache_dir=cache)
    not_mat = tmp_path / "not_mat.mat"
    not_mat.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not_mat.mat"):
        load_nyuv2(nyu["path"], not_mat, cache_dir=cache)
    with pytest.raises(ValueError, match="`depth`"):
        load_nyuv2(nyu["path"], depth="inpainted", cache_dir=cache)


def test_nyuv2_truncated_arrays_fail_while_writing_and_leave_no_cache(nyu, tmp_path):
    cache = tmp_path / "cache"
    path = tmp_path / "cut.mat"
    data = nyu["path"].read_bytes()
    with h5py.File(nyu["path"], "r") as f:  # cut inside the pixel data: headers read, samples do not
        offset = f["images"].id.get_offset()
    path.write_bytes(data[: offset + 50])
    with pytest.raises(ValueError, match="cut.mat"):
        load_nyuv2(path, cache_dir=cache)
    assert no_arrow_files(cache)


def test_sunrgbd_bad_inputs_name_the_file_and_leave_no_cache(sun, tmp_path):
    root, samples = sun
    cache = tmp_path / "cache"
    sample = samples["kv1/NYUdata/NYU0001"]
    depth_png = sample["folder"] / "depth" / "NYU0001.png"
    good = depth_png.read_bytes()

    depth_png.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"NYU0001\.png is not a readable depth PNG"):
        load_sunrgbd(root, cache_dir=cache)
    assert no_arrow_files(cache)

    Image.fromarray((sample["mm"] % 256).astype(np.uint8)).save(depth_png)  # 8-bit
    with pytest.raises(ValueError, match=r"NYU0001\.png is a 8-bit image; expected a single-channel 16-bit"):
        load_sunrgbd(root, cache_dir=cache)
    assert no_arrow_files(cache)

    write_png16(depth_png, rotate_left3(_depth_mm(5, 8)))  # wrong size
    with pytest.raises(ValueError, match=r"NYU0001\.png is 8x5 .*NYU0001\.jpg is 8x6"):
        load_sunrgbd(root, cache_dir=cache)
    assert no_arrow_files(cache)

    depth_png.write_bytes(good)  # fixed: a second call reads the files again, nothing stale is reused
    ds = load_sunrgbd(root, cache_dir=cache)["train"]
    np.testing.assert_array_equal(ds.with_format("numpy")[0]["depth"], sun_metres(sample["mm"]))

    jpg = sample["folder"] / "image" / "NYU0001.jpg"
    jpg_bytes = jpg.read_bytes()
    jpg.write_bytes(jpg_bytes[: len(jpg_bytes) // 2])
    with pytest.raises(ValueError, match=r"NYU0001\.jpg is not a readable image"):
        load_sunrgbd(root, cache_dir=cache)
    jpg.write_bytes(jpg_bytes)

    depth_png.unlink()
    with pytest.raises(FileNotFoundError, match=r"NYU0001/depth holds 0 \.png files"):
        load_sunrgbd(root, cache_dir=cache)
    write_png16(depth_png, rotate_left3(sample["mm"]))

    with pytest.raises(FileNotFoundError, match=r"list\.txt names 1 sample folder\(s\) absent .*kv9/missing"):
        (tmp_path / "list.txt").write_text("kv1/NYUdata/NYU0001\nkv9/missing\n")
        load_sunrgbd(root, splits={"train": tmp_path / "list.txt"}, cache_dir=cache)
    with pytest.raises(ValueError, match=r"no sample .* has: \['kitchn'\]"):
        load_sunrgbd(root, classes=["bedroom", "kitchn"], cache_dir=cache)
    (sample["folder"] / "intrinsics.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"NYU0001/intrinsics\.txt must hold 9 finite numbers"):
        load_sunrgbd(root, cache_dir=cache)
    (samples["xtion/sun3d/000003"]["folder"] / "scene.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"000003/scene\.txt does not exist"):
        load_sunrgbd(root, cache_dir=cache)


def test_rgbd_folder_bad_inputs(tmp_path):
    root = tmp_path / "mine"
    (root / "rgb" / "c").mkdir(parents=True)
    (root / "depth" / "c").mkdir(parents=True)
    Image.fromarray(_rgb(4, 4)).save(root / "rgb" / "c" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"a\.png has none of .*a\.png / .*a\.npy"):
        load_rgbd_folder(root, cache_dir=tmp_path / "cache")
    np.save(root / "depth" / "c" / "a.npy", np.ones((4, 4), np.int32))
    with pytest.raises(ValueError, match=r"a\.npy holds a int32 array .* float depth in metres"):
        load_rgbd_folder(root, cache_dir=tmp_path / "cache")
    np.save(root / "depth" / "c" / "a.npy", -np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"a\.npy holds negative depths"):
        load_rgbd_folder(root, cache_dir=tmp_path / "cache")
    np.save(root / "depth" / "c" / "a.npy", np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"mine \(class subfolders\) has labels \['c'\] outside `classes`"):
        load_rgbd_folder(root, classes=["d"], cache_dir=tmp_path / "cache")
    labels = tmp_path / "labels.txt"
    labels.write_text("b dog\n")
    with pytest.raises(ValueError, match=r"labels\.txt has no label for 'c/a'"):
        load_rgbd_folder(root, labels=labels, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_rgbd_folder(tmp_path / "nowhere")
    assert load_rgbd_folder(root, cache_dir=tmp_path / "cache")["train"].num_rows == 1


def test_trainer_evaluates_a_loaded_split_through_transform_and_collator(sun, tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification

    root, _ = sun
    split = load_sunrgbd(root, classes="all", cache_dir=tmp_path / "cache")["train"]
    torch.manual_seed(0)
    config = RgbdCnnConfig(fusion_type="multi_stage", embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=3)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        remove_unused_columns=False,
        per_device_eval_batch_size=3,
        dataloader_num_workers=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )

    def compute_metrics(eval_pred):  # the image-classification example's, unchanged
        predictions, labels = eval_pred
        return {"accuracy": float(np.mean(np.argmax(predictions, axis=1) == labels))}

    trainer = Trainer(
        model=RgbdCnnForImageClassification(config),
        args=args,
        eval_dataset=split.with_transform(RgbdTransform(_processor(16))),
        data_collator=RgbdDataCollator(),
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate()  # evaluation only: no training in this file
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])


def test_errors_from_worker_processes_and_changed_files(sun, tmp_path):
    root, samples = sun
    cache = tmp_path / "cache"
    depth_png = samples["kv2/kinect2data/000002"]["folder"] / "depth" / "000002.png"
    first = load_sunrgbd(root, cache_dir=cache, num_proc=2)["train"]
    assert first.num_rows == 3
    new_mm = _depth_mm(5, 7)
    write_png16(depth_png, rotate_left3(new_mm))  # a changed file is read again, not served from the cache
    again = load_sunrgbd(root, cache_dir=cache)["train"].with_format("numpy")
    np.testing.assert_array_equal(again[1]["depth"], sun_metres(new_mm))
    depth_png.write_bytes(depth_png.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"000002\.png is not a readable depth PNG"):
        load_sunrgbd(root, cache_dir=tmp_path / "cache2", num_proc=2)
    assert no_arrow_files(tmp_path / "cache2")
