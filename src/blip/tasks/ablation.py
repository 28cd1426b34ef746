"""The paper's CapFilt ablation (Table 1) in miniature on the synthetic world: the project's main job (`make demo`).

Chain: pretrain on noisy web + clean human pairs -> fine-tune a captioner and a filter on the human pairs ->
CapFilt the web images -> pretrain anew on each bootstrapped variant (filter only, captioner only, both) ->
zero-shot retrieval R@1 and captioning CIDEr (after a short caption fine-tune) for every variant.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from blip.data.synth import generate
from blip.recipes import ChainRecipe
from blip.tasks.chain import capfilt_stage, evaluate_stage, finetune_stage, pretrain_stage, timeless

VARIANTS = ("no bootstrapping", "filter only", "captioner only", "captioner + filter")
# Short epochs of every fine-tune: its per-epoch cosine then decays the lr within a few hundred steps.
FINETUNE_EPOCHS = 8


@dataclass
class AblationConfig:
    """Sizes of the miniature: small enough for 2 CPU cores in about 15 minutes."""

    out: str = "runs/demo"
    # 6,000 web images (one text each, 40% corrupted) beside 1,200 human-annotated ones (5 captions each, 3 of them
    # for training): web data outnumbers the human annotations, as in the paper (14M web vs ~1M human pairs).
    # More web images cost only CapFilt time: pretraining is a fixed number of steps.
    images: int = 7500
    web_fraction: float = 0.8
    noise: float = 0.4
    seed: int = 0
    # ITM trained with one positive per two negatives has a match prior of 1/3, so p(match) > 1/3 is a likelihood
    # ratio above 1. The paper's argmax (0.5) asks for a ratio above 2: a trained ViT-B filter scores clean and noisy
    # pairs far apart, so either threshold gives the same cut, but a tiny filter's scores sit between 0.2 and 0.6
    # and 0.5 would drop 90% of the clean texts with the noisy ones (BENCHMARKS.md).
    threshold: float = 1 / 3
    # 200, not 500: the four pretrainings are most of the demo's time, and it must fit 15 minutes on the slower
    # 2-core machines too (BENCHMARKS.md).
    pretrain_steps: int = 200
    # Captioner, filter and the caption evaluation's fine-tunes: 8 short epochs of 12 steps (the time budget again).
    finetune_steps: int = 96
    batch_size: int = 48
    model: dict[str, Any] | None = None  # preset and overrides for every model of the chain
    k_test: int = 16
    # The paper's ViT starts from DeiT weights; every row here starts from the demo's tower trained with labels on
    # the synthetic world (tasks/vision_pretrain.py). None: from scratch.
    vision_init: str | None = str(resources.files("blip.assets") / "tower_tiny_synth.safetensors")
    # How ITM draws its negatives in the pretrainings and in the filter's fine-tune. With the paper's "similarity",
    # about half of the drawn negatives are true of the image in this world (its captions are alike), and ITM stays
    # at its prior; "uniform" makes it learn (BENCHMARKS.md). Not yet shown to help the table over seeds.
    pretrain_itm_negatives: str = "similarity"
    filter_itm_negatives: str = "similarity"
    # The pretrainings' lr of the ViT as a share of the lr (1e-3, a from-scratch lr for the text side): the tower
    # starts trained, and 1e-3 wears its shape read-out down (BENCHMARKS.md).
    vision_lr_scale: float = 1.0
    # How the captioner draws its synthetic captions: the paper's nucleus sampling, or beam search (its Table 2).
    capfilt_strategy: str = "nucleus"


def _model(cfg: AblationConfig) -> dict[str, Any]:
    # The tiny preset with 8x8 patches (64 tokens per 64 px image), 2 + 2 layers: 1.4-1.6x the step time of 16x16
    # patches for 5 points of zero-shot text R@1 (BENCHMARKS.md), and still fast enough to pretrain four times here.
    return cfg.model or {
        "preset": "tiny",
        "image_size": 64,
        "overrides": {"vision.patch_size": 8, "vision.depth": 2, "text.layers": 2},
        **({"vision_init": cfg.vision_init} if cfg.vision_init else {}),
    }


# Crops, RandAugment and blind flips make the synthetic world's position and count words false (mirror flips and
# swaps left/right in the text instead): every recipe of the chain takes the image whole.
WHOLE_IMAGE = {"crop_scale_min": 1.0, "randaug": False, "mirror": True}


def _train(cfg: AblationConfig, steps: int, lr: float) -> dict[str, Any]:
    return {
        "epochs": 1000,
        "max_steps": steps,
        "batch_size": cfg.batch_size,
        "lr": lr,
        "warmup_steps": max(1, steps // 10),
        "checkpoint_every": max(1, steps // 2),
        "num_workers": 0,
        "seed": cfg.seed,
        "progress": False,
        "log_every": 5,
        "deterministic": True,  # one seed, one table: two runs on one machine write the same checkpoints
    }


def _finetune_train(cfg: AblationConfig) -> dict[str, Any]:
    # The reference's cosine steps once per epoch over `epochs`: short epochs (steps_per_epoch) let the lr decay to 0
    # within the few hundred steps of a fine-tune here (with epochs 1000 and max_steps it would never decay).
    epochs = min(FINETUNE_EPOCHS, cfg.finetune_steps)
    train = _train(cfg, cfg.finetune_steps, 2e-4)
    del train["max_steps"]
    return {
        **train,
        "epochs": epochs,
        "steps_per_epoch": max(1, cfg.finetune_steps // epochs),
        "schedule": "cosine",
        "min_lr": 0.0,
    }


def chain_recipe(
    cfg: AblationConfig, synth: Path, out: Path, test_file: str = "coco_karpathy_test.json"
) -> dict[str, Any]:
    """The chain recipe (tasks/chain.py) of the miniature; configs/chain_tiny_synth.yaml is the same for data/synth
    (evaluated on its test split)."""
    human = [{"reader": "karpathy", "path": str(synth / "coco_karpathy_train.json"), "image_root": str(synth)}]
    caption = {**WHOLE_IMAGE, "data": human, "train": _finetune_train(cfg)}
    retrieval = {**caption, "queue_size": 48, "momentum": 0.95, "itm_negatives": cfg.filter_itm_negatives}
    test = str(synth / test_file)
    return {
        "out": str(out),
        "pretrain": {
            "model": _model(cfg),
            "tokenizer": str(synth / "tokenizer"),
            "queue_size": 48,
            "momentum": 0.95,
            "alpha": 0.4,
            "alpha_ramp_epochs": 2,
            "itm_negatives": cfg.pretrain_itm_negatives,
            **WHOLE_IMAGE,
            "data": [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}],
            "train": {
                **_train(cfg, cfg.pretrain_steps, 1e-3),
                **({"lr_scale": {"visual_encoder.": cfg.vision_lr_scale}} if cfg.vision_lr_scale != 1 else {}),
            },
        },
        "captioner": caption,
        "filter": retrieval,
        "capfilt": {
            "web": [str(synth / "web.json")],
            "image_root": str(synth),
            "human": [str(synth / "coco_karpathy_train.json")],
            "seed": cfg.seed,
            "progress": False,
            "max_length": 20,
            "threshold": cfg.threshold,
            "strategy": cfg.capfilt_strategy,
        },
        "evaluate": [
            {"task": "retrieval", "data": test, "image_root": str(synth), "k_test": cfg.k_test},
            {"task": "caption", "data": test, "image_root": str(synth), "finetune": caption, "meteor": False},
        ],
    }


def _variant_data(synth: Path, provenance: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """The pretraining lists of the four rows of Table 1, from one CapFilt pass's provenance."""
    human = [
        {"image": h["image"], "caption": c}
        for h in json.loads((synth / "coco_karpathy_train.json").read_text())
        for c in (h["caption"] if isinstance(h["caption"], list) else [h["caption"]])
    ]
    pick = {
        "filter only": lambda r: r["source"] == "web" and r["kept"],
        "captioner only": lambda r: True,
        "captioner + filter": lambda r: r["kept"],
    }
    paths = {"no bootstrapping": synth / "pretrain.json"}
    for name, keep in pick.items():
        pairs = human + [
            # resolved: a run resumed with --out spelled otherwise (absolute, relative) has the first spelling here
            {"image": str(Path(r["path"]).resolve().relative_to(synth.resolve())), "caption": r["text"]}
            for r in provenance
            if "source" in r and keep(r) and r["text"]
        ]
        paths[name] = out / f"{name.replace(' + ', '_').replace(' ', '_')}.json"
        paths[name].write_text(json.dumps(pairs))
    return paths


def filter_quality(provenance: list[dict[str, Any]], labels: list[dict[str, Any]]) -> dict[str, float]:
    """Precision and recall of 'dropped' as a detector of the corrupted web texts (ground-truth labels, which
    are aligned with web.json and so with the web records of the provenance)."""
    web = [r for r in provenance if r.get("source") == "web"]
    if len(web) != len(labels):
        raise ValueError(f"{len(web)} scored web texts but {len(labels)} noise labels")
    dropped = {i for i, r in enumerate(web) if not r["kept"]}
    noisy = {i for i, lab in enumerate(labels) if lab["noisy"]}
    hit = len(dropped & noisy)
    # What the filter can see shows per kind of corruption: a flipped colour is not a flipped shape.
    by_kind: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        counts = by_kind.setdefault(lab["kind"] + (f"/{lab['attribute']}" if lab.get("attribute") else ""), [0, 0])
        counts[0] += i in dropped
        counts[1] += 1
    return {
        "precision": 100.0 * hit / max(1, len(dropped)),
        "recall": 100.0 * hit / max(1, len(noisy)),
        "dropped": len(dropped),
        "noisy": len(noisy),
        "web": len(web),
        "dropped_by_kind": {k: {"dropped": d, "of": n} for k, (d, n) in sorted(by_kind.items())},
    }


@contextmanager
def side_by_side() -> Iterator[ProcessPoolExecutor]:
    """Two worker processes, each on half of this process's threads, for stages that do not depend on each other.

    The miniature's matrices are small: one thread does 0.72x of two threads' work in the same time, so two jobs of
    one thread side by side get 1.3x the work of one job on two (2-core AMD EPYC, BENCHMARKS.md). Each job pins its
    own thread count, so its results do not depend on what runs beside it. Spawned, not forked: a fork of a process
    whose OpenMP threads have run may hang.
    """
    threads = max(1, torch.get_num_threads() // 2)
    with ProcessPoolExecutor(
        2, mp_context=mp.get_context("spawn"), initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        yield pool


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    """Run the whole chain (resuming any finished step), print the table, write report.md and plots."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    synth = out / "synth"
    heldout = synth / "coco_karpathy_heldout.json"
    # Parsed before anything runs: a bad setting (blip demo --capfilt-strategy greedy) is a one-line error at once.
    recipe = ChainRecipe.parse(chain_recipe(cfg, synth, out, heldout.name))
    if not (synth / "manifest.json").exists():
        generate(
            synth, num_images=cfg.images, seed=cfg.seed, noise=cfg.noise, web_fraction=cfg.web_fraction, num_videos=0
        )
    timings = {}

    def step(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[{time.perf_counter() - t0:6.0f} s] {name} done", flush=True)

    # Evaluated on val and test together (nothing is tuned on val): 300 images instead of 150 halve the sampling
    # variance of image R@1, which at 150 queries alone is +-4 points.
    if not heldout.exists():
        heldout.write_text(
            json.dumps(
                [
                    e
                    for split in ("val", "test")
                    for e in json.loads((synth / f"coco_karpathy_{split}.json").read_text())
                ]
            )
        )
    s = time.perf_counter()
    models = {"no bootstrapping": pretrain_stage(recipe.pretrain, out / "pretrain_noisy")}
    step("pretrain on noisy web + human", s)
    s = time.perf_counter()
    captioner = finetune_stage("caption", recipe.captioner, models["no bootstrapping"], out / "captioner")
    filt = finetune_stage("retrieval", recipe.filter, models["no bootstrapping"], out / "filter")
    step("fine-tune captioner and filter", s)
    s = time.perf_counter()
    summary = capfilt_stage(recipe.capfilt, captioner, filt, out / "capfilt")
    provenance = [json.loads(x) for x in (out / "capfilt" / "provenance.jsonl").read_text().splitlines()]
    step("CapFilt", s)
    data = _variant_data(synth, provenance, out / "capfilt")
    s = time.perf_counter()
    with side_by_side() as pool:
        # Submitted in this order, the pool pretrains two variants side by side, then the third beside the
        # evaluations of the rows already pretrained. Each evaluation (retrieval; caption fine-tune and scoring) is a
        # job of its own, so the one left after the last pretraining is short.
        pretrained = {
            name: pool.submit(
                pretrain_stage,
                recipe.pretrain,
                out / f"pretrain_{data[name].stem}",
                [{"reader": "pretrain_json", "path": str(data[name]), "image_root": str(synth)}],
            )
            for name in VARIANTS[1:]
        }

        def evaluate(name: str) -> list[Future]:
            return [pool.submit(evaluate_stage, [ev], models[name], models[name].parent) for ev in recipe.evaluate]

        scored = {VARIANTS[0]: evaluate(VARIANTS[0])}
        for name, job in pretrained.items():
            models[name] = job.result()
            scored[name] = evaluate(name)
        rows = {}
        for name in VARIANTS:
            m = {k: v for job in scored[name] for k, v in job.result().items()}
            rows[name] = {
                "txt_r1": m["retrieval/txt_r1"],
                "img_r1": m["retrieval/img_r1"],
                "bleu4": m["caption/Bleu_4"],
                "cider": m["caption/CIDEr"],
            }
        step("pretrain the bootstrapped variants and evaluate every row", s)
    labels = json.loads((synth / "web_noise_labels.json").read_text())
    result = {
        "rows": rows,
        "filter": filter_quality(provenance, labels),
        "capfilt": timeless(summary),
        "config": asdict(cfg),
    }
    # Time values go to timings.json: results.json is then the same bytes for two runs of one seed.
    timing = {"timings_s": timings, "total_s": round(time.perf_counter() - t0, 1)}
    if "images_per_second_this_run" in summary:
        timing["capfilt_images_per_second"] = summary["images_per_second_this_run"]
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "timings.json").write_text(json.dumps(timing, indent=2))
    result.update(timing)
    from blip.tasks.report import print_table, write_report

    print_table(result, provenance)
    write_report(out, result, provenance, models)
    return result
