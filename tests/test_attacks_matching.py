"""`MatchingObjective`: attacks push matched RGB-D pairs to "not matched" through an ITM head
([`RgbdAlbefForRgbdMatching`]), with a budget per modality: loss and success definitions, labels, the attacks on a
tiny seeded model (RGB only, depth only, both), per-pair independence and named errors for wrong models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from test_attacks import BUDGETS, L2_BUDGETS, SIZE, assert_budget_invariants, make_batch, make_processor

from hf_rgbd import (
    RgbdAlbefConfig,
    RgbdAlbefForRgbdMatching,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdVlmoConfig,
    RgbdVlmoForRgbdMatching,
)
from hf_rgbd.attacks import APGD, BIM, FGSM, MIFGSM, PGD, PGDL2, RFGSM, MatchingObjective, margin_loss

torch.set_num_threads(1)

BATCH_SIZE = 6
# the smallest clean "matched minus not matched" logit gap after calibration, per family: the untrained mixture of
# experts' ITM logits move less under the depth budget (about 0.0015 at 0.05 m) than the fusion encoder's
CLEAN_MARGIN = {"albef": 0.002, "vlmo": 0.0005}
ATTACKS = [
    (FGSM, {}),
    (RFGSM, {}),
    (BIM, {"steps": 2}),
    (PGD, {"steps": 3}),
    (PGDL2, {"steps": 3}),
    (MIFGSM, {"steps": 2}),
    (APGD, {"steps": 3}),
]
ATTACK_IDS = ["fgsm", "rfgsm", "bim", "pgd", "pgdl2", "mifgsm", "apgd"]


def model_inputs(batch) -> dict[str, torch.Tensor]:
    return {key: value for key, value in batch.items() if key != "intrinsics"}


def itm_score(model: torch.nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**model_inputs(batch), use_itm_head=True).itm_score


def matched_loss(scores: torch.Tensor) -> torch.Tensor:
    """Per-pair cross-entropy against "matched" (1), what an untargeted matching attack ascends."""
    return F.cross_entropy(scores, torch.ones(scores.shape[0], dtype=torch.long), reduction="none")


@pytest.fixture(scope="module")
def processor():
    return make_processor()


@pytest.fixture(scope="module")
def batch(processor):
    return make_batch(processor, batch_size=BATCH_SIZE)[0]


@pytest.fixture(scope="module", params=["albef", "vlmo"])
def matcher(batch, request):
    """A tiny seeded matching model of each family with an ITM head (fusion encoder, mixture of experts) whose
    untrained head says "matched" for every clean pair, by margins from `CLEAN_MARGIN[family]` up: the head's bias is
    shifted (the untrained head gives every input about the same margin, ~0.1), so that the small budgets flip some
    pairs and not others."""
    torch.manual_seed(0)
    sizes = {"image_size": SIZE}
    if request.param == "albef":
        config = RgbdAlbefConfig.tiny(rgb_config=sizes, depth_config=sizes, fusion_config=sizes)
        model = RgbdAlbefForRgbdMatching(config).eval()
    else:
        model = RgbdVlmoForRgbdMatching(RgbdVlmoConfig.tiny(rgb_config=sizes, depth_config=sizes)).eval()
    scores = itm_score(model, batch)
    with torch.no_grad():
        model.itm_head.classifier.bias[1] -= (scores[:, 1] - scores[:, 0]).min() - CLEAN_MARGIN[request.param]
    return model


# ------------------------------------------------------------------------------------------------ definitions
def test_loss_and_success_values():
    scores = torch.tensor([[0.2, 1.0], [1.5, -0.5], [0.0, 0.3]])
    labels = torch.tensor([1, 1, 0])
    outputs = {"itm_score": scores}
    ce, margin = MatchingObjective(), MatchingObjective("margin")
    torch.testing.assert_close(ce.loss(outputs, labels, False), F.cross_entropy(scores, labels, reduction="none"))
    # the other logit minus the label's: not matched - matched for label 1, matched - not matched for label 0
    torch.testing.assert_close(margin.loss(outputs, labels, False), torch.tensor([-0.8, 2.0, 0.3]))
    assert ce.success(outputs, labels, False).tolist() == [False, True, True]
    assert ce.success(outputs, labels, True).tolist() == [True, False, False]
    assert ce.model_kwargs() == {"use_itm_head": True}
    assert not ce.couples_samples({"pixel_values", "depth_values"})


@given(
    st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.sampled_from([0, 1])), min_size=1, max_size=8),
    st.booleans(),
)
def test_success_is_the_sign_of_the_margin(rows, targeted):
    # away from ties, untargeted success <=> margin > 0 and targeted success <=> margin < 0
    rows = [row for row in rows if abs(row[0] - row[1]) > 1e-3]
    if not rows:
        return
    scores = torch.tensor([row[:2] for row in rows])
    labels = torch.tensor([row[2] for row in rows])
    outputs = {"itm_score": scores}
    margin = MatchingObjective("margin").loss(outputs, labels, targeted)
    torch.testing.assert_close(margin, margin_loss(scores, labels))
    success = MatchingObjective().success(outputs, labels, targeted)
    assert torch.equal(success, margin < 0 if targeted else margin > 0)


@given(st.lists(st.integers(-101, 3), min_size=1, max_size=8))
def test_labels_are_zero_one_or_ignored(values):
    objective = MatchingObjective()
    labels = torch.tensor(values)
    if set(values) <= {0, 1, -100}:
        prepared = objective.prepare_labels(labels, len(values), torch.device("cpu"))
        assert prepared.dtype == torch.long and prepared.tolist() == values
    else:
        with pytest.raises(ValueError, match="`labels`"):
            objective.prepare_labels(labels, len(values), torch.device("cpu"))


def test_default_labels_are_matched():
    labels = MatchingObjective().prepare_labels(None, 3, torch.device("cpu"))
    assert labels.dtype == torch.long and labels.tolist() == [1, 1, 1]


# ------------------------------------------------------------------------------------------------ attacks
@pytest.mark.parametrize("kind", list(BUDGETS))
def test_pgd_breaks_matching_within_the_budget(kind, matcher, batch, processor):
    clean = itm_score(matcher, batch)
    assert bool((clean.argmax(1) == 1).all())  # every clean pair is matched
    budget = BUDGETS[kind]
    result = PGD(matcher, budget=budget, steps=5, loss=MatchingObjective(), processor=processor).perturb(batch)
    assert_budget_invariants(batch, result, budget, processor)
    adversarial = itm_score(matcher, result.inputs)
    assert bool((matched_loss(adversarial) > matched_loss(clean)).all())
    # success is "the ITM head says not matched" on the returned pairs. Reported successes are guaranteed real;
    # the converse may miss a pair flipped by the last, never evaluated step (success is a documented lower bound),
    # so only the pairs flipped before it must be recorded: at least one here.
    not_matched = adversarial.argmax(1) == 0
    assert bool(result.success.any())
    assert bool((not_matched | ~result.success).all())


@pytest.mark.parametrize(("attack_class", "kwargs"), ATTACKS, ids=ATTACK_IDS)
def test_every_attack_takes_the_objective(attack_class, kwargs, matcher, batch, processor):
    budget = (L2_BUDGETS if attack_class is PGDL2 else BUDGETS)["joint"]
    objective = MatchingObjective("margin" if attack_class is APGD else "ce")
    result = attack_class(matcher, budget=budget, loss=objective, processor=processor, **kwargs).perturb(batch)
    assert_budget_invariants(batch, result, budget, processor, l2=attack_class is PGDL2)
    clean, adversarial = itm_score(matcher, batch), itm_score(matcher, result.inputs)
    assert matched_loss(adversarial).mean() > matched_loss(clean).mean()
    assert bool((adversarial.argmax(1)[result.success] == 0).all())  # reported successes are real


def test_targeted_to_not_matched_equals_untargeted_from_matched(matcher, batch, processor):
    # two classes: descending CE(z, 0) and ascending CE(z, 1) have gradients of the same sign, so a sign-gradient
    # attack takes the same steps; success means "not matched" in both
    budget = BUDGETS["joint"]
    untargeted = PGD(matcher, budget=budget, steps=3, loss=MatchingObjective(), processor=processor).perturb(batch)
    targeted = PGD(
        matcher, budget=budget, steps=3, loss=MatchingObjective(), targeted=True, processor=processor
    ).perturb(batch, torch.zeros(BATCH_SIZE, dtype=torch.long))
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(untargeted.inputs[key], targeted.inputs[key])
    assert torch.equal(untargeted.success, targeted.success) and bool(targeted.success.any())


def test_labels_zero_and_ignored_pairs(matcher, batch, processor):
    # label 0 (a pair known not to match): the attack pushes it to "matched", which the head already says, so it
    # succeeds at once; -100: left exactly as given and never a success
    labels = torch.tensor([0, -100, 1, 1, 1, 1])
    result = PGD(matcher, steps=2, loss=MatchingObjective(), processor=processor).perturb(batch, labels)
    assert result.ignored.tolist() == [False, True, False, False, False, False]
    assert result.success[0] and not result.success[1]
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(result.inputs[key][1], batch[key][1])


def test_pairs_are_scored_independently(matcher, batch):
    # what `couples_samples() == False` relies on: changing pair 0 leaves every other pair's score unchanged
    scores = itm_score(matcher, batch)
    changed = dict(batch)
    changed["pixel_values"] = batch["pixel_values"].clone()
    changed["pixel_values"][0] = -batch["pixel_values"][0]
    changed["depth_values"] = batch["depth_values"] * torch.tensor([0.5] + [1.0] * (BATCH_SIZE - 1)).view(-1, 1, 1, 1)
    other = itm_score(matcher, changed)
    assert not torch.allclose(other[0], scores[0])
    torch.testing.assert_close(other[1:], scores[1:], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
class _NoItmHead(torch.nn.Module):
    """A model whose forward takes no `use_itm_head`."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, pixel_values, depth_values=None, depth_mask=None):
        return {"itm_score": self.scale * pixel_values.mean(dim=(2, 3))[:, :2]}


class _SimilaritiesOnly(torch.nn.Module):
    """A matching model that ignores `use_itm_head=True`: `itm_score` are the (B, B) ITC similarities."""

    def __init__(self, matcher: RgbdAlbefForRgbdMatching) -> None:
        super().__init__()
        self.matcher = matcher

    def forward(self, pixel_values, depth_values=None, depth_mask=None, use_itm_head=True):
        return self.matcher(pixel_values, depth_values, depth_mask, use_itm_head=False)


def test_wrong_models_and_labels_are_named_errors(matcher, batch, processor):
    torch.manual_seed(0)
    tiny = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 2, "se_reduction": 4}
    classifier = RgbdCnnForImageClassification(RgbdCnnConfig(**tiny)).eval()  # takes **kwargs, returns `logits`
    with pytest.raises(ValueError, match=r"`itm_score`.*RgbdCnnForImageClassification"):
        PGD(classifier, steps=1, loss=MatchingObjective(), processor=processor)(batch)
    with pytest.raises(ValueError, match=r"`itm_score`.*use_itm_head"):
        PGD(_NoItmHead(), steps=1, loss=MatchingObjective(), processor=processor)
    with pytest.raises(ValueError, match=rf"`itm_score`.*\({BATCH_SIZE}, 2\).*\({BATCH_SIZE}, {BATCH_SIZE}\)"):
        PGD(_SimilaritiesOnly(matcher), steps=1, loss=MatchingObjective(), processor=processor)(batch)
    for bad in ([1, 2, 1, 1, 1, 1], [1, -1, 1, 1, 1, 1]):
        with pytest.raises(ValueError, match="`labels`"):
            PGD(matcher, steps=1, loss=MatchingObjective(), processor=processor)(batch, torch.tensor(bad))
    with pytest.raises(ValueError, match="`labels`"):
        PGD(matcher, steps=1, loss=MatchingObjective(), processor=processor)(batch, torch.ones(BATCH_SIZE))
    for bad in ("dlr", "hinge"):
        with pytest.raises(ValueError, match="`loss`"):
            MatchingObjective(bad)
