"""Model shapes as data: dataclasses read from the JSON presets in blip/presets (base, large, tiny)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

# The parts a BLIP model may carry; a checkpoint's keys say which it has.
#   text_encoder: unimodal and image-grounded encoder (BERT with cross-attention)
#   text_decoder: image-grounded decoder with its LM head
#   itc: vision_proj, text_proj and temp;  itm: the 2-way itm_head
PARTS = ("text_encoder", "text_decoder", "itc", "itm")
TASK_PARTS = {
    "caption": ("text_decoder",),
    "retrieval": ("text_encoder", "itc", "itm"),
    "vqa": ("text_encoder", "text_decoder"),
    "pretrain": PARTS,
    "nlvr2": ("text_encoder",),  # with twin cross-attention and the cls_head (BlipConfig.nlvr)
}


@dataclass
class VisionConfig:
    """ViT image encoder shape (timm VisionTransformer)."""

    image_size: int = 384
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    layer_norm_eps: float = 1e-6
    drop_path: float = 0.0
    grad_ckpt_from: int | None = None  # checkpoint blocks from this index on while training
    # Std of the Linear weights at initialisation (timm's trunc-normal 0.02). Narrow models trained from scratch
    # need more: at width 96, 0.02 leaves the [CLS] output almost the same for every input (tiny preset).
    init_std: float = 0.02


@dataclass
class TextConfig:
    """BERT-shaped MED text transformer and its special tokens."""

    vocab_size: int = 30524
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_id: int = 0
    cls_id: int = 101
    sep_id: int = 102
    dec_id: int = 30522
    enc_id: int = 30523
    init_std: float = 0.02  # BERT's initializer_range; see VisionConfig.init_std


@dataclass
class BlipConfig:
    """A whole BLIP model: image encoder, text transformer, which parts it has and the ITC width."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    parts: tuple[str, ...] = PARTS
    # What the decoder cross-attends to: the image tokens, or the question encoder's states (VQA).
    decoder_input: str = "image"
    # NLVR2: the encoder cross-attends to two images through twin branches, and a cls_head classifies [ENC].
    nlvr: bool = False
    # NLVR2 text layers from this index on concatenate the two branches through merge_layer; lower ones average
    # them. The reference hard-codes 6, whatever the depth (a checkpoint's merge_layer keys say where it starts).
    nlvr_merge_from: int = 6
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.parts = tuple(self.parts)
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown model parts {sorted(unknown)}; known: {PARTS}")
        if self.decoder_input not in ("image", "question"):
            raise ValueError(f"decoder_input must be 'image' or 'question', not {self.decoder_input!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["parts"] = list(self.parts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlipConfig:
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        return cls(**d)

    def replace(self, **overrides: Any) -> BlipConfig:
        """A copy with top-level fields or dotted `vision.x` / `text.x` fields overridden."""
        d = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            target = d[section] if section else d
            if name not in target:
                raise ValueError(f"unknown config field {key!r}")
            target[name] = value
        return BlipConfig.from_dict(d)


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.name[:-5] for p in resources.files("blip.presets").iterdir() if p.name.endswith(".json"))


def preset(name: str, task: str | None = None, **overrides: Any) -> BlipConfig:
    """Config of a shipped preset (base, large, tiny), optionally restricted to a task's parts."""
    path = resources.files("blip.presets") / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
    cfg = BlipConfig.from_dict(json.loads(path.read_text()))
    if task is not None:
        cfg = for_task(cfg, task)
    return cfg.replace(**overrides) if overrides else cfg


def for_task(cfg: BlipConfig, task: str) -> BlipConfig:
    """cfg restricted to a task's parts (caption, retrieval, vqa, nlvr2, pretrain)."""
    if task not in TASK_PARTS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_PARTS)}")
    return cfg.replace(
        parts=list(TASK_PARTS[task]), decoder_input="question" if task == "vqa" else "image", nlvr=task == "nlvr2"
    )
