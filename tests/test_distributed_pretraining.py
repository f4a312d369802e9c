"""Global-batch pretraining under `torch.distributed`: two gloo processes holding half a batch each compute the
same ITC / ITM / MDM losses and, after DDP's gradient averaging, the same gradients as one process holding the whole
batch (embeddings and token states gathered with gradient, hard negatives and masks drawn for the global batch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_modeling_rgbd_albef import one_valid_word, pretraining_inputs, tiny_config
from test_modeling_rgbd_clip import make_inputs
from test_modeling_rgbd_clip import tiny_config as clip_tiny_config

from hf_rgbd import RgbdClipModel, RgbdVlmoConfig, RgbdVlmoForPreTraining
from hf_rgbd.modeling import RgbdAlbefForPreTraining

WORLD_SIZE, GLOBAL_BATCH = 2, 4
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _model_and_inputs(family: str) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    if family == "albef":
        model = RgbdAlbefForPreTraining(tiny_config(distillation_alpha=0.0, mdm_mask_ratio=0.5))
        inputs = one_valid_word(pretraining_inputs(GLOBAL_BATCH))  # one masked patch per pair in every split
    elif family == "vlmo":
        model = RgbdVlmoForPreTraining(RgbdVlmoConfig.tiny(mdm_mask_ratio=0.5))
        inputs = one_valid_word(pretraining_inputs(GLOBAL_BATCH))
    else:
        model = RgbdClipModel(clip_tiny_config())
        inputs = make_inputs(GLOBAL_BATCH)
    return model.train(), inputs


def _step(model: torch.nn.Module, inputs: dict, family: str) -> dict:
    """One forward / backward after the same seed: the losses and every parameter's gradient."""
    torch.manual_seed(1)
    outputs = model(**inputs)
    outputs.loss.backward()
    pretraining = family in ("albef", "vlmo")
    names = ("loss", "loss_itc", "loss_itm", "loss_mdm") if pretraining else ("loss",)
    result = {name: outputs[name].detach() for name in names}
    result["gradients"] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    if pretraining:
        result["negative_depth_index"] = outputs.negative_depth_index
        result["negative_rgb_index"] = outputs.negative_rgb_index
    return result


def _worker(rank: int, family: str, folder: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD_SIZE
    )
    try:
        model, inputs = _model_and_inputs(family)
        local = GLOBAL_BATCH // WORLD_SIZE
        rows = slice(rank * local, (rank + 1) * local)
        result = _step(model, {key: value[rows] for key, value in inputs.items()}, family)
        for gradient in result["gradients"].values():  # what DDP does after backward
            torch.distributed.all_reduce(gradient)
            gradient /= WORLD_SIZE
        torch.save(result, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("family", ["albef", "vlmo", "clip"])
def test_two_processes_match_one_process_with_the_whole_batch(family: str, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(family, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    model, inputs = _model_and_inputs(family)
    single = _step(model, inputs, family)

    # ITC (and the dual encoder's loss) is the loss of the global batch on every process
    itc = "loss" if family == "clip" else "loss_itc"
    for result in ranks:
        torch.testing.assert_close(result[itc], single[itc], atol=1e-6, rtol=1e-5)
    if family != "clip":
        # ITM and MDM are means over each process's rows: their average is the whole batch's loss
        for name in ("loss_itm", "loss_mdm"):
            torch.testing.assert_close(sum(r[name] for r in ranks) / WORLD_SIZE, single[name], atol=1e-6, rtol=1e-5)
        # the same negatives, as global indices
        for name in ("negative_depth_index", "negative_rgb_index"):
            torch.testing.assert_close(torch.cat([r[name] for r in ranks]), single[name])
    assert set(ranks[0]["gradients"]) == set(single["gradients"])
    for name, gradient in single["gradients"].items():
        for result in ranks:
            torch.testing.assert_close(result["gradients"][name], gradient, atol=1e-5, rtol=1e-4, msg=name)
