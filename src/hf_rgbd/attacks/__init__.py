"""hf_rgbd.attacks: adversarial attacks on RGB-D models through the Hugging Face forward API, with a budget per
modality in physical units. The algorithms only: robustness evaluation lives in `hf_rgbd.evaluation`
(`evaluate_robustness`), adversarial training in `hf_rgbd.training` (`AdversarialTrainer`)."""

from .apgd import APGD
from .autoattack import AutoAttack, AutoAttackResult
from .base import DEFAULT_BUDGET, PERTURBABLE_INPUTS, AttackResult, RgbdAttack
from .fab import FAB
from .gradient_attacks import BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM
from .objectives import (
    AttackObjective,
    ClassificationObjective,
    MatchingObjective,
    RetrievalObjective,
    TargetedDlrObjective,
    cross_entropy_loss,
    dlr_loss,
    margin_loss,
    targeted_dlr_loss,
)
from .perturbation_space import physical_inputs
from .square import Square

__all__ = [
    "APGD",
    "AutoAttack",
    "AutoAttackResult",
    "BIM",
    "DEFAULT_BUDGET",
    "FAB",
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
    "TargetedDlrObjective",
    "RgbdAttack",
    "Square",
    "cross_entropy_loss",
    "dlr_loss",
    "margin_loss",
    "physical_inputs",
    "targeted_dlr_loss",
]
