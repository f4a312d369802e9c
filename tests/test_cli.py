"""The `hf-rgbd` command line."""

from __future__ import annotations

import pytest
import torch

import hf_rgbd
from hf_rgbd.cli import main
from hf_rgbd.processors import REPRESENTATIONS


def test_probe_processes_every_representation(capsys):
    assert main(["probe", "--num-pairs", "2", "--probe-epochs", "0"]) == 0
    out = capsys.readouterr().out
    for representation in REPRESENTATIONS:
        assert f"\n{representation} " in out
    assert "Fusion probe" not in out


def test_probe_runs_the_fusion_probe(capsys, monkeypatch):
    import hf_rgbd.data
    import hf_rgbd.evaluation

    small = hf_rgbd.data.make_synthetic_rgbd

    def tiny_synthetic(seed=0, **kwargs):
        return small(num_train=16, num_validation=8, num_test=8, image_size=32, seed=seed)

    monkeypatch.setattr(hf_rgbd.data, "make_synthetic_rgbd", tiny_synthetic)
    assert main(["probe", "--num-pairs", "2", "--probe-epochs", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("RGB only", "depth only", "RGB + depth"):
        assert label in out
    assert out.count("test accuracy") == 3


def test_probe_progress_bars_threads_and_no_progress(capsys):
    was_disabled, threads = hf_rgbd.are_progress_bars_disabled(), torch.get_num_threads()
    hf_rgbd.enable_progress_bars()
    try:
        assert main(["probe", "--num-pairs", "2", "--probe-epochs", "0", "--threads", "2"]) == 0
        assert "Rendering synthetic RGB-D scenes" in capsys.readouterr().err
        assert main(["probe", "--num-pairs", "2", "--probe-epochs", "0", "--no-progress"]) == 0
        assert "Rendering" not in capsys.readouterr().err
        assert not hf_rgbd.are_progress_bars_disabled()  # the switch was scoped to the command
        assert torch.get_num_threads() == threads
        with pytest.raises(ValueError, match="--threads"):
            main(["probe", "--num-pairs", "2", "--probe-epochs", "0", "--threads", "0"])
    finally:
        (hf_rgbd.disable_progress_bars if was_disabled else hf_rgbd.enable_progress_bars)()


def test_unknown_command_exits():
    with pytest.raises(SystemExit):
        main(["nope"])
