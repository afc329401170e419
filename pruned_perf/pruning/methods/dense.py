"""The unpruned model, through the same path as every method."""
from __future__ import annotations

from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.sizing import Sizing, count_params

NAME = "dense"
CRITERIA = ("none",)
CALIB = None
GRADIENT_CRITERIA = ()
OPTIONS: dict = {}  # method-specific options it takes: none
DEFAULT_SIZING: dict = {}  # for a model no profile lists: nothing to prune
STYLE = {"color": "gray", "marker": "x"}  # in every figure; the reference figure: the dense model in gray crosses


def size(config, ratio=None, target=None) -> Sizing:
    return Sizing(NAME, {}, count_params(config), exact=True)


def plan(model, calib, sizing: Sizing, criterion: str = "none") -> PrunePlan:
    return PrunePlan(NAME, source="", num_layers=model.config.num_hidden_layers)
