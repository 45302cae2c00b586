"""Comparison plots (matplotlib, PNG): score vs trainable params (the Pareto view), loss curves, rank heatmaps.

* ``pareto.png``: mean score +- std over seeds against trainable parameters (log scale), one point per
  configuration; the LoRA rank sweep (configurations named ``lora_r<k>...``) is joined as the frontier line.
* ``loss_curves.png``: the training loss of every complete run, one colour per configuration.
* ``ranks_<configuration>.png``: per-layer rank of each adapted module type for methods whose ranks differ by
  layer (AdaLoRA's final rank_pattern, STRATO's allocation), read from the run's adapter_config.json.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from strato_peft.experiments.compare import run_folder

_LORA_RANK = re.compile(r"^lora_r(\d+)")
_LAYER = re.compile(r"\.(\d+)\.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(comparison: dict[str, Any], out: Path) -> Optional[Path]:
    """Score vs trainable params with error bars; the lora_r<k> configurations joined as the frontier."""
    rows = [c for c in comparison["configurations"] if c.get("score_mean") is not None and c.get("trainable_params")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in rows:
        ax.errorbar(c["trainable_params"], c["score_mean"], yerr=c.get("score_std") or 0.0, fmt="o", capsize=3,
                    label=c["id"])
    frontier = sorted((c for c in rows if _LORA_RANK.match(c["name"])), key=lambda c: c["trainable_params"])
    if len(frontier) >= 2:
        ax.plot([c["trainable_params"] for c in frontier], [c["score_mean"] for c in frontier], "--", color="grey",
                label="LoRA rank frontier")
    metric = comparison["metric"]
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{metric['name']} ({metric.get('unit', '')})".strip())
    ax.set_title("Score vs trainable parameters (mean +- std over seeds)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def loss_curve_plot(comparison: dict[str, Any], out: Path) -> Optional[Path]:
    """Training loss against step for every complete run, coloured by configuration."""
    curves: dict[str, list[tuple[list[int], list[float]]]] = defaultdict(list)
    for run in comparison["runs"]:
        if run.get("status") != "complete":
            continue
        try:
            metrics = json.loads((run_folder(comparison, run) / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        points = [(e["step"], e["loss"]) for e in metrics.get("loss_curve", []) if "loss" in e and "step" in e]
        if points:
            curves[run["configuration"]].append(([p[0] for p in points], [p[1] for p in points]))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(sorted(curves.items())):
        for j, (steps, losses) in enumerate(runs):
            ax.plot(steps, losses, color=colours[i % len(colours)], alpha=0.8, label=name if j == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss per run")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def layer_ranks(adapter_config: dict[str, Any]) -> dict[str, dict[int, int]]:
    """{module path in its layer: {layer index: rank}} from a saved adapter's rank_pattern (ints, or AdaLoRA's
    boolean masks)."""
    table: dict[str, dict[int, int]] = defaultdict(dict)
    for name, value in (adapter_config.get("rank_pattern") or {}).items():
        layer = _LAYER.search(f".{name}.")
        if layer is None:
            continue
        rank = int(sum(bool(v) for v in value)) if isinstance(value, list) else int(value)
        # the module's path inside its layer ("self_attn.q_proj", "attention.output.dense"): unambiguous where a
        # leaf name repeats within a layer (BERT's three "dense"); AdaLoRA's keys end in ".lora_E"
        inner = name[layer.end() - 1:].strip(".").split(".")
        table[".".join(p for p in inner if not p.startswith("lora_"))][int(layer.group(1))] = rank
    return dict(table)


def rank_heatmap(run_dir: Path, title: str, out: Path) -> Optional[Path]:
    """Heatmap of per-layer ranks of one run's adapter, or None when its ranks do not vary by layer."""
    config_path = run_dir / "adapter" / "adapter_config.json"
    if not config_path.is_file():
        return None
    table = layer_ranks(json.loads(config_path.read_text()))
    if not table:
        return None
    modules = sorted(table)
    layers = sorted({layer for ranks in table.values() for layer in ranks})
    grid = [[table[m].get(layer, 0) for layer in layers] for m in modules]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(layers) + 2), 0.5 * len(modules) + 1.5))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(modules)), modules)
    ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="rank")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_plots(comparison: dict[str, Any], out_dir: Path) -> list[Path]:
    """All plots for a comparison into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [pareto_plot(comparison, out_dir / "pareto.png"), loss_curve_plot(comparison, out_dir / "loss_curves.png")]
    seen = set()
    for run in comparison["runs"]:
        name = run["configuration"]
        if run.get("status") == "complete" and name not in seen:
            seen.add(name)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
            written.append(rank_heatmap(run_folder(comparison, run), f"Per-layer ranks: {name}", out_dir / f"ranks_{safe}.png"))
    return [p for p in written if p is not None]
