"""VQA on the synthetic world: fine-tune a tiny pretrained model, then compare its VQA accuracy on the test split
with the most-frequent-answer-per-question-type baseline (types are the questions' first two words, as VQA v2's
question types are prefixes).

    python benchmarks/vqa_synth.py --init runs/pretrain_tiny_synth/model --synth data/synth --steps 300
    python benchmarks/vqa_synth.py --pretrain-steps 150 --steps 300      # no pretrained model at hand

Without --init, a tiny model is pretrained first, with a whole-word vocabulary of the world's captions, questions
and answers. Also printed: the share of test answers the model's tokenizer cannot spell (a ceiling on accuracy):
a vocabulary built from captions alone (`tokenizer: from_data`) has no "yes", "no", "how", "many" or digits.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

import blip
from blip.cli.common import load_recipe
from blip.data.synth import generate
from blip.evaluation.vqa import vqa_accuracy
from blip.tasks.pretrain import pretrain
from blip.tasks.vqa import evaluate_vqa, finetune_vqa
from blip.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def question_type(question: str) -> str:
    """The question's first two words."""
    return " ".join(question.lower().rstrip("?").split()[:2])


def baseline(train: list[dict], test: list[dict]) -> tuple[float, dict[str, float]]:
    """VQA accuracy (%) of answering each test question with its type's most frequent training answer."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        by_type[question_type(q["question"])].update(q["answer"])
    overall = Counter(a for q in train for a in q["answer"]).most_common(1)[0][0]
    scores: dict[str, list[float]] = defaultdict(list)
    for q in test:
        t = question_type(q["question"])
        guess = by_type[t].most_common(1)[0][0] if by_type[t] else overall
        scores[t].append(vqa_accuracy(guess, q["answer"]))
    every = [s for per_type in scores.values() for s in per_type]
    return 100 * sum(every) / len(every), {t: 100 * sum(s) / len(s) for t, s in sorted(scores.items())}


def per_type(results: Path, test: list[dict]) -> dict[str, float]:
    """VQA accuracy (%) by question type of a submission file."""
    answers = {r["question_id"]: r["answer"] for r in json.loads(results.read_text())}
    scores: dict[str, list[float]] = defaultdict(list)
    for q in test:
        scores[question_type(q["question"])].append(vqa_accuracy(answers[q["question_id"]], q["answer"]))
    return {t: 100 * sum(s) / len(s) for t, s in sorted(scores.items())}


def unspellable(tok: Tokenizer, test: list[dict]) -> float:
    """Share (%) of test questions whose most common answer encodes to [UNK]."""
    unk = tok.tok.token_to_id("[UNK]")
    bad = sum(unk in tok.encode(Counter(q["answer"]).most_common(1)[0][0]) for q in test)
    return 100 * bad / len(test)


def pretrain_model(synth: Path, out: Path, steps: int, seed: int) -> Path:
    """A tiny model pretrained for `steps` steps with a vocabulary that covers the VQA texts."""
    texts = [e["caption"] for e in json.loads((synth / "pretrain.json").read_text())]
    for split in ("train", "val", "test"):
        for q in json.loads((synth / f"vqa/vqa_{split}.json").read_text()):
            texts += [q["question"], *q["answer"]]
    Tokenizer.from_texts(texts).save(out / "vocab")
    recipe = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), [])
    recipe["tokenizer"] = str(out / "vocab")
    recipe["data"] = [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}]
    recipe["train"].update(out=str(out / "pretrain"), max_steps=steps, epochs=100, seed=seed, progress=False,
                           checkpoint_every=10**9)
    return pretrain(recipe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", help="pretrained model folder (default: pretrain one, see --pretrain-steps)")
    ap.add_argument("--synth", default="runs/bench_vqa_synth/synth", help="synthetic world (made if missing)")
    ap.add_argument("--images", type=int, default=2000, help="images of the world when it is made")
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--steps", type=int, default=300, help="VQA fine-tuning steps")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_vqa_synth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out, synth = Path(args.out), Path(args.synth)
    if not (synth / "manifest.json").exists():
        generate(synth, num_images=args.images, seed=args.seed, noise=0.0)
    start = time.perf_counter()
    init = Path(args.init) if args.init else pretrain_model(synth, out, args.pretrain_steps, args.seed)
    pretrain_s = time.perf_counter() - start

    recipe = load_recipe(str(ROOT / "configs/vqa_tiny_synth.yaml"), [])
    recipe["init"] = str(init)
    recipe["data"] = [{"reader": "vqa", "path": str(synth / f"vqa/vqa_{s}.json"), "image_root": str(synth)}
                      for s in ("train", "val")]
    recipe["train"].update(out=str(out / "vqa"), max_steps=args.steps, epochs=100, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, progress=False, checkpoint_every=10**9)
    start = time.perf_counter()
    final = finetune_vqa(recipe)
    finetune_s = time.perf_counter() - start

    model = blip.load(final)
    test_file = synth / "vqa/vqa_test.json"
    train = [q for s in ("train", "val") for q in json.loads((synth / f"vqa/vqa_{s}.json").read_text())]
    test = json.loads(test_file.read_text())
    rank = evaluate_vqa(model, str(test_file), str(synth), answer_list=str(synth / "vqa/answer_list.json"),
                        k_test=128, out=str(out / "rank.json"))
    gen = evaluate_vqa(model, str(test_file), str(synth), out=str(out / "generate.json"))
    base, base_types = baseline(train, test)
    result = {
        "init": str(init), "pretrain_seconds": round(pretrain_s, 1), "finetune_seconds": round(finetune_s, 1),
        "steps": args.steps, "batch_size": args.batch_size, "train_questions": len(train), "test_questions": len(test),
        "unspellable_answers_pct": round(unspellable(model.tokenizer, test), 1),
        "accuracy_rank": round(rank["vqa_accuracy"], 2), "accuracy_generate": round(gen["vqa_accuracy"], 2),
        "accuracy_baseline": round(base, 2),
        "by_type": {t: {"rank": round(r, 1), "generate": round(g, 1), "baseline": round(base_types[t], 1)}
                    for (t, r), g in zip(per_type(out / "rank.json", test).items(),
                                         per_type(out / "generate.json", test).values())},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
