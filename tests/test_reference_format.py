"""Reference .pth checkpoints (caption/retrieval/pretrain style) load and give transformers' outputs."""

from __future__ import annotations

import re

import pytest
import torch

import blip
from blip.checkpoint import load_checkpoint
from blip.errors import CheckpointError
from blip.model.blip import BlipModel
from blip.model.config import BlipConfig, TextConfig, VisionConfig
from conftest import DEC, ENC, VOCAB


def published_rename_key(key: str) -> str:
    """transformers' convert_blip_original_pytorch_to_hf.rename_key (reference -> transformers), as published."""
    if "visual_encoder" in key:
        key = re.sub("visual_encoder*", "vision_model.encoder", key)
    if "blocks" in key:
        key = re.sub(r"blocks", "layers", key)
    if "attn" in key:
        key = re.sub(r"attn", "self_attn", key)
    if "norm1" in key:
        key = re.sub(r"norm1", "layer_norm1", key)
    if "norm2" in key:
        key = re.sub(r"norm2", "layer_norm2", key)
    if "encoder.norm" in key:
        key = re.sub(r"encoder.norm", "post_layernorm", key)
    if "encoder.patch_embed.proj" in key:
        key = re.sub(r"encoder.patch_embed.proj", "embeddings.patch_embedding", key)
    if "encoder.pos_embed" in key:
        key = re.sub(r"encoder.pos_embed", "embeddings.position_embedding", key)
    if "encoder.cls_token" in key:
        key = re.sub(r"encoder.cls_token", "embeddings.class_embedding", key)
    if "self_attn" in key:
        key = re.sub(r"self_attn.proj", "self_attn.projection", key)
    return key


def to_reference(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Invert the published map over every reference-style name a full BLIP has."""
    cfg = BlipConfig(
        vision=VisionConfig(image_size=32, width=128, depth=2, heads=2, mlp_dim=256),
        text=TextConfig(vocab_size=len(VOCAB), hidden=128, layers=2, heads=2, intermediate=256, max_positions=40),
        embed_dim=16,
    )
    inverse = {published_rename_key(k): k for k in BlipModel(cfg).state_dict()}
    out = {}
    for k, v in hf_state.items():
        assert k in inverse, f"no reference name maps to {k}"
        out[inverse[k]] = v
    return out


def save_pth(sd, path):
    torch.save({"model": sd, "epoch": 3}, path)


def test_reference_caption_pth_gives_transformers_logits(hf_models, pixels, tmp_path):
    hf, folder = hf_models["caption"]
    save_pth(to_reference(hf.state_dict()), tmp_path / "model_base_caption.pth")
    model = blip.load(tmp_path / "model_base_caption.pth", tokenizer=folder / "vocab.txt")
    assert model.report.format == "reference" and model.cfg.parts == ("text_decoder",)
    assert model.cfg.vision.image_size == 32 and model.cfg.text.heads == 2  # inferred from shapes
    ids = torch.tensor([[DEC, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        ref = hf.text_decoder(input_ids=ids, encoder_hidden_states=hf.vision_model(pixel_values=pixels[:1])[0]).logits
        ours = model.model.text_decoder(ids, None, model.model.encode_image(pixels[:1]))
    assert (ours - ref).abs().max() <= 1e-4


def test_pretrain_style_pth_with_momentum_and_queues(hf_models, pixels, tmp_path):
    hf_ret, folder = hf_models["retrieval"]
    hf_cap, _ = hf_models["caption"]
    sd = to_reference(hf_ret.state_dict())
    sd.update({k: v for k, v in to_reference(hf_cap.state_dict()).items() if k.startswith("text_decoder.")})
    for k in list(sd):  # momentum copies, queues and temperature, as blip_pretrain.py saves them
        for prefix in ("visual_encoder", "text_encoder", "vision_proj", "text_proj"):
            if k.startswith(prefix + "."):
                sd[k.replace(prefix, prefix + "_m", 1)] = sd[k].clone()
    sd.update(
        {
            "image_queue": torch.randn(16, 57600),
            "text_queue": torch.randn(16, 57600),
            "queue_ptr": torch.zeros(1, dtype=torch.long),
            "temp": torch.tensor(0.05),
            "text_encoder.embeddings.position_ids": torch.arange(40)[None],
        }
    )
    save_pth(sd, tmp_path / "model_base.pth")
    model, _, report = load_checkpoint(tmp_path / "model_base.pth", tokenizer=folder / "vocab.txt")
    assert set(model.cfg.parts) == {"text_encoder", "text_decoder", "itc", "itm"}
    assert any(k.startswith("visual_encoder_m.") for k in report.ignored) and "image_queue" in report.ignored
    assert model.temp.item() == pytest.approx(0.05)
    ids = torch.tensor([[ENC, 5, 6, 7, 3]])
    with torch.no_grad():
        ref = hf_ret(input_ids=ids, pixel_values=pixels[:1], use_itm_head=True).itm_score
        ours = model.itm_logits(model.encode_image(pixels[:1]), ids, torch.ones_like(ids))
    assert (ours - ref).abs().max() <= 1e-4


def test_position_embeddings_resampled_like_reference(hf_models, tmp_path):
    hf, folder = hf_models["caption"]
    model, _, _ = load_checkpoint(folder, image_size=64)
    old = hf.vision_model.embeddings.position_embedding.detach()  # (1, 1 + 2*2, D)
    grid = old[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    # The reference's interpolate_pos_embed: plain bicubic F.interpolate, CLS position kept.
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    expected = torch.cat([old[:, :1], expected.permute(0, 2, 3, 1).reshape(1, 16, -1)], dim=1)
    assert (model.visual_encoder.pos_embed - expected).abs().max() <= 1e-5
    assert model.encode_image(torch.randn(1, 3, 64, 64)).shape == (1, 17, 128)


def test_wrong_kind_of_checkpoint_names_missing_keys(hf_models):
    _, folder = hf_models["caption"]
    with pytest.raises(CheckpointError, match=r"lacks .* text_encoder\.embeddings\.word_embeddings\.weight"):
        load_checkpoint(folder, task="retrieval")


def test_missing_keys_can_be_allowed_explicitly(hf_models):
    _, folder = hf_models["caption"]
    model, _, report = load_checkpoint(folder, task="pretrain", allow_missing=True)
    assert "itm_head.weight" in report.allowed_missing


def test_truncated_and_bad_checkpoints_fail_clearly(hf_models, tmp_path):
    hf, _ = hf_models["caption"]
    path = tmp_path / "model.pth"
    save_pth(to_reference(hf.state_dict()), path)
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.pth")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a BLIP checkpoint"):
        load_checkpoint(tmp_path / "other.pth")


def test_pickled_code_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    torch.save({"model": Boom()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="Hugging Face Hub failed"):
        load_checkpoint("Salesforce/blip-no-such-model-here")
