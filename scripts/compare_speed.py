"""Speed of this checkout against another checkout (e.g. main before a refactor), with the existing benchmarks.

Each round runs every benchmark script twice: the baseline's own copy of the script with the baseline's `src/`, and
this checkout's copy with this checkout's `src/` (each tree's scripts import from where that tree keeps its names;
the workload and command line are the same). The order alternates from round to round, so machine-load drifts hit
both alike. Each run already measures hf_rgbd against its own reference in the same process (`ViTModel`,
`CLIPImageProcessor`, raw forward + input-gradient); this script collects those figures from every run and
prints, per figure, the median and spread over the rounds for both trees and their ratio.

    python scripts/compare_speed.py --baseline /tmp/main_ref --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# script, its arguments, and (figure name, regex of one float) pairs read from its output; every figure is a
# "higher is better" ratio of hf_rgbd against the script's own reference, or a throughput.
BENCHMARKS = {
    "vit_tower": (
        "benchmark_vit_tower.py",
        ["--preset", "tiny", "--repeats", "10", "--warmup", "2", "--threads", "2"],
        [
            ("RgbdVitModel images/s", r"\| RgbdVitModel \| ([\d.]+) \|"),
            ("RgbdVitModel / ViTModel throughput", r"throughput ratio .*?median ([\d.]+)"),
        ],
    ),
    "processor": (
        "benchmark_processor.py",
        ["--repeats", "30", "--threads", "2"],
        [
            (
                "RgbdProcessor 224 bilinear speed-up vs CLIPImageProcessor",
                r"RgbdProcessor \(224x224 exact[^\n]*?speed-up x([\d.]+)",
            ),
            (
                "RgbdProcessor CLIP geometry speed-up vs CLIPImageProcessor",
                r"RgbdProcessor \(CLIP geometry[^\n]*?speed-up x([\d.]+)",
            ),
        ],
    ),
    "attacks": (
        "benchmark_attacks.py",
        ["--repeats", "10", "--threads", "2"],
        [
            ("CNN PGD (RGB): raw step time / PGD step time", r"RgbdCnn.*?hf-rgbd PGD \(RGB\) .*?([\d.]+)x"),
            ("CNN PGD (RGB + depth): raw / PGD", r"RgbdCnn.*?hf-rgbd PGD \(RGB \+ depth\) .*?([\d.]+)x"),
            ("ViT PGD (RGB): raw / PGD", r"RgbdClip.*?hf-rgbd PGD \(RGB\) .*?([\d.]+)x"),
            ("ViT PGD (RGB + depth): raw / PGD", r"RgbdClip.*?hf-rgbd PGD \(RGB \+ depth\) .*?([\d.]+)x"),
        ],
    ),
}
# the attack benchmark prints PGD time / raw time ("vs raw"): inverted so that higher is better everywhere
INVERTED = {"attacks"}


def run(script: str, arguments: list[str], source: Path) -> str:
    """Run `script` of the tree whose `src/` is `source`, importing hf_rgbd from there."""
    env = dict(os.environ, PYTHONPATH=str(source))
    result = subprocess.run(
        [sys.executable, str(source.parent / "scripts" / script), *arguments], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{script} with {source} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def parse(text: str, figures: list[tuple[str, str]], invert: bool) -> dict[str, float]:
    values = {}
    for name, pattern in figures:
        match = re.search(pattern, text, flags=re.S)
        if match is None:
            raise SystemExit(f"figure {name!r} not found in:\n{text}")
        value = float(match.group(1))
        values[name] = 1.0 / value if invert else value
    return values


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    low, high = min(values), max(values)
    return f"{statistics.median(values):.3f} ({low:.3f}-{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="root of the checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve() / "src", "this": ROOT / "src"}
    for name, source in trees.items():
        if not (source / "hf_rgbd" / "__init__.py").exists():
            raise SystemExit(f"--baseline: no src/hf_rgbd in {source.parent} ({name})")
    selected = [name for name in args.benchmarks.split(",") if name]
    collected: dict[str, dict[str, dict[str, list[float]]]] = {name: {tree: {} for tree in trees} for name in selected}
    for round_index in range(args.rounds):
        order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
        for name in selected:
            script, arguments, figures = BENCHMARKS[name]
            for tree in order:
                values = parse(run(script, arguments, trees[tree]), figures, name in INVERTED)
                for figure, value in values.items():
                    collected[name][tree].setdefault(figure, []).append(value)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    print(f"\nbaseline {args.baseline.resolve()}, this {ROOT}; {args.rounds} interleaved rounds; median (min-max)")
    print("| figure (higher is better) | baseline | this checkout | this / baseline (median of per-round ratios) |")
    print("|---|---|---|---|")
    for name in selected:
        for figure, base_values in collected[name]["baseline"].items():
            this_values = collected[name]["this"][figure]
            ratios = [this / base for this, base in zip(this_values, base_values, strict=True)]
            print(f"| {figure} | {spread(base_values)} | {spread(this_values)} | {spread(ratios)} |")


if __name__ == "__main__":
    main()
