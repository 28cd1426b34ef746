"""A vision tower wider than the text model (the large checkpoints: 1024 vs 768), against transformers' BLIP.

Shapes here: vision 192 wide (3 heads of 64), text 128 wide, so every cross-attention key/value projection reads a
width that is not the text width. The VQA answer decoder is the exception: it reads the question encoder's states,
so its cross-attention takes the text width (reference BLIP_VQA builds it from the plain med_config).
"""

from __future__ import annotations

import pytest
import torch

from blip.checkpoint import load_checkpoint, to_transformers_keys
from blip.model.blip import BlipModel
from blip.model.config import for_task
from conftest import CLS, DEC, ENC, PAD, SEP, VOCAB

TOL = 1e-4
VISION_WIDTH, TEXT_WIDTH = 192, 128


def wide_hf_config():
    """A transformers BlipConfig whose vision width (192) is not its text width (128)."""
    from transformers import BlipConfig

    text = {
        "vocab_size": len(VOCAB),
        "hidden_size": TEXT_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 40,
        "initializer_range": 0.2,
        "bos_token_id": DEC,
        "sep_token_id": SEP,
        "eos_token_id": SEP,
        "pad_token_id": PAD,
    }
    vision = {
        "hidden_size": VISION_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "intermediate_size": 384,
        "image_size": 32,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
        "initializer_range": 0.2,
    }
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)


def randomise(model: torch.nn.Module) -> None:
    """Non-trivial LayerNorms and biases, so a swapped or missing term shows in the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.startswith("visual_encoder.norm"):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """kind -> (transformers model, folder) for caption and retrieval with vision 192 / text 128."""
    import transformers

    out = {}
    for seed, kind, cls in (
        (0, "caption", transformers.BlipForConditionalGeneration),
        (1, "retrieval", transformers.BlipForImageTextRetrieval),
    ):
        torch.manual_seed(seed)
        model = cls(wide_hf_config()).eval()
        randomise(model)
        folder = tmp_path_factory.mktemp(f"wide_{kind}")
        model.save_pretrained(folder)
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        out[kind] = (model, folder)
    return out


def texts():
    ids = torch.tensor([[CLS, 5, 6, 7, 8, 9, SEP], [CLS, 11, 12, SEP, PAD, PAD, PAD], [CLS, 14, 15, 16, 17, SEP, PAD]])
    return ids, (ids != PAD).long()


@pytest.fixture
def pixels():
    torch.manual_seed(3)
    return torch.randn(3, 3, 32, 32)


def test_widths_are_read_from_the_checkpoint(wide):
    model, _, _ = load_checkpoint(wide["retrieval"][1])
    assert (model.cfg.vision.width, model.cfg.text.hidden) == (VISION_WIDTH, TEXT_WIDTH)
    cross = model.text_encoder.encoder.layer[0].crossattention.self
    assert (cross.query.in_features, cross.key.in_features, cross.value.in_features) == (128, 192, 192)
    assert (model.vision_proj.in_features, model.text_proj.in_features, model.itm_head.in_features) == (192, 128, 128)


def test_itm_and_itc_match_transformers(wide, pixels):
    hf, folder = wide["retrieval"]
    model, _, _ = load_checkpoint(folder)
    ids, mask = texts()
    enc = ids.clone()
    enc[:, 0] = ENC
    with torch.no_grad():
        ref_itm = hf(input_ids=enc, pixel_values=pixels, attention_mask=mask, use_itm_head=True).itm_score
        ref_itc = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        embeds = model.encode_image(pixels)
        itm = model.itm_logits(embeds, ids, mask)
        itc = model.image_embed(embeds) @ model.text_embed(ids, mask).t()
    assert embeds.shape[-1] == VISION_WIDTH
    assert (embeds - hf.vision_model(pixel_values=pixels)[0]).abs().max() <= TOL
    assert (itm - ref_itm).abs().max() <= TOL
    assert (itc - ref_itc).abs().max() <= TOL


def test_caption_logits_match_transformers(wide, pixels):
    hf, folder = wide["caption"]
    model, _, _ = load_checkpoint(folder)
    assert model.text_decoder.bert.encoder.layer[0].crossattention.self.key.in_features == VISION_WIDTH
    ids, mask = texts()
    ids[:, 0] = DEC
    with torch.no_grad():
        image = hf.vision_model(pixel_values=pixels)[0]
        ref = hf.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).logits
        ours = model.text_decoder(ids, mask, model.encode_image(pixels))
    assert (ours - ref).abs().max() <= TOL


def vqa_model(wide) -> BlipModel:
    """A VQA model of the wide shapes: vision and text encoder from the retrieval checkpoint, a random decoder."""
    base, _, _ = load_checkpoint(wide["retrieval"][1])
    torch.manual_seed(5)
    model = BlipModel(for_task(base.cfg, "vqa")).eval()
    randomise(model)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in base.state_dict().items() if k in own}, strict=False)
    return model


def test_vqa_decoder_reads_the_question_states_at_text_width(wide, pixels, tmp_path):
    from transformers import BlipTextLMHeadModel, BlipTextModel

    model = vqa_model(wide)
    encoder_cross = model.text_encoder.encoder.layer[0].crossattention.self
    decoder_cross = model.text_decoder.bert.encoder.layer[0].crossattention.self
    assert (encoder_cross.key.in_features, decoder_cross.key.in_features) == (VISION_WIDTH, TEXT_WIDTH)
    # transformers' BlipForQuestionAnswering builds its decoder with the vision width, so it cannot hold these
    # weights; its text classes can, each configured with the width the reference gives it.
    hf_sd = to_transformers_keys(model.state_dict())
    text_cfg = wide_hf_config().text_config
    encoder = BlipTextModel(text_cfg, add_pooling_layer=False).eval()
    encoder.load_state_dict({k[len("text_encoder.") :]: v for k, v in hf_sd.items() if k.startswith("text_encoder.")})
    text_cfg.encoder_hidden_size = TEXT_WIDTH
    decoder = BlipTextLMHeadModel(text_cfg).eval()
    dec_sd = {k[len("text_decoder.") :]: v for k, v in hf_sd.items() if k.startswith("text_decoder.")}
    assert not decoder.load_state_dict(dec_sd, strict=False).unexpected_keys
    q_ids = torch.tensor([[ENC, 30, 31, 8, SEP], [ENC, 32, 33, SEP, PAD], [ENC, 35, 36, 10, SEP]])
    q_mask = (q_ids != PAD).long()
    a_ids = torch.tensor([[DEC, 40, 41, SEP], [DEC, 42, SEP, PAD], [DEC, 43, 44, SEP]])
    a_mask = (a_ids != PAD).long()
    with torch.no_grad():
        embeds = model.encode_image(pixels)
        states = model.encode_grounded(q_ids, q_mask, embeds)
        ref_states = encoder(input_ids=q_ids, attention_mask=q_mask, encoder_hidden_states=embeds)[0]
        ours = model.text_decoder(a_ids, a_mask, states, q_mask)
        # transformers 5.23's BlipTextLMHeadModel drops encoder_attention_mask, so each answer is decoded against
        # its own question's unpadded states instead.
        ref = torch.cat(
            [
                decoder(
                    input_ids=a_ids[i : i + 1],
                    attention_mask=a_mask[i : i + 1],
                    encoder_hidden_states=ref_states[i : i + 1, : int(q_mask[i].sum())],
                ).logits
                for i in range(len(a_ids))
            ]
        )
    assert states.shape[-1] == TEXT_WIDTH
    assert (states - ref_states).abs().max() <= TOL
    assert (ours - ref).abs().max() <= TOL
    # A reference-format checkpoint of these shapes is recognised as VQA and rebuilt with the same widths.
    torch.save({"model": model.state_dict()}, tmp_path / "model_vqa.pth")
    loaded, _, _ = load_checkpoint(tmp_path / "model_vqa.pth", tokenizer=wide["retrieval"][1])
    assert loaded.cfg.decoder_input == "question"
    assert loaded.text_decoder.bert.encoder.layer[1].crossattention.self.value.in_features == TEXT_WIDTH
    with torch.no_grad():
        again = loaded.text_decoder(
            a_ids, a_mask, loaded.encode_grounded(q_ids, q_mask, loaded.encode_image(pixels)), q_mask
        )
    assert (again - ref).abs().max() <= TOL
