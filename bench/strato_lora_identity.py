"""Does a STRATO arm whose gate closed train exactly the LoRA arm it is shared with? (the evidence for --share-runs)

Trains both arms of the benchmark (bench/strato_vs_baselines.py, the same configs) for a few steps on the real model
and compares every logged loss and every module's adapter update (scale * B @ A) bit for bit. Equal losses and
updates over the first steps mean the two runs are the same computation (same modules, shapes, scale, init draws,
data order, dropout masks), which the unit test tests/test_strato.py::
test_strato_training_the_uniform_lora_trains_exactly_the_lora_of_that_seed checks on tiny models.

    python bench/strato_lora_identity.py --task addition --strato-arm strato_knapsack_b0.5 --lora-arm lora_all_r4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, provenance, refuse_existing_report, write_report  # noqa: E402
from shared_runs import adapter_updates  # noqa: E402

ROOT = Path(__file__).resolve().parent


def compare(task: str, strato_arm: str, lora_arm: str, seed: int, steps: int, work: Path) -> dict[str, Any]:
    """Train both arms ``steps`` steps into ``work``; their losses, the STRATO plan's gate and the update difference."""
    import bench_arms as bench
    from strato_peft.config import validate_config
    from strato_peft.training.run import train

    runs = {}
    for arm in (lora_arm, strato_arm):
        data = bench.arm_config(task, arm, bench.arms(task)[arm], seed, work).to_yaml_dict()
        data["training"].update(max_steps=steps, logging_steps=1)
        data["task"]["eval_limit"] = 8  # the score is not the point; the eval tasks still run
        runs[arm] = train(validate_config(data))
    losses = {arm: [row["loss"] for row in r.metrics["loss_curve"]] for arm, r in runs.items()}
    a, b = adapter_updates(runs[lora_arm].run_dir), adapter_updates(runs[strato_arm].run_dir)
    same_modules = set(a) == set(b)
    diff = max(float((a[n] - b[n]).abs().max()) for n in a) if same_modules else None
    plan = runs[strato_arm].metrics.get("strato", {})
    return {"task": task, "seed": seed, "steps": steps, "strato_arm": strato_arm, "lora_arm": lora_arm,
            "losses": losses, "losses_equal": losses[lora_arm] == losses[strato_arm], "modules": len(a),
            "same_modules": same_modules, "max_update_difference": diff,
            "max_update": max(float(u.abs().max()) for u in a.values()),
            "strato_searched": plan.get("searched"), "strato_skipped": plan.get("skipped"),
            "identical": losses[lora_arm] == losses[strato_arm] and same_modules and diff == 0.0}


def main(argv: Optional[list[str]] = None) -> int:
    import bench_arms as bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(bench.TASKS), default="addition")
    parser.add_argument("--strato-arm", default="strato_knapsack_b0.5")
    parser.add_argument("--lora-arm", default="lora_all_r4")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=6)
    add_output_args(parser, None, "default: bench/results/strato_lora_identity_<task>")
    args = parser.parse_args(argv)
    args.out = args.out or str(ROOT / "results" / f"strato_lora_identity_{args.task}")
    refuse_existing_report(parser, args.out, args.overwrite)
    for arm in (args.strato_arm, args.lora_arm):
        if arm not in bench.arms(args.task):
            parser.error(f"unknown arm {arm!r} for task {args.task}")
    with tempfile.TemporaryDirectory() as work:
        result = compare(args.task, args.strato_arm, args.lora_arm, args.seed, args.steps, Path(work))
    body = (f"{args.strato_arm} vs {args.lora_arm}, {args.task}, seed {args.seed}, {args.steps} steps: "
            f"**{'identical' if result['identical'] else 'NOT identical'}** (losses equal: {result['losses_equal']}; "
            f"{result['modules']} modules, same set: {result['same_modules']}; max |update difference| "
            f"{result['max_update_difference']} against max |update| {result['max_update']:.3g}; STRATO's search: "
            f"{'ran' if result['strato_searched'] else 'skipped, ' + str(result['strato_skipped'])}).\n\n"
            + "\n".join(f"- {arm}: {', '.join(f'{x:.6f}' for x in ls)}" for arm, ls in result["losses"].items())
            + "\n")
    write_report(args.out, {**provenance(args), **result}, "STRATO (gate closed) against the LoRA run it shares", body,
                 overwrite=args.overwrite)
    print(body)
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
