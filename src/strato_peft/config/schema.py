"""The YAML configuration schema: every field typed, validated and documented.

Sections follow the original experiment framework: ``model``, ``peft``, ``task``, ``training``,
``device_info``, ``logging``, plus a top-level ``seed``. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    """Base for every section: unknown keys are rejected, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which base model to load and how."""

    name: str = Field(
        "smollm2-135m",
        description="Packaged short name (smollm2-135m, gemma3-270m, minilm-l6), a hub id, or an architecture "
        "name shipped for --dry-run (llama2-7b, llama2-13b, ...).",
    )
    path: Optional[str] = Field(None, description="Local model folder; when set it is loaded instead of `name`.")
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    device_map: Optional[Union[str, dict[str, Any]]] = Field(
        None, description="Passed to from_pretrained (e.g. 'auto'); None places the whole model on the run's device."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; 'auto' is float32 on CPU/MPS and bfloat16 (or float16) on GPUs."
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="Load the base weights through bitsandbytes (QLoRA). The qlora method implies 4bit."
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type for bitsandbytes.")
    bnb_4bit_double_quant: bool = Field(True, description="Quantize the 4-bit quantization constants too.")
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2"]] = Field(
        None, description="Attention kernel; None lets transformers choose (sdpa where available)."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off by default).")


class StratoSearchConfig(_Section):
    """STRATO-PEFT: where the budget comes from, how the sensitivity map and probes are made, the rank scheduler."""

    reference_rank: Optional[int] = Field(None, gt=0, description="Rank of the reference LoRA that `peft.budget` "
                                          "is a fraction of (None: `peft.rank`). STRATO trains with rsLoRA, alpha "
                                          "set so its scale equals LoRA's (`peft.alpha`/r) at the rank of the "
                                          "uniform LoRA that fills the budget.")
    reference_targets: Optional[Union[list[str], str]] = Field(
        None, description="Modules of the reference LoRA (suffixes, 'all-linear' or a regex; None: "
        "`peft.target_modules`, or all linear layers when that is unset).")
    candidates: Optional[Union[list[str], str]] = Field(
        None, description="Modules STRATO may adapt (suffixes, full names or a regex); None: every linear layer "
        "except the output head.")
    budget_absolute: Optional[dict[Literal["params", "flops", "memory"], float]] = Field(
        None, description="Absolute limits (params, FLOPs per token, bytes) instead of `peft.budget`'s fraction.")
    max_rank: int = Field(32, gt=0, description="Largest rank any one module may get.")
    sensitivity_batches: int = Field(8, gt=0, description="Training batches the sensitivity map is estimated from "
                                     "(map_estimator 'update': its training steps, and the batches it is measured on).")
    map_estimator: Literal["gradient", "update"] = Field(
        "gradient", description="What the sensitivity map measures per module: 'gradient', the singular values of the "
        "mean loss gradient at the start (one forward+backward per batch, no training); 'update', those of the output "
        "change of a uniform LoRA of `map_rank` trained `sensitivity_batches` steps at the run's lr (where training "
        "puts its update: on addition the gradient map ranks modules against it, Spearman -0.25, while LoRA r1-r8 "
        "runs agree with each other at 0.92-0.96). 'update' costs those training steps; on tweets validation at "
        "0.125x its pick scored ~2 points below the gradient map's (six seeds), so 'gradient' stays the default. With "
        "`init: gradient`, the start then takes the trained update's input directions (B A's row space).")
    map_rank: Optional[int] = Field(None, gt=0, description="map_estimator 'update': rank of the LoRA it trains, "
                                    "and the highest rank any module gets (the map values no rank above it); None: "
                                    "the reference rank, or the budget's uniform rank where that is higher.")
    cache: bool = Field(True, description="Cache the sensitivity map on disk ($STRATO_CACHE/sensitivity).")
    map_value: Literal["gradient", "share"] = Field(
        "gradient", description="How the sensitivity map values rank r at a module: 'gradient' is the first-order gain "
        "of a gradient step, sum of the top-r squared singular values of its loss gradient (modules with large "
        "gradients dominate; near a classifier head the mean gradient has rank <= classes - 1); 'share' divides that "
        "by the module's whole spectrum, the fraction of its gradient directions a rank-r update can follow, so "
        "every module counts alike and rank goes where the gradient is spread (Adam's per-parameter scaling makes a "
        "module's step size independent of its gradient's scale).")
    max_probes: int = Field(
        0, ge=0, description="Short probe trainings the solver may run to choose among candidate allocations (each "
        "scored on held-back training rows, reused through the Go-Explore archive). 0: the candidate the sensitivity "
        "map values most. Off by default: probes of a few steps favour allocations that learn fastest first, not "
        "what wins at the end (tweets validation at 0.125x, 3 seeds: the map's pick 74.04, two 10-step probes "
        "choosing between it and the uniform rank 1: 73.37, picking the uniform on 2 seeds; LoRA r1 73.60).")
    probe_steps: Optional[int] = Field(None, gt=0, description="Optimizer steps per probe; None: 5% of the run's "
                                       "steps, at least 10.")
    validation_examples: int = Field(256, gt=0, description="Training examples held back to score probes (never the "
                                     "held-out evaluation split); capped at 10% of the training set.")
    ppo_timesteps: int = Field(4096, gt=0, description="PPO solver: environment steps to train the policy for.")
    min_map_gain: float = Field(
        0.05, ge=0.0, description="Search only if the sensitivity map values its best allocation at least this "
        "fraction above the uniform LoRA that fills the budget; below it the map cannot tell allocations apart, so "
        "the uniform one is trained (with STRATO's start, and the scheduler if on) and no probes are spent. 0: always search. "
        "(At map gains of 0.2% and 1.5% the search found nothing better than the uniform LoRA on validation.)")
    max_search_fraction: float = Field(
        0.15, gt=0.0, description="All probes together may use at most this fraction of the run's optimizer steps: "
        "the probe count is cut to fit, and when fewer than 2 probes fit (one compares nothing) the uniform LoRA "
        "trains without a search. Keeps the search's cost a bounded share of the run's (not applied to "
        "--fast-dev-run, which exercises the search path).")
    init: Literal["gradient", "kaiming"] = Field(
        "kaiming", description="Start of LoRA A: 'kaiming' is peft's random init, 'gradient' puts its rows along the "
        "top right singular vectors of the module's loss gradient (from the sensitivity map; B = 0, so outputs start "
        "unchanged). Probes and the final training use the same. The gradient start learns faster at a low lr but "
        "over-shoots at LoRA's usual one and needs about half of it: tweets validation at 0.5x, each at its best "
        "lr, scored 75.82 (kaiming, 2e-3, LoRA's lr) vs 74.10 (gradient, 1e-3) over 3 seeds; addition, seed 42: "
        "94.30 vs 94.90.")
    init_min_rank: int = Field(
        2, ge=1, description="The gradient start applies to modules of at least this starting rank; lower-rank "
        "modules keep peft's random A. (A rank-1 A on the single top gradient direction stalled training on some "
        "seeds: tweets validation at 0.125x, uniform rank 1, scored 64.4 / 70.9 / 64.7 against LoRA r1's 68.8 / "
        "71.5 / 68.5.) 1: every module.")
    low_budget_fill: Literal["uniform", "top_modules"] = Field(
        "uniform", description="With `init: gradient`, when the search is skipped and the budget's uniform rank is "
        "below `init_min_rank` (so the gradient start would apply to no module): 'uniform' trains that rank on "
        "every module (LoRA's own shape at this cost), 'top_modules' trains rank `init_min_rank` on the modules the "
        "sensitivity map values most per unit of cost, as many as fit, and leaves the rest without an adapter.")
    rank_floor: Union[Literal["none", "uniform"], int] = Field(  # an int is checked by _floor_value
        "none", description="'none': the map places the whole budget (a module may get no adapter). 'uniform': every "
        "candidate module keeps at least the budget's uniform rank (the LoRA this budget buys) and the map places "
        "only what that leaves over, e.g. between two LoRA ranks' costs; at a rank's own cost this is that LoRA. An "
        "integer k: every candidate module keeps at least rank k (k on all of them must fit the budget) and the map "
        "places the rest, e.g. k = 1 at LoRA r2's cost; the knapsack still trains the uniform LoRA where the map "
        "values it above the floored pick. Where the search is skipped (min_map_gain, max_search_fraction) the "
        "budget's uniform LoRA trains (for 'uniform', the floor alone: the leftover stays unspent, as without the "
        "floor). knapsack (and uniform) solver only.")
    scheduler: bool = Field(
        False, description="Grow and shrink ranks during training within the budget (SVD truncation, optimizer state "
        "kept). Off by default: paired by seed on tweets validation rows (seeds 42-47, at 0.125x / 0.25x / 0.5x / 1x "
        "of LoRA r8's params) it gained nothing at any budget (docs/strato_results.md).")
    scheduler_interval: Optional[int] = Field(None, gt=0, description="Steps between two rank reallocations; None: "
                                              "10% of the run's steps.")

    @field_validator("rank_floor", mode="before")
    @classmethod
    def _floor_value(cls, value: Any) -> Any:
        if value in ("none", "uniform") or (type(value) is int and value >= 1):
            return value
        raise ValueError("expected 'none', 'uniform' or an integer rank >= 1")

    @model_validator(mode="after")
    def _floor_within_max_rank(self) -> "StratoSearchConfig":
        if isinstance(self.rank_floor, int) and self.rank_floor > self.max_rank:
            raise ValueError(f"rank_floor {self.rank_floor} is above max_rank {self.max_rank}: expected a floor no "
                             "module's rank cap forbids")
        return self

    @model_validator(mode="after")
    def _fill_needs_the_gradient_start(self) -> "StratoSearchConfig":
        if self.low_budget_fill == "top_modules" and self.init != "gradient":
            raise ValueError("low_budget_fill 'top_modules' places the gradient start's minimum rank, so it needs "
                             f"init: gradient (got init: {self.init!r}); use low_budget_fill: uniform otherwise")
        return self


class PeftConfigSection(_Section):
    """Which parameter-efficient method to apply, and its hyper-parameters."""

    method: str = Field(
        "lora",
        description="lora, dora, rslora, pissa, olora, adalora, ia3, prefix_tuning, prompt_tuning, full, qlora "
        "(see `strato methods`).",
    )
    rank: int = Field(8, gt=0, description="LoRA rank r (AdaLoRA: the target average rank).")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: updates are scaled by alpha/r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: Optional[Union[list[str], str]] = Field(
        None,
        description="Module names (suffixes) to adapt, 'all-linear', or None for the method's default for the "
        "architecture. A name that matches no module is an error.",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    modules_to_save: Optional[list[str]] = Field(
        None, description="Extra modules trained in full and saved with the adapter (the classifier head is added "
        "automatically for classification)."
    )
    init_rank: Optional[int] = Field(None, gt=0, description="AdaLoRA: starting rank (default 1.5 x rank).")
    adalora_tinit: Optional[int] = Field(None, ge=0, description="AdaLoRA: warm-up steps before pruning (default 10% of steps).")
    adalora_tfinal: Optional[int] = Field(None, ge=0, description="AdaLoRA: final fine-tuning steps at fixed ranks (default 20%).")
    adalora_delta_t: int = Field(1, gt=0, description="AdaLoRA: steps between two budget allocations.")
    num_virtual_tokens: int = Field(20, gt=0, description="Prefix/prompt tuning: number of virtual tokens.")
    prompt_init_text: Optional[str] = Field(None, description="Prompt tuning: initialise virtual tokens from this text.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Further keyword arguments passed as-is to the peft config class."
    )
    config_file: Optional[str] = Field(
        None, description="A peft-style JSON (peft_type, task_type, r, lora_alpha, target_modules, ...) used as is; "
        "the other fields of this section are then ignored except `method` for bookkeeping."
    )
    budget: Optional[float] = Field(None, gt=0, description="STRATO: budget as a fraction of the reference LoRA's "
                                    "cost in every dimension with a lambda weight (default 0.5).")
    lambda_: Optional[dict[str, float]] = Field(
        None, alias="lambda", description="STRATO: weights between cost dimensions (params, flops, memory); each "
        "weighted dimension is also a budget constraint (default: params only)."
    )
    solver: Optional[Literal["knapsack", "ppo", "uniform", "breadth", "layers"]] = Field(
        None, description="STRATO: allocation solver (default knapsack); 'uniform' skips the search and trains the "
        "uniform LoRA that fills the budget with STRATO's start (and the scheduler if on): an ablation; 'breadth' "
        "adds rank level by level (rank 1 on the modules the map values most per cost before rank 2 anywhere): the "
        "map chooses modules, not ranks; 'layers' does the same over whole transformer blocks (every linear module "
        "of a chosen block at the block's rank).")
    strato: StratoSearchConfig = Field(default_factory=StratoSearchConfig,
                                       description="STRATO: search, probes and scheduler settings.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from strato_peft.methods import available_methods

        value = value.lower().replace("-", "_")
        if value not in available_methods():
            raise ValueError(f"unknown method {value!r}; expected one of: {', '.join(available_methods())}")
        return value

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be omitted for the method's default")
        return value

    @model_validator(mode="after")
    def _floor_needs_the_greedy(self) -> "PeftConfigSection":
        if self.strato.rank_floor != "none" and self.solver not in (None, "knapsack", "uniform"):
            raise ValueError(f"strato.rank_floor {self.strato.rank_floor!r} is for the knapsack solver (got solver: "
                             f"{self.solver}); use rank_floor: none with it")
        return self


class TaskConfig(_Section):
    """What to train on: the task type and the data source."""

    name: str = Field(
        "gsm8k",
        description="Packaged data set (gsm8k, tweet-sentiment, mmlu, bigbench:<task>), 'jsonl'/'csv' for a local "
        "file given by data_path, or a `datasets` hub name.",
    )
    type: Optional[Literal["causal_lm", "classification"]] = Field(
        None, description="causal_lm (SFT) or classification; None takes the data set's natural type."
    )
    data_path: Optional[str] = Field(None, description="Local JSONL or CSV file (or hub name for name=hub).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping from role to column name. SFT roles: prompt, response (or text); "
        "classification roles: text, label.",
    )
    max_length: int = Field(512, gt=8, description="Maximum tokens per example; longer examples are truncated.")
    train_size: Optional[int] = Field(None, gt=0, description="Use at most this many training examples.")
    eval_size: Optional[int] = Field(None, gt=0, description="Held-out examples; default: eval_fraction of the data.")
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Held-out fraction when eval_size is unset.")
    validation_size: Optional[int] = Field(
        None, gt=0, description="Score the run on this many validation rows instead of the held-out split: rows "
        "taken from the end of the training pool (never held-out rows, never this run's training rows), for "
        "choosing hyper-parameters without looking at the held-out split.")
    split_seed: Optional[int] = Field(
        1234, description="Seed of the train/held-out split; fixed by default so every seed and method shares one "
        "held-out set. None uses the run's seed."
    )
    system_prompt: Optional[str] = Field(None, description="SFT: system message put before each prompt.")
    use_chat_template: bool = Field(True, description="SFT: format with the tokenizer's chat template if it has one.")
    completion_only_loss: bool = Field(True, description="SFT: compute the loss on the response tokens only.")
    packing: bool = Field(False, description="SFT: pack several examples into each max_length sequence.")
    padding_free: Optional[bool] = Field(
        None, description="SFT: concatenate each batch into one unpadded row (position_ids mark the examples). "
        "None: on with flash_attention_2, whose kernels skip across examples; off otherwise, since sdpa/eager "
        "then attend over the whole concatenated row, which is slower than padded, length-grouped batches on CPU."
    )
    label_names: Optional[list[str]] = Field(None, description="Classification: class names in label-id order.")
    eval_tasks: list[str] = Field(
        default_factory=list, description="Evaluation tasks run on the trained model at the end of training (mmlu, "
        "gsm8k, humaneval, classification, exact_match, perplexity); results go to the run's eval_results.json."
    )
    eval_limit: Optional[int] = Field(None, gt=0, description="Score at most this many examples per eval task.")


class TrainingConfig(_Section):
    """Optimisation and checkpointing; these map onto transformers' TrainingArguments."""

    batch_size: int = Field(8, gt=0, description="Per-device training batch size.")
    eval_batch_size: Optional[int] = Field(None, gt=0, description="Per-device eval batch size (default: batch_size).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    num_epochs: float = Field(1.0, gt=0, description="Training epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 runs num_epochs.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up the learning rate.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name (linear, cosine, constant, ...).")
    optimizer: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, paged_adamw_8bit, ...).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    logging_steps: int = Field(5, gt=0, description="Log the training loss every this many steps.")
    eval_steps: Optional[int] = Field(None, gt=0, description="Evaluate every this many steps (default: at the end only).")
    final_eval: bool = Field(
        True, description="Score the eval split with the trainer once training ends (eval_loss, and accuracy/F1 "
        "for classification). Off: only task.eval_tasks score the run, which saves a forward pass over every eval "
        "row (11 min of a 50 min CPU run for SmolLM2-135M on 4,000 rows).")
    save_steps: int = Field(50, gt=0, description="Save a resumable checkpoint every this many steps.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept on disk.")
    fused_lm_head: Optional[bool] = Field(
        None, description="SFT: TRL's fused LM-head loss (never builds the full logits; logs entropy and token "
        "accuracy). None: on GPUs, off on CPU/MPS where it measured ~30% slower than the plain loss."
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (seeded, randomised megabatches) to cut padding."
    )
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be -1 (use num_epochs) or a positive number of steps")
        return value


class DeviceInfoConfig(_Section):
    """Where and how to run."""

    device_type: Literal["auto", "cuda", "rocm", "mps", "cpu"] = Field("auto", description="Platform; auto detects.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on GPUs, none on CPU and MPS."
    )
    compile_model: bool = Field(False, description="torch.compile the model (GPUs; slow to start).")


class LoggingConfig(_Section):
    """Where results go and which trackers receive metrics."""

    output_dir: str = Field("results", description="Root of results/<model>/<task>/<run_name>/.")
    run_name: Optional[str] = Field(None, description="Run folder name; default <method>_r<rank>_seed<seed>.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files under the run's logs/.")
    wandb: bool = Field(False, description="Also log to Weights & Biases.")
    wandb_project: str = Field("strato-peft", description="W&B project name.")
    wandb_mode: Literal["offline", "online"] = Field("offline", description="W&B mode; offline needs no network.")


class StratoConfig(_Section):
    """The whole run configuration (one YAML file)."""

    seed: int = Field(42, description="Seed for python, numpy, torch and the data order.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfigSection = Field(default_factory=PeftConfigSection)
    task: TaskConfig = Field(default_factory=TaskConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    device_info: DeviceInfoConfig = Field(default_factory=DeviceInfoConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "StratoConfig":
        if self.peft.method == "qlora" and self.model.quantization == "none":
            self.model.quantization = "4bit"
        if not self.training.final_eval and not self.task.eval_tasks:
            raise ValueError("training.final_eval: false leaves the run without a score; keep it true or set "
                             "task.eval_tasks")
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict of the fully resolved config, as written to config_used.yaml."""
        return self.model_dump(mode="json", by_alias=True)


def config_file_path(cfg: StratoConfig) -> Optional[Path]:
    """The peft JSON file named by ``peft.config_file``, if any."""
    return Path(cfg.peft.config_file) if cfg.peft.config_file else None
