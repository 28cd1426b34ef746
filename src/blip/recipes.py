"""Typed training recipes: one dataclass per task, each default written once, unknown keys refused.

A recipe is read from YAML (configs/*.yaml) with `load_recipe`, which applies `--set KEY=VALUE` overrides to the
plain mapping; the task then parses that mapping into its recipe class (`PretrainRecipe.parse(mapping)`), which
names a misspelt key and the nearest valid one in one line. The `train:` block is the trainer's own TrainConfig.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from blip.defaults import ALPHA, CAPTION_WORDS, K_TEST, MOMENTUM, PROMPT, QUEUE_SIZE, TEXT_TOKENS
from blip.errors import BlipError
from blip.training.contrastive import ITM_NEGATIVES
from blip.training.trainer import TrainConfig

R = TypeVar("R")


def load_recipe(path: str, sets: list[str]) -> dict:
    """Read a YAML recipe and apply dotted KEY=VALUE overrides (the mapping a task's `parse` then checks)."""
    file = Path(path)
    if not file.is_file():
        raise BlipError(f"{path}: no such recipe")
    try:
        recipe = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise BlipError(f"{path}: not valid YAML ({e})") from None
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise BlipError(f"--set {item!r}: expected KEY=VALUE")
        node = recipe
        *parents, leaf = key.split(".")
        if "overrides" in parents:  # model config overrides are keyed by dotted field names: {vision.depth: 3}
            cut = parents.index("overrides") + 1
            parents, leaf = parents[:cut], ".".join(parents[cut:] + [leaf])
        try:
            for name in parents:  # list items by index: data.0.path=...
                node = node[int(name)] if isinstance(node, list) else node.setdefault(name, {})
            place = int(leaf) if isinstance(node, list) else leaf
            new = yaml.safe_load(value)
            old = node[place] if isinstance(node, list) else node.get(place)
            # A map given for a map is merged into it: `--set model.overrides={text.layers: 2}` keeps the others.
            node[place] = _merged(old, new) if isinstance(old, dict) and isinstance(new, dict) else new
        except (IndexError, ValueError, TypeError, AttributeError):
            raise BlipError(f"--set {item!r}: no such place in the recipe") from None
    return recipe


def _merged(old: dict, new: dict) -> dict:
    """`old` with `new`'s entries put in, maps inside maps merged the same way."""
    out = dict(old)
    for k, v in new.items():
        out[k] = _merged(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def parse(cls: type[R], value: Any, where: str = "") -> R:
    """`value` (a mapping, or already a `cls`) as a `cls`, checking every key at every level.

    A nested recipe given as a map is applied over the field's default (the fine-tunes' `train:` keeps their
    cosine schedule unless the map says otherwise); lists of recipes are parsed item by item.
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise BlipError(f"recipe {where or 'file'} must be a map of keys, got {type(value).__name__} {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise BlipError(_unknown(str(key), list(fields), where))
    missing = [
        name
        for name, f in fields.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise BlipError(f"the recipe lacks {', '.join(_at(where, m) for m in missing)}")
    kwargs = {}
    for key, item in value.items():
        f, place = fields[key], _at(where, key)
        kind = f.metadata["recipe_by"](value) if "recipe_by" in f.metadata else hints[key]
        kwargs[key] = _typed(kind, item, place, _default(f))
    return cls(**kwargs)


def _typed(kind: Any, value: Any, where: str, default: Any = None) -> Any:
    """One value as the field type `kind` says: recipes parsed, numbers written as strings read (YAML 1.1 reads
    5e-4 as a string), anything else as given."""
    options = [a for a in typing.get_args(kind) if a is not type(None)] if typing.get_origin(kind) in _UNIONS else []
    if value is None and options:
        return None
    if len(options) == 1:
        kind = options[0]
    if dataclasses.is_dataclass(kind):
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            value = {**_shallow(default), **value}
        return parse(kind, value, where)
    if typing.get_origin(kind) is list and isinstance(value, list):
        (item,) = typing.get_args(kind)
        return [_typed(item, v, _at(where, str(i))) for i, v in enumerate(value)]
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(float(value)) if kind is float else int(value)
        except ValueError:
            raise BlipError(f"{where} must be a number, got {value!r}") from None
    return value


_UNIONS = (typing.Union, type(int | None))


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _shallow(obj: Any) -> dict[str, Any]:
    """A dataclass's init fields as a map (values kept as they are), to apply a partial map over."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _unknown(key: str, valid: list[str], where: str) -> str:
    """The one line that names an unknown key, where it is, and the nearest valid key."""
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {_at(where, near[0])!r}?" if near else f"valid keys here: {', '.join(valid)}"
    return f"unknown recipe key {_at(where, key)!r} ({hint})"


def to_dict(recipe: Any) -> Any:
    """A recipe as plain data without its unset (None) entries: what OUT/recipe.json records of a run."""
    if dataclasses.is_dataclass(recipe):
        return {
            f.name: to_dict(getattr(recipe, f.name))
            for f in dataclasses.fields(recipe)
            if getattr(recipe, f.name) is not None
        }
    if isinstance(recipe, list):
        return [to_dict(v) for v in recipe]
    if isinstance(recipe, dict):
        return {k: to_dict(v) for k, v in recipe.items()}
    return recipe


class Recipe:
    """What every recipe class can do: be parsed from a mapping."""

    @classmethod
    def parse(cls: type[R], value: Any, where: str = "") -> R:
        """A mapping (or an instance, returned as it is) as this recipe; unknown keys are one-line errors."""
        return parse(cls, value, where)


@dataclass(kw_only=True)
class Source(Recipe):
    """One data source: {reader, path, image_root}; webdataset: {reader, urls}; vqa_official: {reader, questions,
    annotations, image_root}. The reader defaults to the task's (pretrain_json, vqa, nlvr2)."""

    reader: str | None = None
    path: str | None = None
    image_root: str | None = None  # image paths in the annotation are relative to this folder ("" when unset)
    urls: str | list[str] | None = None
    questions: str | None = None
    annotations: str | None = None

    def needs(self, *names: str) -> None:
        """Refuse, in one line, a source that lacks an entry its reader reads."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise BlipError(f"data source {to_dict(self)} lacks {', '.join(missing)}")


@dataclass(kw_only=True)
class ImageRecipe(Recipe):
    """What every training recipe has: data, the `train:` block, the tokenizer and the training transform."""

    data: list[Source] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer: str | None = None  # vocab.txt / tokenizer.json / folder, when the checkpoint has none
    max_words: int = CAPTION_WORDS
    # The training transform: the reference's random crop scale, RandAugment and flip by default. Recipes whose
    # texts state positions and counts (the synthetic world) turn crops and RandAugment off.
    crop_scale_min: float = 0.5
    randaug: bool = True
    flip: bool | None = None  # default: flip, unless the dataset mirrors pairs itself

    def blind_flip(self) -> bool:
        """Whether images are flipped without touching their text."""
        return True if self.flip is None else self.flip


@dataclass(kw_only=True)
class ItmNegatives:
    """How ITM draws its negatives: by ITC similarity (the paper's hard negatives), or uniformly from the batch."""

    # "uniform" is for worlds whose captions are so alike that the most similar other text is often true of the
    # image too: in the synthetic world half of the similarity-drawn negatives are (BENCHMARKS.md), and ITM stays at
    # its prior; real web data is not like that.
    itm_negatives: str = "similarity"

    def __post_init__(self) -> None:
        if self.itm_negatives not in ITM_NEGATIVES:
            raise BlipError(f"itm_negatives: {' or '.join(ITM_NEGATIVES)}, not {self.itm_negatives!r}")


@dataclass(kw_only=True)
class Mirrored:
    """Pair datasets may mirror a pair instead (flip the image and swap left/right in its text)."""

    mirror: bool = False

    def blind_flip(self) -> bool:
        """No blind flip when the dataset mirrors pairs itself (the caption must swap "left" and "right" too)."""
        return (not self.mirror) if self.flip is None else self.flip  # type: ignore[attr-defined]


@dataclass(kw_only=True)
class ModelSpec(Recipe):
    """Pretraining's `model:` block: a preset, its input size and dotted field overrides, an optional init."""

    preset: str = "base"
    image_size: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None  # a checkpoint whose matching weights (momentum encoders and queues too) start the run
    vision_init: str | None = None  # image-only ViT weights (the paper's DeiT; the demo's shipped tower) to start from

    def __post_init__(self) -> None:
        from blip.model.config import BlipConfig

        valid = [
            f"{name}.{k}" if isinstance(v, dict) else name
            for name, v in BlipConfig().to_dict().items()
            for k in (v if isinstance(v, dict) else [name])
        ]
        for key in self.overrides:
            if key not in valid:
                raise BlipError(_unknown(key, valid, "model.overrides"))


@dataclass(kw_only=True)
class PretrainRecipe(ItmNegatives, Mirrored, ImageRecipe):
    """ITC + ITM + LM pretraining of a fresh model (configs/pretrain_*.yaml)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: str = "bert-base-uncased"  # or a file/folder, or from_data: a whole-word vocabulary of the texts
    queue_size: int = QUEUE_SIZE
    momentum: float = MOMENTUM
    alpha: float = ALPHA
    alpha_ramp_epochs: float = 2  # alpha ramps up over these epochs (0: no ramp)
    max_tokens: int = 30
    crop_scale_min: float = 0.2


def _finetune_train() -> TrainConfig:
    """The fine-tunes' schedule unless a recipe says otherwise: the reference's per-epoch cosine to 0."""
    return TrainConfig(schedule="cosine", min_lr=0.0)


@dataclass(kw_only=True)
class FinetuneRecipe(ImageRecipe):
    """What every fine-tune has: the checkpoint it starts from and its input size."""

    TASK: ClassVar[str]
    init: str | None = None  # required to run; a chain's recipes get it from the stage before
    image_size: int | None = None  # resample the position embeddings to this input size
    train: TrainConfig = field(default_factory=_finetune_train)


@dataclass(kw_only=True)
class CaptionRecipe(Mirrored, FinetuneRecipe):
    """Captioning: the LM loss of prompt + caption (configs/caption_*.yaml)."""

    TASK: ClassVar[str] = "caption"
    prompt: str = PROMPT
    max_tokens: int = 40


@dataclass(kw_only=True)
class RetrievalRecipe(ItmNegatives, Mirrored, FinetuneRecipe):
    """Retrieval: ITC with an id queue + ITM with hard negatives (configs/retrieval_*.yaml)."""

    TASK: ClassVar[str] = "retrieval"
    queue_size: int = QUEUE_SIZE
    momentum: float = MOMENTUM
    alpha: float = ALPHA
    max_tokens: int = TEXT_TOKENS


@dataclass(kw_only=True)
class VQARecipe(FinetuneRecipe):
    """VQA: the weighted answer LM loss (configs/vqa_*.yaml); questions are cut to TEXT_TOKENS."""

    TASK: ClassVar[str] = "vqa"
    drop_path: float = 0.1  # the reference's BLIP_VQA builds its ViT with stochastic depth 0.1
    max_words: int = 50
    max_answer_tokens: int | None = None  # default: the text model's max_positions


@dataclass(kw_only=True)
class NLVR2Recipe(FinetuneRecipe):
    """NLVR2: the twin-branch classifier (configs/nlvr2*.yaml)."""

    TASK: ClassVar[str] = "nlvr2"
    max_words: int = 40
    max_tokens: int = 40
    # The branches merge from text layer 6 as in the reference, or where an NLVR2 init checkpoint's merge layers
    # start; this overrides both (shallow models merge nowhere otherwise).
    nlvr_merge_from: int | None = None


FINETUNE_RECIPES: dict[str, type[FinetuneRecipe]] = {
    r.TASK: r for r in (CaptionRecipe, RetrievalRecipe, VQARecipe, NLVR2Recipe)
}


def finetune_recipe(task: str) -> type[FinetuneRecipe]:
    """The recipe class of a fine-tuning task."""
    if task not in FINETUNE_RECIPES:
        raise BlipError(f"no fine-tuning task {task!r}; known: {', '.join(FINETUNE_RECIPES)}")
    return FINETUNE_RECIPES[task]


@dataclass(kw_only=True)
class CapFiltConfig(Recipe):
    """What to bootstrap and how (defaults: the paper's nucleus sampling and the maintainers' 0.5 threshold)."""

    out: str = "runs/capfilt"  # a chain's CapFilt writes into its own stage folder instead
    web: list[str] = field(default_factory=list)  # JSON lists / CSV / JSONL of {image, caption}, or tar shards
    image_root: str | None = None  # None: image paths are relative to their annotation file's folder
    human: list[str] = field(default_factory=list)  # clean annotated pairs, copied into the result as they are
    captions_per_image: int = 1
    # The paper's Table 2 compares the two: nucleus sampling (its choice: more diverse, noisier captions) and beam.
    strategy: str = "nucleus"
    num_beams: int = 3
    top_p: float = 0.9
    repetition_penalty: float | None = None  # None: the reference's, 1.1 for nucleus sampling and 1.0 for beam
    max_length: int = 30
    min_length: int = 5
    prompt: str = PROMPT
    threshold: float = 0.5
    max_words: int = CAPTION_WORDS
    unit_size: int = 512
    batch_size: int = 32
    seed: int = 0
    shard_size: int = 10000
    workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in ("nucleus", "beam"):
            raise BlipError(f"capfilt strategy: nucleus or beam, not {self.strategy!r}")


EVALUATED = ("retrieval", "caption")


@dataclass(kw_only=True)
class EvalStep(Recipe):
    """One evaluation of a chain: zero-shot retrieval, or a fine-tune (recipe of the task) then its metric."""

    task: str
    data: str  # a Karpathy-style test file
    image_root: str = ""
    finetune: FinetuneRecipe | None = field(
        default=None, metadata={"recipe_by": lambda entry: finetune_recipe(str(entry.get("task"))) | None}
    )
    k_test: int = K_TEST
    meteor: bool = True  # caption: METEOR needs Java and is slow

    def __post_init__(self) -> None:
        if self.task not in EVALUATED:
            raise BlipError(f"the chain evaluates {' or '.join(EVALUATED)}, not {self.task!r}")


@dataclass(kw_only=True)
class ChainRecipe(Recipe):
    """The CapFilt chain (configs/chain_*.yaml): pretrain noisy -> captioner and filter -> CapFilt -> pretrain on
    the bootstrapped data -> evaluate both pretrained models."""

    out: str
    pretrain: PretrainRecipe
    captioner: CaptionRecipe
    filter: RetrievalRecipe
    capfilt: CapFiltConfig
    evaluate: list[EvalStep] = field(default_factory=list)
