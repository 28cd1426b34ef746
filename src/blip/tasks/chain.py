"""The CapFilt chain as one recipe: pretrain on noisy web + human pairs -> fine-tune a captioner and a filter on the
human pairs -> CapFilt the web -> pretrain anew on the bootstrapped data -> fine-tune and evaluate both models.

Every stage writes OUT/<stage>/ and is skipped when its result exists, so a killed chain restarts at the stage it
was in, and inside that stage from its last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import blip
from blip.errors import BlipError
from blip.tasks.capfilt import CapFiltConfig, run_capfilt
from blip.tasks.caption import evaluate_caption, finetune_caption
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import evaluate_retrieval, finetune_retrieval

FINETUNE = {"caption": finetune_caption, "retrieval": finetune_retrieval}


def _with_out(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    return {**recipe, "train": {**recipe.get("train", {}), "out": str(out)}}


def pretrain_stage(recipe: dict[str, Any], out: Path, data: list[dict[str, Any]] | None = None) -> Path:
    """Pretrain with `recipe` into OUT (its data sources replaced by `data` when given); resumable."""
    if (out / "model" / "model.safetensors").exists():
        return out / "model"
    if data is not None:
        recipe = {**recipe, "data": data}
    return pretrain(_with_out(recipe, out), resume=any(out.glob("checkpoint-*.pt")))


def finetune_stage(task: str, recipe: dict[str, Any], init: Path, out: Path) -> Path:
    """Fine-tune `init` for `task` (caption or retrieval) with `recipe` into OUT; resumable."""
    if task not in FINETUNE:
        raise BlipError(f"the chain fine-tunes caption or retrieval, not {task!r}")
    if (out / "model" / "model.safetensors").exists():
        return out / "model"
    return FINETUNE[task](_with_out({**recipe, "init": str(init)}, out), resume=any(out.glob("checkpoint-*.pt")))


def evaluate_stage(evaluations: list[dict[str, Any]], model: Path, out: Path) -> dict[str, float]:
    """Run a chain's evaluations on one pretrained model: zero-shot retrieval, or fine-tune then evaluate.

    Each entry: {task: retrieval|caption, data: Karpathy test file, image_root, finetune: recipe (optional),
    k_test (retrieval)}; returns the metrics, prefixed by the task.
    """
    metrics: dict[str, float] = {}
    for ev in evaluations:
        task = ev["task"]
        tuned = finetune_stage(task, ev["finetune"], model, out / task) if ev.get("finetune") else model
        if task == "retrieval":
            m = evaluate_retrieval(blip.load(tuned), ev["data"], ev.get("image_root", ""), k_test=ev.get("k_test", 256))
        elif task == "caption":
            m = {
                k: 100 * v
                for k, v in evaluate_caption(
                    blip.load(tuned), ev["data"], ev.get("image_root", ""), meteor=ev.get("meteor", True)
                ).items()
            }
        else:
            raise BlipError(f"the chain evaluates retrieval or caption, not {task!r}")
        metrics.update({f"{task}/{k}": v for k, v in m.items()})
    return metrics


def capfilt_stage(recipe: dict[str, Any], captioner: Path, filt: Path, out: Path) -> dict[str, Any]:
    """CapFilt the web pairs with the fine-tuned captioner and filter into OUT; resumable unit by unit."""
    if (out / "summary.json").exists() and (out / "bootstrapped.json").exists():
        return json.loads((out / "summary.json").read_text())
    return run_capfilt(CapFiltConfig(out=str(out), **recipe), blip.load(captioner), blip.load(filt))


def timeless(summary: dict[str, Any]) -> dict[str, Any]:
    """CapFilt's summary without its speed: results.json holds no time values, so two runs of one recipe on one
    machine (deterministic training) write the same bytes."""
    return {k: v for k, v in summary.items() if k != "images_per_second_this_run"}


def run_chain(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run the whole chain of a recipe {out, pretrain, captioner, filter, capfilt, evaluate}; returns the metrics of
    the noisy and the bootstrapped model and CapFilt's summary (also written to OUT/results.json)."""
    missing = [k for k in ("out", "pretrain", "captioner", "filter", "capfilt") if k not in recipe]
    if missing:
        raise BlipError(f"the chain recipe lacks {', '.join(missing)}")
    out = Path(recipe["out"])
    noisy = pretrain_stage(recipe["pretrain"], out / "pretrain_noisy")
    captioner = finetune_stage("caption", recipe["captioner"], noisy, out / "captioner")
    filt = finetune_stage("retrieval", recipe["filter"], noisy, out / "filter")
    summary = capfilt_stage(recipe["capfilt"], captioner, filt, out / "capfilt")
    boot = pretrain_stage(
        recipe["pretrain"],
        out / "pretrain_bootstrapped",
        [{"reader": "pretrain_json", "path": str(out / "capfilt" / "bootstrapped.json")}],
    )
    result = {
        "capfilt": summary,
        "noisy": evaluate_stage(recipe.get("evaluate", []), noisy, out / "pretrain_noisy"),
        "bootstrapped": evaluate_stage(recipe.get("evaluate", []), boot, out / "pretrain_bootstrapped"),
    }
    (out / "results.json").write_text(json.dumps({**result, "capfilt": timeless(summary)}, indent=2))
    return result
