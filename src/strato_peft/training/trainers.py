"""Build the HF trainer for a task: TRL's SFTTrainer for causal-LM SFT, transformers' Trainer for classification."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from datasets import Dataset

from strato_peft.config.schema import StratoConfig
from strato_peft.data import TaskData
from strato_peft.data.classification import tokenize_classification
from strato_peft.data.sft import sft_records


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy, macro-F1, macro precision and recall, the majority-label baseline and the top predicted class's
    share (eval/class_metrics.py) from logits and labels."""
    from strato_peft.eval.class_metrics import classification_scores

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return classification_scores(np.asarray(labels).tolist(), np.asarray(logits).argmax(-1).tolist())


def standard_loss_sft_trainer_class() -> type:
    """SFTTrainer whose loss is transformers' plain causal-LM loss over full logits instead of TRL's fused LM head.

    Same loss value (summed over response tokens / their count); on CPU the fused head's tiled kernel measured
    131 vs 185 tokens/s (SmolLM2-135M, batch 8). TRL's entropy/token-accuracy training metrics are not logged.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class StandardLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return StandardLossSFTTrainer


def use_fused_lm_head(cfg: StratoConfig, device: str) -> bool:
    """training.fused_lm_head, or by default: on GPUs only."""
    if cfg.training.fused_lm_head is not None:
        return cfg.training.fused_lm_head
    return device == "cuda"


def build_sft_trainer(cfg: StratoConfig, model: Any, tokenizer: Any, data: TaskData, args: dict[str, Any],
                      callbacks: list) -> tuple[Any, dict[str, int]]:
    """An SFTTrainer over prompt-completion records; without packing, over-long examples are dropped.

    Returns the trainer and counts of dropped examples (a truncated example would lose its answer, so long ones
    are dropped, as axolotl does, rather than truncated; the counts go into metrics.json).
    """
    from trl import SFTConfig, SFTTrainer

    sft_args = SFTConfig(**args)
    device = "cpu" if args.get("use_cpu") else ("cuda" if torch.cuda.is_available() else "cpu")
    trainer_cls = SFTTrainer if use_fused_lm_head(cfg, device) else standard_loss_sft_trainer_class()
    train = Dataset.from_list(sft_records(data.train, tokenizer, cfg.task))
    held = Dataset.from_list(sft_records(data.eval, tokenizer, cfg.task))
    trainer = trainer_cls(model=model, args=sft_args, train_dataset=train, eval_dataset=held,
                         processing_class=tokenizer, callbacks=callbacks)
    dropped = {"train": 0, "eval": 0}
    if not sft_args.packing:
        limit = cfg.task.max_length
        keep = lambda ex: len(ex["input_ids"]) <= limit  # noqa: E731
        before = len(trainer.train_dataset), len(trainer.eval_dataset)
        trainer.train_dataset = trainer.train_dataset.filter(keep)
        trainer.eval_dataset = trainer.eval_dataset.filter(keep)
        dropped = {"train": before[0] - len(trainer.train_dataset), "eval": before[1] - len(trainer.eval_dataset)}
    return trainer, dropped


def build_classification_trainer(cfg: StratoConfig, model: Any, tokenizer: Any, data: TaskData,
                                 args: dict[str, Any], callbacks: list) -> tuple[Any, dict[str, int]]:
    """A transformers Trainer with dynamic padding and classification metrics."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    train = tokenize_classification(data.train, tokenizer, cfg.task.max_length)
    held = tokenize_classification(data.eval, tokenizer, cfg.task.max_length)
    targs = TrainingArguments(**args, label_names=["labels"])
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=held, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=classification_metrics,
                      callbacks=callbacks)
    return trainer, {"train": 0, "eval": 0}


def build_trainer(cfg: StratoConfig, task_type: str, model: Any, tokenizer: Any, data: TaskData,
                  common: dict[str, Any], callbacks: Optional[list] = None) -> tuple[Any, dict[str, int]]:
    """The trainer for ``task_type`` with the given TrainingArguments keywords."""
    from strato_peft.training.arguments import sft_arguments

    callbacks = list(callbacks or [])
    if task_type == "classification":
        return build_classification_trainer(cfg, model, tokenizer, data, common, callbacks)
    return build_sft_trainer(cfg, model, tokenizer, data, {**common, **sft_arguments(cfg)}, callbacks)
