"""Short probe trainings that score a candidate allocation, and the batches the sensitivity map is built from.

A probe trains the candidate's LoRA inside the base model (taken out again afterwards, so no second copy of the
model is held) for a few steps on the first training rows those steps use (the same rows for every candidate), and
scores it by minus the loss on a validation slice. The slice is carved from the *training* rows with
the run's seed, so neither probes nor the search ever see the held-out split the final metrics are reported on.
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from strato_peft.strato.archive import ProbeOutcome
from strato_peft.strato.export import training_lora_config


def validation_split(data: Any, n: int, seed: int) -> tuple[Any, Any]:
    """(probe training data, validation data): ``n`` training rows (at most 10%) held back by a seeded shuffle."""
    rows = list(data.train)
    n = max(1, min(n, len(rows) // 10))
    order = list(range(len(rows)))
    random.Random(f"strato-val:{seed}").shuffle(order)
    val = [rows[i] for i in sorted(order[:n])]
    rest = [rows[i] for i in sorted(order[n:])]
    return replace(data, train=rest, eval=val), replace(data, train=val, eval=val)


def first_rows_for(data: Any, cfg: Any, steps: int, with_eval: bool = True) -> Any:
    """``data`` cut to the training rows ``steps`` optimizer steps consume: a probe or the sensitivity pass then
    tokenizes only those (not the whole set each time), and every probe sees the same rows in the same order, so
    candidates differ by their allocation alone. ``with_eval=False``: the eval set cut to one row, for passes that
    never evaluate (the trainer tokenizes its eval set all the same)."""
    t = cfg.training
    rows = list(data.train[: max(1, steps) * t.batch_size * t.gradient_accumulation_steps])
    return replace(data, train=rows) if with_eval else replace(data, train=rows, eval=rows[:1])


def _trainer(cfg: Any, model: Any, tokenizer: Any, data: Any, platform: Any, workdir: Path, steps: int,
             callbacks: Sequence[Any] = ()) -> Any:
    from strato_peft.training.arguments import common_arguments
    from strato_peft.training.trainers import build_trainer

    args = common_arguments(cfg, platform, workdir, False, [])
    args.update(max_steps=steps, save_strategy="no", eval_strategy="no", eval_steps=None, logging_steps=max(steps, 1),
                logging_first_step=False, disable_tqdm=True, torch_compile=False)
    trainer, _ = build_trainer(cfg, data.task_type, model, tokenizer, data, args, list(callbacks))
    return trainer


def sensitivity_batches(cfg: Any, model: Any, tokenizer: Any, data: Any, platform: Any, n: int
                        ) -> list[Mapping[str, Any]]:
    """``n`` training batches (of the first rows ``n`` steps use) exactly as the trainer collates them (same
    tokenisation and masking)."""
    rows = first_rows_for(data, cfg, n, with_eval=False)
    with tempfile.TemporaryDirectory(prefix="strato-sens-") as tmp:
        trainer = _trainer(cfg, model, tokenizer, rows, platform, Path(tmp), steps=1)
        batches = []
        for batch in trainer.get_train_dataloader():
            batches.append({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
            if len(batches) >= n:
                break
    return batches


def _take_out(peft_model: Any, base_model: torch.nn.Module) -> None:
    """Undo get_peft_model on ``base_model``: LoRA layers out with unload(), and the original module back where
    peft had wrapped one to train a copy (modules_to_save; unload() would keep the trained copy)."""
    from peft.utils import ModulesToSaveWrapper

    wrapped = [(name, m.original_module) for name, m in base_model.named_modules()
               if isinstance(m, ModulesToSaveWrapper)]
    peft_model.unload()
    for name, original in wrapped:
        parent_name, _, attr = name.rpartition(".")
        setattr(base_model.get_submodule(parent_name) if parent_name else base_model, attr, original)


@contextmanager
def trained_lora(cfg: Any, base_model: torch.nn.Module, tokenizer: Any, data: Any, platform: Any, steps: int,
                 allocation: Mapping[str, int], alpha: float,
                 directions: Optional[Mapping[str, torch.Tensor]] = None) -> Iterator[tuple[Any, Any]]:
    """``allocation``'s LoRA (rsLoRA at ``alpha``) trained ``steps`` steps on ``data``'s first rows inside
    ``base_model`` itself, yielded as (peft model, trainer) and taken out again with peft's ``unload()`` afterwards
    (the frozen base weights are never written; only when ``peft.bias`` trains the base model's biases does it work
    on a copy). LoRA starts as the final training will (``peft.strato.init``, with the map's ``directions``)."""
    from peft import get_peft_model

    from strato_peft.methods.base import peft_task_type
    from strato_peft.strato.init import apply_init
    from strato_peft.training.seed import seed_everything

    seed_everything(cfg.seed)
    in_place = cfg.peft.bias == "none"
    grad_flags = {n: p.requires_grad for n, p in base_model.named_parameters()}
    lcfg = training_lora_config(allocation, alpha, cfg.peft.dropout, peft_task_type(data.task_type),
                                cfg.peft.modules_to_save, cfg.peft.bias)
    model = get_peft_model(base_model if in_place else copy.deepcopy(base_model), lcfg)
    try:
        apply_init(model, cfg.peft.strato.init, directions or {}, cfg.peft.strato.init_min_rank)
        with tempfile.TemporaryDirectory(prefix="strato-probe-") as tmp:
            trainer = _trainer(cfg, model, tokenizer, data, platform, Path(tmp), steps)
            trainer.train()
            yield model, trainer
    finally:
        if in_place:
            _take_out(model, base_model)
            for n, p in base_model.named_parameters():
                p.requires_grad_(grad_flags[n])


def make_probe(cfg: Any, base_model: torch.nn.Module, tokenizer: Any, probe_data: Any, platform: Any, steps: int,
               alpha: float, directions: Optional[Mapping[str, torch.Tensor]] = None
               ) -> Callable[[Mapping[str, int]], ProbeOutcome]:
    """A function that trains ``allocation`` for ``steps`` steps (``trained_lora``: in ``base_model`` itself, no
    second copy of the model) and returns minus the validation loss (probe_data.eval) as its score."""
    probe_data = first_rows_for(probe_data, cfg, steps)

    def probe(allocation: Mapping[str, int]) -> ProbeOutcome:
        start = time.perf_counter()
        with trained_lora(cfg, base_model, tokenizer, probe_data, platform, steps, allocation, alpha,
                          directions) as (_, trainer):
            metrics = trainer.evaluate()
        del trainer
        loss = float(metrics["eval_loss"])
        return ProbeOutcome(score=-loss, seconds=time.perf_counter() - start,
                            metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    return probe
