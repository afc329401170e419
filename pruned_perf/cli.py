"""`pruned-perf`: size, info, prune, fetch, overhead; compare, report, plot, baseline, merge (cli_results);
history, bisect, site (cli_history).

Exit codes: 0 success, 1 a regression or a failed check, 2 bad input (one message on stderr).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruned_perf.core.atomic import PARENTS_HELP
from pruned_perf.core.errors import UserError

if TYPE_CHECKING:  # imported where a command runs: the results commands start without torch
    from pruned_perf.bench.overhead import OverheadArgs
    from pruned_perf.pruning.methods.option import Option

DESCRIPTION = ("Prune LLaMA-family models (size, prune, info, fetch), check what measuring costs (overhead), "
               "read perf results (compare against a baseline, report, plot, merge shards, store baselines), and "
               "keep the history of nightly runs (history, bisect, site). "
               "Exit codes: 0 success, 1 a regression or a failed check, 2 bad input.")


@dataclass(frozen=True)
class SizingArgs:
    """What `size` and `prune` are asked: a model, a method and how far to prune it.

    options: the method-specific options by name (None: not given, the method's default).
    """

    model: str
    method: str
    ratio: float | None
    target_params: str | None
    options: dict[str, Any]

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> SizingArgs:
        from pruned_perf.pruning.methods import METHODS

        names = sorted({name for method in METHODS.values() for name in method.OPTIONS})
        return cls(ns.model, ns.method, ns.ratio, ns.target_params, {k: getattr(ns, k) for k in names})


@dataclass(frozen=True)
class PruneArgs:
    sizing: SizingArgs
    criterion: str | None
    device: str
    dtype: str
    calib: str | None
    calib_file: str | None
    calib_samples: int | None
    calib_len: int | None
    seed: int | None
    out: Path
    overwrite: bool

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> PruneArgs:
        return cls(SizingArgs.from_namespace(ns), ns.criterion, ns.device, ns.dtype, ns.calib, ns.calib_file,
                   ns.calib_samples, ns.calib_len, ns.seed, Path(ns.out), ns.overwrite)


@dataclass(frozen=True)
class InfoArgs:
    model: str
    json: bool


def _fields_from(cls, ns: argparse.Namespace):
    """A dataclass of typed arguments from the Namespace attributes of the same names."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def _method_options() -> dict[str, tuple[Option, list[str]]]:
    """Each method-specific option by name: how its methods declare it, and the methods that take it."""
    from pruned_perf.pruning.methods import METHODS

    table: dict[str, tuple[Option, list[str]]] = {}
    for name, method in METHODS.items():
        for key, option in method.OPTIONS.items():
            table.setdefault(key, (option, []))[1].append(name)
    return table


def _check_options(args: SizingArgs) -> None:
    """An option the method does not take is an error: ignoring it would prune differently than asked."""
    from pruned_perf.pruning.methods import METHODS

    sizes = [name for name in METHODS if name != "dense"]  # what methods.size asks a ratio or target of
    given = [("--ratio", args.ratio, sizes), ("--target-params", args.target_params, sizes)]
    given += [(option.flag, args.options[key], takers) for key, (option, takers) in _method_options().items()]
    for flag, value, takers in given:
        if value is not None and args.method not in takers:
            raise UserError(f"{flag} does not apply to method {args.method}; "
                            f"methods that take it: {', '.join(sorted(takers))}")


def _sizing(args: SizingArgs):
    from pruned_perf.llama.checkpoint import is_pruned_dir
    from pruned_perf.llama.models import model_config
    from pruned_perf.pruning import methods
    from pruned_perf.pruning.sizing import parse_param_count

    methods.get_method(args.method)  # name the bad method before touching the model
    _check_options(args)
    if is_pruned_dir(args.model):
        raise UserError(f"{args.model} is already pruned; prune the model it came from instead")
    config = model_config(args.model)
    target = parse_param_count(args.target_params) if args.target_params else None
    return config, methods.size(args.method, config, ratio=args.ratio, target=target, **args.options)


def cmd_size(args: SizingArgs) -> int:
    config, sizing = _sizing(args)
    print(sizing.describe(config))
    if not sizing.exact:
        print("(the achieved count depends on the structure the method finds; `prune` reports it)")
    return 0


def cmd_info(args: InfoArgs) -> int:
    from pruned_perf.pruning.info import describe, layer_runs
    from pruned_perf.pruning.sizing import layer_span

    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['model']}: {info['params']:,} parameters, {info['layers']} layers, "
          f"hidden {info['hidden_size']}, vocabulary {info['vocab_size']}")
    if info.get("method"):
        print(f"pruned by {info['method']} from {info['source']}")
    for first, last, shape in layer_runs(info["per_layer"]):
        print(f"  {layer_span(first, last)}: {shape['heads']} heads ({shape['kv_heads']} kv), MLP {shape['mlp']}")
    return 0


def cmd_prune(args: PruneArgs) -> int:
    from pruned_perf.core.atomic import check_writable_dir
    from pruned_perf.bench.fingerprint import pick_device
    from pruned_perf.llama.checkpoint import check_output_dir, save_pruned
    from pruned_perf.llama.models import build_model, is_preset, load_tokenizer, parse_dtype
    from pruned_perf.pruning import methods
    from pruned_perf.pruning.calibration import choose_source
    from pruned_perf.pruning.sizing import count_params
    from pruned_perf.pruning.surgery import apply

    # Everything the user typed is checked before a model is built or a file is written.
    model_name, method = args.sizing.model, args.sizing.method
    config, sizing = _sizing(args.sizing)
    device, dtype = pick_device(args.device), parse_dtype(args.dtype)
    check_writable_dir(args.out, "--out", replaced=True)
    check_output_dir(args.out, args.overwrite, source=None if is_preset(model_name) else Path(model_name))
    methods.check_criterion(method, args.criterion)  # a bad criterion fails before the tokenizer loads
    tokenizer = load_tokenizer(model_name)
    spec = methods.calibration_spec(method, args.calib_samples, args.calib_len, args.seed)
    recipe = methods.prepare_plan(method, config, sizing, model_name, args.criterion, spec, tokenizer,
                                  choose_source(args.calib, tokenizer, model_name), args.calib_file,
                                  **args.sizing.options)

    print(f"planned: {sizing.describe(config)}")
    model = build_model(model_name, device, dtype)
    plan = recipe.plan(model)
    apply(model, plan)
    save_pruned(model, plan, args.out, tokenizer=tokenizer, overwrite=args.overwrite)
    print(f"achieved: {count_params(config, plan):,} parameters; saved to {args.out}")
    return 0


def cmd_fetch(model: str) -> int:
    from pruned_perf.llama.models import PRETRAINED

    path = PRETRAINED[model](verify=True)
    print(f"{model}: {path}")
    return 0


def cmd_overhead(args: OverheadArgs) -> int:
    from pruned_perf.bench import overhead

    return overhead.run(args)


def _overhead_args(ns: argparse.Namespace) -> OverheadArgs:
    from pruned_perf.bench.overhead import OverheadArgs

    return _fields_from(OverheadArgs, ns)


def _parsed_flag(parse):
    """argparse shows an ArgumentTypeError's own text; a method's parser raises ValueError naming the value."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _add_sizing_args(parser: argparse.ArgumentParser) -> None:
    """--model, --method, the size, and every method's own options, with help built from the registry."""
    from pruned_perf.llama.models import PRESETS
    from pruned_perf.pruning.methods import METHODS

    parser.add_argument("--model", required=True, help=f"a preset ({', '.join(PRESETS)}) or a local checkpoint "
                        "directory")
    parser.add_argument("--method", required=True, help=", ".join(METHODS))
    group = parser.add_mutually_exclusive_group()
    meanings = [f"{name}: {m.RATIO_MEANS}" for name, m in METHODS.items() if getattr(m, "RATIO_MEANS", None)]
    group.add_argument("--ratio", type=float, help="; ".join(meanings))
    group.add_argument("--target-params", help="e.g. 4.9B: pick the setting whose count is closest")
    for key, (option, takers) in _method_options().items():
        help_text = f"{', '.join(takers)}: {option.help}"
        if option.parse is None:
            parser.add_argument(option.flag, dest=key, action="store_false", default=None, help=help_text)
        else:
            parser.add_argument(option.flag, dest=key, type=_parsed_flag(option.parse), metavar=option.metavar,
                                help=help_text)


def _criterion_help() -> str:
    from pruned_perf.pruning.methods import METHODS

    return "; ".join(f"{name}: {'|'.join(m.CRITERIA)}" for name, m in METHODS.items()) + " (default: the first)"


# Their options come from the method registry, which imports torch: the parser holds them only when one of
# these commands runs, so that the results commands start without torch.
PRUNING_COMMANDS = ("size", "prune")


def build_parser(with_methods: bool = True) -> argparse.ArgumentParser:
    """The whole command tree; `with_methods=False` leaves out size's and prune's options."""
    parser = argparse.ArgumentParser(prog="pruned-perf", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("size", help="the setting and parameter count a target gives (no weights)")
    if with_methods:
        _add_sizing_args(p)
    p.set_defaults(func=cmd_size, typed=SizingArgs.from_namespace)

    p = sub.add_parser("info", help="parameters and per-layer shapes of a preset or directory")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info, typed=lambda ns: _fields_from(InfoArgs, ns))

    p = sub.add_parser("prune", help="prune a model and save weights + plan")
    if with_methods:
        _add_sizing_args(p)
        p.add_argument("--criterion", help=_criterion_help())
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", help="float16, bfloat16 or float32")
    p.add_argument("--calib", help="builtin (text that ships with Python; needs a tokenizer) or tokens "
                   "(deterministic token ids); default: builtin where the model has a tokenizer, else tokens")
    p.add_argument("--calib-file", help="UTF-8 text to calibrate on instead")
    p.add_argument("--calib-samples", type=int, help="default: the method's reference value")
    p.add_argument("--calib-len", type=int, help="tokens per sample; default: the method's reference value")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", required=True, metavar="DIR", help=f"the pruned model's directory ({PARENTS_HELP})")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_prune, typed=PruneArgs.from_namespace)

    p = sub.add_parser("fetch", help="download and convert a pretrained model into the cache (done on first "
                       "use anyway; this does it now and checks every file)")
    p.add_argument("model", choices=("smollm2-135m",))
    p.set_defaults(func=cmd_fetch, typed=lambda ns: ns.model)

    p = sub.add_parser("overhead", help="does measuring cost time? raw generate calls against the suite's "
                       "timed calls, alternating (exit 1 beyond 3%%)")
    p.add_argument("--model", required=True, help="preset name or local model directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (float16 on cuda, float32 on cpu), float16, bfloat16 "
                   "or float32")
    p.add_argument("--input-tokens", type=int, default=12)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--backend", default="eager", help="eager or static (KV cache)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per side, alternating")
    p.set_defaults(func=cmd_overhead, typed=_overhead_args)

    from pruned_perf import cli_history, cli_results

    cli_results.add_commands(sub)
    cli_history.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, passed_on = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(with_methods=command in PRUNING_COMMANDS).parse_args(argv)
    if passed_on and not hasattr(args, "pytest_args"):
        print(f"error: {command} takes no arguments after --: {' '.join(passed_on)}", file=sys.stderr)
        return 2
    if passed_on:
        args.pytest_args = passed_on  # `bisect`: options for the perf suite of every A/B
    try:
        return args.func(args.typed(args))  # every handler takes its typed arguments
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
