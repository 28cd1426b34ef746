"""Checkpoint adapters: a transformers BLIP read and written back is the same checkpoint, tensors and config, as
transformers itself saved it; each format is recognised by its own adapter, and an unknown one fails in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from blip.checkpoint import ADAPTERS, detect, export_transformers, load_checkpoint, read_state_dict, save_pretrained
from blip.checkpoint.files import read_source
from blip.errors import BlipError
from conftest import DEC, ENC, PAD, SEP, VOCAB
from test_reference_format import save_pth, to_reference

HF_CLASSES = {
    "caption": "BlipForConditionalGeneration",
    "retrieval": "BlipForImageTextRetrieval",
    "vqa": "BlipForQuestionAnswering",
}


def odd_hf_config():
    """A transformers config whose every size differs from transformers' defaults and from each other where a
    swapped field would still build (vision and text heads, depths, MLP widths, both eps).

    Dropout and label smoothing are the reference's training values (0.1), which a load keeps whatever a file
    says; the initialisation ranges are transformers' defaults, as the project keeps its own initialisation.
    """
    from transformers import BlipConfig

    text = dict(
        vocab_size=len(VOCAB),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=160,
        max_position_embeddings=30,
        layer_norm_eps=1e-11,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        label_smoothing=0.1,
        bos_token_id=DEC,
        sep_token_id=SEP,
        eos_token_id=SEP,
        pad_token_id=PAD,
    )
    vision = dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=96,
        image_size=48,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=24, label_smoothing=0.1)


def save_hf(kind: str, folder):
    """transformers builds, randomises and saves a BLIP of `kind` with the odd config, and its vocabulary."""
    import transformers

    torch.manual_seed(3)
    model = getattr(transformers, HF_CLASSES[kind])(odd_hf_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return model


@pytest.mark.parametrize("kind", ["caption", "retrieval", "vqa"])
def test_transformers_round_trip_gives_the_same_tensors_and_config(tmp_path, kind):
    from transformers import BlipConfig

    save_hf(kind, tmp_path / "hf")
    model, tok, report = load_checkpoint(tmp_path / "hf")
    assert report.format == "transformers" and not report.ignored and not report.allowed_missing
    assert export_transformers(model, tok, tmp_path / "back") == HF_CLASSES[kind]
    original = load_file(tmp_path / "hf" / "model.safetensors")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    # transformers' own reading of both config.json files: every field, the defaults it fills in included.
    written = BlipConfig.from_pretrained(tmp_path / "back").to_dict()
    assert written == BlipConfig.from_pretrained(tmp_path / "hf").to_dict()


def test_sizes_the_shapes_cannot_give_come_from_the_file(tmp_path, pixels):
    # Heads 32 and 16 wide: shapes alone would say one head each, so equal outputs need config.json's counts.
    hf = save_hf("retrieval", tmp_path / "hf")
    model, _, _ = load_checkpoint(tmp_path / "hf")
    assert (model.cfg.vision.heads, model.cfg.text.heads, model.cfg.text.layer_norm_eps) == (2, 4, 1e-11)
    ids = torch.tensor([[2, 5, 6, 7, 8, SEP], [2, 9, 10, SEP, PAD, PAD], [2, 11, 12, 13, SEP, PAD]])
    mask = (ids != PAD).long()
    images = torch.nn.functional.interpolate(pixels, size=48)
    with torch.no_grad():
        # Our ITM puts the reference's [ENC] first; give transformers the same ids.
        enc_ids = torch.cat([torch.full((3, 1), ENC), ids[:, 1:]], dim=1)
        ref_itm = hf(input_ids=enc_ids, pixel_values=images, attention_mask=mask, use_itm_head=True).itm_score
        ref_itc = hf(input_ids=ids, pixel_values=images, attention_mask=mask, use_itm_head=False).itm_score
        embeds = model.encode_image(images)
        itm = model.itm_logits(embeds, ids, mask)
        itc = model.image_embed(embeds) @ model.text_embed(ids, mask).t()
    assert (itm - ref_itm).abs().max() <= 1e-4
    assert (itc - ref_itc).abs().max() <= 1e-4


def formats(hf_models, tmp_path):
    """(checkpoint, expected format) for every format a BLIP checkpoint comes in, built from transformers' weights."""
    hf, folder = hf_models["retrieval"]
    cases = [(folder, "transformers")]
    shutil.copy(folder / "model.safetensors", tmp_path / "hf_weights.safetensors")
    cases.append((tmp_path / "hf_weights.safetensors", "transformers"))  # a bare file: no config.json
    reference = to_reference(hf.state_dict())
    save_pth(reference, tmp_path / "model_base_retrieval.pth")  # the reference's {'model': ..., 'epoch': ...}
    cases.append((tmp_path / "model_base_retrieval.pth", "reference"))
    # LAVIS keeps the reference's names and saves its run config and an index queue beside them.
    lavis = dict(reference, idx_queue=torch.zeros(1, 57600, dtype=torch.long))
    torch.save({"model": lavis, "config": {"run": {"task": "retrieval"}}, "epoch": 5}, tmp_path / "lavis.pth")
    cases.append((tmp_path / "lavis.pth", "reference"))
    # A fine-tuning run's checkpoint: the loss module wraps the model.
    torch.save({"model": {f"model.{k}": v for k, v in reference.items()}}, tmp_path / "checkpoint-00000001.pt")
    cases.append((tmp_path / "checkpoint-00000001.pt", "reference"))
    model, tok, _ = load_checkpoint(folder)
    save_pretrained(model, tok, tmp_path / "own")
    cases.append((tmp_path / "own", "blip"))
    return cases


def test_detection_picks_the_adapter_of_each_format(hf_models, tmp_path, pixels):
    hf = hf_models["retrieval"][0]
    ids = torch.tensor([[ENC, 5, 6, 7, SEP]])
    with torch.no_grad():
        expected = hf(input_ids=ids, pixel_values=pixels[:1], use_itm_head=True).itm_score
    for path, name in formats(hf_models, tmp_path):
        meta, sd = read_source(path)
        assert detect(sd, meta, path).name == name, path
        # Only the named adapter claims it, except that our own folder's tensors also have the reference's names.
        claims = {a.name for a in ADAPTERS if a.detect(sd, meta)}
        assert claims == ({name, "reference"} if name == "blip" else {name}), path
        model, _, report = load_checkpoint(path, tokenizer=hf_models["retrieval"][1])
        assert report.format == name
        with torch.no_grad():
            itm = model.itm_logits(model.encode_image(pixels[:1]), ids, torch.ones_like(ids))
        assert (itm - expected).abs().max() <= 1e-4, path


def one_line_error(path) -> str:
    with pytest.raises(BlipError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_an_unknown_format_fails_in_one_line_naming_the_formats(tmp_path):
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    message = one_line_error(tmp_path / "other.pth")
    assert message.startswith(f"{tmp_path / 'other.pth'}: not a BLIP checkpoint")
    assert all(name in message for name in ("blip", "transformers", "reference")) and "encoder.weight" in message
    # A transformers folder of another model: its config.json is not BLIP's, nor are its tensors.
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}, tmp_path / "clip/model.safetensors")
    assert "not a BLIP checkpoint" in one_line_error(tmp_path / "clip")
    assert read_state_dict(tmp_path / "other.pth").keys() == {"encoder.weight"}  # the file itself was readable


def test_a_model_transformers_has_no_class_for_is_refused_in_one_line(hf_models, tmp_path):
    # A pretraining model (here a caption model grown to every part) has no single transformers class.
    model, tok, _ = load_checkpoint(hf_models["caption"][1], task="pretrain", allow_missing=True)
    for task in (None, "pretrain"):
        with pytest.raises(BlipError, match=r"^model has parts .*; pass task=caption, retrieval or vqa") as e:
            export_transformers(model, tok, tmp_path / "out", task=task)
        assert "\n" not in str(e.value)
    assert export_transformers(model, tok, tmp_path / "out", task="caption") == HF_CLASSES["caption"]


def test_convert_names_an_unknown_format_in_one_line(tmp_path, capsys):
    from blip.cli import main

    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    assert main(["convert", str(tmp_path / "other.pth"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a BLIP checkpoint" in err and not (tmp_path / "out").exists()


def test_a_broken_config_json_fails_in_one_line(hf_models, tmp_path):
    model, tok, _ = load_checkpoint(hf_models["caption"][1])
    save_pretrained(model, tok, tmp_path / "own")
    config = tmp_path / "own" / "config.json"
    saved = json.loads(config.read_text())
    saved["config"]["vision"]["widht"] = 64  # a misspelt field
    config.write_text(json.dumps(saved))
    assert "widht" in one_line_error(tmp_path / "own")
    config.write_text('{"format": "blip", "config": ')  # cut short
    assert one_line_error(tmp_path / "own").startswith(f"{config}: not a JSON file")
