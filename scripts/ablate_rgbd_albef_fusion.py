"""Ablation of the fusion encoder's `aligned_fusion` and of its ITM negatives, on the synthetic scenes (CPU).

Each variant pretrains `RgbdAlbefForPreTraining(RgbdAlbefConfig.small())` for `--epochs` epochs with the
acceptance script's data, augmentation, optimiser and schedule (`scripts/train_rgbd_albef.py`), logs the ITM
accuracy on the training batches (positives / negatives), then reports the held-out ITM accuracy on the 1000 test
positives and their hardest ITC negatives, and RGB -> depth R@1 before and after ITM re-ranking of the ITC top 16.

Variants (`--variants`): `aligned` (the default model), `cross_attention_only` (`aligned_fusion=False`, plain
ALBEF), `cross_attention_only_random_negatives` (plain ALBEF whose ITM negatives are drawn uniformly instead of by
ITC similarity). `--workers` variants run at once in separate processes.

    python scripts/ablate_rgbd_albef_fusion.py --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from train_rgbd_albef import AlbefBatcher, Setup, matching_evaluation, tower_states
from train_rgbd_clip import contrastive_optimizer, warmup_cosine

import hf_rgbd.modeling.modeling_rgbd_albef as albef_module
from hf_rgbd import RgbdAlbefConfig, RgbdAlbefForPreTraining
from hf_rgbd.data import RgbdAugment
from hf_rgbd.modeling.modeling_rgbd_pretraining import sample_hard_negatives

VARIANTS = ("aligned", "cross_attention_only", "cross_attention_only_random_negatives")


def uniform_negatives(logits_per_rgb, logits_per_depth, scene_ids=None):
    """The hard-negative sampler on constant similarities: every allowed negative equally likely."""
    return sample_hard_negatives(torch.zeros_like(logits_per_rgb), torch.zeros_like(logits_per_depth), scene_ids)


def run_variant(variant: str, args) -> dict:
    torch.set_num_threads(max(1, args.threads // args.workers))
    if variant.endswith("random_negatives"):
        albef_module.sample_hard_negatives = uniform_negatives  # this worker process only
    setup = Setup(args)
    torch.manual_seed(args.seed)
    config = RgbdAlbefConfig.small(**setup.config_fields, aligned_fusion=variant == "aligned")
    model = RgbdAlbefForPreTraining(config)
    stats = setup.stats
    augment = RgbdAugment(**setup.augment_settings, generator=args.seed)
    batcher = AlbefBatcher(config, setup.depth_processor, augment, stats["image_mean"], stats["image_std"])
    train = setup.data["train"]
    count = train["label"].shape[0]
    steps = count // args.pretrain_batch_size
    optimizer = contrastive_optimizer(model, args.pretrain_lr, args.weight_decay, args.logit_scale_lr_factor)
    scheduler = warmup_cosine(optimizer, steps * args.epochs, max(1, int(0.05 * steps * args.epochs)))
    generator = torch.Generator().manual_seed(args.seed)
    start, history = time.perf_counter(), []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(count, generator=generator)
        sums = {"loss_itm": 0.0, "train_itm_positives": 0.0, "train_itm_negatives": 0.0}
        for step in range(steps):
            outputs = model(**batcher(train, order[step * args.pretrain_batch_size : (step + 1) * args.pretrain_batch_size], train=True))
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            predicted, labels = outputs.itm_logits.argmax(-1), outputs.itm_labels
            sums["loss_itm"] += outputs.loss_itm.item() / steps
            sums["train_itm_positives"] += (predicted[labels == 1] == 1).float().mean().item() / steps
            sums["train_itm_negatives"] += (predicted[labels == 0] == 0).float().mean().item() / steps
        history.append(sums)
        print(f"  [{variant}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in sums.items()), flush=True)
    inputs, _ = setup.inputs()
    row = {"seconds": time.perf_counter() - start, "last_epoch": history[-1]}
    row.update(matching_evaluation(model, tower_states(model, inputs["test"]), 16))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-cache", default=None)
    parser.add_argument("--pretrain-batch-size", type=int, default=100)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--logit-scale-lr-factor", type=float, default=10.0)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--mdm-mask-ratio", type=float, default=0.15)
    parser.add_argument("--distillation-alpha", type=float, default=0.0)
    parser.add_argument("--pretrain-rgb-dropout", type=float, default=0.1)
    parser.add_argument("--crop-scale", type=float, default=0.6)
    parser.add_argument("--colour-jitter", type=float, default=0.1)
    args = parser.parse_args()
    print("arguments: " + json.dumps(vars(args)), flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        rows = dict(zip(args.variants, pool.map(run_variant, args.variants, [args] * len(args.variants)), strict=True))
    print(f"\n{args.epochs} pretraining epochs, seed {args.seed}:")
    for variant, row in rows.items():
        print(
            f"  {variant}: held-out ITM accuracy {100 * row['itm_accuracy']:.1f}% (positives "
            f"{100 * row['itm_accuracy_positives']:.1f}%, hard negatives {100 * row['itm_accuracy_hard_negatives']:.1f}%); "
            f"last epoch's training ITM: positives {100 * row['last_epoch']['train_itm_positives']:.1f}%, negatives "
            f"{100 * row['last_epoch']['train_itm_negatives']:.1f}%; R@1 RGB->depth {100 * row['rgb_to_depth_R@1']:.1f}%, "
            f"re-ranked top 16 by ITM {100 * row['rgb_to_depth_R@1_itm_reranked_top16']:.1f}% ({row['seconds']:.0f} s)"
        )


if __name__ == "__main__":
    main()
