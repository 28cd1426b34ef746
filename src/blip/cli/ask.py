"""`blip ask`: answer a question about images, by generation or by ranking an answer list."""

from __future__ import annotations

import argparse

from blip.cli.common import (add_model_args, emit, expand_images, finish, open_model, positive_int, progress_bar,
                             usable_images)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="answer a question about images",
                       description="Answer a question about each image (a VQA checkpoint).")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--question", "-q", required=True)
    add_model_args(p)
    p.add_argument("--answers", help="candidate answers to rank instead of generating: a JSON list, or one answer "
                                     "a line (as `blip evaluate vqa --answer-list`)")
    p.add_argument("--k-test", type=positive_int, default=128, help="answers re-scored by full likelihood when ranking")
    p.add_argument("--beams", type=positive_int, default=3)
    p.add_argument("--max-length", type=positive_int, default=10)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    answers = None
    if args.answers:
        from blip.data.readers import read_answer_list

        answers = read_answer_list(args.answers)
    paths = expand_images(args.images)
    model = open_model(args, task=None)
    images, names, skipped = usable_images(paths)
    bar = progress_bar(len(images))
    results = model.ask(images, [args.question], answers=answers, num_beams=args.beams, max_length=args.max_length,
                        k_test=args.k_test, batch_size=args.batch_size, progress=bar) if images else []
    if bar is not None:
        bar.close()
    for name, a in zip(names, results):
        emit({"image": name, "question": args.question, "answer": a.text, "logprob": round(a.logprob, 4)},
             args.json, f"{name}\t{a.text}")
    return finish(skipped, len(paths))
