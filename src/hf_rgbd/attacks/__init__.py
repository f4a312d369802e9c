"""hf_rgbd.attacks: adversarial attacks on RGB-D models through the Hugging Face forward API, with a budget per
modality in physical units. The algorithms only: robustness evaluation lives in `hf_rgbd.evaluation`
(`evaluate_robustness`), adversarial training in `hf_rgbd.training` (`AdversarialTrainer`)."""

from .apgd import APGD
from .base import DEFAULT_BUDGET, PERTURBABLE_INPUTS, AttackResult, RgbdAttack
from .gradient_attacks import BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM
from .perturbation_space import physical_inputs
from .objectives import (
    AttackObjective,
    ClassificationObjective,
    MatchingObjective,
    RetrievalObjective,
    cross_entropy_loss,
    dlr_loss,
    margin_loss,
)

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
    "AttackObjective",
    "AttackResult",
    "ClassificationObjective",
    "MatchingObjective",
    "RetrievalObjective",
    "RgbdAttack",
    "cross_entropy_loss",
    "dlr_loss",
    "margin_loss",
    "physical_inputs",
]
