"""The tasks and arms of bench/strato_vs_baselines.py: what each arm trains, at which learning rate, and the run
config of one arm and seed (the same training path a user's YAML takes)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Optional

REFERENCE_ARM = "lora_all_r8"
FRONTIER_RANKS = (1, 2, 4, 8, 16)
CURVE_BUDGETS = (0.125, 0.25, 1.0, 2.0)  # STRATO's points at LoRA r1, r2, r8, r16's params
BELOW_CURVE_BUDGET = 0.0625  # half LoRA r1's params: no all-linear LoRA is that cheap
BETWEEN_GRID_BUDGETS = (0.1875, 0.375, 0.75, 1.5)  # the params midpoints of LoRA r1-r2, r2-r4, r4-r8, r8-r16
FRONTIER_ARM = re.compile(r"lora_all_r(\d+)(?:_lr(.+))?")  # a LoRA frontier run, at the task's lr or at _lr<LR>

# per task: the base run config every arm starts from, the metric that scores it, and the module names its arms use
TASKS: dict[str, dict[str, Any]] = {
    "tweets": {
        "base": {
            "model": {"name": "minilm-l6"},
            "peft": {"method": "lora", "rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
            "task": {"name": "tweet-sentiment", "max_length": 64, "train_size": 3000},
            "training": {"batch_size": 32, "learning_rate": 5.0e-4, "num_epochs": 2, "logging_steps": 10,
                         "save_steps": 10_000},
            "logging": {"tensorboard": False, "wandb": False},
        },
        "metric": "eval_accuracy",
        "attention": ["query", "key", "value"],
        "mlp_regex": r".*\.layer\.\d+\.(intermediate|output)\.dense",
        # every linear layer all-linear adapts in the top half of the encoder (layers 3-5 of 6) and the pooler
        "top_half_regex": r".*\.layer\.[345]\..*(query|key|value|dense)|.*\.pooler\.dense",
        "score_scale": 100.0,  # accuracy in points
    },
    "addition": {
        "base": {
            "model": {"name": "smollm2-135m"},
            "peft": {"method": "lora", "rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
            "task": {"name": "bigbench:unnatural_in_context_learning/unnatural_addition_2_digit", "max_length": 64,
                     "train_size": 2000, "eval_size": 4000, "eval_tasks": ["exact_match"]},
            # final_eval off: exact match scores the run; the trainer's eval-loss pass over the 4,000 rows took 11 of
            # ~50 min per CPU run (runs from before 2026-11-25 made it; it changes no score)
            "training": {"batch_size": 32, "eval_batch_size": 256, "learning_rate": 5.0e-4, "num_epochs": 2,
                         "logging_steps": 10, "save_steps": 10_000, "final_eval": False},
            "logging": {"tensorboard": False, "wandb": False},
        },
        "metric": "exact_match/exact_match",
        "attention": ["q_proj", "k_proj", "v_proj"],
        "mlp_regex": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
        "top_half_regex": r".*\.layers\.(1[5-9]|2\d)\.(self_attn|mlp)\.\w+_proj",  # layers 15-29 of 30
        "score_scale": 100.0,  # exact match in points
    },
}


# Learning rate per arm under the default protocol ("tuned"): the first pattern that matches the arm's whole name.
# Chosen on validation rows, never on the held-out split (tweets --validation 4000, addition --validation 2000): a
# grid 5e-4 / 1e-3 / 2e-3 / 3e-3 (AdaLoRA up to 2e-2) at seed 42, seeds 43-44 at the best; every run is summarized in
# bench/results/strato_lr_validation*. An arm no pattern matches trains at the task's lr (5e-4) and the summary says
# so. `--lr-protocol shared` trains every arm at the task's lr (the earlier protocol).
TUNED_LR: dict[str, list[tuple[str, float]]] = {
    "tweets": [
        (r"lora_all_r\d+", 2e-3),  # r1 / r4 / r8 / r16 best at 2e-3 of 1e-3, 2e-3 (r4: 3e-3 and 5e-3 lower)
        (r"lora_top_half_r\d+", 2e-3),  # LoRA's lr, not tuned on its own
        (r"dora_all_r4", 2e-3),  # 73.32 / 75.28 / 74.72 at 1e-3 / 2e-3 / 3e-3
        (r"lora_mlp_eqparams", 2e-3),  # 66.95 / 73.10 / 73.05 at 1e-3 / 2e-3 / 3e-3
        (r"lora_qv_r8", 2e-3),  # 73.17 at 2e-3, 72.60 at 5e-3 (62.3 held-out at 5e-4)
        (r"adalora_r4", 2e-2),  # 52.4 at 5e-4, 65.4 at 2e-3, 73.4 at 5e-3, 74.5 at 2e-2
        (r"strato_.*_(gradient|top)", 1e-3),  # gradient start, 0.5x: 74.10 at 1e-3 (3 seeds); 1.5e-3 ... 5e-3 lower
        (r"strato_.*", 2e-3),  # 0.5x: 75.82 at 2e-3 (3 seeds), 73.38 at 1e-3, 74.60 at 3e-3 (seed 42)
    ],
    "addition": [
        (r"lora_all_r\d+", 2e-3),  # r4, seed 42: 95.40 at 2e-3 vs 90.10 at 5e-4
        (r"lora_top_half_r\d+", 2e-3),  # LoRA's lr, not tuned on its own
        # tweets' choice, checked at that one lr on addition (seed 42; no other lr run): DoRA r4 95.50, MLP-only 93.30,
        # q,v r8 90.65; AdaLoRA 93.10 at 2e-2
        (r"dora_all_r4|lora_mlp_eqparams|lora_qv_r8", 2e-3),
        (r"adalora_r4", 2e-2),
        (r"strato_.*_(gradient|top)", 1e-3),  # gradient start, 0.5x, seed 42: 94.90 at 1e-3 vs 93.65 at 5e-4
        (r"strato_.*", 2e-3),  # 0.5x, seed 42: 94.30 at 2e-3 (LoRA's lr; no other lr run yet)
    ],
}
LR_PROTOCOLS = ("tuned", "shared")


def arm_learning_rate(task: str, arm: str, protocol: str = "tuned") -> float:
    """The lr ``arm`` trains at: its entry in TUNED_LR under the "tuned" protocol, else the task's."""
    if protocol not in LR_PROTOCOLS:
        raise ValueError(f"lr protocol: expected one of {LR_PROTOCOLS}, got {protocol!r}")
    default = TASKS[task]["base"]["training"]["learning_rate"]
    if protocol == "shared":
        return default
    return next((lr for pattern, lr in TUNED_LR[task] if re.fullmatch(pattern, arm)), default)


def arms(task: str) -> dict[str, dict[str, Any]]:
    """Arm name -> peft section overrides."""
    spec = TASKS[task]
    out: dict[str, dict[str, Any]] = {}
    for r in FRONTIER_RANKS:
        out[f"lora_all_r{r}"] = {"method": "lora", "rank": r, "target_modules": "all-linear"}
    out["lora_qv_r8"] = {"method": "lora", "rank": 8, "target_modules": [spec["attention"][0], spec["attention"][2]]}
    out["lora_mlp_eqparams"] = {"method": "lora", "rank": None, "target_modules": spec["mlp_regex"]}  # rank below
    out["adalora_r4"] = {"method": "adalora", "rank": 4, "target_modules": "all-linear"}
    out["dora_all_r4"] = {"method": "dora", "rank": 4, "target_modules": "all-linear"}
    # the practitioner's sparse placement: LoRA on the top half of the layers only, at r1 (about 0.0625x LoRA r8's
    # params), r2 (about 0.125x): is the map's pick better than "adapt the top"?; and r4 / r8 (about 0.25x / 0.5x):
    # does any placement beat the uniform LoRA where STRATO's gate stays closed (there it trains that LoRA)?
    for r in (1, 2, 4, 8):
        out[f"lora_top_half_r{r}"] = {"method": "lora", "rank": r, "target_modules": spec["top_half_regex"]}
    for solver in ("knapsack", "ppo"):
        for budget in (0.5, 0.7):
            out[f"strato_{solver}_b{budget}"] = {"method": "strato", "solver": solver, "budget": budget}
    for budget in (0.5, 0.7):  # PPO as it ran while the scheduler was on by default
        out[f"strato_ppo_b{budget}_sched"] = {"method": "strato", "solver": "ppo", "budget": budget,
                                              "strato": {"scheduler": True}}
    # the rest of the curve: STRATO at every LoRA frontier rank's params (r1, r2, r8, r16), so that the claim is
    # about LoRA's whole score-versus-params curve, not one point of it; and between LoRA's grid points, where a
    # budget buys LoRA's lower rank and STRATO can spend all of it (the summary also sets it against LoRA's curve
    # as a straight line there, the stricter bar)
    for budget in (*CURVE_BUDGETS, *BETWEEN_GRID_BUDGETS):
        out[f"strato_knapsack_b{budget}"] = {"method": "strato", "solver": "knapsack", "budget": budget}
    # ... with the budget's LoRA kept whole (rank_floor: uniform): every module at the lower rank, the map placing only
    # what is left over, against the map placing all of it (which leaves modules without an adapter)
    out["strato_knapsack_b0.1875_floor"] = {"method": "strato", "solver": "knapsack", "budget": 0.1875,
                                            "strato": {"rank_floor": "uniform"}}
    # ... and at a grid point, LoRA r2's cost, with rank 1 kept on every module (rank_floor: 1) and the map placing
    # the other half of the budget: the floor's extras at 0.1875x bought nearly what LoRA r2's uniform extra rank
    # buys at half its params; does the map's placement of a whole r1's worth beat LoRA r2 itself? (The gate forced
    # open: the map values the floored pick only 0.2% above the uniform r2, so at min_map_gain 5% this is LoRA r2)
    out["strato_knapsack_b0.25_floor1"] = {"method": "strato", "solver": "knapsack", "budget": 0.25,
                                           "strato": {"rank_floor": 1, "min_map_gain": 0.0}}
    # ... and the 0.125x recipe carried to LoRA r2's cost: the map placing the whole budget (no floor; modules may go
    # without an adapter), the gate forced open as for floor1 (at 5% it would train LoRA r2)
    out["strato_knapsack_b0.25_open"] = {"method": "strato", "solver": "knapsack", "budget": 0.25,
                                         "strato": {"min_map_gain": 0.0}}
    # the same rule at LoRA r4's cost: half the budget's uniform rank kept everywhere, the map placing the rest
    out["strato_knapsack_b0.5_floor2"] = {"method": "strato", "solver": "knapsack", "budget": 0.5,
                                          "strato": {"rank_floor": 2, "min_map_gain": 0.0}}
    # below LoRA's cheapest point (all-linear r1): half r1's params, where only a sparse allocation fits; it beats
    # the curve there if it scores as LoRA r1 does at twice its cost
    out[f"strato_knapsack_b{BELOW_CURVE_BUDGET}"] = {"method": "strato", "solver": "knapsack",
                                                    "budget": BELOW_CURVE_BUDGET}
    # ablations: where a STRATO gain comes from. Each pins the scheduler (and any other default that has changed
    # since its runs) as it ran, so that its runs stay its own (config_drift): no search (uniform ranks); the
    # gradient-aligned start (the default until b682530, with probes then: max_probes 3); the budget's uniform rank
    # without the scheduler (rsLoRA scaling, i.e. LoRA of that rank and seed)
    sched = {"scheduler": True}
    out["strato_uniform_b0.5"] = {"method": "strato", "solver": "uniform", "budget": 0.5, "strato": sched}
    out["strato_uniform_b0.125"] = {"method": "strato", "solver": "uniform", "budget": 0.125,  # where tweets searches
                                    "strato": sched}
    out["strato_knapsack_b0.5_gradient"] = {"method": "strato", "solver": "knapsack", "budget": 0.5,
                                            "strato": {"init": "gradient", "max_probes": 3, **sched}}
    out["strato_uniform_b0.5_nosched"] = {"method": "strato", "solver": "uniform", "budget": 0.5,
                                          "strato": {"scheduler": False}}
    # at 0.125x with the gradient start (rank 1 everywhere is below init_min_rank, where it applies nowhere): rank 2
    # on the modules the map values most per cost; and the search with probes choosing (the default before baca233)
    out["strato_knapsack_b0.125_top"] = {"method": "strato", "solver": "knapsack", "budget": 0.125,
                                         "strato": {"init": "gradient", "low_budget_fill": "top_modules", **sched}}
    out["strato_knapsack_b0.125_probes"] = {"method": "strato", "solver": "knapsack", "budget": 0.125,
                                            "strato": {"max_probes": 3, **sched}}
    # the scheduler's worth at every curve budget: the same allocation trained with and without it (where the map
    # gate stays closed, without it is LoRA at the budget's uniform rank, same seed draw; at 0.125x the map's pick)
    for budget in (*CURVE_BUDGETS, 0.5, 0.7):
        for suffix, on in (("_sched", True), ("_nosched", False)):
            out[f"strato_knapsack_b{budget}{suffix}"] = {"method": "strato", "solver": "knapsack", "budget": budget,
                                                         "strato": {"scheduler": on}}
    # the gate open at 0.5x, the map trusted without probes: its own pick (gradient value: rank where the gradient is
    # large), and valued by each module's share of its own spectrum (map_value: share: rank where it is spread)
    out["strato_knapsack_b0.5_mappick"] = {"method": "strato", "solver": "knapsack", "budget": 0.5,
                                           "strato": {"min_map_gain": 0.0, "max_probes": 0, **sched}}
    out["strato_knapsack_b0.5_share"] = {"method": "strato", "solver": "knapsack", "budget": 0.5,
                                         "strato": {"map_value": "share", "min_map_gain": 0.0, "max_probes": 0,
                                                    **sched}}
    # below the curve, the map valued by spectrum share (every module alike: breadth, where the gradient map puts
    # rank 2-3 on a few top modules)
    out[f"strato_knapsack_b{BELOW_CURVE_BUDGET}_share"] = {"method": "strato", "solver": "knapsack",
                                                         "budget": BELOW_CURVE_BUDGET,
                                                         "strato": {"map_value": "share"}}
    # below the curve, the map choosing modules only: rank 1 on the modules it values most per cost (the breadth
    # solver), against the layer rule (lora_top_half_r1) at the same shape
    out[f"strato_breadth_b{BELOW_CURVE_BUDGET}"] = {"method": "strato", "solver": "breadth",
                                                   "budget": BELOW_CURVE_BUDGET}
    # the map choosing whole blocks (every linear module of a block at the block's rank), against the layer rule
    # (lora_top_half_r1), which it can match or beat only if the map ranks the right blocks. (Not at 0.125x: there
    # the level fill's first level is every block at rank 1, LoRA r1 itself)
    out[f"strato_layers_b{BELOW_CURVE_BUDGET}"] = {"method": "strato", "solver": "layers",
                                                  "budget": BELOW_CURVE_BUDGET}
    # the trained-update map (map_estimator: update; the gradient map ranks addition's modules against where LoRA
    # puts its update): at r1's cost, where the gradient map's pick won on tweets and lost on addition; at 0.5x; and
    # at 2x, where on tweets it opens the gate that the gradient map keeps closed
    for budget in (0.125, 0.5, 2.0):
        out[f"strato_knapsack_b{budget}_update"] = {"method": "strato", "solver": "knapsack", "budget": budget,
                                                    "strato": {"map_estimator": "update"}}
    return out


def _deep_update(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in, nested dicts key by key (a copy; ``base`` is left as it was)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def mlp_rank_at_equal_params(task: str) -> int:
    """The MLP-only rank whose params come closest to LoRA r=8 on all linear layers (from the cost model)."""
    from strato_peft.config import validate_config
    from strato_peft.cost.model import LoraCostModel
    from strato_peft.data.sources import task_type_of
    from strato_peft.models import build_meta_model

    cfg = validate_config(TASKS[task]["base"])
    model = build_meta_model(cfg.model, task_type_of(cfg.task), 3 if task_type_of(cfg.task) == "classification"
                             else None)
    costs = LoraCostModel.from_model(model, 1, 1)
    target = costs.uniform(8).params
    per_rank = costs.uniform(1, TASKS[task]["mlp_regex"]).params
    return max(1, round(target / per_rank))


def run_name(arm: str, seed: int, learning_rate: Optional[float] = None) -> str:
    """``<arm>_seed<N>``; a run at another learning rate than the task's is ``<arm>_lr<LR>_seed<N>``."""
    return f"{arm}{'' if learning_rate is None else f'_lr{learning_rate:g}'}_seed{seed}"


def arm_config(task: str, arm: str, peft: dict[str, Any], seed: int, runs_dir: Path,
               validation: Optional[int] = None, learning_rate: Optional[float] = None, lr_protocol: str = "tuned"):
    """The run config of one arm and seed; ``validation`` scores it on that many validation rows (outside the
    held-out split and the training rows) instead of the held-out split; ``learning_rate`` replaces the arm's lr
    (the run is then named ``<arm>_lr<LR>_seed<N>``), which ``lr_protocol`` sets otherwise."""
    from strato_peft.config import validate_config

    data = _deep_update(TASKS[task]["base"], {"peft": {k: v for k, v in peft.items() if v is not None}})
    data["training"]["learning_rate"] = (learning_rate if learning_rate is not None
                                         else arm_learning_rate(task, arm, lr_protocol))
    if validation:
        data["task"]["validation_size"] = validation
    if arm == "lora_mlp_eqparams":
        data["peft"]["rank"] = mlp_rank_at_equal_params(task)
    data["seed"] = seed
    data["logging"] = {**data.get("logging", {}), "output_dir": str(runs_dir),
                       "run_name": run_name(arm, seed, learning_rate)}
    return validate_config(data)
