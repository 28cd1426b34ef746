"""Shared fixtures: tiny random BLIP models built and saved by transformers itself, with a tiny WordPiece vocab."""

from __future__ import annotations

import pytest
import torch

WORDS = (
    "a picture of the red blue green square circle triangle on left right above below two three "
    "dog cat woman man sitting beach with her his is there what colour shape how many yes no"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
VOCAB += [f"w{i}" for i in range(118 - len(VOCAB))] + ["[DEC]", "[ENC]"]  # [DEC] 118, [ENC] 119
PAD, CLS, SEP, DEC, ENC = 0, 2, 3, 118, 119


def hf_config(image_size: int = 32):
    """A transformers BlipConfig of tiny shapes (64-wide heads, so shapes alone determine the architecture)."""
    from transformers import BlipConfig

    text = dict(
        vocab_size=len(VOCAB),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=40,
        encoder_hidden_size=128,
        initializer_range=0.2,
        bos_token_id=DEC,
        sep_token_id=SEP,
        eos_token_id=SEP,
        pad_token_id=PAD,
    )
    vision = dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        image_size=image_size,
        patch_size=16,
        layer_norm_eps=1e-6,
        initializer_range=0.2,
    )
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)


def make_hf(kind: str, folder, seed: int = 0):
    """Build, randomise and save a transformers BLIP of `kind` (caption, retrieval, vqa); returns the model."""
    import transformers

    cls = {
        "caption": transformers.BlipForConditionalGeneration,
        "retrieval": transformers.BlipForImageTextRetrieval,
        "vqa": transformers.BlipForQuestionAnswering,
    }[kind]
    torch.manual_seed(seed)
    model = cls(hf_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
        if hasattr(model, "text_decoder"):
            # Make the end token likely enough that hypotheses end at different lengths.
            model.text_decoder.cls.predictions.bias[SEP] += 6.0
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return model


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """kind -> (transformers model, folder) for caption, retrieval and vqa."""
    out = {}
    for kind in ("caption", "retrieval", "vqa"):
        folder = tmp_path_factory.mktemp(f"hf_{kind}")
        out[kind] = (make_hf(kind, folder), folder)
    return out


@pytest.fixture
def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory):
    """A small synthetic world written by `blip data synth`'s generator."""
    from blip.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, num_images=120, seed=0, noise=0.4, workers=1)
    return out
