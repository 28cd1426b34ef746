"""The one fine-tune path: parse the task's recipe, load its init checkpoint, build the task's part (model parts,
dataset, loss), train with the one trainer and save the final model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from blip.data.robust import SkipCounter
from blip.recipes import FinetuneRecipe, finetune_recipe
from blip.tasks import caption, nlvr2, retrieval, vqa
from blip.tasks.common import FinetuneTask, load_init, train_and_save

TASKS: dict[str, FinetuneTask] = {
    "caption": caption.TASK,
    "retrieval": retrieval.TASK,
    "vqa": vqa.TASK,
    "nlvr2": nlvr2.TASK,
}


def finetune(task: str, recipe: Mapping | FinetuneRecipe, resume: bool = False) -> Path:
    """Fine-tune `recipe.init` for `task` (caption, retrieval, vqa, nlvr2); returns the folder of the final model."""
    parsed = finetune_recipe(task).parse(recipe)
    spec = TASKS[task]
    model, tok, report = load_init(parsed, **spec.load_options(parsed))
    counter = SkipCounter()
    parts = spec.build(parsed, model, tok, report, counter)
    return train_and_save(parsed.train, parts.module, parts.model, tok, parts.dataset, parts.loss_fn, counter, resume)
