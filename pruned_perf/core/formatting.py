"""Numbers as people read them, for every stage's output (sizing lines, report tables, plot labels).

A bottom module: plain Python, no torch and no stage import, so the torch-free analysis side and the
pruning side share one spelling of a parameter count.
"""
from __future__ import annotations


def format_params(count: int) -> str:
    """A parameter count in billions or millions, two decimals: 4916965376 -> "4.92B", 134515008 -> "134.52M"."""
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.2f}M"
