"""Does a sensitivity map rank modules the way training does? Spearman correlations, over modules, between a map's
value of each module and the update energy |dW|_F^2 = |scale * B A|^2 that trained LoRA adapters put there, and
between the adapters themselves (whether "where LoRA puts its update" is a stable property of the task), overall and
within each module type (which removes the d_out-proportional part of the energy).

    python bench/map_agreement.py --map ~/.cache/strato-peft/sensitivity/<key>.json \
        --runs bench/runs/.../lora_all_r1_seed42 bench/runs/.../lora_all_r8_seed42 --out bench/results/map_agreement_x

A map file is a cache entry of either estimator (its "spectra"); a run is a folder with adapter/ (peft LoRA,
rank_pattern and rsLoRA honoured). Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from common import add_output_args, provenance, refuse_existing_report, write_report  # noqa: E402
from shared_runs import adapter_updates  # noqa: E402


def update_energy(run: Path) -> dict[str, float]:
    """Module -> |scale * B A|_F^2 of the run's saved LoRA adapter."""
    return {name: float(update.pow(2).sum()) for name, update in adapter_updates(run).items()}


def spearman(a: dict[str, float], b: dict[str, float], names: list[str]) -> Optional[float]:
    from scipy.stats import spearmanr

    common = [n for n in names if n in a and n in b]
    if len(common) < 3:
        return None
    return float(spearmanr([a[n] for n in common], [b[n] for n in common]).correlation)


def module_type(name: str) -> str:
    """The projection a module is (q_proj, ..., intermediate.dense): its name without the block index."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1] == "dense" else parts[-1]


def agreement(map_file: Path, runs: list[Path], rank: int) -> dict[str, Any]:
    spectra = json.loads(map_file.read_text())["spectra"]
    map_value = {n: float(sum(s * s for s in v[:rank])) for n, v in spectra.items()}
    energies = {run.name: update_energy(run) for run in runs}
    names = sorted(map_value)
    types = sorted({module_type(n) for n in names})
    sources = {"map": map_value, **energies}
    pairs = [("map", r.name) for r in runs] + [(a.name, b.name) for i, a in enumerate(runs) for b in runs[i + 1:]]
    rows = []
    for a, b in pairs:
        row = {"a": a, "b": b, "all": spearman(sources[a], sources[b], names)}
        row["by_type"] = {t: spearman(sources[a], sources[b], [n for n in names if module_type(n) == t])
                          for t in types}
        rows.append(row)
    return {"map_file": str(map_file), "map_rank": rank, "modules": len(names), "types": types, "rows": rows}


def render(result: dict[str, Any]) -> str:
    fmt = lambda x: "n/a" if x is None else f"{x:+.2f}"  # noqa: E731
    head = "| a | b | all modules | " + " | ".join(result["types"]) + " |\n"
    head += "|---" * (3 + len(result["types"])) + "|\n"
    body = "".join(f"| {r['a']} | {r['b']} | {fmt(r['all'])} | "
                   + " | ".join(fmt(r["by_type"][t]) for t in result["types"]) + " |\n" for r in result["rows"])
    return (f"Spearman over {result['modules']} modules; map value = top-{result['map_rank']} squared singular "
            f"values of `{result['map_file']}`; runs: |scale * B A|^2 per module.\n\n" + head + body)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", required=True, type=Path, help="sensitivity map cache file (JSON)")
    parser.add_argument("--runs", nargs="+", required=True, type=Path, help="run folders with adapter/")
    parser.add_argument("--rank", type=int, default=1, help="the map's value at this rank (default 1)")
    add_output_args(parser, str(HERE / "results" / "map_agreement"), "report path without suffix")
    args = parser.parse_args(argv)
    refuse_existing_report(parser, args.out, args.overwrite)
    for path in (args.map, *[r / "adapter" / "adapter_model.safetensors" for r in args.runs]):
        if not path.is_file():
            parser.error(f"not a file: {path}")
    result = agreement(args.map, args.runs, args.rank)
    body = render(result)
    write_report(args.out, {**provenance(args), **result}, "Sensitivity map against trained LoRA updates", body,
                 overwrite=args.overwrite)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
