"""The report of bench/strato_vs_baselines.py: a markdown section per task (arms, criteria, the curve, paired
comparisons) and the score-versus-params figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from bench_arms import FRONTIER_ARM
from strato_peft.experiments.stats import POWER, SIGNIFICANCE

CRITERIA_ORDER = ("efficiency", "accuracy", "stability")  # the original criteria, as the reports list them


def markdown(task: str, summary: dict[str, Any]) -> str:
    """The task's section of the report: the arms' table, the criteria and higher bar, then each part of the
    summary that has entries (the curve, between ranks, below the curve, pairs, shared runs, earlier seeds, the
    scheduler)."""
    sections = (_arms_lines, _criteria_lines, _curve_lines, _between_lines, _below_curve_lines, _pairs_lines,
                _shared_lines, _earlier_lines, _scheduler_lines)
    lines = [f"## Task {task}", ""]
    for section in sections:
        lines += section(summary)
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _arms_lines(summary: dict[str, Any]) -> list[str]:
    """Per arm: seeds, lr, score, sampling error, costs, wall time, the original criteria (pass/fail)."""
    rows = []
    for name, a in sorted(summary["arms"].items(), key=lambda kv: (kv[1]["params"] or 0)):
        crit = a["original_criteria"] or {}
        ok = "/".join("pass" if (v or {}).get("passed") else "fail" if (v or {}).get("passed") is False else "n/a"
                      for v in (crit.get(k) for k in CRITERIA_ORDER)) if crit else ""  # the header's order
        std = "n/a (1 seed)" if a["std"] is None or a["n"] < 2 else f"{a['std']:.2f}"
        rows.append([name, str(a["n"]), " / ".join(f"{x:g}" for x in a.get("learning_rates") or []) or "n/a",
                     "n/a" if a["mean"] is None else f"{a['mean']:.2f} +- {std}",
                     "n/a" if a["sampling_error"] is None else f"{a['sampling_error']:.2f}",
                     f"{int(a['params'] or 0):,}", f"{int(a['adapter_flops'] or 0):,}",
                     "n/a*" if not a["peak_memory_bytes"] else f"{a['peak_memory_bytes'] / 2**20:.0f} MiB",
                     "n/a" if not a["wall_seconds"] else f"{a['wall_seconds']:.0f}", ok])
    lines = _table(["arm", "n", "lr", "score mean +- seed std", "sampling error", "params", "adapter FLOPs/token",
                    "peak memory", "wall time (s)", "original criteria"], rows)
    if summary.get("base_model"):
        b = summary["base_model"]
        lines += ["", f"Untrained model: {b['value'] * 100:.2f} ({b['metric']}, n = {b['n']}, {b['prompt_format']})."]
    if any(not a["peak_memory_bytes"] for a in summary["arms"].values()):
        lines += ["", "n/a*: these runs shared one process with the arms before them, so the recorded peak was the "
                  "process's over all of them, not the arm's own; left out (runs now get a process each)."]
    return lines


def _criteria_lines(summary: dict[str, Any]) -> list[str]:
    """What the original criteria measure against, and the higher bar's checks per STRATO arm."""
    ref = summary["comparison"]["baseline"]
    lines = ["", f"Original criteria, against {ref}: efficiency (params <= 0.7x or FLOPs <= 0.8x {ref}) / accuracy "
             f"(>= {ref} - 0.5) / stability (seed std <= 0.4).", "", "Higher bar (STRATO arms):", ""]
    for name, v in summary["verdicts"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k}={_fmt(x)}" for k, x in sorted(v.items())))  # JSON's order
    if not summary["verdicts"]:
        lines.append("- none: no STRATO arm, or no LoRA all-linear run in this folder to compare it with")
    return lines


def _curve_lines(summary: dict[str, Any]) -> list[str]:
    """STRATO at each budget against the best LoRA rank at no more params, paired by seed; the whole-curve verdict."""
    curve = summary.get("curve") or {}
    if not curve.get("points"):
        return []
    rows = []
    for budget, p in curve["points"].items():
        rows.append([f"{budget:g}", f"{int(p['params'] or 0):,}", f"{p['score']:.2f}",
                     f"{p['frontier_best_at_cost']:.2f} ({p.get('frontier_arm', '')})", f"{p['margin']:+.2f}",
                     *_paired_cells(p), p.get("call", "n/a")])
    verdict = curve["beats_whole_curve"]
    return ["", "STRATO (knapsack) along LoRA's curve: score minus the best LoRA all-linear rank at no more "
            "params; paired by seed (the two runs of a seed share the head's init and the data order, and "
            "every random draw where STRATO trains that LoRA's shapes): the seed std of the per-seed "
            f"differences, the paired t-test's p, and the call (win / loss at p < {SIGNIFICANCE}, else tie):", "",
            *_table(["budget (x LoRA r8 params)", "params", "STRATO", "best LoRA at cost", "margin", "paired std",
                     "p", "call"], rows),
            "", "Beats LoRA's whole curve (every margin >= 0): " + (
                f"**{verdict}**" if verdict is not None else "n/a (needs a point at each of 0.125x, 0.25x, 0.5x, 1x, "
                "2x)") + f"; paired calls: {curve.get('wins', 0)} win(s), {curve.get('ties', 0)} tie(s), "
            f"{curve.get('losses', 0)} loss(es)."]


def _between_lines(summary: dict[str, Any]) -> list[str]:
    """STRATO between two LoRA ranks against the straight line between them (the stricter bar there)."""
    points = ((summary.get("curve") or {}).get("points") or {}).items()
    rows = []
    for budget, p in ((b, p) for b, p in points if p.get("line")):
        line = p["line"]
        rows.append([f"{float(budget):g}", f"{int(p['params'] or 0):,}", f"{p['score']:.2f}",
                     f"{line['score']:.2f} ({line['low']} - {line['high']}, at {line['weight']:.2f})",
                     f"{line['margin']:+.2f}", *_paired_cells(line), line["call"]])
    if not rows:
        return []
    return ["", "Between LoRA's ranks, the stricter bar: LoRA's curve drawn as a straight line in params "
            "between the two ranks around STRATO's cost (the staircase above gives the lower rank's score "
            "there), the same line seed by seed:", "",
            *_table(["budget (x LoRA r8 params)", "params", "STRATO", "LoRA's line at cost (between)", "margin",
                     "paired std", "p", "call"], rows)]


def _below_curve_lines(summary: dict[str, Any]) -> list[str]:
    """STRATO below LoRA's cheapest point, against that point (which costs more)."""
    below = (summary.get("curve") or {}).get("below_curve") or {}
    if not below:
        return []
    rows = [[f"{budget:g}", f"{int(p['params'] or 0):,}", f"{p['score']:.2f}",
             f"{p['frontier_score']:.2f} ({p['frontier_arm']}, {int(p['frontier_params'] or 0):,})",
             f"{p['margin']:+.2f}", *_paired_cells(p), p["call"]] for budget, p in below.items()]
    return ["", "STRATO below LoRA's curve (no all-linear LoRA is this cheap): against the cheapest LoRA point, "
            "which costs more; a margin >= 0 is LoRA's score at a fraction of its params:", "",
            *_table(["budget (x LoRA r8 params)", "params", "STRATO", "cheapest LoRA (params)", "margin",
                     "paired std", "p", "call"], rows)]


def _pairs_lines(summary: dict[str, Any]) -> list[str]:
    """The ``--pairs`` comparisons, seed by seed."""
    if not summary.get("pairs"):
        return []
    rows = []
    for label, p in summary["pairs"].items():
        if "error" in p:
            rows.append([label, f"n/a ({p['error']})", *[""] * 8])
            continue
        rows.append([label, str(p["paired_seeds"]), f"{p['a']:.2f}", f"{p['b']:.2f}",
                     f"{int(p['params_a'] or 0):,} / {int(p['params_b'] or 0):,}", f"{p['paired_gain']:+.2f}",
                     *_paired_cells(p), p["call"], str(p.get("seeds_to_call") or "n/a")])
    lines = ["", "Paired comparisons (seeds both arms ran; a - b; seeds to call: how many paired seeds a new test "
             f"needs to call the gain seen at p < {SIGNIFICANCE} {POWER:.0%} of the time, if it is the true gain):", "",
             *_table(["a - b", "seeds", "a", "b", "params a / b", "gain", "paired std", "p", "call", "seeds to call"],
                     rows)]
    for label, p in summary["pairs"].items():
        if p.get("per_seed"):  # results files from before 2026-12-07 lack it
            ahead = f"a ahead on {p['ahead']} of {p['paired_seeds']} seeds{_rank_note(p)}"
            lines += ["", f"Per seed, {label}: {ahead}.", "",
                      *_table(["seed", "a", "b", "a - b"], [
                          [str(seed), f"{x['a']:.2f}", f"{x['b']:.2f}", f"{x['a'] - x['b']:+.2f}"]
                          for seed, x in sorted(p["per_seed"].items(), key=lambda kv: int(kv[0]))])]
    return lines


def _rank_note(pair: dict[str, Any]) -> str:
    """The median gain and the Wilcoxon signed-rank p of a pair, where its results file has them (from 2026-12-07)."""
    if pair.get("median_gain") is None:
        return ""
    p = pair.get("wilcoxon_p")
    return (f"; median a - b {pair['median_gain']:+.2f}, Wilcoxon signed-rank p "
            f"{'n/a' if p is None else f'{p:.2g}'} (a rank test: a run that never trained moves it by one rank)")


def _shared_lines(summary: dict[str, Any]) -> list[str]:
    """The STRATO arms recorded as other arms' runs (``--share-runs``)."""
    if not summary.get("shared"):
        return []
    return ["", "STRATO arms whose runs are other arms' runs (the search skipped: the uniform rank, no "
            "scheduler, peft's start, every other setting equal, so the same training; `--share-runs` "
            "recorded it from `strato plan` instead of training it again; wall time = that run's + the "
            "search's): " + "; ".join(
                f"{n} = {', '.join(f'{lora} seed {s}' for s, lora in sorted(seeds.items()))}"
                for n, seeds in sorted(summary["shared"].items())) + "."]


def _earlier_lines(summary: dict[str, Any]) -> list[str]:
    """The seeds taken from earlier results files (``--earlier-results``), per arm and file."""
    if not summary.get("earlier"):
        return []
    return ["", "Seeds taken from earlier results files (no runs folder given has them; run folders are lost "
            "with a machine, the files keep per-seed scores; every arm's statistics and original criteria are "
            "over all its seeds): " + "; ".join(
                f"{n} seed{'s' if sum(map(len, files.values())) > 1 else ''} "
                + ", ".join(f"{', '.join(map(str, seeds))} ({f})" for f, seeds in files.items())
                for n, files in sorted(summary["earlier"].items())) + "."]


def _scheduler_lines(summary: dict[str, Any]) -> list[str]:
    """The rank scheduler's worth per budget, paired by seed, and pooled."""
    sched = summary.get("scheduler") or {}
    if not sched.get("points"):
        return []
    rows = [[f"{budget:g}", f"{p['with']:.2f}", f"{p['without']:.2f}", f"{p['paired_gain']:+.2f}",
             str(p["paired_seeds"]), *_paired_cells(p), p["call"]] for budget, p in sched["points"].items()]
    pooled = sched["pooled"]
    pval = "n/a" if pooled["p_value"] is None else f"{pooled['p_value']:.3f}"
    return ["", "The rank scheduler's worth: STRATO with it minus the same allocation without it (each arm's "
            "runs' recorded `scheduler` setting), paired by seed (the same draws: the difference is the "
            "scheduler's):", "",
            *_table(["budget (x LoRA r8 params)", "with", "without", "gain", "seeds", "paired std", "p", "call"],
                    rows),
            "", f"Pooled over every (budget, seed) pair: {pooled['pairs']} pairs, mean gain "
            f"{pooled['mean_gain']:+.2f}, paired t p = {pval}."]


def _paired_cells(point: dict[str, Any]) -> tuple[str, str]:
    """A paired comparison's seed std of the gains and its p, as table cells."""
    std, p = point.get("paired_gain_std"), point.get("p_value")
    return ("n/a" if std is None else f"{std:.2f}"), ("n/a" if p is None else f"{p:.3f}")


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def pareto_png(summaries: dict[str, dict[str, Any]], out: Path) -> Optional[Path]:
    """Score vs trainable params per task, LoRA frontier as a line, error bars = seed std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # each panel leaves room on its right for the legend (inside the axes it hid the high-param arms' points), and
    # the figure is as tall as the longest legend
    most = max(len(s["arms"]) for s in summaries.values()) if summaries else 0
    fig, axes = plt.subplots(1, len(summaries), figsize=(9.0 * len(summaries), max(4.5, 1.0 + 0.19 * most)),
                             squeeze=False)
    for ax, (task, summary) in zip(axes[0], summaries.items()):
        arms_ = {k: a for k, a in summary["arms"].items() if a["mean"] is not None and a["params"]}
        # one frontier line per learning rate (runs at another lr than the task's are named <arm>_lr<LR>)
        lines: dict[str, list[tuple[float, float]]] = {}
        for k, a in arms_.items():
            match = FRONTIER_ARM.fullmatch(k)
            if match:
                lines.setdefault(match.group(2) or "", []).append((a["params"], a["mean"]))
        frontier = sorted(point for line in lines.values() for point in line)
        for lr, points in sorted(lines.items()):
            label = "LoRA all-linear frontier" + (f" (lr {lr})" if lr else "")
            ax.plot(*zip(*sorted(points)), "-", color="grey", alpha=0.5 if lr else 1.0, label=label)
        colors = plt.get_cmap("tab20").colors
        # the axis spans the frontier's range; arms far below it are named in a corner instead of squashing it
        floor = min(m for _, m in frontier) - 3.0 if frontier else min(a["mean"] for a in arms_.values())
        below = []
        for i, (k, a) in enumerate(sorted(arms_.items())):
            if a["mean"] < floor:
                below.append(f"{k}: {a['mean']:.1f}")
                continue
            ax.errorbar(a["params"], a["mean"], yerr=a["std"] or 0, fmt="o" if k.startswith("strato") else "s",
                        capsize=3, label=k, color=colors[(2 * i + i // 10) % 20])  # dark shades, then light
        if below:
            ax.text(0.02, 0.97, "below the axis: " + ", ".join(below), transform=ax.transAxes, fontsize=7, va="top")
        ax.set_ylim(bottom=floor)
        ax.set_xscale("log")
        ax.set_xlabel("trainable params")
        ax.set_ylabel("score (held-out; validation rows where the report says so)")
        ax.set_title(task)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
