"""Downstream tasks on the synthetic world: fine-tune retrieval, captioning, VQA and NLVR2 from one tiny pretrained
model with the configs/*_tiny_synth.yaml recipes, evaluate each on its test split with the project's evaluators,
and compare with baselines computed without any model.

    python benchmarks/tasks_synth.py --out runs/tasks_synth                      # pretrain, then all four tasks
    python benchmarks/tasks_synth.py --init runs/tasks_synth/pretrain/model --synth runs/tasks_synth/synth \\
        --tasks vqa nlvr2 --vqa-steps 300                                          # reuse a pretrained model

Baselines: retrieval against a random ranking (exact expected recalls), captioning against the single most common
training caption given for every test image (same COCO toolkit), VQA against the most frequent training answer of
the question's type (its first two words, as VQA v2's types are prefixes; same official scorer), NLVR2 against the
majority training label (and 50%). The zero-shot retrieval of the pretrained model is reported too.

By default every fine-tune runs its recipe as written (its epochs, lr, batch). With a step budget (--steps,
--TASK-steps) it keeps the recipe's epochs and cosine schedule but caps each epoch at steps / epochs optimiser
steps, so the lr still decays over the budget (the trainer's cosine is per epoch: a plain max_steps cut inside the
first epoch would train at the peak lr throughout). --ft-set TASK:KEY=VALUE overrides a fine-tuning recipe (write
floats as 5.0e-4: YAML reads 5e-4 as a string).

On a machine shared with other jobs use --threads 1: two OpenMP threads on two contended cores run 20-40x slower.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import blip
from blip.cli.common import load_recipe
from blip.data.readers import read_karpathy_eval
from blip.data.synth import generate
from blip.evaluation.captioning import caption_metrics
from blip.evaluation.vqa import vqa_accuracy, vqa_score
from blip.tasks.caption import evaluate_caption
from blip.tasks.finetune import finetune
from blip.tasks.nlvr2 import evaluate_nlvr2
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import evaluate_retrieval, finetune_retrieval
from blip.tasks.vqa import evaluate_vqa
from blip.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("retrieval", "caption", "vqa", "nlvr2")
# The demo's model (16-px patches: 16 image tokens at 64 px, 2+2 layers): pretrains in about two minutes on 2 cores.
SMALL_MODEL = ["model.overrides={vision.patch_size: 16, vision.depth: 2, text.layers: 2}"]


# ---------------------------------------------------------------------------------------------------- baselines
def question_type(question: str) -> str:
    """The question's first two words (VQA v2's question types are prefixes of this kind)."""
    return " ".join(question.lower().rstrip("?").split()[:2])


def vqa_baseline(train: list[dict], test: list[dict]) -> tuple[dict[Any, str], dict[str, float]]:
    """Answers of the most-frequent-training-answer-per-question-type baseline, and its accuracy (%) by type."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        by_type[question_type(q["question"])].update(q["answer"])
    overall = Counter(a for q in train for a in q["answer"]).most_common(1)[0][0]
    answers = {}
    for q in test:
        counts = by_type.get(question_type(q["question"]))
        answers[q["question_id"]] = counts.most_common(1)[0][0] if counts else overall
    return answers, per_type(answers, test)


def per_type(answers: dict[Any, str], test: list[dict]) -> dict[str, float]:
    """VQA accuracy (%) by question type of {question_id: answer}."""
    scores: dict[str, list[float]] = defaultdict(list)
    for q in test:
        scores[question_type(q["question"])].append(vqa_accuracy(answers[q["question_id"]], q["answer"]))
    return {t: 100 * sum(s) / len(s) for t, s in sorted(scores.items())}


def unspellable(tok: Tokenizer, test: list[dict]) -> float:
    """Share (%) of test questions whose most common answer encodes to [UNK] (a ceiling on any model's accuracy)."""
    unk = tok.tok.token_to_id("[UNK]")
    return 100 * sum(unk in tok.encode(Counter(q["answer"]).most_common(1)[0][0]) for q in test) / len(test)


def chance_recalls(n_images: int, captions_per_image: list[int]) -> dict[str, float]:
    """Expected Karpathy recalls (%) of a uniformly random ranking, with the evaluator's key names."""
    n_texts = sum(captions_per_image)
    out = {}
    for k in (1, 5, 10):
        # Image->text: found when any of the image's p captions is among the first k of n_texts.
        hit = [1 - math.comb(n_texts - p, k) / math.comb(n_texts, k) for p in captions_per_image]
        out[f"txt_r{k}"] = 100 * sum(hit) / len(hit)
        out[f"img_r{k}"] = 100 * min(k, n_images) / n_images  # text->image: its one image among n_images
    for side in ("txt", "img"):
        out[f"{side}_r_mean"] = sum(out[f"{side}_r{k}"] for k in (1, 5, 10)) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def caption_baseline(synth: Path, test_file: Path) -> tuple[str, dict[str, float]]:
    """The most common training caption, and the toolkit's scores of giving it for every test image."""
    train = json.loads((synth / "coco_karpathy_train.json").read_text())
    common = Counter(e["caption"] for e in train).most_common(1)[0][0]
    rs = read_karpathy_eval(str(test_file), image_root=str(synth))
    references = {rs.image_ids[i]: [rs.texts[t] for t in rs.img2txt[i]] for i in range(len(rs.images))}
    return common, caption_metrics(references, {i: common for i in references})


# ------------------------------------------------------------------------------------------------------ running
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s result and its wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def budget(recipe: dict[str, Any], steps: int | None, examples: int, out: Path, seed: int) -> dict[str, Any]:
    """The recipe's train section for a budget of `steps` steps (None: the recipe's whole epochs), its cosine
    completed within them."""
    train = dict(recipe.get("train", {}))
    full_epoch = examples // train.get("batch_size", 32)
    epochs = train.get("epochs", 1)
    steps = steps or epochs * full_epoch
    # More steps than the recipe's epochs hold: more epochs (a capped epoch cannot be longer than the data).
    epochs = max(epochs, math.ceil(steps / max(1, full_epoch)))
    train.update(
        out=str(out),
        epochs=epochs,
        steps_per_epoch=math.ceil(steps / epochs),
        max_steps=steps,
        seed=seed,
        progress=False,
        checkpoint_every=10**9,
    )
    return train


def schedule(train: dict[str, Any]) -> str:
    """Steps, epochs, lr and batch of a fine-tune, for the table."""
    return f"{train['max_steps']} ({train['epochs']} ep., lr {train['lr']:g}, batch {train['batch_size']})"


def fresh(folder: Path) -> Path:
    """An empty output folder: this script's timings are of whole runs, never of resumed ones."""
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def pretrain_model(synth: Path, out: Path, steps: int, seed: int, sets: list[str]) -> Path:
    """A tiny model pretrained on the world's pretrain.json for `steps` steps (recipe: pretrain_tiny_synth.yaml)."""
    recipe = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), SMALL_MODEL + sets)
    recipe["tokenizer"] = str(synth / "tokenizer")  # the world's vocabulary: spells VQA answers and statements too
    recipe["data"] = [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}]
    # As benchmarks/pretrain_tiny.py: the step schedule (warmup, then 0.9 per epoch) runs until max_steps.
    recipe["train"].update(
        out=str(fresh(out)), max_steps=steps, epochs=100, seed=seed, progress=False, checkpoint_every=10**9
    )
    return pretrain(recipe)


def task_recipe(task: str, sets: list[str]) -> dict[str, Any]:
    """configs/TASK_tiny_synth.yaml with this task's TASK:KEY=VALUE overrides applied."""
    mine = [s.split(":", 1)[1] for s in sets if s.split(":", 1)[0] == task]
    return load_recipe(str(ROOT / f"configs/{task}_tiny_synth.yaml"), mine)


def karpathy_recipe(
    task: str, synth: Path, init: Path, out: Path, steps: int | None, seed: int, sets: list[str]
) -> tuple[dict[str, Any], str]:
    """A caption or retrieval recipe on the world's Karpathy train split, within the step budget; and its plan."""
    recipe = task_recipe(task, sets)
    recipe["init"] = str(init)
    recipe["data"] = [{"reader": "karpathy", "path": str(synth / "coco_karpathy_train.json"), "image_root": str(synth)}]
    examples = len(json.loads((synth / "coco_karpathy_train.json").read_text()))
    recipe["train"] = budget(recipe, steps, examples, fresh(out), seed)
    return recipe, schedule(recipe["train"])


def run_retrieval(
    synth: Path, init: Path, out: Path, steps: int | None, seed: int, sets: list[str], k_test: int
) -> list[dict]:
    """Fine-tune retrieval, evaluate it on the test split; rows for the table."""
    recipe, plan = karpathy_recipe("retrieval", synth, init, out, steps, seed, sets)
    final, train_s = timed(lambda: finetune_retrieval(recipe))
    test = synth / "coco_karpathy_test.json"
    metrics, eval_s = timed(lambda: evaluate_retrieval(blip.load(final), str(test), str(synth), k_test=k_test))
    return retrieval_rows("retrieval (fine-tuned)", metrics, chance(test), plan, train_s, eval_s)


def chance(test: Path) -> dict[str, float]:
    """Chance recalls of a Karpathy test file."""
    entries = json.loads(test.read_text())
    return chance_recalls(len(entries), [len(e["caption"]) for e in entries])


def retrieval_rows(task: str, metrics: dict, base: dict, steps: str, train_s: float, eval_s: float) -> list[dict]:
    """Table rows of one retrieval evaluation against chance."""
    names = {"txt_r1": "text R@1 (image->text)", "img_r1": "image R@1 (text->image)", "r_mean": "mean of the 6 recalls"}
    return [
        {
            "task": task,
            "metric": name,
            "model": metrics[key],
            "baseline": base[key],
            "baseline_is": "chance",
            "steps": steps,
            "train_s": train_s,
            "eval_s": eval_s,
        }
        for key, name in names.items()
    ]


def run_caption(synth: Path, init: Path, out: Path, steps: int | None, seed: int, sets: list[str]) -> list[dict]:
    """Fine-tune a captioner; CIDEr and BLEU-4 of beam search (3, max 20, min 5) against the most common caption."""
    recipe, plan = karpathy_recipe("caption", synth, init, out, steps, seed, sets)
    final, train_s = timed(lambda: finetune("caption", recipe))
    test = synth / "coco_karpathy_test.json"
    metrics, eval_s = timed(
        lambda: evaluate_caption(
            blip.load(final), str(test), str(synth), out=str(out / "test_captions.json"), meteor=False
        )
    )
    common, base = caption_baseline(synth, test)
    return [
        {
            "task": "captioning",
            "metric": name,
            "model": 100 * metrics[key],
            "baseline": 100 * base[key],
            "baseline_is": f'most common training caption ("{common}")',
            "steps": plan,
            "train_s": train_s,
            "eval_s": eval_s,
        }
        for key, name in (("CIDEr", "CIDEr"), ("Bleu_4", "BLEU-4"))
    ]


def run_vqa(
    synth: Path, init: Path, out: Path, steps: int | None, seed: int, sets: list[str]
) -> tuple[list[dict], dict, float]:
    """Fine-tune VQA (train + val questions); accuracy of answer ranking and of generation against the baseline."""
    recipe = task_recipe("vqa", sets)
    recipe["init"] = str(init)
    splits = [json.loads((synth / f"vqa/vqa_{s}.json").read_text()) for s in ("train", "val")]
    recipe["data"] = [
        {"reader": "vqa", "path": str(synth / f"vqa/vqa_{s}.json"), "image_root": str(synth)} for s in ("train", "val")
    ]
    recipe["train"] = budget(recipe, steps, sum(map(len, splits)), fresh(out), seed)
    plan = schedule(recipe["train"])
    final, train_s = timed(lambda: finetune("vqa", recipe))
    test_file = synth / "vqa/vqa_test.json"
    test = json.loads(test_file.read_text())
    model = blip.load(final)
    start = time.perf_counter()
    rank = evaluate_vqa(
        model,
        str(test_file),
        str(synth),
        answer_list=str(synth / "vqa/answer_list.json"),
        k_test=128,
        out=str(out / "test_rank.json"),
    )
    gen = evaluate_vqa(model, str(test_file), str(synth), out=str(out / "test_generate.json"))
    eval_s = time.perf_counter() - start
    base_answers, base_types = vqa_baseline([q for s in splits for q in s], test)
    base = vqa_score(base_answers, {q["question_id"]: q["answer"] for q in test})
    submitted = {
        m: {r["question_id"]: r["answer"] for r in json.loads((out / f"test_{m}.json").read_text())}
        for m in ("rank", "generate")
    }
    types = {m: per_type(a, test) for m, a in submitted.items()}
    by_type = {
        t: {
            "rank": types["rank"][t],
            "generate": types["generate"][t],
            "baseline": base_types[t],
            "questions": sum(question_type(q["question"]) == t for q in test),
        }
        for t in base_types
    }
    rows = [
        {
            "task": "VQA",
            "metric": f"VQA accuracy, {how}",
            "model": m["vqa_accuracy"],
            "baseline": base,
            "baseline_is": "most frequent training answer of the question type",
            "steps": plan,
            "train_s": train_s,
            "eval_s": eval_s,
        }
        for how, m in (("answer list ranked", rank), ("answers generated", gen))
    ]
    return rows, by_type, unspellable(model.tokenizer, test)


def run_nlvr2(synth: Path, init: Path, out: Path, steps: int | None, seed: int, sets: list[str]) -> list[dict]:
    """Fine-tune NLVR2; test accuracy against the majority training label."""
    recipe = task_recipe("nlvr2", sets)
    recipe["init"] = str(init)
    recipe["data"] = [{"path": str(synth / "nlvr2/nlvr_train.json"), "image_root": str(synth)}]
    train = json.loads((synth / "nlvr2/nlvr_train.json").read_text())
    recipe["train"] = budget(recipe, steps, len(train), fresh(out), seed)
    plan = schedule(recipe["train"])
    final, train_s = timed(lambda: finetune("nlvr2", recipe))
    test_file = synth / "nlvr2/nlvr_test.json"
    metrics, eval_s = timed(lambda: evaluate_nlvr2(blip.load(final), str(test_file), str(synth)))
    majority = Counter(e["label"] for e in train).most_common(1)[0][0]
    test = json.loads(test_file.read_text())
    base = 100 * sum(e["label"] == majority for e in test) / len(test)
    return [
        {
            "task": "NLVR2",
            "metric": "accuracy",
            "model": metrics["accuracy"],
            "baseline": base,
            "baseline_is": f'majority training label ("{majority}"; always 50% in expectation)',
            "steps": plan,
            "train_s": train_s,
            "eval_s": eval_s,
        }
    ]


# ------------------------------------------------------------------------------------------------------ report
def hardware(threads: int) -> str:
    """CPU model name (lscpu), thread count, torch version."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        name = next(
            (line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), platform.processor()
        )
    except OSError:
        name = platform.processor() or "unknown CPU"
    plural = "" if threads == 1 else "s"
    return f"{name}, {threads} torch thread{plural}, torch {torch.__version__}, no GPU"


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| task | metric | model | baseline | baseline is | steps | seconds (train + eval) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['metric']} | **{r['model']:.1f}** | {r['baseline']:.1f} | "
            f"{r['baseline_is']} | {r['steps']} | {r['train_s']:.0f} + {r['eval_s']:.0f} |"
        )
    return "\n".join(lines)


def report(rows: list[dict], extra: dict[str, Any], command: str, threads: int, total_s: float) -> str:
    """The Markdown results file."""
    # Timings on a shared machine say little without the load: the load average shows whether others ran.
    load = (
        f"{os.cpu_count()} cores, 1-minute load average {extra['load'][0]:.1f} at the start and "
        f"{extra['load'][1]:.1f} at the end"
    )
    if max(extra["load"]) > threads + 0.5:
        load += " (other jobs shared the cores)"
    parts = [
        "# Downstream tasks on the synthetic world",
        "",
        f"Written by `benchmarks/tasks_synth.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Hardware: {hardware(threads)}; {load}. Whole run: {total_s / 60:.1f} min.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"World: {extra['world']}. Pretrained model: {extra['init']}. Figures are percent; single seed.",
        "",
        table(rows),
    ]
    if "vqa_by_type" in extra:
        title = (
            f"VQA accuracy by question type (first two words); {extra['vqa_unspellable']:.1f}% of test "
            "answers are outside the model's vocabulary:"
        )
        parts += ["", title, "", "| type | questions | ranked | generated | baseline |", "|---|---|---|---|---|"]
        parts += [
            f"| {t} | {v['questions']} | {v['rank']:.1f} | {v['generate']:.1f} | {v['baseline']:.1f} |"
            for t, v in extra["vqa_by_type"].items()
        ]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/tasks_synth", help="work folder (its task subfolders are replaced)")
    ap.add_argument("--synth", help="synthetic world folder (default: OUT/synth, made if missing)")
    ap.add_argument("--images", type=int, default=3000, help="images of the world when it is made")
    ap.add_argument("--init", help="pretrained model folder (default: pretrain one into OUT/pretrain)")
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pretraining recipe override (after the default small model), e.g. model.overrides={}",
    )
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--steps", type=int, help="fine-tuning steps of every task (default: its recipe's epochs)")
    for task in TASKS:
        ap.add_argument(f"--{task}-steps", type=int, help=f"{task} fine-tuning steps (default: --steps)")
    ap.add_argument(
        "--ft-set",
        action="append",
        default=[],
        metavar="TASK:KEY=VALUE",
        help="fine-tuning recipe override, e.g. vqa:train.lr=5e-4",
    )
    ap.add_argument("--k-test", type=int, default=32, help="retrieval: ITM re-ranks each query's top k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--results", default=str(ROOT / "benchmarks/tasks_synth_results.md"), help="Markdown results file ('' for none)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]])
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    out = Path(args.out)
    synth = Path(args.synth) if args.synth else out / "synth"
    if not (synth / "manifest.json").exists():
        generate(synth, num_images=args.images, seed=args.seed, noise=0.0)
    manifest = json.loads((synth / "manifest.json").read_text())
    s = manifest["splits"]
    extra: dict[str, Any] = {
        "world": f"{manifest['num_images']} images (train {s['train']}, test {s['test']}, "
        f"web {s['web']}), noise {manifest['noise']}, seed {manifest['seed']}"
    }

    rows: list[dict] = []
    test = synth / "coco_karpathy_test.json"
    if args.init:
        init, pretrain_s, plan = Path(args.init), 0.0, "given"
        extra["init"] = f"`{init}` (given)"
    else:
        init, pretrain_s = timed(
            lambda: pretrain_model(synth, out / "pretrain", args.pretrain_steps, args.seed, args.set)
        )
        used = json.loads((out / "pretrain/recipe.json").read_text())
        plan = f"{args.pretrain_steps} pretraining (lr {used['train']['lr']:g}, batch {used['train']['batch_size']})"
        extra["init"] = f"pretrained here for {args.pretrain_steps} steps, model `{json.dumps(used['model'])}`"
    zero_shot, eval_s = timed(lambda: evaluate_retrieval(blip.load(init), str(test), str(synth), k_test=args.k_test))
    rows += retrieval_rows("retrieval, zero-shot (pretrained)", zero_shot, chance(test), plan, pretrain_s, eval_s)
    print(table(rows), flush=True)

    for task in args.tasks:
        steps = getattr(args, f"{task}_steps") or args.steps
        folder = out / task
        if task == "retrieval":
            rows += run_retrieval(synth, init, folder, steps, args.seed, args.ft_set, args.k_test)
        elif task == "caption":
            rows += run_caption(synth, init, folder, steps, args.seed, args.ft_set)
        elif task == "vqa":
            vqa_rows, extra["vqa_by_type"], extra["vqa_unspellable"] = run_vqa(
                synth, init, folder, steps, args.seed, args.ft_set
            )
            rows += vqa_rows
        else:
            rows += run_nlvr2(synth, init, folder, steps, args.seed, args.ft_set)
        print(table(rows), flush=True)

    total_s = time.perf_counter() - start
    extra["load"] = [load_start, os.getloadavg()[0]]
    text = report(rows, extra, command, args.threads, total_s)
    print(text)
    (out / "results.json").write_text(json.dumps({"rows": rows, **extra, "seconds": total_s}, indent=1))
    if args.results:
        Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
