"""Does FLIP's unmasked tuning raise the fusion encoder's ITC retrieval? A probe on the pretrained checkpoints of a
`scripts/train_rgbd_albef.py` run (`--output-dir`, folders `pretrained_seed{N}`).

Every pretraining pass of the fusion encoder sees the depth with the MDM patches (15%) as holes; the test pairs
never have them. For each seed's checkpoint this measures held-out RGB -> depth R@1 and ITM accuracy (1000 test
pairs, hard negatives from the ITC) as saved, then after `--epochs` epochs of tuning on the unmasked depth from a
fresh optimizer at `--lr` (warm-up + cosine), in two variants: the towers' ITC alone, and ITC + ITM (MDM off).

    python scripts/probe_albef_unmasked_tuning.py --pretrained-dir /work/run14/out --threads 2 \
        --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from train_rgbd_albef import AlbefBatcher, Setup, matching_evaluation, run_epochs, tower_states

from hf_rgbd import RgbdAlbefForPreTraining
from hf_rgbd.data import RgbdAugment

VARIANTS = {"itc": "ITC warm-up", "itc+itm": "unmasked ITC+ITM"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-cache", default=None)
    cli = parser.parse_args()
    args = argparse.Namespace(  # the fusion encoder's acceptance recipe
        data_cache=cli.data_cache, mdm_mask_ratio=0.15, distillation_alpha=0.0, pretrain_rgb_dropout=0.1,
        crop_scale=0.6, colour_jitter=0.1, pretrain_batch_size=100, weight_decay=0.05, logit_scale_lr_factor=10.0,
        max_grad_norm=1.0, log_every=cli.epochs, itc_warmup_epochs=0, pretrain_epochs=0, unmasked_tuning_epochs=cli.epochs,
    )  # fmt: skip
    torch.set_num_threads(cli.threads)
    setup = Setup(args)
    test = setup.inputs()[0]["test"]
    rows = []
    for seed in cli.seeds:
        folder = Path(cli.pretrained_dir) / f"pretrained_seed{seed}"
        for variant in ("as saved", *VARIANTS):
            model = RgbdAlbefForPreTraining.from_pretrained(folder, attn_implementation="eager")
            seconds = 0.0
            if variant in VARIANTS:
                model.config.mdm_mask_ratio = 0.0
                augment = RgbdAugment(**setup.augment_settings, generator=seed)
                stats = setup.stats
                batcher = AlbefBatcher(model.config, setup.depth_processor, augment, stats["image_mean"], stats["image_std"])
                generator = torch.Generator().manual_seed(seed)
                stage = VARIANTS[variant]
                seconds, _ = run_epochs(model, setup.data["train"], batcher, args, seed, generator, cli.epochs, cli.lr,
                                        lambda epoch, stage=stage: stage)
            metrics = matching_evaluation(model, tower_states(model, test), 16)
            row = {"seed": seed, "variant": variant, "seconds": seconds, **metrics}
            rows.append(row)
            print(f"seed {seed} {variant:>9}: R@1 RGB->depth {100 * row['rgb_to_depth_R@1']:.1f}%, depth->RGB "
                  f"{100 * row['depth_to_rgb_R@1']:.1f}%, ITM {100 * row['itm_accuracy']:.1f}% ({seconds:.0f} s)", flush=True)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
