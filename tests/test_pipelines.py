"""The RGB-D pipelines driven as a user would: saved folders, files on disk in every accepted format, and the
outputs compared with calling the processor and the model directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from hf_rgbd import (
    PGD,
    RgbdAlbefConfig,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdAlbefForRgbdMatching,
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
    RgbdVlmoConfig,
    RgbdVlmoForImageClassification,
    RgbdVlmoForRgbdMatching,
)
from hf_rgbd.attacks import physical_inputs
from hf_rgbd.cli import main as cli_main

LABELS = ["sphere", "cube", "cylinder"]
LABEL_KWARGS = {"num_labels": 3, "id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
CNN = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "se_reduction": 4}
SIZE = 32


def make_processor() -> RgbdProcessor:
    return RgbdProcessor(
        RgbdImageProcessor(size={"height": SIZE, "width": SIZE}),
        RgbdDepthProcessor(representation="metric", max_depth=6.0, depth_vocab_size=16, depth_patch_size=8),
    )


CLASSIFIERS = {
    "cnn": lambda: RgbdCnnForImageClassification(RgbdCnnConfig(**CNN, **LABEL_KWARGS, modality_dropout=0.2)),
    "clip": lambda: RgbdClipForImageClassification(RgbdClipConfig.tiny(**LABEL_KWARGS, modality_dropout=0.2)),
    "albef": lambda: RgbdAlbefForImageClassification(RgbdAlbefConfig.tiny(**LABEL_KWARGS, modality_dropout=0.2)),
    "vlmo": lambda: RgbdVlmoForImageClassification(RgbdVlmoConfig.tiny(**LABEL_KWARGS, modality_dropout=0.2)),
}
MATCHERS = {
    "clip": lambda: RgbdClipModel(RgbdClipConfig.tiny()),
    "albef": lambda: RgbdAlbefForRgbdMatching(RgbdAlbefConfig.tiny()),
    "vlmo": lambda: RgbdVlmoForRgbdMatching(RgbdVlmoConfig.tiny()),
}


def save(model: torch.nn.Module, folder: Path) -> Path:
    model.eval().save_pretrained(folder)
    make_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One RGB-D scene (48x48, holes included) in every accepted file format, plus its depth in metres."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    millimetres = rng.integers(400, 5000, (48, 48)).astype(np.uint16)
    millimetres[:6, :10] = 0  # holes
    paths = {"rgb_png": root / "rgb.png", "rgb_jpg": root / "rgb.jpg", "depth_png": root / "depth.png"}
    Image.fromarray(rgb).save(paths["rgb_png"])
    Image.fromarray(rgb).save(paths["rgb_jpg"], quality=95)
    Image.fromarray(millimetres).save(paths["depth_png"])
    rotated = ((millimetres.astype(np.uint32) << 3) | (millimetres.astype(np.uint32) >> 13)) & 0xFFFF
    paths["depth_sunrgbd"] = root / "depth_sunrgbd.png"
    Image.fromarray(rotated.astype(np.uint16)).save(paths["depth_sunrgbd"])
    metres = millimetres.astype(np.float64) / 1000.0
    paths["depth_npy"] = root / "depth.npy"
    np.save(paths["depth_npy"], metres.astype(np.float32))
    paths["depth_tiff"] = root / "depth.tiff"
    Image.fromarray(metres.astype(np.float32), mode="F").save(paths["depth_tiff"])
    paths["depth_8bit"] = root / "depth_8bit.png"
    Image.fromarray((millimetres // 20).astype(np.uint8)).save(paths["depth_8bit"])
    paths["rgb_wide"] = root / "rgb_wide.png"
    Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(paths["rgb_wide"])
    return {**paths, "rgb": rgb, "metres": metres.astype(np.float32)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    saved = {f"classifier_{name}": save(build(), root / f"classifier_{name}") for name, build in CLASSIFIERS.items()}
    saved.update({f"matcher_{name}": save(build(), root / f"matcher_{name}") for name, build in MATCHERS.items()})
    saved["pretraining_albef"] = save(RgbdAlbefForPreTraining(RgbdAlbefConfig.tiny()), root / "pretraining_albef")
    return saved


def direct_scores(model, processor, images, depths, **processor_kwargs) -> torch.Tensor:
    batch = processor(images=images, depths=depths, **processor_kwargs)
    inputs = {k: v for k, v in batch.items() if k in ("pixel_values", "depth_values", "depth_mask")}
    with torch.no_grad():
        return model(**inputs).logits.softmax(dim=-1)


def as_scores(result: list[dict], model) -> torch.Tensor:
    """The pipeline's `[{"label", "score"}]` as a (num_labels,) tensor in class order."""
    scores = torch.zeros(model.config.num_labels)
    for entry in result:
        scores[model.config.label2id[entry["label"]]] = entry["score"]
    return scores


# ------------------------------------------------------------------------------------------------ classification
@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_classification_matches_processor_and_model(family, folders, files):
    folder = folders[f"classifier_{family}"]
    classifier = pipeline("rgbd-image-classification", model=str(folder))
    model, processor = classifier.model, classifier.processor
    expected = direct_scores(model, processor, files["rgb"], files["metres"])[0]
    result = classifier(str(files["rgb_png"]), depths=str(files["depth_npy"]), top_k=3)
    assert [r["label"] for r in result] == [LABELS[i] for i in expected.argsort(descending=True)]
    torch.testing.assert_close(as_scores(result, model), expected, atol=1e-6, rtol=1e-5)
    assert len(classifier(str(files["rgb_png"]), depths=str(files["depth_npy"]), top_k=1)) == 1
    assert len(classifier(str(files["rgb_png"]), depths=str(files["depth_npy"]), top_k=50)) == 3  # clipped
    # depth missing: the model's missing-modality path (it was configured with modality dropout)
    without_depth = direct_scores(model, processor, files["rgb"], None)[0]
    torch.testing.assert_close(as_scores(classifier(str(files["rgb_png"]), top_k=3), model), without_depth)


@pytest.mark.parametrize(
    "depth_key, kwargs",
    [
        ("depth_png", {"depth_scale": 0.001}),
        ("depth_png", {}),  # the processor's default depth_scale is millimetres
        ("depth_sunrgbd", {"depth_encoding": "sunrgbd"}),
        ("depth_tiff", {}),
        ("depth_npy", {}),
    ],
)
def test_every_depth_file_format_gives_the_metres_result(depth_key, kwargs, folders, files):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_cnn"]))
    expected = direct_scores(classifier.model, classifier.processor, files["rgb"], files["metres"])[0]
    result = classifier(str(files["rgb_png"]), depths=str(files[depth_key]), top_k=3, **kwargs)
    torch.testing.assert_close(as_scores(result, classifier.model), expected, atol=1e-6, rtol=1e-5)


def assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    """Same labels in the same order, scores equal up to float rounding (batched matmuls round differently)."""
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-6)


def test_rgb_as_path_pil_array_and_the_input_forms_agree(folders, files):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_clip"]))
    depth = files["metres"]
    reference = classifier(str(files["rgb_png"]), depths=depth, top_k=3)
    for image in (Path(files["rgb_png"]), Image.open(files["rgb_png"]), files["rgb"]):
        assert classifier(image, depths=depth, top_k=3) == reference
    assert classifier({"image": str(files["rgb_png"]), "depth": depth}, top_k=3) == reference
    batch = classifier([str(files["rgb_png"]), str(files["rgb_jpg"])] * 2, depths=[depth] * 4, top_k=3, batch_size=3)
    assert len(batch) == 4
    single_jpg = classifier(str(files["rgb_jpg"]), depths=depth, top_k=3)
    for got, want in zip(batch, [reference, single_jpg] * 2):
        assert_same_predictions(got, want)
    dicts = classifier([{"image": str(files["rgb_png"]), "depth": depth}] * 2, top_k=3)
    assert dicts == [reference, reference]


def test_function_to_apply_and_label_names(folders, files):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_cnn"]))
    batch = classifier.processor(images=files["rgb"], depths=files["metres"])
    with torch.no_grad():
        logits = classifier.model(**{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}).logits[0]
    raw = classifier(files["rgb"], depths=files["metres"], function_to_apply="none", top_k=3)
    torch.testing.assert_close(as_scores(raw, classifier.model), logits)
    sigmoid = classifier(files["rgb"], depths=files["metres"], function_to_apply="sigmoid", top_k=3)
    torch.testing.assert_close(as_scores(sigmoid, classifier.model), logits.sigmoid())
    assert {r["label"] for r in raw} == set(LABELS)


# ------------------------------------------------------------------------------------------------ matching
@pytest.mark.parametrize("family", sorted(MATCHERS))
def test_matching_scores_and_retrieval_match_the_model(family, folders, files):
    matcher = pipeline("rgbd-matching", model=str(folders[f"matcher_{family}"]))
    model, processor = matcher.model, matcher.processor
    rng = np.random.default_rng(1)
    gallery = [files["metres"]] + [np.clip(files["metres"] * rng.uniform(0.3, 1.5), 0, 5.9) for _ in range(3)]
    images = [files["rgb"]] * len(gallery)
    batch = processor(images=images, depths=gallery)
    inputs = {k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}
    with torch.no_grad():
        if family == "clip":
            out = model(**inputs, return_loss=False)
            expected = (out.rgb_embeds @ out.depth_embeds.t())[0]
            score_type = "cosine"
        else:
            expected = model(**inputs, use_itm_head=True).itm_score.softmax(dim=-1)[:, 1]
            score_type = "itm"
    pair = matcher(str(files["rgb_png"]), depths=str(files["depth_npy"]))
    assert pair["score_type"] == score_type
    assert pair["score"] == pytest.approx(float(expected[0]), abs=1e-5)
    pairs = matcher(images, depths=gallery, batch_size=2)
    assert [p["score"] for p in pairs] == pytest.approx(expected.tolist(), abs=1e-5)
    ranked = matcher(files["rgb"], depth_gallery=gallery, top_k=3)
    order = expected.argsort(descending=True)[:3]
    assert [r["index"] for r in ranked] == order.tolist()
    assert [r["score"] for r in ranked] == pytest.approx(expected[order].tolist(), abs=1e-5)
    # the reverse: one depth map against RGB images
    reverse = matcher(depths=files["metres"], image_gallery=[files["rgb"], np.flipud(files["rgb"]).copy()], top_k=2)
    assert sorted(r["index"] for r in reverse) == [0, 1]
    assert reverse[0]["score"] >= reverse[1]["score"]


def test_itm_models_also_give_cosine_scores(folders, files):
    matcher = pipeline("rgbd-matching", model=str(folders["matcher_albef"]))
    batch = matcher.processor(images=files["rgb"], depths=files["metres"])
    with torch.no_grad():
        cosine = matcher.model(
            pixel_values=batch["pixel_values"], depth_values=batch["depth_values"], depth_mask=batch["depth_mask"],
            use_itm_head=False,
        ).itm_score[0, 0]
    result = matcher(files["rgb"], depths=files["metres"], score_type="cosine")
    assert result == {"score": pytest.approx(float(cosine), abs=1e-6), "score_type": "cosine"}


def test_a_pretraining_folder_serves_matching(folders, files):
    matcher = pipeline("rgbd-matching", model=str(folders["pretraining_albef"]))
    assert type(matcher.model) is RgbdAlbefForRgbdMatching
    pretraining = RgbdAlbefForPreTraining.from_pretrained(folders["pretraining_albef"])
    torch.testing.assert_close(matcher.model.itm_head.state_dict(), pretraining.itm_head.state_dict())
    assert 0.0 <= matcher(files["rgb"], depths=files["metres"])["score"] <= 1.0


# ------------------------------------------------------------------------------------------------ attack
def test_attack_pipeline_is_the_attack_reproducible_and_keeps_holes(folders, files):
    budget = {"pixel_values": 4 / 255, "depth_values": 0.05}
    attacker = pipeline(
        "rgbd-adversarial-attack", model=str(folders["classifier_cnn"]), attack="pgd", budget=budget, steps=4, seed=3
    )
    result = attacker(str(files["rgb_png"]), depths=str(files["depth_png"]), depth_scale=0.001, top_k=3)
    again = attacker(str(files["rgb_png"]), depths=str(files["depth_png"]), depth_scale=0.001, top_k=3)
    np.testing.assert_array_equal(result["adversarial_rgb"], again["adversarial_rgb"])
    np.testing.assert_array_equal(result["adversarial_depth"], again["adversarial_depth"])
    assert result["seed"] == 3 and result["attack"] == "pgd" and result["budget"] == budget
    # the same PGD run directly on the processed pair, attacked on the model's clean prediction
    model, processor = attacker.model, attacker.processor
    batch = processor(images=files["rgb"], depths=files["metres"])
    with torch.no_grad():
        clean = model(**{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}).logits
    direct = PGD(model, budget=budget, steps=4, processor=processor, seed=3).perturb(batch, clean.argmax(dim=1))
    physical = physical_inputs(direct.inputs, processor)
    np.testing.assert_allclose(result["adversarial_rgb"], physical["pixel_values"][0].permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(result["adversarial_depth"], physical["depth_values"][0, 0].numpy(), atol=1e-6)
    assert result["success"] == bool(direct.success[0])
    assert result["predictions_before"][0]["label"] == LABELS[int(clean.argmax())]
    # budgets and holes, in physical units
    clean_physical = physical_inputs(batch, processor)
    rgb_seen, depth_seen = clean_physical["pixel_values"][0].permute(1, 2, 0), clean_physical["depth_values"][0, 0]
    np.testing.assert_allclose(result["clean_rgb"], rgb_seen.numpy(), atol=1e-6)
    np.testing.assert_allclose(result["clean_depth"], depth_seen.numpy(), atol=1e-6)
    assert (result["clean_depth"][~batch["depth_mask"][0, 0].numpy()] == 0).all()
    rgb_delta = np.abs(result["adversarial_rgb"] - clean_physical["pixel_values"][0].permute(1, 2, 0).numpy())
    assert rgb_delta.max() <= budget["pixel_values"] + 1e-6
    holes = ~batch["depth_mask"][0, 0].numpy()
    assert holes.any() and (result["adversarial_depth"][holes] == 0).all()
    depth_delta = np.abs(result["adversarial_depth"] - clean_physical["depth_values"][0, 0].numpy())
    assert depth_delta.max() <= budget["depth_values"] + 1e-5
    assert result["perturbation"]["pixel_values"]["linf"] == pytest.approx(float(rgb_delta.max()), abs=1e-6)
    image = np.asarray(result["adversarial_image"], dtype=np.float32) / 255.0
    assert result["adversarial_image"].size == (SIZE, SIZE)
    assert np.abs(image - result["adversarial_rgb"]).max() <= 0.5 / 255 + 1e-6


def test_attack_by_name_with_its_arguments_and_call_overrides(folders, files):
    attacker = pipeline("rgbd-adversarial-attack", model=str(folders["classifier_clip"]), attack="fgsm")
    fgsm = attacker(files["rgb"], depths=files["metres"], budget={"pixel_values": 2 / 255})
    assert fgsm["attack"] == "fgsm" and set(fgsm["perturbation"]) == {"pixel_values"}
    assert fgsm["perturbation"]["pixel_values"]["linf"] == pytest.approx(2 / 255, abs=1e-6)
    apgd = attacker(files["rgb"], depths=files["metres"], attack="apgd", steps=5, n_restarts=1, labels="cube")
    assert apgd["attack"] == "apgd" and apgd["seed"] == 0
    batch = attacker([files["rgb"]] * 3, depths=[files["metres"]] * 3, batch_size=2, labels=[0, 1, 2])
    assert len(batch) == 3


def test_attack_on_matching_makes_matched_pairs_read_unmatched(folders, files):
    attacker = pipeline(
        "rgbd-adversarial-attack",
        model=RgbdAlbefForRgbdMatching.from_pretrained(folders["matcher_albef"]),
        processor=make_processor(),
        attack="pgd",
        steps=5,
    )
    result = attacker(files["rgb"], depths=files["metres"])
    assert result["predictions_before"]["score_type"] == "itm"
    assert result["predictions_after"]["score"] < result["predictions_before"]["score"]


def test_attack_command_writes_the_pair_and_a_report(folders, files, tmp_path, capsys):
    argv = [
        "attack", str(files["rgb_png"]), str(files["depth_png"]), "--model", str(folders["classifier_cnn"]),
        "--attack", "pgd", "--budget", "pixel_values=8/255", "depth_values=0.05", "--attack-args", "steps=3",
        "--seed", "1", "--output-dir", str(tmp_path / "out"),
    ]
    assert cli_main(argv) == 0
    report = json.loads((tmp_path / "out" / "attack.json").read_text())
    assert report["budget"] == {"pixel_values": pytest.approx(8 / 255), "depth_values": 0.05}
    assert report["attack_arguments"] == {"steps": 3} and report["seed"] == 1
    image = Image.open(tmp_path / "out" / "adversarial_image.png")
    depth = Image.open(tmp_path / "out" / "adversarial_depth.png")
    assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    assert depth.mode.startswith("I;16") and depth.size == (SIZE, SIZE)
    attacker = pipeline(
        "rgbd-adversarial-attack", model=str(folders["classifier_cnn"]), budget={"pixel_values": 8 / 255,
        "depth_values": 0.05}, steps=3, seed=1,
    )
    expected = attacker(str(files["rgb_png"]), depths=str(files["depth_png"]))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected["adversarial_image"]))
    np.testing.assert_array_equal(np.asarray(depth), np.rint(expected["adversarial_depth"] * 1000).astype(np.uint16))
    assert report["predictions_after"] == expected["predictions_after"]
    assert "pgd:" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ saving
def test_saved_folders_list_their_tasks_and_load_without_trust_remote_code(folders):
    config = json.loads((folders["classifier_cnn"] / "config.json").read_text())
    assert sorted(config["custom_pipelines"]) == ["rgbd-adversarial-attack", "rgbd-image-classification"]
    assert config["custom_pipelines"]["rgbd-image-classification"]["impl"] == (
        "pipeline_rgbd_classification.RgbdImageClassificationPipeline"
    )
    matcher_config = json.loads((folders["matcher_albef"] / "config.json").read_text())
    assert list(matcher_config["custom_pipelines"]) == ["rgbd-matching"]
    for name in ("pipeline_rgbd_common.py", "pipeline_rgbd_classification.py", "pipeline_rgbd_attack.py"):
        assert (folders["classifier_cnn"] / name).is_file()
    # with hf_rgbd installed the registered pipeline serves the folder: no remote code needed
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_cnn"]))
    assert type(classifier).__module__ == "hf_rgbd.pipelines.pipeline_rgbd_classification"


def test_pipeline_save_pretrained_round_trip(folders, files, tmp_path):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_vlmo"]))
    classifier.save_pretrained(tmp_path / "saved")
    reloaded = pipeline("rgbd-image-classification", model=str(tmp_path / "saved"))
    assert reloaded(files["rgb"], depths=files["metres"]) == classifier(files["rgb"], depths=files["metres"])
    assert (tmp_path / "saved" / "processor_config.json").is_file()


def test_pipelines_run_as_remote_code_without_hf_rgbd(folders, files, tmp_path):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_albef"]))
    matcher = pipeline("rgbd-matching", model=str(folders["matcher_vlmo"]))
    expected = {
        "classification": classifier(str(files["rgb_png"]), depths=str(files["depth_png"]), top_k=3),
        "matching": matcher(str(files["rgb_png"]), depths=str(files["depth_png"])),
    }
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["hf_rgbd"] = None  # hf_rgbd must not be importable in this process
        from transformers import pipeline
        classifier = pipeline("rgbd-image-classification", model={str(folders["classifier_albef"])!r},
                              trust_remote_code=True)
        matcher = pipeline("rgbd-matching", model={str(folders["matcher_vlmo"])!r}, trust_remote_code=True)
        assert type(classifier).__module__.startswith("transformers_modules"), type(classifier).__module__
        out = {{
            "classification": classifier({str(files["rgb_png"])!r}, depths={str(files["depth_png"])!r}, top_k=3),
            "matching": matcher({str(files["rgb_png"])!r}, depths={str(files["depth_png"])!r}),
        }}
        try:
            pipeline("rgbd-adversarial-attack", model={str(folders["classifier_albef"])!r}, trust_remote_code=True)
        except ImportError as error:
            out["attack_error"] = str(error)
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["label"] for r in got["classification"]] == [r["label"] for r in expected["classification"]]
    assert [r["score"] for r in got["classification"]] == pytest.approx([r["score"] for r in expected["classification"]])
    assert got["matching"]["score"] == pytest.approx(expected["matching"]["score"])
    assert "hf_rgbd" in got["attack_error"] and "pip install" in got["attack_error"]


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_are_named(folders, files):
    classifier = pipeline("rgbd-image-classification", model=str(folders["classifier_cnn"]))
    with pytest.raises(ValueError, match="aspect"):
        classifier(str(files["rgb_wide"]), depths=str(files["depth_png"]))
    assert classifier(str(files["rgb_wide"]), depths=str(files["depth_png"]), allow_aspect_change=True)
    with pytest.raises(ValueError, match=r"depths\[0\].*8-bit"):
        classifier(str(files["rgb_png"]), depths=str(files["depth_8bit"]))
    with pytest.raises(FileNotFoundError, match=r"images\[0\].*no such file"):
        classifier("missing.png", depths=str(files["depth_png"]))
    with pytest.raises(FileNotFoundError, match=r"depths\[0\]"):
        classifier(str(files["rgb_png"]), depths="missing_depth.png")
    with pytest.raises(ValueError, match="depth files must be"):
        classifier(str(files["rgb_png"]), depths=str(files["rgb_jpg"]))
    with pytest.raises(ValueError, match="`images` has 2 items and `depths` 1"):
        classifier([files["rgb"]] * 2, depths=[files["metres"]])
    with pytest.raises(ValueError, match="top_k"):
        classifier(files["rgb"], depths=files["metres"], top_k=0)
    with pytest.raises(ValueError, match="function_to_apply"):
        classifier(files["rgb"], depths=files["metres"], function_to_apply="relu")
    with pytest.raises(ValueError, match="depth_encoding"):
        classifier(files["rgb"], depths=str(files["depth_png"]), depth_encoding="kinect")


def test_bad_attack_and_matching_setups_are_named(folders, files):
    rgb_only = RgbdCnnForImageClassification(RgbdCnnConfig(**CNN, **LABEL_KWARGS, modalities="rgb")).eval()
    with pytest.raises(ValueError, match=r"`budget` names \['depth_values'\].*modalities='rgb'"):
        pipeline("rgbd-adversarial-attack", model=rgb_only, processor=make_processor(),
                 budget={"pixel_values": 8 / 255, "depth_values": 0.05})
    with pytest.raises(ValueError, match="`attack` must be one of"):
        pipeline("rgbd-adversarial-attack", model=str(folders["classifier_cnn"]), attack="deepfool")
    with pytest.raises(ValueError, match="takes no argument.*momentum"):
        pipeline("rgbd-adversarial-attack", model=str(folders["classifier_cnn"]), attack="pgd", momentum=0.9)
    attacker = pipeline("rgbd-adversarial-attack", model=str(folders["classifier_cnn"]))
    with pytest.raises(ValueError, match="unknown label 'dog'"):
        attacker(files["rgb"], depths=files["metres"], labels="dog")
    with pytest.raises(ValueError, match="no matching head"):
        pipeline("rgbd-matching", model=attacker.model, processor=make_processor())
    matcher = pipeline("rgbd-matching", model=str(folders["matcher_clip"]))
    with pytest.raises(ValueError, match="score_type"):
        matcher(files["rgb"], depths=files["metres"], score_type="itm")
    with pytest.raises(ValueError, match="image and a depth map"):
        matcher(files["rgb"])
    with pytest.raises(ValueError, match="depth_gallery"):
        matcher(files["rgb"], depths=files["metres"], depth_gallery=[files["metres"]])
    with pytest.raises(ValueError, match="untrained"):
        pipeline("rgbd-image-classification", model=str(folders["pretraining_albef"]))
