"""APGD in L2, with EOT and as APGD-T; the AutoAttack ensemble with its threat models; evaluate_robustness and
`hf-rgbd evaluate` with AutoAttack."""

from __future__ import annotations

import json

import pytest
import torch
from test_attacks import make_batch, make_model, make_processor

from hf_rgbd.attacks import APGD, AutoAttack, TargetedDlrObjective, targeted_dlr_loss
from hf_rgbd.attacks.subsets import merge_result, select_samples, unattacked_result
from hf_rgbd.cli import main as cli_main
from hf_rgbd.evaluation import evaluate_robustness


@pytest.fixture(scope="module")
def setup():
    processor = make_processor()
    model = make_model()
    batch, labels = make_batch(processor, batch_size=12)
    return processor, model, batch, labels


def predictions(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}).logits.argmax(dim=1)


def test_targeted_dlr_is_the_paper_formula():
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 5.0, 1.0, 1.5]])
    labels, targets = torch.tensor([0, 2]), torch.tensor([1, 4])
    expected = torch.tensor(
        [-(4.0 - 3.0) / (4.0 - (1.0 + 0.5) / 2), -(5.0 - 1.5) / (5.0 - (1.5 + 1.0) / 2)]
    )
    torch.testing.assert_close(targeted_dlr_loss(logits, labels, targets), expected)
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr_loss(logits[:, :3], labels.clamp(max=2), targets.clamp(max=2))


def test_apgd_l2_keeps_each_budget_and_the_holes(setup):
    processor, model, batch, labels = setup
    budget = {"pixel_values": 0.5, "depth_values": 0.2}
    result = APGD(model, budget, norm="L2", steps=10, processor=processor).perturb(batch, labels)
    for name, eps in budget.items():
        assert result.l2[name].max() <= eps + 1e-5
    holes = ~batch["depth_mask"]
    assert torch.equal(result.inputs["depth_values"][holes], batch["depth_values"][holes])
    assert result.success.any()
    with pytest.raises(ValueError, match="`norm` must be one of"):
        APGD(model, norm="L1")


def test_apgd_eot_averages_gradients_over_passes(setup, monkeypatch):
    processor, model, batch, labels = setup
    calls = []
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    APGD(model, steps=3, eot_iter=4, processor=processor).perturb(batch, labels)
    assert len(calls) == (3 + 1) * 4
    # a deterministic model: the averaged gradient is the gradient, so EOT gives the plain run's result
    calls.clear()
    plain = APGD(model, steps=3, processor=processor).perturb(batch, labels)
    eot = APGD(model, steps=3, eot_iter=2, processor=processor).perturb(batch, labels)
    torch.testing.assert_close(plain.inputs["pixel_values"], eot.inputs["pixel_values"])


def test_apgd_t_runs_each_target_on_the_still_robust_samples(setup, monkeypatch):
    processor, model, batch, labels = setup
    runs = []
    original = APGD._attack_once

    def recording(self, run):
        runs.append((run.space.batch_size, self.objective.targets.clone()))
        return original(self, run)

    monkeypatch.setattr(APGD, "_attack_once", recording)
    attack = APGD(model, {"pixel_values": 2 / 255}, steps=5, num_target_classes=3, processor=processor)
    result = attack.perturb(batch, labels)
    with torch.no_grad():
        ranking = model(**{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}).logits.argsort(
            dim=1, descending=True
        )
    assert runs[0][0] == 12 and torch.equal(runs[0][1], ranking[:, 1])  # the 2nd class first, on every sample
    sizes = [size for size, _ in runs]
    assert sizes == sorted(sizes, reverse=True) and len(runs) <= 3
    fooled = predictions(model, result.inputs) != labels
    assert torch.equal(result.success, fooled)
    untouched = ~result.success
    assert torch.equal(result.inputs["pixel_values"][untouched], batch["pixel_values"][untouched])
    with pytest.raises(ValueError, match="num_target_classes"):
        APGD(model, num_target_classes=3, targeted=True)
    with pytest.raises(ValueError, match="at most 3 other classes"):
        APGD(model, num_target_classes=9)


def test_subsets_select_and_merge(setup):
    processor, model, batch, labels = setup
    index = torch.tensor([1, 4, 7])
    part = select_samples(batch, index)
    assert type(part) is type(batch) and part["pixel_values"].shape[0] == 3
    torch.testing.assert_close(part["depth_values"], batch["depth_values"][index])
    result = APGD(model, steps=3, processor=processor).perturb(part, labels[index])
    total = unattacked_result(batch, ["pixel_values", "depth_values"], torch.device("cpu"))
    merged = merge_result(total, result, index, torch.tensor([True, False, True]))
    torch.testing.assert_close(merged.inputs["pixel_values"][[1, 7]], result.inputs["pixel_values"][[0, 2]])
    torch.testing.assert_close(merged.inputs["pixel_values"][4], batch["pixel_values"][4])
    assert merged.linf["pixel_values"][4] == 0 and merged.linf["pixel_values"][1] == result.linf["pixel_values"][0]


@pytest.mark.parametrize("threat_model", ["rgb", "depth", "joint", "either"])
def test_autoattack_threat_models(setup, threat_model):
    processor, model, batch, labels = setup
    budget = {"pixel_values": 8 / 255, "depth_values": 0.05}
    if threat_model in ("rgb", "depth"):
        budget = {("pixel_values" if threat_model == "rgb" else "depth_values"): budget[
            "pixel_values" if threat_model == "rgb" else "depth_values"]}
    attack = AutoAttack(model, budget, threat_model=threat_model, processor=processor, square_queries=50)
    result = attack.perturb(batch, labels)
    accuracy = list(result.robust_accuracy_after.values())
    assert accuracy == sorted(accuracy, reverse=True)  # each attack only removes robust samples
    clean_correct = predictions(model, batch) == labels
    robust = predictions(model, result.inputs) == labels
    assert accuracy[0] == pytest.approx(clean_correct.float().mean().item())
    assert accuracy[-1] == pytest.approx(robust.float().mean().item())
    assert torch.equal(result.success, clean_correct & ~robust)
    keys = list(result.robust_accuracy_after)
    if threat_model == "either":
        assert keys[1].startswith("rgb/") and keys[-1] == "depth/square"
    else:
        assert keys == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    for name in ("pixel_values", "depth_values"):
        if name in result.linf:
            assert result.linf[name].max() <= budget.get(name, 0.0) + 1e-5
    if threat_model == "rgb":
        assert torch.equal(result.inputs["depth_values"], batch["depth_values"])
    holes = ~batch["depth_mask"]
    assert torch.equal(result.inputs["depth_values"][holes], batch["depth_values"][holes])


def test_either_is_the_per_sample_worst_case_of_the_single_modalities(setup):
    processor, model, batch, labels = setup
    budget = {"pixel_values": 2 / 255, "depth_values": 0.03}
    kwargs = {"processor": processor, "attacks_to_run": ("apgd-ce",)}
    rgb = AutoAttack(model, {"pixel_values": budget["pixel_values"]}, threat_model="rgb", **kwargs).perturb(batch, labels)
    depth = AutoAttack(model, {"depth_values": budget["depth_values"]}, threat_model="depth", **kwargs).perturb(
        batch, labels
    )
    either = AutoAttack(model, budget, threat_model="either", **kwargs).perturb(batch, labels)
    assert torch.equal(either.success, rgb.success | depth.success)


def test_autoattack_bad_arguments(setup):
    processor, model, _, _ = setup
    with pytest.raises(ValueError, match="`norm` must be one of"):
        AutoAttack(model, norm="L1")
    with pytest.raises(ValueError, match="`version` must be one of"):
        AutoAttack(model, version="plus")
    with pytest.raises(ValueError, match="`threat_model` must be one of"):
        AutoAttack(model, threat_model="both")
    with pytest.raises(ValueError, match="no budget for \\['depth_values'\\]"):
        AutoAttack(model, {"pixel_values": 8 / 255}, threat_model="joint")
    with pytest.raises(ValueError, match="`budget` names \\['depth_values'\\]"):
        AutoAttack(model, {"pixel_values": 8 / 255, "depth_values": 0.1}, threat_model="rgb")
    with pytest.raises(ValueError, match="`budget` names 'intrinsics'"):
        AutoAttack(model, {"intrinsics": 1.0})
    with pytest.raises(ValueError, match="attacks_to_run"):
        AutoAttack(model, attacks_to_run=("apgd-ce", "deepfool"))
    with pytest.raises(ValueError, match="at least 3 classes"):
        two_class = make_model(num_labels=2)
        APGD(two_class, loss="dlr")


def test_evaluate_robustness_uses_autoattack_by_default(setup, monkeypatch):
    import hf_rgbd.evaluation.robustness as robustness
    from hf_rgbd.data import make_synthetic_rgbd

    processor, model, _, _ = setup
    split = make_synthetic_rgbd(num_train=1, num_validation=1, num_test=8, image_size=32, seed=1)["test"]
    built = []
    original = robustness.AutoAttack

    def small(*args, **kwargs):  # the default ensemble, with a cheaper Square for the test
        built.append(kwargs)
        return original(*args, **kwargs, square_queries=20)

    monkeypatch.setattr(robustness, "AutoAttack", small)
    report = evaluate_robustness(model, processor, split, batch_size=4)
    entry = report["attacks"]["autoattack"]
    assert built == [{"processor": processor}]
    assert list(entry["robust_accuracy_after"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert entry["robust_accuracy_after"]["clean"] == pytest.approx(report["clean_accuracy"])
    assert entry["robust_accuracy_after"]["square"] == pytest.approx(entry["robust_accuracy"])


def test_evaluate_command(tmp_path, setup):
    processor = setup[0]
    model = make_model(num_labels=8)  # the synthetic scenes' classes
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    argv = [
        "evaluate", "--model", str(folder), "--dataset", "synthetic", "--synthetic_num_train", "4",
        "--synthetic_num_validation", "2", "--synthetic_num_test", "6", "--synthetic_image_size", "32",
        "--attack", "autoattack", "--threat_model", "rgb", "--version", "rand", "--budget", "pixel_values=4/255",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    report = json.loads((tmp_path / "out" / "robustness.json").read_text())
    entry = report["attacks"]["autoattack"]
    assert report["num_samples"] == 6 and entry["budget"] == {"pixel_values": pytest.approx(4 / 255)}
    assert list(entry["robust_accuracy_after"]) == ["clean", "apgd-ce", "apgd-dlr"]
    pgd = argv[:-10] + ["--attack", "pgd", "--budget", "depth_values=0.05", "--attack_args", "steps=3",
                       "--output_dir", str(tmp_path / "pgd")]  # fmt: skip
    assert cli_main(pgd) == 0
    assert json.loads((tmp_path / "pgd" / "robustness.json").read_text())["attacks"]["pgd"]["budget"] == {
        "depth_values": 0.05
    }
    with pytest.raises(ValueError, match="--threat_model is AutoAttack's"):
        cli_main(pgd[:-2] + ["--threat_model", "rgb", "--output_dir", str(tmp_path / "bad")])
