"""`blip ask`: answer a question about images, by generation or by ranking an answer list."""

from __future__ import annotations

import argparse

from blip.cli.common import (
    add_model_args,
    emit,
    expand_images,
    finish,
    open_model,
    positive_int,
    progress_bar,
    usable_images,
)
from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ask",
        help="answer a question about images",
        description="Answer a question about each image (a VQA checkpoint).",
    )
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--question", "-q", required=True)
    add_model_args(p)
    p.add_argument(
        "--answers",
        help="candidate answers to rank instead of generating: a JSON list, or one answer "
        "a line (as `blip evaluate vqa --answer-list`)",
    )
    p.add_argument("--k-test", type=positive_int, default=128, help="answers re-scored by full likelihood when ranking")
    p.add_argument("--beams", type=positive_int, default=3)
    p.add_argument("--max-length", type=positive_int, default=10)
    p.add_argument(
        "--top", type=positive_int, help="with --answers: print this many best answers per image, with scores"
    )
    p.add_argument(
        "--mask-question-padding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="generation ignores the question's padding; --no-mask-question-padding attends "
        "to it as the reference does",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    answers = None
    if args.answers:
        from blip.data.readers import read_answer_list

        answers = read_answer_list(args.answers)
    if args.top is not None and not answers:
        raise BlipError("--top ranks an answer list: give --answers too")
    paths = expand_images(args.images)
    model = open_model(args, task=None)
    images, names, skipped = usable_images(paths)
    bar = progress_bar(len(images))
    results = (
        model.ask(
            images,
            [args.question],
            answers=answers,
            num_beams=args.beams,
            max_length=args.max_length,
            k_test=args.k_test,
            batch_size=args.batch_size,
            progress=bar,
            top=args.top,
            mask_question_padding=args.mask_question_padding,
        )
        if images
        else []
    )
    if bar is not None:
        bar.close()
    for name, ranked in zip(names, results):
        if isinstance(ranked, list):  # --top: the best answers, best first
            emit(
                {
                    "image": name,
                    "question": args.question,
                    "answers": [{"answer": a.text, "score": round(a.logprob, 4)} for a in ranked],
                },
                args.json,
                f"{name}\t" + "\t".join(f"{a.text}={a.logprob:.4f}" for a in ranked),
            )
            continue
        a = ranked
        emit(
            {"image": name, "question": args.question, "answer": a.text, "logprob": round(a.logprob, 4)},
            args.json,
            f"{name}\t{a.text}",
        )
    return finish(skipped, len(paths))
