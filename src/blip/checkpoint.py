"""One checkpoint loader with a key map per format: reference .pth, transformers folders, and the project's own.

Internal parameter names ARE the reference BLIP names, so the reference format needs no map; transformers renames
only the vision tower (_VISION_NAMES below). Nothing is unpickled beyond tensors: safetensors, or
torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blip.errors import CheckpointError
from blip.model.blip import BlipModel
from blip.model.config import PARTS, TASK_PARTS, BlipConfig, TextConfig, VisionConfig, for_task
from blip.model.vision import resample_pos_embed
from blip.tokenizer import Tokenizer

OWN_FORMAT = "blip"

# (transformers name, reference name) for the vision tower, the only part transformers renames; {i} is a block.
_VISION_NAMES = [
    ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
    ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
    ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
    ("vision_model.post_layernorm.", "visual_encoder.norm."),
    ("vision_model.encoder.layers.{i}.self_attn.projection.", "visual_encoder.blocks.{i}.attn.proj."),
    ("vision_model.encoder.layers.{i}.self_attn.qkv.", "visual_encoder.blocks.{i}.attn.qkv."),
    ("vision_model.encoder.layers.{i}.layer_norm1.", "visual_encoder.blocks.{i}.norm1."),
    ("vision_model.encoder.layers.{i}.layer_norm2.", "visual_encoder.blocks.{i}.norm2."),
    ("vision_model.encoder.layers.{i}.mlp.", "visual_encoder.blocks.{i}.mlp."),
]


def _rule(src: str, dst: str) -> tuple[str, str]:
    """A regex rule from a name template: a trailing '.' matches a prefix, otherwise the whole name."""
    pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("" if src.endswith(".") else "$")
    return pattern, dst.replace("{i}", r"\1")


_HF_TO_REF = [_rule(hf, ref) for hf, ref in _VISION_NAMES]
_REF_TO_HF = [_rule(ref, hf) for hf, ref in _VISION_NAMES]
# Training state a checkpoint may carry that an inference model does not use: momentum encoders, feature queues,
# BERT's position_ids buffer and pooler.
_TRAINING_ONLY = re.compile(r"(^[a-z_]+_m\.|_queue$|^queue_ptr$|^ptr_queue$|\.position_ids$|\.pooler\.)")
_HF_ARCH = {
    "caption": "BlipForConditionalGeneration",
    "retrieval": "BlipForImageTextRetrieval",
    "vqa": "BlipForQuestionAnswering",
}


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


@dataclass
class LoadReport:
    """What a load did: format, unused keys, keys filled by a documented default or allowed to be missing."""

    format: str
    ignored: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)  # training state (momentum encoders, queues) a fine-tune kept


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin (weights only, reference {'model': ...} unwrapped) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            sd: Any = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - weights_only refuses pickled code with an UnpicklingError subclass
        raise CheckpointError(f"{path}: not a tensors-only checkpoint ({type(e).__name__}: {e})") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if sd and all(
        k.startswith("model.") for k in sd
    ):  # a fine-tuning run's checkpoint: its loss module wraps the model
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    return sd


def from_transformers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers BLIP state dict to the reference names."""
    return {_rename(k, _HF_TO_REF): v for k, v in sd.items()}


def to_transformers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference-named state dict to transformers' names."""
    return {_rename(k, _REF_TO_HF): v for k, v in sd.items()}


def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max(int(m.group(1)) for k in sd if (m := pattern.match(k)))


def infer_config(sd: dict[str, torch.Tensor]) -> BlipConfig:
    """Architecture from tensor shapes (reference names); heads assume 64-wide heads, as every released BLIP."""
    try:
        pos = sd["visual_encoder.pos_embed"]
        patch = sd["visual_encoder.patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError("not a BLIP checkpoint: no visual_encoder.pos_embed / patch_embed weights") from None
    width, patch_size = pos.shape[-1], patch.shape[-1]
    grid = math.isqrt(pos.shape[1] - 1)
    vision = VisionConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        width=width,
        depth=_count_layers(sd, "visual_encoder.blocks."),
        heads=max(1, width // 64),
        mlp_dim=sd["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0],
    )
    parts = [p for p in PARTS if _has_part(sd, p)]
    text_prefix = next(
        (p for p in ("text_encoder.", "text_decoder.bert.") if f"{p}embeddings.word_embeddings.weight" in sd), None
    )
    if text_prefix is None:
        raise CheckpointError("not a BLIP checkpoint: no text_encoder or text_decoder word embeddings")
    words = sd[f"{text_prefix}embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden=hidden,
        layers=_count_layers(sd, f"{text_prefix}encoder.layer."),
        heads=max(1, hidden // 64),
        intermediate=sd[f"{text_prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_positions=sd[f"{text_prefix}embeddings.position_embeddings.weight"].shape[0],
    )
    key = "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"
    # A VQA decoder exists beside an encoder and no ITC heads (it reads the question's states, not the image).
    decoder_input = "question" if key in sd and "text_encoder" in parts and "itc" not in parts else "image"
    embed_dim = sd["vision_proj.weight"].shape[0] if "vision_proj.weight" in sd else 256
    nlvr = "cls_head.0.weight" in sd
    return BlipConfig(
        vision=vision,
        text=text,
        embed_dim=embed_dim,
        parts=tuple(parts),
        decoder_input=decoder_input,
        nlvr=nlvr,
        nlvr_merge_from=nlvr_merge_from(sd, text.layers) or 6,
    )


def nlvr_merge_from(sd: dict[str, torch.Tensor], layers: int) -> int | None:
    """First NLVR2 merge layer of a twin-branch checkpoint (its layer count when none merges); None if not twin."""
    if not any(".crossattention.self0." in k for k in sd):
        return None
    pattern = re.compile(r"^text_encoder\.encoder\.layer\.(\d+)\.crossattention\.output\.merge_layer\.")
    return min((int(m.group(1)) for k in sd if (m := pattern.match(k))), default=layers)


def _has_part(sd: dict[str, torch.Tensor], part: str) -> bool:
    marker = {
        "text_encoder": "text_encoder.embeddings.word_embeddings.weight",
        "text_decoder": "text_decoder.bert.embeddings.word_embeddings.weight",
        "itc": "vision_proj.weight",
        "itm": "itm_head.weight",
    }[part]
    return marker in sd


def config_from_transformers(hf: dict[str, Any], sd: dict[str, torch.Tensor]) -> BlipConfig:
    """BlipConfig from a transformers config.json; eps and sizes from the file, parts from the weights."""
    v, t = hf.get("vision_config", {}), hf.get("text_config", {})
    shapes = infer_config(sd)
    vision = VisionConfig(
        image_size=v.get("image_size", shapes.vision.image_size),
        patch_size=v.get("patch_size", shapes.vision.patch_size),
        width=v.get("hidden_size", shapes.vision.width),
        depth=v.get("num_hidden_layers", shapes.vision.depth),
        heads=v.get("num_attention_heads", shapes.vision.heads),
        mlp_dim=v.get("intermediate_size", shapes.vision.mlp_dim),
        layer_norm_eps=v.get("layer_norm_eps", 1e-5),  # transformers' default when the file is silent
    )
    text = TextConfig(
        vocab_size=t.get("vocab_size", shapes.text.vocab_size),
        hidden=t.get("hidden_size", shapes.text.hidden),
        layers=t.get("num_hidden_layers", shapes.text.layers),
        heads=t.get("num_attention_heads", shapes.text.heads),
        intermediate=t.get("intermediate_size", shapes.text.intermediate),
        max_positions=t.get("max_position_embeddings", shapes.text.max_positions),
        layer_norm_eps=t.get("layer_norm_eps", 1e-12),
    )
    return BlipConfig(
        vision=vision,
        text=text,
        embed_dim=hf.get("image_text_hidden_size", shapes.embed_dim),
        parts=shapes.parts,
        decoder_input=shapes.decoder_input,
    )


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


def _resolve(source: str | Path) -> Path:
    """A local path, or a download of a URL or a Hugging Face Hub id with a clear error when offline."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.startswith(("http://", "https://")):
        target = Path(torch.hub.get_dir()) / "blip" / text.rsplit("/", 1)[-1]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(text, str(target), progress=True)
            except Exception as e:  # noqa: BLE001 - any network failure is one message for the user
                raise CheckpointError(f"{text}: download failed ({type(e).__name__}: {e})") from None
        return target
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise CheckpointError(f"{text}: no such path; install huggingface_hub to download Hub models") from None
        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{text}: no such path, and downloading it from the Hugging Face Hub failed "
                f"({type(e).__name__}); download it where there is internet and pass the folder"
            ) from None
    raise CheckpointError(f"{source}: no such file or folder")


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
    path = _resolve(source)
    tok = None
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{path}: folder has no config.json")
        meta = json.loads(cfg_file.read_text())
        weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: folder has no model.safetensors or pytorch_model.bin")
        sd = read_state_dict(weights)
        if meta.get("format") == OWN_FORMAT:
            fmt, inferred = OWN_FORMAT, BlipConfig.from_dict(meta["config"])
        else:
            sd = from_transformers_keys(sd)
            fmt, inferred = "transformers", config_from_transformers(meta, sd)
        if any((path / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
            tok = Tokenizer.from_pretrained(path)
    else:
        sd = read_state_dict(path)
        if any(k.startswith("vision_model.") for k in sd):
            sd, fmt = from_transformers_keys(sd), "transformers"
        else:
            fmt = "reference"
        inferred = infer_config(sd)
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
    model, report = build_and_load(cfg, sd, fmt, allow_missing)
    return model, tok, report


def carry_training_state(module: torch.nn.Module, source: str | Path, report: LoadReport | None = None) -> list[str]:
    """Load into a training module the checkpoint's momentum encoders, queues and pointers of matching name and shape.

    The reference's load_checkpoint loads every matching key with strict=False, so a fine-tune starts from the
    pretrained momentum encoders and (where the queue sizes agree) its feature queues; what the checkpoint lacks
    keeps the module's own initialisation. Returns (and adds to `report.carried`) the names loaded.
    """
    path = _resolve(source)
    if path.is_dir():
        weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: folder has no model.safetensors or pytorch_model.bin")
        path = weights
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


def _dedupe(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: the LM head's tied aliases are dropped (loading re-ties them), any other
    shared tensor (the pretraining encoder/decoder sharing) is stored under each name."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            if k.endswith(("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")):
                continue
            v = v.clone()
        seen.add(key)
        out[k] = v.detach().contiguous()
    return out


def _save_tensors(sd: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with the permissions every other output gets (it writes 0600 whatever the umask)."""
    save_file(_dedupe(sd), str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def save_pretrained(model: BlipModel, tokenizer: Tokenizer | None, folder: str | Path) -> None:
    """Write the project's own format: config.json, model.safetensors and the tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"format": OWN_FORMAT, "version": 1, "config": model.cfg.to_dict()}, indent=2)
    )
    _save_tensors(model.state_dict(), folder / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(folder)


def export_transformers(
    model: BlipModel, tokenizer: Tokenizer | None, folder: str | Path, task: str | None = None
) -> str:
    """Write a folder transformers' BLIP classes load; returns the architecture name written."""
    cfg = model.cfg
    if task is None:
        task = next((t for t in ("vqa", "caption", "retrieval") if set(TASK_PARTS[t]) == set(cfg.parts)), None)
        if task is None:
            raise CheckpointError(f"model has parts {cfg.parts}; pass task=caption, retrieval or vqa to export one")
    needed = set(TASK_PARTS[task])
    if not needed <= set(cfg.parts):
        raise CheckpointError(f"cannot export a {task} model: it needs {sorted(needed)}, model has {list(cfg.parts)}")
    keep = tuple(
        p
        for p in ("text_encoder", "text_decoder", "vision_proj", "text_proj", "itm_head")
        if (p in needed)
        or (p in ("vision_proj", "text_proj") and "itc" in needed)
        or (p == "itm_head" and "itm" in needed)
    )
    sd = {k: v for k, v in model.state_dict().items() if k.startswith(("visual_encoder.",) + keep)}
    sd = {k: v for k, v in to_transformers_keys(sd).items() if k != "temp"}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v, t = cfg.vision, cfg.text
    hf = {
        "architectures": [_HF_ARCH[task]],
        "model_type": "blip",
        "image_text_hidden_size": cfg.embed_dim,
        "label_smoothing": cfg.label_smoothing,
        "vision_config": {
            "hidden_size": v.width,
            "intermediate_size": v.mlp_dim,
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "layer_norm_eps": v.layer_norm_eps,
            "model_type": "blip_vision_model",
        },
        "text_config": {
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden,
            "encoder_hidden_size": v.width,
            "intermediate_size": t.intermediate,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.max_positions,
            "layer_norm_eps": t.layer_norm_eps,
            "hidden_dropout_prob": t.dropout,
            "attention_probs_dropout_prob": t.attention_dropout,
            "pad_token_id": t.pad_id,
            "bos_token_id": t.dec_id,
            "eos_token_id": t.sep_id,
            "sep_token_id": t.sep_id,
            "label_smoothing": cfg.label_smoothing,
            "model_type": "blip_text_model",
        },
    }
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    _save_tensors(sd, folder / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(folder)
        (folder / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "BertTokenizer",
                    "do_lower_case": True,
                    "model_max_length": t.max_positions,
                    "bos_token": "[DEC]",
                    "additional_special_tokens": ["[ENC]"],
                },
                indent=2,
            )
        )
    return _HF_ARCH[task]
