"""pruned_perf: a performance regression suite for structurally pruned LLMs."""

__version__ = "0.1.0"
