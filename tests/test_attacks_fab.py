"""hf_rgbd.attacks.fab: FAB and FAB-T (Croce & Hein, 2020). The box-constrained hyperplane projections against
brute force, closed forms and pyautoattack's; budget invariants on the tiny CNN; real success flags; FAB-T's
targets and still-robust subsets; exact minimal norms on linear models (one input and two, in the
budget-normalised norm); reproducibility; bad arguments; robust accuracy against pyautoattack's FAB-T."""

from __future__ import annotations

import importlib

import pytest
import torch
from scipy.optimize import linprog
from test_attacks import assert_budget_invariants, make_batch, make_model, make_processor
from transformers.image_processing_utils import BatchFeature
from transformers.modeling_outputs import SequenceClassifierOutput

import hf_rgbd.attacks.fab as fab_module
from hf_rgbd.attacks import RetrievalObjective
from hf_rgbd.attacks.base import model_inputs
from hf_rgbd.attacks.fab import FAB, hyperplane_projection_l2, hyperplane_projection_linf

torch.set_num_threads(1)

PROJECTIONS = {"Linf": (hyperplane_projection_linf, float("inf")), "L2": (hyperplane_projection_l2, 2)}


@pytest.fixture(scope="module")
def processor():
    return make_processor()


@pytest.fixture(scope="module")
def model():
    return make_model(4)  # a seed whose predictions spread over three of the four classes


def predictions(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**model_inputs(model, batch)).logits.argmax(dim=1)


# ------------------------------------------------------------------------------------------------ projections
def random_problems(n: int, dim: int, seed: int):
    """Rows of `w . d = c` within `lower <= d <= upper` (lower <= 0 <= upper), float64, with zero normals, zero-width
    and one-sided coordinates, infinite upper bounds, negative offsets and infeasible rows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w[::3, 0] = 0
    lower = -torch.rand(n, dim, generator=g, dtype=torch.float64)
    upper = torch.rand(n, dim, generator=g, dtype=torch.float64)
    lower[::4, -1] = upper[::4, -1] = 0  # a fixed coordinate (a depth hole)
    lower[1::5, 0] = 0  # a point at the low end of its range
    upper[2::7, -1] = torch.inf  # depth without a processor: no upper bound
    c = 1.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return w, c, lower, upper


@pytest.mark.parametrize("norm", list(PROJECTIONS))
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_projection_is_the_minimal_norm_point_of_the_box_on_the_hyperplane(norm, dim):
    project, p = PROJECTIONS[norm]
    w, c, lower, upper = random_problems(300, dim, seed=dim)
    d = project(w, c, lower, upper)
    assert torch.isfinite(d).all()
    assert bool((d >= lower).all() and (d <= upper).all())
    # reachable range of w . d over the box (its ends are box corners)
    high = torch.where(w == 0, 0.0, torch.where(w > 0, w * upper, w * lower)).sum(dim=1)
    low = torch.where(w == 0, 0.0, torch.where(w > 0, w * lower, w * upper)).sum(dim=1)
    feasible = (c >= low - 1e-12) & (c <= high + 1e-12)
    assert 0 < int(feasible.sum()) < len(c)
    value = (w * d).sum(dim=1)
    torch.testing.assert_close(value[feasible], c[feasible], rtol=0, atol=1e-9)
    # infeasible: the box corner closest to the hyperplane
    torch.testing.assert_close(value[~feasible], torch.where(c > 0, high, low)[~feasible], rtol=0, atol=1e-9)
    assert bool((d[w == 0] == 0).all())

    # no farther than random feasible points: z uniform in the box (capped where unbounded), scaled onto the
    # hyperplane (the box contains 0 and is convex)
    g = torch.Generator().manual_seed(100 + dim)
    z = torch.rand(len(c), 400, dim, generator=g, dtype=torch.float64)
    z = lower[:, None] + z * (upper.clamp_max(3.0) - lower)[:, None]
    s = (w[:, None] * z).sum(dim=2)
    scale = c[:, None] / s
    usable = (scale >= 0) & (scale <= 1) & feasible[:, None]
    norms = torch.where(usable, (scale[..., None] * z).norm(p=p, dim=2), torch.inf).amin(dim=1)
    found = d.norm(p=p, dim=1)
    assert bool((found[feasible] <= norms[feasible] + 1e-9).all())

    # brute force: the minimal L-inf norm is a linear programme; the L2 point, where no bound is active, the
    # closed form c w / ||w||^2
    for row in torch.nonzero(feasible).flatten()[:40].tolist():
        if norm == "Linf":
            bounds = [
                (float(lo), None if hi == torch.inf else float(hi))
                for lo, hi in zip(lower[row], upper[row], strict=True)
            ]
            constraints = torch.cat((torch.eye(dim), -torch.eye(dim))).double()
            a_ub = torch.cat((constraints, -torch.ones(2 * dim, 1, dtype=torch.float64)), dim=1)
            best = linprog(
                [0.0] * dim + [1.0], A_ub=a_ub.numpy(), b_ub=[0.0] * (2 * dim),
                A_eq=[w[row].tolist() + [0.0]], b_eq=[float(c[row])], bounds=[*bounds, (0, None)],
            )  # fmt: skip
            assert best.status == 0
            assert found[row].item() == pytest.approx(best.fun, abs=1e-7)
        else:
            free = c[row] * w[row] / (w[row] ** 2).sum()
            if bool(((free >= lower[row]) & (free <= upper[row])).all()):
                torch.testing.assert_close(d[row], free, rtol=0, atol=1e-9)


@pytest.mark.parametrize("norm", list(PROJECTIONS))
def test_projection_agrees_with_pyautoattack(norm):
    """pyautoattack's projections work on the box [0, 1] around points `t`: compare the projected points' norms."""
    projections = pytest.importorskip("autoattack.fab_projections")
    reference = projections.projection_linf if norm == "Linf" else projections.projection_l2
    project, p = PROJECTIONS[norm]
    g = torch.Generator().manual_seed(0)
    t = torch.rand(500, 20, generator=g)
    w = torch.randn(500, 20, generator=g)
    b = (w * torch.rand(500, 20, generator=g)).sum(dim=1)
    b[::7] *= 5  # some rows where the hyperplane misses the box
    theirs = reference(t.clone(), w.clone(), b.clone())
    ours = project(w, b - (w * t).sum(dim=1), -t, 1 - t)
    on_plane = ((w * (t + theirs)).sum(dim=1) - b).abs() < 1e-4
    assert torch.equal(on_plane, ((w * (t + ours)).sum(dim=1) - b).abs() < 1e-4)
    assert 400 < int(on_plane.sum()) < 500
    torch.testing.assert_close(
        ours[on_plane].norm(p=p, dim=1), theirs[on_plane].norm(p=p, dim=1), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------------------------------------ invariants
BUDGETS = {
    "Linf": {"rgb": {"pixel_values": 4 / 255}, "joint": {"pixel_values": 4 / 255, "depth_values": 0.05}},
    "L2": {"rgb": {"pixel_values": 0.3}, "joint": {"pixel_values": 0.3, "depth_values": 0.3}},
}


@pytest.mark.parametrize("kind", ["rgb", "joint"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("targets", [None, 2], ids=["fab", "fab-t"])
def test_budget_invariants_and_real_success(norm, kind, targets, processor, model):
    budget = BUDGETS[norm][kind]
    batch, _ = make_batch(processor, 8)
    labels = predictions(model, batch)
    labels[5] = (labels[5] + 1) % 4  # misclassified from the start: a success without perturbation
    labels[6] = -100  # ignored
    original = {key: value.clone() for key, value in batch.items()}
    model.train()
    modes = {name: module.training for name, module in model.named_modules()}
    rng_state = torch.get_rng_state()
    attack = FAB(model, budget, norm=norm, steps=8, num_target_classes=targets, processor=processor)
    with torch.no_grad():
        result = attack.perturb(batch, labels)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng_state)
    for key in batch:
        assert torch.equal(batch[key], original[key])
    assert_budget_invariants(batch, result, budget, processor, l2=norm == "L2")
    model.eval()

    # the joint budget-normalised norm of every returned sample is at most 1
    parts = [(result.linf if norm == "Linf" else result.l2)[name] / eps for name, eps in budget.items()]
    joint = torch.stack(parts).amax(dim=0) if norm == "Linf" else torch.stack(parts).norm(dim=0)
    assert bool((joint <= 1 + 1e-4).all())
    # success is real: the returned sample is misclassified; the others come back as given
    assert result.ignored.tolist() == [i == 6 for i in range(8)] and not result.success[6]
    assert result.success[5] and float(joint[5]) == 0
    assert int(result.success.sum()) > 1
    with torch.no_grad():
        adversarial = model(**model_inputs(model, result.inputs)).logits.argmax(dim=1)
    assert bool((adversarial != labels)[result.success].all())
    for key in ("pixel_values", "depth_values"):
        assert torch.equal(result.inputs[key][~result.success], batch[key][~result.success])
        assert torch.equal(result.final_inputs[key], result.inputs[key])


@pytest.mark.parametrize("variant", ["fab-t", "fab-restarts"])
def test_each_run_only_attacks_the_samples_still_robust(variant, monkeypatch, processor, model):
    """FAB-T: one run per target rank, with the 2nd, 3rd, ... highest clean classes as targets; FAB: restarts.
    Each run sees only the samples that no earlier run fooled within the budget."""
    batch, _ = make_batch(processor, 12)
    labels = predictions(model, batch)
    labels[3] = -100
    with torch.no_grad():
        ranking = model(**model_inputs(model, batch)).logits.argsort(dim=1, descending=True)
    runs, targets_seen = [], []
    merge = fab_module.merge_result
    boundary = FAB._boundary

    def spy_merge(total, part, index, take):
        runs.append((index.clone(), take.clone()))
        return merge(total, part, index, take)

    def spy_boundary(self, logits, leaves, labels, targets, box):
        targets_seen.append(None if targets is None else targets.clone())
        return boundary(self, logits, leaves, labels, targets, box)

    monkeypatch.setattr(fab_module, "merge_result", spy_merge)
    monkeypatch.setattr(FAB, "_boundary", spy_boundary)
    steps = 4
    kwargs = {"num_target_classes": 3} if variant == "fab-t" else {"n_restarts": 3}
    attack = FAB(model, {"pixel_values": 1 / 255}, steps=steps, processor=processor, **kwargs)
    result = attack.perturb(batch, labels)

    remaining = labels != -100
    assert len(runs) == 3
    for run, (index, take) in enumerate(runs):
        assert torch.equal(index, remaining.nonzero().flatten()), run
        for targets in targets_seen[run * steps : (run + 1) * steps]:
            if variant == "fab-t":
                assert torch.equal(targets, ranking[index, run + 1])
            else:
                assert targets is None
        remaining[index[take]] = False
    assert 0 < len(runs[-1][0]) < len(runs[0][0]) < 12  # the subsets shrank
    assert torch.equal(result.success, ~remaining & (labels != -100))


# ------------------------------------------------------------------------------------------------ minimal norms
class LinearClassifier(torch.nn.Module):
    """Logits linear in the RGB values (and the depth values with `depth=True`): `z = W_rgb x + W_d depth + b`."""

    def __init__(self, num_labels: int = 3, depth: bool = False, key: str = "logits") -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.rgb = torch.nn.Parameter(torch.randn(num_labels, 48, generator=g))
        self.depth = torch.nn.Parameter(torch.randn(num_labels, 16, generator=g) * 4) if depth else None
        self.bias = torch.nn.Parameter(0.1 * torch.randn(num_labels, generator=g))
        self.key = key

    def forward(self, pixel_values, depth_values=None, depth_mask=None):
        logits = pixel_values.flatten(1) @ self.rgb.T + self.bias
        if self.depth is not None:
            logits = logits + depth_values.flatten(1) @ self.depth.T
        return SequenceClassifierOutput(logits=logits) if self.key == "logits" else {self.key: logits}


def linear_batch(batch_size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(batch_size, 1, 4, 4, generator=g) > 0.25
    depth = (1 + 2 * torch.rand(batch_size, 1, 4, 4, generator=g)) * mask  # metres, 0 at holes
    return {"pixel_values": 0.3 + 0.4 * torch.rand(batch_size, 3, 4, 4, generator=g), "depth_values": depth,
            "depth_mask": mask}  # fmt: skip


def analytic_distance(model: LinearClassifier, batch, budget: dict[str, float], norm: str):
    """Labels (the clean predictions) and the exact budget-normalised distance to the closest other class,
    `min_j (z_y - z_j) / ||w_y - w_j||_*` in the coordinates u = delta / eps (holes fixed)."""
    with torch.no_grad():
        logits = model(**batch).logits
        labels = logits.argmax(dim=1)
        parts = [(budget["pixel_values"] * model.rgb)[None].expand(len(labels), -1, -1)]
        if "depth_values" in budget:
            parts.append(budget["depth_values"] * model.depth[None] * batch["depth_mask"].flatten(1)[:, None])
        w = torch.cat(parts, dim=2)  # (B, K, D) in normalised coordinates
        rows = torch.arange(len(labels))
        difference = w[rows, labels][:, None] - w
        margin = logits[rows, labels][:, None] - logits
        distance = margin / difference.norm(p=1 if norm == "Linf" else 2, dim=2)
        distance[rows, labels] = torch.inf
    return labels, distance.amin(dim=1)


def normalised_norm(result, budget: dict[str, float], norm: str) -> torch.Tensor:
    parts = [(result.linf if norm == "Linf" else result.l2)[name] / eps for name, eps in budget.items()]
    return torch.stack(parts).amax(dim=0) if norm == "Linf" else torch.stack(parts).norm(dim=0)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("inputs", ["rgb", "rgb+depth"])
def test_finds_the_closest_boundary_point_of_a_linear_model(norm, inputs):
    """On a linear classifier the minimal (budget-normalised) adversarial distance is known in closed form. FAB
    reaches it up to its overshoot: the paper's eta = 1.05 settles about 0.5% outside the boundary (as pyautoattack
    does), eta = 1.001 within 0.05%."""
    model = LinearClassifier(depth=inputs == "rgb+depth")
    # budgets small enough that no valid-range bound is active within them (RGB in [0.3, 0.7] moves < 0.3, depth
    # >= 1 m moves < 1 m): the closed form is the constrained minimum
    budget = {"pixel_values": 0.25}
    if inputs == "rgb+depth":
        budget["depth_values"] = 0.5
    batch = linear_batch()
    if inputs == "rgb":
        batch = {"pixel_values": batch["pixel_values"]}
    labels, distance = analytic_distance(model, batch, budget, norm)
    for eta, tolerance in [(1.05, 1e-2), (1.001, 5e-4)]:
        result = FAB(model, budget, norm=norm, steps=40, eta=eta).perturb(batch, labels)
        found = normalised_norm(result, budget, norm)
        reached = distance * (1 + tolerance) <= 1
        assert int(reached.sum()) >= 7
        assert bool(result.success[reached].all())
        assert not bool(result.success[distance > 1].any())  # nothing closer than the closest boundary
        assert bool((found[result.success] >= distance[result.success] * (1 - 1e-5)).all())
        assert bool((found[reached] <= distance[reached] * (1 + tolerance)).all()), (eta, found / distance)
        if inputs == "rgb+depth":  # holes stay holes, untouched
            holes = ~batch["depth_mask"]
            assert torch.equal(result.inputs["depth_values"][holes], batch["depth_values"][holes])


# ------------------------------------------------------------------------------------------------ settings
def test_reproducible_with_a_seed(processor, model):
    batch, _ = make_batch(processor, 8)
    labels = predictions(model, batch)
    budget = {"pixel_values": 1 / 255, "depth_values": 0.01}

    def run(attack):
        return attack.perturb(batch, labels).inputs["pixel_values"]

    attack = FAB(model, budget, steps=5, n_restarts=3, seed=3, processor=processor)
    first = run(attack)
    assert torch.equal(run(FAB(model, budget, steps=5, n_restarts=3, seed=3, processor=processor)), first)
    assert torch.equal(run(attack.manual_seed()), first)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="norm"):
        FAB(model, norm="L1")
    with pytest.raises(ValueError, match="num_target_classes"):
        FAB(model, num_target_classes=0)
    with pytest.raises(ValueError, match="num_target_classes"):
        FAB(model, num_target_classes=4)  # 4 classes: at most 3 targets
    with pytest.raises(ValueError, match="targeted"):
        FAB(model, targeted=True)
    with pytest.raises(ValueError, match="loss"):
        FAB(model, loss=lambda outputs, labels: outputs.logits.sum(1))
    with pytest.raises(ValueError, match="ClassificationObjective"):
        FAB(model, loss=RetrievalObjective())
    for name, value in [("alpha_max", 1.5), ("eta", 0.0), ("beta", -0.1), ("steps", 0)]:
        with pytest.raises(ValueError, match=name):
            FAB(model, **{name: value})
    # the logits field is named when the model does not return it; too many targets for the logits' classes
    batch = {"pixel_values": linear_batch(4)["pixel_values"]}
    with pytest.raises(ValueError, match="logits"):
        FAB(LinearClassifier(key="scores"), {"pixel_values": 0.1}, steps=2).perturb(
            batch, torch.zeros(4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="num_target_classes"):
        FAB(LinearClassifier(), {"pixel_values": 0.1}, steps=2, num_target_classes=3).perturb(
            batch, torch.zeros(4, dtype=torch.long)
        )


# ------------------------------------------------------------------------------------------------ pyautoattack
def _zero_gradients(x):
    if isinstance(x, torch.Tensor) and x.grad is not None:
        x.grad.detach_()
        x.grad.zero_()


@pytest.fixture(scope="module")
def reference_fab():
    """pyautoattack's FAB (0.2.0: `autoattack.fab_pt.FABAttack`; later versions: `FABAttack_PT`). Its 0.2.0 module
    imports `torch.autograd.gradcheck.zero_gradients`, which torch removed in 1.9: supplied for the import."""
    pytest.importorskip("autoattack")
    gradcheck = importlib.import_module("torch.autograd.gradcheck")
    with pytest.MonkeyPatch.context() as patch:
        if not hasattr(gradcheck, "zero_gradients"):
            patch.setattr(gradcheck, "zero_gradients", _zero_gradients, raising=False)
        module = importlib.import_module("autoattack.fab_pt")
    return getattr(module, "FABAttack_PT", None) or module.FABAttack


class Adapter(torch.nn.Module):
    """[0, 1] RGB -> the processor's normalisation -> the RGB-D model with one fixed depth map -> logits. Every
    sample shares the depth map, so pyautoattack may call it on any subset of the batch."""

    def __init__(self, model, processor, depth_values, depth_mask):
        super().__init__()
        self.model = model
        self.mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
        self.depth_values, self.depth_mask = depth_values, depth_mask

    def forward(self, images):
        size = (images.shape[0], -1, -1, -1)
        return self.model(
            pixel_values=(images - self.mean) / self.std,
            depth_values=self.depth_values.expand(size),
            depth_mask=self.depth_mask.expand(size),
        ).logits


CROSSCHECK_BATCH = 64
CROSSCHECK_TOLERANCE = 2  # samples of 64 (3.1 points of robust accuracy)


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 1 / 255), ("L2", 0.1)])
def test_robust_accuracy_matches_pyautoattack_fab_t(norm, eps, reference_fab, processor, model):
    """FAB-T as AutoAttack configures it (one restart, 100 steps, alpha_max 0.1, eta 1.05, beta 0.9; all K - 1 = 3
    other classes as targets), RGB budget, depth fixed, 64 samples labelled with the clean predictions."""
    batch, _ = make_batch(processor, CROSSCHECK_BATCH)
    shared = ("depth_values", "depth_mask", "intrinsics")
    batch = BatchFeature({k: v[:1].expand_as(v).clone() if k in shared else v for k, v in batch.items()})
    labels = predictions(model, batch)
    adapter = Adapter(model, processor, batch["depth_values"][:1], batch["depth_mask"][:1]).eval()
    images = adapter.mean + adapter.std * batch["pixel_values"]

    reference = reference_fab(adapter, norm=norm, n_restarts=1, n_iter=100, eps=eps, seed=0, device="cpu",
                              n_target_classes=3)  # fmt: skip
    reference.targeted = True
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # it reseeds the global generator
        adversarial = reference.perturb(images, labels)
        robust_reference = int((adapter(adversarial).argmax(dim=1) == labels).sum())

    attack = FAB(model, {"pixel_values": eps}, norm=norm, steps=100, num_target_classes=3, processor=processor)
    robust_ours = CROSSCHECK_BATCH - int(attack.perturb(batch, labels).success.sum())
    assert 0.2 * CROSSCHECK_BATCH <= robust_reference <= 0.8 * CROSSCHECK_BATCH
    assert abs(robust_ours - robust_reference) <= CROSSCHECK_TOLERANCE, (robust_ours, robust_reference)
