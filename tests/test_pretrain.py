"""`hf-rgbd pretrain` on accelerate: exact resume after an interruption, two CPU processes under
`accelerate launch` against one process with the same global batch, the saved folder fine-tuned, bad arguments."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_rgbd.training import pretrain as pretrain_module
from hf_rgbd.training.pretrain import CHECKPOINT_STATE_FILE, parse_pretrain_args, run_pretraining

TINY_DATA = [
    "--dataset", "synthetic", "--synthetic_num_train", "32", "--synthetic_num_validation", "8",
    "--synthetic_num_test", "16", "--synthetic_image_size", "32",
]  # fmt: skip


def pretrain_argv(model: str, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", model, *TINY_DATA, "--per_device_train_batch_size", "8", "--num_train_epochs", "2",
        "--learning_rate", "3e-3", "--output_dir", str(output_dir), "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def run(argv: list[str]) -> dict:
    return run_pretraining(*parse_pretrain_args(argv))


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


class Interrupted(Exception):
    pass


@pytest.mark.parametrize(
    "model, overrides",
    [
        ("rgbd_clip:tiny", None),
        # the EMA teacher and the feature queue are part of the state to restore
        ("rgbd_albef:tiny", "distillation_alpha=0.4,queue_size=16,mdm_mask_ratio=0.5"),
    ],
)
def test_resume_after_an_interruption_is_bit_identical(model, overrides, tmp_path, monkeypatch):
    extra = ["--config_overrides", overrides] if overrides else []
    run(pretrain_argv(model, tmp_path / "whole", *extra))
    whole = saved_tensors(tmp_path / "whole")

    # the same run, interrupted right after its first checkpoint (step 3 of 8) ...
    save_checkpoint = pretrain_module.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(pretrain_module, "save_checkpoint", save_then_stop)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        run(pretrain_argv(model, interrupted, "--checkpointing_steps", "3", *extra))
    assert not (interrupted / "model.safetensors").exists()
    assert json.loads((interrupted / "step_3" / CHECKPOINT_STATE_FILE).read_text())["completed_steps"] == 3
    # ... then resumed from the newest checkpoint
    monkeypatch.setattr(pretrain_module, "save_checkpoint", save_checkpoint)
    results = run(
        pretrain_argv(model, interrupted, "--checkpointing_steps", "3", "--resume_from_checkpoint", "latest", *extra)
    )
    resumed = saved_tensors(interrupted)

    assert results["train_steps"] == 8
    assert set(resumed) == set(whole)
    if model.startswith("rgbd_albef"):
        assert any(name.startswith("teacher.") for name in whole) and any(name.startswith("queue.") for name in whole)
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor), name
    # and the loss curves agree step for step
    assert loss_curve(interrupted)[1] == loss_curve(tmp_path / "whole")[1]
    assert len(loss_curve(interrupted)[1]) == 8


def test_an_interrupted_save_never_looks_complete(tmp_path, monkeypatch):
    def fail_while_saving(self, output_dir=None, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        raise Interrupted

    monkeypatch.setattr("accelerate.Accelerator.save_state", fail_while_saving)
    with pytest.raises(Interrupted):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path, "--checkpointing_steps", "2"))
    assert (tmp_path / "step_2.incomplete").is_dir() and not (tmp_path / "step_2").exists()
    with pytest.raises(ValueError, match="--resume_from_checkpoint latest: .* holds no complete checkpoint"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path, "--resume_from_checkpoint", "latest"))
    with pytest.raises(ValueError, match="is not a complete checkpoint"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path, "--resume_from_checkpoint", str(tmp_path / "step_2.incomplete")))


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="--resume_from_checkpoint .*: no such folder"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path / "a", "--resume_from_checkpoint", str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="--stage 'rgb': only the mixture of modality experts"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path / "b", "--stage", "rgb"))
    with pytest.raises(
        ValueError, match="--model_name_or_path 'rgbd_cnn:small' is a rgbd_cnn model, which has no pretraining"
    ):
        run(pretrain_argv("rgbd_cnn:small", tmp_path / "c"))
    with pytest.raises(ValueError, match="global batch of one pair"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path / "d", "--per_device_train_batch_size", "1"))
    with pytest.raises(ValueError, match="--checkpointing_steps must be a positive number of steps or `epoch`"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path / "e", "--checkpointing_steps", "often"))
    with pytest.raises(SystemExit):  # argparse: an unknown stage
        parse_pretrain_args(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "f", "--stage", "audio"))


def test_a_checkpoint_of_another_family_or_config_is_refused(tmp_path):
    run(pretrain_argv("rgbd_clip:tiny", tmp_path / "clip", "--checkpointing_steps", "4", "--max_train_steps", "4"))
    checkpoint = str(tmp_path / "clip" / "step_4")
    with pytest.raises(ValueError, match="holds a rgbd_clip model; this run pretrains rgbd_albef"):
        run(pretrain_argv("rgbd_albef:tiny", tmp_path / "albef", "--resume_from_checkpoint", checkpoint))
    with pytest.raises(ValueError, match=r"another config \(fields \['projection_dim'\] differ\)"):
        run(pretrain_argv("rgbd_clip:tiny", tmp_path / "other", "--config_overrides", "projection_dim=8",
                          "--resume_from_checkpoint", checkpoint))  # fmt: skip


def test_experts_model_pretrains_one_stage_and_the_folder_fine_tunes(tmp_path):
    from transformers import AutoModelForImageClassification, AutoProcessor

    results = run(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "vlmo", "--stage", "depth", "--max_train_steps", "2",
                                "--gradient_checkpointing", "true"))  # fmt: skip
    # the depth stage trains on depth alone: masked depth modelling, no pair losses
    assert results["train_steps"] == 2 and "train_loss_mdm" in results
    assert not any(key in results for key in ("train_loss_itc", "train_loss_itm", "train_loss_mim"))
    assert 0.0 <= results["eval_rgb_to_depth_R@1"] <= 1.0
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "vlmo", num_labels=8)
    processor = AutoProcessor.from_pretrained(tmp_path / "vlmo")
    assert type(classifier).__name__ == "RgbdVlmoForImageClassification"
    assert processor.image_processor.size["height"] == 32


def test_stage_depth_leaves_the_shared_attention_untouched(tmp_path):
    run(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "fresh", "--max_train_steps", "1", "--learning_rate", "0"))
    run(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "depth", "--max_train_steps", "2", "--stage", "depth"))
    fresh, depth = saved_tensors(tmp_path / "fresh"), saved_tensors(tmp_path / "depth")
    attention = [name for name in fresh if ".attention." in name]
    depth_expert = [name for name in fresh if ".experts.depth." in name]
    assert attention and depth_expert
    assert all(torch.equal(fresh[name], depth[name]) for name in attention)
    assert any(not torch.equal(fresh[name], depth[name]) for name in depth_expert)


def test_stage_rgb_trains_on_rgb_alone_and_leaves_the_depth_stream_untouched(tmp_path):
    run(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "fresh", "--max_train_steps", "1", "--learning_rate", "0"))
    results = run(pretrain_argv("rgbd_vlmo:tiny", tmp_path / "rgb", "--max_train_steps", "2", "--stage", "rgb"))
    assert "train_loss_mim" in results and not any(
        key in results for key in ("train_loss_itc", "train_loss_itm", "train_loss_mdm")
    )
    fresh, rgb = saved_tensors(tmp_path / "fresh"), saved_tensors(tmp_path / "rgb")
    depth_stream = [name for name in fresh if "depth_embeddings." in name or ".experts.depth." in name]
    rgb_stream = [name for name in fresh if ".attention." in name or ".experts.rgb." in name]
    assert depth_stream and rgb_stream
    assert all(torch.equal(fresh[name], rgb[name]) for name in depth_stream)
    assert any(not torch.equal(fresh[name], rgb[name]) for name in rgb_stream)


def test_tracking_writes_tensorboard_events_with_every_loss(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(pretrain_argv("rgbd_albef:tiny", tmp_path, "--max_train_steps", "4", "--logging_steps", "2",
                      "--with_tracking", "true", "--report_to", "tensorboard"))  # fmt: skip
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"loss", "loss_itc", "loss_itm", "loss_mdm", "learning_rate"} <= tags
    assert [event.step for event in accumulator.Scalars("loss")] == [2, 4]


# ------------------------------------------------------------------------------------------------ two processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(num_processes: int, argv: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N` (the flag that starts N gloo ranks on a CPU machine; see
    ../shared/reference/transformers-v5.md), or a plain process for N = 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if num_processes == 1:
        command = [sys.executable, "-m", "hf_rgbd.cli", "pretrain", *argv]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port()), "-m", "hf_rgbd.cli", "pretrain", *argv,
        ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def loss_curve(folder: Path) -> tuple[int, list[dict]]:
    log = json.loads((folder / "pretraining_log.json").read_text())
    return log["num_processes"], log["log_history"]


@pytest.mark.parametrize(
    "model, overrides, tolerance",
    [
        ("rgbd_clip:tiny", None, 1e-5),  # linear patch embedding: no batch norm
        ("rgbd_albef:tiny", "mdm_mask_ratio=0.5", 1e-5),  # hard negatives and masks drawn for the global batch
        # the convolutional stem's batch norm: per-process statistics on CPU (SyncBatchNorm needs an accelerator),
        # measured 0.5-2% apart over these 4 steps; the stated tolerance is 5%
        ("rgbd_clip:small", None, 0.05),
    ],
)
def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(model, overrides, tolerance, tmp_path):
    extra = ["--config_overrides", overrides] if overrides else []
    common = ["--model_name_or_path", model, *TINY_DATA, "--num_train_epochs", "1", "--learning_rate", "3e-3",
              "--disable_tqdm", "true", *extra]  # fmt: skip
    one = launch(1, [*common, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")])
    two = launch(2, [*common, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "two")])
    assert "process 0 of 1" in one.stderr
    # each rank reports itself: a launch that silently starts one process fails here
    assert "process 0 of 2" in two.stderr and "process 1 of 2" in two.stderr, two.stderr[-2000:]
    count_one, curve_one = loss_curve(tmp_path / "one")
    count_two, curve_two = loss_curve(tmp_path / "two")
    assert (count_one, count_two) == (1, 2)
    assert len(curve_one) == len(curve_two) == 4
    for row_one, row_two in zip(curve_one, curve_two, strict=True):
        for name in ("loss", "loss_itc", "loss_itm", "loss_mdm"):
            if name in row_one:
                assert row_two[name] == pytest.approx(row_one[name], abs=tolerance, rel=tolerance), (
                    name,
                    row_one["step"],
                )


def test_hf_rgbd_finetune_takes_the_pretrained_folder(tmp_path):
    from test_finetune import FAST
    from test_finetune import TINY_DATA as FINETUNE_DATA

    from hf_rgbd.cli import main
    from hf_rgbd.training.finetune import ModelArguments, build_model

    assert main(["pretrain", *pretrain_argv("rgbd_clip:tiny", tmp_path / "pretrained", "--max_train_steps", "3")]) == 0
    saved = saved_tensors(tmp_path / "pretrained")
    model, processor = build_model(ModelArguments(str(tmp_path / "pretrained")), [str(i) for i in range(8)])
    assert type(model).__name__ == "RgbdClipForImageClassification" and processor is not None
    for name, value in model.rgbd_clip.state_dict().items():  # the towers and projections are the pretrained ones
        assert torch.equal(value, saved[name]), name
    output = tmp_path / "finetuned"
    argv = ["--model_name_or_path", str(tmp_path / "pretrained"), *FINETUNE_DATA, *FAST, "--output_dir", str(output)]
    assert main(["finetune", *argv]) == 0
    results = json.loads((output / "all_results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and "eval_accuracy_without_rgb" in results
