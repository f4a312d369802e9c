"""Issue 15's acceptance run: the mixture of modality experts (VLMo-style) on the synthetic benchmark (CPU).

1. Training orders (`--orders`), every one with the same number of epochs:
   * `joint` (from every seed of `--seeds`; issue 15's goals are on their median): everything from the start,
     the fusion encoder's recipe (`scripts/train_rgbd_albef.py`: its data, aligned augmentation, optimiser and
     warm-up + cosine schedule): `--itc-warmup-epochs` of ITC alone, then `--pretrain-epochs` of ITC + ITM (hard
     negatives) + MDM;
   * `rgb-depth-fusion` (from every seed of `--order-seeds`): `--unimodal-epochs` on RGB alone (stage "rgb":
     attention, RGB embedding and experts; masked image modelling), then as many on depth alone (stage "depth":
     depth embedding and experts, attention frozen; masked depth modelling), then the fusion stage (everything),
     whose ITC warm-up is shorter by the two unimodal stages' epochs;
   * `depth-rgb-fusion`: the two unimodal stages the other way round.
   Each stage has an optimiser and schedule of its own. Every order then gets, on the 1000 test pairs: RGB <->
   depth R@1 (the whole split is the gallery), ITM accuracy on the positives and on each RGB image's hardest ITC
   negative, and the test accuracy of the fused classifier fine-tuned from the pretrained weights
   (`train_classifier`, modality dropout and auxiliary heads as the fusion encoder's run). The run ends with each
   order's median over its seeds against issue 15's goals (R@1 >= 90%, fused >= 97%).
2. Families at the small size (`--skip families` leaves it out), `RgbdClipConfig.small()`,
   `RgbdAlbefConfig.small()` and `RgbdVlmoConfig.small()` (4 layers of width 128 per stream; the fusion encoder
   adds 2 cross-attention layers, the experts model fuses in its top 2): trainable parameters of the pretraining
   model; pretraining-step and inference throughput (samples/s, median of interleaved repetitions, the families'
   own losses; inference: the fused classifier in eval mode); R@1 and fused accuracy of the dual encoder (ITC for
   the joint order's epochs) and of the fusion encoder (the joint order's schedule), from `--family-seeds`, with
   the experts' data, augmentation and fine-tuning, beside the joint order's at the same seeds.

The trainings run as jobs on `--workers` processes (`--threads` split among them), the longest first; the
throughput table runs after them, on every thread. Every training forward pass runs under bfloat16 autocast where
the CPU computes bfloat16 natively (`--bf16`); evaluation runs in float32.

    python scripts/train_rgbd_vlmo.py --data-cache /tmp/hf_rgbd_synthetic.pt
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from train_rgbd_albef import (
    ATTENTION,
    AlbefBatcher,
    Setup,
    add_bf16_argument,
    bf16_autocast,
    run_epochs,
    worker_threads,
)
from train_rgbd_clip import predict

from hf_rgbd import (
    RgbdAlbefConfig,
    RgbdAlbefForImageClassification,
    RgbdAlbefForPreTraining,
    RgbdClipConfig,
    RgbdClipForImageClassification,
    RgbdClipModel,
    RgbdVlmoConfig,
    RgbdVlmoForImageClassification,
    RgbdVlmoForPreTraining,
)
from hf_rgbd.data import RgbdAugment
from hf_rgbd.evaluation import retrieval_metrics
from hf_rgbd.training import set_training_stage, train_classifier
from hf_rgbd.training.stages import UNIMODAL_STAGE_DROPPED_INPUTS

NUM_LABELS = 8
ORDERS = {
    "rgb-depth-fusion": ("rgb", "depth", "fusion"),
    "depth-rgb-fusion": ("depth", "rgb", "fusion"),
    "joint": ("joint",),
}


def vlmo_config(args, **overrides) -> RgbdVlmoConfig:
    return RgbdVlmoConfig.small(
        mdm_mask_ratio=args.mdm_mask_ratio, mim_mask_ratio=args.mim_mask_ratio,
        modality_dropout=(args.pretrain_rgb_dropout, 0.0), **overrides,
    )  # fmt: skip


def train_stage(model, stage: str, train, batcher, args, seed, generator, first_epoch: int, total: int, warmup: int,
                joint_extra: int):
    """One stage with its own optimizer and schedule: `(seconds, history, epochs)`; the fusion and joint stages run
    `warmup` ITC-only epochs, then `--pretrain-epochs` + `joint_extra` of ITC + ITM + MDM."""
    print(f"  [seed {seed}] {set_training_stage(model, stage)}", flush=True)
    if stage in UNIMODAL_STAGE_DROPPED_INPUTS:
        epochs = args.unimodal_epochs
        seconds, history = run_epochs(model, train, batcher, args, seed, generator, epochs, args.pretrain_lr,
                                      lambda epoch: f"{stage} alone", first_epoch, UNIMODAL_STAGE_DROPPED_INPUTS[stage], total)
        return seconds, history, epochs
    epochs = warmup + args.pretrain_epochs + joint_extra
    seconds, history = run_epochs(model, train, batcher, args, seed, generator, epochs, args.pretrain_lr,
                                  lambda epoch: "ITC warm-up" if epoch < warmup else f"{stage}: ITC+ITM+MDM",
                                  first_epoch, (), total)
    return seconds, history, epochs


@torch.no_grad()
def matched_probability(model, test, rgb_index, depth_index, batch_size: int = 250) -> torch.Tensor:
    """ITM matched probability of the pairs (rgb_index[k], depth_index[k]) of the processed test split."""
    trunk = model.rgbd_vlmo
    scores = []
    for start in range(0, rgb_index.shape[0], batch_size):
        rgb, depth = rgb_index[start : start + batch_size], depth_index[start : start + batch_size]
        rgb_embeddings, _ = trunk.embed("rgb", test["pixel_values"][rgb])
        depth_embeddings, depth_keys = trunk.embed("depth", test["depth_values"][depth], test["depth_mask"][depth])
        fused, _ = trunk.fused_states(rgb_embeddings, depth_embeddings, depth_keys)
        scores.append(model.itm_head(fused[:, 0]).softmax(-1)[:, 1])
    return torch.cat(scores)


@torch.no_grad()
def tower_embeddings(model, test) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, D) RGB and depth embeddings of the test split from any family's towers, in eval mode."""
    model.eval()
    trunk = model.base_model
    rgb = F.normalize(trunk.get_rgb_features(test["pixel_values"]).pooler_output, dim=-1)
    depth = F.normalize(trunk.get_depth_features(test["depth_values"], test["depth_mask"]).pooler_output, dim=-1)
    return rgb, depth


def retrieval(rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, float]:
    """RGB <-> depth R@1 of paired embeddings (the whole split is the gallery)."""
    metrics = retrieval_metrics(rgb, depth)
    return {"rgb_to_depth_R@1": metrics["rgb_to_depth_R@1"], "depth_to_rgb_R@1": metrics["depth_to_rgb_R@1"]}


def retrieval_and_matching(model, test) -> dict[str, float]:
    """R@1 both ways, and ITM accuracy on the positives and on each RGB image's hardest ITC negative."""
    rgb, depth = tower_embeddings(model, test)
    similarity = rgb @ depth.t()
    count = similarity.shape[0]
    hardest = similarity.masked_fill(torch.eye(count, dtype=torch.bool), float("-inf")).argmax(dim=1)
    own = torch.arange(count)
    positive = matched_probability(model, test, own, own)
    negative = matched_probability(model, test, own, hardest)
    return {
        **retrieval(rgb, depth),
        "itm_accuracy": float(torch.cat([positive > 0.5, negative <= 0.5]).float().mean()),
        "itm_accuracy_positives": float((positive > 0.5).float().mean()),
        "itm_accuracy_hard_negatives": float((negative <= 0.5).float().mean()),
    }


def finetune_fused(model, classifier_class, inputs, labels, args, seed) -> dict:
    """The fused classifier of `classifier_class` from `model`'s saved weights, fine-tuned with modality dropout
    and auxiliary heads: test accuracy and seconds."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        classifier = classifier_class.from_pretrained(
            folder, num_labels=NUM_LABELS, modality_dropout=(args.modality_dropout, args.modality_dropout),
            auxiliary_loss_weight=args.auxiliary_loss_weight, **ATTENTION,
        )  # fmt: skip
    run = train_classifier(
        classifier, inputs["train"], labels["train"], inputs["validation"], labels["validation"],
        epochs=args.finetune_epochs, batch_size=args.finetune_batch_size, learning_rate=args.finetune_lr,
        weight_decay=args.weight_decay, max_shift=args.finetune_max_shift, seed=seed, max_grad_norm=args.max_grad_norm,
        disable_tqdm=True, bf16=args.bf16,
    )  # fmt: skip
    accuracy = float((predict(classifier, inputs["test"]) == labels["test"]).float().mean())
    return {"fused_test_accuracy": accuracy, "finetune_seconds": run.train_seconds}


def run_order(order: str, seed: int, args) -> dict:
    """Pretraining in `order` from `seed`, its retrieval / ITM figures, then the fused fine-tuning of the saved
    weights."""
    torch.set_num_threads(worker_threads(args))
    setup = Setup(args)
    inputs, labels = setup.inputs()
    torch.manual_seed(seed)
    model = RgbdVlmoForPreTraining._from_config(vlmo_config(args), **ATTENTION)
    stats = setup.stats
    augment = RgbdAugment(**setup.augment_settings, generator=seed)
    batcher = AlbefBatcher(model.config, setup.depth_processor, augment, stats["image_mean"], stats["image_std"])
    generator = torch.Generator().manual_seed(seed)
    stages = ORDERS[order]
    joint_extra = args.joint_extra_epochs if order == "joint" else 0
    # the staged orders' unimodal stages take the place of as many ITC warm-up epochs: every order runs as many
    warmup = args.itc_warmup_epochs if order == "joint" else args.itc_warmup_epochs - 2 * args.unimodal_epochs
    total = args.itc_warmup_epochs + args.pretrain_epochs + joint_extra
    tag = f"{seed}, {order}"  # log prefix "[seed {tag}]"
    row: dict = {"order": order, "seed": seed, "stages": {}, "threads": torch.get_num_threads()}
    done = 0
    for stage in stages:
        seconds, history, epochs = train_stage(model, stage, setup.data["train"], batcher, args, tag, generator,
                                               done, total, warmup, joint_extra)
        row["stages"][stage] = {"epochs": epochs, "seconds": seconds, "last_epoch_losses": history[-1]}
        done += epochs
    row["pretrain_epochs"] = done
    row["pretrain_seconds"] = sum(stage["seconds"] for stage in row["stages"].values())
    set_training_stage(model, "joint")  # everything trainable again, as saved
    row.update(retrieval_and_matching(model, inputs["test"]))
    print(f"  [seed {tag}] R@1 RGB->depth {100 * row['rgb_to_depth_R@1']:.1f}%, depth->RGB {100 * row['depth_to_rgb_R@1']:.1f}%, "
          f"ITM accuracy {100 * row['itm_accuracy']:.1f}% ({row['pretrain_seconds']:.0f} s of pretraining)", flush=True)
    row.update(finetune_fused(model, RgbdVlmoForImageClassification, inputs, labels, args, seed))
    print(f"  [seed {tag}] fused fine-tuned: test accuracy {100 * row['fused_test_accuracy']:.1f}% "
          f"({row['finetune_seconds']:.0f} s)", flush=True)
    return row


FAMILY_NAMES = {"rgbd_clip": "dual encoder (rgbd_clip)", "rgbd_albef": "fusion encoder (rgbd_albef)"}


def run_family(family: str, seed: int, args) -> dict:
    """The dual encoder (`rgbd_clip`: ITC for every epoch) or the fusion encoder (`rgbd_albef`: the joint order's
    epochs, `--itc-warmup-epochs` of ITC then `--pretrain-epochs` of ITC + ITM + MDM) at the small size, with the
    experts' data, augmentation, optimiser, schedule and fused fine-tuning: R@1 and fused accuracy."""
    torch.set_num_threads(worker_threads(args))
    setup = Setup(args)
    inputs, labels = setup.inputs()
    albef_config = RgbdAlbefConfig.small(**setup.config_fields)
    torch.manual_seed(seed)
    if family == "rgbd_clip":
        model, classifier_class = RgbdClipModel._from_config(RgbdClipConfig.small(), **ATTENTION), RgbdClipForImageClassification
    else:
        model, classifier_class = RgbdAlbefForPreTraining._from_config(albef_config, **ATTENTION), RgbdAlbefForImageClassification
    stats = setup.stats
    augment = RgbdAugment(**setup.augment_settings, generator=seed)
    # the depth words come from the fusion encoder's config (the dual encoder ignores them)
    batcher = AlbefBatcher(albef_config, setup.depth_processor, augment, stats["image_mean"], stats["image_std"])
    epochs = args.itc_warmup_epochs + args.pretrain_epochs
    warmup = epochs if family == "rgbd_clip" else args.itc_warmup_epochs
    tag = f"{seed}, {family}"
    seconds, history = run_epochs(
        model, setup.data["train"], batcher, args, tag, torch.Generator().manual_seed(seed), epochs, args.pretrain_lr,
        lambda epoch: "ITC warm-up" if epoch < warmup else "ITC+ITM+MDM", 0, (), epochs,
    )  # fmt: skip
    row = {"family": family, "seed": seed, "pretrain_epochs": epochs, "pretrain_seconds": seconds,
           "last_epoch_losses": history[-1], "threads": torch.get_num_threads()}
    row.update(retrieval(*tower_embeddings(model, inputs["test"])))
    row.update(finetune_fused(model, classifier_class, inputs, labels, args, seed))
    print(f"  [seed {tag}] R@1 RGB->depth {100 * row['rgb_to_depth_R@1']:.1f}%, fused fine-tuned {100 * row['fused_test_accuracy']:.1f}% "
          f"({seconds:.0f} s of pretraining, {row['finetune_seconds']:.0f} s of fine-tuning)", flush=True)
    return row


def family_table(args) -> dict:
    """Parameters and throughput of the three transformer families at the small size, interleaved repetitions
    (the training step under `--bf16`'s autocast, as the training runs; inference in float32)."""
    torch.set_num_threads(args.threads)
    setup = Setup(args)
    albef_config = RgbdAlbefConfig.small(
        mdm_mask_ratio=args.mdm_mask_ratio, modality_dropout=(args.pretrain_rgb_dropout, 0.0), distillation_alpha=0.0
    )
    families = {
        "dual encoder (rgbd_clip)": (RgbdClipModel, RgbdClipConfig.small(), RgbdClipForImageClassification),
        "fusion encoder (rgbd_albef)": (RgbdAlbefForPreTraining, albef_config, RgbdAlbefForImageClassification),
        "experts (rgbd_vlmo)": (RgbdVlmoForPreTraining, vlmo_config(args), RgbdVlmoForImageClassification),
    }
    torch.manual_seed(0)
    index = torch.arange(args.pretrain_batch_size)
    batch = AlbefBatcher(albef_config, setup.depth_processor, None, setup.stats["image_mean"], setup.stats["image_std"])(
        setup.data["train"], index, train=False
    )
    test = {key: value[: args.inference_batch_size] for key, value in setup.inputs()[0]["test"].items()}
    models, classifiers, optimizers = {}, {}, {}
    for name, (pretraining_class, config, classifier_class) in families.items():
        models[name] = pretraining_class._from_config(config, **ATTENTION).train()
        optimizers[name] = torch.optim.AdamW([p for p in models[name].parameters() if p.requires_grad], lr=1e-4)
        fields = {key: value for key, value in config.to_dict().items() if key not in ("id2label", "label2id")}
        classifier_config = type(config).from_dict({**fields, "num_labels": NUM_LABELS})
        classifiers[name] = classifier_class._from_config(classifier_config, **ATTENTION).eval()
    train_times = {name: [] for name in families}
    infer_times = {name: [] for name in families}
    for repetition in range(args.cost_repetitions + 1):
        for name, model in models.items():
            inputs = batch if name != "dual encoder (rgbd_clip)" else {
                key: batch[key] for key in ("pixel_values", "depth_values", "depth_mask")
            }
            start = time.perf_counter()
            with bf16_autocast(args.bf16):  # as the training runs
                loss = model(**inputs).loss
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if callable(getattr(model, "momentum_update", None)):
                model.momentum_update()
            elapsed = time.perf_counter() - start
            with torch.no_grad():
                start = time.perf_counter()
                classifiers[name](**test)
                inferred = time.perf_counter() - start
            if repetition:  # the first round warms up
                train_times[name].append(elapsed)
                infer_times[name].append(inferred)
    table = {}
    for name in families:
        table[name] = {
            "trainable_parameters_M": sum(p.numel() for p in models[name].parameters() if p.requires_grad) / 1e6,
            "classifier_parameters_M": sum(p.numel() for p in classifiers[name].parameters()) / 1e6,
            "pretraining_samples_per_s": args.pretrain_batch_size / statistics.median(train_times[name]),
            "pretraining_step_s_range": [min(train_times[name]), max(train_times[name])],
            "inference_samples_per_s": args.inference_batch_size / statistics.median(infer_times[name]),
            "inference_s_range": [min(infer_times[name]), max(infer_times[name])],
        }
        row = table[name]
        print(f"  {name}: {row['trainable_parameters_M']:.2f} M pretraining parameters, "
              f"pretraining {row['pretraining_samples_per_s']:.0f} samples/s, inference {row['inference_samples_per_s']:.0f} samples/s",
              flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all (split among the workers)")
    parser.add_argument("--workers", type=int, default=2, help="orders trained at once, in separate processes")
    parser.add_argument("--attn-implementation", default="eager", choices=("eager", "sdpa"))
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    add_bf16_argument(parser, ", the family table's training step too")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the joint order runs from each seed (the goals are on their median)")
    parser.add_argument("--order-seeds", type=int, nargs="+", default=None,
                        help="the staged orders run from each of these seeds (default: the first of --seeds)")
    parser.add_argument("--family-seeds", type=int, nargs="+", default=None,
                        help="the dual encoder and the fusion encoder are trained from these (default: the first of --seeds)")
    parser.add_argument("--data-cache", default=None)
    parser.add_argument("--unimodal-epochs", type=int, default=15, help="epochs of each unimodal stage")
    parser.add_argument("--joint-extra-epochs", type=int, default=0,
                        help="ITC + ITM + MDM epochs the joint order adds (default 0: every order runs as many epochs)")
    parser.add_argument("--itc-warmup-epochs", type=int, default=50,
                        help="ITC-only epochs of the joint order; the staged orders' fusion stage runs 2 x "
                             "--unimodal-epochs fewer (the unimodal stages take their place)")
    parser.add_argument("--pretrain-epochs", type=int, default=70, help="ITC + ITM + MDM epochs of the fusion stage")
    parser.add_argument("--pretrain-batch-size", type=int, default=100)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--logit-scale-lr-factor", type=float, default=10.0)
    parser.add_argument("--mdm-mask-ratio", type=float, default=0.15)
    parser.add_argument("--mim-mask-ratio", type=float, default=0.5)
    parser.add_argument("--distillation-alpha", type=float, default=0.0)  # read by train_rgbd_albef.Setup
    parser.add_argument("--pretrain-rgb-dropout", type=float, default=0.1, help="modality_dropout p_rgb in pretraining")
    parser.add_argument("--crop-scale", type=float, default=0.8, help="smallest area fraction of the aligned random crops")
    parser.add_argument("--colour-jitter", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--finetune-epochs", type=int, default=50)
    parser.add_argument("--finetune-batch-size", type=int, default=64)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--finetune-max-shift", type=int, default=4)
    parser.add_argument("--modality-dropout", type=float, default=0.1)
    parser.add_argument("--auxiliary-loss-weight", type=float, default=1.0)
    parser.add_argument("--cost-repetitions", type=int, default=7)
    parser.add_argument("--inference-batch-size", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["orders", "families"])
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()
    args.unmasked_tuning_epochs = 0  # read by train_rgbd_albef's logging
    staged = [order for order in args.orders if order != "joint"]
    if staged and 2 * args.unimodal_epochs > args.itc_warmup_epochs:
        parser.error(f"--unimodal-epochs: the two unimodal stages take the place of ITC warm-up epochs, so 2 x "
                     f"{args.unimodal_epochs} must be at most --itc-warmup-epochs ({args.itc_warmup_epochs})")
    args.order_seeds = args.order_seeds or args.seeds[:1]
    args.family_seeds = args.family_seeds or args.seeds[:1]
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="rgbd_vlmo_"))
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict = {"arguments": vars(args), "orders": {}, "family_accuracy": {}}
    jobs = []  # (kind, name, seed), the longest first: a pool worker takes the next one as it frees up
    if "orders" not in args.skip:
        jobs += [("orders", "joint", seed) for seed in args.seeds if "joint" in args.orders]
        jobs += [("orders", order, seed) for seed in args.order_seeds for order in staged]
    if "families" not in args.skip:
        jobs += [("family_accuracy", family, seed) for family in ("rgbd_albef", "rgbd_clip") for seed in args.family_seeds]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        pending = {
            job: pool.apply_async(run_order if job[0] == "orders" else run_family, job[1:] + (args,)) for job in jobs
        }  # fmt: skip
        for (kind, name, seed), job in pending.items():
            results[kind].setdefault(name, {})[str(seed)] = job.get()
            (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    if "families" not in args.skip:
        results["families"] = family_table(args)
    results["wall_seconds"] = time.perf_counter() - started
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\norders at seeds {args.seeds}:")
    print("| order | seed | epochs | pretraining s | RGB->depth R@1 | ITM accuracy | fused accuracy |")
    for order, rows in results["orders"].items():
        for seed, row in rows.items():
            print(f"| {order} | {seed} | {row['pretrain_epochs']} | {row['pretrain_seconds']:.0f} | "
                  f"{100 * row['rgb_to_depth_R@1']:.1f}% | {100 * row['itm_accuracy']:.1f}% | {100 * row['fused_test_accuracy']:.1f}% |")
    for order, rows in results["orders"].items():  # issue 15's goals, on the median over the seeds
        recall = statistics.median(row["rgb_to_depth_R@1"] for row in rows.values())
        fused = statistics.median(row["fused_test_accuracy"] for row in rows.values())
        print(f"  {order}, median of {len(rows)} seed(s): R@1 {100 * recall:.1f}% "
              f"({'PASS' if recall >= 0.90 else 'FAIL'}: >= 90%), fused {100 * fused:.1f}% "
              f"({'PASS' if fused >= 0.97 else 'FAIL'}: >= 97%)")
    if "families" in results:
        joint = results["orders"].get("joint", {})
        accuracy = {**{FAMILY_NAMES[name]: rows for name, rows in results["family_accuracy"].items()},
                    "experts (rgbd_vlmo)": {seed: joint[seed] for seed in map(str, args.family_seeds) if seed in joint}}
        print(f"\nfamilies at the small size ({args.itc_warmup_epochs} + {args.pretrain_epochs} pretraining epochs, "
              f"{args.finetune_epochs} fused fine-tuning epochs; accuracies at seeds {args.family_seeds}):")
        print("| family | pretraining parameters | pretraining samples/s | inference samples/s | RGB->depth R@1 | fused accuracy |")
        for name, row in results["families"].items():
            rows = list(accuracy.get(name, {}).values())
            recall = "/".join(f"{100 * r['rgb_to_depth_R@1']:.1f}%" for r in rows) or "-"
            fused = "/".join(f"{100 * r['fused_test_accuracy']:.1f}%" for r in rows) or "-"
            print(f"| {name} | {row['trainable_parameters_M']:.2f} M | {row['pretraining_samples_per_s']:.0f} | "
                  f"{row['inference_samples_per_s']:.0f} | {recall} | {fused} |")
    print(f"wall {results['wall_seconds']:.0f} s; results in {output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
