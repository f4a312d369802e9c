"""Show that the synthetic RGB-D benchmark needs both modalities.

Trains the same small CNN, with the same hyper-parameters and seed, on RGB only, depth only and RGB + depth,
and fits a logistic regression on per-image colour / depth statistics. Prints a table of test accuracies.

Usage: .venv/bin/python scripts/probe_synthetic.py [--epochs 40] [--threads 2] [--seed 0]

Other modules can reuse :func:`run_probe` (``from probe_synthetic import run_probe`` with ``scripts/`` on the path).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODALITIES = {"rgb": ("rgb",), "depth": ("depth",), "rgbd": ("rgb", "depth")}
_RGB_MEAN, _RGB_STD = 0.5, 0.25  # RGB/255 -> roughly zero-mean, unit-variance
_DEPTH_SCALE = 10.0  # metres / 10


class ProbeCNN(nn.Module):
    """Small VGG-style classifier: (B, C, H, W) -> (B, num_classes) logits (~190k parameters at width 40)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 40) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=1, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = width
        self.features = nn.Sequential(
            nn.BatchNorm2d(in_channels, affine=False),  # data-driven per-channel standardisation of the input
            block(in_channels, w, 2, kernel=4),  # 64 -> 32
            block(w, w, 1),
            block(w, 2 * w, 2),  # 32 -> 16
            block(2 * w, 2 * w, 1),
            nn.MaxPool2d(2),  # 16 -> 8
            block(2 * w, 3 * w, 1),
        )
        self.head = nn.Linear(3 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax((2, 3)))


def dataset_to_tensors(split) -> dict[str, torch.Tensor]:
    """A ``make_synthetic_rgbd`` split -> ``rgb`` (N,3,H,W) float in [0,1], ``depth`` (N,1,H,W) metres, ``label``."""
    data = split.with_format("numpy")[:]
    rgb = torch.from_numpy(np.ascontiguousarray(data["image"])).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(np.ascontiguousarray(data["depth"]))[:, None].float()
    return {"rgb": rgb, "depth": depth, "label": torch.from_numpy(np.asarray(data["label"])).long()}


def build_inputs(tensors: dict[str, torch.Tensor], modalities: Sequence[str]) -> torch.Tensor:
    """Network input (N, C, H, W): RGB normalised (3 ch), depth / 10 plus its validity mask (2 ch)."""
    parts = []
    if "rgb" in modalities:
        parts.append((tensors["rgb"] - _RGB_MEAN) / _RGB_STD)
    if "depth" in modalities:
        depth = tensors["depth"]
        parts += [depth / _DEPTH_SCALE, (depth > 0).float()]
    return torch.cat(parts, 1)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random translation (zero padding = hole for depth) per sample."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    padded = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    return torch.gather(padded, 3, cols)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(x), batch_size)
    )
    return correct / max(len(x), 1)


def run_probe(
    dataset,
    modalities: str | Sequence[str] = "rgbd",
    epochs: int = 40,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    width: int = 40,
    threads: int | None = None,
    verbose: bool = False,
    cache: dict | None = None,
) -> float:
    """Train :class:`ProbeCNN` on ``dataset["train"]`` and return its test accuracy in [0, 1].

    Args:
        dataset: ``DatasetDict`` from ``make_synthetic_rgbd`` (splits ``train`` and ``test``).
        modalities: ``"rgb"``, ``"depth"``, ``"rgbd"`` or a sequence drawn from ``("rgb", "depth")``.
        epochs: passes over the training set (AdamW, one-epoch linear warm-up then cosine decay to 0).
        seed: seeds initialisation, batch order and augmentation (no global RNG is used for data).
        threads: if given, ``torch.set_num_threads(threads)``.
        cache: optional dict reused across calls to avoid decoding the dataset again.
    """
    if isinstance(modalities, str):
        if modalities not in MODALITIES:
            raise ValueError(
                f"modalities must be one of {sorted(MODALITIES)} or a sequence of 'rgb'/'depth', got {modalities!r}"
            )
        modalities = MODALITIES[modalities]
    modalities = tuple(modalities)
    if not modalities or any(m not in ("rgb", "depth") for m in modalities):
        raise ValueError(f"modalities must be a non-empty sequence drawn from ('rgb', 'depth'), got {modalities!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if threads is not None:
        torch.set_num_threads(threads)
    cache = {} if cache is None else cache
    for split in ("train", "test"):
        if split not in cache:
            cache[split] = dataset_to_tensors(dataset[split])
    x_train, y_train = build_inputs(cache["train"], modalities), cache["train"]["label"]
    x_test, y_test = build_inputs(cache["test"], modalities), cache["test"]["label"]
    num_classes = int(max(y_train.max(), y_test.max()) + 1)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model = ProbeCNN(x_train.shape[1], num_classes, width).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) / max(total - steps_per_epoch, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = _augment(x_train[idx], gen).contiguous(memory_format=torch.channels_last)  # faster CPU convs
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        if verbose and (epoch + 1) % 5 == 0:
            print(
                f"  [{'+'.join(modalities)}] epoch {epoch + 1}/{epochs} loss {running / len(x_train):.3f}", flush=True
            )
    return _accuracy(model, x_test, y_test)


def image_statistics(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image mean and std of R, G, B (in [0, 1]) and of valid depth (metres) -> (N, 8)."""
    rgb = tensors["rgb"].flatten(2)
    depth = tensors["depth"].flatten(1)
    valid = (depth > 0).float()
    count = valid.sum(1).clamp_min(1)
    d_mean = (depth * valid).sum(1) / count
    d_std = (((depth - d_mean[:, None]) ** 2 * valid).sum(1) / count).sqrt()
    return torch.cat([rgb.mean(2), rgb.std(2), d_mean[:, None], d_std[:, None]], 1)


def linear_probe_on_statistics(dataset, steps: int = 500, cache: dict | None = None) -> float:
    """Multinomial logistic regression (standardised features, L-BFGS, small L2) on :func:`image_statistics`.

    Fits on ``train`` and returns the ``test`` accuracy.
    """
    cache = {} if cache is None else cache
    for split in ("train", "test"):
        if split not in cache:
            cache[split] = dataset_to_tensors(dataset[split])
    f_train, f_test = image_statistics(cache["train"]).double(), image_statistics(cache["test"]).double()
    y_train, y_test = cache["train"]["label"], cache["test"]["label"]
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-8)
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    weight = torch.zeros(f_train.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(f_train @ weight + bias, y_train) + 1e-4 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((f_test @ weight + bias).argmax(1) == y_test).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description="RGB-only vs depth-only vs RGB-D probe on make_synthetic_rgbd()")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-seed", type=int, default=0, help="make_synthetic_rgbd seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modalities", nargs="+", default=["rgb", "depth", "rgbd"], choices=sorted(MODALITIES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from hf_rgbd.data import make_synthetic_rgbd

    start, cpu_start = time.perf_counter(), time.process_time()
    dataset = make_synthetic_rgbd(seed=args.data_seed)
    print(
        f"generated {', '.join(f'{k}={v.num_rows}' for k, v in dataset.items())} in {time.perf_counter() - start:.1f}s"
    )
    cache: dict = {}
    results = {"linear probe on RGB/depth mean+std": linear_probe_on_statistics(dataset, cache=cache)}
    times = {}
    for name in args.modalities:
        t0 = time.perf_counter()
        results[f"CNN {name}"] = run_probe(dataset, name, args.epochs, args.seed, verbose=True, cache=cache)
        times[f"CNN {name}"] = time.perf_counter() - t0
        print(f"CNN {name}: test accuracy {results[f'CNN {name}']:.4f} ({times[f'CNN {name}']:.0f}s)", flush=True)
    print(f"\n{'input':<40} {'test acc':>8} {'time':>7}")
    for key, acc in results.items():
        print(f"{key:<40} {100 * acc:7.2f}% {times.get(key, 0):6.0f}s")
    print(
        f"total runtime {time.perf_counter() - start:.0f}s wall, {time.process_time() - cpu_start:.0f}s CPU "
        f"(torch threads={torch.get_num_threads()}, epochs={args.epochs})"
    )


if __name__ == "__main__":
    main()
