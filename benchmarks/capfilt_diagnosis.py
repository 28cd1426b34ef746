"""Why the demo's CapFilt gain is small: the measurements behind BENCHMARKS.md's diagnosis (issue 6).

    W=runs/diag/world; blip data synth --out $W --images 7500 --seed 0 --noise 0.4 --web-fraction 0.8
    python benchmarks/capfilt_diagnosis.py pretrain --world $W --data noisy  --out runs/diag/noisy8    # ~3 min
    python benchmarks/capfilt_diagnosis.py pretrain --world $W --data oracle --out runs/diag/oracle8   # ~3 min
    python benchmarks/capfilt_diagnosis.py pretrain --world $W --data noisy --out runs/diag/noisy8tower \\
        --vision-init src/blip/assets/tower_tiny_synth.safetensors    # from the demo's pretrained tower
    python benchmarks/capfilt_diagnosis.py filter --world $W --init runs/diag/noisy8/pretrain/model --steps 120 \\
        --out runs/diag/filter120
    python benchmarks/capfilt_diagnosis.py captioner --world $W --init runs/diag/noisy8/pretrain/model \\
        --out runs/diag/captioner
    python benchmarks/capfilt_diagnosis.py filter --world $W --init runs/diag/noisy8/pretrain/model --steps 120 \\
        --itm-negatives uniform --out runs/diag/filter120u        # ITM negatives drawn uniformly
    python benchmarks/capfilt_diagnosis.py negatives --world runs/demo/synth --model runs/demo/filter/model
    python benchmarks/capfilt_diagnosis.py provenance runs/demo        # a finished `blip demo` folder
    python benchmarks/capfilt_diagnosis.py steptime                    # model step, 16- vs 8-px patches

pretrain: the demo's pretraining recipe (tiny, --patch px patches, --steps steps) on all web texts (noisy) or only
those labelled clean (oracle: a perfect filter), then zero-shot retrieval (k_test 16) on the test split and CIDEr
after a caption fine-tune with a constant lr (--ft-steps). filter: a filter fine-tuned from --init, scored against
the noise labels (ROC AUC clean vs corrupted, per kind). captioner: a captioner fine-tuned from --init; its captions
of 300 web images checked claim by claim against the scene graphs with the independent checker of
tests/test_data_synth.py. negatives: the share of ITM negatives (one per human training pair, in the demo's batches
of 48) whose text is true of the image, drawn as training draws them.
Run two at a time with OMP_NUM_THREADS=1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

import blip
from blip.tasks.ablation import AblationConfig, chain_recipe, filter_quality
from blip.tasks.chain import evaluate_stage, finetune_stage, pretrain_stage
from blip.training.contrastive import ITM_NEGATIVES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_data_synth import COLOUR_OF, COUNT_OF, NP, POS_CELLS, POS_OF, SHAPE_OF, caption_holds  # noqa: E402


def _recipe(args: argparse.Namespace, steps: int = 500) -> dict[str, Any]:
    cfg = AblationConfig(
        out=str(args.out),
        seed=args.seed,
        pretrain_steps=steps,
        finetune_steps=args.ft_steps,
        model={
            "preset": "tiny",
            "image_size": 64,
            "overrides": {"vision.patch_size": args.patch, "vision.depth": 2, "text.layers": 2},
            **({"vision_init": args.vision_init} if getattr(args, "vision_init", None) else {}),
        },
    )
    recipe = chain_recipe(cfg, Path(args.world), Path(args.out))
    # The captioner, the filter and the caption evaluation (the captioner's recipe) share one train block. Here its
    # lr stays constant over --ft-steps (epochs 1000 + max_steps): the setting these diagnoses were first measured with.
    train = recipe["captioner"]["train"]
    train = {**train, "epochs": 1000, "steps_per_epoch": None, "max_steps": args.ft_steps, "lr": args.lr}
    for role in ("captioner", "filter"):
        recipe[role]["train"] = train
    return recipe


def pretrain(args: argparse.Namespace) -> None:
    """Pretrain on all web texts or only the clean ones; zero-shot retrieval and CIDEr."""
    world, out = Path(args.world), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = _recipe(args, args.steps)
    source = None
    if args.data == "oracle":
        human = [
            {"image": h["image"], "caption": h["caption"]}
            for h in json.loads((world / "coco_karpathy_train.json").read_text())
        ]
        web = json.loads((world / "web.json").read_text())
        labels = json.loads((world / "web_noise_labels.json").read_text())
        pairs = human + [w for w, lab in zip(web, labels) if not lab["noisy"]]
        (out / "oracle.json").write_text(json.dumps(pairs))
        source = [{"reader": "pretrain_json", "path": str(out / "oracle.json"), "image_root": str(world)}]
    start = time.perf_counter()
    model = pretrain_stage(recipe["pretrain"], out / "pretrain", source)
    metrics = evaluate_stage(recipe["evaluate"], model, out / "pretrain")
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps({k: round(v, 2) for k, v in metrics.items()}))


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    return ((pos[:, None] > neg[None, :]).float().mean() + 0.5 * (pos[:, None] == neg[None, :]).float().mean()).item()


def filter_(args: argparse.Namespace) -> None:
    """Fine-tune a filter; ITM AUC of clean vs corrupted web texts, overall and per kind."""
    world = Path(args.world)
    recipe = {**_recipe(args)["filter"], "itm_negatives": args.itm_negatives}
    model = blip.load(finetune_stage("retrieval", recipe, Path(args.init), Path(args.out) / "filter"))
    web = json.loads((world / "web.json").read_text())[: args.n]
    labels = json.loads((world / "web_noise_labels.json").read_text())[: args.n]
    scores = torch.tensor(
        [
            s["itm"]
            for s in model.match([str(world / w["image"]) for w in web], [w["caption"] for w in web], batch_size=64)
        ]
    )
    noisy = torch.tensor([lab["noisy"] for lab in labels])
    print(f"ITM AUC clean vs corrupted: {_auc(scores[~noisy], scores[noisy]):.3f}")
    kinds: dict[str, list[float]] = collections.defaultdict(list)
    for lab, s in zip(labels, scores.tolist()):
        kinds[lab["kind"] + (f"/{lab['attribute']}" if lab["attribute"] else "")].append(s)
    for kind, values in sorted(kinds.items()):
        if kind != "clean":
            print(f"  {kind:20s} n={len(values):4d} AUC vs clean {_auc(scores[~noisy], torch.tensor(values)):.3f}")


def _scene(scenes: list[dict[str, Any]], image: str) -> dict[str, Any]:
    return scenes[int(Path(image).stem)]


def negatives(args: argparse.Namespace) -> None:
    """How often an ITM negative is in fact true of its image: drawn by ITC similarity (the paper) or uniformly."""
    world = Path(args.world)
    model = blip.load(args.model)
    scenes = json.loads((world / "scenes.json").read_text())
    train = json.loads((world / "coco_karpathy_train.json").read_text())[: args.n]
    g = torch.Generator().manual_seed(args.seed)
    true = {"similarity": 0, "uniform": 0}
    for start in range(0, len(train), 48):  # the demo's batch
        batch = train[start : start + 48]
        texts = [e["caption"][0] if isinstance(e["caption"], list) else e["caption"] for e in batch]
        with torch.no_grad():
            sim = model.image_features([str(world / e["image"]) for e in batch]) @ model.text_features(texts).t()
        # As training draws them: softmax(similarity / temperature) over the batch, the pair itself excluded.
        weights = {"similarity": torch.softmax(sim / model.model.temp, dim=1), "uniform": torch.ones_like(sim)}
        for how, w in weights.items():
            drawn = torch.multinomial(w.fill_diagonal_(0), 1, generator=g)[:, 0]
            true[how] += sum(caption_holds(texts[int(j)], _scene(scenes, e["image"]))[0] for e, j in zip(batch, drawn))
    for how, n in true.items():
        print(f"ITM negatives drawn by {how}: {100 * n / len(train):.1f}% true of their image")


def captioner(args: argparse.Namespace) -> None:
    """Fine-tune a captioner; how often its captions and their colour/shape/count/position claims are true."""
    world = Path(args.world)
    model = blip.load(
        finetune_stage("caption", _recipe(args)["captioner"], Path(args.init), Path(args.out) / "captioner")
    )
    scenes = json.loads((world / "scenes.json").read_text())
    web = json.loads((world / "web.json").read_text())[: args.n]
    for strategy in ("nucleus", "beam"):
        caps = model.caption(
            [str(world / w["image"]) for w in web],
            strategy=strategy,
            max_length=20,
            batch_size=64,
            generator=torch.Generator().manual_seed(0),
        )
        checks = [caption_holds(c.text, _scene(scenes, w["image"])) for c, w in zip(caps, web)]
        true = sum(ok and n > 0 for ok, n in checks)
        print(f"{strategy}: wholly true {true / len(web):.3f}")
    claims = collections.Counter()
    for c, w in zip(caps, web):  # the beam captions
        objs = _scene(scenes, w["image"])["objects"]
        for m in NP.finditer(c.text):
            colour, shape = COLOUR_OF[m[3]], SHAPE_OF[m[4]]
            same_colour = [o for o in objs if o["colour"] == colour]
            claims["phrases"] += 1
            claims["colour present"] += bool(same_colour)
            claims["shape present"] += any(o["shape"] == shape for o in objs)
            claims["count of that colour"] += len(same_colour) == COUNT_OF[m[1]]
            for phrase, key in POS_OF.items():
                if re.match(rf"^ (is )?{phrase}\b", c.text[m.end() :]):
                    claims["positions"] += 1
                    claims["position true"] += any((o["row"], o["col"]) in POS_CELLS[key] for o in same_colour)
    n, positions = max(1, claims["phrases"]), max(1, claims["positions"])
    print(
        f"beam noun phrases {claims['phrases']}: colour present {claims['colour present'] / n:.2f}, shape present "
        f"{claims['shape present'] / n:.2f}, count of that colour right {claims['count of that colour'] / n:.2f}, "
        f"position true {claims['position true'] / positions:.2f} of {claims['positions']}"
    )


def provenance(args: argparse.Namespace) -> None:
    """A finished demo folder: the filter's drops per kind of web text; synthetic captions kept vs dropped."""
    run = Path(args.run)
    records = [json.loads(x) for x in (run / "capfilt" / "provenance.jsonl").read_text().splitlines()]
    labels = json.loads((run / "synth" / "web_noise_labels.json").read_text())
    scenes = json.loads((run / "synth" / "scenes.json").read_text())
    quality = filter_quality(records, labels)
    print({k: f"{100 * v['dropped'] / v['of']:.0f}% of {v['of']}" for k, v in quality["dropped_by_kind"].items()})
    web = [r["itm"] for r in records if r.get("source") == "web"]
    for noisy in (False, True):
        scores = [s for s, lab in zip(web, labels) if lab["noisy"] == noisy]
        print(
            f"web texts {'corrupted' if noisy else 'clean'}: ITM mean {sum(scores) / len(scores):.3f}, "
            f"range {min(scores):.2f}-{max(scores):.2f}"
        )
    for kept in (True, False):
        rows = [r for r in records if r.get("source") == "synthetic" and r["kept"] == kept]
        true = sum(caption_holds(r["text"], _scene(scenes, r["image"]))[0] for r in rows)
        colours = sum(
            all(
                any(o["colour"] == COLOUR_OF[m[3]] for o in _scene(scenes, r["image"])["objects"])
                for m in NP.finditer(r["text"])
            )
            for r in rows
        )
        print(
            f"synthetic captions {'kept' if kept else 'dropped'}: {len(rows)}, wholly true "
            f"{true / max(1, len(rows)):.2f}, colours right {colours / max(1, len(rows)):.2f}"
        )


def steptime(args: argparse.Namespace) -> None:
    """Forward + backward + AdamW of the pretraining model, batch 48, 16- against 8-px patches."""
    from blip.model.config import preset
    from blip.training.pretrain import BlipPretrain

    torch.set_num_threads(args.threads)
    ids = {
        "text.vocab_size": 400,
        "text.pad_id": 0,
        "text.cls_id": 1,
        "text.sep_id": 2,
        "text.dec_id": 3,
        "text.enc_id": 4,
    }
    for patch in (16, 8):
        cfg = preset("tiny", **ids, **{"vision.patch_size": patch, "vision.depth": 2, "text.layers": 2})
        model = BlipPretrain(cfg, queue_size=48, momentum=0.95)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        pixels, tokens = torch.randn(48, 3, 64, 64), torch.randint(5, 400, (48, 14))
        tokens[:, 0] = 1
        for i in range(8):
            if i == 3:
                start = time.perf_counter()
            loss = model(pixels, tokens, torch.ones_like(tokens)).total
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"{patch}-px patches: {(time.perf_counter() - start) / 5 * 1000:.0f} ms a step")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "filter", "captioner"):
        p = sub.add_parser(name)
        p.add_argument("--world", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--patch", type=int, default=8)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lr", type=float, default=2e-4, help="fine-tuning lr")
        p.add_argument("--n", type=int, default=1500 if name == "filter" else 300, help="web images scored")
        if name == "pretrain":
            p.add_argument("--data", choices=["noisy", "oracle"], default="noisy")
            p.add_argument("--steps", type=int, default=500)
            p.add_argument("--ft-steps", type=int, default=120, help="caption fine-tune before CIDEr")
            p.add_argument("--vision-init", help="ViT weights to start from (the demo's: src/blip/assets)")
        else:
            p.add_argument("--init", required=True)
            p.add_argument("--steps", dest="ft_steps", type=int, default=120, help="fine-tuning steps")
        if name == "filter":
            p.add_argument("--itm-negatives", choices=ITM_NEGATIVES, default="similarity")
    p = sub.add_parser("negatives")
    p.add_argument("--world", required=True)
    p.add_argument("--model", required=True, help="a model with ITC heads (a demo's filter/model)")
    p.add_argument("--n", type=int, default=480, help="human training pairs, in batches of 48")
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("provenance").add_argument("run")
    sub.add_parser("steptime").add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    commands = {"pretrain": pretrain, "filter": filter_, "captioner": captioner, "negatives": negatives}
    commands.update(provenance=provenance, steptime=steptime)
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
