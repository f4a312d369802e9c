"""`hf-rgbd app` driven in headless Chromium (Debian's package, through Playwright's Python driver): upload a
pair, run an attack, see the predictions and images; a bad upload gets a message; the page asks nothing of any
host but the app's."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification, RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor

LABELS = ["sphere", "cube", "cylinder"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _require_browser():
    """Playwright's driver and a chromium executable, else skip (fail in CI, where HF_RGBD_REQUIRE_BROWSER=1)."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    try:
        import gradio  # noqa: F401
    except ImportError:
        missing.append("gradio")
    if CHROMIUM is None:
        missing.append("chromium (bash scripts/install_browser.sh)")
    if missing:
        message = f"the app's browser test needs {', '.join(missing)}"
        if os.environ.get("HF_RGBD_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    _require_browser()
    from hf_rgbd.app import launch_app

    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    config = RgbdCnnConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3, id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)}, modality_dropout=0.2,
    )  # fmt: skip
    model_folder = root / "demo" / "models" / "cnn_early"
    RgbdCnnForImageClassification(config).eval().save_pretrained(model_folder)
    RgbdProcessor(
        RgbdImageProcessor(size={"height": 32, "width": 32}), RgbdDepthProcessor(representation="metric", max_depth=6.0)
    ).save_pretrained(model_folder)
    rng = np.random.default_rng(0)
    files = {"rgb": root / "rgb.png", "depth": root / "depth.png", "text": root / "notes.txt"}
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(files["rgb"])
    millimetres = rng.integers(500, 5000, (40, 40)).astype(np.uint16)
    millimetres[:5, :5] = 0
    Image.fromarray(millimetres).save(files["depth"])
    files["text"].write_text("this is not a depth map")
    port = _free_port()
    app = launch_app(port=port, demo_dir=str(root / "demo"), block=False, examples_dir=str(root / "examples"))
    yield f"http://127.0.0.1:{port}", files, model_folder
    app.close()


@pytest.fixture(scope="module")
def page(served_app):
    from playwright.sync_api import sync_playwright

    url, _, _ = served_app
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        tab = browser.new_page()
        hosts = []
        tab.on("request", lambda request: hosts.append(urlparse(request.url).hostname))
        tab.goto(url, wait_until="networkidle")
        tab.hosts = hosts
        yield tab
        browser.close()


def _upload(page, element_id: str, path) -> None:
    page.locator(f"#{element_id} input[type=file]").set_input_files(str(path))
    page.locator(f"#{element_id}").get_by_text(Path(path).stem).first.wait_for(timeout=20_000)


def test_app_attacks_an_uploaded_pair_and_shows_predictions_and_images(page, served_app):
    _, files, model_folder = served_app
    assert page.locator("#model input").input_value() == str(model_folder)  # the demo's folder is offered
    _upload(page, "rgb-file", files["rgb"])
    _upload(page, "depth-file", files["depth"])
    page.locator("#run").click()
    summary = page.locator("#summary")
    summary.get_by_text("perturbation").wait_for(timeout=60_000)
    assert "pixel_values: L-inf" in summary.inner_text() and "depth_values: L-inf" in summary.inner_text()
    for element_id in ("before", "after"):
        text = page.locator(f"#{element_id}").inner_text()
        assert any(label in text for label in LABELS), (element_id, text)
    for element_id in ("adversarial-rgb", "adversarial-depth", "rgb-change", "depth-change"):
        image = page.locator(f"#{element_id} img").first
        image.wait_for(timeout=20_000)
        assert page.evaluate("(img) => img.complete && img.naturalWidth", image.element_handle()) == 32, element_id
    # the budget shown is within the one asked for (4/255 and 0.05 m by default)
    text = summary.inner_text()
    rgb_linf = float(text.split("pixel_values: L-inf ")[1].split("/255")[0])
    depth_linf = float(text.split("depth_values: L-inf ")[1].split(" m")[0])
    assert 0 < rgb_linf <= 4.0 + 1e-3 and 0 < depth_linf <= 0.05 + 1e-6
    assert set(page.hosts) <= {"127.0.0.1"}, set(page.hosts)  # no font server, no analytics, no CDN


def test_app_names_a_bad_upload(page, served_app):
    url, files, _ = served_app
    page.goto(url, wait_until="networkidle")  # a fresh page: empty file inputs
    _upload(page, "rgb-file", files["rgb"])
    _upload(page, "depth-file", files["text"])
    page.locator("#run").click()
    page.locator("#summary").get_by_text("Error").wait_for(timeout=60_000)
    assert "depth" in page.locator("#summary").inner_text().lower()


def test_app_runs_a_synthetic_example(page, served_app):
    page.goto(served_app[0], wait_until="networkidle")
    page.locator("#example input").click()
    option = page.get_by_role("option").first
    name = option.inner_text()
    option.click()
    page.locator("#rgb-file").get_by_text("scene0_rgb").wait_for(timeout=20_000)
    page.locator("#depth-file").get_by_text("scene0_depth").wait_for(timeout=20_000)
    page.locator("#run").click()
    page.locator("#summary").get_by_text("seed 0").wait_for(timeout=60_000)
    assert "Error" not in page.locator("#summary").inner_text(), name
