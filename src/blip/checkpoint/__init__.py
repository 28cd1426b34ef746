"""Checkpoints: one loader and one writer, with an adapter per format (reference/LAVIS .pth, transformers folders
and the project's own) that maps names and config from outside the model."""

from blip.checkpoint.adapters import (
    ADAPTERS,
    OWN_FORMAT,
    Adapter,
    Field,
    adapter_named,
    config_from_transformers,
    detect,
    from_transformers_keys,
    to_transformers_keys,
)
from blip.checkpoint.files import read_state_dict
from blip.checkpoint.load import LoadReport, build_and_load, carry_training_state, load_checkpoint, twin_cross_attention
from blip.checkpoint.save import export, export_transformers, save_pretrained
from blip.checkpoint.shapes import infer_config, nlvr_merge_from

__all__ = [
    "ADAPTERS",
    "OWN_FORMAT",
    "Adapter",
    "Field",
    "LoadReport",
    "adapter_named",
    "build_and_load",
    "carry_training_state",
    "config_from_transformers",
    "detect",
    "export",
    "export_transformers",
    "from_transformers_keys",
    "infer_config",
    "load_checkpoint",
    "nlvr_merge_from",
    "read_state_dict",
    "save_pretrained",
    "to_transformers_keys",
    "twin_cross_attention",
]
