"""The registry of pruning methods, and the one path every plan takes: size -> calibrate -> plan
(`prepare_plan`, used by `pruned-perf prune` and by the sweep alike).

A method is a module with NAME, CRITERIA (first = default), CALIB (its reference calibration, or None),
GRADIENT_CRITERIA (the criteria that backpropagate), OPTIONS (the method-specific keyword options it
takes: name -> `option.Option`, from which the command line builds the flag and its help), RATIO_MEANS
(what its ratio is, for --help; optional), DEFAULT_SIZING (its size for a model no profile lists), STYLE
(its matplotlib colour and marker in figures), `size(config, ratio=, target=, **opts) -> Sizing` and
`plan(model, calib, sizing, criterion, **opts)`. Adding one is that module plus its line in METHODS below;
its place there is its place in tables and legends. `make_plan` is the one caller of `plan`: it has
checked the criterion, and it tags the plan with its source model and provenance, so a method does
neither.
"""
from __future__ import annotations

import dataclasses

from pruned_perf.core.errors import UserError, choice_error
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.calibration import Calibration, CalibSpec, calibration_batch, effective_source
from pruned_perf.pruning.methods import dense, depth, flap, llm_pruner
from pruned_perf.pruning.sizing import Sizing

METHODS = {m.NAME: m for m in (dense, depth, llm_pruner, flap)}


def styles() -> dict[str, dict]:
    """method -> its STYLE, in registry order: what results carry so that the torch-free analysis side
    (report, plot) shows each method as its module says, on a machine without torch."""
    return {name: dict(method.STYLE) for name, method in METHODS.items()}


def get_method(name: str):
    if name not in METHODS:
        raise choice_error("method", name, METHODS)
    return METHODS[name]


def method_options(name: str, options: dict) -> dict:
    """The subset of `options` that method `name` takes (None means: the method's default)."""
    return {k: v for k, v in options.items() if k in get_method(name).OPTIONS and v is not None}


def size(name: str, config, ratio: float | None = None, target: int | None = None, **options) -> Sizing:
    method = get_method(name)
    if name != "dense" and (ratio is None) == (target is None):
        raise UserError(f"{name} needs exactly one of a ratio or a target parameter count")
    return method.size(config, ratio=ratio, target=target, **method_options(name, options))


def calibration_spec(name: str, samples: int | None = None, seq_len: int | None = None,
                     seed: int | None = None) -> CalibSpec | None:
    """The method's reference calibration, with any of its numbers overridden."""
    spec = get_method(name).CALIB
    if spec is None:
        return None
    overrides = {k: v for k, v in (("samples", samples), ("seq_len", seq_len), ("seed", seed)) if v is not None}
    return dataclasses.replace(spec, **overrides)


def needs_calibration(name: str, criterion: str | None) -> bool:
    return get_method(name).CALIB is not None and criterion != "magnitude"


def needs_gradients(name: str, criterion: str | None) -> bool:
    """Whether scoring backpropagates: then a float32 planning copy needs twice the model's memory."""
    return check_criterion(name, criterion) in get_method(name).GRADIENT_CRITERIA


def check_criterion(name: str, criterion: str | None) -> str:
    """The criterion to use (the method's first by default); an unknown one is a UserError."""
    method = get_method(name)
    criterion = criterion or method.CRITERIA[0]
    if criterion not in method.CRITERIA:
        raise choice_error(f"{name} criterion", criterion, method.CRITERIA)
    return criterion


def calibrate(name: str, criterion: str, spec: CalibSpec | None, vocab_size: int, tokenizer=None,
              source: str = "builtin", text_file=None) -> Calibration | None:
    """The calibration the method needs, or None when it needs none (no model required)."""
    if not needs_calibration(name, criterion):
        return None
    ids = calibration_batch(spec, vocab_size, tokenizer, source, text_file)
    return Calibration(ids, effective_source(source, tokenizer, text_file), spec)


@dataclasses.dataclass
class PlanRecipe:
    """Everything a plan needs but the model (its size, criterion and calibration), ready before any
    weights exist, so that a bad criterion or calibration file fails before a 7B model is built."""

    method: str
    source: str  # the model the plan is for, as the user named it
    sizing: Sizing
    criterion: str
    calibration: Calibration | None
    options: dict

    def plan(self, model) -> PrunePlan:
        return make_plan(model, self.method, self.sizing, self.source, self.criterion, self.calibration,
                         **self.options)


def prepare_plan(name: str, config, sizing: Sizing, source: str, criterion: str | None = None,
                 spec: CalibSpec | None = None, tokenizer=None, calib_source: str = "builtin", text_file=None,
                 **options) -> PlanRecipe:
    """Check the criterion and calibrate for method `name` on a model of `config`; `.plan(model)` plans."""
    criterion = check_criterion(name, criterion)
    calibration = calibrate(name, criterion, spec, config.vocab_size, tokenizer, calib_source, text_file)
    return PlanRecipe(name, source, sizing, criterion, calibration, options)


def make_plan(model, name: str, sizing: Sizing, source: str, criterion: str | None = None,
              calibration: Calibration | None = None, **options) -> PrunePlan:
    """Run method `name` on `model` (unchanged) and return its plan, tagged with its provenance."""
    method = get_method(name)
    criterion = check_criterion(name, criterion)
    if needs_calibration(name, criterion) and calibration is None:
        raise UserError(f"{name} ({criterion}) needs calibration data")
    ids = calibration.ids if calibration is not None else None
    plan = method.plan(model, ids, sizing, criterion, **method_options(name, options))
    plan.source = source
    plan.settings["expected_params"] = sizing.params
    if name != "dense":  # which numerics scored the plan (float32 unless the model did not fit)
        plan.settings["scoring_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    if calibration is not None:
        plan.settings["calibration"] = calibration.describe()
    return plan

