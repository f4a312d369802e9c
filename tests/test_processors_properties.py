"""Property-based tests: random shapes, dtypes and hole patterns give a correct output or a ValueError."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MIN_DEPTH, MAX_DEPTH = 0.2, 8.0
DEPTH_DTYPES = ["uint8", "uint16", "int32", "int64", "float32", "float64"]


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
    container = draw(st.sampled_from(["numpy", "torch", "torch_1hw", "list"]))
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


@st.composite
def image_cases(draw):
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = draw(st.sampled_from([3, 3, 3, 1, 4]))
    dtype = draw(st.sampled_from(["uint8", "float32", "float64"]))
    layout = draw(st.sampled_from(["numpy_hwc", "torch_chw", "torch_bchw"]))
    out_of_range = dtype != "uint8" and draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    else:
        image = rng.random((height, width, channels)).astype(dtype)
        if out_of_range:
            image.flat[0] = draw(st.sampled_from([-0.5, 1.5, np.nan, 255.0]))
    if layout == "numpy_hwc":
        inputs = image
    else:
        inputs = torch.from_numpy(image).permute(2, 0, 1)
        inputs = inputs[None] if layout == "torch_bchw" else inputs
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    return inputs, size, channels != 3, out_of_range


@SETTINGS
@given(image_cases())
def test_image_output_is_correct_or_value_error(case):
    inputs, size, bad_channels, out_of_range = case
    processor = RgbdImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=0.5, image_std=0.25)
    try:
        out = processor(inputs)["pixel_values"]
    except ValueError:
        assert bad_channels or out_of_range
        return
    assert not (bad_channels or out_of_range), "invalid images must be rejected"
    assert out.shape == (1, 3, *size) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    assert float(out.min()) >= (0 - 0.5) / 0.25 - 1e-5 and float(out.max()) <= (1 - 0.5) / 0.25 + 1e-5


def test_uint8_downscale_of_a_narrow_image_matches_the_float_resize():
    # found by hypothesis: torch's uint8 antialiased kernel asserted on this NCHW-contiguous (3, 2, 1) -> (1, 1) case
    image = torch.tensor([[[95], [217]], [[130], [207]], [[194], [235]]], dtype=torch.uint8)
    processor = RgbdImageProcessor(size={"height": 1, "width": 1}, image_mean=0.0, image_std=1.0)
    out = processor(image)["pixel_values"]
    expected = image.float().mean(dim=(1, 2)) / 255.0  # bilinear 2 -> 1 averages the two rows
    assert out.shape == (1, 3, 1, 1)
    torch.testing.assert_close(out.flatten(), expected, atol=1 / 255, rtol=0)
