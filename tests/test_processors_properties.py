"""Property-based tests: random shapes, dtypes and hole patterns give a correct output or a ValueError."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MIN_DEPTH, MAX_DEPTH = 0.2, 8.0
REPRESENTATIONS_TESTED = ("metric", "disparity", "log", "per_image", "dataset", "hha")
DEPTH_DTYPES = ["uint8", "uint16", "int32", "int64", "float16", "float32", "float64"]


def reference_indices(in_size: int, out_size: int) -> np.ndarray:
    return np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64), in_size - 1)


@st.composite
def depth_cases(draw):
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    out_h, out_w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    dtype = draw(st.sampled_from(DEPTH_DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        depth = rng.uniform(0.0, 10.0, (height, width)).astype(dtype)
        specials = [0.0, np.nan, np.inf, 9.5, 0.1]  # holes: zero, NaN, inf, beyond max, below min
    else:
        high = 255 if dtype == "uint8" else 9000
        depth = rng.integers(0, high, (height, width)).astype(dtype)
        specials = [0, high - 1]
    hole_fraction = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    holes = rng.random((height, width)) < hole_fraction
    depth[holes] = rng.choice(specials, size=int(holes.sum()))
    negative = draw(st.booleans()) and dtype not in ("uint8", "uint16")
    if negative:
        depth.flat[rng.integers(depth.size)] = -1
    container = draw(st.sampled_from(["numpy", "torch", "torch_1hw", "list", "nested_list", "flipped", "numpy_hw1"]))
    representation = draw(st.sampled_from(["metric", "log", "dataset", "per_image", "disparity"]))
    return depth, (out_h, out_w), container, representation, negative


@SETTINGS
@given(depth_cases())
def test_depth_output_is_correct_or_value_error(case):
    depth, output_size, container, representation, negative = case
    processor = RgbdDepthProcessor(
        representation=representation,
        min_depth=MIN_DEPTH,
        max_depth=MAX_DEPTH,
        depth_scale=0.001,
        depth_mean=3.0,
        depth_std=2.0,
    )
    height, width = depth.shape
    intrinsics = np.array([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]])
    inputs = {
        "numpy": depth,
        "torch": torch.from_numpy(depth),
        "torch_1hw": torch.from_numpy(depth)[None],
        "list": [depth],
        "nested_list": depth.tolist(),  # as `datasets` returns an Array2D column's row
        "flipped": np.fliplr(np.ascontiguousarray(np.fliplr(depth))),  # a negative-stride view of the same map
        "numpy_hw1": depth[..., None],
    }[container]
    try:
        out = processor(inputs, output_size=output_size, intrinsics=intrinsics, return_intrinsics=True)
    except ValueError as error:
        assert negative, f"unexpected ValueError: {error}"
        assert "negative" in str(error)
        return
    assert not negative, "negative depth must be rejected"

    values, mask = out["depth_values"], out["depth_mask"]
    assert values.shape == (1, 1, *output_size) and values.dtype == torch.float32
    assert mask.shape == (1, 1, *output_size) and mask.dtype == torch.bool
    assert bool(torch.isfinite(values).all())

    rows, cols = reference_indices(height, output_size[0]), reference_indices(width, output_size[1])
    source = depth[np.ix_(rows, cols)].astype(np.float64)
    metres = source if depth.dtype.kind == "f" else source * 0.001
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(metres) & (metres >= MIN_DEPTH) & (metres <= MAX_DEPTH)
    np.testing.assert_array_equal(mask[0, 0].numpy(), valid)
    got = values[0, 0].numpy()
    assert np.all(got[~valid] == 0)
    if not valid.any():
        return
    z = metres[valid]
    fx = float(out["intrinsics"][0, 0, 0])
    assert math.isclose(fx, 40.0 * output_size[1] / width, rel_tol=1e-5)
    expected = {
        "metric": z / MAX_DEPTH,
        "log": (np.log(z) - math.log(MIN_DEPTH)) / (math.log(MAX_DEPTH) - math.log(MIN_DEPTH)),
        "dataset": (z - 3.0) / 2.0,
        "disparity": 0.075 * fx / z,
        "per_image": (z - z.mean()) / max(z.std(), 1e-6),
    }[representation]
    np.testing.assert_allclose(got[valid], expected, rtol=2e-4, atol=2e-4)
    if representation != "per_image":  # the invertible ones: to_metres gives back the metres, 0 at holes
        metres_back = processor.to_metres(values, mask, out["intrinsics"])[0, 0].double().numpy()
        np.testing.assert_allclose(metres_back[valid], z, rtol=1e-4)
        assert np.all(metres_back[~valid] == 0)


IMAGE_DTYPES = ["uint8", "uint16", "int32", "float16", "float32", "float64", "bool"]
FULL_SCALE = {"uint8": 255, "uint16": 65535, "int32": 255}


def reference_rgb(image: np.ndarray, dtype: str) -> np.ndarray:
    """(H, W, C) input -> (3, H, W) float64 intensities in [0, 1]: grey replicated, RGBA composited onto white."""
    values = image.astype(np.float64) / FULL_SCALE.get(dtype, 1)
    if values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    elif values.shape[-1] == 4:
        alpha = values[..., 3:]
        values = values[..., :3] * alpha + (1 - alpha)
        if dtype in ("uint8", "int32"):  # 8-bit composites are rounded back to 8 bits
            values = np.round(values * 255) / 255
    return values.transpose(2, 0, 1)


@st.composite
def image_cases(draw):
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([3, 3, 1, 4, 2, None]))  # None: a 2-D (H, W) grey image
    dtype = draw(st.sampled_from(IMAGE_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype in FULL_SCALE:
        image = rng.integers(0, FULL_SCALE[dtype] + 1, shape).astype(dtype)
    elif dtype == "bool":
        image = rng.random(shape) < 0.5
    else:
        image = rng.random(shape).astype(dtype)
    bad_value = None
    if dtype.startswith("float") and draw(st.booleans()):
        bad_value = draw(st.sampled_from([-0.5, 1.5, np.nan, np.inf, 255.0]))
        image.flat[rng.integers(image.size)] = bad_value
    if dtype == "int32" and draw(st.booleans()):
        bad_value = draw(st.sampled_from([-1, 256, 65535]))
        image.flat[rng.integers(image.size)] = bad_value
    container = draw(st.sampled_from(["numpy", "numpy_chw", "torch_chw", "torch_bchw", "list", "nested", "flipped"]))
    hwc = image if channels is not None else image[..., None]
    inputs = {
        "numpy": image,
        "numpy_chw": np.ascontiguousarray(np.moveaxis(hwc, -1, 0)),
        "torch_chw": torch.from_numpy(np.ascontiguousarray(np.moveaxis(hwc, -1, 0))),
        "torch_bchw": torch.from_numpy(np.ascontiguousarray(np.moveaxis(hwc, -1, 0)))[None],
        "list": [image],
        "nested": image.tolist(),
        "flipped": np.flipud(np.ascontiguousarray(np.flipud(image))),  # negative strides
    }[container]
    if container == "nested" and dtype in ("float16", "uint16"):
        inputs = image  # nested lists hold Python numbers: their dtype is int64 or float64, not these
    exact = draw(st.booleans())
    size = (height, width) if exact else (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    # 2 channels are no image, but such an array is a valid one in the other layout when that axis is 1, 3 or 4 long
    other_axis = width if container in ("numpy_chw", "torch_chw", "torch_bchw") else height
    ambiguous = channels == 2 and other_axis in (1, 3, 4)
    # numpy prefers channels last: a (C, H, W) array whose W is 1, 3 or 4 is read as (H, W, C)
    ambiguous |= container == "numpy_chw" and width in (1, 3, 4)
    return inputs, hwc, dtype, size, exact, channels == 2, bad_value, ambiguous


@SETTINGS
@given(image_cases())
def test_image_output_is_correct_or_value_error(case):
    inputs, hwc, dtype, size, exact, bad_channels, bad_value, ambiguous = case
    processor = RgbdImageProcessor(
        size={"height": size[0], "width": size[1]}, image_mean=0.5, image_std=0.25, resample=0
    )
    try:
        out = processor(inputs)["pixel_values"]
    except ValueError as error:
        assert "`images" in str(error), error
        assert bad_channels or bad_value is not None or dtype == "bool", f"unexpected: {error}"
        return
    assert not (bad_channels and not ambiguous or bad_value is not None or dtype == "bool"), "must be rejected"
    assert out.shape == (1, 3, *size) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    assert float(out.min()) >= (0 - 0.5) / 0.25 - 1e-5 and float(out.max()) <= (1 - 0.5) / 0.25 + 1e-5
    if exact and not ambiguous:  # identity geometry: the output is the input, as RGB intensities, normalised
        expected = (reference_rgb(hwc, dtype) - 0.5) / 0.25
        np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-3 * 4)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 10), st.integers(1, 10)), min_size=1, max_size=4), st.booleans())
def test_mixed_size_batches(sizes, exact):
    images = [np.full((h, w, 3), 128, np.uint8) for h, w in sizes]
    size = {"height": 4, "width": 5} if exact else {"shortest_edge": 4}
    try:
        out = RgbdImageProcessor(size=size, do_normalize=False)(images)["pixel_values"]
    except ValueError as error:
        assert not exact and "aspect ratios" in str(error)
        return
    assert out.shape[:2] == (len(sizes), 3)
    torch.testing.assert_close(out, torch.full_like(out, 128 / 255))


# ---------------------------------------------------------------------------------------------- settings
NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 0.5, 2, 1e300, -1e-300, math.nan, math.inf, -math.inf, 223.7, 1 / 255]),
    st.sampled_from([True, None, "0.5", "no", [0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, math.nan, 0.5]]),
)


def is_real(value) -> bool:
    """A number the processors accept: finite in float32 (their tensors' dtype)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and abs(value) <= float(np.finfo(np.float32).max)


def valid_channels(value, positive: bool) -> bool:
    values = value if isinstance(value, list) else [value]
    ok = (len(values) == 3 or not isinstance(value, list)) and all(is_real(v) for v in values)
    return ok and (not positive or all(v > 0 for v in values))


IMAGE_SETTINGS = {
    "do_resize": (st.sampled_from([True, False, 1, "no", None]), lambda v: isinstance(v, bool)),
    "size": (
        st.one_of(NUMBERS, st.sampled_from([{"height": 3, "width": 0}, {"shortest_edge": 4}, (2, 5), (2, 5.5)])),
        lambda v: (isinstance(v, int) and not isinstance(v, bool) and v > 0) or v in ({"shortest_edge": 4}, (2, 5)),
    ),
    "resample": (st.sampled_from([0, 1, 2, 3, 2.0, "bilinear", True]), lambda v: type(v) is int and v in (0, 2, 3)),
    "do_rescale": (st.sampled_from([True, False, 0, "yes"]), lambda v: isinstance(v, bool)),
    "rescale_factor": (NUMBERS, lambda v: is_real(v) and v > 0),
    "do_normalize": (st.sampled_from([True, False, "no", 1.0]), lambda v: isinstance(v, bool)),
    "image_mean": (NUMBERS, lambda v: valid_channels(v, positive=False)),
    "image_std": (NUMBERS, lambda v: valid_channels(v, positive=True)),
}


@SETTINGS
@given(
    st.fixed_dictionaries({}, optional={name: strategy for name, (strategy, _) in IMAGE_SETTINGS.items()}),
    st.booleans(),
)
def test_image_settings_give_finite_outputs_or_a_named_value_error(settings_, per_call):
    settings_ = {name: value for name, value in settings_.items() if value is not None}
    bad = {name for name, value in settings_.items() if not IMAGE_SETTINGS[name][1](value)}
    image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    try:
        if per_call:
            out = RgbdImageProcessor()(image, **settings_)["pixel_values"]
        else:
            out = RgbdImageProcessor(**settings_)(image)["pixel_values"]
    except ValueError as error:
        assert bad, f"valid settings rejected: {error}"
        assert any(f"`{name}" in str(error) for name in bad), error
        return
    assert not bad, f"invalid settings {bad} accepted"
    assert out.ndim == 4 and out.shape[:2] == (1, 3) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


DEPTH_SETTINGS = {
    "min_depth": (NUMBERS, lambda v: is_real(v) and v > 0),
    "max_depth": (NUMBERS, lambda v: is_real(v) and v > 0),
    "depth_scale": (NUMBERS, lambda v: is_real(v) and v > 0),
    "depth_mean": (NUMBERS, is_real),
    "depth_std": (NUMBERS, lambda v: is_real(v) and v > 0),
    "baseline": (NUMBERS, lambda v: is_real(v) and v > 0),
    "depth_vocab_size": (
        st.sampled_from([2, 1, 8, 8.0, 8.5, "8", True, math.inf]),
        lambda v: type(v) is int and v >= 2,
    ),
    "depth_encoding": (st.sampled_from(["plain", "sunrgbd", "kinect", 0]), lambda v: v in ("plain", "sunrgbd")),
    "representation": (
        st.sampled_from([*REPRESENTATIONS_TESTED, "inverse", 3]),
        lambda v: v in REPRESENTATIONS_TESTED,
    ),
}


@SETTINGS
@given(st.fixed_dictionaries({}, optional={name: strategy for name, (strategy, _) in DEPTH_SETTINGS.items()}))
def test_depth_settings_give_documented_outputs_or_a_named_value_error(settings_):
    settings_ = {name: value for name, value in settings_.items() if value is not None}
    settings_.setdefault("depth_mean", 1.0)
    settings_.setdefault("depth_std", 1.0)
    bad = {name for name, value in settings_.items() if not DEPTH_SETTINGS[name][1](value)}
    merged = {"min_depth": 0.1, "max_depth": 10.0, **settings_}
    low, high = merged["min_depth"], merged["max_depth"]
    inconsistent = is_real(low) and is_real(high) and not low < high
    depth = np.random.default_rng(0).integers(0, 5000, (8, 8)).astype(np.uint16)
    intrinsics = np.array([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]])
    try:
        processor = RgbdDepthProcessor(**settings_, depth_patch_size=4)
        out = processor(depth, intrinsics=intrinsics, return_intrinsics=True)
    except ValueError as error:
        assert bad or inconsistent, f"valid settings rejected: {error}"
        names = bad | ({"min_depth", "max_depth"} if inconsistent else set())
        assert any(f"`{name}" in str(error) for name in names), error
        return
    assert not (bad or inconsistent), f"invalid settings {bad} accepted"
    values, mask = out["depth_values"], out["depth_mask"]
    assert values.shape == (1, processor.num_channels, 8, 8) and mask.shape == (1, 1, 8, 8)
    assert bool(torch.isfinite(values).all()) and bool((values[:, :, ~mask[0, 0]] == 0).all())


def test_uint8_downscale_of_a_narrow_image_matches_the_float_resize():
    # found by hypothesis: torch's uint8 antialiased kernel asserted on this NCHW-contiguous (3, 2, 1) -> (1, 1) case
    image = torch.tensor([[[95], [217]], [[130], [207]], [[194], [235]]], dtype=torch.uint8)
    processor = RgbdImageProcessor(size={"height": 1, "width": 1}, image_mean=0.0, image_std=1.0)
    out = processor(image)["pixel_values"]
    expected = image.float().mean(dim=(1, 2)) / 255.0  # bilinear 2 -> 1 averages the two rows
    assert out.shape == (1, 3, 1, 1)
    torch.testing.assert_close(out.flatten(), expected, atol=1 / 255, rtol=0)


@SETTINGS
@given(
    st.tuples(st.integers(1, 16), st.integers(1, 16)),
    st.sampled_from([1, 2, 3]),
    st.booleans(),
    st.one_of(st.none(), st.tuples(st.integers(1, 12), st.integers(1, 12))),
    st.one_of(st.none(), st.tuples(st.integers(1, 12), st.integers(1, 12))),
    st.booleans(),
)
def test_rgbd_geometry_aligned_or_a_named_value_error(rgb_size, depth_divisor, same_aspect, size, crop, allow):
    """RGB and depth of any sizes, with per-call sizes and crops: depth follows the RGB output exactly, or the call
    names `allow_aspect_change` (different aspect ratios) or the setting that cannot be met."""
    from hf_rgbd import RgbdProcessor

    height, width = rgb_size
    depth_shape = (max(1, height // depth_divisor), max(1, width // depth_divisor))
    if not same_aspect:
        depth_shape = (depth_shape[0], depth_shape[1] + 1)
    aspect_differs = abs(depth_shape[1] / depth_shape[0] - width / height) > 0.01 * (width / height)
    kwargs = {} if size is None else {"size": {"height": size[0], "width": size[1]}}
    if crop is not None:
        kwargs.update(do_center_crop=True, crop_size={"height": crop[0], "width": crop[1]})
    processor = RgbdProcessor(RgbdImageProcessor(size=8), RgbdDepthProcessor())
    images = np.zeros((height, width, 3), np.uint8)
    depths = np.ones(depth_shape, np.float32)
    try:
        out = processor(images=images, depths=depths, allow_aspect_change=allow, **kwargs)
    except ValueError as error:
        message = str(error)
        assert ("allow_aspect_change" in message and aspect_differs and not allow) or "crop_size" in message, message
        return
    assert not aspect_differs or allow, "depth of another aspect ratio must be rejected unless allowed"
    assert out["depth_values"].shape[-2:] == out["pixel_values"].shape[-2:]
    assert bool(out["depth_mask"].all()) and bool((out["depth_values"] == 0.1).all())


@SETTINGS
@given(
    st.sampled_from(["bool", "complex64", "object", "str"]),
    st.sampled_from(["numpy", "list"]),
)
def test_non_numeric_depth_and_images_are_named_value_errors(dtype, container):
    array = np.zeros((3, 4), dtype=dtype) if dtype != "object" else np.array([[None] * 4] * 3)
    inputs = array if container == "numpy" else array.tolist()
    with pytest.raises(ValueError, match="`depths"):
        RgbdDepthProcessor()(inputs)
    with pytest.raises(ValueError, match="`images"):
        RgbdImageProcessor(size=2)(inputs)
