"""hf_rgbd.attacks: adversarial attacks on RGB-D models through the Hugging Face forward API, with a budget per
modality in physical units, robustness evaluation and adversarial training."""

from .apgd import APGD
from .base import DEFAULT_BUDGET, PERTURBABLE_INPUTS, AttackResult, RgbdAttack
from .gradient_attacks import BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM
from .objectives import (
    AttackObjective,
    ClassificationObjective,
    RetrievalObjective,
    cross_entropy_loss,
    dlr_loss,
    margin_loss,
)
from .robustness import evaluate_robustness

__all__ = [
    "APGD",
    "BIM",
    "DEFAULT_BUDGET",
    "FGSM",
    "MIFGSM",
    "PERTURBABLE_INPUTS",
    "PGD",
    "PGDL2",
    "RFGSM",
    "AdversarialTrainer",
    "AttackObjective",
    "AttackResult",
    "ClassificationObjective",
    "RetrievalObjective",
    "RgbdAttack",
    "cross_entropy_loss",
    "dlr_loss",
    "evaluate_robustness",
    "margin_loss",
]


def __getattr__(name: str):
    # `AdversarialTrainer` imports `transformers.Trainer` (about a second): loaded on first use, not at import.
    if name == "AdversarialTrainer":
        from .adversarial_training import AdversarialTrainer

        return AdversarialTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
