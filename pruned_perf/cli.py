"""`pruned-perf`: size, info, prune, fetch, overhead; compare, report, plot, baseline, merge (cli_results).

Exit codes: 0 success, 1 a regression or a failed check, 2 bad input (one message on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pruned_perf.atomic import PARENTS_HELP
from pruned_perf.errors import UserError

DESCRIPTION = ("Prune LLaMA-family models (size, prune, info, fetch), check what measuring costs (overhead), "
               "and read perf results: compare against a baseline, report, plot, merge shards, store baselines. "
               "Exit codes: 0 success, 1 a regression or a failed check, 2 bad input.")

def _layers_arg(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, e.g. 4:30, got {text!r}") from None
    return start, end


def _add_sizing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a preset (llama-7b, vicuna-13b, llama-3-8b, "
                        "tiny-llama, tiny-gqa) or a local checkpoint directory")
    parser.add_argument("--method", required=True, help="dense, depth, llm-pruner or flap")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ratio", type=float, help="depth: fraction of blocks; llm-pruner: per-layer width "
                       "ratio r; flap: fraction p of attention+MLP parameters")
    group.add_argument("--target-params", help="e.g. 4.9B: pick the setting whose count is closest")
    parser.add_argument("--no-plus-rule", dest="plus_rule", action="store_false", default=None,
                        help="depth: let the first 4 and last 2 blocks be removed too")
    parser.add_argument("--layers", type=_layers_arg, help="llm-pruner: layers START:END to prune "
                        "(default 4:L-2)")
    parser.add_argument("--no-bias", dest="bias", action="store_false", default=None,
                        help="flap: no bias compensation")


def _option_methods() -> dict[str, set[str]]:
    """Each method-specific option and the methods that take it."""
    from pruned_perf.pruning.methods import METHODS

    table = dict.fromkeys(("--ratio", "--target-params"), set(METHODS) - {"dense"})
    for key, flag in (("plus_rule", "--no-plus-rule"), ("layers", "--layers"), ("bias", "--no-bias")):
        table[flag] = {name for name, method in METHODS.items() if key in method.OPTIONS}
    return table


def _check_options(args) -> None:
    """An option the method does not take is an error: ignoring it would prune differently than asked."""
    given = {"--ratio": args.ratio, "--target-params": args.target_params, "--no-plus-rule": args.plus_rule,
             "--layers": args.layers, "--no-bias": args.bias}
    for flag, takers in _option_methods().items():
        if given[flag] is not None and args.method not in takers:
            raise UserError(f"{flag} does not apply to method {args.method}; "
                            f"methods that take it: {', '.join(sorted(takers))}")


def _sizing(args):
    from pruned_perf.models import model_config
    from pruned_perf.pruning import methods
    from pruned_perf.pruning.sizing import parse_param_count

    methods.get_method(args.method)  # name the bad method before touching the model
    _check_options(args)
    if (Path(args.model) / "plan.json").is_file():
        raise UserError(f"{args.model} is already pruned; prune the model it came from instead")
    config = model_config(args.model)
    target = parse_param_count(args.target_params) if args.target_params else None
    options = {"plus_rule": args.plus_rule, "layers": args.layers, "bias": args.bias}
    return config, methods.size(args.method, config, ratio=args.ratio, target=target, **options), options


def cmd_size(args) -> int:
    config, sizing, _ = _sizing(args)
    print(sizing.describe(config))
    if not sizing.exact:
        print("(the achieved count depends on the structure the method finds; `prune` reports it)")
    return 0


def cmd_info(args) -> int:
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


def cmd_prune(args) -> int:
    from pruned_perf.atomic import check_writable_dir
    from pruned_perf.bench.fingerprint import pick_device
    from pruned_perf.models import build_model, is_preset, load_tokenizer, parse_dtype
    from pruned_perf.pruning import methods
    from pruned_perf.pruning.calibration import choose_source
    from pruned_perf.pruning.sizing import count_params
    from pruned_perf.pruning.surgery import apply, check_output_dir, save_pruned

    # Everything the user typed is checked before a model is built or a file is written.
    config, sizing, options = _sizing(args)
    device, dtype = pick_device(args.device), parse_dtype(args.dtype)
    out = Path(args.out)
    check_writable_dir(out, "--out", replaced=True)
    check_output_dir(out, args.overwrite, source=None if is_preset(args.model) else Path(args.model))
    methods.check_criterion(args.method, args.criterion)  # a bad criterion fails before the tokenizer loads
    tokenizer = load_tokenizer(args.model)
    spec = methods.calibration_spec(args.method, args.calib_samples, args.calib_len, args.seed)
    recipe = methods.prepare_plan(args.method, config, sizing, args.model, args.criterion, spec, tokenizer,
                                  choose_source(args.calib, tokenizer, args.model), args.calib_file, **options)

    print(f"planned: {sizing.describe(config)}")
    model = build_model(args.model, device, dtype)
    plan = recipe.plan(model)
    apply(model, plan)
    save_pruned(model, plan, out, tokenizer=tokenizer, overwrite=args.overwrite)
    print(f"achieved: {count_params(config, plan):,} parameters; saved to {out}")
    return 0


def cmd_fetch(args) -> int:
    from pruned_perf.models import PRETRAINED

    path = PRETRAINED[args.model](verify=True)
    print(f"{args.model}: {path}")
    return 0


def cmd_overhead(args) -> int:
    from pruned_perf.bench import overhead
    return overhead.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pruned-perf", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("size", help="the setting and parameter count a target gives (no weights)")
    _add_sizing_args(p)
    p.set_defaults(func=cmd_size)

    p = sub.add_parser("info", help="parameters and per-layer shapes of a preset or directory")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("prune", help="prune a model and save weights + plan")
    _add_sizing_args(p)
    p.add_argument("--criterion", help="depth: ppl|taylor|magnitude; llm-pruner: element|vector|second; "
                   "flap: AL-AM|UL-UM (default: the first)")
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
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("fetch", help="download and convert a pretrained model into the cache (done on first "
                       "use anyway; this does it now and checks every file)")
    p.add_argument("model", choices=("smollm2-135m",))
    p.set_defaults(func=cmd_fetch)

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
    p.set_defaults(func=cmd_overhead)

    from pruned_perf.cli_results import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
