"""Acceptance run of the ALBEF-style RGB-D fusion encoder on the synthetic benchmark (CPU).

Per seed (`--seeds`):
1. Pretraining of `RgbdAlbefForPreTraining(RgbdAlbefConfig.small())` on the `make_synthetic_rgbd()` train split
   (2000 pairs), aligned crops / flips / colour jitter in physical units, the dual encoder's optimiser and schedule
   (`scripts/train_rgbd_clip.py`): `--itc-warmup-epochs` epochs of ITC alone (the towers only, about half the cost
   of a full step), then `--pretrain-epochs` epochs of ITC + ITM (hard negatives) + MDM, one warm-up + cosine
   schedule over both; `momentum_update()` after every optimizer step.
2. Retrieval on the 1000 test pairs (the whole split is the gallery): ITC R@1 both ways, and RGB -> depth R@1 after
   re-ranking each query's ITC top-k (`--rerank-k`, 16) by the ITM head's matched probability.
3. ITM accuracy on 2000 held-out pairs: the 1000 test positives and, for each test RGB image, the depth map the
   trained ITC ranks highest among the wrong ones (a hard negative).
4. Depth completion: `--completion-mask-ratio` of the valid depth patches of every test map are masked; mean
   absolute error (metres) over their valid pixels of `RgbdAlbefForDepthCompletion` with RGB, the same weights
   with `pixel_values=None`, and filling from the nearest valid pixel.
5. Fine-tuning (`hf_rgbd.training.train_classifier`) of `RgbdAlbefForImageClassification` from the pretrained
   weights: fused (with modality dropout and per-tower auxiliary heads), RGB-only and depth-only, same epochs and
   hyper-parameters; test accuracy. For the seeds in `--scratch-seeds`, the fused classifier is also trained from
   scratch for as many epochs as fit the wall time of pretraining + fused fine-tuning.
The work runs as jobs on `--workers` processes (`--threads` split among them): each seed's pretraining, then its
three fine-tunings, then (scratch seeds) its fine-tuning from scratch once the fused fine-tuning has measured the
budget; the longest ready job starts first.
Once (first seed): `MatchingObjective` PGD on the matched test pairs (RGB only, depth only, both) over a ladder of
budgets, and the cost of one pretraining step against an ITC-only step of the same towers (`RgbdClipModel`),
interleaved repetitions.

    python scripts/train_rgbd_albef.py --threads 2 --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from train_rgbd_clip import Batcher, contrastive_optimizer, dataset_statistics, load_data, predict, warmup_cosine

from hf_rgbd import (
    PGD,
    RgbdAlbefConfig,
    RgbdAlbefForDepthCompletion,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdAlbefForRgbdMatching,
    RgbdClipConfig,
    RgbdClipModel,
    RgbdDepthProcessor,
    RgbdImageProcessor,
    RgbdProcessor,
)
from hf_rgbd.attacks import MatchingObjective
from hf_rgbd.data import RgbdAugment
from hf_rgbd.evaluation import retrieval_metrics
from hf_rgbd.modeling.modeling_rgbd_pretraining import global_contrastive_loss
from hf_rgbd.processors import depth_token_ids
from hf_rgbd.training import classification_accuracy, train_classifier

NUM_LABELS = 8
# the attention implementation of every model the run builds or loads (`--attn-implementation`)
ATTENTION: dict[str, str] = {"attn_implementation": "eager"}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): the default of `--bf16`, since emulated
    bfloat16 is slower than float32."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def add_bf16_argument(parser: argparse.ArgumentParser, also: str) -> None:
    """`--bf16` / `--no-bf16`, on by default where `native_bf16()`; `also`: what else it covers in that script."""
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=native_bf16(),
        help=f"bfloat16 autocast of every training forward pass{also} (default: on where the CPU has native bfloat16, "
             "AVX512-BF16 or AMX; weights, optimizer and evaluation stay float32)",
    )  # fmt: skip


def bf16_autocast(enabled: bool):
    """The CPU bfloat16 autocast of a training forward pass (`--bf16`), or nothing when not `enabled`."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


class AlbefBatcher(Batcher):
    """The dual encoder's batches plus the depth words of the (augmented) depth in metres."""

    def __init__(self, config: RgbdAlbefConfig, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = config

    def __call__(self, split, index, train):
        batch = super().__call__(split, index, train)
        metres = self.depth_processor.to_metres(batch["depth_values"], batch["depth_mask"])
        config = self.config
        batch["depth_token_ids"] = depth_token_ids(
            metres, batch["depth_mask"], config.depth_vocab_size, config.depth_config.patch_size_pair[0],
            float(config.min_depth), float(config.max_depth),
        )
        return batch


def itc_only_loss(model: RgbdAlbefForPreTraining, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ITC loss of the towers alone, on the unmasked depth (an ITC-only step of the same encoders); any
    pretraining model whose base model has `get_rgb_features` / `get_depth_features` (the experts model too)."""
    trunk = model.base_model
    rgb = F.normalize(trunk.get_rgb_features(batch["pixel_values"]).pooler_output, dim=-1)
    depth = F.normalize(trunk.get_depth_features(batch["depth_values"], batch["depth_mask"]).pooler_output, dim=-1)
    return global_contrastive_loss(rgb, depth, trunk.scaled_logit_scale())[0]


def pretrain(model: RgbdAlbefForPreTraining, train, batcher: AlbefBatcher, args, seed: int) -> tuple[float, list]:
    """`--itc-warmup-epochs` epochs of ITC alone (the towers only), then `--pretrain-epochs` epochs of ITC + ITM +
    MDM, under one warm-up + cosine schedule; then `--unmasked-tuning-epochs` of ITC + ITM on the unmasked depth
    (MDM off) under a schedule of their own from `--unmasked-tuning-lr` (FLIP's unmasked tuning: the MDM patches are
    holes in every pretraining pass, never at test time)."""
    generator = torch.Generator().manual_seed(seed)
    main_epochs = args.itc_warmup_epochs + args.pretrain_epochs
    seconds, history = run_epochs(model, train, batcher, args, seed, generator, main_epochs, args.pretrain_lr,
                                  lambda epoch: "ITC warm-up" if epoch < args.itc_warmup_epochs else "ITC+ITM+MDM")
    if args.unmasked_tuning_epochs:
        ratio = model.config.mdm_mask_ratio
        model.config.mdm_mask_ratio = 0.0
        try:
            more_seconds, more_history = run_epochs(model, train, batcher, args, seed, generator,
                                                    args.unmasked_tuning_epochs, args.unmasked_tuning_lr,
                                                    lambda epoch: "unmasked ITC+ITM", first_epoch=main_epochs)
        finally:
            model.config.mdm_mask_ratio = ratio
        seconds, history = seconds + more_seconds, history + more_history
    return seconds, history


def total_epochs(args) -> int:
    return args.itc_warmup_epochs + args.pretrain_epochs + args.unmasked_tuning_epochs


def run_epochs(model, train, batcher: AlbefBatcher, args, seed: int, generator: torch.Generator, epochs: int,
               learning_rate: float, stage, first_epoch: int = 0, drop_inputs: tuple[str, ...] = (),
               run_epochs_in_all: int | None = None) -> tuple[float, list]:
    """`epochs` epochs of one optimizer and warm-up + cosine schedule; `stage(epoch)` names each epoch's losses
    ("ITC warm-up": the towers' ITC alone; otherwise the model's own loss, on the batch without `drop_inputs`:
    the experts model's unimodal stages leave out the other modality). `run_epochs_in_all`: the run's epochs, for
    the log (default `total_epochs(args)`)."""
    count = train["label"].shape[0]
    steps_per_epoch = count // args.pretrain_batch_size
    total = steps_per_epoch * epochs
    optimizer = contrastive_optimizer(model, learning_rate, args.weight_decay, args.logit_scale_lr_factor)
    scheduler = warmup_cosine(optimizer, total, max(1, int(0.05 * total)))
    seconds, history = 0.0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(count, generator=generator)
        warmup = stage(epoch) == "ITC warm-up"
        sums: dict[str, float] = {}
        for step in range(steps_per_epoch):
            index = order[step * args.pretrain_batch_size : (step + 1) * args.pretrain_batch_size]
            batch = batcher(train, index, train=True)
            with bf16_autocast(args.bf16):
                if warmup:
                    loss = itc_only_loss(model, batch)
                    outputs = {"loss_itc": loss, "loss_itm": torch.zeros(()), "loss_mdm": torch.zeros(())}
                else:
                    outputs = model(**{key: value for key, value in batch.items() if key not in drop_inputs})
                    loss = outputs.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if callable(getattr(model, "momentum_update", None)):  # the fusion encoder's EMA teacher
                model.momentum_update()
            for key in ("loss_itc", "loss_itm", "loss_mdm", "loss_mim"):
                if outputs.get(key) is not None:
                    sums[key] = sums.get(key, 0.0) + outputs[key].item() / steps_per_epoch
        seconds += time.perf_counter() - start
        history.append(sums)
        if (epoch + 1) % args.log_every == 0 or epoch + 1 == epochs:
            losses = ", ".join(f"{key[5:].upper()} {value:.3f}" for key, value in sums.items())
            print(f"  [seed {seed}] pretrain epoch {first_epoch + epoch + 1}/{run_epochs_in_all or total_epochs(args)} ({stage(epoch)}): {losses}, "
                  f"{seconds:.0f} s", flush=True)
    return seconds, history


@torch.no_grad()
def tower_states(model, inputs, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Eval-mode tower outputs for every pair: normalised ITC embeddings and final token states of each tower."""
    model.eval()
    trunk = model.rgbd_albef
    parts = {"rgb": [], "depth": [], "rgb_states": [], "depth_states": [], "depth_keys": []}
    count = inputs["pixel_values"].shape[0]
    for start in range(0, count, batch_size):
        chunk = {key: value[start : start + batch_size] for key, value in inputs.items()}
        rgb = trunk.get_rgb_features(chunk["pixel_values"])
        depth = trunk.get_depth_features(chunk["depth_values"], chunk["depth_mask"])
        parts["rgb"].append(F.normalize(rgb.pooler_output, dim=-1))
        parts["depth"].append(F.normalize(depth.pooler_output, dim=-1))
        parts["rgb_states"].append(rgb.last_hidden_state)
        parts["depth_states"].append(depth.last_hidden_state)
        parts["depth_keys"].append(trunk.depth_key_mask(chunk["depth_values"], chunk["depth_mask"]))
    return {key: torch.cat(value) for key, value in parts.items()}


@torch.no_grad()
def itm_probability(model, states, rgb_index: torch.Tensor, depth_index: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Matched probability of the pairs (rgb_index[k], depth_index[k]) from cached tower states."""
    trunk = model.rgbd_albef
    scores = []
    for start in range(0, rgb_index.shape[0], batch_size):
        r, d = rgb_index[start : start + batch_size], depth_index[start : start + batch_size]
        fused = trunk.fuse(states["depth_states"][d], states["depth_keys"][d], states["rgb_states"][r])
        scores.append(model.itm_head(fused.pooler_output).softmax(-1)[:, 1])
    return torch.cat(scores)


def matching_evaluation(model, states, rerank_k: int) -> dict[str, float]:
    similarity = states["rgb"] @ states["depth"].t()
    count = similarity.shape[0]
    own = torch.arange(count)
    hard = similarity.masked_fill(torch.eye(count, dtype=torch.bool), float("-inf")).argmax(dim=1)
    positive = itm_probability(model, states, own, own)
    negative = itm_probability(model, states, own, hard)
    itm_accuracy = float(torch.cat([positive > 0.5, negative <= 0.5]).float().mean())
    top = similarity.topk(rerank_k, dim=1).indices  # (N, k)
    rerank_scores = itm_probability(model, states, own.repeat_interleave(rerank_k), top.reshape(-1)).view(count, rerank_k)
    reranked = top.gather(1, rerank_scores.argmax(dim=1, keepdim=True)).squeeze(1)
    metrics = retrieval_metrics(states["rgb"], states["depth"])
    return {
        "itm_accuracy": itm_accuracy,
        "itm_accuracy_positives": float((positive > 0.5).float().mean()),
        "itm_accuracy_hard_negatives": float((negative <= 0.5).float().mean()),
        "rgb_to_depth_R@1": metrics["rgb_to_depth_R@1"],
        "rgb_to_depth_R@5": metrics["rgb_to_depth_R@5"],
        "depth_to_rgb_R@1": metrics["depth_to_rgb_R@1"],
        f"rgb_to_depth_R@1_itm_reranked_top{rerank_k}": float((reranked == own).float().mean()),
        f"rgb_to_depth_R@{rerank_k}_candidates": float((top == own[:, None]).any(dim=1).float().mean()),
    }


def nearest_valid_fill(depth: torch.Tensor, valid: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """Per map, every `holes` pixel gets the depth of the nearest `valid` pixel (Euclidean, exact). (H, W) each."""
    filled = depth.clone()
    height, width = depth.shape
    coordinates = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), -1).float()
    source, target = coordinates[valid], coordinates[holes]
    if source.shape[0] and target.shape[0]:
        nearest = torch.cdist(target, source).argmin(dim=1)
        filled[holes] = depth[valid][nearest]
    return filled


@torch.no_grad()
def completion_evaluation(folder: Path, data, inputs, batcher: AlbefBatcher, ratio: float, seed: int) -> dict[str, float]:
    model = RgbdAlbefForDepthCompletion.from_pretrained(folder, **ATTENTION).eval()
    config = model.config.depth_config
    generator = torch.Generator().manual_seed(1000 + seed)
    depth_m = batcher.depth_processor.to_metres(inputs["depth_values"], inputs["depth_mask"])
    mask = inputs["depth_mask"]
    tokens = depth_token_ids(depth_m, mask, model.config.depth_vocab_size, config.patch_size_pair[0], 0.1, 20.0)
    valid_patch = tokens >= 0
    noise = torch.rand(tokens.shape, generator=generator).masked_fill(~valid_patch, 2.0)
    chosen = (noise < ratio) & valid_patch
    pixel_chosen = chosen.view(-1, 1, *config.grid_size).repeat_interleave(config.patch_size_pair[0], 2).repeat_interleave(config.patch_size_pair[1], 3)
    test_mask = mask & ~pixel_chosen
    evaluated = mask & pixel_chosen  # valid pixels hidden at test time
    errors = {"with_rgb": [], "pixel_values_none": [], "nearest_valid_pixel": []}
    for start in range(0, mask.shape[0], 250):
        s = slice(start, start + 250)
        for key, pixels in (("with_rgb", inputs["pixel_values"][s]), ("pixel_values_none", None)):
            out = model(pixel_values=pixels, depth_values=inputs["depth_values"][s], depth_mask=test_mask[s], depth_metres=depth_m[s] * test_mask[s])
            errors[key].append((out.predicted_depth - depth_m[s, 0]).abs()[evaluated[s, 0]])
    for index in range(mask.shape[0]):
        filled = nearest_valid_fill(depth_m[index, 0], test_mask[index, 0], evaluated[index, 0])
        errors["nearest_valid_pixel"].append((filled - depth_m[index, 0]).abs()[evaluated[index, 0]])
    result = {f"mae_m_{key}": float(torch.cat(value).mean()) for key, value in errors.items()}
    result["evaluated_pixels"] = int(evaluated.sum())
    return result


def finetune(folder, variant, inputs, labels, args, seed, scratch_config=None, epochs=None, max_seconds=None):
    fused = variant == "rgbd"
    settings = dict(
        num_labels=NUM_LABELS,
        modalities=variant,
        modality_dropout=(args.modality_dropout, args.modality_dropout) if fused else (0.0, 0.0),
        auxiliary_loss_weight=args.auxiliary_loss_weight if fused else 0.0,
    )
    if scratch_config is None:
        classifier = RgbdAlbefForImageClassification.from_pretrained(folder, **settings, **ATTENTION)
    else:
        torch.manual_seed(seed)
        classifier = RgbdAlbefForImageClassification._from_config(RgbdAlbefConfig.small(**{**scratch_config, **settings}), **ATTENTION)
    run = train_classifier(
        classifier, inputs["train"], labels["train"], inputs["validation"], labels["validation"],
        epochs=epochs or args.finetune_epochs, batch_size=args.finetune_batch_size, learning_rate=args.finetune_lr,
        weight_decay=args.weight_decay, max_shift=args.finetune_max_shift, seed=seed, max_grad_norm=args.max_grad_norm,
        disable_tqdm=True, max_seconds=max_seconds, bf16=args.bf16,
    )
    row = {
        "test_accuracy": float((predict(classifier, inputs["test"]) == labels["test"]).float().mean()),
        "finetune_seconds": run.train_seconds,
        "epochs": len(run.loss_history),
        "best_epoch": run.best_epoch,
    }
    if fused:
        test = inputs["test"]
        row["test_accuracy_depth_values_none"] = classification_accuracy(classifier, {"pixel_values": test["pixel_values"]}, labels["test"])
        row["test_accuracy_pixel_values_none"] = classification_accuracy(
            classifier, {k: test[k] for k in ("depth_values", "depth_mask")}, labels["test"]
        )
    return row


def matching_attack_curve(folder, inputs, processor, count: int) -> list[dict]:
    model = RgbdAlbefForRgbdMatching.from_pretrained(folder, **ATTENTION).eval()
    batch = {key: inputs["test"][key][:count] for key in ("pixel_values", "depth_values", "depth_mask")}
    with torch.no_grad():
        matched = model(**batch).itm_score.argmax(-1) == 1
    batch = {key: value[matched] for key, value in batch.items()}
    rows = []
    if not matched.any():
        print("  matching PGD: the ITM head matches none of the test pairs, nothing to attack", flush=True)
        return rows
    ladder = [(1, 0.0125), (2, 0.025), (4, 0.05), (8, 0.1)]
    for rgb_eps, depth_eps in ladder:
        for threat, budget in (
            ("rgb", {"pixel_values": rgb_eps / 255}),
            ("depth", {"depth_values": depth_eps}),
            ("both", {"pixel_values": rgb_eps / 255, "depth_values": depth_eps}),
        ):
            attack = PGD(model, budget=budget, steps=20, processor=processor, loss=MatchingObjective(), seed=0)
            result = attack.perturb(batch)
            with torch.no_grad():
                broken = model(**{k: result.inputs[k] for k in batch}).itm_score.argmax(-1) == 0
            rows.append({
                "threat": threat, "rgb_budget_255": rgb_eps if "pixel_values" in budget else 0.0,
                "depth_budget_m": depth_eps if "depth_values" in budget else 0.0,
                "pairs": int(broken.numel()), "broken_fraction": float(broken.float().mean()),
            })
            print(f"  matching PGD-20 {threat} rgb {rows[-1]['rgb_budget_255']}/255 depth {rows[-1]['depth_budget_m']} m: "
                  f"{100 * rows[-1]['broken_fraction']:.1f}% of {rows[-1]['pairs']} matched pairs broken", flush=True)
    return rows


def step_cost(batcher: AlbefBatcher, train, args, bf16: bool = False) -> dict:
    """Median (and min-max) seconds of one optimizer step, interleaved, for the ITC-only dual encoder of the same
    towers and the fusion encoder with parts switched on one by one; float32, or under bfloat16 autocast."""
    torch.manual_seed(0)
    index = torch.arange(args.pretrain_batch_size)
    batch = batcher(train, index, train=False)
    variants = {
        "itc_only (RgbdClipModel, same towers)": (RgbdClipModel._from_config(RgbdClipConfig.small(), **ATTENTION), False),
        "itc+itm": (RgbdAlbefForPreTraining._from_config(RgbdAlbefConfig.small(mdm_mask_ratio=0.0, distillation_alpha=0.0), **ATTENTION), True),
        "itc+itm+mdm, distillation off": (RgbdAlbefForPreTraining._from_config(RgbdAlbefConfig.small(mdm_mask_ratio=args.mdm_mask_ratio, distillation_alpha=0.0), **ATTENTION), True),
        "itc+itm+mdm, distillation on": (RgbdAlbefForPreTraining._from_config(RgbdAlbefConfig.small(mdm_mask_ratio=args.mdm_mask_ratio, distillation_alpha=0.4), **ATTENTION), True),
    }
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, fused=True) for name, (m, _) in variants.items()}
    times = {name: [] for name in variants}
    for repetition in range(args.cost_repetitions + 1):
        for name, (model, albef) in variants.items():
            model.train()
            inputs = batch if albef else {k: batch[k] for k in ("pixel_values", "depth_values", "depth_mask")}
            start = time.perf_counter()
            with bf16_autocast(bf16):
                loss = model(**inputs).loss
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if albef:
                model.momentum_update()
            if repetition:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["itc_only (RgbdClipModel, same towers)"])
    result = {}
    for name, values in times.items():
        ratios = [value / ref for value, ref in zip(values, times["itc_only (RgbdClipModel, same towers)"], strict=True)]
        result[name] = {
            "median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
            "ratio_to_itc_only_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        }
        print(f"  step cost{' (bf16 autocast)' if bf16 else ''} {name}: {1000 * statistics.median(values):.0f} ms ({1000 * min(values):.0f}-{1000 * max(values):.0f}), "
              f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) of ITC-only", flush=True)
    del reference
    return result


class Setup:
    """What every job needs: the data, the processors and the un-augmented inputs of each split."""

    def __init__(self, args):
        self.data = load_data(args.data_cache)
        stats = dataset_statistics(self.data["train"])
        self.stats = stats
        self.depth_processor = RgbdDepthProcessor(
            representation="dataset", depth_mean=stats["depth_mean"], depth_std=stats["depth_std"], min_depth=0.1,
            max_depth=20.0,
        )
        self.processor = RgbdProcessor(
            RgbdImageProcessor(size={"height": 64, "width": 64}, image_mean=stats["image_mean"], image_std=stats["image_std"]),
            self.depth_processor,
        )
        self.config_fields = dict(
            mdm_mask_ratio=args.mdm_mask_ratio, distillation_alpha=args.distillation_alpha,
            modality_dropout=(args.pretrain_rgb_dropout, 0.0),
        )
        self.plain = AlbefBatcher(
            RgbdAlbefConfig.small(**self.config_fields), self.depth_processor, None, stats["image_mean"], stats["image_std"]
        )
        self.augment_settings = dict(
            output_size=64, crop_scale=(args.crop_scale, 1.0), p_flip=0.5,
            brightness=args.colour_jitter, contrast=args.colour_jitter, saturation=args.colour_jitter,
        )

    def inputs(self):
        inputs = {split: self.plain.whole_split(self.data[split]) for split in self.data}
        for split_inputs in inputs.values():  # the depth words are for pretraining only
            split_inputs.pop("depth_token_ids")
        labels = {split: self.data[split]["label"] for split in self.data}
        return inputs, labels


def worker_threads(args) -> int:
    """Torch threads of one worker; also sets the attention implementation and silences the weight-loading reports
    of the expected head changes."""
    ATTENTION["attn_implementation"] = args.attn_implementation
    transformers.logging.set_verbosity_error()
    return max(1, args.threads // args.workers)


def run_pretraining(seed: int, args) -> dict:
    """Pretraining, retrieval / ITM, depth completion and (first seed) the matching attack of one seed; the
    pretrained weights are saved for its fine-tuning jobs."""
    torch.set_num_threads(worker_threads(args))
    setup = Setup(args)
    inputs, _ = setup.inputs()
    torch.manual_seed(seed)
    model = RgbdAlbefForPreTraining._from_config(RgbdAlbefConfig.small(**setup.config_fields), **ATTENTION)
    if seed == args.seeds[0]:
        print(f"RgbdAlbefConfig.small(): {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f} M trainable parameters", flush=True)
    stats = setup.stats
    batcher = AlbefBatcher(model.config, setup.depth_processor, RgbdAugment(**setup.augment_settings, generator=seed), stats["image_mean"], stats["image_std"])
    pretrain_seconds, history = pretrain(model, setup.data["train"], batcher, args, seed)
    folder = pretrained_folder(args, seed)
    model.save_pretrained(folder)
    setup.processor.save_pretrained(folder)
    row = {"pretrain_seconds": pretrain_seconds, "final_losses": history[-1], "threads": torch.get_num_threads()}
    states = tower_states(model, inputs["test"])
    row.update(matching_evaluation(model, states, args.rerank_k))
    print(f"  [seed {seed}] ITM accuracy {100 * row['itm_accuracy']:.1f}% (positives {100 * row['itm_accuracy_positives']:.1f}%, "
          f"hard negatives {100 * row['itm_accuracy_hard_negatives']:.1f}%); R@1 RGB->depth {100 * row['rgb_to_depth_R@1']:.1f}%, "
          f"re-ranked top {args.rerank_k} by ITM {100 * row[f'rgb_to_depth_R@1_itm_reranked_top{args.rerank_k}']:.1f}%, "
          f"depth->RGB {100 * row['depth_to_rgb_R@1']:.1f}%", flush=True)
    if "completion" not in args.skip:
        row["completion"] = completion_evaluation(folder, setup.data, inputs["test"], setup.plain, args.completion_mask_ratio, seed)
        print(f"  [seed {seed}] depth completion MAE (m): " + ", ".join(f"{k} {v:.4f}" for k, v in row["completion"].items() if k.startswith("mae")), flush=True)
    if "attack" not in args.skip and seed == args.seeds[0]:
        row["matching_attack"] = matching_attack_curve(folder, inputs, setup.processor, args.attack_pairs)
    return row


def pretrained_folder(args, seed: int) -> Path:
    return Path(args.output_dir) / f"pretrained_seed{seed}"


def run_finetuning(seed: int, variant: str, args) -> dict:
    """Fine-tuning of one seed's pretrained weights on `variant` ("rgbd", "rgb" or "depth")."""
    torch.set_num_threads(worker_threads(args))
    inputs, labels = Setup(args).inputs()
    row = finetune(pretrained_folder(args, seed), variant, inputs, labels, args, seed)
    print(f"  [seed {seed}] fine-tuned {variant}: test accuracy {100 * row['test_accuracy']:.1f}% "
          f"({row['finetune_seconds']:.0f} s, best epoch {row['best_epoch']})", flush=True)
    return row


def run_scratch(seed: int, args, budget: float, fused_finetune_seconds: float) -> dict:
    """The fused classifier trained from scratch for as many epochs as fit `budget` seconds, the seed's pretraining
    + fused fine-tuning wall time (measured under the same worker setting): the schedule is sized by the fused
    fine-tuning's time per epoch, and training stops once `budget` seconds are spent (the other worker's load
    can make an epoch slower than it was then)."""
    torch.set_num_threads(worker_threads(args))
    setup = Setup(args)
    inputs, labels = setup.inputs()
    epochs = max(1, round(args.finetune_epochs * budget / fused_finetune_seconds))
    scratch = finetune(pretrained_folder(args, seed), "rgbd", inputs, labels, args, seed, scratch_config=setup.config_fields,
                       epochs=epochs, max_seconds=budget)
    scratch["scheduled_epochs"] = epochs
    scratch["budget_seconds"] = budget
    print(f"  [seed {seed}] fused from scratch, {scratch['epochs']} of {epochs} epochs: test accuracy {100 * scratch['test_accuracy']:.1f}% "
          f"({scratch['finetune_seconds']:.0f} s, budget {budget:.0f} s)", flush=True)
    return scratch


# Dispatch order of the ready jobs, longest first, so that the workers finish together.
JOB_PRIORITY = {"scratch": 0, "pretrain": 1, "finetune rgbd": 2, "finetune rgb": 3, "finetune depth": 3}


def run_jobs(args, results: dict, output_dir: Path) -> None:
    """Every seed's jobs on `--workers` processes: pretraining first; once it is done, its three fine-tunings; once
    a scratch seed's fused fine-tuning is done, its fine-tuning from scratch. At most `--workers` jobs are handed to
    the pool at a time, so the longest ready job always starts next."""
    ready = [("pretrain", seed) for seed in args.seeds]
    in_flight: dict = {}
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        while ready or in_flight:
            ready.sort(key=lambda job: (JOB_PRIORITY[job[0]], job[1]))
            while ready and len(in_flight) < args.workers:
                kind, seed = ready.pop(0)
                if kind == "pretrain":
                    job = pool.apply_async(run_pretraining, (seed, args))
                elif kind == "scratch":
                    row = results["seeds"][seed]
                    seconds = row["finetune"]["rgbd"]["finetune_seconds"]
                    job = pool.apply_async(run_scratch, (seed, args, row["pretrain_seconds"] + seconds, seconds))
                else:
                    job = pool.apply_async(run_finetuning, (seed, kind.split()[1], args))
                in_flight[job] = (kind, seed)
            finished = [job for job in in_flight if job.ready()]
            if not finished:
                time.sleep(2)
                continue
            for job in finished:
                kind, seed = in_flight.pop(job)
                try:
                    value = job.get()
                except BaseException:  # stop every worker now rather than after the other jobs
                    pool.terminate()
                    raise
                if kind == "pretrain":
                    if "matching_attack" in value:
                        results["matching_attack"] = value.pop("matching_attack")
                    results["seeds"][seed] = value
                    if "finetune" not in args.skip:
                        value["finetune"] = {}
                        ready += [(f"finetune {variant}", seed) for variant in ("rgbd", "rgb", "depth")]
                elif kind == "scratch":
                    results["seeds"][seed]["finetune"]["rgbd_from_scratch"] = value
                else:
                    results["seeds"][seed]["finetune"][kind.split()[1]] = value
                    if kind == "finetune rgbd" and seed in args.scratch_seeds:
                        ready.append(("scratch", seed))
                (output_dir / "results.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all (split among the workers)")
    parser.add_argument("--workers", type=int, default=2, help="seeds trained at once, in separate processes")
    parser.add_argument(
        "--attn-implementation", default="eager", choices=["eager", "sdpa"],
        help="of every model, the ITC-only reference too (eager: about 10%% faster than sdpa here, 17-token sequences)",
    )
    add_bf16_argument(parser, "; the step cost is measured in float32 and, with it, under bfloat16 autocast too")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scratch-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--data-cache", default=None)
    parser.add_argument("--itc-warmup-epochs", type=int, default=50, help="ITC-only epochs before the full pretraining")
    parser.add_argument("--pretrain-epochs", type=int, default=70, help="ITC + ITM + MDM epochs")
    parser.add_argument(
        "--unmasked-tuning-epochs", type=int, default=10,
        help="ITC + ITM epochs on the unmasked depth after the main schedule (0: none)",
    )
    parser.add_argument("--unmasked-tuning-lr", type=float, default=1e-4)
    parser.add_argument("--pretrain-batch-size", type=int, default=100)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--logit-scale-lr-factor", type=float, default=10.0)
    parser.add_argument("--mdm-mask-ratio", type=float, default=0.15)
    parser.add_argument("--distillation-alpha", type=float, default=0.0)
    parser.add_argument("--pretrain-rgb-dropout", type=float, default=0.1, help="modality_dropout p_rgb in pretraining")
    parser.add_argument(
        "--crop-scale", type=float, default=0.8, help="smallest area fraction of the aligned random crops in pretraining",
    )
    parser.add_argument("--colour-jitter", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--finetune-epochs", type=int, default=50)
    parser.add_argument("--finetune-batch-size", type=int, default=64)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--finetune-max-shift", type=int, default=4)
    parser.add_argument("--modality-dropout", type=float, default=0.1)
    parser.add_argument("--auxiliary-loss-weight", type=float, default=1.0)
    parser.add_argument("--rerank-k", type=int, default=16)
    parser.add_argument("--completion-mask-ratio", type=float, default=0.25)
    parser.add_argument("--attack-pairs", type=int, default=200)
    parser.add_argument("--cost-repetitions", type=int, default=7)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cost", "attack", "finetune", "completion"])
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads {args.threads}, workers {args.workers}, cpus {os.cpu_count()}", flush=True)
    print("arguments: " + json.dumps(vars(args)), flush=True)
    run_start = time.perf_counter()
    output_dir = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="rgbd_albef_"))
    args.output_dir = str(output_dir)
    results = {"arguments": vars(args), "seeds": {}}
    if "cost" not in args.skip:  # alone on the CPU, before any worker starts
        worker_threads(args)
        torch.set_num_threads(args.threads)
        setup = Setup(args)
        results["step_cost"] = step_cost(setup.plain, setup.data["train"], args)
        if args.bf16:  # the precision the training runs in, beside float32's
            results["step_cost_bf16"] = step_cost(setup.plain, setup.data["train"], args, bf16=True)
        del setup

    run_jobs(args, results, output_dir)
    results["seeds"] = dict(sorted(results["seeds"].items()))

    def summary(values):
        return f"median {100 * statistics.median(values):.1f}% (range {100 * min(values):.1f}-{100 * max(values):.1f})"

    rows = list(results["seeds"].values())
    print(f"\nthreads {args.threads}, workers {args.workers}, total wall time {time.perf_counter() - run_start:.0f} s, seeds {args.seeds}")
    checks = {}
    for key in ("itm_accuracy", "rgb_to_depth_R@1", f"rgb_to_depth_R@1_itm_reranked_top{args.rerank_k}", "depth_to_rgb_R@1"):
        print(f"  {key}: {summary([row[key] for row in rows])}")
    checks["ITM accuracy >= 90% (median)"] = statistics.median(r["itm_accuracy"] for r in rows) >= 0.90
    checks["RGB->depth R@1 >= 90% (median)"] = statistics.median(r["rgb_to_depth_R@1"] for r in rows) >= 0.90
    if "finetune" not in args.skip:
        for variant in ("rgbd", "rgb", "depth"):
            print(f"  fine-tuned {variant}: {summary([row['finetune'][variant]['test_accuracy'] for row in rows])}")
        for seed, row in results["seeds"].items():
            if "rgbd_from_scratch" in row["finetune"]:
                scratch = row["finetune"]["rgbd_from_scratch"]
                print(f"  seed {seed}: fused pretrained + fine-tuned {100 * row['finetune']['rgbd']['test_accuracy']:.1f}% vs "
                      f"from scratch {100 * scratch['test_accuracy']:.1f}% ({scratch['epochs']} epochs, budget {scratch['budget_seconds']:.0f} s)")
        fused = statistics.median(r["finetune"]["rgbd"]["test_accuracy"] for r in rows)
        checks["fused accuracy >= 97% (median)"] = fused >= 0.97
        checks["fused above RGB-only and depth-only (median)"] = all(
            fused > statistics.median(r["finetune"][v]["test_accuracy"] for r in rows) for v in ("rgb", "depth")
        )
    if "completion" not in args.skip:
        for key in ("mae_m_with_rgb", "mae_m_pixel_values_none", "mae_m_nearest_valid_pixel"):
            values = [row["completion"][key] for row in rows]
            print(f"  depth completion {key}: median {statistics.median(values):.4f} m (range {min(values):.4f}-{max(values):.4f})")
    if "matching_attack" in results:
        row = next((r for r in results["matching_attack"] if r["threat"] == "both" and r["rgb_budget_255"] == 4), None)
        checks["matching PGD at 4/255 + 0.05 m breaks > 50% of matched pairs"] = row is not None and row["broken_fraction"] > 0.5
    if "step_cost" in results:
        checks["ITC+ITM+MDM step (distillation off) <= 2.0x ITC-only (median, float32)"] = (
            results["step_cost"]["itc+itm+mdm, distillation off"]["ratio_to_itc_only_median"] <= 2.0
        )
    results["total_seconds"] = time.perf_counter() - run_start
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}: {name}")
    print(f"results: {output_dir / 'results.json'}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
