"""push_to_hub of model, processor, pipeline and model card over real HTTP (the local hub-compatible server of
`tests/hub_server.py`), then `from_pretrained` and `pipeline(...)` from the hub repo in a fresh process where
hf_rgbd is not importable, compared with the original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hub_server import LocalHubServer

REPO = "test-user/rgbd-classifier"


def run(script: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


def hub_environment(server: LocalHubServer, home: Path) -> dict[str, str]:
    """A child's environment pointed at the server through the client's documented endpoint setting."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    return {
        **env,
        "HF_ENDPOINT": server.endpoint,
        "HF_TOKEN": "hf_dummy",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_MODULES_CACHE": str(home / "modules"),
    }


@pytest.fixture
def scene(tmp_path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    millimetres = rng.integers(500, 4000, (40, 40)).astype(np.uint16)
    millimetres[:4] = 0
    Image.fromarray(millimetres).save(tmp_path / "depth.png")
    return {"rgb": str(tmp_path / "rgb.png"), "depth": str(tmp_path / "depth.png")}


def test_push_model_processor_pipeline_and_card_then_load_without_hf_rgbd(tmp_path, scene):
    with LocalHubServer(tmp_path / "hub") as server:
        pushed = run(
            f"""
            import json
            import numpy as np, torch
            from PIL import Image
            from transformers import pipeline
            import hf_rgbd
            from hf_rgbd import (RgbdClipConfig, RgbdClipForImageClassification, RgbdDepthProcessor,
                                 RgbdImageProcessor, RgbdProcessor)
            torch.manual_seed(0)
            labels = ["sphere", "cube", "cylinder"]
            config = RgbdClipConfig.tiny(num_labels=3, id2label=dict(enumerate(labels)),
                                         label2id={{n: i for i, n in enumerate(labels)}}, modality_dropout=0.1)
            model = RgbdClipForImageClassification(config).eval()
            processor = RgbdProcessor(RgbdImageProcessor(size={{"height": 32, "width": 32}}),
                                      RgbdDepthProcessor(representation="dataset", depth_mean=2.0, depth_std=1.0))
            classifier = pipeline("rgbd-image-classification", model=model, processor=processor)
            commit = classifier.push_to_hub({REPO!r}, metrics={{"eval_accuracy": 0.875}})
            batch = processor(images=Image.open({scene["rgb"]!r}).convert("RGB"),
                              depths=np.asarray(Image.open({scene["depth"]!r})).astype("int32"))
            with torch.no_grad():
                logits = model(**{{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}}).logits
            print(json.dumps({{"logits": logits[0].tolist(), "commit": commit.oid,
                              "pipeline": classifier({scene["rgb"]!r}, depths={scene["depth"]!r}, top_k=3)}}))
            """,
            hub_environment(server, tmp_path / "home_push"),
            tmp_path,
        )
        expected = json.loads(pushed)
        files = server.repo_files(REPO)
        for name in (
            "config.json", "model.safetensors", "processor_config.json", "modeling_rgbd_clip.py",
            "pipeline_rgbd_classification.py", "pipeline_rgbd_common.py", "README.md",
        ):
            assert name in files, sorted(files)
        card = files["README.md"].decode()
        assert "`rgbd-image-classification`" in card and "RGB and depth" in card
        assert "`dataset`" in card and "**Depth units**: metres" in card and "| eval_accuracy | 0.875 |" in card
        assert json.loads(files["config.json"])["custom_pipelines"]["rgbd-image-classification"]

        loaded = run(
            f"""
            import json, sys
            sys.modules["hf_rgbd"] = None  # hf_rgbd must not be importable in this process
            import numpy as np, torch
            from PIL import Image
            from transformers import AutoModelForImageClassification, AutoProcessor, pipeline
            model = AutoModelForImageClassification.from_pretrained({REPO!r}, trust_remote_code=True).eval()
            processor = AutoProcessor.from_pretrained({REPO!r}, trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            batch = processor(images=Image.open({scene["rgb"]!r}).convert("RGB"),
                              depths=np.asarray(Image.open({scene["depth"]!r})).astype("int32"))
            with torch.no_grad():
                logits = model(**{{k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}}).logits
            classifier = pipeline("rgbd-image-classification", model={REPO!r}, trust_remote_code=True)
            at_commit = pipeline("rgbd-image-classification", model={REPO!r}, revision={expected["commit"]!r},
                                 trust_remote_code=True)
            print(json.dumps({{"logits": logits[0].tolist(),
                              "pipeline": classifier({scene["rgb"]!r}, depths={scene["depth"]!r}, top_k=3),
                              "at_commit": at_commit({scene["rgb"]!r}, depths={scene["depth"]!r}, top_k=3)}}))
            """,
            hub_environment(server, tmp_path / "home_load"),
            tmp_path,
        )
        got = json.loads(loaded)
        assert not server.unhandled, server.unhandled
    np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-6, atol=1e-6)
    for key in ("pipeline", "at_commit"):
        assert [r["label"] for r in got[key]] == [r["label"] for r in expected["pipeline"]]
        assert [r["score"] for r in got[key]] == pytest.approx([r["score"] for r in expected["pipeline"]], abs=1e-6)
