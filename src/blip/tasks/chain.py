"""The CapFilt chain as one recipe: pretrain on noisy web + human pairs -> fine-tune a captioner and a filter on the
human pairs -> CapFilt the web -> pretrain anew on the bootstrapped data -> fine-tune and evaluate both models.

Every stage writes OUT/<stage>/ and is skipped when its result exists, so a killed chain restarts at the stage it
was in, and inside that stage from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import blip
from blip.errors import BlipError
from blip.recipes import CapFiltConfig, ChainRecipe, EvalStep, FinetuneRecipe, PretrainRecipe, Source, finetune_recipe
from blip.recipes import parse as parse_recipe
from blip.tasks.capfilt import run_capfilt
from blip.tasks.caption import evaluate_caption
from blip.tasks.finetune import finetune
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import evaluate_retrieval

R = TypeVar("R", PretrainRecipe, FinetuneRecipe)


def _into(recipe: R, out: Path) -> R:
    """The recipe with its `train.out` set to the stage's folder."""
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, out=str(out)))


def pretrain_stage(recipe: Mapping | PretrainRecipe, out: Path, data: list[Mapping] | None = None) -> Path:
    """Pretrain with `recipe` into OUT (its data sources replaced by `data` when given); resumable."""
    if (out / "model" / "model.safetensors").exists():
        return out / "model"
    recipe = PretrainRecipe.parse(recipe)
    if data is not None:
        recipe = dataclasses.replace(recipe, data=[Source.parse(d, f"data.{i}") for i, d in enumerate(data)])
    return pretrain(_into(recipe, out), resume=any(out.glob("checkpoint-*.pt")))


def finetune_stage(task: str, recipe: Mapping | FinetuneRecipe, init: Path, out: Path) -> Path:
    """Fine-tune `init` for `task` (caption or retrieval) with `recipe` into OUT; resumable."""
    if task not in ("caption", "retrieval"):
        raise BlipError(f"the chain fine-tunes caption or retrieval, not {task!r}")
    if (out / "model" / "model.safetensors").exists():
        return out / "model"
    recipe = dataclasses.replace(finetune_recipe(task).parse(recipe), init=str(init))
    return finetune(task, _into(recipe, out), resume=any(out.glob("checkpoint-*.pt")))


def evaluate_stage(evaluations: list[Mapping | EvalStep], model: Path, out: Path) -> dict[str, float]:
    """Run a chain's evaluations on one pretrained model: zero-shot retrieval, or fine-tune then evaluate.

    Each entry: {task: retrieval|caption, data: Karpathy test file, image_root, finetune: recipe (optional),
    k_test (retrieval), meteor (caption)}; returns the metrics, prefixed by the task.
    """
    metrics: dict[str, float] = {}
    for i, entry in enumerate(evaluations):
        ev = EvalStep.parse(entry, f"evaluate.{i}")
        tuned = finetune_stage(ev.task, ev.finetune, model, out / ev.task) if ev.finetune else model
        if ev.task == "retrieval":
            m = evaluate_retrieval(blip.load(tuned), ev.data, ev.image_root, k_test=ev.k_test)
        else:
            caption = evaluate_caption(blip.load(tuned), ev.data, ev.image_root, meteor=ev.meteor)
            m = {k: 100 * v for k, v in caption.items()}
        metrics.update({f"{ev.task}/{k}": v for k, v in m.items()})
    return metrics


def capfilt_stage(recipe: Mapping | CapFiltConfig, captioner: Path, filt: Path, out: Path) -> dict[str, Any]:
    """CapFilt the web pairs with the fine-tuned captioner and filter into OUT; resumable unit by unit."""
    if (out / "summary.json").exists() and (out / "bootstrapped.json").exists():
        return json.loads((out / "summary.json").read_text())
    cfg = dataclasses.replace(parse_recipe(CapFiltConfig, recipe, "capfilt"), out=str(out))
    return run_capfilt(cfg, blip.load(captioner), blip.load(filt))


def timeless(summary: dict[str, Any]) -> dict[str, Any]:
    """CapFilt's summary without its speed: results.json holds no time values, so two runs of one recipe on one
    machine (deterministic training) write the same bytes."""
    return {k: v for k, v in summary.items() if k != "images_per_second_this_run"}


def run_chain(recipe: Mapping | ChainRecipe) -> dict[str, Any]:
    """Run the whole chain of a recipe {out, pretrain, captioner, filter, capfilt, evaluate}; returns the metrics of
    the noisy and the bootstrapped model and CapFilt's summary (also written to OUT/results.json)."""
    recipe = ChainRecipe.parse(recipe)  # every stage's recipe is checked before the first one runs
    out = Path(recipe.out)
    noisy = pretrain_stage(recipe.pretrain, out / "pretrain_noisy")
    captioner = finetune_stage("caption", recipe.captioner, noisy, out / "captioner")
    filt = finetune_stage("retrieval", recipe.filter, noisy, out / "filter")
    summary = capfilt_stage(recipe.capfilt, captioner, filt, out / "capfilt")
    boot = pretrain_stage(
        recipe.pretrain,
        out / "pretrain_bootstrapped",
        [{"reader": "pretrain_json", "path": str(out / "capfilt" / "bootstrapped.json")}],
    )
    result = {
        "capfilt": summary,
        "noisy": evaluate_stage(recipe.evaluate, noisy, out / "pretrain_noisy"),
        "bootstrapped": evaluate_stage(recipe.evaluate, boot, out / "pretrain_bootstrapped"),
    }
    (out / "results.json").write_text(json.dumps({**result, "capfilt": timeless(summary)}, indent=2))
    return result
