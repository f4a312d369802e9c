"""`hf-rgbd demo --quick`: the report's files, its numbers (JSON and Markdown agree), re-use and bad input."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from hf_rgbd.cli import main
from hf_rgbd.demo import FAMILIES, QUICK, REFERENCES, THREAT_MODELS, settings_dict


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    assert main(["demo", "--output-dir", str(output), "--quick", "--no-progress"]) == 0
    return output, time.perf_counter() - start


def _cells(report: str, section: str, first_cells: list[str]) -> list[str]:
    """The cells after `first_cells` of the one table row that starts with them in the `## section` of `report`."""
    text = report.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    prefix = "| " + " | ".join(first_cells) + " |"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, (prefix, rows)
    return [cell.strip() for cell in rows[0][len(prefix) :].strip().strip("|").split("|")]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def test_quick_demo_writes_every_file(quick_demo):
    output, _ = quick_demo
    results = json.loads((output / "results.json").read_text())
    assert results["quick"] is True and results["settings"] == settings_dict(QUICK)
    assert set(results["families"]) == {spec.name for spec in FAMILIES}
    assert set(results["references"]) == {name for name, _, _ in REFERENCES}
    expected_figures = {"accuracy.png", "robustness.png", "retrieval.png"} | {
        f"examples_{spec.name}.png" for spec in FAMILIES
    }
    assert set(results["figures"]) == expected_figures
    for figure in expected_figures:
        assert (output / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    report = (output / "report.md").read_text()
    for figure in expected_figures:
        assert f"]({figure})" in report
    for name in [spec.name for spec in FAMILIES] + [name for name, _, _ in REFERENCES]:
        folder = output / "models" / name
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file(), name
    for spec in FAMILIES:
        if spec.backbone == "vit":  # the transformer families are pretrained first, and that checkpoint is kept
            assert (output / "models" / f"{spec.name}_pretrained" / "model.safetensors").is_file()
    assert not [path for path in output.rglob("*") if "incomplete" in path.name]


def test_quick_demo_numbers_agree_between_json_and_markdown(quick_demo):
    output, _ = quick_demo
    results = json.loads((output / "results.json").read_text())
    report = (output / "report.md").read_text()
    for spec in FAMILIES:
        row = results["families"][spec.name]
        clean = row["clean"]
        cells = _cells(report, "Clean accuracy", [row["title"]])
        assert cells[-3:] == [_percent(clean["rgbd"]), _percent(clean["depth_missing"]), _percent(clean["rgb_missing"])]
        assert cells[2] == str(row["training"]["epochs"])
        robustness = row["robustness"]
        for threat in THREAT_MODELS:
            curve = robustness["curves"][threat]
            assert len(curve) == len(QUICK.ladder)
            cells = _cells(report, "Robustness", [row["title"], threat])
            assert cells == [_percent(robustness["clean_accuracy"])] + [_percent(p["robust_accuracy"]) for p in curve]
            for point in curve:  # an attack never adds correct answers
                assert 0.0 <= point["robust_accuracy"] <= robustness["clean_accuracy"] + 1e-9
        ensemble = robustness["autoattack"]
        after = list(ensemble["robust_accuracy_after"].values())
        assert after == sorted(after, reverse=True)  # each attack runs on what the previous ones left
        assert ensemble["robust_accuracy"] == after[-1]
        assert _cells(report, "Robustness", [row["title"], _percent(ensemble["clean_accuracy"])]) == [_percent(a) for a in after]
        if "retrieval" in row:
            retrieval = row["retrieval"]
            cells = _cells(report, "Retrieval and matching after pretraining", [row["title"], _percent(retrieval["rgb_to_depth_R@1"])])
            assert cells[0] == _percent(retrieval["depth_to_rgb_R@1"])
        assert ("retrieval" in row) == (spec.backbone == "vit")
        assert row["train_seconds"] <= 3 * QUICK.train_seconds  # the budget is kept (measured step times vary)
    for name, _, modality in REFERENCES:
        accuracy = results["references"][name]["clean"][modality]
        assert _cells(report, "Clean accuracy", [name.split("_")[0].upper(), modality]) == [_percent(accuracy)]


def test_quick_demo_models_load_in_the_pipeline(quick_demo):
    from transformers import pipeline

    from hf_rgbd.data import make_synthetic_rgbd

    output, _ = quick_demo
    split = make_synthetic_rgbd(num_train=1, num_validation=1, num_test=1, image_size=32, seed=5)["test"]
    scene = split[0]
    classifier = pipeline("rgbd-image-classification", model=str(output / "models" / "fusion_encoder"))
    predictions = classifier(scene["image"], depths=scene["depth"], top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(split.features["label"].names)


def test_quick_demo_rerun_reuses_everything(quick_demo, tmp_path):
    output, first_seconds = quick_demo
    copy = tmp_path / "again"
    shutil.copytree(output, copy)
    weights = copy / "models" / "cnn_early" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert main(["demo", "--output-dir", str(copy), "--quick", "--no-progress"]) == 0
    seconds = time.perf_counter() - start
    before = json.loads((output / "results.json").read_text())
    after = json.loads((copy / "results.json").read_text())
    for group in ("families", "references"):
        for name, row in before[group].items():
            assert after[group][name]["clean"] == row["clean"]
            assert after[group][name].get("robustness") == row.get("robustness")
    assert weights.stat().st_mtime_ns == stamp  # not trained or saved again
    assert seconds < first_seconds / 2


def test_demo_refuses_an_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["demo", "--output-dir", str(blocker / "report"), "--quick"]) == 2
    error = capsys.readouterr().err
    assert "--output-dir" in error and "not a writable directory" in error
    assert blocker.read_text() == "not a directory"


def test_demo_refuses_a_worker_count_below_one(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--quick", "--workers", "0"]) == 2
    assert "--workers must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_reports_a_corrupted_reused_model_folder(quick_demo, tmp_path, capsys):
    output, _ = quick_demo
    copy = tmp_path / "corrupted"
    shutil.copytree(output, copy)
    weights = copy / "models" / "cnn_feature" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(os.path.getsize(weights) // 2)
    results_before = (copy / "results.json").read_text()
    assert main(["demo", "--output-dir", str(copy), "--quick", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "cnn_feature" in error and "corrupted" in error
    after = json.loads((copy / "results.json").read_text())  # still whole, and nothing it held was lost
    before = json.loads(results_before)
    for group in ("families", "references"):
        assert after[group] == before[group]
    assert not [path for path in copy.rglob("*") if "incomplete" in path.name]
