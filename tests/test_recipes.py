"""Typed recipes: every shipped config loads as its task's recipe with the values its YAML states; a misspelt key
at any level fails every training command in one line that names it and the nearest valid key, before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from blip.cli import main
from blip.errors import BlipError
from blip.recipes import (
    CaptionRecipe,
    ChainRecipe,
    NLVR2Recipe,
    PretrainRecipe,
    RetrievalRecipe,
    VQARecipe,
    load_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
KINDS = {
    "pretrain": PretrainRecipe,
    "caption": CaptionRecipe,
    "retrieval": RetrievalRecipe,
    "vqa": VQARecipe,
    "nlvr2": NLVR2Recipe,
    "chain": ChainRecipe,
}


def _kind(config: Path) -> type:
    (kind,) = [k for name, k in KINDS.items() if config.name.startswith(name)]
    return kind


def _leaves(node, path=()):
    """(path, value) of every scalar of a YAML tree; model override maps are leaves keyed by dotted names."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k)) if k != "overrides" else [((*path, k), v)]
    elif isinstance(node, list) and any(isinstance(v, dict) for v in node):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path, node


def _get(recipe, path):
    for key in path:
        recipe = recipe[key] if isinstance(key, int) else getattr(recipe, key)
    return recipe


def test_every_config_is_a_recipe():
    assert {_kind(c) for c in CONFIGS} == set(KINDS.values())


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_loads_with_the_values_its_yaml_states(config):
    raw = yaml.safe_load(config.read_text())  # the YAML reader alone, without blip
    recipe = _kind(config).parse(load_recipe(str(config), []))
    leaves = list(_leaves(raw))
    assert len(leaves) > 5
    for path, value in leaves:
        assert _get(recipe, path) == value, path


def test_defaults_are_the_references():
    # configs/retrieval_coco.yaml and pretrain_vit_b_14m.yaml (the paper's recipes) state these values.
    pre, ret = PretrainRecipe(), RetrievalRecipe()
    assert (pre.queue_size, pre.momentum, pre.alpha) == (ret.queue_size, ret.momentum, ret.alpha) == (57600, 0.995, 0.4)
    assert (ret.max_tokens, ret.max_words, CaptionRecipe().prompt) == (35, 30, "a picture of ")
    assert pre.itm_negatives == ret.itm_negatives == "similarity"  # the paper's hard negatives
    assert (VQARecipe().drop_path, VQARecipe().max_words, NLVR2Recipe().max_words) == (0.1, 50, 40)
    # The reference fine-tunes with a per-epoch cosine to 0; a partial train map keeps it.
    tuned = CaptionRecipe.parse({"train": {"lr": 1e-5}}).train
    assert (tuned.schedule, tuned.min_lr, tuned.lr) == ("cosine", 0.0, 1e-5)
    assert (PretrainRecipe.parse({"train": {"lr": 1e-5}}).train.schedule, PretrainRecipe().train.min_lr) == (
        "step",
        1e-6,
    )


def test_numbers_written_as_yaml_strings_are_read_and_others_refused():
    assert RetrievalRecipe.parse({"momentum": "5e-1", "train": {"lr": "5e-4"}}).momentum == 0.5
    with pytest.raises(BlipError, match="momentum must be a number"):
        RetrievalRecipe.parse({"momentum": "fast"})


def _rename(node, path: list, new: str) -> None:
    """Rename the key at `path` (the last element) to `new`, in place."""
    *parents, leaf = path
    for p in parents:
        node = node[p]
    items = list(node.items())
    node.clear()
    node.update((new if k == leaf else k, v) for k, v in items)


# (command line before --config, config, path of the key to misspell, the misspelling)
CASES = [
    (["pretrain"], "pretrain_tiny_synth.yaml", ["queue_size"], "queue_sise"),
    (["pretrain"], "pretrain_tiny_synth.yaml", ["train", "warmup_steps"], "warmup_step"),
    (["pretrain"], "pretrain_tiny_synth.yaml", ["data", 0, "image_root"], "image_rot"),
    (["pretrain"], "pretrain_tiny_synth.yaml", ["model", "preset"], "presett"),
    (["pretrain"], "pretrain_tiny_synth.yaml", ["model", "overrides", "vision.depth"], "vision.dept"),
    (["finetune", "caption"], "caption_tiny_synth.yaml", ["prompt"], "promt"),
    (["finetune", "caption"], "caption_coco.yaml", ["train", "epochs"], "epoch"),
    (["finetune", "retrieval"], "retrieval_tiny_synth.yaml", ["momentum"], "momentun"),
    (["finetune", "retrieval"], "retrieval_coco.yaml", ["data", 0, "reader"], "readr"),
    (["finetune", "vqa"], "vqa_tiny_synth.yaml", ["drop_path"], "drop_pth"),
    (["finetune", "vqa"], "vqa_v2.yaml", ["train", "weight_decay"], "weight_decay_"),
    (["finetune", "nlvr2"], "nlvr2_tiny_synth.yaml", ["max_words"], "max_word"),
    (["finetune", "nlvr2"], "nlvr2.yaml", ["train", "checkpoint_every"], "checkpoint_evry"),
    (["chain"], "chain_tiny_synth.yaml", ["out"], "outt"),
    (["chain"], "chain_tiny_synth.yaml", ["pretrain", "alpha_ramp_epochs"], "alpha_ramp_epoch"),
    (["chain"], "chain_tiny_synth.yaml", ["filter", "queue_size"], "queuesize"),
    (["chain"], "chain_tiny_synth.yaml", ["capfilt", "threshold"], "treshold"),
    (["chain"], "chain_tiny_synth.yaml", ["evaluate", 0, "k_test"], "ktest"),
    (["chain"], "chain_tiny_synth.yaml", ["evaluate", 1, "finetune", "train", "lr"], "lrr"),
]


@pytest.mark.parametrize("command,config,path,typo", CASES, ids=[f"{c[0][-1]}-{c[1]}-{c[3]}" for c in CASES])
def test_a_misspelt_key_fails_every_training_command_in_one_line(command, config, path, typo, tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    if path[0] == "evaluate" and len(path) > 2:  # the YAML aliases the captioner's recipe: give this one its own
        raw["evaluate"][1]["finetune"] = yaml.safe_load(yaml.safe_dump(raw["captioner"]))
    _rename(raw, path, typo)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    argv = [*command, "--config", str(recipe)]
    _expect_one_line(argv, path, typo, tmp_path, capsys)


@pytest.mark.parametrize("which", ["--captioner-recipe", "--filter-recipe"])
def test_a_misspelt_key_in_capfilts_recipes_fails_in_one_line(which, tmp_path, capsys):
    config = "caption_tiny_synth.yaml" if which == "--captioner-recipe" else "retrieval_tiny_synth.yaml"
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    _rename(raw, ["crop_scale_min"], "crop_scale_mn")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    human = tmp_path / "human.json"
    human.write_text("[]")
    argv = ["capfilt", "--web", str(human), "--human", str(human), "--pretrained", str(tmp_path / "none")]
    argv += ["--out", str(tmp_path / "out"), which, str(recipe)]
    _expect_one_line(argv, ["crop_scale_min"], "crop_scale_mn", tmp_path, capsys)


def test_an_unknown_way_of_drawing_itm_negatives_is_refused_in_one_line(tmp_path, capsys):
    argv = ["pretrain", "--config", str(ROOT / "configs/pretrain_tiny_synth.yaml"), "--set", "itm_negatives=hardest"]
    before = set(tmp_path.rglob("*"))
    assert main([*argv, "--set", f"train.out={tmp_path / 'out'}"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "itm_negatives: similarity or uniform, not 'hardest'" in err, err
    assert set(tmp_path.rglob("*")) == before


def test_a_misspelt_key_given_by_set_fails_in_one_line(tmp_path, capsys):
    argv = ["pretrain", "--config", str(ROOT / "configs/pretrain_tiny_synth.yaml"), "--set", "train.lr_decy=0.5"]
    _expect_one_line(argv, ["train", "lr_decay"], "lr_decy", tmp_path, capsys)


def _expect_one_line(argv: list[str], path: list, typo: str, tmp_path: Path, capsys) -> None:
    before = set(tmp_path.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err.strip()
    where = ".".join(str(p) for p in path[:-1])
    typo_at, right_at = (f"{where}.{k}" if where else k for k in (typo, path[-1]))
    assert code != 0
    assert "\n" not in err and err.startswith("blip: error: ")
    assert f"'{typo_at}'" in err and f"did you mean '{right_at}'" in err, err
    assert set(tmp_path.rglob("*")) == before  # refused before anything was written


def test_a_parsed_recipe_is_taken_as_it_is_and_replaced_field_by_field():
    r = RetrievalRecipe.parse({"init": "m", "queue_size": 8})
    assert RetrievalRecipe.parse(r) is r
    moved = dataclasses.replace(r, train=dataclasses.replace(r.train, out="x"))
    assert (moved.train.out, moved.train.schedule, moved.queue_size) == ("x", "cosine", 8)


def test_a_key_near_nothing_lists_the_valid_keys_and_a_missing_part_is_named():
    with pytest.raises(BlipError, match=r"unknown recipe key 'train\.zzz' \(valid keys here: out, epochs, "):
        VQARecipe.parse({"train": {"zzz": 1}})
    with pytest.raises(BlipError, match="^the recipe lacks capfilt$"):
        ChainRecipe.parse(
            {"out": "o", "pretrain": {}, "captioner": {}, "filter": {}, "evaluate": [{"task": "caption"}]}
        )
    with pytest.raises(BlipError, match="^the recipe lacks evaluate.0.data$"):
        ChainRecipe.parse(
            {
                "out": "o",
                "pretrain": {},
                "captioner": {},
                "filter": {},
                "capfilt": {},
                "evaluate": [{"task": "caption"}],
            }
        )
