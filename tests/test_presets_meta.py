"""The shipped base and large presets, built on the meta device, have transformers' BLIP parameter names and shapes.

transformers' `BlipConfig()` defaults are ViT-B/16 at 384 px with a BERT-base text model; the large checkpoints
change only the vision tower (1024 wide, 24 blocks, 16 heads, MLP 4096). Names go through the project's key map.
"""

from __future__ import annotations

import pytest
import torch

from blip.checkpoint import from_transformers_keys
from blip.model.blip import BlipModel
from blip.model.config import preset

LARGE_VISION = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
HF_CLASSES = {
    "caption": "BlipForConditionalGeneration",
    "retrieval": "BlipForImageTextRetrieval",
    "vqa": "BlipForQuestionAnswering",
}


def param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every parameter name (tied aliases included) with its shape."""
    return {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}


def hf_shapes(name: str, task: str) -> dict[str, tuple[int, ...]]:
    """transformers' parameter shapes for a task, under the reference names."""
    import transformers

    vision = LARGE_VISION if name == "large" else {}
    with torch.device("meta"):
        hf = getattr(transformers, HF_CLASSES[task])(transformers.BlipConfig(vision_config=vision))
    shapes = param_shapes(hf)
    renamed = from_transformers_keys(dict.fromkeys(shapes))
    return dict(zip(renamed, shapes.values()))


def ours(name: str, task: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = BlipModel(preset(name, task=task))
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated
    return param_shapes(model)


@pytest.mark.parametrize("name", ["base", "large"])
@pytest.mark.parametrize("task", ["caption", "retrieval"])
def test_preset_equals_transformers(name, task):
    mine = ours(name, task)
    if task == "retrieval":
        # The ITC temperature is a training parameter transformers does not keep (the key map drops it on export).
        assert mine.pop("temp") == ()
    assert mine == hf_shapes(name, task)


def test_base_vqa_equals_transformers():
    assert ours("base", "vqa") == hf_shapes("base", "vqa")


def test_large_vqa_differs_from_transformers_only_where_the_reference_does():
    # transformers gives the answer decoder the vision width; the reference's decoder reads the question encoder's
    # 768-wide states, so its cross-attention key and value take 768 (and so do the released large VQA weights).
    mine, theirs = ours("large", "vqa"), hf_shapes("large", "vqa")
    assert mine.keys() == theirs.keys()
    differ = {k for k in mine if mine[k] != theirs[k]}
    expected = {
        f"text_decoder.bert.encoder.layer.{i}.crossattention.self.{kv}.weight"
        for i in range(12)
        for kv in ("key", "value")
    }
    assert differ == expected
    for k in expected:
        assert (mine[k], theirs[k]) == ((768, 768), (768, 1024))
    encoder_key = "text_encoder.encoder.layer.0.crossattention.self.key.weight"
    assert mine[encoder_key] == theirs[encoder_key] == (768, 1024)


@pytest.mark.parametrize("name", ["base", "large"])
def test_preset_fields_equal_transformers_config(name):
    from transformers import BlipConfig

    hf = BlipConfig(vision_config=LARGE_VISION if name == "large" else {})
    cfg = preset(name)
    v, t = hf.vision_config, hf.text_config
    assert (
        cfg.vision.image_size,
        cfg.vision.patch_size,
        cfg.vision.width,
        cfg.vision.depth,
        cfg.vision.heads,
        cfg.vision.mlp_dim,
    ) == (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size)
    # transformers' text config defaults to 8 heads; the released BLIP configs (and BERT-base) have 12.
    assert (
        cfg.text.vocab_size,
        cfg.text.hidden,
        cfg.text.layers,
        cfg.text.intermediate,
        cfg.text.max_positions,
        cfg.text.heads,
    ) == (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.max_position_embeddings, 12)
    assert cfg.embed_dim == hf.image_text_hidden_size
