"""evaluate_robustness: report, curves and the saved adversarial examples."""

from __future__ import annotations

import math

import datasets
import numpy as np
import pytest
import torch

from hf_rgbd import RgbdCnnConfig, RgbdCnnForImageClassification, RgbdDepthProcessor, RgbdImageProcessor, RgbdProcessor
from hf_rgbd.attacks import BIM, PGD, RetrievalObjective
from hf_rgbd.data import make_synthetic_rgbd
from hf_rgbd.evaluation import evaluate_robustness
from hf_rgbd.modeling import RgbdClipConfig, RgbdClipModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    split = make_synthetic_rgbd(num_train=8, num_validation=8, num_test=10, image_size=16, seed=0)["test"]
    processor = RgbdProcessor(
        RgbdImageProcessor(size={"height": 16, "width": 16}), RgbdDepthProcessor(representation="disparity")
    )
    torch.manual_seed(0)
    config = RgbdCnnConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=8, se_reduction=4)
    model = RgbdCnnForImageClassification(config).eval()
    return split, processor, model


def test_evaluate_robustness(setup, tmp_path):
    split, processor, model = setup
    attacks = {
        "bim rgb 2": BIM(model, budget={"pixel_values": 2 / 255}, steps=2, processor=processor),
        "bim rgb 8": BIM(model, budget={"pixel_values": 8 / 255}, steps=2, processor=processor),
        "bim depth": BIM(model, budget={"depth_values": 0.05}, steps=2, processor=processor),
        "bim joint": BIM(model, budget={"pixel_values": 8 / 255, "depth_values": 0.05}, steps=2, processor=processor),
        "pgd joint": PGD(model, steps=2, processor=processor),
    }
    model.train()
    report = evaluate_robustness(model, processor, split, attacks, batch_size=4, output_dir=tmp_path)
    assert model.training  # mode restored
    assert report["num_samples"] == 10 and 0 <= report["clean_accuracy"] <= 1
    for name, attack in attacks.items():
        entry = report["attacks"][name]
        assert 0 <= entry["robust_accuracy"] <= 1
        assert set(entry["perturbation"]) == set(attack.budget)
        for key, stats in entry["perturbation"].items():
            assert 0 < stats["mean_linf"] <= stats["max_linf"] <= attack.budget[key] + 1e-4
    for kind in ("rgb", "depth", "joint"):
        assert (tmp_path / f"accuracy_vs_budget_{kind}.png").stat().st_size > 0
    assert (tmp_path / "robustness.json").exists()

    examples = datasets.load_from_disk(report["examples_path"])
    assert set(examples) == {"bim_rgb_2", "bim_rgb_8", "bim_depth", "bim_joint", "pgd_joint"}
    stored = examples["bim_joint"].with_format("numpy")
    assert len(stored) == 10 and stored[0]["attack"] == "bim joint"
    # Float values stored exactly: BIM is deterministic, so attacking the first batch again gives the same tensors.
    rows = split.with_format("numpy")[:4]
    batch = processor(
        images=list(rows["image"]), depths=list(rows["depth"]), intrinsics=np.asarray(rows["intrinsics"]),
        return_intrinsics=True,
    )  # fmt: skip
    again = attacks["bim joint"](batch, torch.as_tensor(rows["label"]))
    assert np.array_equal(stored[:4]["pixel_values"], again["pixel_values"].numpy())
    assert np.array_equal(stored[:4]["depth_values"], again["depth_values"].numpy())
    assert np.array_equal(stored[:4]["depth_mask"], again["depth_mask"].numpy())
    assert stored.features["pixel_values"].dtype == "float32"


def test_evaluate_robustness_bad_input(setup):
    split, processor, model = setup
    with pytest.raises(ValueError, match="attacks"):
        evaluate_robustness(model, processor, split, {})
    with pytest.raises(ValueError, match="targeted"):
        evaluate_robustness(model, processor, split, {"t": PGD(model, targeted=True, processor=processor)})
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_robustness(model, processor, split, {"p": PGD(model, processor=processor)}, batch_size=0)
    clip = RgbdClipModel(RgbdClipConfig.tiny(rgb_config={"image_size": 16}, depth_config={"image_size": 16}))
    attack = PGD(clip, budget={"pixel_values": 2 / 255}, loss=RetrievalObjective(), processor=processor)
    with pytest.raises(ValueError, match="`model` must be a classifier"):
        evaluate_robustness(clip, processor, split, {"retrieval": attack})


def test_ignored_labels_are_left_out_of_every_rate(setup):
    split, processor, model = setup
    labels = list(split["label"])
    ignored = [0, 3, 4]
    partly_ignored = split.map(lambda row, index: {"label": -100 if index in ignored else row["label"]},
                               with_indices=True)  # fmt: skip
    attacks = {"bim": BIM(model, budget={"pixel_values": 8 / 255}, steps=2, processor=processor)}
    full = evaluate_robustness(model, processor, split, attacks, batch_size=4)
    report = evaluate_robustness(model, processor, partly_ignored, attacks, batch_size=4)
    assert report["num_samples"] == 10 and report["num_ignored"] == 3 and full["num_ignored"] == 0

    # the counted samples' figures, recomputed from the per-sample outcome of the full run
    rows = split.with_format("numpy")[:]
    batch = processor(
        images=list(rows["image"]), depths=list(rows["depth"]), intrinsics=np.asarray(rows["intrinsics"])
    )
    with torch.no_grad():
        clean = model.eval()(**batch).logits.argmax(dim=1)
    kept = torch.tensor([index not in ignored for index in range(10)])
    clean_correct = (clean == torch.tensor(labels)) & kept
    assert report["clean_accuracy"] == pytest.approx(clean_correct.sum().item() / 7)
    assert 0 <= report["attacks"]["bim"]["robust_accuracy"] <= report["clean_accuracy"] + 1e-9
    assert report["attacks"]["bim"]["perturbation"]["pixel_values"]["mean_linf"] > 0

    everything_ignored = split.map(lambda row: {"label": -100})
    report = evaluate_robustness(model, processor, everything_ignored, attacks, batch_size=4)
    assert report["num_ignored"] == 10 and math.isnan(report["clean_accuracy"])
    assert math.isnan(report["attacks"]["bim"]["robust_accuracy"])
    assert math.isnan(report["attacks"]["bim"]["success_rate"])
