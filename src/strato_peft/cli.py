"""The ``strato`` command line: ``train``, ``plan``, ``validate``, ``eval``, ``compare``, ``run``, ``report`` and
``methods``.

User errors (bad config, data, paths) print one line and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from strato_peft.errors import StratoError

PLATFORMS = ("auto", "cuda", "rocm", "mps", "cpu")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: the embedded default job)")
    parser.add_argument("--seed", type=int, help="run seed (overrides the config's seed)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="set a config field, e.g. peft.rank=16 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``strato`` (``main.py`` uses the ``train`` sub-parser's flags)."""
    parser = argparse.ArgumentParser(prog="strato", description="Parameter-efficient fine-tuning (STRATO-PEFT).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from a YAML config")
    add_train_arguments(train)

    plan = sub.add_parser("plan", help="run STRATO's search alone: the allocation `train` would train, no training")
    _config_arguments(plan)
    plan.add_argument("--output", help="write the whole plan as JSON here (as strato_plan.json records it)")
    plan.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    plan.add_argument("--fast-dev-run", action="store_true", help="the search as a fast dev run of train makes it")
    plan.add_argument("--platform", choices=PLATFORMS, default=None, help="force a platform (default: auto)")

    validate = sub.add_parser("validate", help="validate a config and print it fully resolved")
    _config_arguments(validate)

    evaluate = sub.add_parser("eval", help="evaluate a base model, an adapter or a run on benchmarks")
    add_eval_arguments(evaluate)

    compare = sub.add_parser("compare", help="compare finished runs: seed statistics, baseline tests, verdicts")
    add_compare_arguments(compare)

    sweep = sub.add_parser("run", help="train configs x seeds (skipping finished runs)")
    sweep.add_argument("--config", help="one YAML config")
    sweep.add_argument("--config-dir", help="a folder: every *.yaml in it")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds (default: 42 43 44)")
    sweep.add_argument("--phase", default="main", help="phase name in the experiment tag (default: main)")
    sweep.add_argument("--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="set a config field in every run (repeatable)")
    for flag, helptext in (("--fast-dev-run", "a few steps per run"), ("--overwrite", "re-run finished runs"),
                           ("--no-wandb", "disable Weights & Biases"), ("--profile", "torch.profiler window"),
                           ("--debug", "show tracebacks")):
        sweep.add_argument(flag, action="store_true", help=helptext)
    sweep.add_argument("--output-dir", help="results root (default: each config's logging.output_dir)")
    sweep.add_argument("--platform", choices=PLATFORMS, default=None, help="force a platform (default: auto)")

    report = sub.add_parser("report", help="write an HTML and a Markdown report of a results folder")
    add_compare_arguments(report)

    sub.add_parser("methods", help="list the available fine-tuning methods")
    return parser


def add_compare_arguments(parser: argparse.ArgumentParser, results_dir_flag: bool = False) -> None:
    """Flags of ``strato compare``; ``python scripts/compare.py`` takes ``--results_dir`` instead of RESULTS_DIR."""
    if results_dir_flag:
        parser.add_argument("--results-dir", "--results_dir", dest="results_dir", required=True, nargs="+",
                            help="folder(s) holding the runs (results/<model>/<task>/<run>/)")
    else:
        parser.add_argument("results_dir", metavar="RESULTS_DIR", nargs="+",
                            help="folder(s) holding the runs (e.g. results); several are compared as one set")
    parser.add_argument("--baseline", help="configuration to compare against (default: lora_r8*, else the first)")
    parser.add_argument("--metric", help="metric to compare (default: eval_accuracy, else eval_loss)")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir",
                        help="where comparison.csv/.json go (default: RESULTS_DIR when there is one; earlier "
                             "ones are replaced)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``strato eval`` (shared with ``python scripts/eval.py``)."""
    parser.add_argument("--checkpoint", help="a run folder (results/...) or an adapter folder")
    parser.add_argument("--model", help="a base model: packaged short name, hub id or local folder")
    parser.add_argument("--tasks", default="mmlu", help="comma-separated: mmlu, gsm8k, humaneval, classification, "
                        "exact_match, perplexity (default: mmlu)")
    parser.add_argument("--limit", type=int, help="score at most N examples per task")
    parser.add_argument("--shots", type=int, help="few-shot examples (default: 5 for mmlu, 0 otherwise)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size for scoring and generation")
    parser.add_argument("--num-samples", type=int, default=1, help="humaneval: completions per problem")
    parser.add_argument("--temperature", type=float, default=0.0, help="generation temperature (0 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, help="generation length cap")
    parser.add_argument("--reference", action="store_true", help="humaneval: run the canonical solutions")
    parser.add_argument("--log-samples", action="store_true", help="write per-sample records")
    parser.add_argument("--output-dir", help="where eval_results.json goes (default: the run or adapter folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results of the same tasks")
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot picks and sampling")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``strato train`` (shared with ``python main.py``)."""
    _config_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, print the resolved config, parameters, FLOPs and memory; train nothing")
    parser.add_argument("--fast-dev-run", action="store_true", help="a few steps on a few examples, end to end")
    parser.add_argument("--output-dir", help="results root (default: logging.output_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run's results")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    parser.add_argument("--platform", choices=PLATFORMS, default=None, help="force a platform (default: auto)")
    parser.add_argument("--no-wandb", action="store_true", help="disable Weights & Biases even if the config enables it")
    parser.add_argument("--profile", action="store_true",
                        help="capture a torch.profiler window of 10 steps per epoch (TensorBoard trace in logs/)")


def _load(args: argparse.Namespace):
    from strato_peft.config import load_config

    return load_config(args.config, args.override, args.seed)


def _print_plan(cfg, plan: dict) -> None:
    import yaml

    from strato_peft.cost import human_bytes

    print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False).rstrip())
    print("---")
    pct = 100.0 * plan["trainable_params"] / max(plan["total_params"], 1)
    print(f"method:                   {plan['method']} ({plan['task_type']}, platform {plan['platform']})")
    print(f"trainable / total params: {plan['trainable_params']:,} / {plan['total_params']:,} ({pct:.4f}%)")
    print(f"adapter FLOPs per token:  {plan['adapter_flops_per_token']:,} (forward + backward)")
    print(f"base FLOPs per token:     {plan['base_flops_per_token']:,} (frozen base forward + backward)")
    mem = plan["memory_breakdown"]
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in mem.items())
    print(f"training memory estimate: {human_bytes(plan['memory_estimate_bytes'])} ({parts})")
    if "strato" in plan:
        st = plan["strato"]
        limits = ", ".join(f"{d} {v:,.0f}" for d, v in st["budget_limits"].items())
        usage = ", ".join(f"{d} {100 * u:.1f}%" for d, u in st["budget_usage"].items())
        source = (f"{st['budget_fraction']} x {st['reference']}" if st["budget_fraction"] is not None
                  else "absolute")
        print(f"STRATO budget:            {limits} ({source})")
        print(f"STRATO plan costs:        {usage} of the budget; {st['modules']} modules, total rank "
              f"{st['total_rank']} ({st['solver']})")
    print(f"results would go to:      {plan['run_dir']}")


def cmd_train(args: argparse.Namespace) -> int:
    """``strato train``: dry-run plan or a full training run."""
    from strato_peft.training.run import TrainOptions, dry_run, train

    cfg = _load(args)
    options = TrainOptions(output_dir=args.output_dir, overwrite=args.overwrite, resume=args.resume,
                           fast_dev_run=args.fast_dev_run, platform=args.platform, no_wandb=args.no_wandb,
                           profile=args.profile)
    if args.dry_run:
        _print_plan(cfg, dry_run(cfg, options))
        return 0
    result = train(cfg, options)
    m = result.metrics
    score = {k: round(v, 4) for k, v in m["final_eval"].items() if isinstance(v, float)}
    print(json.dumps({"final_eval": score, "trainable_params": m["params"]["trainable"],
                      "tokens_per_second": m["train"]["tokens_per_second"]}, indent=1))
    for warning in m.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"Results written to {result.run_dir}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """``strato plan``: STRATO's search on the config's model and data; print the plan, optionally write it."""
    from pathlib import Path

    from strato_peft.errors import ConfigError
    from strato_peft.outputs import atomic_write_json
    from strato_peft.training.run import TrainOptions, search_plan

    cfg = _load(args)
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.overwrite:
        raise ConfigError(f"--output: {out} exists; give --overwrite to replace it")
    plan = search_plan(cfg, TrainOptions(fast_dev_run=args.fast_dev_run, platform=args.platform))
    search = plan["search"]
    ranks = sorted(set(plan["allocation"].values()))
    gain = "n/a" if search["map_gain"] is None else f"{100 * search['map_gain']:.2f}%"
    how = f"searched, map gain {gain}" if search["searched"] else f"no search: {search['skipped']}"
    print(f"solver:        {plan['solver']} ({how})")
    print(f"allocation:    {plan['modules']} modules, total rank {plan['total_rank']}, ranks {ranks}")
    usage = ", ".join(f"{d} {100 * u:.1f}%" for d, u in plan["budget_usage"].items())
    print(f"budget usage:  {usage}")
    print(f"search time:   {search['total_seconds']:.1f} s (map {search['sensitivity_seconds']:.1f} s, "
          f"{search['probes']} probes)")
    if out is not None:
        atomic_write_json(out, plan)
        print(f"Plan written to {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``strato validate``: check the config (and that local data files exist) and print it resolved."""
    import yaml

    from strato_peft.data.sources import check_source

    cfg = _load(args)
    check_source(cfg.task)
    if cfg.peft.config_file:
        from strato_peft.methods.apply import load_peft_config_file

        load_peft_config_file(cfg.peft.config_file)
    print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False).rstrip())
    print(f"OK: {args.config or 'default config'} is valid")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """``strato methods``: the registered methods and one line on each."""
    from strato_peft.methods import available_methods, get_method

    for name in available_methods():
        print(f"{name:14s} {get_method(name).description}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``strato eval``: score a model on the requested tasks and write eval_results.json."""
    import strato_peft.eval  # noqa: F401  registers the tasks
    from strato_peft.eval.base import EvalOptions
    from strato_peft.eval.runner import evaluate

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    options = EvalOptions(limit=args.limit, shots=args.shots, batch_size=args.batch_size, log_samples=args.log_samples,
                          seed=args.seed, num_samples=args.num_samples, temperature=args.temperature,
                          max_new_tokens=args.max_new_tokens, reference=args.reference)
    path, content = evaluate(tasks, options, checkpoint=args.checkpoint, model=args.model,
                             output_dir=args.output_dir, overwrite=args.overwrite)
    for name in tasks:
        entry = content["tasks"][name]
        flat = {k: round(v, 4) for k, v in entry["metrics"].items() if isinstance(v, float)}
        print(f"{name}: {json.dumps(flat)} (n={entry['n']}, {entry['seconds']:.1f} s)")
        if entry.get("warning"):
            print(f"WARNING: {name}: {entry['warning']}", file=sys.stderr)
    print(f"Results written to {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``strato compare``: per-configuration statistics and verdicts; writes comparison.csv and .json."""
    from strato_peft.experiments import format_table
    from strato_peft.experiments.report import write_comparison

    done = write_comparison(args.results_dir, args.output_dir, baseline=args.baseline, metric=args.metric)
    print(format_table(done.comparison))
    print(f"Comparison written to {done.csv} and {done.json}; {len(done.plots)} plots in {done.out_dir / 'plots'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``strato run``: configs x seeds; exit 1 when any run failed (all are attempted)."""
    from strato_peft.experiments.sweep import config_files, run_sweep
    from strato_peft.training.run import TrainOptions

    files = config_files(args.config, args.config_dir)
    options = TrainOptions(output_dir=args.output_dir, overwrite=args.overwrite, fast_dev_run=args.fast_dev_run,
                           platform=args.platform, no_wandb=args.no_wandb, profile=args.profile)
    result = run_sweep(files, args.seeds, options, args.override, args.phase)
    counts: dict[str, int] = {}
    for item in result.items:
        counts[item.status] = counts.get(item.status, 0) + 1
    print("sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for item in result.failed:
        print(f"failed: {item.tag or item.config} (seed {item.seed}): {item.detail.splitlines()[0]}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``strato report``: report.html (self-contained) and report.md with tables, verdicts and plots."""
    from strato_peft.experiments.html_report import write_report

    html_path, md_path = write_report(args.results_dir, args.output_dir, baseline=args.baseline, metric=args.metric)
    print(f"Report written to {html_path} and {md_path}")
    return 0


COMMANDS = {"train": cmd_train, "plan": cmd_plan, "validate": cmd_validate, "eval": cmd_eval, "compare": cmd_compare,
            "run": cmd_run, "report": cmd_report, "methods": cmd_methods}


def run_command(args: argparse.Namespace) -> int:
    """Dispatch with the error contract: user errors -> one line on stderr, exit code 2."""
    debug = getattr(args, "debug", False)
    _quiet_libraries(debug)
    try:
        return COMMANDS[args.command](args)
    except StratoError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; an unfinished run can be continued with --resume", file=sys.stderr)
        return 130


def _quiet_libraries(debug: bool) -> None:
    import logging
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if debug:
        logging.basicConfig(level=logging.DEBUG)
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("bitsandbytes", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``strato`` console script."""
    args = build_parser().parse_args(argv)
    return run_command(args)


def _script_entry(prog: str, command: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                  argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=f"Same as `strato {command}`.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.command = command
    return run_command(args)


def eval_py(argv: Optional[Sequence[str]] = None) -> int:
    """``python scripts/eval.py --checkpoint DIR``: the same as ``strato eval``."""
    return _script_entry("scripts/eval.py", "eval", add_eval_arguments, argv)


def compare_py(argv: Optional[Sequence[str]] = None) -> int:
    """``python scripts/compare.py --results_dir DIR``: the same as ``strato compare DIR``."""
    return _script_entry("scripts/compare.py", "compare",
                         lambda parser: add_compare_arguments(parser, results_dir_flag=True), argv)


def main_py(argv: Optional[Sequence[str]] = None) -> int:
    """``python main.py --config FILE --seed 42``: the original framework's form of ``strato train``."""
    return _script_entry("main.py", "train", add_train_arguments, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
