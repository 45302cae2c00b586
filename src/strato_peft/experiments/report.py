"""Render a comparison as a terminal table and write comparison.csv / comparison.json.

Both files are derived artefacts, recomputed from the run folders on every call: writing them replaces any
earlier comparison files in place (atomically, so a reader never sees a half-written one).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from strato_peft.experiments.collect import ResultsDirs, output_dir_for
from strato_peft.experiments.compare import build_comparison
from strato_peft.experiments.errors import CompareError
from strato_peft.experiments.stats import POWER, SIGNIFICANCE
from strato_peft.outputs import atomic_write_json, atomic_write_text

CSV_NAME = "comparison.csv"
JSON_NAME = "comparison.json"
CSV_COLUMNS = ("id", "model", "task", "name", "is_baseline", "n", "seeds", "metric", "unit", "mean", "std",
               "score_mean", "score_std", "trainable_params", "adapter_flops_per_token", "peak_memory_bytes",
               "peak_memory_kind", "wall_time_seconds", "paired_n", "score_mean_gain", "score_ci_low",
               "score_ci_high", "score_gain_std", "p_value", "p_note", "call", "seeds_to_call", "score_median_gain",
               "wilcoxon_p", "efficiency",
               "accuracy", "stability", "all_passed")
MARK = {True: "yes", False: "NO", None: "-"}


def _si(value: Optional[float]) -> str:
    if value is None:
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _bytes(value: Optional[float]) -> str:
    if value is None:
        return "-"
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= factor:
            return f"{value / factor:.1f} {suffix}"
    return f"{value:.0f} B"


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f}m"


def _num(value: Optional[float], digits: int = 2, sign: bool = False) -> str:
    return "-" if value is None else f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _versus_cell(row: dict, digits: int) -> tuple[str, str, str]:
    """The gain over the baseline [CI] (n), its p and the call, as table cells."""
    vs = row["vs_baseline"]
    if row["is_baseline"]:
        return "(baseline)", "", ""
    if vs is None or vs["mean_gain"] is None:
        return "-", "-", "-"
    ci = "" if vs["score_ci_low"] is None else f" [{_num(vs['score_ci_low'], digits, True)}, " \
                                               f"{_num(vs['score_ci_high'], digits, True)}]"
    p = "-" if vs["p_value"] is None else f"{vs['p_value']:.3g}"
    return f"{_num(vs['score_mean_gain'], digits, True)}{ci} (n={vs['n']})", p, vs.get("call") or "-"


def table_rows(comparison: dict[str, Any]) -> list[list[str]]:
    """The table's header and one row of display strings per configuration."""
    header = ["configuration", "n", "score mean ± std", "trainable", "adapter FLOPs/tok", "peak mem", "wall",
              "gain vs baseline [95% CI]", "p", "call", "eff", "acc", "stab"]
    rows = [header]
    digits = 2 if comparison["metric"]["scale"] == 100 else 4  # points, else the metric's own units
    for c in comparison["configurations"]:
        gain, p, call = _versus_cell(c, digits)
        score = "-" if c["score_mean"] is None else f"{_num(c['score_mean'], digits)} ± {_num(c['score_std'], digits)}"
        rows.append([c["id"], str(c["n"]), score, _si(c["trainable_params"]), _si(c["adapter_flops_per_token"]),
                     _bytes(c["peak_memory_bytes"]), _seconds(c["wall_time_seconds"]), gain, p, call,
                     *(MARK[c["verdicts"][k]["passed"]] for k in ("efficiency", "accuracy", "stability"))])
    return rows


def format_table(comparison: dict[str, Any]) -> str:
    """The terminal report: a header line, the aligned table, then excluded runs and undefined statistics."""
    m = comparison["metric"]
    direction = "higher" if m["higher_is_better"] else "lower"
    lines = [f"metric: {m['name']} ({direction} is better; scores in {m['unit']}); "
             f"baseline: {comparison['baseline']}; gain = improvement over the baseline, paired by seed"]
    rows = table_rows(comparison)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    t = comparison["thresholds"]
    lines.append(f"eff: params <= {t['params_ratio_max']} x or FLOPs <= {t['flops_ratio_max']} x baseline; "
                 f"acc: mean {'>= baseline -' if m['higher_is_better'] else '<= baseline +'} {t['accuracy_drop_max']}; stab: std <= {t['stability_std_max']} "
                 f"({t['unit']})")
    for c in comparison["configurations"]:
        vs = c["vs_baseline"] or {}
        notes = list(c["notes"])
        if vs.get("p_note"):
            notes.append(f"p undefined: {vs['p_note']}")
        if vs.get("call") == "tie" and vs.get("seeds_to_call"):  # seeds_to_call needs a defined p
            notes.append(f"not significant at p < {SIGNIFICANCE}: a new test needs {vs['seeds_to_call']} paired seeds "
                         f"to call a gain of {vs['score_mean_gain']:+.4g} (seed std of the gains "
                         f"{vs['score_gain_std']:.4g}) {POWER:.0%} of the time")
        notes += [f"{r} lacks {m['name']}" for r in c["runs_without_metric"]]
        notes += [f"{k} n/a: {v['note']}" for k, v in c["verdicts"].items() if v["note"] and not c["is_baseline"]]
        if notes:
            lines.append(f"note {c['id']}: " + "; ".join(notes))
    excluded = [r for r in comparison["runs"] if r["status"] != "complete"]
    for r in excluded:
        lines.append(f"excluded {r['status']} run {r['path']}: {r['problem']}")
    return "\n".join(lines)


def csv_text(comparison: dict[str, Any]) -> str:
    """One CSV row per configuration, raw numbers (scores in the metric's score unit)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    m = comparison["metric"]
    for c in comparison["configurations"]:
        vs = c["vs_baseline"] or {}
        row = {k: c.get(k) for k in CSV_COLUMNS if k in c}
        row.update(seeds=" ".join(map(str, c["seeds"])), metric=m["name"], unit=m["unit"], paired_n=vs.get("n"),
                   **{k: vs.get(k) for k in ("score_mean_gain", "score_ci_low", "score_ci_high", "score_gain_std",
                                             "p_value", "call", "seeds_to_call", "score_median_gain",
                                             "wilcoxon_p")},
                   p_note=vs.get("p_note"), all_passed=c["all_passed"],
                   **{k: c["verdicts"][k]["passed"] for k in ("efficiency", "accuracy", "stability")})
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def write_outputs(comparison: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write comparison.csv and comparison.json into ``output_dir`` (replacing earlier ones); returns their paths."""
    out = Path(output_dir)
    csv_path, json_path = out / CSV_NAME, out / JSON_NAME
    try:
        atomic_write_text(csv_path, csv_text(comparison))
        atomic_write_json(json_path, comparison)
    except OSError as exc:
        raise CompareError(f"--output-dir {out}: cannot write the comparison files: {exc}") from None
    return csv_path, json_path


@dataclass
class ComparisonFiles:
    """What ``write_comparison`` produced: the comparison itself and where its files went."""

    comparison: dict[str, Any]
    out_dir: Path
    csv: Path
    json: Path
    plots: list[Path]


def write_comparison(results_dir: ResultsDirs, output_dir: Optional[str | Path] = None,
                     baseline: Optional[str] = None, metric: Optional[str] = None) -> ComparisonFiles:
    """Compare the runs under ``results_dir`` (one folder or several) and write comparison.csv/.json and the plots
    into ``output_dir`` (default: the results folder itself); shared by ``strato compare`` and ``strato report``."""
    from strato_peft.experiments.plots import write_plots

    out_dir = output_dir_for(results_dir, output_dir)
    comparison = build_comparison(results_dir, baseline=baseline, metric=metric)
    csv_path, json_path = write_outputs(comparison, out_dir)
    return ComparisonFiles(comparison, out_dir, csv_path, json_path, write_plots(comparison, out_dir / "plots"))
