"""hf_rgbd.attacks.square: Square Attack (score-based, gradient-free). Budget invariants (L-inf and L2), no gradients,
seeding, real successes, per-sample early stopping, query counts, bad arguments, `AttackRun.score`, and a
cross-check of robust accuracy against pyautoattack's `SquareAttack` on an RGB adapter module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_attacks import BUDGETS, L2_BUDGETS, SIZE, assert_budget_invariants, make_batch, make_model, make_processor

from hf_rgbd import RgbdClipConfig, RgbdClipModel
from hf_rgbd.attacks import PGD, PGDL2, RetrievalObjective
from hf_rgbd.attacks.base import AttackRun
from hf_rgbd.attacks.square import Square, square_fraction, square_side

torch.set_num_threads(1)

# the tiny processor and CNN classifier of test_attacks, one each per module
processor = pytest.fixture(make_processor, scope="module", name="processor")
model = pytest.fixture(make_model, scope="module", name="model")


class Recorder(torch.nn.Module):
    """Wraps a classifier: fails on any forward with gradients enabled and records every forward's inputs and
    predictions."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, pixel_values, depth_values, depth_mask=None):
        assert not torch.is_grad_enabled(), "Square must only call the model under torch.no_grad()"
        outputs = self.model(pixel_values=pixel_values, depth_values=depth_values, depth_mask=depth_mask)
        self.calls.append(
            {"pixel_values": pixel_values, "depth_values": depth_values, "prediction": outputs.logits.argmax(1)}
        )
        return outputs


def colour_batch(processor, size: int = 64, shared_depth: bool = True):
    """RGB images of one random colour each plus noise (the tiny random model then predicts several classes); one
    depth map for every sample (the pyautoattack adapter fixes depth) or one each."""
    generator = torch.Generator().manual_seed(0)
    colour = torch.rand(size, 3, 1, 1, generator=generator)
    images = (colour + 0.15 * torch.randn(size, 3, SIZE, SIZE, generator=generator)).clamp(0, 1)
    depths = 0.6 + 5 * torch.rand(1 if shared_depth else size, SIZE, SIZE, generator=generator)
    depths = depths.expand(size, -1, -1)
    return processor(images=list(images.permute(0, 2, 3, 1).numpy()), depths=list(depths.numpy()), do_rescale=False)


def predict(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(
            pixel_values=batch["pixel_values"], depth_values=batch["depth_values"], depth_mask=batch["depth_mask"]
        ).logits.argmax(1)


# ------------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("kind", list(BUDGETS))
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_budget_invariants(norm, kind, processor, model):
    budget = (BUDGETS if norm == "Linf" else L2_BUDGETS)[kind]
    batch, labels = make_batch(processor)
    original = {key: value.clone() for key, value in batch.items()}
    model.train()
    modes = {name: module.training for name, module in model.named_modules()}
    rng_state = torch.get_rng_state()
    with torch.no_grad():
        result = Square(model, budget, norm=norm, n_queries=25, processor=processor).perturb(batch, labels)
    for key in batch:
        assert torch.equal(batch[key], original[key])
    assert_budget_invariants(batch, result, budget, processor, l2=norm == "L2")
    for adversarial in (result.inputs, result.final_inputs):
        holes = ~batch["depth_mask"].expand_as(batch["depth_values"])
        assert torch.equal(adversarial["depth_values"][holes], batch["depth_values"][holes])
        for key in set(batch) - set(budget):
            assert torch.equal(adversarial[key], batch[key]), key
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng_state)
    model.eval()


def test_l2_perturbation_sits_on_the_budget(processor, model):
    """Away from the valid range's ends the L2 perturbation has exactly the budget's norm (the mass moves between
    windows); the L-inf one reaches the budget."""
    batch = colour_batch(processor, size=8, shared_depth=False)
    labels = predict(model, batch)
    budget = {"pixel_values": 0.3, "depth_values": 0.2}
    result = Square(model, budget, norm="L2", n_queries=30, processor=processor).perturb(batch, labels)
    assert torch.allclose(result.l2["depth_values"], torch.full((8,), 0.2), rtol=1e-3)
    assert bool((result.l2["pixel_values"] <= 0.3 * (1 + 1e-4)).all() and (result.l2["pixel_values"] > 0.25).all())
    result = Square(model, {"pixel_values": 0.02}, n_queries=30, processor=processor).perturb(batch, labels)
    assert torch.allclose(result.linf["pixel_values"], torch.full((8,), 0.02))


def test_gradient_free(processor, model, monkeypatch):
    recorder = Recorder(model)

    def no_gradients(*args, **kwargs):
        raise AssertionError("Square computed a gradient")

    monkeypatch.setattr(torch.autograd, "grad", no_gradients)
    monkeypatch.setattr(torch.Tensor, "backward", no_gradients)
    batch, labels = make_batch(processor)
    for norm, budget in (("Linf", BUDGETS["joint"]), ("L2", L2_BUDGETS["joint"])):
        Square(recorder, budget, norm=norm, n_queries=10, processor=processor)(batch, labels)
    assert recorder.calls and all(p.grad is None for p in model.parameters())


def test_seeded_and_independent_of_global_rng(processor, model):
    batch, labels = make_batch(processor)
    outputs = []
    for global_seed, seed in ((1, 3), (2, 3), (1, 4)):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        outputs.append(Square(model, n_queries=15, processor=processor, seed=seed)(batch, labels))
        assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(outputs[0]["pixel_values"], outputs[1]["pixel_values"])
    assert torch.equal(outputs[0]["depth_values"], outputs[1]["depth_values"])
    assert not torch.equal(outputs[0]["pixel_values"], outputs[2]["pixel_values"])
    attack = Square(model, norm="L2", n_queries=15, processor=processor, seed=3)
    first = attack(batch, labels)
    assert not torch.equal(attack(batch, labels)["pixel_values"], first["pixel_values"])  # the generator advances
    assert torch.equal(attack.manual_seed()(batch, labels)["pixel_values"], first["pixel_values"])


# ------------------------------------------------------------------------------------------------ search
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_successes_are_real_and_found_where_pgd_finds_them(norm, processor):
    model = make_model(seed=5)
    batch = colour_batch(processor, size=32, shared_depth=False)
    labels = predict(model, batch)  # every sample correctly classified
    budget = (
        {"pixel_values": 0.05, "depth_values": 0.1} if norm == "Linf" else {"pixel_values": 1.5, "depth_values": 1.0}
    )
    square = Square(model, budget, norm=norm, n_queries=1000, processor=processor).perturb(batch, labels)
    # Square's returned iterates were all evaluated: misclassified exactly where it reports success
    assert torch.equal(predict(model, square.inputs) != labels, square.success)
    pgd_class = PGD if norm == "Linf" else PGDL2
    pgd = pgd_class(model, budget, steps=20, processor=processor).perturb(batch, labels)
    assert int(pgd.success.sum()) >= 30  # a comfortable budget
    assert int(square.success.sum()) >= int(pgd.success.sum()) - 1


def test_targeted_defaults_to_cross_entropy_and_reaches_targets(processor):
    model = make_model(seed=5)
    batch = colour_batch(processor, size=16, shared_depth=False)
    targets = (predict(model, batch) + 1) % 4
    assert Square(model).loss == "margin" and Square(model, targeted=True).loss == "ce"
    assert Square(model, targeted=True, loss="margin").loss == "margin"
    result = Square(model, {"pixel_values": 0.1}, n_queries=200, targeted=True, processor=processor).perturb(
        batch, targets
    )
    assert int(result.success.sum()) >= 8
    assert torch.equal(predict(model, result.inputs)[result.success], targets[result.success])


def test_early_stop_keeps_the_successful_iterate(processor):
    """A sample fooled at some query is never queried again and comes back exactly as that query saw it; the
    still-robust ones go on (the forwards shrink to them)."""
    recorder = Recorder(make_model(seed=5))
    batch = colour_batch(processor, size=16, shared_depth=False)
    labels = predict(recorder.model, batch)
    result = Square(recorder, {"pixel_values": 0.02}, n_queries=150, processor=processor).perturb(batch, labels)
    assert 0 < int(result.success.sum()) < 16
    assert recorder.calls[0]["pixel_values"].shape[0] == 16 and recorder.calls[-1]["pixel_values"].shape[0] < 16
    depth_rows = batch["depth_values"].flatten(1)
    for sample in range(16):
        # the forwards that held this sample (identified by its unperturbed depth map) and where it sat in them
        seen = []
        for call in recorder.calls:
            rows = (call["depth_values"].flatten(1) == depth_rows[sample]).all(dim=1).nonzero().flatten()
            if rows.numel():
                seen.append((call, int(rows[0])))
        fooled = [i for i, (call, row) in enumerate(seen) if call["prediction"][row] != labels[sample]]
        assert bool(result.success[sample]) == bool(fooled)
        if fooled:
            assert fooled == [len(seen) - 1]  # not queried after its success
            call, row = seen[-1]
            assert torch.equal(result.inputs["pixel_values"][sample], call["pixel_values"][row])
        else:
            assert len(seen) == 150


def test_query_budget(processor, model):
    recorder = Recorder(model)
    batch, labels = make_batch(processor)
    robust = predict(model, batch) == labels
    assert bool(robust.any())
    # a budget too small to flip anything: every query is spent, n_queries forwards per restart
    Square(recorder, {"pixel_values": 1e-6}, n_queries=12, n_restarts=2, processor=processor)(batch, labels)
    assert len(recorder.calls) == 24
    assert [call["pixel_values"].shape[0] for call in recorder.calls] == [4] + [int(robust.sum())] * 23
    recorder.calls.clear()
    Square(recorder, {"pixel_values": 1.0}, n_queries=50, processor=processor)(batch, labels)
    assert len(recorder.calls) < 50  # everything fooled early: the search stops
    recorder.calls.clear()
    Square(recorder, n_queries=1, processor=processor)(batch, labels)
    assert len(recorder.calls) == 1  # the start only


def test_ignored_samples(processor, model):
    batch, labels = make_batch(processor)
    labels[1] = -100
    result = Square(model, n_queries=20, processor=processor).perturb(batch, labels)
    assert not result.success[1]
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(result.inputs[key][1], batch[key][1])
        assert torch.equal(result.final_inputs[key][1], batch[key][1])
    # the others are attacked as if the ignored one were not there: the same draws for every sample
    others = Square(model, n_queries=20, processor=processor).perturb(batch, labels.clamp_min(0))
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(result.inputs[key][[0, 2, 3]], others.inputs[key][[0, 2, 3]])


def test_retrieval_is_scored_on_the_whole_batch():
    torch.manual_seed(0)
    clip = RgbdClipModel(RgbdClipConfig.tiny()).eval()
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.rand(4, 3, 32, 32, generator=generator),
        "depth_values": 1 + torch.rand(4, 1, 32, 32, generator=generator),
        "depth_mask": torch.ones(4, 1, 32, 32, dtype=torch.bool),
    }
    sizes = []
    handle = clip.register_forward_hook(lambda module, args, kwargs, out: sizes.append(out.logits_per_rgb.shape),
                                        with_kwargs=True)  # fmt: skip
    try:
        result = Square(clip, {"pixel_values": 0.3}, n_queries=20, loss=RetrievalObjective("margin")).perturb(batch)
    finally:
        handle.remove()
    assert sizes == [(4, 4)] * 20  # a query's similarity row needs the whole gallery
    with torch.no_grad():
        retrieved = clip(**result.inputs).logits_per_rgb.argmax(1)
    assert bool((retrieved[result.success] != torch.arange(4)[result.success]).all())


# ------------------------------------------------------------------------------------------------ pieces
def test_score_matches_evaluate_and_forwards_subsets(processor, model):
    batch, labels = make_batch(processor)
    attack = Square(model, processor=processor, loss="ce", targeted=True)
    run = AttackRun(attack, batch, labels)
    x = run.space.random_linf(torch.Generator().manual_seed(0))
    value, _ = run.evaluate(x)
    assert torch.allclose(run.score(x), value, atol=1e-6)
    forwards = []
    handle = model.register_forward_hook(lambda module, args, kwargs, out: forwards.append(kwargs["pixel_values"]),
                                         with_kwargs=True)  # fmt: skip
    try:
        part = run.score(x, torch.tensor([1, 3]))
    finally:
        handle.remove()
    assert [tuple(t.shape) for t in forwards] == [(2, 3, SIZE, SIZE)]
    assert torch.allclose(part[[1, 3]], value[[1, 3]], atol=1e-5) and bool(torch.isinf(part[[0, 2]]).all())
    assert torch.equal(run.score(x, torch.tensor([], dtype=torch.long)), torch.full((4,), -torch.inf))
    # successes recorded only where evaluated
    run = AttackRun(Square(model, processor=processor), batch, labels)
    clean = run.space.clean()
    run.score(clean, torch.arange(4))  # the first forward takes the whole batch
    fooled = predict(model, batch) != labels
    assert torch.equal(run.tracker.success, fooled)


def test_schedule():
    assert [square_fraction(0.8, it, 10000) for it in (0, 10, 11, 50, 51, 8000, 8001, 9999)] == [
        0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512, 0.8 / 512,
    ]  # fmt: skip
    # rescaled to the query budget: iteration 1 of 300 is 33 of 10000, iteration 3 is 100
    assert square_fraction(0.8, 1, 300) == 0.4 and square_fraction(0.8, 3, 300) == 0.2
    # AutoAttack's schedule: the halvings at the iteration counts themselves
    assert [square_fraction(0.8, it, 1000, rescale=False) for it in (10, 11, 51, 201, 999)] == [0.8, 0.4, 0.2, 0.1, 0.05]
    assert square_side(0.8, 16, 16) == 14 and square_side(1e-4, 16, 16) == 1 and square_side(1.0, 8, 16) == 8
    assert square_side(1e-4, 16, 16, l2=True) == 3 and square_side(0.25, 16, 16, l2=True) == 9


def test_bad_arguments(model):
    for norm in ("L1", "linf2", 2, None):
        with pytest.raises(ValueError, match="`norm`.*'Linf', 'L2'"):
            Square(model, norm=norm)
    for n_queries in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_queries"):
            Square(model, n_queries=n_queries)
    for p_init in (0.0, -0.1, 1.5, float("nan"), "0.8"):
        with pytest.raises(ValueError, match="p_init"):
            Square(model, p_init=p_init)
    with pytest.raises(ValueError, match="n_restarts"):
        Square(model, n_restarts=0)
    with pytest.raises(ValueError, match="255"):
        Square(model, {"pixel_values": 8})  # L-inf RGB budgets are in [0, 1]
    assert Square(model, {"pixel_values": 8.0}, norm="L2").norm == "l2"  # an L2 radius may exceed 1
    assert Square(model, norm="L2").budget == PGDL2.default_budget
    assert "n_queries=5000" in repr(Square(model))


# ------------------------------------------------------------------------------------------------ pyautoattack
class Adapter(torch.nn.Module):
    """[0, 1] RGB -> normalised `pixel_values` -> the RGB-D model with one fixed depth map -> logits."""

    def __init__(self, model, processor, batch):
        super().__init__()
        self.model = model
        image = processor.image_processor
        self.register_buffer("mean", torch.tensor(image.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(image.image_std).view(1, 3, 1, 1))
        self.depth_values, self.depth_mask = batch["depth_values"][:1], batch["depth_mask"][:1]

    def forward(self, images):
        size = images.shape[0]  # pyautoattack forwards subsets: the same depth map for every sample
        return self.model(
            pixel_values=(images - self.mean) / self.std,
            depth_values=self.depth_values.expand(size, -1, -1, -1),
            depth_mask=self.depth_mask.expand(size, -1, -1, -1),
        ).logits


@pytest.mark.parametrize(("norm", "eps", "seeds"), [("Linf", 0.012, (0, 1, 2)), ("L2", 0.4, (0, 1))])
def test_robust_accuracy_agrees_with_pyautoattack(norm, eps, seeds, processor):
    """RGB-only budget, 300 queries, 64 samples: robust accuracy within 4 samples of pyautoattack's for every seed,
    and on average no weaker by more than 1.5 samples (the random searches differ, not their strength)."""
    square_attack = pytest.importorskip("autoattack.square").SquareAttack
    model = make_model(seed=5)
    batch = colour_batch(processor)
    adapter = Adapter(model, processor, batch).eval()
    physical = batch["pixel_values"] * adapter.std + adapter.mean
    with torch.no_grad():
        labels = adapter(physical).argmax(1)  # clean accuracy 100%
    differences = []
    for seed in seeds:
        ours = Square(model, {"pixel_values": eps}, norm=norm, n_queries=300, processor=processor, seed=seed)
        result = ours.perturb(batch, labels)
        with torch.random.fork_rng():  # pyautoattack seeds and draws from the global RNG
            reference = square_attack(adapter, norm=norm, eps=eps, n_queries=300, seed=seed, device="cpu")
            adversarial = reference.perturb(physical, labels)
        with torch.no_grad():
            ours_robust = int(
                (adapter(result.inputs["pixel_values"] * adapter.std + adapter.mean).argmax(1) == labels).sum()
            )
            reference_robust = int((adapter(adversarial).argmax(1) == labels).sum())
            reference_norms = (adversarial - physical).flatten(1).norm(dim=1, p=np.inf if norm == "Linf" else 2)
        assert ours_robust == int((~result.success).sum())
        assert 10 < reference_robust < 54  # the budget leaves a comparison that can tell strengths apart
        assert bool((reference_norms <= eps + 1e-5).all())
        differences.append(ours_robust - reference_robust)
        print(
            f"{norm} eps={eps} seed={seed}: robust accuracy ours {ours_robust}/64, pyautoattack {reference_robust}/64"
        )
    assert all(abs(d) <= 4 for d in differences), differences
    assert sum(differences) / len(differences) <= 1.5, differences
