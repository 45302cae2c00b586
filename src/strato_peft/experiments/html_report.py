"""`strato report`: a self-contained HTML report (images embedded as data URIs) and a Markdown one, with the
comparison table, each verdict with the figures behind it, the runs left out and the plots."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Optional

from strato_peft.experiments.collect import ResultsDirs, results_label
from strato_peft.experiments.report import write_comparison
from strato_peft.experiments.stats import POWER, SIGNIFICANCE
from strato_peft.outputs import atomic_write_text

CRITERIA = ("efficiency", "accuracy", "stability")
MARK = {True: "PASS", False: "FAIL", None: "n/a"}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def table_rows(comparison: dict[str, Any]) -> list[list[str]]:
    """Header + one row per configuration, as strings shared by the HTML and Markdown renderings."""
    head = ["configuration", "n", "score (mean +- std)", "trainable params", "adapter FLOPs/token", "peak memory",
            "wall time (s)", "gain vs baseline [95% CI]", "p", "call", "seeds to call", *CRITERIA]
    rows = [head]
    for c in comparison["configurations"]:
        vs = c.get("vs_baseline") or {}
        if c["is_baseline"]:
            gain = "(baseline)"
        elif vs.get("score_mean_gain") is None:
            gain = "-"
        else:
            gain = f"{vs['score_mean_gain']:+.2f} [{_fmt(vs.get('score_ci_low'))}, {_fmt(vs.get('score_ci_high'))}]"
        score = "-" if c.get("score_mean") is None else f"{c['score_mean']:.2f} +- {_fmt(c.get('score_std'))}"
        verdicts = c.get("verdicts") or {}
        rows.append([c["id"], str(c["n"]), score, _fmt(c.get("trainable_params") and int(c["trainable_params"])),
                     _fmt(c.get("adapter_flops_per_token") and int(c["adapter_flops_per_token"])),
                     _fmt(c.get("peak_memory_bytes") and f"{c['peak_memory_bytes'] / 2**30:.2f} GiB"),
                     _fmt(c.get("wall_time_seconds"), 0), gain, _fmt(vs.get("p_value"), 3), _fmt(vs.get("call")),
                     _fmt(vs.get("seeds_to_call") if vs.get("call") == "tie" else None),
                     *[MARK[(verdicts.get(k) or {}).get("passed")] for k in CRITERIA]])
    return rows


def legend() -> str:
    """What the call and seeds-to-call columns mean."""
    return (f"Gain: over the baseline, paired by seed. Call: win or loss where the paired t-test's p < {SIGNIFICANCE}, "
            f"else tie. Seeds to call (ties): how many paired seeds a new test needs to call the gain seen "
            f"{POWER:.0%} of the time, if it is the true gain (an optimistic guess: read it as a lower bound).")


def verdict_lines(comparison: dict[str, Any]) -> list[str]:
    """One line per configuration and criterion: the verdict, its rule and the figures behind it."""
    lines = []
    for c in comparison["configurations"]:
        for k in CRITERIA:
            v = (c.get("verdicts") or {}).get(k)
            if v:
                figures = json.dumps(v.get("figures"), default=str)
                note = f" ({v['note']})" if v.get("note") else ""
                lines.append(f"{c['id']} - {k}: {MARK[v.get('passed')]}; rule: {v.get('rule')}; figures: {figures}{note}")
    return lines


def excluded_lines(comparison: dict[str, Any]) -> list[str]:
    """Runs left out of the statistics, with why."""
    return [f"{r['path']}: {r['status']} ({r.get('problem') or 'no reason recorded'})"
            for r in comparison["runs"] if r["status"] != "complete"]


def markdown(comparison: dict[str, Any], plots: list[Path], out_dir: Path) -> str:
    """The Markdown report (plots linked by relative path)."""
    rows = table_rows(comparison)
    metric = comparison["metric"]
    out = [f"# Comparison report: {results_label(comparison['results_dir'])}", "",
           f"Metric: `{metric['name']}` ({metric.get('unit', '')}); baseline: `{comparison['baseline']}`; "
           f"generated {comparison['generated_at']}.", "",
           "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    out += ["", legend(), "", "## Verdicts", ""] + [f"- {line}" for line in verdict_lines(comparison)]
    excluded = excluded_lines(comparison)
    out += ["", "## Runs left out of the statistics", ""] + ([f"- {x}" for x in excluded] or ["- none"])
    out += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in plots]
    return "\n".join(out) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(comparison: dict[str, Any], plots: list[Path]) -> str:
    """A self-contained HTML page: no external file, stylesheet or script; images inlined."""
    esc = html.escape
    rows = table_rows(comparison)
    head = "".join(f"<th>{esc(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f'<td class="{esc(cell.lower())}">{esc(cell)}</td>' for cell in r) + "</tr>"
                   for r in rows[1:])
    verdicts = "".join(f"<li>{esc(line)}</li>" for line in verdict_lines(comparison))
    excluded = "".join(f"<li>{esc(x)}</li>" for x in excluded_lines(comparison)) or "<li>none</li>"
    images = "".join(f'<figure><img alt="{esc(p.stem)}" src="{_data_uri(p)}"><figcaption>{esc(p.stem)}'
                     f"</figcaption></figure>" for p in plots)
    metric = comparison["metric"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>STRATO-PEFT comparison report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: right; }}
th {{ background: #eee; }} td:first-child {{ text-align: left; }}
td.pass {{ background: #d9f2d9; }} td.fail {{ background: #f6d5d5; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 720px; }}
</style></head><body>
<h1>Comparison report</h1>
<p>Results: <code>{esc(results_label(comparison['results_dir']))}</code>. Metric: <code>{esc(metric['name'])}</code>
({esc(str(metric.get('unit', '')))}); baseline: <code>{esc(str(comparison['baseline']))}</code>;
generated {esc(str(comparison['generated_at']))}.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>{esc(legend())}</p>
<h2>Verdicts</h2><ul>{verdicts}</ul>
<h2>Runs left out of the statistics</h2><ul>{excluded}</ul>
<h2>Plots</h2>{images}
</body></html>
"""


def write_report(results_dir: ResultsDirs, output_dir: Optional[str | Path] = None, baseline: Optional[str] = None,
                 metric: Optional[str] = None) -> tuple[Path, Path]:
    """Compare, plot and write report.html and report.md (plus the comparison files); returns the two paths."""
    done = write_comparison(results_dir, output_dir, baseline, metric)
    html_path, md_path = done.out_dir / "report.html", done.out_dir / "report.md"
    atomic_write_text(html_path, html_page(done.comparison, done.plots))
    atomic_write_text(md_path, markdown(done.comparison, done.plots, done.out_dir))
    return html_path, md_path
