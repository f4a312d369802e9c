"""Probe (not the acceptance run of issue 15): does the experts model's ITM learn with hard negatives?

One seed of `RgbdVlmoForPreTraining(RgbdVlmoConfig.small())` with the fusion encoder's recipe
(`scripts/train_rgbd_albef.py`: its data, augmentation, optimiser and schedule; `--itc-warmup-epochs` ITC-only
epochs, then `--pretrain-epochs` of ITC + ITM + MDM with mask ratio 0.15 and RGB dropout 0.1). Then, on the 1000
test pairs: RGB <-> depth R@1, and the ITM accuracy on the positives and on their hardest ITC negatives.
`--aligned 0` turns `aligned_fusion` off.

    python scripts/probe_rgbd_vlmo_itm.py --threads 1 --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json

import torch
from train_rgbd_albef import AlbefBatcher, Setup, pretrain
from train_rgbd_vlmo import retrieval_and_matching

from hf_rgbd import RgbdVlmoConfig, RgbdVlmoForPreTraining
from hf_rgbd.data import RgbdAugment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--itc-warmup-epochs", type=int, default=50)
    parser.add_argument("--pretrain-epochs", type=int, default=70)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aligned", type=int, default=1, choices=(0, 1))
    parser.add_argument("--data-cache", default=None)
    cli = parser.parse_args()
    args = argparse.Namespace(  # the fusion encoder's acceptance recipe
        data_cache=cli.data_cache, mdm_mask_ratio=0.15, distillation_alpha=0.0, pretrain_rgb_dropout=0.1,
        crop_scale=0.6, colour_jitter=0.1, pretrain_batch_size=100, itc_warmup_epochs=cli.itc_warmup_epochs,
        pretrain_epochs=cli.pretrain_epochs, pretrain_lr=1e-3, weight_decay=0.05, logit_scale_lr_factor=10.0,
        max_grad_norm=1.0, log_every=10, unmasked_tuning_epochs=0,
    )  # fmt: skip
    torch.set_num_threads(cli.threads)
    setup = Setup(args)
    torch.manual_seed(cli.seed)
    config = RgbdVlmoConfig.small(mdm_mask_ratio=0.15, modality_dropout=(0.1, 0.0), aligned_fusion=bool(cli.aligned))
    model = RgbdVlmoForPreTraining._from_config(config, attn_implementation="eager")
    stats = setup.stats
    augment = RgbdAugment(**setup.augment_settings, generator=cli.seed)
    batcher = AlbefBatcher(config, setup.depth_processor, augment, stats["image_mean"], stats["image_std"])
    seconds, history = pretrain(model, setup.data["train"], batcher, args, cli.seed)

    result = {"pretrain_seconds": seconds, **retrieval_and_matching(model, setup.inputs()[0]["test"])}
    result["last_epoch_losses"] = history[-1]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
