"""`hf-rgbd evaluate`: robustness of a saved classifier on any loader's data, with AutoAttack (by default) or any
attack, writing `evaluate_robustness`'s report.

    hf-rgbd evaluate --model cnn-synthetic --dataset synthetic --attack autoattack --threat_model either \\
        --budget pixel_values=4/255 depth_values=0.05 --max_samples 200 --output_dir robustness
    hf-rgbd evaluate --model cnn-synthetic --dataset sunrgbd --dataset_path SUNRGBD --attack pgd \\
        --budget pixel_values=8/255 --attack_args steps=20 --output_dir pgd-sunrgbd
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..training.finetune import DataArguments


@dataclass
class EvaluateArguments:
    """What `hf-rgbd evaluate` attacks, how, and where the report goes."""

    model: str = field(metadata={"help": "Model folder or hub id (a classifier with its processor)."})
    output_dir: str = field(metadata={"help": "Where robustness.json, the curves and the adversarial examples go."})
    attack: str = field(
        default="autoattack", metadata={"help": "`autoattack` (default) or any attack by lower-case class name."}
    )
    threat_model: Literal["rgb", "depth", "joint", "either"] | None = field(
        default=None, metadata={"help": "AutoAttack's threat model (default `joint`); other attacks perturb what `--budget` names."}
    )
    norm: Literal["Linf", "L2"] = field(default="Linf", metadata={"help": "AutoAttack's norm."})
    version: Literal["standard", "rand"] = field(default="standard", metadata={"help": "AutoAttack's version."})
    budget: list[str] | None = field(
        default=None,
        metadata={"help": "Per-input budget in physical units, `pixel_values=8/255 depth_values=0.05` (default: the attack's)."},
    )
    attack_args: list[str] | None = field(
        default=None, metadata={"help": "Other arguments of a non-AutoAttack attack, `steps=20 n_restarts=2`."}
    )
    split: str = field(default="test", metadata={"help": "The split to attack."})
    max_samples: int | None = field(default=None, metadata={"help": "Attack the first N samples of the split."})
    batch_size: int = field(default=64, metadata={"help": "Samples per attacked batch."})
    seed: int = field(default=0, metadata={"help": "Seed of the attack's random generator."})
    threads: int | None = field(default=None, metadata={"help": "At most this many torch threads."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Load a model folder's own code."})


def build_attack(args: EvaluateArguments, model, processor):
    """The attack `args` describe (ValueError naming a bad argument)."""
    from ..attacks import AutoAttack
    from ..cli import parse_assignments, parse_attack_argument, parse_number
    from ..pipelines import attack_classes

    budget = parse_assignments(args.budget, "--budget", parse_number) if args.budget else None
    arguments = parse_assignments(args.attack_args or [], "--attack_args", parse_attack_argument)
    name = args.attack.lower()
    if name == "autoattack":
        if arguments:
            raise ValueError(f"--attack_args {sorted(arguments)}: AutoAttack is parameter-free (use --norm, --version).")
        return AutoAttack(
            model, budget=budget, norm=args.norm, version=args.version, threat_model=args.threat_model or "joint",
            processor=processor, seed=args.seed,
        )  # fmt: skip
    if args.threat_model is not None:
        raise ValueError(f"--threat_model is AutoAttack's; --attack {name} perturbs the inputs --budget names.")
    classes = attack_classes()
    if name not in classes:
        raise ValueError(f"--attack must be `autoattack` or one of {sorted(classes)}, got {args.attack!r}.")
    return classes[name](model, budget=budget, processor=processor, seed=args.seed, **arguments)


def run_evaluate(args: EvaluateArguments, data_args: DataArguments) -> dict:
    """Load the model, its processor and the split, run `evaluate_robustness` and write its report."""
    from transformers import AutoModelForImageClassification, AutoProcessor

    from ..training.finetune import load_finetune_dataset
    from ..utils import torch_thread_limit
    from .robustness import evaluate_robustness

    with torch_thread_limit(args.threads, "--threads"):
        model = AutoModelForImageClassification.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        data = load_finetune_dataset(data_args, seed=args.seed)
        if args.split not in data:
            raise ValueError(f"--split {args.split!r}: the data set has the splits {sorted(data)}.")
        split = data[args.split]
        if args.max_samples is not None:
            if args.max_samples < 1:
                raise ValueError(f"--max_samples must be at least 1, got {args.max_samples}.")
            split = split.select(range(min(args.max_samples, len(split))))
        attack = build_attack(args, model, processor)
        return evaluate_robustness(
            model, processor, split, {args.attack.lower(): attack}, batch_size=args.batch_size, output_dir=args.output_dir
        )


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((EvaluateArguments, DataArguments), prog="hf-rgbd evaluate")
    args, data_args = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    report = run_evaluate(args, data_args)
    print(f"{report['num_samples']} samples, clean accuracy {report['clean_accuracy']:.1%}")
    for name, entry in report["attacks"].items():
        print(f"{name} {entry['budget']}: robust accuracy {entry['robust_accuracy']:.1%}")
        for step, accuracy in entry.get("robust_accuracy_after", {}).items():
            print(f"  after {step}: {accuracy:.1%}")
    print(f"report: {Path(args.output_dir) / 'robustness.json'}")
    return 0


__all__ = ["EvaluateArguments", "build_attack", "evaluate_main", "run_evaluate"]


if __name__ == "__main__":
    raise SystemExit(evaluate_main())
