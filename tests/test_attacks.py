"""hf_rgbd.attacks: budget invariants for every attack class, guarantees (no_grad, modes, gradients, RNG), the
one-forward-one-backward step structure, objectives, retrieval attacks, bad input and adversarial training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainingArguments
from transformers.image_processing_utils import BatchFeature

import hf_rgbd
import hf_rgbd.attacks
from hf_rgbd import (
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdCnnConfig,
    RgbdCnnForImageClassification,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
)
from hf_rgbd.attacks import (
    APGD,
    BIM,
    FGSM,
    MIFGSM,
    PGD,
    PGDL2,
    RFGSM,
    ClassificationObjective,
    RetrievalObjective,
    dlr_loss,
    margin_loss,
)
from hf_rgbd.processors import depth_token_ids
from hf_rgbd.training import AdversarialTrainer

torch.set_num_threads(1)

SIZE = 16
NUM_LABELS = 4
TINY = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": NUM_LABELS, "se_reduction": 4}
ATTACKS = [
    (FGSM, {}),
    (RFGSM, {}),
    (BIM, {"steps": 2}),
    (PGD, {"steps": 2}),
    (PGD, {"steps": 2, "n_restarts": 2, "loss": "margin"}),
    (PGDL2, {"steps": 2}),
    (MIFGSM, {"steps": 2}),
    (APGD, {"steps": 3}),
    (APGD, {"steps": 3, "loss": "dlr"}),
]
ATTACK_IDS = ["fgsm", "rfgsm", "bim", "pgd", "pgd-restarts-margin", "pgdl2", "mifgsm", "apgd-ce", "apgd-dlr"]
BUDGETS = {
    "rgb": {"pixel_values": 8 / 255},
    "depth": {"depth_values": 0.05},
    "joint": {"pixel_values": 8 / 255, "depth_values": 0.05},
}
L2_BUDGETS = {
    "rgb": {"pixel_values": 0.5},
    "depth": {"depth_values": 0.3},
    "joint": {"pixel_values": 0.5, "depth_values": 0.3},
}


def make_processor(representation: str = "log", **depth_kwargs) -> RgbdProcessor:
    return RgbdProcessor(
        RgbdImageProcessor(
            size={"height": SIZE, "width": SIZE}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
        ),
        RgbdDepthProcessor(representation=representation, min_depth=0.5, max_depth=6.0, **depth_kwargs),
    )


def make_batch(processor: RgbdProcessor, batch_size: int = 4, seed: int = 0) -> tuple[BatchFeature, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(batch_size)]
    depths = []
    for _ in range(batch_size):
        depth = rng.uniform(0.6, 5.9, (SIZE, SIZE)).astype(np.float32)
        depth[rng.random((SIZE, SIZE)) < 0.2] = 0.0  # holes
        depths.append(depth)
    images[0][:2] = 0  # saturated pixels: clipping at both ends of [0, 1]
    images[0][2:4] = 255
    k = np.array([[20.0, 0, SIZE / 2], [0, 20.0, SIZE / 2], [0, 0, 1]], dtype=np.float32)
    batch = processor(images=images, depths=depths, intrinsics=k, return_intrinsics=True)
    labels = torch.as_tensor(rng.integers(0, NUM_LABELS, batch_size))
    return batch, labels


def make_model(seed: int = 0, **overrides) -> RgbdCnnForImageClassification:
    torch.manual_seed(seed)
    return RgbdCnnForImageClassification(RgbdCnnConfig(**{**TINY, "fusion_type": "early", **overrides})).eval()


@pytest.fixture(scope="module")
def processor():
    return make_processor()


@pytest.fixture(scope="module")
def model():
    return make_model()


def physical(batch, processor: RgbdProcessor) -> dict[str, torch.Tensor]:
    image = processor.image_processor
    mean = torch.tensor(image.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image.image_std).view(1, 3, 1, 1)
    depth = processor.depth_image_processor.to_metres(batch["depth_values"], batch["depth_mask"], batch["intrinsics"])
    return {"pixel_values": batch["pixel_values"] * std + mean, "depth_values": depth}


def assert_budget_invariants(
    batch: BatchFeature, result, budget: dict[str, float], processor: RgbdProcessor, l2: bool = False
) -> None:
    """What every attack's returned batch (`result.inputs`) satisfies: the batch's type and keys; inputs outside
    `budget`, the mask and the intrinsics unchanged; holes exactly 0; RGB in [0, 1] and depth in the processor's
    range; each budgeted input perturbed (somewhere) within its budget in physical units (L-inf, or L2 with `l2`),
    and `result.linf` agreeing."""
    adversarial = result.inputs
    assert isinstance(adversarial, BatchFeature) and list(adversarial) == list(batch)
    for key in set(batch) - set(budget):
        assert torch.equal(adversarial[key], batch[key]), key
    holes = ~batch["depth_mask"]
    assert bool((adversarial["depth_values"][holes.expand_as(adversarial["depth_values"])] == 0).all())
    before, after = physical(batch, processor), physical(adversarial, processor)
    rgb = after["pixel_values"]
    assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6
    depth = processor.depth_image_processor
    valid = after["depth_values"][batch["depth_mask"]]
    assert valid.min() >= depth.min_depth - 1e-5 and valid.max() <= depth.max_depth + 1e-4
    for name, eps in budget.items():
        delta = (after[name] - before[name]).flatten(1)
        if l2:
            assert bool((delta.norm(dim=1) <= eps * (1 + 1e-4) + 1e-5).all()), name
        else:
            tolerance = 1e-5 if name == "pixel_values" else 1e-4 * depth.max_depth
            assert bool((delta.abs().amax(dim=1) <= eps + tolerance).all()), name
        assert bool((result.linf[name] <= (float("inf") if l2 else eps) + 1e-4).all())
        assert delta.abs().max() > 0  # something was perturbed


# ------------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("kind", list(BUDGETS))
@pytest.mark.parametrize(("attack_class", "kwargs"), ATTACKS, ids=ATTACK_IDS)
def test_budget_invariants(attack_class, kwargs, kind, processor, model):
    budget = (L2_BUDGETS if attack_class is PGDL2 else BUDGETS)[kind]
    batch, labels = make_batch(processor)
    original = {key: value.clone() for key, value in batch.items()}
    model.train()
    model.rgbd_cnn.depth_norm.eval() if hasattr(model.rgbd_cnn, "depth_norm") else None
    modes = {name: module.training for name, module in model.named_modules()}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    rng_state = torch.get_rng_state()

    attack = attack_class(model, budget=budget, processor=processor, **kwargs)
    with torch.no_grad():
        result = attack.perturb(batch, labels)
    # The caller's batch untouched.
    for key in batch:
        assert torch.equal(batch[key], original[key])
    assert_budget_invariants(batch, result, budget, processor, l2=attack_class is PGDL2)
    # Guarantees: modes restored module by module, no weight gradients, requires_grad untouched, global RNG.
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert torch.equal(torch.get_rng_state(), rng_state)
    model.eval()


@pytest.mark.parametrize(("attack_class", "kwargs"), ATTACKS, ids=ATTACK_IDS)
def test_successes_are_real(attack_class, kwargs, processor, model):
    """Samples reported as successful are misclassified by the returned batch (no stale bookkeeping)."""
    batch, labels = make_batch(processor, batch_size=8, seed=1)
    budget = {"pixel_values": 2.0, "depth_values": 3.0} if attack_class is PGDL2 else None
    result = attack_class(model, budget=budget, processor=processor, **kwargs).perturb(batch, labels)
    with torch.no_grad():
        prediction = model(**{k: v for k, v in result.inputs.items() if k != "intrinsics"}).logits.argmax(1)
    assert bool((prediction[result.success] != labels[result.success]).all())


def test_dict_stays_dict_and_processor_none(model):
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.rand(2, 3, SIZE, SIZE, generator=generator),
        "depth_values": 1 + torch.rand(2, 1, SIZE, SIZE, generator=generator),
        "depth_mask": torch.rand(2, 1, SIZE, SIZE, generator=generator) > 0.2,
    }
    batch["depth_values"] = batch["depth_values"] * batch["depth_mask"]
    adversarial = PGD(model, steps=2)(batch, torch.tensor([0, 1]))
    assert type(adversarial) is dict and list(adversarial) == list(batch)
    delta = adversarial["depth_values"] - batch["depth_values"]
    assert bool((delta[~batch["depth_mask"]] == 0).all()) and delta.abs().max() <= 0.05 + 1e-6
    assert adversarial["pixel_values"].min() >= 0 and adversarial["pixel_values"].max() <= 1
    assert (adversarial["pixel_values"] - batch["pixel_values"]).abs().max() <= 8 / 255 + 1e-6


def test_seeded_and_independent_of_global_rng(processor, model):
    batch, labels = make_batch(processor)
    torch.manual_seed(1)
    first = PGD(model, steps=1, processor=processor, seed=3)(batch, labels)
    torch.manual_seed(2)
    second = PGD(model, steps=1, processor=processor, seed=3)(batch, labels)
    third = PGD(model, steps=1, processor=processor, seed=4)(batch, labels)
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    assert not torch.equal(first["pixel_values"], third["pixel_values"])
    attack = PGD(model, steps=1, processor=processor, seed=3)
    attack(batch, labels)
    assert not torch.equal(attack(batch, labels)["pixel_values"], first["pixel_values"])  # the generator advances
    assert torch.equal(attack.manual_seed()(batch, labels)["pixel_values"], first["pixel_values"])


def test_under_inference_mode(processor, model):
    with torch.inference_mode():
        batch, labels = make_batch(processor)
        adversarial = PGD(model, steps=1, processor=processor)(batch, labels)
    assert adversarial["pixel_values"].shape == batch["pixel_values"].shape


def test_depth_tokens_recomputed(model):
    processor = make_processor(depth_vocab_size=16, depth_patch_size=8)
    batch, labels = make_batch(processor)
    adversarial = PGD(model, budget={"depth_values": 0.5}, steps=2, processor=processor)(batch, labels)
    depth = processor.depth_image_processor
    metres = depth.to_metres(adversarial["depth_values"], adversarial["depth_mask"])
    expected = depth_token_ids(metres, adversarial["depth_mask"], 16, 8, depth.min_depth, depth.max_depth)
    assert torch.equal(adversarial["depth_token_ids"], expected)
    assert not torch.equal(adversarial["depth_token_ids"], batch["depth_token_ids"])
    # RGB-only attacks leave them alone.
    rgb_only = PGD(model, budget={"pixel_values": 0.1}, steps=1, processor=processor)(batch, labels)
    assert torch.equal(rgb_only["depth_token_ids"], batch["depth_token_ids"])


@pytest.mark.parametrize("representation", ["metric", "disparity", "dataset"])
def test_other_representations(representation, model):
    extra = {"depth_mean": 3.0, "depth_std": 1.5} if representation == "dataset" else {}
    processor = make_processor(representation, **extra)
    batch, labels = make_batch(processor)
    adversarial = PGD(model, budget={"depth_values": 0.1}, steps=2, processor=processor)(batch, labels)
    before, after = physical(batch, processor), physical(adversarial, processor)
    delta = (after["depth_values"] - before["depth_values"]).abs()
    assert delta.max() <= 0.1 + 1e-4 and delta.max() > 0.05


# ------------------------------------------------------------------------------------------------ structure
def test_pgd_step_is_one_forward_one_input_backward(processor, model, monkeypatch):
    batch, labels = make_batch(processor)
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    calls = []
    original_grad = torch.autograd.grad

    def counting_grad(outputs, inputs, *args, **kwargs):
        calls.append([tuple(t.shape) for t in inputs])
        return original_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    try:
        PGD(model, steps=5, n_restarts=2, processor=processor)(batch, labels)
        assert len(forwards) == 10 and len(calls) == 10
        # Gradients with respect to the two perturbed inputs only, never the weights.
        assert all(shapes == [(4, 3, SIZE, SIZE), (4, 1, SIZE, SIZE)] for shapes in calls)
        forwards.clear()
        APGD(model, steps=7, processor=processor)(batch, labels)
        assert len(forwards) == 8  # the random start plus one per step, as AutoAttack
        forwards.clear()
        FGSM(model, processor=processor)(batch, labels)
        assert len(forwards) == 1
    finally:
        handle.remove()
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------ objectives
def test_margin_and_dlr_losses():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 4.0]])
    labels = torch.tensor([0, 1])
    assert torch.allclose(margin_loss(logits, labels), torch.tensor([1.0 - 3.0, 4.0 - 2.0]))
    assert torch.allclose(dlr_loss(logits, labels), torch.tensor([-(3 - 1) / (3 - 0.5), -(2 - 4) / (4 - 1)]))
    targeted = dlr_loss(logits, torch.tensor([2, 3]), targeted=True)
    assert torch.allclose(targeted, torch.tensor([(3 - 0.5) / (3 - 0.5 * (0.5 - 1)), (2 - 4) / (4 - 0.5 * (1 + 0))]))
    # The true class never wins the margin's max, even when it is -inf-like large.
    assert margin_loss(torch.tensor([[1e30, 0.0]]), torch.tensor([0])).item() == -torch.tensor(1e30).item()


def test_targeted_attack_reaches_targets(processor, model):
    batch, labels = make_batch(processor, batch_size=8, seed=2)
    targets = (labels + 1) % NUM_LABELS
    result = PGD(
        model, budget={"pixel_values": 0.5, "depth_values": 1.0}, steps=10, targeted=True, processor=processor
    ).perturb(batch, targets)
    with torch.no_grad():
        clean = model(**batch).logits.argmax(1)
        adversarial = model(**result.inputs).logits.argmax(1)
    assert (adversarial == targets).sum() > (clean == targets).sum()
    assert bool((adversarial[result.success] == targets[result.success]).all())


def test_targeted_lives_on_the_attack(processor, model):
    # One objective serves a targeted and an untargeted attack: it keeps no `targeted` of its own.
    batch, labels = make_batch(processor)
    objective = ClassificationObjective("dlr")
    targeted = APGD(model, steps=2, loss=objective, targeted=True, processor=processor)
    untargeted = APGD(model, steps=2, loss=objective, processor=processor)
    assert not hasattr(objective, "targeted") and targeted.objective is untargeted.objective
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.equal(objective.loss({"logits": logits}, labels, True), dlr_loss(logits, labels, targeted=True))
    assert torch.equal(objective.loss({"logits": logits}, labels, False), dlr_loss(logits, labels))
    assert not torch.equal(
        targeted.perturb(batch, labels).inputs["pixel_values"],
        untargeted.perturb(batch, labels).inputs["pixel_values"],
    )


def test_step_counts_are_checked_once(model):
    for attack_class in (PGD, PGDL2, APGD):
        with pytest.raises(ValueError, match="steps"):
            attack_class(model, steps=0)
    for attack_class in (PGD, BIM, MIFGSM, APGD):
        with pytest.raises(ValueError, match="steps"):
            attack_class(model, steps=2.0)
    assert MIFGSM(model, steps=0).steps == 0 and BIM(model, steps=3).steps == 3


def test_callable_loss(processor, model):
    batch, labels = make_batch(processor)

    def negative_logit(outputs, labels):
        return -outputs.logits.gather(1, labels[:, None]).squeeze(1)

    adversarial = PGD(model, steps=2, loss=negative_logit, processor=processor)(batch, labels)
    with torch.no_grad():
        before = model(**batch).logits.gather(1, labels[:, None])
        after = model(**adversarial).logits.gather(1, labels[:, None])
    assert bool((after < before).all())


def test_clip_classifier_and_retrieval():
    torch.manual_seed(0)
    config = RgbdClipConfig.tiny(num_labels=NUM_LABELS)
    classifier = RgbdClipForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.rand(4, 3, 32, 32, generator=generator),
        "depth_values": 1 + torch.rand(4, 1, 32, 32, generator=generator),
        "depth_mask": torch.ones(4, 1, 32, 32, dtype=torch.bool),
    }
    adversarial = PGD(classifier, steps=2)(batch, torch.tensor([0, 1, 2, 3]))
    assert adversarial["pixel_values"].shape == (4, 3, 32, 32)

    torch.manual_seed(0)
    clip = RgbdClipModel(RgbdClipConfig.tiny()).eval()
    with torch.no_grad():
        clean = clip(**batch).logits_per_rgb.argmax(1)
    for budget in ({"pixel_values": 0.3}, {"depth_values": 2.0}, {"pixel_values": 0.3, "depth_values": 2.0}):
        objective = RetrievalObjective(loss="margin")
        result = PGD(clip, budget=budget, steps=5, loss=objective).perturb(batch)
        with torch.no_grad():
            retrieved = clip(**result.inputs).logits_per_rgb.argmax(1)
        diagonal = torch.arange(4)
        assert bool(result.success.any())  # some matched pair now scores below a mismatched one
        assert bool((retrieved[result.success] != diagonal[result.success]).all())
        assert (retrieved != diagonal).sum() >= (clean != diagonal).sum()
    with pytest.raises(ValueError, match="labels"):
        PGD(clip, loss=RetrievalObjective()).perturb(batch, torch.tensor([0, 1, 2, 9]))


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input(processor, model):
    batch, labels = make_batch(processor)
    rgb_only = {"pixel_values": batch["pixel_values"]}
    with pytest.raises(ValueError, match="budget"):
        PGD(model, processor=processor)(rgb_only, labels)
    with pytest.raises(ValueError, match="budget"):
        PGD(model, budget={"pixel_values": -0.1})
    with pytest.raises(ValueError, match="budget"):
        PGD(model, budget={"depth_mask": 0.1})
    with pytest.raises(ValueError, match="budget"):
        PGD(model, processor=make_processor("per_image"))
    PGD(model, budget={"pixel_values": 0.1}, processor=make_processor("per_image"))  # RGB-only is fine
    with pytest.raises(ValueError, match="alpha"):
        PGD(model, budget={"pixel_values": 0.1}, alpha={"depth_values": 0.1})
    with pytest.raises(ValueError, match="loss"):
        APGD(make_model(num_labels=2), loss="dlr")
    with pytest.raises(ValueError, match="loss"):
        APGD(make_model(num_labels=3), loss="dlr", targeted=True)
    APGD(make_model(num_labels=3), loss="dlr")
    with pytest.raises(ValueError, match="loss"):
        PGD(model, loss="hinge")
    for bad in (labels[:2], labels[:, None], labels.float()):
        with pytest.raises(ValueError, match="labels"):
            PGD(model, steps=1, processor=processor)(batch, bad)
    with pytest.raises(ValueError, match="labels"):
        PGD(model, steps=1, processor=processor)(batch)
    with pytest.raises(ValueError, match="steps"):
        PGD(model, steps=0)
    for flag in ("targeted", "random_start"):
        with pytest.raises(ValueError, match=flag):
            PGD(model, **{flag: "yes"})
    for name, bad in (
        ("pixel_values", batch["pixel_values"].double().long()),
        ("depth_values", batch["depth_values"][:, 0]),
        ("depth_mask", batch["depth_mask"].float()),
        ("depth_mask", batch["depth_mask"][:, :, :-1]),
    ):
        with pytest.raises(ValueError, match=name):
            PGD(model, steps=1, processor=processor)({**batch, name: bad}, labels)
    with pytest.raises(ValueError, match="alpha"):
        RFGSM(model, budget={"pixel_values": 0.1}, alpha={"pixel_values": 0.2})
    tokens = make_processor(depth_vocab_size=16, depth_patch_size=8)
    token_batch, _ = make_batch(tokens)
    with pytest.raises(ValueError, match="depth_token_ids"):
        PGD(model, steps=1)(token_batch, labels)


def test_bim_kurakin_rule(model):
    assert BIM(model, budget={"pixel_values": 4 / 255}, steps=0).steps == 5
    assert BIM(model, budget={"pixel_values": 16 / 255}, steps=0).steps == 20
    with pytest.raises(ValueError, match="steps"):
        BIM(model, budget={"depth_values": 0.1}, steps=0)


# ------------------------------------------------------------------------------------------------ training
class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_adversarial_trainer(tmp_path, processor):
    model = make_model()
    batch, labels = make_batch(processor, batch_size=8)
    items = [
        {"pixel_values": batch["pixel_values"][i], "depth_values": batch["depth_values"][i],
         "depth_mask": batch["depth_mask"][i], "labels": labels[i]}
        for i in range(8)
    ]  # fmt: skip
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=0.05, report_to=[],
        use_cpu=True, save_strategy="no", logging_steps=1, dataloader_num_workers=0,
    )  # fmt: skip
    seen = []

    class SpyPGD(PGD):
        def perturb(self, inputs, labels=None):
            seen.append(self.model.training)
            result = super().perturb(inputs, labels)
            seen.append(self.model.training)
            return result

    attack = SpyPGD(model, steps=2, processor=processor)
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=_ListDataset(items), attack=attack)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    output = trainer.train()
    assert np.isfinite(output.training_loss)
    assert seen == [True, True, True, True]  # attacked twice, train mode restored each time
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    with pytest.raises(ValueError, match="attack"):
        AdversarialTrainer(model=model, args=args, train_dataset=_ListDataset(items))
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=_ListDataset(items), processing_class=processor)
    assert isinstance(trainer.attack, PGD)
    with pytest.raises(ValueError, match="attack"):
        AdversarialTrainer(model=model, args=args, attack=PGD(make_model(), processor=processor))


# ------------------------------------------------------------------------------------------------ rooms
def test_attacks_import_nothing_above_them():
    # attacks/ holds the algorithms; evaluation and training stand above it and import it, never the reverse.
    attacks_dir = Path(hf_rgbd.attacks.__file__).parent
    for source in attacks_dir.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):  # every import, also those inside functions
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("..training", "..evaluation", "..pipelines", "hf_rgbd.")), (source, name)
    for moved in ("evaluate_robustness", "AdversarialTrainer"):
        assert not hasattr(hf_rgbd.attacks, moved)


def test_moved_names_stay_importable_from_the_package():
    import hf_rgbd.data
    import hf_rgbd.evaluation
    import hf_rgbd.training

    assert hf_rgbd.evaluate_robustness is hf_rgbd.evaluation.evaluate_robustness
    assert hf_rgbd.AdversarialTrainer is hf_rgbd.training.AdversarialTrainer
    assert {"split_to_tensors", "random_flip_shift"} <= set(hf_rgbd.data.__all__)
    # `import hf_rgbd` stays light: AdversarialTrainer (transformers.Trainer) loads on first use only.
    script = "import sys, hf_rgbd; assert 'transformers.trainer' not in sys.modules; print('LAZY-OK')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "LAZY-OK" in result.stdout, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ issue 13
@pytest.mark.parametrize(("attack_class", "kwargs"), ATTACKS, ids=ATTACK_IDS)
def test_ignored_samples_stay_unperturbed_and_never_succeed(attack_class, kwargs, processor, model):
    batch, labels = make_batch(processor)
    labels[1] = -100
    result = attack_class(model, processor=processor, **kwargs).perturb(batch, labels)
    assert result.ignored.tolist() == [False, True, False, False]
    assert not result.success[1]
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(result.inputs[key][1], batch[key][1])
        assert torch.equal(result.final_inputs[key][1], batch[key][1])
        assert result.linf[key][1] == 0 and result.l2[key][1] == 0
    # the other samples are attacked as if the ignored one were not there (per-sample objective)
    others = attack_class(model, processor=processor, **kwargs).perturb(batch, labels.clamp_min(0))
    for key in ("pixel_values", "depth_values"):
        if attack_class not in (RFGSM, PGD, PGDL2, APGD):  # no random start: the same draws for every sample
            assert torch.equal(result.inputs[key][[0, 2, 3]], others.inputs[key][[0, 2, 3]])


def test_non_finite_inputs_at_the_attack_entry(processor, model):
    batch, labels = make_batch(processor)
    for value in (float("nan"), float("inf")):
        corrupt = {**batch, "pixel_values": batch["pixel_values"].clone()}
        corrupt["pixel_values"][2, 1, 4, 4] = value
        for attack in (PGD(model, steps=1, processor=processor), PGDL2(model, steps=1, processor=processor)):
            with pytest.raises(ValueError, match="pixel_values"):
                attack(corrupt, labels)
    # NaN depth at holes and inf depth where the mask says valid: holes, returned exactly as given
    depth = torch.where(batch["depth_mask"], batch["depth_values"], float("nan"))
    depth[0, 0, 1, 1] = float("inf")
    mask = batch["depth_mask"].clone()
    mask[0, 0, 1, 1] = True
    corrupt = {**batch, "depth_values": depth, "depth_mask": mask}
    for attack_class in (PGD, PGDL2, APGD):
        result = attack_class(model, steps=2, processor=processor).perturb(corrupt, labels)
        holes = ~(mask & torch.isfinite(depth))
        out = result.inputs["depth_values"]
        assert torch.isnan(out[holes & torch.isnan(depth)]).all() and out[0, 0, 1, 1] == float("inf")
        assert torch.isfinite(out[~holes]).all()
        assert all(torch.isfinite(norm).all() for norm in (*result.linf.values(), *result.l2.values()))


def test_missing_output_field_and_grey_level_budgets_are_named_errors(processor):
    config = RgbdClipConfig.tiny(rgb_config={"image_size": SIZE}, depth_config={"image_size": SIZE})
    clip = RgbdClipModel(config).eval()
    batch, labels = make_batch(processor)
    with pytest.raises(ValueError, match=r"`logits`.*RgbdClipModel"):
        PGD(clip, budget={"pixel_values": 2 / 255}, steps=1, processor=processor)(batch, labels)
    model = make_model()
    for attack_class in (FGSM, RFGSM, BIM, PGD, MIFGSM, APGD):
        with pytest.raises(ValueError, match=r"budget\['pixel_values'\].*8 / 255"):
            attack_class(model, budget={"pixel_values": 8})
    PGDL2(model, budget={"pixel_values": 8.0})  # an L2 budget above 1 is meaningful
    with pytest.raises(ValueError, match="alpha"):
        PGD(model, alpha={"pixel_values": 2})
    for bad in (float("nan"), float("inf"), -1.0, "1"):
        with pytest.raises(ValueError, match="decay"):
            MIFGSM(model, decay=bad)
    for bad in (-1, 2**64, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed"):
            PGD(model, seed=bad)
    PGD(model, budget={"pixel_values": np.float32(4 / 255)}, seed=2**64 - 1)
    with pytest.raises(ValueError, match="labels"):
        PGD(model, steps=1, processor=processor)(batch, torch.tensor([0, 1, 2, NUM_LABELS]))
