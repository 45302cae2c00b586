"""The benchmark that decides: STRATO-PEFT against LoRA's whole frontier and the cheap alternatives.

Every arm is trained for seeds 42, 43, 44 through the normal training path (``strato_peft.training.run.train``), so
wall time includes model loading, STRATO's search and the final held-out evaluation, the same for every arm. Runs
go to ``bench/runs/strato_vs_baselines/<task>/`` (not committed: they hold adapters) and are skipped when complete,
so an interrupted benchmark resumes where it stopped. The summary goes to
``bench/results/strato_vs_baselines.{json,md,png}``. This file is the command line and the summary; the tasks and
arms are in bench_arms.py, training them in bench_runs.py, the verdicts in bench_verdicts.py, the report in
bench_report.py.

Tasks:
  tweets    all-MiniLM-L6 on tweet-sentiment (3 classes), 3,000 training tweets, 2 epochs; scored by
            accuracy on the fixed 8,000-tweet held-out split (the same split for every arm and seed).
  addition  SmolLM2-135M-Instruct SFT on BIG-bench's unnatural_addition_2_digit ("45 - 15 =" -> "60": the minus sign
            means plus), 2,000 training rows, 2 epochs, chat template; scored by exact match of greedy
            generations on a fixed 4,000-row held-out split (of 8,100; the same for every arm and seed). Chosen
            because the rule contradicts what the model knows (the base model answers the subtraction), so only
            training moves the score, and it needs 2-digit arithmetic, which a 135M model does imperfectly, so the
            score depends on how much the adapter can learn; 8,100 rows allow a 4,000-row held-out set (sampling
            error <= 0.8 points) with 2,000 training rows left over, and answers are unambiguous numbers.
            Needs the bigbench tarball (see data/sources.py; STRATO_BIGBENCH_TARBALL may point at a small
            tarball holding only this task).

Arms: LoRA on all linear layers at r = 1, 2, 4, 8, 16 (the frontier), LoRA q,v r=8 (the original's baseline), LoRA
MLP-only at r=8 all-linear's params, AdaLoRA (average rank 4, all linear), DoRA at half rank (r=4, all linear), and
STRATO knapsack / PPO at 0.5x and 0.7x LoRA r=8 all-linear's params; STRATO knapsack at 0.125x, 0.25x, 1x and 2x
(the params of LoRA r1, r2, r8, r16), so that STRATO has a point at each frontier rank's cost and the summary can say
whether it beats LoRA's whole curve, and at 0.0625x (half r1's, below the curve: it beats LoRA there if it scores as
r1 does at twice its cost), and at the params midpoints between LoRA's grid points (0.1875x, 0.375x, 0.75x, 1.5x:
a budget there buys LoRA's lower rank; the summary also sets STRATO against LoRA's curve interpolated in params);
LoRA r1 / r2 / r4 / r8 on the top half of the layers only (lora_top_half_r<r>, about
0.0625x / 0.125x / 0.25x / 0.5x: the simple sparse placement STRATO must beat); below the curve the map used other
ways (strato_knapsack_b0.0625_share; strato_breadth_b0.0625 and strato_layers_b0.0625: the breadth and layers
solvers); ablations at 0.5x (strato_uniform_b0.5, strato_knapsack_b0.5_gradient: the
gradient-aligned start, strato_uniform_b0.5_nosched; strato_knapsack_b0.5_mappick and _share: the gate forced open,
the map's pick under each map_value); alternatives at 0.125x (strato_knapsack_b0.125_top: the gradient start at rank
2 on the modules the map values most per cost; strato_knapsack_b0.125_probes: probes choose among the candidates);
the rank scheduler's worth: strato_knapsack_b<B>_sched / _nosched at every budget (the summary pairs them by seed;
the default is off since fd6ca09, and runs made with it on under the old default are the _sched arms).
A complete run is reused only if it was trained as its arm is defined now (config_drift): a default that changed
since, or another lr, makes the arm fail with the differing keys named, never a silent mix.
`--share-runs`: a STRATO arm whose search (`strato plan`, seconds with the map cached) shows that it would train a
complete run exactly (LoRA's at the plan's uniform rank, or another STRATO arm's at its budget; gate closed, no
scheduler, peft's start, the same settings: bench/shared_runs.py) is recorded as that run instead of trained again;
the report names every such arm.

Learning rates: each arm trains at its own lr, chosen on validation rows (TUNED_LR in bench_arms.py; `--validation N
--learning-rate LR` runs the grid), because one shared lr favours whichever method learns fastest at it (at 5e-4
every method under-trained and STRATO's gradient-aligned start led; at each method's best lr that lead was gone).
`--lr-protocol shared` trains every arm at the task's 5e-4 instead (the earlier protocol; own default folders).

    python bench/strato_vs_baselines.py --task tweets            # everything (hours on 2 CPU cores)
    python bench/strato_vs_baselines.py --task tweets --arms lora_all_r8 strato_knapsack_b0.5 --seeds 42
    python bench/strato_vs_baselines.py --task tweets --summarize-only
    python bench/strato_vs_baselines.py --task tweets --summarize-only --earlier-results OLD.json --pairs ARM_A:ARM_B
    python bench/strato_vs_baselines.py --task addition --base-model --seeds 42   # also score the untrained model
    python bench/strato_vs_baselines.py --merge-results TWEETS.json ADDITION.json --out OUT  # one report of both
    (one process per seed, run side by side, shares a GPU; the summary covers every task that has runs)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_arms import LR_PROTOCOLS, TASKS, arms  # noqa: E402
from bench_report import markdown, pareto_png  # noqa: E402
from bench_runs import base_model_score, held_out_size, run_arms, trained_setting  # noqa: E402
from bench_verdicts import (curve_verdict, higher_bar, judge_original_criteria, paired_row,  # noqa: E402
                            reference_order, scheduler_worth)
from common import add_output_args, provenance, refuse_existing_report, report_file, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent


def summarize(task: str, runs_dir: Path | list[Path], only: Optional[list[str]] = None,
              earlier: Optional[list[Path]] = None, pairs: Optional[list[tuple[str, str]]] = None) -> dict[str, Any]:
    """Per-arm statistics (via strato compare's machinery; one runs folder or several, e.g. budgets run on different
    days, or seeds added later) and the verdicts of the issue; ``only``: these arms (configurations) alone;
    ``earlier``: results files of this benchmark whose arms (per-seed scores, costs) join those of the runs where no
    run folder has them; ``pairs``: (a, b) arms to compare seed by seed."""
    from strato_peft.experiments.compare import run_folder

    import earlier_results
    import shared_runs

    spec = TASKS[task]
    dirs = runs_dir if isinstance(runs_dir, list) else [runs_dir]
    comparison = runs_comparison(dirs, spec["metric"])
    if comparison is None:  # no run at hand: a summary of the results files alone, or nothing to summarize
        recorded = next((c for c in (earlier_results.recorded_comparison(p, task) for p in earlier or []) if c), None)
        if recorded is None:
            raise SystemExit(f"{task}: no run under {', '.join(map(str, dirs)) or 'any --runs-dir'} and no "
                             "--earlier-results file holds this task: nothing to summarize")
        comparison = {**recorded, "configurations": [], "runs": [], "run_counts": {}}
    rows = {row["name"]: row for row in comparison["configurations"]}
    scale = spec["score_scale"]
    summary: dict[str, Any] = {"arms": {}, "verdicts": {}}
    for name, row in rows.items():
        if only and name not in only:
            continue
        runs = [r for r in comparison["runs"] if r["configuration"] == name and r["status"] == "complete"
                and spec["metric"] in r["metrics"]]
        n_eval = held_out_size(run_folder(comparison, runs[0])) if runs else None

        def settings(key: str, runs: list = runs) -> list[Any]:
            return [trained_setting(run_folder(comparison, r), key) for r in runs]
        own_peak = all(r["peak_memory_scoped"] for r in runs)  # older runs shared a process with earlier arms
        mean = row["mean"]
        summary["arms"][name] = {
            "n": row["n"], "mean": None if mean is None else mean * scale,
            "std": None if row["std"] is None else row["std"] * scale,
            "seed_scores": {r["seed"]: r["metrics"][spec["metric"]] * scale for r in runs},
            "learning_rates": sorted({float(lr) for lr in settings("training.learning_rate") if lr is not None}),
            # whether the rank scheduler ran (STRATO arms; its default changed, so it is read from each run)
            "scheduler": sorted({v for v in settings("peft.strato.scheduler") if v is not None})
            if name.startswith("strato_") else [],
            "held_out_examples": n_eval,
            "sampling_error": None if mean is None or not n_eval else
            scale * math.sqrt(mean * (1 - mean) / n_eval),
            "params": row.get("trainable_params"), "adapter_flops": row.get("adapter_flops_per_token"),
            "peak_memory_bytes": row.get("peak_memory_bytes") if own_peak else None,
            "wall_seconds": row.get("wall_time_seconds"),
            "original_criteria": row.get("verdicts"),
            "seed_costs": {r["seed"]: {"params": r["trainable_params"], "adapter_flops": r["adapter_flops_per_token"],
                                       "peak_memory_bytes": r["peak_memory_bytes"] if own_peak else None,
                                       "wall_seconds": r["wall_time_seconds"]} for r in runs},
        }
    summary["shared"] = shared_runs.merge(summary["arms"], shared_runs.records(dirs), scale, only)
    summary["earlier"] = {}
    for path in earlier or []:
        for name, seeds in earlier_results.join(summary["arms"], summary["shared"], path, task, scale, only).items():
            summary["earlier"].setdefault(name, {})[str(path)] = seeds
    summary["comparison"] = {k: comparison[k] for k in ("metric", "baseline", "thresholds", "run_counts")}
    judge_original_criteria(summary)
    summary["pairs"] = {f"{a} - {b}": paired_row(summary["arms"], a, b) for a, b in pairs or []}
    summary["verdicts"] = higher_bar(summary["arms"])
    summary["curve"] = curve_verdict(summary["arms"], summary["verdicts"])
    summary["scheduler"] = scheduler_worth(summary["arms"])
    return summary


def runs_comparison(dirs: list[Path], metric: str) -> Optional[dict[str, Any]]:
    """compare's table of the runs in ``dirs`` with the reference arm as its baseline (LoRA r8, else the highest
    frontier rank: validation, CPU re-runs; else compare's default); None where no folder holds a run."""
    from strato_peft.experiments.collect import find_run_dirs
    from strato_peft.experiments.compare import CompareError, build_comparison

    dirs = [d for d in dirs if d.is_dir() and find_run_dirs(d)]
    if not dirs:
        return None
    for reference in reference_order():
        try:
            return build_comparison(dirs, baseline=reference, metric=metric)
        except CompareError:
            continue
    try:
        return build_comparison(dirs, metric=metric)
    except CompareError as exc:
        raise SystemExit(f"runs in {', '.join(map(str, dirs))}: {exc}") from None


def merge_report(args: argparse.Namespace) -> int:
    """``--merge-results``: the tasks' summaries from their results files, written as one report at ``--out``."""
    import merge_results

    summaries, sources = merge_results.load([Path(p) for p in args.merge_results], args.task)
    publish(args, summaries, {"sources": sources}, merge_results.sources_markdown(sources) + "\n")
    return 0


def publish(args: argparse.Namespace, summaries: dict[str, dict[str, Any]], extra: dict[str, Any],
            head: str = "") -> None:
    """The report at ``--out``: JSON (provenance, the tasks' summaries, ``extra``), markdown (note, ``head``, a
    section per task), the figure; printed as well."""
    out = Path(args.out)
    result = {**provenance(args), "tasks": summaries, **extra}
    body = (f"{args.note}\n\n" if args.note else "") + head + "\n".join(markdown(t, s) for t, s in summaries.items())
    write_report(out, result, "STRATO-PEFT vs LoRA's frontier and the cheap alternatives", body,
                 overwrite=args.overwrite)
    pareto_png(summaries, report_file(out, ".png"))
    print(body)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), nargs="+", default=sorted(TASKS))
    parser.add_argument("--arms", nargs="+", help="subset of arms (default: all); with --summarize-only, the arms "
                        "the summary covers")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--runs-dir", nargs="+", help="default: bench/runs/strato_vs_baselines[_validation]"
                        "[_shared_lr]; with "
                        "--summarize-only several folders may be given, summarized as one set of runs")
    add_output_args(parser, None, "default: bench/results/strato_vs_baselines[_validation][_shared_lr]")
    parser.add_argument("--validation", type=int, metavar="N",
                        help="score every run on N validation rows (from the training pool, outside the held-out "
                        "split) instead of the held-out split: for choosing settings; own runs and results folders")
    parser.add_argument("--lr-protocol", choices=LR_PROTOCOLS, default="tuned",
                        help="tuned (default): each arm at its lr chosen on validation rows (TUNED_LR); shared: "
                        "every arm at the task's 5e-4. Runs of the two protocols need separate --runs-dir folders")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help="train every arm at LR instead (runs named <arm>_lr<LR>_seed<N>): for choosing a "
                        "method's learning rate on validation rows")
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild the summary from finished runs")
    parser.add_argument("--earlier-results", nargs="+", default=[], metavar="JSON",
                        help="with --summarize-only: also take arms from these results files of this benchmark (per-seed "
                        "scores, costs) where no runs folder has them, e.g. when the run folders are gone; marked")
    parser.add_argument("--pairs", nargs="+", default=[], metavar="A:B",
                        help="with --summarize-only: also compare arm A with arm B seed by seed (gain, paired p, call); "
                        "B = lora_line: LoRA's curve as a straight line between the ranks around A's params")
    parser.add_argument("--merge-results", nargs="+", default=[], metavar="JSON",
                        help="write one report of the --task tasks from these results files, a task each, as they "
                        "hold them (no runs, nothing recomputed): e.g. tweets' and addition's held-out reports")
    parser.add_argument("--note", default="", help="how the runs were made (threads, machine load), for the report")
    parser.add_argument("--in-process", action="store_true",
                        help="train in this process and write no summary (what each isolated run executes)")
    parser.add_argument("--base-model", action="store_true",
                        help="also score the untrained model on causal-LM tasks (once; cached in the runs folder)")
    parser.add_argument("--share-runs", action="store_true",
                        help="a STRATO arm whose search (strato plan) shows it would train a complete run exactly "
                        "(LoRA's at its uniform rank, or another STRATO arm's at its budget: gate closed, no "
                        "scheduler, peft's start) is recorded as that run, not trained again")
    args = parser.parse_args(argv)
    suffix = ("_validation" if args.validation else "") + ("_shared_lr" if args.lr_protocol == "shared" else "")
    if args.merge_results and (args.summarize_only or args.earlier_results or args.pairs or args.runs_dir):
        parser.error("--merge-results takes finished results files alone (no runs folders, --summarize-only, "
                     "--earlier-results or --pairs)")
    args.runs_dir = args.runs_dir or [str(ROOT / "runs" / f"strato_vs_baselines{suffix}")]
    if len(args.runs_dir) > 1 and not args.summarize_only:
        parser.error("--runs-dir: several folders only with --summarize-only (new runs go to one folder)")
    args.out = args.out or str(ROOT / "results" / f"strato_vs_baselines{suffix}")
    if not args.in_process:  # before any run: an hour of training must not end on a refused report
        refuse_existing_report(parser, args.out, args.overwrite, (".png",))
    if (args.earlier_results or args.pairs) and not args.summarize_only:
        parser.error("--earlier-results and --pairs go with --summarize-only")
    pairs = []
    for pair in args.pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            parser.error(f"--pairs: expected A:B (two arm names), got {pair!r}")
        pairs.append((a, b))

    if args.merge_results:
        return merge_report(args)

    summaries, logs = {}, {}
    for task in args.task:
        runs_dir = Path(args.runs_dir[0]) / task
        names = args.arms or list(arms(task))
        unknown = sorted(set(names) - set(arms(task)))
        if unknown:
            parser.error(f"--arms: unknown {unknown}; expected among {list(arms(task))}")
        if args.base_model and not args.summarize_only and TASKS[task]["metric"].startswith("exact_match"):
            base_model_score(task, runs_dir)
        if not args.summarize_only:
            logs[task] = run_arms(task, names, args.seeds, runs_dir, isolate=not args.in_process,
                                  validation=args.validation, learning_rate=args.learning_rate,
                                  lr_protocol=args.lr_protocol, share=args.share_runs)
    if args.in_process:
        return 0 if all(e["status"] != "failed" for log in logs.values() for e in log) else 1
    import earlier_results

    earlier = [Path(p) for p in args.earlier_results]
    for task in TASKS:  # the report covers every task that has runs, not only the ones run now
        runs_dirs = [Path(d) / task for d in args.runs_dir if (Path(d) / task).is_dir()]
        # --summarize-only of a task no run folder holds: its summary made again from the results files alone
        rebuilt = args.summarize_only and task in args.task and any(
            earlier_results.recorded_comparison(p, task) is not None for p in earlier)
        if runs_dirs or rebuilt:
            summaries[task] = summarize(task, runs_dirs, args.arms if args.summarize_only else None, earlier, pairs)
            base = next((d for d in runs_dirs if (d / "base_model_eval.json").is_file()), None)
            if base is not None:
                summaries[task]["base_model"] = base_model_score(task, base)
    failed = [f"{task} {e['arm']} seed {e['seed']}" for task, log in logs.items() for e in log
              if e["status"] == "failed"]
    if not summaries:  # nothing to report: an earlier report at --out stays as it was
        print(f"no complete runs under {', '.join(args.runs_dir)}"
              + (f"; failed: {', '.join(failed)}" if failed else "") + "; no report written", file=sys.stderr)
        return 1
    publish(args, summaries, {"run_log": logs})
    if failed:
        print(f"failed runs (the report covers the complete ones): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
