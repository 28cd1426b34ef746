"""Fine-tuning from a pretraining checkpoint keeps what the reference's load_checkpoint keeps: every key of matching
name and shape (strict=False), so the momentum encoders and same-size feature queues carry over; the retrieval
model's id queue (-100) and ptr_queue (0) are not in a pretraining checkpoint and start fresh."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blip.model.config import preset
from blip.tasks.retrieval import retrieval_init
from blip.training.pretrain import BlipPretrain
from conftest import VOCAB

QUEUE = 8


def pretrained_checkpoint(path, with_momentum: bool = True) -> dict[str, torch.Tensor]:
    """A reference-layout pretraining .pth whose momentum encoders and queues differ from their online copies."""
    torch.manual_seed(0)
    cfg = preset("tiny").replace(
        **{"text.vocab_size": 120, "text.dec_id": 118, "text.enc_id": 119, "vision.image_size": 32}
    )
    model = BlipPretrain(cfg, queue_size=QUEUE)
    sd = model.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            if "_m." in name and t.is_floating_point():
                t.add_(torch.randn_like(t))
        sd["image_queue"].copy_(F.normalize(torch.randn_like(sd["image_queue"]), dim=0))
        sd["queue_ptr"].fill_(5)
    if not with_momentum:
        sd = {k: v for k, v in sd.items() if "_m." not in k}
    torch.save({"model": sd}, path)
    return sd


def recipe(tmp_path, **entries) -> dict:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return {"init": str(tmp_path / "model_base.pth"), "tokenizer": str(tmp_path / "vocab.txt"), **entries}


def test_retrieval_finetune_starts_from_the_checkpoints_momentum_encoders_and_queues(tmp_path):
    sd = pretrained_checkpoint(tmp_path / "model_base.pth")
    model, _, report = retrieval_init(recipe(tmp_path, queue_size=QUEUE))
    own = model.state_dict()
    for name in (
        "visual_encoder_m.blocks.0.attn.qkv.weight",
        "text_encoder_m.encoder.layer.0.attention.self.query.bias",
        "vision_proj_m.weight",
        "text_proj_m.weight",
        "image_queue",
        "text_queue",
    ):
        assert torch.equal(own[name], sd[name]), name
        assert name in report.carried
    assert not torch.equal(
        own["visual_encoder_m.blocks.0.attn.qkv.weight"], own["visual_encoder.blocks.0.attn.qkv.weight"]
    )
    # The retrieval model's own queue state: the pretraining checkpoint says queue_ptr, not ptr_queue.
    assert (own["idx_queue"] == -100).all() and int(own["ptr_queue"]) == 0
    assert "queue_ptr" not in report.carried


def test_queues_of_another_size_and_missing_momentum_start_fresh(tmp_path):
    sd = pretrained_checkpoint(tmp_path / "model_base.pth", with_momentum=False)
    model, _, report = retrieval_init(recipe(tmp_path, queue_size=QUEUE * 2))
    own = model.state_dict()
    assert own["image_queue"].shape == (sd["image_queue"].shape[0], QUEUE * 2)
    assert report.carried == []
    # Without momentum weights in the checkpoint they start as copies of the loaded online encoders.
    assert torch.equal(own["visual_encoder_m.blocks.0.attn.qkv.weight"], sd["visual_encoder.blocks.0.attn.qkv.weight"])


def test_momentum_position_embedding_is_resampled_like_the_online_one(tmp_path):
    sd = pretrained_checkpoint(tmp_path / "model_base.pth")
    model, _, report = retrieval_init(recipe(tmp_path, queue_size=QUEUE, image_size=48))
    # Reference interpolate_pos_embed: CLS kept, the 4x4 grid resized bicubic to 6x6.
    grid = sd["visual_encoder_m.pos_embed"][:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    expected = torch.cat([sd["visual_encoder_m.pos_embed"][:, :1], resized.reshape(1, 36, -1)], dim=1)
    assert "visual_encoder_m.pos_embed" in report.carried
    assert (model.state_dict()["visual_encoder_m.pos_embed"] - expected).abs().max() <= 1e-5


def test_pretraining_from_a_checkpoint_keeps_its_momentum_encoders_and_queues(tmp_path):
    from blip.tasks.pretrain import build_model
    from blip.tokenizer import Tokenizer

    sd = pretrained_checkpoint(tmp_path / "model_base.pth")
    r = recipe(tmp_path, queue_size=QUEUE)
    tok = Tokenizer.from_pretrained(r["tokenizer"])
    model = build_model({"model": {"preset": "tiny", "image_size": 32, "init": r["init"]}, "queue_size": QUEUE}, tok)
    own = model.state_dict()
    for name in ("visual_encoder_m.blocks.0.attn.qkv.weight", "text_proj_m.weight", "image_queue", "queue_ptr"):
        assert torch.equal(own[name], sd[name]), name
