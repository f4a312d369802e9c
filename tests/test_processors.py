"""Processors: geometry, every depth representation, holes, sensor formats, save/load and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import hf_rgbd  # noqa: F401  (registers the Auto classes)
from hf_rgbd import RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
from hf_rgbd.processors import INVERTIBLE_REPRESENTATIONS, REPRESENTATIONS, decode_sunrgbd_depth, depth_token_ids
from hf_rgbd.processors.depth_processing_rgbd import DEPTH_REPRESENTATIONS

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]], dtype=np.float32)  # 64x48 image


def ramp_depth(height: int = 48, width: int = 64) -> np.ndarray:
    """Depth in metres that differs at every pixel, so nearest sampling can be traced back to its source."""
    rows, cols = np.mgrid[0:height, 0:width]
    return (0.5 + 0.001 * cols + 0.1 * rows).astype(np.float32)


def make_processor(size=(24, 32), **depth_kwargs) -> RgbdProcessor:
    return RgbdProcessor(
        RgbdImageProcessor(size={"height": size[0], "width": size[1]}), RgbdDepthProcessor(**depth_kwargs)
    )


# ---------------------------------------------------------------------------------------------- RGB
class TestImageProcessor:
    def test_known_values_uint8(self):
        image = np.full((10, 12, 3), 51, dtype=np.uint8)
        out = RgbdImageProcessor(size={"height": 5, "width": 6})(image)["pixel_values"]
        assert out.shape == (1, 3, 5, 6) and out.dtype == torch.float32
        torch.testing.assert_close(out, torch.full_like(out, (51 / 255 - 0.5) / 0.5))

    def test_mean_std_per_channel(self):
        image = np.zeros((4, 4, 3), dtype=np.uint8)
        image[..., 1] = 255
        processor = RgbdImageProcessor(size=4, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.25, 0.1])
        out = processor(image)["pixel_values"][0, :, 0, 0]
        torch.testing.assert_close(out, torch.tensor([-0.2, 3.2, -3.0]))

    def test_input_kinds_agree(self):
        rng = np.random.default_rng(0)
        hwc = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        processor = RgbdImageProcessor(size={"height": 15, "width": 20})
        reference = processor(hwc)["pixel_values"]
        chw = torch.from_numpy(hwc).permute(2, 0, 1)
        for inputs in (Image.fromarray(hwc), chw, chw[None], [hwc], hwc[None]):
            torch.testing.assert_close(processor(inputs)["pixel_values"], reference)
        # float [0, 1] goes through the float resize: equal up to the uint8 rounding of the fast path
        as_float = processor(hwc.astype(np.float32) / 255)["pixel_values"]
        torch.testing.assert_close(as_float, reference, atol=2 * 2 / 255, rtol=0)

    def test_identity_geometry_is_exact(self):
        hwc = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        out = RgbdImageProcessor(size=8, do_normalize=False)(hwc)["pixel_values"][0]
        torch.testing.assert_close(out, torch.from_numpy(hwc).permute(2, 0, 1).float() / 255)

    def test_shortest_edge_and_center_crop(self):
        processor = RgbdImageProcessor(size={"shortest_edge": 20}, do_center_crop=True, crop_size=16)
        out, plans = processor.preprocess_with_plans(np.zeros((40, 60, 3), np.uint8))
        assert out.shape == (1, 3, 16, 16)
        assert plans[0].resized == (20, 30) and plans[0].crop == (2, 7, 16, 16)

    def test_mixed_sizes_in_one_batch(self):
        images = [np.zeros((30, 40, 3), np.uint8), np.full((60, 80, 3), 255, np.uint8)]
        out = RgbdImageProcessor(size={"height": 6, "width": 8}, do_normalize=False)(images)["pixel_values"]
        assert out.shape == (2, 3, 6, 8)
        assert float(out[0].max()) == 0.0 and float(out[1].min()) == 1.0

    def test_return_numpy(self):
        out = RgbdImageProcessor(size=4)(np.zeros((8, 8, 3), np.uint8), return_tensors="np")["pixel_values"]
        assert isinstance(out, np.ndarray) and out.shape == (1, 3, 4, 4)

    @pytest.mark.parametrize(
        "bad, match",
        [
            (np.zeros((8, 8, 2), np.uint8), "colour channels"),  # grey (1) and RGBA (4) are accepted since issue 13
            (np.zeros(8, np.uint8), "shape"),
            (torch.zeros(5, 8, 8), "colour channels"),
            (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
            (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
            (np.full((8, 8, 3), 300, np.int32), r"\[0, 255\]"),
            ([], "empty batch"),
            ("image.png", "PIL image"),
        ],
    )
    def test_bad_images(self, bad, match):
        with pytest.raises(ValueError, match=match):
            RgbdImageProcessor(size=4)(bad)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="resample"):
            RgbdImageProcessor(resample=1)
        with pytest.raises(ValueError, match="image_std"):
            RgbdImageProcessor(image_std=[0.5, 0.0, 0.5])
        with pytest.raises(ValueError, match="size"):
            RgbdImageProcessor(size={"width": 3})

    @pytest.mark.parametrize("flag", ["do_resize", "do_center_crop", "do_rescale", "do_normalize"])
    def test_flags_must_be_bools(self, flag):
        with pytest.raises(ValueError, match=flag):
            RgbdImageProcessor(**{flag: "no"})
        with pytest.raises(ValueError, match=flag):
            RgbdImageProcessor(size=4)(np.zeros((8, 8, 3), np.uint8), **{flag: torch.tensor(True)})
        assert getattr(RgbdImageProcessor(**{flag: np.bool_(True)}), flag) is True


# ---------------------------------------------------------------------------------------------- depth
class TestRepresentations:
    def setup_method(self):
        self.depth = ramp_depth()
        self.depth[0, 0] = 0.0  # hole at the corner
        self.depth[10, 10] = np.nan
        self.depth[20, 20] = np.inf
        self.depth[30, 30] = 12.0  # beyond max_depth: a hole too
        self.valid = np.isfinite(self.depth) & (self.depth >= 0.1) & (self.depth <= 10.0)

    def process(self, **kwargs):
        processor = RgbdDepthProcessor(**kwargs)
        out = processor(self.depth, intrinsics=K, return_intrinsics=True)
        return processor, out

    def test_representation_names_come_from_the_table(self):
        assert REPRESENTATIONS == ("metric", "disparity", "log", "per_image", "dataset", "hha")
        assert INVERTIBLE_REPRESENTATIONS == ("metric", "disparity", "log", "dataset")
        assert all(RgbdDepthProcessor(representation=name, depth_mean=1.0, depth_std=1.0).num_channels
                   == DEPTH_REPRESENTATIONS[name].channels for name in REPRESENTATIONS)  # fmt: skip

    def test_mask_and_zero_at_holes(self):
        for representation in ("metric", "disparity", "log", "per_image", "dataset"):
            _, out = self.process(representation=representation, depth_mean=2.0, depth_std=1.5)
            mask = out["depth_mask"][0, 0].numpy()
            np.testing.assert_array_equal(mask, self.valid)
            assert bool((out["depth_values"][0, 0][~torch.from_numpy(self.valid)] == 0).all()), representation
            assert bool(torch.isfinite(out["depth_values"]).all())

    def test_metric(self):
        _, out = self.process(representation="metric", max_depth=8.0)
        expected = np.where(self.valid, self.depth / 8.0, 0.0)
        np.testing.assert_allclose(out["depth_values"][0, 0].numpy(), expected, rtol=1e-6)

    def test_disparity_uses_rescaled_fx(self):
        processor = make_processor(size=(24, 32), representation="disparity", baseline=0.1)
        out = processor(
            images=np.zeros((48, 64, 3), np.uint8), depths=ramp_depth(), intrinsics=K, return_intrinsics=True
        )
        fx = float(out["intrinsics"][0, 0, 0])
        assert fx == pytest.approx(25.0)  # halved with the image
        z = ramp_depth()[1::2, 1::2]  # what nearest sampling of a 2x downscale picks
        np.testing.assert_allclose(out["depth_values"][0, 0].numpy(), 0.1 * 25.0 / z, rtol=1e-6)

    def test_log(self):
        _, out = self.process(representation="log", min_depth=0.25, max_depth=4.0)
        valid = self.valid & (self.depth >= 0.25) & (self.depth <= 4.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_depth = np.log(self.depth)
        expected = np.where(valid, (log_depth - math.log(0.25)) / (math.log(4.0) - math.log(0.25)), 0.0)
        np.testing.assert_allclose(out["depth_values"][0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)

    def test_dataset(self):
        _, out = self.process(representation="dataset", depth_mean=2.5, depth_std=0.5)
        expected = np.where(self.valid, (self.depth - 2.5) / 0.5, 0.0)
        np.testing.assert_allclose(out["depth_values"][0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)

    def test_per_image(self):
        _, out = self.process(representation="per_image")
        values = out["depth_values"][0, 0].numpy()[self.valid]
        assert abs(values.mean()) < 1e-5 and abs(values.std() - 1.0) < 1e-4
        d = self.depth[self.valid]
        np.testing.assert_allclose(values, (d - d.mean()) / d.std(), rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("representation", ["metric", "disparity", "log", "dataset"])
    def test_round_trip_and_gradients(self, representation):
        processor, out = self.process(representation=representation, depth_mean=2.0, depth_std=1.5)
        values = out["depth_values"].double().requires_grad_(True)
        metres = processor.to_metres(values, out["depth_mask"], out["intrinsics"])
        expected = np.where(self.valid, self.depth, 0.0)
        np.testing.assert_allclose(metres.detach()[0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
        again = processor.from_metres(metres, out["depth_mask"], out["intrinsics"])
        torch.testing.assert_close(again, values)
        metres.sum().backward()
        assert bool(torch.isfinite(values.grad).all())
        assert bool((values.grad[~out["depth_mask"]] == 0).all())

    @pytest.mark.parametrize("representation, reason", [("per_image", "own mean"), ("hha", "gravity")])
    def test_not_invertible(self, representation, reason):
        processor = RgbdDepthProcessor(representation=representation)
        with pytest.raises(ValueError, match=reason):
            processor.to_metres(torch.ones(1, processor.num_channels, 4, 4))

    def test_maps_and_masks_are_checked(self):
        processor = RgbdDepthProcessor()
        metres = torch.ones(2, 1, 4, 4)
        for bad in (metres[0], metres.long(), np.ones((2, 1, 4, 4), np.float32)):
            with pytest.raises(ValueError, match="depth_m"):
                processor.from_metres(bad)
        for mask in (torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 3, dtype=torch.bool), torch.ones(1, 1, 4, 4) > 0):
            with pytest.raises(ValueError, match="depth_mask"):
                processor.from_metres(metres, mask)
            with pytest.raises(ValueError, match="depth_mask"):
                processor.to_metres(metres, mask)
        with pytest.raises(ValueError, match="intrinsics"):
            RgbdDepthProcessor(representation="disparity").from_metres(metres, intrinsics=torch.eye(3)[None])

    def test_disparity_and_hha_need_intrinsics(self):
        for representation in ("disparity", "hha"):
            with pytest.raises(ValueError, match="intrinsics"):
                RgbdDepthProcessor(representation=representation)(self.depth)

    def test_hha_shape_and_holes(self):
        _, out = self.process(representation="hha")
        values = out["depth_values"]
        assert values.shape == (1, 3, 48, 64)
        assert bool((values[:, :, ~torch.from_numpy(self.valid)] == 0).all())
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0


class TestGeometryAndHoles:
    def test_nearest_sampling_copies_source_pixels(self):
        depth = ramp_depth(48, 64)
        out = RgbdDepthProcessor(max_depth=100)(depth, output_size=(24, 32))
        np.testing.assert_allclose(out["depth_values"][0, 0].numpy() * 100, depth[1::2, 1::2], rtol=1e-6)

    @pytest.mark.parametrize("output_size", [(24, 32), (16, 16), (96, 128), (7, 9)])
    def test_corner_hole_stays_a_hole(self, output_size):
        depth = ramp_depth(48, 64)
        depth[:6, :8] = 0.0  # hole block at the top-left corner, 1/8 of each side
        depth[-6:, -8:] = np.nan  # and at the bottom-right corner
        out = RgbdDepthProcessor(max_depth=100)(depth, output_size=output_size)
        mask, values = out["depth_mask"][0, 0], out["depth_values"][0, 0]
        h, w = output_size
        assert not bool(mask[0, 0]) and not bool(mask[-1, -1])
        # every output pixel is valid exactly when the source pixel it samples is valid, with its exact value
        rows = np.minimum(((np.arange(h) + 0.5) * 48 / h).astype(int), 47)
        cols = np.minimum(((np.arange(w) + 0.5) * 64 / w).astype(int), 63)
        source = depth[np.ix_(rows, cols)]
        source_valid = np.isfinite(source) & (source > 0)
        np.testing.assert_array_equal(mask.numpy(), source_valid)
        np.testing.assert_allclose(values.numpy(), np.where(source_valid, source / 100, 0.0), rtol=1e-6)

    def test_depth_follows_rgb_crop_exactly(self):
        # RGB encodes the column index in red, depth encodes it in metres: after any resize + crop they agree.
        width, height = 80, 60
        cols = np.tile(np.arange(width), (height, 1))
        rgb = np.zeros((height, width, 3), np.uint8)
        rgb[..., 0] = (cols * 3).astype(np.uint8)
        depth = (1.0 + cols * 0.01).astype(np.float32)
        processor = RgbdProcessor(
            RgbdImageProcessor(
                size={"shortest_edge": 30}, do_center_crop=True, crop_size=24, resample=0, do_normalize=False
            ),
            RgbdDepthProcessor(max_depth=10.0),
        )
        out = processor(images=rgb, depths=depth)
        red_col = out["pixel_values"][0, 0] * 255 / 3
        depth_col = (out["depth_values"][0, 0] * 10.0 - 1.0) / 0.01
        torch.testing.assert_close(red_col, depth_col, atol=1e-3, rtol=0)

    def test_depth_at_lower_resolution_than_rgb(self):
        rgb = np.zeros((96, 128, 3), np.uint8)
        depth = ramp_depth(48, 64)
        out = make_processor(size=(24, 32))(images=rgb, depths=depth, intrinsics=K, return_intrinsics=True)
        assert out["depth_values"].shape == (1, 1, 24, 32)
        assert float(out["intrinsics"][0, 0, 0]) == pytest.approx(25.0)

    def test_intrinsics_back_project_the_same_plane(self):
        # A fronto-parallel plane tilted in x: z = 2 + 0.5 * X. Back-projection with the returned intrinsics must
        # land on the same plane after resize and crop.
        height, width = 48, 64
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        x_over_z = (u - K[0, 2]) / K[0, 0]
        z = 2.0 / (1.0 - 0.5 * x_over_z)
        processor = RgbdProcessor(
            RgbdImageProcessor(size={"shortest_edge": 30}, do_center_crop=True, crop_size=(24, 28)),
            RgbdDepthProcessor(max_depth=10.0),
        )
        out = processor(
            images=np.zeros((height, width, 3), np.uint8),
            depths=z.astype(np.float32),
            intrinsics=K,
            return_intrinsics=True,
        )
        k = out["intrinsics"][0].double().numpy()
        zz = out["depth_values"][0, 0].double().numpy() * 10.0
        vv, uu = np.mgrid[0:24, 0:28]
        x = (uu - k[0, 2]) / k[0, 0] * zz
        # nearest sampling picks source pixel centres, so the plane holds up to the half-pixel sampling offset
        np.testing.assert_allclose(zz, 2.0 + 0.5 * x, atol=0.03)

    def test_tokens(self):
        depth = np.full((32, 32), 2.0, np.float32)
        depth[:16, :16] = 0.0  # first patch all holes
        depth[:16, 16:] = np.where(np.arange(16)[None, :] % 2 == 0, 9.0, 0.5)  # median of {0.5, 9.0} halves
        processor = RgbdDepthProcessor(depth_vocab_size=8, depth_patch_size=16, min_depth=0.1, max_depth=10.0)
        out = processor(depth)
        ids = out["depth_token_ids"][0].tolist()
        bin_of = lambda z: int(math.floor((math.log(z) - math.log(0.1)) / (math.log(100.0)) * 8))  # noqa: E731
        assert ids == [-100, bin_of(0.5), bin_of(2.0), bin_of(2.0)]  # torch's nanmedian takes the lower median
        assert processor.model_input_names == ["depth_values", "depth_mask", "depth_token_ids"]

    def test_token_patch_size_must_divide(self):
        with pytest.raises(ValueError, match="depth_patch_size"):
            RgbdDepthProcessor(depth_vocab_size=8, depth_patch_size=16)(np.ones((24, 24), np.float32))
        with pytest.raises(ValueError, match="depth_patch_size"):
            depth_token_ids(torch.ones(1, 1, 10, 10), torch.ones(1, 1, 10, 10, dtype=torch.bool), 4, 3, 0.1, 10.0)


class TestSensorFormats:
    def test_integer_depth_with_both_scales(self):
        mm = np.array([[0, 500, 1234], [65535, 2000, 100]], dtype=np.uint16)
        out = RgbdDepthProcessor(max_depth=100.0)(mm)
        np.testing.assert_allclose(
            out["depth_values"][0, 0].numpy() * 100, [[0, 0.5, 1.234], [65.535, 2.0, 0.1]], rtol=1e-6
        )
        # RealSense units of 0.1 mm, set at construction or per call
        expected = [[0, 0.05, 0.1234], [6.5535, 0.2, 0.0]]
        for out in (
            RgbdDepthProcessor(depth_scale=0.0001, min_depth=0.02, max_depth=100.0)(mm),
            RgbdDepthProcessor(min_depth=0.02, max_depth=100.0)(mm, depth_scale=0.0001),
        ):
            np.testing.assert_allclose(out["depth_values"][0, 0].numpy() * 100, expected, rtol=1e-6, atol=1e-7)
            assert out["depth_mask"][0, 0].tolist() == [[False, True, True], [True, True, False]]

    def test_pil_images(self):
        mm = np.array([[1000, 0], [2500, 4000]], dtype=np.uint16)
        for image in (Image.fromarray(mm), Image.fromarray(mm.astype(np.int32)), Image.fromarray(mm / 1000.0)):
            assert image.mode in ("I;16", "I", "F")
            out = RgbdDepthProcessor(max_depth=10.0)(image)
            np.testing.assert_allclose(out["depth_values"][0, 0].numpy() * 10, mm / 1000.0, rtol=1e-6)
        with pytest.raises(ValueError, match="single-channel"):
            RgbdDepthProcessor()(Image.new("RGB", (4, 4)))

    def test_sunrgbd_png(self, tmp_path):
        mm = np.array([[0, 1500, 8000], [65535 >> 3, 700, 3210]], dtype=np.uint16)
        rotated = ((mm.astype(np.uint32) << 3) | (mm.astype(np.uint32) >> 13)) & 0xFFFF
        path = tmp_path / "depth.png"
        Image.fromarray(rotated.astype(np.uint16)).save(path)
        with Image.open(path) as png:
            out = RgbdDepthProcessor(depth_encoding="sunrgbd", max_depth=10.0)(png)
        np.testing.assert_array_equal(decode_sunrgbd_depth(rotated).numpy(), mm)
        metres = out["depth_values"][0, 0].numpy() * 10.0
        valid = (mm / 1000.0 >= 0.1) & (mm / 1000.0 <= 10.0)
        np.testing.assert_allclose(metres, np.where(valid, mm / 1000.0, 0.0), rtol=1e-6)
        with pytest.raises(ValueError, match="sunrgbd"):
            RgbdDepthProcessor(depth_encoding="sunrgbd")(np.ones((4, 4), np.float32))
        # the encoding for one call overrides the processor's setting, which stays as it was
        plain = RgbdDepthProcessor(max_depth=10.0)
        per_call = plain(rotated.astype(np.uint16), depth_encoding="sunrgbd")["depth_values"]
        torch.testing.assert_close(per_call, out["depth_values"])
        assert plain.depth_encoding is None
        pair = RgbdProcessor(RgbdImageProcessor(size={"height": 2, "width": 3}), plain)
        got = pair(images=np.zeros((2, 3, 3), np.uint8), depths=rotated.astype(np.uint16), depth_encoding="sunrgbd")
        torch.testing.assert_close(got["depth_values"], out["depth_values"])
        with pytest.raises(ValueError, match="depth_encoding"):
            plain(mm, depth_encoding="kinect")

    def test_torch_layouts(self):
        depth = torch.from_numpy(ramp_depth(8, 8))
        processor = RgbdDepthProcessor(max_depth=10.0)
        reference = processor(depth)["depth_values"]
        for inputs in (depth[None], depth[None, None], [depth, depth], torch.stack([depth, depth])[:, None]):
            out = processor(inputs)["depth_values"]
            assert out.shape[1:] == (1, 8, 8)
            torch.testing.assert_close(out[:1], reference)


# ---------------------------------------------------------------------------------------------- processor
class TestRgbdProcessor:
    def test_outputs(self):
        processor = make_processor(size=(16, 16), depth_vocab_size=32, depth_patch_size=8)
        rgb = [np.zeros((48, 64, 3), np.uint8)] * 3
        out = processor(images=rgb, depths=[ramp_depth()] * 3, allow_aspect_change=False)
        assert out["pixel_values"].shape == (3, 3, 16, 16)
        assert out["depth_values"].shape == (3, 1, 16, 16)
        assert out["depth_mask"].dtype == torch.bool and out["depth_mask"].shape == (3, 1, 16, 16)
        assert out["depth_token_ids"].shape == (3, 4) and out["depth_token_ids"].dtype == torch.long
        assert processor.model_input_names == ["pixel_values", "depth_values", "depth_mask", "depth_token_ids"]

    def test_single_modality(self):
        processor = make_processor(size=(12, 16))
        only_rgb = processor(images=np.zeros((48, 64, 3), np.uint8))
        assert set(only_rgb) == {"pixel_values"}
        only_depth = processor(depths=ramp_depth())
        assert set(only_depth) == {"depth_values", "depth_mask"} and only_depth["depth_values"].shape == (1, 1, 12, 16)

    def test_hha_has_three_channels(self):
        out = make_processor(representation="hha")(
            images=np.zeros((48, 64, 3), np.uint8), depths=ramp_depth(), intrinsics=K
        )
        assert out["depth_values"].shape == (1, 3, 24, 32)

    def test_save_load_auto_round_trip(self, tmp_path):
        processor = RgbdProcessor(
            RgbdImageProcessor(size={"height": 24, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=0.2),
            RgbdDepthProcessor(
                representation="dataset",
                depth_mean=2.0,
                depth_std=0.7,
                depth_scale=0.0001,
                min_depth=0.2,
                max_depth=6.0,
                depth_vocab_size=64,
                depth_patch_size=8,
            ),
        )
        processor.save_pretrained(tmp_path)
        for loaded in (RgbdProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
            assert type(loaded) is RgbdProcessor
            assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
            assert loaded.depth_image_processor.to_dict() == processor.depth_image_processor.to_dict()
            inputs = {"images": np.full((48, 64, 3), 77, np.uint8), "depths": (ramp_depth() * 1e4).astype(np.uint16)}
            expected, got = processor(**inputs), loaded(**inputs)
            assert set(expected) == set(got)
            for key in expected:
                torch.testing.assert_close(got[key], expected[key])
        image_processor = AutoImageProcessor.from_pretrained(tmp_path)
        assert type(image_processor) is RgbdImageProcessor and image_processor.image_mean == (0.4, 0.5, 0.6)

    def test_remote_code_load_without_hf_rgbd(self, tmp_path):
        processor = make_processor(size=(24, 32), representation="log", depth_vocab_size=16, depth_patch_size=8)
        processor.save_pretrained(tmp_path)
        inputs = {"images": np.full((48, 64, 3), 90, np.uint8), "depths": ramp_depth()}
        expected = processor(**inputs)
        np.savez(tmp_path / "inputs.npz", **inputs)
        script = textwrap.dedent(
            f"""
            import sys
            sys.modules["hf_rgbd"] = None  # hf_rgbd must not be importable in this process
            try:
                import hf_rgbd
                raise SystemExit("hf_rgbd is importable")
            except ImportError:
                pass
            import numpy as np, torch
            from transformers import AutoProcessor
            processor = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
            assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
            inputs = dict(np.load({str(tmp_path / "inputs.npz")!r}))
            out = processor(**inputs)
            torch.save({{k: v for k, v in out.items()}}, {str(tmp_path / "out.pt")!r})
            """
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        got = torch.load(tmp_path / "out.pt")
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"images": [np.zeros((48, 64, 3), np.uint8)] * 2, "depths": [ramp_depth()]}, "pair up"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "depths": ramp_depth(48, 48)}, "aspect ratio"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "depths": -ramp_depth()}, "negative"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "depths": np.zeros((48, 64, 3), np.float32)}, "shape"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "depths": np.zeros((2, 48, 64), np.float32)}, "shape"),
            ({"images": [], "depths": []}, "empty batch"),
            ({"depths": []}, "empty batch"),
            ({}, "images"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "intrinsics": K}, "depths"),
            ({"depths": ramp_depth(), "intrinsics": np.eye(4)}, "intrinsics"),
            ({"depths": [ramp_depth()] * 2, "intrinsics": [K] * 3}, "intrinsics"),
            ({"depths": np.zeros((48, 64), bool)}, "dtype"),
            ({"depths": ramp_depth(), "depth_scale": -1.0}, "depth_scale"),
            ({"depths": ramp_depth(), "intrinsics": np.zeros((3, 3))}, "focal lengths"),
            ({"depths": [ramp_depth()] * 2, "intrinsics": [K, np.eye(4)]}, "intrinsics"),
            ({"depths": ramp_depth(), "return_intrinsics": "yes"}, "return_intrinsics"),
            ({"images": np.zeros((48, 64, 3), np.uint8), "return_intrinsics": 1}, "return_intrinsics"),
            ({"depths": ramp_depth(), "allow_aspect_change": None}, "allow_aspect_change"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            make_processor()(**kwargs)

    def test_aspect_change_allowed_on_request(self):
        out = make_processor(size=(24, 32))(
            images=np.zeros((48, 64, 3), np.uint8), depths=ramp_depth(48, 48), allow_aspect_change=True
        )
        assert out["depth_values"].shape == (1, 1, 24, 32)

    def test_nan_and_inf_are_holes_not_errors(self):
        depth = np.full((48, 64), np.nan, np.float32)
        depth[0, :] = np.inf
        out = make_processor()(images=np.zeros((48, 64, 3), np.uint8), depths=depth)
        assert not bool(out["depth_mask"].any()) and bool((out["depth_values"] == 0).all())

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"representation": "inverse"}, "representation"),
            ({"representation": "dataset"}, "depth_mean"),
            ({"min_depth": 5.0, "max_depth": 1.0}, "min_depth"),
            ({"depth_encoding": "kinect"}, "depth_encoding"),
            ({"depth_vocab_size": 1}, "depth_vocab_size"),
            ({"depth_patch_size": 0}, "depth_patch_size"),
            ({"depth_scale": 0}, "depth_scale"),
            ({"baseline": 0}, "baseline"),
        ],
    )
    def test_bad_depth_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            RgbdDepthProcessor(**kwargs)

    def test_wrong_sub_processor_class(self):
        with pytest.raises(TypeError, match="image_processor"):
            RgbdProcessor(RgbdDepthProcessor(), RgbdDepthProcessor())

    def test_unknown_keyword(self):
        with pytest.raises(TypeError, match="represention"):
            make_processor()(depths=ramp_depth(), represention="log")


# ---------------------------------------------------------------------------------------------- issue 13: real inputs
class TestRealWorldInputs:
    def test_16_bit_rgb_is_not_saturated(self, tmp_path):
        processor = RgbdImageProcessor(size=4, do_normalize=False)
        half = np.full((4, 4, 3), 32768, np.uint16)
        torch.testing.assert_close(processor(half)["pixel_values"], torch.full((1, 3, 4, 4), 32768 / 65535))
        path = tmp_path / "grey16.png"
        Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(path)
        with Image.open(path) as png:
            assert png.mode == "I;16"
            torch.testing.assert_close(processor(png)["pixel_values"], torch.ones(1, 3, 4, 4))
        # rescale_factor is per 8-bit unit: a custom one scales 16-bit images alike
        out = RgbdImageProcessor(size=4, do_normalize=False, rescale_factor=2 / 255)(half)["pixel_values"]
        torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 2 * 32768 / 65535))

    @pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "1", "CMYK", "I", "F"])
    def test_pil_modes_match_transformers_convert_to_rgb(self, mode):
        from transformers.image_transforms import convert_to_rgb

        rng = np.random.default_rng(0)
        rgba = Image.fromarray(rng.integers(0, 256, (5, 6, 4), dtype=np.uint8))
        image = (
            rgba.convert(mode)
            if mode not in ("I", "F")
            else Image.fromarray(rng.integers(0, 256, (5, 6)).astype(np.int32))
        )
        if mode == "F":
            image = Image.fromarray(rng.random((5, 6)).astype(np.float32))
        processor = RgbdImageProcessor(size={"height": 5, "width": 6}, do_normalize=False)
        out = processor(image)["pixel_values"][0]
        if mode in ("I", "F"):  # transformers cannot convert these; grey replicated, integers / 255
            expected = np.asarray(image, dtype=np.float64)
            expected = np.repeat(expected[None] / (255.0 if mode == "I" else 1.0), 3, axis=0)
        else:
            expected = convert_to_rgb(image, return_numpy=True).transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
    def test_grey_and_rgba_arrays_match_transformers(self, dtype):
        from transformers.image_transforms import convert_to_rgb

        rng = np.random.default_rng(1)
        full = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
        processor = RgbdImageProcessor(size={"height": 5, "width": 6}, do_normalize=False)
        for channels in (1, 4):
            image = (rng.random((5, 6, channels)) * full).astype(dtype)
            # transformers composites every integer dtype as if 8-bit; 16-bit alpha is taken over 65535 here
            as_float = (image / full).astype(np.float32) if dtype == np.uint16 else image
            expected = convert_to_rgb(as_float, return_numpy=True).astype(np.float64) / (
                1 if dtype == np.uint16 else full
            )
            np.testing.assert_allclose(processor(image)["pixel_values"][0].numpy(), expected.transpose(2, 0, 1),
                                       atol=1 / 255 if dtype == np.uint16 else 1e-6)  # fmt: skip
            chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            torch.testing.assert_close(processor(chw)["pixel_values"], processor(image)["pixel_values"])
        grey = (rng.random((5, 6)) * full).astype(dtype)
        torch.testing.assert_close(processor(grey)["pixel_values"], processor(grey[..., None])["pixel_values"])

    def test_negative_strides_and_float_widths(self):
        rng = np.random.default_rng(2)
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        processor = RgbdImageProcessor(size={"height": 3, "width": 4})
        for view in (image[..., ::-1], np.fliplr(image), np.flipud(image)):
            torch.testing.assert_close(processor(view)["pixel_values"], processor(view.copy())["pixel_values"])
        as_float = image.astype(np.float64) / 255
        for dtype in (np.float16, np.float32, np.float64):
            out = processor(as_float.astype(dtype))["pixel_values"]
            torch.testing.assert_close(out, processor(as_float.astype(np.float32))["pixel_values"], atol=2e-3, rtol=0)
        depth = ramp_depth(6, 8)
        depth_processor = RgbdDepthProcessor()
        for view in (np.fliplr(depth), depth[::-1]):
            torch.testing.assert_close(
                depth_processor(view)["depth_values"], depth_processor(view.copy())["depth_values"]
            )
        out = depth_processor(depth.astype(np.float16))["depth_values"]
        torch.testing.assert_close(out, depth_processor(depth.astype(np.float16).astype(np.float32))["depth_values"])

    def test_nested_lists_as_datasets_returns_them(self):
        import datasets

        rng = np.random.default_rng(3)
        depth = ramp_depth(6, 8)
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        features = datasets.Features(
            {
                "rgb": datasets.Array3D((6, 8, 3), "uint8"),
                "depth": datasets.Array2D((6, 8), "float32"),
                "intrinsics": datasets.Array2D((3, 3), "float32"),
            }
        )
        ds = datasets.Dataset.from_dict({"rgb": [rgb] * 2, "depth": [depth] * 2, "intrinsics": [K] * 2}, features)
        rows = ds[:2]  # nested Python lists, as `datasets` returns them
        assert isinstance(rows["depth"][0], list) and isinstance(rows["intrinsics"][0][0], list)
        processor = make_processor(size=(6, 8), representation="disparity")
        got = processor(
            images=rows["rgb"], depths=rows["depth"], intrinsics=rows["intrinsics"], return_intrinsics=True
        )
        expected = processor(images=[rgb] * 2, depths=[depth] * 2, intrinsics=K, return_intrinsics=True)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])
        one = processor(images=rows["rgb"][0], depths=rows["depth"][0], intrinsics=rows["intrinsics"][0])
        torch.testing.assert_close(one["depth_values"], expected["depth_values"][:1])
        with pytest.raises(ValueError, match="rectangular"):
            processor(depths=[[1.0, 2.0], [3.0]])

    def test_shared_intrinsics_as_nested_list(self):
        processor = RgbdDepthProcessor(representation="disparity")
        out = processor([ramp_depth()] * 3, intrinsics=K.tolist(), return_intrinsics=True)
        assert out["intrinsics"].shape == (3, 3, 3)
        torch.testing.assert_close(out["intrinsics"][2], torch.from_numpy(K))
        with pytest.raises(ValueError, match="intrinsics"):
            processor([ramp_depth()] * 2, intrinsics=[])

    def test_sunrgbd_png_read_as_plain_is_an_error(self, tmp_path):
        mm = (1200 + 10 * ramp_depth(16, 16) * 100).astype(np.uint16)  # 1.2 m and beyond
        rotated = (((mm.astype(np.uint32) << 3) | (mm.astype(np.uint32) >> 13)) & 0xFFFF).astype(np.uint16)
        path = tmp_path / "depth.png"
        Image.fromarray(rotated).save(path)
        with Image.open(path) as png, pytest.raises(ValueError, match='depth_encoding="sunrgbd"'):
            RgbdDepthProcessor()(png)
        decoded = RgbdDepthProcessor(depth_encoding="sunrgbd", max_depth=100.0)(rotated)["depth_values"] * 100
        np.testing.assert_allclose(decoded[0, 0].numpy(), mm / 1000.0, rtol=1e-6)
        plain = RgbdDepthProcessor(depth_encoding="plain")(rotated)  # explicit: no check
        assert not bool(plain["depth_mask"].any())
        # ordinary millimetre maps, even ones quantised to multiples of 8 within range, keep the default behaviour
        for ordinary in (mm, (mm // 8 * 8 // 4).astype(np.uint16)):
            default = RgbdDepthProcessor()(ordinary)
            torch.testing.assert_close(
                default["depth_values"], RgbdDepthProcessor(depth_encoding="plain")(ordinary)["depth_values"]
            )

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"size": {"height": 12, "width": 12}},
            {"size": {"shortest_edge": 12}, "do_center_crop": True, "crop_size": 8},
            {"do_resize": False},
            {"do_resize": False, "do_center_crop": True, "crop_size": (10, 20)},
        ],
    )
    def test_aspect_ratio_check_on_every_geometry(self, kwargs):
        processor = make_processor(size=(24, 32))
        with pytest.raises(ValueError, match="allow_aspect_change"):
            processor(images=np.zeros((48, 64, 3), np.uint8), depths=ramp_depth(48, 48), **kwargs)
        out = processor(
            images=np.zeros((48, 64, 3), np.uint8), depths=ramp_depth(48, 48), allow_aspect_change=True, **kwargs
        )
        assert out["depth_values"].shape[-2:] == out["pixel_values"].shape[-2:]


# ---------------------------------------------------------------------------------------------- issue 13: settings
BAD_IMAGE_SETTINGS = [
    ("image_mean", [0.5, math.nan, 0.5]),
    ("image_mean", math.inf),
    ("image_mean", "0.5"),
    ("image_mean", [0.5, 0.5]),
    ("image_std", [0.5, math.inf, 0.5]),
    ("image_std", -0.5),
    ("rescale_factor", math.nan),
    ("rescale_factor", math.inf),
    ("rescale_factor", -1 / 255),
    ("rescale_factor", 0.0),
    ("rescale_factor", "1/255"),
    ("size", 0),
    ("size", -4),
    ("size", {"height": 223.7, "width": 224}),
    ("size", {"shortest_edge": 0}),
    ("size", "224"),
    ("size", True),
    ("crop_size", (0, 4)),
    ("crop_size", [4, 4, 4]),
    ("do_normalize", "no"),
    ("do_rescale", 1),
    ("resample", "bilinear"),
    ("resample", 2.0),
]
BAD_DEPTH_SETTINGS = [
    ("depth_mean", math.nan),
    ("depth_mean", "2"),
    ("depth_std", math.inf),
    ("depth_std", -1.0),
    ("baseline", math.nan),
    ("baseline", math.inf),
    ("min_depth", "0.1"),
    ("max_depth", math.inf),
    ("max_depth", math.nan),
    ("depth_scale", math.nan),
    ("depth_vocab_size", 8.5),
    ("depth_vocab_size", math.inf),
    ("depth_patch_size", True),
    ("representation", ["metric"]),
    ("depth_encoding", 1),
]


class TestSettings:
    @pytest.mark.parametrize("name, value", BAD_IMAGE_SETTINGS)
    def test_bad_image_setting_at_construction_per_call_and_from_json(self, name, value, tmp_path):
        with pytest.raises(ValueError, match=name):
            RgbdImageProcessor(**{name: value})
        with pytest.raises(ValueError, match=name):
            RgbdImageProcessor(size=4, crop_size=4)(np.zeros((8, 8, 3), np.uint8), **{name: value})
        with pytest.raises(ValueError, match=name):
            make_processor()(images=np.zeros((8, 8, 3), np.uint8), **{name: value})
        self._bad_json(tmp_path, "image_processor", name, value)

    @pytest.mark.parametrize("name, value", BAD_DEPTH_SETTINGS)
    def test_bad_depth_setting_at_construction_and_from_json(self, name, value, tmp_path):
        with pytest.raises(ValueError, match=name):
            RgbdDepthProcessor(**{"depth_mean": 1.0, "depth_std": 1.0, name: value})
        processor = RgbdDepthProcessor(depth_mean=1.0, depth_std=1.0)
        setattr(processor, name, value)  # an assigned attribute is checked on the next call
        with pytest.raises(ValueError, match=name):
            processor(ramp_depth(4, 4))
        self._bad_json(tmp_path, "depth_image_processor", name, value)

    @staticmethod
    def _bad_json(tmp_path, sub_processor, name, value):
        import json

        make_processor(size=(4, 4), depth_mean=1.0, depth_std=1.0).save_pretrained(tmp_path)
        path = tmp_path / "processor_config.json"
        config = json.loads(path.read_text())
        config[sub_processor][name] = value
        path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=name):
            AutoProcessor.from_pretrained(tmp_path)

    def test_depth_settings_are_canonical(self):
        processor = RgbdDepthProcessor(min_depth=1, max_depth=np.float32(4.0), depth_vocab_size=8)
        assert type(processor.min_depth) is float and type(processor.max_depth) is float
        assert processor.depth_encoding is None and processor.to_dict().get("depth_encoding") is None

    def test_hha_numeric_options(self):
        from hf_rgbd.processors.depth_hha import compute_hha

        depth, valid = torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool)
        k = torch.tensor([[[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]])
        for name, value in [("lowest_point_quantile", "0.1"), ("lowest_point_quantile", math.nan),
                            ("min_camera_height_m", math.inf), ("min_camera_height_m", None)]:  # fmt: skip
            with pytest.raises(ValueError, match=name):
                compute_hha(depth, valid, k, **{name: value})

    @pytest.mark.parametrize(
        "call, name",
        [
            (lambda: RgbdImageProcessor(size=4)(np.zeros((4, 4, 3), np.uint8), return_tensors="tf"), "return_tensors"),
            (lambda: RgbdDepthProcessor()(ramp_depth(4, 4), return_tensors=3), "return_tensors"),
            (lambda: RgbdDepthProcessor()(ramp_depth(4, 4), plans=3), "plans"),
            (lambda: RgbdDepthProcessor()(ramp_depth(4, 4), plans=[(0, 0, 4, 4)]), "plans"),
            (lambda: RgbdDepthProcessor()(ramp_depth(4, 4), output_size=2.5), "output_size"),
            (lambda: RgbdDepthProcessor()(ramp_depth(4, 4), output_size=(4, 0)), "output_size"),
        ],
    )
    def test_bad_call_arguments_are_named(self, call, name):
        with pytest.raises(ValueError, match=name):
            call()


def test_numpy_integer_sizes_are_ints_and_return_tensors_is_checked():
    # numpy integers (e.g. read from an array of sizes) are valid sizes and are stored as Python ints
    processor = RgbdProcessor(RgbdImageProcessor(size={"height": np.int64(16), "width": np.int32(12)}))
    batch = processor(images=np.zeros((20, 15, 3), np.uint8))
    assert batch["pixel_values"].shape == (1, 3, 16, 12)
    assert all(type(side) is int for side in processor.image_processor.size.values())
    with pytest.raises(ValueError, match="return_tensors"):
        processor(images=np.zeros((20, 15, 3), np.uint8), return_tensors="tf")
    with pytest.raises(ValueError, match="size"):
        RgbdImageProcessor(size={"height": np.bool_(True), "width": 12})
