"""The `hf-rgbd` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np
import torch


def demo(args: argparse.Namespace) -> int:
    """Train every family at the same wall-clock budget on the synthetic scenes, evaluate and attack each, and write
    the report, plots, `results.json` and the models to `--output-dir` (see `hf_rgbd.demo`)."""
    from .demo import DemoError, run_demo

    if args.workers is not None and args.workers < 1:
        print(f"hf-rgbd demo: error: --workers must be a positive integer, got {args.workers}", file=sys.stderr)
        return 2
    try:
        with _progress_and_threads(args):
            results = run_demo(args.output_dir, quick=args.quick, threads=args.threads, workers=args.workers)
    except DemoError as err:
        print(f"hf-rgbd demo: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output_dir}/report.md ({results['wall_seconds']:.0f} s)")
    return 0


def app(args: argparse.Namespace) -> int:
    """Serve the Gradio app on 127.0.0.1 until interrupted."""
    try:
        from .app import launch_app
    except ImportError as err:
        print(f"hf-rgbd app: error: {err}; install the app extra: pip install -e \".[app]\"", file=sys.stderr)
        return 2
    from .utils import torch_thread_limit

    with torch_thread_limit(args.threads, "--threads"):
        launch_app(port=args.port, demo_dir=args.demo_dir, trust_remote_code=args.trust_remote_code)
    return 0


def probe(args: argparse.Namespace) -> int:
    """Generate a few RGB-D pairs and process them in every depth representation, printing what came out; then
    run the fusion probe. At most `--threads` torch threads throughout (restored afterwards)."""
    with _progress_and_threads(args):
        return _probe_representations(args)


@contextlib.contextmanager
def _progress_and_threads(args: argparse.Namespace):
    """`--no-progress` and `--threads` for the duration of a command (both restored afterwards)."""
    from .utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars, torch_thread_limit

    bars_were_disabled = are_progress_bars_disabled()
    if args.no_progress:
        disable_progress_bars()
    try:
        with torch_thread_limit(args.threads, "--threads"):
            yield
    finally:
        if not bars_were_disabled:
            enable_progress_bars()


def _probe_representations(args: argparse.Namespace) -> int:
    from .data import make_synthetic_rgbd
    from .processors import (
        INVERTIBLE_REPRESENTATIONS,
        REPRESENTATIONS,
        RgbdDepthProcessor,
        RgbdImageProcessor,
        RgbdProcessor,
    )

    torch.manual_seed(args.seed)  # the demo is a program of its own: seeding the global RNG here is fine
    start = time.perf_counter()
    dataset = make_synthetic_rgbd(
        num_train=args.num_pairs,
        num_validation=1,
        num_test=1,
        image_size=args.image_size,
        seed=args.seed,
        num_threads=args.threads,
    )["train"]
    images = [example["image"] for example in dataset]
    depths = [np.asarray(example["depth"], dtype=np.float32) for example in dataset]
    intrinsics = [np.asarray(example["intrinsics"], dtype=np.float32) for example in dataset]
    names = dataset.features["label"].names
    print(
        f"Generated {len(images)} synthetic RGB-D pairs ({args.image_size}x{args.image_size}) in "
        f"{time.perf_counter() - start:.2f} s; classes: {', '.join(names[label] for label in dataset['label'])}"
    )
    holes = np.mean([float((d == 0).mean()) for d in depths])
    print(
        f"Raw depth: metres, {holes:.1%} holes on average, range "
        f"{min(float(d[d > 0].min()) for d in depths):.3f}-{max(float(d.max()) for d in depths):.3f} m\n"
    )

    size = args.output_size
    image_processor = RgbdImageProcessor(size={"height": size, "width": size})
    header = f"{'representation':<11} {'depth_values':<16} {'valid':>6} {'min':>8} {'mean':>8} {'max':>8}  notes"
    print(header)
    print("-" * len(header))
    for representation in REPRESENTATIONS:
        depth_processor = RgbdDepthProcessor(
            representation=representation,
            depth_mean=2.0,
            depth_std=1.0,
            depth_vocab_size=args.depth_vocab_size,
            depth_patch_size=args.depth_patch_size,
        )
        processor = RgbdProcessor(image_processor, depth_processor)
        batch = processor(images=images, depths=depths, intrinsics=intrinsics, return_intrinsics=True)
        values, mask = batch["depth_values"], batch["depth_mask"]
        valid = values.masked_select(mask.expand_as(values))
        notes = []
        if representation in INVERTIBLE_REPRESENTATIONS:
            metres = depth_processor.to_metres(values, mask, batch["intrinsics"])
            direct = depth_processor.depth_in_metres(
                depths, intrinsics=intrinsics, plans=lambda hw: image_processor.plan_geometry(hw)
            )[0]
            notes.append(f"to_metres round trip max error {float((metres - direct).abs().max()):.2e} m")
        else:
            notes.append("not invertible")
        print(
            f"{representation:<11} {str(tuple(values.shape)):<16} {float(mask.float().mean()):>6.1%} "
            f"{float(valid.min()):>8.3f} {float(valid.mean()):>8.3f} {float(valid.max()):>8.3f}  {'; '.join(notes)}"
        )
    tokens = batch["depth_token_ids"]
    print(
        f"\npixel_values {tuple(batch['pixel_values'].shape)} (mean {float(batch['pixel_values'].mean()):.3f}), "
        f"depth_mask {tuple(mask.shape)}, depth_token_ids {tuple(tokens.shape)} "
        f"(vocab {args.depth_vocab_size}, patch {args.depth_patch_size}; {int((tokens == -100).sum())} patches "
        f"without valid depth)\nfirst pair's depth tokens: {tokens[0].tolist()}"
    )
    print(f"rescaled intrinsics of the first pair:\n{batch['intrinsics'][0].numpy().round(3)}")
    if args.probe_epochs > 0:
        _probe(args)
    return 0


def _probe(args: argparse.Namespace) -> None:
    """Generate the synthetic benchmark and print the fusion probe's three test accuracies."""
    from .data import make_synthetic_rgbd
    from .evaluation import fusion_probe, statistics_linear_probe

    start = time.perf_counter()
    dataset = make_synthetic_rgbd(seed=args.seed, num_threads=args.threads)
    sizes = ", ".join(f"{name} {split.num_rows}" for name, split in dataset.items())
    print(f"\nGenerated make_synthetic_rgbd(seed={args.seed}): {sizes} in {time.perf_counter() - start:.1f} s")
    print(f"Logistic regression on per-image RGB / depth mean and std: {statistics_linear_probe(dataset):.1%} test")
    print(
        f"Fusion probe: RgbdCnnForImageClassification (RgbdCnnConfig.small(), early fusion for RGB-D), the same "
        f"{args.probe_epochs} epochs and seed for each input, {args.threads} torch thread(s) (a few minutes on 2 CPU "
        "cores) ..."
    )
    results = fusion_probe(dataset, epochs=args.probe_epochs, seed=args.seed, num_threads=args.threads)
    labels = {"rgb": "RGB only", "depth": "depth only", "rgbd": "RGB + depth"}
    for modality, result in results.items():
        print(
            f"  {labels[modality]:<12} test accuracy {result['test_accuracy']:.1%}  "
            f"(trained {result['train_seconds']:.0f} s, best validation epoch {result['best_epoch']})"
        )


def parse_number(text: str, name: str) -> float:
    """A number from the command line: `0.05`, `8/255`."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{name}: expected a number such as 0.05 or 8/255, got {text!r}") from None
    return value


def parse_assignments(pairs: list[str], name: str, parse_value) -> dict[str, object]:
    """`KEY=VALUE` command-line pairs as a dict (each value through `parse_value(text, label)`)."""
    parsed = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise argparse.ArgumentTypeError(f"{name}: expected KEY=VALUE, got {pair!r}")
        parsed[key] = parse_value(value, f"{name} {key}")
    return parsed


def parse_attack_argument(text: str, name: str) -> object:
    """An attack argument's value: JSON (numbers, true / false, null, lists, dicts), a fraction (`8/255`), or a
    string (e.g. a loss name)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return parse_number(text, name)
    except argparse.ArgumentTypeError:
        return text


def attack(args: argparse.Namespace) -> int:
    """`hf-rgbd attack`: the rgbd-adversarial-attack pipeline on one RGB-D pair, writing the adversarial pair as
    PNG (RGB 8-bit, depth 16-bit millimetres) and `attack.json` with the predictions and perturbation norms."""
    from pathlib import Path

    from PIL import Image
    from transformers import pipeline

    from .utils import torch_thread_limit

    try:
        budget = parse_assignments(args.budget, "--budget", parse_number) if args.budget else None
        attack_arguments = parse_assignments(args.attack_args, "--attack-args", parse_attack_argument)
    except argparse.ArgumentTypeError as error:
        print(f"hf-rgbd attack: error: {error}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    with torch_thread_limit(args.threads, "--threads"):
        attacker = pipeline(
            "rgbd-adversarial-attack",
            model=args.model,
            trust_remote_code=args.trust_remote_code,
            attack=args.attack,
            budget=budget,
            seed=args.seed,
            **attack_arguments,
        )
        result = attacker(
            args.image,
            depths=args.depth,
            depth_scale=args.depth_scale,
            depth_encoding=args.depth_encoding,
            top_k=args.top_k,
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if result["adversarial_image"] is not None:
        written["adversarial_image"] = str(output_dir / "adversarial_image.png")
        result["adversarial_image"].save(written["adversarial_image"])
    if result["adversarial_depth"] is not None:
        millimetres = np.rint(result["adversarial_depth"] * 1000.0)
        if millimetres.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError("the adversarial depth exceeds 65.535 m, the range of a 16-bit millimetre PNG.")
        written["adversarial_depth"] = str(output_dir / "adversarial_depth.png")
        Image.fromarray(millimetres.astype(np.uint16)).save(written["adversarial_depth"])
    report = {
        "model": args.model,
        "image": args.image,
        "depth": args.depth,
        "attack": result["attack"],
        "budget": result["budget"],
        "attack_arguments": attack_arguments,
        "seed": result["seed"],
        "success": result["success"],
        "predictions_before": result["predictions_before"],
        "predictions_after": result["predictions_after"],
        "perturbation": result["perturbation"],
        "files": written,
        "depth_png": "16-bit millimetres, 0 at holes",
    }
    (output_dir / "attack.json").write_text(json.dumps(report, indent=2) + "\n")
    before, after = result["predictions_before"], result["predictions_after"]
    describe = (lambda p: f"{p[0]['label']} ({p[0]['score']:.3f})") if isinstance(before, list) else (
        lambda p: f"matched {p['score']:.3f}"
    )
    print(f"{result['attack']}: {describe(before)} -> {describe(after)}; success {result['success']}")
    for name, norms in result["perturbation"].items():
        print(f"  {name}: linf {norms['linf']:.4g}, l2 {norms['l2']:.4g} (physical units)")
    print(f"wrote {', '.join(written.values())} and {output_dir / 'attack.json'}")
    return 0


def add_thread_and_progress_arguments(parser: argparse.ArgumentParser, dependence: str) -> None:
    """`--threads` (default 1) and `--no-progress`, shared by the commands that train."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="at most this many torch threads (default 1: small ops run fastest on one thread when another process "
        f"keeps a core busy; {dependence})",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (as HF_RGBD_DISABLE_PROGRESS_BARS=1)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-rgbd", description="RGB-D models, processors and attacks on Hugging Face."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="the main job: train every fusion family at one wall-clock budget on synthetic scenes, evaluate and "
        "attack each (RGB only, depth only, both), and write report.md, plots, results.json and the models",
    )
    demo_parser.add_argument("--output-dir", required=True, help="where the report and models go (reused on re-runs)")
    demo_parser.add_argument("--quick", action="store_true", help="a reduced run (tiny models, fewer scenes; ~2 min)")
    add_thread_and_progress_arguments(demo_parser, "the budgets are wall-clock, so the accuracies depend on it")
    demo_parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="models trained at once, each in its own process with --threads threads (default: one per CPU, at "
        "most 2)",
    )
    demo_parser.set_defaults(handler=demo)
    app_parser = commands.add_parser(
        "app", help="a Gradio app on 127.0.0.1: upload an RGB-D pair, pick a model and an attack, see the result"
    )
    app_parser.add_argument("--port", type=int, default=7860)
    app_parser.add_argument(
        "--demo-dir", default="demo_output", help="the output directory of `hf-rgbd demo` whose models are offered"
    )
    app_parser.add_argument("--threads", type=int, default=None, help="at most this many torch threads")
    app_parser.add_argument("--trust-remote-code", action="store_true")
    app_parser.set_defaults(handler=app)
    probe_parser = commands.add_parser(
        "probe", help="process generated RGB-D pairs in every depth representation, then run the fusion probe"
    )
    probe_parser.add_argument("--num-pairs", type=int, default=4)
    probe_parser.add_argument("--image-size", type=int, default=64)
    probe_parser.add_argument("--output-size", type=int, default=32)
    probe_parser.add_argument("--depth-vocab-size", type=int, default=16)
    probe_parser.add_argument("--depth-patch-size", type=int, default=8)
    probe_parser.add_argument("--seed", type=int, default=0)
    probe_parser.add_argument("--probe-epochs", type=int, default=60, help="epochs of the fusion probe (0 skips it)")
    add_thread_and_progress_arguments(probe_parser, "the probe's accuracies depend on it")
    probe_parser.set_defaults(handler=probe)
    attack_parser = commands.add_parser(
        "attack",
        help="attack a saved RGB-D model on one RGB-D pair and write the adversarial pair (the "
        "rgbd-adversarial-attack pipeline)",
    )
    attack_parser.add_argument("image", help="RGB image file")
    attack_parser.add_argument(
        "depth", nargs="?", default=None, help="depth file: 16-bit PNG, SUN RGB-D PNG, .npy / float TIFF in metres"
    )
    attack_parser.add_argument("--model", required=True, help="model folder or hub id")
    attack_parser.add_argument("--attack", default="pgd", help="attack by lower-case class name (pgd, apgd, fgsm, ...)")
    attack_parser.add_argument(
        "--budget",
        nargs="+",
        default=None,
        metavar="INPUT=VALUE",
        help="per-input budget in physical units, e.g. pixel_values=8/255 depth_values=0.05 (default: the attack's)",
    )
    attack_parser.add_argument(
        "--attack-args", nargs="*", default=[], metavar="KEY=VALUE", help="other attack arguments, e.g. steps=20"
    )
    attack_parser.add_argument("--seed", type=int, default=0)
    attack_parser.add_argument("--depth-scale", type=float, default=None, help="metres per integer depth unit")
    attack_parser.add_argument("--depth-encoding", choices=("plain", "sunrgbd"), default=None)
    attack_parser.add_argument("--top-k", type=int, default=5)
    attack_parser.add_argument("--threads", type=int, default=None, help="at most this many torch threads")
    attack_parser.add_argument("--trust-remote-code", action="store_true")
    attack_parser.add_argument("--output-dir", required=True)
    attack_parser.set_defaults(handler=attack)
    # parsed by HfArgumentParser in `main` (TrainingArguments plus the model and data arguments): listed for --help
    commands.add_parser(
        "pretrain",
        add_help=False,
        help="pretraining of the dual encoder / fusion encoder / experts model on accelerate, one CPU to many GPUs "
        "(`hf-rgbd pretrain --help` lists its arguments)",
    )
    commands.add_parser(
        "finetune",
        add_help=False,
        help="Trainer fine-tuning of a classifier on synthetic / NYU Depth v2 / SUN RGB-D / folder data "
        "(`hf-rgbd finetune --help` lists its arguments)",
    )
    commands.add_parser(
        "evaluate",
        add_help=False,
        help="robustness of a saved classifier on any loader's data with AutoAttack or any attack "
        "(`hf-rgbd evaluate --help` lists its arguments)",
    )
    return parser


# commands whose arguments another parser owns: name -> (module, entry point taking the remaining argv)
DELEGATED_COMMANDS = {
    "pretrain": ("hf_rgbd.training.pretrain", "pretrain_main"),
    "finetune": ("hf_rgbd.training.finetune", "finetune_main"),
    "evaluate": ("hf_rgbd.evaluation.evaluate_cli", "evaluate_main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED_COMMANDS:
        import importlib

        module, entry_point = DELEGATED_COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), entry_point)(argv[1:])
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
