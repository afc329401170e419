"""Gradients for importance scores, switched on only while a method needs them."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def gradients(model):
    """Every parameter collects a gradient inside; on exit gradients are freed and flags restored.

    A 7B model's gradients are as large as the model: never leave them behind.
    """
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(True)
        p.grad = None
    try:
        with torch.enable_grad():
            yield model
    finally:
        for p, flag in flags.items():
            p.grad = None
            p.requires_grad_(flag)
