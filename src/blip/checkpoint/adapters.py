"""Checkpoint formats as adapters: each recognises its files and maps their names and config to the project's.

An adapter acts on a state dict and a config.json from outside the model (the model is never changed for a
format). Each format is one declarative table, name renames and config fields, read in one direction on import
and in the other on export, so an import followed by an export gives back what was read.

Internal parameter names ARE the reference BLIP names, so the reference (and LAVIS, which kept them) format needs
no renames; transformers renames only the vision tower.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import torch

from blip.checkpoint.shapes import infer_config
from blip.errors import CheckpointError
from blip.model.config import TASK_PARTS, BlipConfig

OWN_FORMAT = "blip"
StateDict = dict[str, torch.Tensor]
Meta = dict[str, Any]


@dataclass(frozen=True)
class Field:
    """A config.json field (dotted path) and the BlipConfig field (dotted path) it carries."""

    theirs: str
    ours: str
    read: bool = True  # False: written on export, never read on import (the table says why)
    absent: Any = None  # the format's own default where a file is silent; None: the value the shapes give


@dataclass(frozen=True)
class Adapter:
    """A checkpoint format: `renames` are (their name, our name) templates ({i} a layer index, a trailing '.' a
    prefix), `fields` its config.json, `constants` fixed config.json entries it writes."""

    name: str
    renames: tuple[tuple[str, str], ...] = ()
    fields: tuple[Field, ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()

    def detect(self, sd: StateDict, meta: Meta | None) -> bool:
        """Whether these tensors (and a folder's config.json, None for a single file) are of this format."""
        raise NotImplementedError

    def keys_to_ours(self, sd: StateDict) -> StateDict:
        """The state dict under the project's names."""
        return {_rename(k, _rules(self.renames, False)): v for k, v in sd.items()}

    def keys_from_ours(self, sd: StateDict) -> StateDict:
        """The state dict under this format's names."""
        return {_rename(k, _rules(self.renames, True)): v for k, v in sd.items()}

    def config(self, sd: StateDict, meta: Meta | None) -> BlipConfig:
        """BlipConfig of our-named tensors: the shapes, overridden by the fields a config.json has (a single file,
        meta None, has only the shapes)."""
        cfg = infer_config(sd)
        if meta is None:
            return cfg
        values = {}
        for f in (f for f in self.fields if f.read):
            value = _get(meta, f.theirs)
            value = f.absent if value is None else value
            if value is not None:
                values[f.ours] = value
        return cfg.replace(**values)

    def to_ours(self, sd: StateDict, meta: Meta | None) -> tuple[StateDict, BlipConfig]:
        """Our-named tensors and the config they need."""
        sd = self.keys_to_ours(sd)
        return sd, self.config(sd, meta)

    def from_ours(self, sd: StateDict, cfg: BlipConfig, task: str | None = None) -> tuple[StateDict, Meta]:
        """Tensors and config.json of this format for our-named tensors of config `cfg`."""
        raise CheckpointError(f"{self.name} checkpoints are read, not written; write blip or transformers")

    def tokenizer_files(self, cfg: BlipConfig) -> dict[str, Meta]:
        """JSON files this format keeps beside a tokenizer, by name."""
        return {}

    def write_config(self, cfg: BlipConfig) -> Meta:
        """config.json from the table: the constants and every field from our config."""
        meta: Meta = {}
        for path, value in self.constants:
            _set(meta, path, value)
        ours = cfg.to_dict()
        for f in self.fields:
            _set(meta, f.theirs, _get(ours, f.ours))
        return meta


@functools.cache
def _rules(renames: tuple[tuple[str, str], ...], inverse: bool) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Regex rules from (their, our) name templates, their -> our unless inverse."""
    rules = []
    for theirs, ours in renames:
        src, dst = (ours, theirs) if inverse else (theirs, ours)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("" if src.endswith(".") else "$")
        rules.append((re.compile(pattern), dst.replace("{i}", r"\1")))
    return tuple(rules)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def _get(d: Meta, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _set(d: Meta, path: str, value: Any) -> None:
    *sections, name = path.split(".")
    for part in sections:
        d = d.setdefault(part, {})
    d[name] = value


class ReferenceAdapter(Adapter):
    """The reference's .pth (and LAVIS's, the same names), and the trainer's checkpoints: our names, no config."""

    def detect(self, sd: StateDict, meta: Meta | None) -> bool:
        """Reference-named tensors: a visual_encoder."""
        return any(k.startswith("visual_encoder.") for k in sd)


class OwnAdapter(Adapter):
    """The project's folder: our names, and the whole BlipConfig in config.json."""

    def detect(self, sd: StateDict, meta: Meta | None) -> bool:
        """A folder whose config.json says it is ours."""
        return meta is not None and meta.get("format") == OWN_FORMAT

    def config(self, sd: StateDict, meta: Meta | None) -> BlipConfig:
        """The saved config, unknown keys an error."""
        try:
            return BlipConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"config.json of a blip folder: no valid config ({type(e).__name__}: {e})") from None

    def from_ours(self, sd: StateDict, cfg: BlipConfig, task: str | None = None) -> tuple[StateDict, Meta]:
        """Every tensor, and the config as it is (the format holds any parts, so `task` is not needed)."""
        return sd, {"format": OWN_FORMAT, "version": 1, "config": cfg.to_dict()}


_HF_ARCH = {
    "caption": "BlipForConditionalGeneration",
    "retrieval": "BlipForImageTextRetrieval",
    "vqa": "BlipForQuestionAnswering",
}
# The tensors of each part; a transformers class holds its task's parts and the vision tower, no ITC temperature.
_PART_PREFIXES = {
    "text_encoder": ("text_encoder.",),
    "text_decoder": ("text_decoder.",),
    "itc": ("vision_proj.", "text_proj."),
    "itm": ("itm_head.",),
}


class TransformersAdapter(Adapter):
    """transformers' BLIP classes: one class per task, the vision tower renamed."""

    def detect(self, sd: StateDict, meta: Meta | None) -> bool:
        """transformers-named tensors: a vision_model."""
        return any(k.startswith("vision_model.") for k in sd)

    def from_ours(self, sd: StateDict, cfg: BlipConfig, task: str | None = None) -> tuple[StateDict, Meta]:
        """The tensors and config of the transformers class for `task` (by default the one the parts make)."""
        if task is None:
            task = next((t for t in ("vqa", "caption", "retrieval") if set(TASK_PARTS[t]) == set(cfg.parts)), None)
        if task not in _HF_ARCH:
            raise CheckpointError(f"model has parts {cfg.parts}; pass task=caption, retrieval or vqa to export one")
        needed = set(TASK_PARTS[task])
        if not needed <= set(cfg.parts):
            raise CheckpointError(
                f"cannot export a {task} model: it needs {sorted(needed)}, model has {list(cfg.parts)}"
            )
        keep = ("visual_encoder.",) + tuple(prefix for part in sorted(needed) for prefix in _PART_PREFIXES[part])
        sd = self.keys_from_ours({k: v for k, v in sd.items() if k.startswith(keep)})
        meta = {"architectures": [_HF_ARCH[task]], **self.write_config(cfg)}
        # transformers records the tensors' dtype, and loads in it when asked for dtype="auto".
        meta["dtype"] = str(next(iter(sd.values())).dtype).removeprefix("torch.")
        return sd, meta

    def tokenizer_files(self, cfg: BlipConfig) -> dict[str, Meta]:
        """tokenizer_config.json: BERT's tokenizer with BLIP's [DEC] and [ENC]."""
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": cfg.text.max_positions,
            "bos_token": "[DEC]",
            "additional_special_tokens": ["[ENC]"],
        }
        return {"tokenizer_config.json": config}


REFERENCE = ReferenceAdapter("reference")
OWN = OwnAdapter(OWN_FORMAT)
TRANSFORMERS = TransformersAdapter(
    "transformers",
    renames=(
        ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
        ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
        ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
        ("vision_model.post_layernorm.", "visual_encoder.norm."),
        ("vision_model.encoder.layers.{i}.self_attn.projection.", "visual_encoder.blocks.{i}.attn.proj."),
        ("vision_model.encoder.layers.{i}.self_attn.qkv.", "visual_encoder.blocks.{i}.attn.qkv."),
        ("vision_model.encoder.layers.{i}.layer_norm1.", "visual_encoder.blocks.{i}.norm1."),
        ("vision_model.encoder.layers.{i}.layer_norm2.", "visual_encoder.blocks.{i}.norm2."),
        ("vision_model.encoder.layers.{i}.mlp.", "visual_encoder.blocks.{i}.mlp."),
    ),
    fields=(
        Field("image_text_hidden_size", "embed_dim"),
        Field("vision_config.hidden_size", "vision.width"),
        Field("vision_config.intermediate_size", "vision.mlp_dim"),
        Field("vision_config.num_hidden_layers", "vision.depth"),
        Field("vision_config.num_attention_heads", "vision.heads"),
        Field("vision_config.image_size", "vision.image_size"),
        Field("vision_config.patch_size", "vision.patch_size"),
        Field("vision_config.layer_norm_eps", "vision.layer_norm_eps", absent=1e-5),  # transformers' default
        Field("text_config.vocab_size", "text.vocab_size"),
        Field("text_config.hidden_size", "text.hidden"),
        Field("text_config.encoder_hidden_size", "vision.width", read=False),  # the cross-attention's input
        Field("text_config.intermediate_size", "text.intermediate"),
        Field("text_config.num_hidden_layers", "text.layers"),
        Field("text_config.num_attention_heads", "text.heads"),
        Field("text_config.max_position_embeddings", "text.max_positions"),
        Field("text_config.layer_norm_eps", "text.layer_norm_eps", absent=1e-12),  # transformers' default
        # Training values are kept at the reference's whatever a file says (the released transformers files say
        # 0.0): VQA's answer ranking scores with the label-smoothed loss, as the reference's rank_answer does.
        Field("text_config.hidden_dropout_prob", "text.dropout", read=False),
        Field("text_config.attention_probs_dropout_prob", "text.attention_dropout", read=False),
        Field("label_smoothing", "label_smoothing", read=False),
        Field("text_config.label_smoothing", "label_smoothing", read=False),
        # Special ids come from the tokenizer, the truth for them (load_checkpoint); [DEC] starts a caption.
        Field("text_config.pad_token_id", "text.pad_id", read=False),
        Field("text_config.bos_token_id", "text.dec_id", read=False),
        Field("text_config.eos_token_id", "text.sep_id", read=False),
        Field("text_config.sep_token_id", "text.sep_id", read=False),
    ),
    constants=(
        ("model_type", "blip"),
        ("vision_config.model_type", "blip_vision_model"),
        ("text_config.model_type", "blip_text_model"),
    ),
)
# Asked in this order: a folder's own config.json first, then the names the tensors have.
ADAPTERS: tuple[Adapter, ...] = (OWN, TRANSFORMERS, REFERENCE)


def detect(sd: StateDict, meta: Meta | None, where: object) -> Adapter:
    """The adapter of the first format that recognises a checkpoint; a one-line error when none does."""
    for adapter in ADAPTERS:
        if adapter.detect(sd, meta):
            return adapter
    shown = ", ".join(list(sd)[:3]) or "no tensors"
    raise CheckpointError(
        f"{where}: not a BLIP checkpoint: no known format ({', '.join(a.name for a in ADAPTERS)}) recognises "
        f"its tensors ({shown}); a BLIP has visual_encoder.* (reference, LAVIS) or vision_model.* (transformers)"
    )


def adapter_named(name: str) -> Adapter:
    """The adapter of a format by its name."""
    for adapter in ADAPTERS:
        if adapter.name == name:
            return adapter
    raise CheckpointError(f"unknown checkpoint format {name!r}; known: {', '.join(a.name for a in ADAPTERS)}")


def from_transformers_keys(sd: StateDict) -> StateDict:
    """Rename a transformers BLIP state dict to the reference names."""
    return TRANSFORMERS.keys_to_ours(sd)


def to_transformers_keys(sd: StateDict) -> StateDict:
    """Rename a reference-named state dict to transformers' names."""
    return TRANSFORMERS.keys_from_ours(sd)


def config_from_transformers(hf: Meta, sd: StateDict) -> BlipConfig:
    """BlipConfig from a transformers config.json; eps and sizes from the file, parts from the weights."""
    return TRANSFORMERS.config(sd, hf)
