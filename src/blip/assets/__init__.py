"""Weights shipped with the package: the demo's pretrained vision tower (tasks/vision_pretrain.py)."""
