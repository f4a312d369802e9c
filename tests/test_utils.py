"""Progress-bar switch and scoped torch thread limits (hf_rgbd.utils) as the long steps use them."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_rgbd
import hf_rgbd.utils
from hf_rgbd.data import make_synthetic_rgbd, render_rgbd_scenes, synthetic
from hf_rgbd.evaluation import fusion_probe
from hf_rgbd.training import classification_accuracy, train_classifier
from hf_rgbd.utils import torch_thread_limit

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture
def two_threads():
    """torch at 2 intra-op threads for the test (other test modules pin 1), the caller's count restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


@pytest.fixture
def bars_enabled():
    """Progress bars on for the test, the previous global state restored afterwards."""
    was_disabled = hf_rgbd.are_progress_bars_disabled()
    hf_rgbd.enable_progress_bars()
    yield
    (hf_rgbd.disable_progress_bars if was_disabled else hf_rgbd.enable_progress_bars)()


def _tiny_training_data() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    from hf_rgbd.modeling import RgbdCnnConfig, RgbdCnnForImageClassification

    torch.manual_seed(0)
    config = RgbdCnnConfig.small(num_labels=2, modalities="rgb", embedding_size=8, hidden_sizes=[8], depths=[1])
    inputs = {"pixel_values": torch.rand(8, 3, 16, 16)}
    return RgbdCnnForImageClassification(config), inputs, torch.arange(8) % 2


def test_thread_limit_scoped_and_restored_on_error(two_threads):
    with torch_thread_limit(1) as inside:
        assert inside == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), torch_thread_limit(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_thread_limit(8) as inside:  # a limit never raises the count
        assert inside == 2 and torch.get_num_threads() == 2
    with torch_thread_limit(None) as inside:
        assert inside == 2
    for bad in (0, 1.5, True, "1"):
        with pytest.raises(ValueError, match="num_threads"), torch_thread_limit(bad, "num_threads"):
            pass
    assert torch.get_num_threads() == 2


def test_synthetic_generation_renders_on_one_thread_and_restores(two_threads, monkeypatch):
    seen = []
    render_chunk = synthetic._render_chunk

    def recording_render_chunk(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return render_chunk(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_render_chunk", recording_render_chunk)
    make_synthetic_rgbd(num_train=10, num_validation=2, num_test=2, image_size=16)
    render_rgbd_scenes([0, 1], 16)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    seen.clear()
    make_synthetic_rgbd(num_train=2, num_validation=0, num_test=0, image_size=16, num_threads=None)
    assert seen == [2]

    def failing_build(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_build_dataset", failing_build)
    with pytest.raises(RuntimeError, match="disk full"):
        make_synthetic_rgbd(num_train=2, num_validation=0, num_test=0, image_size=16)
    assert torch.get_num_threads() == 2


def test_values_do_not_depend_on_the_thread_count(two_threads):
    one = render_rgbd_scenes(torch.arange(16) % 8, 16, generator=3)
    two = render_rgbd_scenes(torch.arange(16) % 8, 16, generator=3, num_threads=None)
    assert torch.equal(one["image"], two["image"]) and torch.equal(one["depth"], two["depth"])


def test_fusion_probe_thread_limit_restored_and_checked(two_threads, monkeypatch):
    import hf_rgbd.training.classification as classification

    seen = []
    train = classification.train_cnn_classifier

    def recording_train(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(classification, "train_cnn_classifier", recording_train)
    dataset = make_synthetic_rgbd(num_train=8, num_validation=8, num_test=8, image_size=16)
    fusion_probe(dataset, ["rgb"], epochs=1)
    assert seen == [1] and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="num_threads"):
        fusion_probe(dataset, ["rgb"], epochs=1, num_threads=0)
    assert torch.get_num_threads() == 2


def test_import_changes_no_thread_setting():
    code = """
        import os, torch
        before = (torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_NUM_THREADS"))
        import hf_rgbd, hf_rgbd.attacks, hf_rgbd.cli, hf_rgbd.data, hf_rgbd.evaluation, hf_rgbd.training
        import hf_rgbd.utils
        after = (torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_NUM_THREADS"))
        print(before == after, before, after)
    """
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True"), result.stdout


def test_progress_bars_shown_and_switched_off(capsys, bars_enabled):
    make_synthetic_rgbd(num_train=4, num_validation=2, num_test=2, image_size=16)
    model, inputs, labels = _tiny_training_data()
    train_classifier(model, inputs, labels, epochs=2, batch_size=4)
    classification_accuracy(model, inputs, labels)
    err = capsys.readouterr().err
    assert "Rendering synthetic RGB-D scenes" in err and "8/8" in err
    assert "Training" in err and "4/4" in err and "Evaluating" in err

    train_classifier(model, inputs, labels, epochs=1, batch_size=4, disable_tqdm=True)  # per call
    classification_accuracy(model, inputs, labels, disable_tqdm=True)
    assert capsys.readouterr().err == ""

    hf_rgbd.disable_progress_bars()  # globally
    assert hf_rgbd.are_progress_bars_disabled()
    make_synthetic_rgbd(num_train=4, num_validation=2, num_test=2, image_size=16)
    train_classifier(model, inputs, labels, epochs=1, batch_size=4, disable_tqdm=False)
    classification_accuracy(model, inputs, labels)
    assert capsys.readouterr().err == ""
    hf_rgbd.enable_progress_bars()
    assert not hf_rgbd.are_progress_bars_disabled()
    with pytest.raises(TypeError, match="disable_tqdm"):
        train_classifier(model, inputs, labels, epochs=1, disable_tqdm="yes")


@pytest.mark.parametrize(("value", "disabled"), [("1", True), ("true", True), ("0", False), ("no", False)])
def test_progress_bar_environment_variable_has_priority(value, disabled, monkeypatch, bars_enabled):
    """The variable is read at import (as datasets' HF_DATASETS_DISABLE_PROGRESS_BARS): reload to read it anew."""
    monkeypatch.setenv("HF_RGBD_DISABLE_PROGRESS_BARS", value)
    importlib.reload(hf_rgbd.utils)
    try:
        assert hf_rgbd.are_progress_bars_disabled() is disabled
        with pytest.warns(UserWarning, match="HF_RGBD_DISABLE_PROGRESS_BARS"):
            (hf_rgbd.enable_progress_bars if disabled else hf_rgbd.disable_progress_bars)()
        assert hf_rgbd.are_progress_bars_disabled() is disabled
    finally:
        monkeypatch.delenv("HF_RGBD_DISABLE_PROGRESS_BARS")
        importlib.reload(hf_rgbd.utils)
    assert not hf_rgbd.are_progress_bars_disabled()
