"""`hf-rgbd app`: try an attack on an RGB-D model in the browser.

A Gradio app served on 127.0.0.1 only, analytics off and with system fonts (it makes no outside request): upload an
RGB image and a depth map (16-bit PNG in millimetres, SUN RGB-D PNG, `.npy` or float TIFF in metres) or pick a
synthetic example, pick a model (a folder `hf-rgbd demo` saved, any local folder or a hub id), an attack and a
budget per modality; it shows the predictions before and after, the adversarial RGB and depth and the perturbation
maps. Everything it computes goes through the `rgbd-adversarial-attack` pipeline.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ATTACKS = ("pgd", "apgd", "fgsm", "square", "autoattack")
APP_TITLE = "hf-rgbd: attack an RGB-D model"


def demo_model_folders(demo_dir: str | os.PathLike | None) -> dict[str, str]:
    """{name: folder} of the classifiers `hf-rgbd demo` saved under `demo_dir/models` (pretraining folders left
    out: they have no classifier); empty when there is none."""
    if demo_dir is None:
        return {}
    models = Path(demo_dir) / "models"
    if not models.is_dir():
        return {}
    return {
        folder.name: str(folder)
        for folder in sorted(models.iterdir())
        if (folder / "config.json").is_file() and not folder.name.endswith(("_pretrained", ".incomplete"))
    }


def write_synthetic_examples(folder: str | os.PathLike, count: int = 4, seed: int = 0) -> dict[str, tuple[str, str]]:
    """`count` synthetic test scenes written as files a user could upload: the RGB as PNG and the depth as a
    16-bit PNG in millimetres (0 = hole). Returns {"<label> (scene i)": (rgb path, depth path)}."""
    from PIL import Image

    from .data import make_synthetic_rgbd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    split = make_synthetic_rgbd(num_train=1, num_validation=1, num_test=count, seed=seed, num_threads=1)["test"]
    names = split.features["label"].names
    examples = {}
    for index, example in enumerate(split):
        rgb_path, depth_path = folder / f"scene{index}_rgb.png", folder / f"scene{index}_depth.png"
        example["image"].save(rgb_path)
        depth = np.asarray(example["depth"], dtype=np.float32)
        Image.fromarray(np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)).save(depth_path)
        examples[f"{names[example['label']]} (scene {index})"] = (str(rgb_path), str(depth_path))
    return examples


@functools.lru_cache(maxsize=4)
def attack_pipeline(model: str, trust_remote_code: bool = False):
    """The `rgbd-adversarial-attack` pipeline of `model` (a folder or hub id), built once per model."""
    from transformers import pipeline

    from .pipelines import register_pipelines

    register_pipelines()
    return pipeline("rgbd-adversarial-attack", model=model, trust_remote_code=trust_remote_code)


def depth_picture(depth: np.ndarray | None, top: float | None = None) -> np.ndarray | None:
    """(H, W) metres as an (H, W, 3) uint8 colour picture (viridis, holes black)."""
    if depth is None:
        return None
    from matplotlib import colormaps

    valid = depth > 0
    top = top or (float(depth[valid].max()) if valid.any() else 1.0)
    colours = colormaps["viridis"](np.clip(depth / top, 0.0, 1.0))[..., :3]
    colours[~valid] = 0.0
    return np.rint(colours * 255).astype(np.uint8)


def change_picture(change: np.ndarray) -> np.ndarray:
    """(H, W) signed change as an (H, W, 3) uint8 picture (blue = less, red = more, white = none)."""
    from matplotlib import colormaps

    limit = max(float(np.abs(change).max()), 1e-12)
    return np.rint(colormaps["coolwarm"](0.5 + 0.5 * change / limit)[..., :3] * 255).astype(np.uint8)


def _predictions(predictions: Any) -> dict[str, float]:
    """A pipeline's predictions as gr.Label's {label: confidence}."""
    if isinstance(predictions, dict):  # an ITM model: the matched probability
        return {"matched": predictions["score"], "not matched": 1.0 - predictions["score"]}
    return {row["label"]: row["score"] for row in predictions}


def run_attack(
    rgb_file: str | None,
    depth_file: str | None,
    model: str,
    attack: str,
    rgb_budget_255: float,
    depth_budget_m: float,
    steps: int,
    seed: int,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """One attack through the pipeline; returns what the app shows. ValueError with a message for the user when an
    input is missing or unreadable."""
    if not model:
        raise ValueError("Pick a model: a demo folder, a local folder or a hub id.")
    if rgb_file is None and depth_file is None:
        raise ValueError("Upload an RGB image and a depth map, or pick a synthetic example.")
    try:
        attacker = attack_pipeline(model, trust_remote_code)
    except Exception as err:
        raise ValueError(f"Could not load the model {model!r}: {err}") from None
    modalities = getattr(attacker.model.config, "modalities", "rgbd")
    budget = {}
    if "rgb" in modalities and rgb_budget_255 > 0:
        budget["pixel_values"] = float(rgb_budget_255) / 255.0
    if modalities in ("rgbd", "depth") and depth_budget_m > 0:
        budget["depth_values"] = float(depth_budget_m)
    if not budget:
        raise ValueError("Give a budget above 0 for at least one input the model takes.")
    arguments: dict[str, Any] = {"attack": attack, "budget": budget, "seed": int(seed)}
    if attack in ("pgd", "apgd"):
        arguments["steps"] = int(steps)
    try:
        result = attacker(rgb_file if "rgb" in modalities else None,
                          depths=depth_file if modalities in ("rgbd", "depth") else None, **arguments)  # fmt: skip
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"Could not attack this pair: {err}") from None
    clean_depth, adversarial_depth = result["clean_depth"], result["adversarial_depth"]
    top = float(clean_depth.max()) if clean_depth is not None and (clean_depth > 0).any() else None
    shown = {
        "before": _predictions(result["predictions_before"]),
        "after": _predictions(result["predictions_after"]),
        "adversarial_rgb": result["adversarial_image"],
        "adversarial_depth": depth_picture(adversarial_depth, top),
        "rgb_change": None,
        "depth_change": None,
        "summary": "",
    }
    if result["clean_rgb"] is not None:
        change = np.abs(result["adversarial_rgb"] - result["clean_rgb"]).max(axis=-1)
        shown["rgb_change"] = change_picture(change)
    if clean_depth is not None and adversarial_depth is not None:
        shown["depth_change"] = change_picture(adversarial_depth - clean_depth)
    sizes = ", ".join(
        f"{name}: L-inf {values['linf'] * (255 if name == 'pixel_values' else 1):.3g}"
        f"{'/255' if name == 'pixel_values' else ' m'}"
        for name, values in result["perturbation"].items()
    )
    shown["summary"] = (
        f"**{result['attack']}** {'succeeded' if result['success'] else 'did not change the prediction'} "
        f"(seed {result['seed']}); perturbation {sizes or 'none'}."
    )
    return shown


def build_app(
    demo_dir: str | os.PathLike | None, examples_dir: str | os.PathLike, trust_remote_code: bool = False
):
    """The Gradio Blocks of the app (not launched). Models offered: the demo's folders under `demo_dir`; any
    folder or hub id can be typed in. The synthetic examples are written to `examples_dir`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .pipelines.pipeline_rgbd_attack import attack_classes

    models = demo_model_folders(demo_dir)
    examples = write_synthetic_examples(examples_dir)
    attacks = sorted(attack_classes())
    default_attack = "apgd" if "apgd" in attacks else attacks[0]

    def pick_example(name: str | None):
        if not name or name not in examples:
            return gr.update(), gr.update()
        return examples[name]

    def attack_pressed(rgb_file, depth_file, model, attack, rgb_budget, depth_budget, steps, seed):
        try:
            shown = run_attack(rgb_file, depth_file, model, attack, rgb_budget, depth_budget, steps, seed,
                               trust_remote_code)  # fmt: skip
        except ValueError as err:
            return None, None, None, None, None, None, f"**Error:** {err}"
        return (
            shown["before"], shown["after"], shown["adversarial_rgb"], shown["adversarial_depth"],
            shown["rgb_change"], shown["depth_change"], shown["summary"],
        )  # fmt: skip

    with gr.Blocks(title=APP_TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {APP_TITLE}\nUpload an RGB image and its depth map (16-bit PNG in millimetres, `.npy` or "
                    "float TIFF in metres), or pick a synthetic example; pick a model, an attack and a budget per "
                    "modality.")  # fmt: skip
        with gr.Row():
            with gr.Column():
                example = gr.Dropdown(list(examples), value=None, label="Synthetic example", elem_id="example")
                rgb_file = gr.File(label="RGB image", type="filepath", elem_id="rgb-file")
                depth_file = gr.File(label="Depth map", type="filepath", elem_id="depth-file")
            with gr.Column():
                model = gr.Dropdown(
                    list(models.values()), value=next(iter(models.values()), None), allow_custom_value=True,
                    label="Model (a demo folder, a local folder or a hub id)", elem_id="model",
                )  # fmt: skip
                attack = gr.Dropdown(attacks, value=default_attack, label="Attack", elem_id="attack")
                rgb_budget = gr.Number(4.0, label="RGB budget (L-inf, in 1/255)", minimum=0, elem_id="rgb-budget")
                depth_budget = gr.Number(0.05, label="Depth budget (L-inf, metres)", minimum=0, elem_id="depth-budget")
                steps = gr.Number(10, label="Steps (PGD, APGD)", precision=0, minimum=1, elem_id="steps")
                seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                run = gr.Button("Attack", variant="primary", elem_id="run")
        summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            before = gr.Label(label="Prediction before", elem_id="before")
            after = gr.Label(label="Prediction after", elem_id="after")
        with gr.Row():
            adversarial_rgb = gr.Image(label="Adversarial RGB", elem_id="adversarial-rgb", format="png")
            adversarial_depth = gr.Image(label="Adversarial depth", elem_id="adversarial-depth", format="png")
            rgb_change = gr.Image(label="RGB perturbation |δ|", elem_id="rgb-change", format="png")
            depth_change = gr.Image(label="Depth perturbation δ (red = farther)", elem_id="depth-change", format="png")
        example.change(pick_example, example, [rgb_file, depth_file])
        run.click(
            attack_pressed,
            [rgb_file, depth_file, model, attack, rgb_budget, depth_budget, steps, seed],
            [before, after, adversarial_rgb, adversarial_depth, rgb_change, depth_change, summary],
        )
    return app


def system_font_theme():
    """Gradio's default look with system fonts: no request to a font server."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def launch_app(
    port: int = 7860,
    demo_dir: str | None = "demo_output",
    block: bool = True,
    examples_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
):
    """Build and serve the app on 127.0.0.1:`port`; returns the launched Blocks (with `block=False`, at once).
    The synthetic examples are written to `examples_dir` (default a new temporary folder), which the app may serve."""
    import tempfile

    examples_dir = str(examples_dir or tempfile.mkdtemp(prefix="hf-rgbd-app-"))
    app = build_app(demo_dir, examples_dir, trust_remote_code)
    app.launch(
        server_name="127.0.0.1", server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        allowed_paths=[examples_dir],
        theme=system_font_theme(), show_error=True, ssr_mode=False,
    )  # fmt: skip
    return app
