"""Loading a checkpoint of any format into a model: its adapter gives our names and config, the model is built,
and the report says what was ignored, defaulted or allowed to be missing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blip.checkpoint.adapters import detect
from blip.checkpoint.files import read_source, read_state_dict, resolve, weights_file
from blip.checkpoint.shapes import nlvr_merge_from
from blip.errors import CheckpointError
from blip.model.blip import BlipModel
from blip.model.config import TASK_PARTS, BlipConfig, for_task
from blip.model.vision import resample_pos_embed
from blip.tokenizer import Tokenizer

# Training state a checkpoint may carry that an inference model does not use: momentum encoders, feature queues,
# BERT's position_ids buffer and pooler.
_TRAINING_ONLY = re.compile(r"(^[a-z_]+_m\.|_queue$|^queue_ptr$|^ptr_queue$|\.position_ids$|\.pooler\.)")


@dataclass
class LoadReport:
    """What a load did: format, unused keys, keys filled by a documented default or allowed to be missing."""

    format: str
    ignored: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)  # training state (momentum encoders, queues) a fine-tune kept


def twin_cross_attention(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy each text-encoder cross-attention into NLVR2's two branches (the reference's NLVR2 initialisation)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("text_encoder.") and ".crossattention.self." in k:
            for i in (0, 1):
                out[k.replace(".crossattention.self.", f".crossattention.self{i}.")] = v.clone()
        elif k.startswith("text_encoder.") and ".crossattention.output.dense." in k:
            for i in (0, 1):
                out[k.replace(".crossattention.output.dense.", f".crossattention.output.dense{i}.")] = v.clone()
        else:
            out[k] = v
    return out


def _tied_groups(model: torch.nn.Module) -> list[set[str]]:
    """Names that share one tensor in the built model (LM head tied to embeddings, shared encoder/decoder)."""
    groups: dict[int, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), set()).add(name)
    return [g for g in groups.values() if len(g) > 1]


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def build_and_load(
    cfg: BlipConfig, sd: dict[str, torch.Tensor], fmt: str, allow_missing: bool | list[str] = False
) -> tuple[BlipModel, LoadReport]:
    """Build a model for cfg, load reference-named `sd` into it, and report.

    Missing weights fail unless allowed: allow_missing=True allows all, a list allows names containing any of its
    strings (e.g. ["cls_head."] when a new head is to be trained).
    """
    model = BlipModel(cfg)
    report = LoadReport(format=fmt)
    own = model.state_dict()
    sd = dict(sd)
    if "visual_encoder.pos_embed" in sd:
        sd["visual_encoder.pos_embed"] = resample_pos_embed(
            sd["visual_encoder.pos_embed"], cfg.vision.image_size, cfg.vision.patch_size
        )
    if cfg.nlvr and not any(".crossattention.self0." in k for k in sd):
        sd = twin_cross_attention(sd)
        report.defaulted.append("NLVR2 branches self0/self1, dense0/dense1 copied from the single cross-attention")
    if "itc" in cfg.parts and "temp" not in sd:
        report.defaulted.append("temp = 0.07 (training only; not in the checkpoint)")
        sd["temp"] = torch.tensor(0.07)
    for name in list(sd):
        if name not in own:
            report.ignored.append(name)
            del sd[name]
    unexpected = [k for k in report.ignored if not _TRAINING_ONLY.search(k)]
    tied = _tied_groups(model)
    missing = [k for k in own if k not in sd and not any(k in g and g & sd.keys() for g in tied)]
    if missing:
        patterns = allow_missing or []
        allowed = missing if allow_missing is True else [k for k in missing if any(p in k for p in patterns)]
        refused = [k for k in missing if k not in allowed]
        if refused:
            hint = f"; keys it has but this model does not use: {_summarise(unexpected)}" if unexpected else ""
            raise CheckpointError(
                f"checkpoint lacks {len(refused)} weights this model ({'+'.join(cfg.parts)}) needs: "
                f"{_summarise(refused)}{hint}"
            )
        report.allowed_missing = allowed
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint shapes do not fit the model: {_summarise(bad, 4)}")
    model.load_state_dict(sd, strict=False)
    model.eval()
    return model, report


def load_checkpoint(
    source: str | Path,
    task: str | None = None,
    image_size: int | None = None,
    config: BlipConfig | None = None,
    overrides: dict[str, Any] | None = None,
    allow_missing: bool | list[str] = False,
    tokenizer: str | Path | Tokenizer | None = None,
) -> tuple[BlipModel, Tokenizer | None, LoadReport]:
    """Load any supported checkpoint; the architecture comes from its config, else from tensor shapes."""
    path = resolve(source)
    meta, sd = read_source(path)
    adapter = detect(sd, meta, path)
    sd, inferred = adapter.to_ours(sd, meta)
    tok = None
    if path.is_dir():
        if any((path / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
            tok = Tokenizer.from_pretrained(path)
    else:
        run_tokenizer = path.parent / "tokenizer"  # a trainer's checkpoint-*.pt: the run keeps its tokenizer there
        if path.name.startswith("checkpoint-") and run_tokenizer.is_dir():
            tok = Tokenizer.from_pretrained(run_tokenizer)
    cfg = config or inferred
    if task is not None:
        if task not in TASK_PARTS:
            raise CheckpointError(f"unknown task {task!r}; known: {', '.join(TASK_PARTS)}")
        cfg = for_task(cfg, task)
    if image_size is not None:
        cfg = cfg.replace(**{"vision.image_size": image_size})
    merge_from = nlvr_merge_from(sd, cfg.text.layers) if cfg.nlvr else None
    if merge_from is not None:  # the weights say where merging starts, whatever a saved config says
        cfg = cfg.replace(nlvr_merge_from=merge_from)
    if overrides:
        cfg = cfg.replace(**overrides)
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_pretrained(tokenizer)
    if tok is not None:
        # The tokenizer is the truth for special ids: a swapped vocabulary must not break "+2 tokens" arithmetic.
        cfg = cfg.replace(
            **{
                "text.pad_id": tok.pad_id,
                "text.cls_id": tok.cls_id,
                "text.sep_id": tok.sep_id,
                "text.dec_id": tok.dec_id,
                "text.enc_id": tok.enc_id,
            }
        )
    model, report = build_and_load(cfg, sd, adapter.name, allow_missing)
    return model, tok, report


def carry_training_state(module: torch.nn.Module, source: str | Path, report: LoadReport | None = None) -> list[str]:
    """Load into a training module the checkpoint's momentum encoders, queues and pointers of matching name and shape.

    The reference's load_checkpoint loads every matching key with strict=False, so a fine-tune starts from the
    pretrained momentum encoders and (where the queue sizes agree) its feature queues; what the checkpoint lacks
    keeps the module's own initialisation. Returns (and adds to `report.carried`) the names loaded.
    """
    path = resolve(source)
    if path.is_dir():
        path = weights_file(path)
    own = module.state_dict()
    carried = []
    for name, tensor in read_state_dict(path).items():
        if name not in own or not _TRAINING_ONLY.search(name) or name.endswith(".position_ids"):
            continue
        if name.endswith("_m.pos_embed"):  # resampled like the online encoder's (the reference does both)
            tensor = resample_pos_embed(tensor, module.cfg.vision.image_size, module.cfg.vision.patch_size)
        if tensor.shape == own[name].shape:
            own[name].copy_(tensor)
            carried.append(name)
    if report is not None:
        report.carried += carried
    return carried
