"""Map the ``training``/``device_info``/``task`` sections onto transformers TrainingArguments or TRL's SFTConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strato_peft.config.schema import StratoConfig
from strato_peft.platform import PlatformInfo


def common_arguments(cfg: StratoConfig, platform: PlatformInfo, output_dir: Path, fast_dev_run: bool,
                     report_to: list[str]) -> dict[str, Any]:
    """Keyword arguments shared by TrainingArguments and SFTConfig."""
    t = cfg.training
    max_steps = t.max_steps
    if fast_dev_run:
        max_steps = min(max_steps, 3) if max_steps > 0 else 3
    eval_steps = t.eval_steps
    save_steps = min(t.save_steps, max_steps) if max_steps > 0 else t.save_steps
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        max_steps=max_steps,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler,
        optim=t.optimizer,
        max_grad_norm=t.max_grad_norm,
        logging_steps=1 if fast_dev_run else t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=t.dataloader_num_workers,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=platform.mixed_precision == "bf16",
        fp16=platform.mixed_precision == "fp16",
        use_cpu=platform.name == "cpu",
        torch_compile=cfg.device_info.compile_model,
        report_to=report_to,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
    )


def sft_arguments(cfg: StratoConfig) -> dict[str, Any]:
    """SFTConfig-only keyword arguments: length, packing, padding-free batching, completion-only loss."""
    task = cfg.task
    return dict(
        # without packing, over-long examples are dropped after tokenization (trainers.py), never truncated
        max_length=task.max_length if task.packing else None,
        packing=task.packing,
        padding_free=resolve_padding_free(cfg),
        completion_only_loss=task.completion_only_loss,
        dataset_num_proc=None,
    )


def resolve_padding_free(cfg: StratoConfig) -> bool:
    """Padding-free batching: as configured, else on only with flash-attention kernels (see TaskConfig)."""
    if cfg.task.packing:
        return False  # TRL's packing sets its own padding-free mode
    if cfg.task.padding_free is not None:
        return cfg.task.padding_free
    return cfg.model.attn_implementation == "flash_attention_2"
