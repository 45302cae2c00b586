"""The rank scheduler: grow and shrink LoRA ranks during training, staying within the budget.

``RankScheduler`` is a ``transformers.TrainerCallback`` working on a plain peft LoRA model (rsLoRA, one full module
name per ``target_modules`` entry and its rank in ``rank_pattern``, as ``export.training_lora_config`` builds it).

Importance
    Per module, an EMA of the first-order sensitivity ``sum |p * grad p|`` over its lora_A and lora_B weights, divided
    by their number of parameters. ``|p * g|`` is the Taylor estimate of the loss change if the parameter were
    removed (AdaLoRA's score); it needs only what the optimizer step already has (weights and gradients, read in
    ``on_pre_optimizer_step``: after backward, accumulation and clipping, before the update), costs one elementwise
    product per LoRA matrix per step and no hooks or activations. The alternative, the gradient of B@A, is not
    available from the factor gradients (dL/dB = s G A^T, dL/dA = s B^T G): it would need input/output hooks and a
    d_out x d_in matrix per module. Dividing by the parameter count makes the score a value per parameter, i.e. per
    unit of cost (a rank costs r * (d_in + d_out) params and, for LoRA, proportionally many FLOPs), so modules of
    different rank and shape compare. The sum over a rank component is invariant to rescaling the component between
    A and B, so the SVD re-parameterisation below does not jump the score. Scores are kept across reallocations.

Policy (every ``interval`` steps from ``warmup_steps`` until ``final_steps`` before the end)
    * shrink: the ``realloc_fraction`` lowest-score modules above ``min_rank``, paired lowest with highest growth
      candidate, second lowest with second highest, ..., as long as the grower scores ``min_score_ratio`` times
      more (hysteresis against moving rank between modules of about equal value), lose ``shrink_by`` ranks, or
      more if fewer SVD components hold ``keep_energy`` of the squared singular values of scaling * B @ A (never
      below ``min_rank``). The factors are replaced by the truncated SVD (the best rank-k approximation of the
      module's update).
    * grow: the ``realloc_fraction`` highest-score modules below ``max_rank`` (and min(d_in, d_out)), best first,
      get ``grow_by`` ranks, or fewer if that is what still fits: every growth is checked with ``fits`` on the
      allocation after the planned shrinks. New A rows use peft's init (kaiming uniform, a=sqrt(5)), new B columns
      are zero, so the module's function is unchanged.
    * shrinks only happen if some growth uses the freed budget (no pointless capacity loss); growth into unused
      budget happens without shrinks.
    * a module changed at one reallocation may not change the other way during the next ``cooldown`` ones: a
      freshly grown module's new components start with zero sensitivity (B columns are zero), which lowers its
      per-parameter score for a while and would otherwise make it the next one to shrink.

How a rank change keeps the module's function and the optimizer's state consistent: ``strato.resize``.

Limits: single process only (DDP/FSDP/DeepSpeed hold the parameters in their own buffers), no DoRA or other LoRA
variants, no merged adapters. A Trainer checkpoint taken after a change cannot be resumed into the original shapes.
Under fp16 loss scaling with ``max_grad_norm=0`` the gradients read are still scaled (the ranking within a step is
unaffected, the EMA mixes scales when the scale changes).

The scheduler writes nothing to disk: ``history`` (every change), ``timeline`` (total rank/params over time),
``final_ranks()`` and ``report()`` (all of it, JSON-ready, for strato_plan.json). It adds ``strato/total_rank`` and
``strato/lora_params`` to the Trainer's logs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Optional

import torch
from transformers import TrainerCallback

from strato_peft.strato.layers import current_ranks, lora_layers
from strato_peft.strato.resize import check_layer, grow_lora, shrink_lora, svd_energy_rank, sync_peft_config

logger = logging.getLogger(__name__)

Fits = Callable[[dict[str, int]], bool]


# ---------------------------------------------------------------------------------------------------------- config

@dataclass
class RankSchedulerConfig:
    """Settings of the rank scheduler. Step counts left as None are fractions of the run's optimizer steps
    (``state.max_steps``, known at ``on_train_begin``)."""

    interval: Optional[int] = None          # optimizer steps between two reallocations
    interval_fraction: float = 0.1          # ... when interval is None (at least 1 step)
    warmup_steps: Optional[int] = None      # no reallocation before this step (B starts at zero: no signal yet)
    warmup_fraction: float = 0.1            # ... when warmup_steps is None
    final_steps: Optional[int] = None       # ranks frozen for the last steps (the changed modules settle)
    final_fraction: float = 0.2             # ... when final_steps is None
    grow_by: int = 2                        # ranks added to a growing module per reallocation
    shrink_by: Optional[int] = None         # ranks a shrinking module loses at least (None: grow_by)
    keep_energy: float = 0.99               # a shrink also drops trailing SVD components beyond this energy share
    realloc_fraction: float = 0.1           # share of modules that may shrink, and that may grow, per reallocation
    min_score_ratio: float = 1.25           # shrink the i-th lowest only if the i-th highest scores this much more
    cooldown: int = 1                       # reallocations after a change during which a module may not change back
    min_rank: int = 1                       # no module shrinks below this (modules are never removed)
    max_rank: int = 64                      # no module grows above this (nor above min(d_in, d_out))
    ema: float = 0.9                        # EMA factor of the per-step importance
    importance_every: int = 1               # read importance every this many optimizer steps
    adapter_name: str = "default"           # the peft adapter to schedule
    seed: int = 0                           # seed of the new A rows' init

    def __post_init__(self) -> None:
        for name in ("interval", "warmup_steps", "final_steps", "shrink_by"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < (1 if name in ("interval", "shrink_by") else 0)):
                raise ValueError(f"RankSchedulerConfig.{name}: invalid value {v!r}")
        for name in ("interval_fraction", "warmup_fraction", "final_fraction", "realloc_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"RankSchedulerConfig.{name} must be in [0, 1], got {v!r}")
        if not 0 < self.keep_energy <= 1:
            raise ValueError(f"RankSchedulerConfig.keep_energy must be in (0, 1], got {self.keep_energy!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"RankSchedulerConfig.ema must be in [0, 1), got {self.ema!r}")
        if self.grow_by < 1 or self.min_rank < 1 or self.max_rank < self.min_rank or self.importance_every < 1:
            raise ValueError("RankSchedulerConfig: need grow_by >= 1, importance_every >= 1, 1 <= min_rank <= max_rank")
        if self.cooldown < 0:
            raise ValueError(f"RankSchedulerConfig.cooldown must be >= 0, got {self.cooldown!r}")
        if self.min_score_ratio < 1:
            raise ValueError(f"RankSchedulerConfig.min_score_ratio must be >= 1, got {self.min_score_ratio!r}")


# ------------------------------------------------------------------------------------------------------ scheduler

class RankScheduler(TrainerCallback):
    """Grow/shrink LoRA ranks during a Trainer run within ``fits`` (allocation {full module name: rank} -> bool).

    ``RankScheduler(fits, interval=..., warmup_steps=..., ...)`` or ``RankScheduler(fits, config)``; the keyword
    fields are those of ``RankSchedulerConfig``."""

    def __init__(self, fits: Fits, config: Optional[RankSchedulerConfig] = None, **kwargs: Any):
        if config is not None and kwargs:
            cfg = asdict(config)
            cfg.update(kwargs)
            config = RankSchedulerConfig(**cfg)
        elif config is None:
            known = {f.name for f in fields(RankSchedulerConfig)}
            unknown = set(kwargs) - known
            if unknown:
                raise TypeError(f"RankScheduler: unknown settings {sorted(unknown)}")
            config = RankSchedulerConfig(**kwargs)
        self.fits = fits
        self.config = config
        self.history: list[dict[str, Any]] = []     # every rank change
        self.timeline: list[dict[str, Any]] = []    # total rank / LoRA params at the start and after each reallocation
        self.initial_ranks: Optional[dict[str, int]] = None
        self.schedule: dict[str, int] = {}
        self._model: Optional[torch.nn.Module] = None
        self._layers: dict[str, Any] = {}
        self._score: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(config.seed)
        self._last_ranks: dict[str, int] = {}
        self._n_realloc = 0                              # reallocations done so far
        self._last_change: dict[str, tuple[int, int]] = {}  # module -> (reallocation index, +1 grow / -1 shrink)

    # ---- schedule
    def resolve_schedule(self, max_steps: int) -> dict[str, int]:
        c = self.config
        total = max(int(max_steps), 1)
        warm = c.warmup_steps if c.warmup_steps is not None else int(round(c.warmup_fraction * total))
        final = c.final_steps if c.final_steps is not None else int(round(c.final_fraction * total))
        interval = c.interval if c.interval is not None else max(1, int(round(c.interval_fraction * total)))
        self.schedule = {"max_steps": total, "warmup_steps": int(warm), "final_steps": int(final),
                         "interval": int(interval), "last_step": int(total - final)}
        return self.schedule

    def is_reallocation_step(self, step: int) -> bool:
        s = self.schedule
        return (step > 0 and s["warmup_steps"] <= step <= s["last_step"] and step < s["max_steps"]
                and (step - s["warmup_steps"]) % s["interval"] == 0)

    # ---- state
    def final_ranks(self) -> dict[str, int]:
        if self._model is not None:
            return current_ranks(self._model, self.config.adapter_name)
        return dict(self._last_ranks)

    def scores(self) -> dict[str, float]:
        return {n: float(v) for n, v in self._score.items()}

    def report(self) -> dict[str, Any]:
        """Everything for strato_plan.json (JSON-ready)."""
        return {"config": asdict(self.config), "schedule": dict(self.schedule),
                "initial_ranks": dict(self.initial_ranks or {}), "final_ranks": self.final_ranks(),
                "history": [dict(e) for e in self.history], "timeline": [dict(t) for t in self.timeline]}

    def _totals(self) -> tuple[int, int]:
        a = self.config.adapter_name
        rank = sum(int(m.r[a]) for m in self._layers.values())
        params = sum(m.lora_A[a].weight.numel() + m.lora_B[a].weight.numel() for m in self._layers.values())
        return int(rank), int(params)

    def _record_timeline(self, step: int) -> None:
        rank, params = self._totals()
        self.timeline.append({"step": int(step), "total_rank": rank, "lora_params": params})
        self._last_ranks = {n: int(m.r[self.config.adapter_name]) for n, m in self._layers.items()}

    # ---- callback events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not hasattr(model, "peft_config"):
            raise ValueError("RankScheduler needs a peft model (the Trainer's model)")
        if getattr(args, "world_size", 1) > 1 or getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
            raise NotImplementedError("RankScheduler resizes parameters in place: single-process training only "
                                      "(no DDP/FSDP/DeepSpeed)")
        a = self.config.adapter_name
        self._model = model
        self._layers = lora_layers(model, a)
        if not self._layers:
            raise ValueError(f"RankScheduler: the model has no LoRA layers for adapter {a!r}")
        for name, layer in self._layers.items():
            check_layer(layer, a, name)
        self.resolve_schedule(state.max_steps)
        self._score = {}
        self._last_change = {}
        ranks = current_ranks(model, a)
        if self.initial_ranks is None:
            self.initial_ranks = ranks
        if not self.fits(dict(ranks)):
            logger.warning("rank scheduler: the starting allocation does not fit the budget; it will only shrink")
        self._record_timeline(state.global_step)
        logger.info("rank scheduler: %s", self.schedule)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self._layers or (state.global_step % self.config.importance_every):
            return
        a, beta = self.config.adapter_name, self.config.ema
        with torch.no_grad():
            for name, layer in self._layers.items():
                total, count = None, 0
                for lin in (layer.lora_A[a], layer.lora_B[a]):
                    w = lin.weight
                    if w.grad is None:
                        continue
                    v = (w.detach() * w.grad.detach()).abs().sum(dtype=torch.float32)
                    total = v if total is None else total + v
                    count += w.numel()
                if total is None:
                    continue
                val = total / count
                prev = self._score.get(name)
                self._score[name] = val if prev is None else beta * prev + (1 - beta) * val.to(prev.device)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self._layers and self.is_reallocation_step(state.global_step):
            self.reallocate(state.global_step, optimizer)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._layers or logs is None:
            return
        rank, params = self._totals()
        extra = {"strato/total_rank": rank, "strato/lora_params": params}
        logs.update(extra)
        hist = getattr(state, "log_history", None)
        if hist and hist[-1].get("step") == state.global_step and "strato/total_rank" not in hist[-1]:
            hist[-1].update(extra)

    def on_train_end(self, args, state, control, **kwargs):
        if self._layers:
            self._last_ranks = {n: int(m.r[self.config.adapter_name]) for n, m in self._layers.items()}

    # ---- the reallocation itself
    def plan(self) -> tuple[dict[str, int], dict[str, int]]:
        """(shrinks, grows): {module: new rank} each, from the current scores, ranks and budget."""
        c, a = self.config, self.config.adapter_name
        scores = self.scores()
        if not scores:
            return {}, {}
        ranks = {n: int(m.r[a]) for n, m in self._layers.items()}
        cap = {n: min(c.max_rank, m.in_features, m.out_features) for n, m in self._layers.items()}
        order = sorted(scores, key=lambda n: (scores[n], n))        # lowest score first
        n_move = max(1, int(round(c.realloc_fraction * len(ranks))))

        def cooling(n: str, direction: int) -> bool:  # changed the other way within the last `cooldown` reallocations
            idx, d = self._last_change.get(n, (-(10 ** 9), 0))
            return d == -direction and self._n_realloc - idx < c.cooldown

        grow_cands = [n for n in reversed(order) if ranks[n] < cap[n] and not cooling(n, +1)][:n_move]
        low = [n for n in order if ranks[n] > c.min_rank and n not in grow_cands and not cooling(n, -1)]
        shrink_cands = []
        for i, n in enumerate(low[:len(grow_cands)]):  # i-th lowest gives to the i-th highest, if clearly below it
            if scores[n] * c.min_score_ratio > scores[grow_cands[i]]:
                break
            shrink_cands.append(n)
        shrink_by = c.shrink_by or c.grow_by
        alloc = dict(ranks)
        shrinks: dict[str, int] = {}
        for n in shrink_cands:
            k = svd_energy_rank(self._layers[n], a, c.keep_energy)
            new = max(c.min_rank, min(ranks[n] - shrink_by, k))
            if new < ranks[n]:
                shrinks[n] = alloc[n] = new
        grows: dict[str, int] = {}
        for n in grow_cands:
            for step in range(c.grow_by, 0, -1):
                new = min(cap[n], ranks[n] + step)
                if new <= ranks[n]:
                    continue
                trial = dict(alloc)
                trial[n] = new
                if self.fits(trial):
                    alloc, grows[n] = trial, new
                    break
        if not grows and self.fits(dict(ranks)):
            shrinks = {}  # nothing would use the freed budget
        return shrinks, grows

    def reallocate(self, step: int, optimizer: Any = None) -> list[dict[str, Any]]:
        """Plan and apply one reallocation at ``step``; returns the events it recorded."""
        a = self.config.adapter_name
        shrinks, grows = self.plan()
        if not shrinks and not grows:
            return []
        scores = self.scores()
        events = []
        for reason, changes in (("shrink", shrinks), ("grow", grows)):
            for name, new in changes.items():
                layer = self._layers[name]
                old = int(layer.r[a])
                if reason == "shrink":
                    kept = shrink_lora(layer, a, new, optimizer)
                else:
                    grow_lora(layer, a, new, optimizer, self._generator)
                    kept = 1.0
                ev = {"step": int(step), "module": name, "old_rank": old, "new_rank": int(new), "reason": reason,
                      "importance": scores.get(name, 0.0)}
                if reason == "shrink":
                    ev["energy_kept"] = kept
                events.append(ev)
        self._n_realloc += 1
        for ev in events:
            self._last_change[ev["module"]] = (self._n_realloc, 1 if ev["reason"] == "grow" else -1)
        sync_peft_config(self._model, a)
        self.history.extend(events)
        self._record_timeline(step)
        if not self.fits(self.final_ranks()) and self.initial_ranks is not None and self.fits(dict(self.initial_ranks)):
            logger.error("rank scheduler: step %d left the budget (should not happen)", step)
        logger.info("rank scheduler step %d: %d shrunk, %d grown, total rank %d", step, len(shrinks), len(grows),
                    self.timeline[-1]["total_rank"])
        return events
