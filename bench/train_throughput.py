"""Training throughput: this framework vs a plain transformers-Trainer + peft script, same LoRA, model and data.

Both arms train the same LoRA config (same rank, targets, learning rate, batch size and number of steps) on the
same examples of the packaged GSM8K rows, formatted with the same chat template, loss on the response tokens.
The plain arm pads each random batch to its longest example (DataCollatorForSeq2Seq), as most hand-written
scripts do; this framework (on CPU) groups examples of similar length into batches and uses the plain LM loss
(TRL's fused LM head is slower on CPU), and batches padding-free with flash-attention on GPUs. Throughput is
*real* (non-padding) tokens trained per second of the training loop, model loading excluded. Arms alternate
over --repeats to spread machine noise over both.

    python bench/train_throughput.py --steps 20 --batch-size 8 --repeats 2

writes bench/results/train_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_output_args, provenance, refuse_existing_report, write_report  # noqa: E402


def plain_trainer_tokens_per_s(model_dir: str, records: list[dict], args: argparse.Namespace) -> dict:
    """The baseline: tokenize prompt+completion, mask the prompt, pad per batch, transformers Trainer + peft."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token

    def encode(rec: dict) -> dict:
        prompt_ids = tok.apply_chat_template(rec["prompt"], tokenize=True, add_generation_prompt=False)
        full_ids = tok.apply_chat_template(rec["prompt"] + rec["completion"], tokenize=True)
        if hasattr(prompt_ids, "input_ids") or isinstance(prompt_ids, dict):
            prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
        labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
        return {"input_ids": full_ids, "attention_mask": [1] * len(full_ids), "labels": labels}

    ds = Dataset.from_list([encode(r) for r in records])
    ds = ds.filter(lambda ex: len(ex["input_ids"]) <= args.max_length)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05,
                                             target_modules=args.targets, task_type="CAUSAL_LM"))
    counted = {"tokens": 0}

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            counted["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                  learning_rate=2e-4, logging_steps=10**6, save_strategy="no", report_to=[],
                                  use_cpu=not torch.cuda.is_available(), seed=args.seed, disable_tqdm=True)
        trainer = CountingTrainer(model=model, args=targs, train_dataset=ds,
                                  data_collator=DataCollatorForSeq2Seq(tok, padding=True))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"tokens": counted["tokens"], "seconds": seconds, "tokens_per_s": counted["tokens"] / seconds}


def strato_tokens_per_s(args: argparse.Namespace, out_root: Path, repeat: int) -> dict:
    """This framework: the same LoRA through `strato train` (padding-free SFT batches)."""
    from strato_peft.config import validate_config
    from strato_peft.training.run import TrainOptions, train

    cfg = validate_config({
        "seed": args.seed,
        "model": {"name": args.model},
        "peft": {"method": "lora", "rank": args.rank, "alpha": 2 * args.rank, "dropout": 0.05,
                 "target_modules": args.targets},
        "task": {"name": "gsm8k", "max_length": args.max_length, "train_size": args.steps * args.batch_size,
                 "eval_size": 8},
        "training": {"batch_size": args.batch_size, "max_steps": args.steps, "learning_rate": 2e-4,
                     "logging_steps": 10**6, "save_steps": 10**6},
        "logging": {"output_dir": str(out_root), "run_name": f"bench{repeat}", "tensorboard": False},
    })
    m = train(cfg, TrainOptions(overwrite=True)).metrics
    return {"tokens": m["train"]["tokens_seen"], "seconds": m["train"]["session_train_seconds"],
            "tokens_per_s": m["train"]["tokens_per_second"]}


def records_like_strato(args: argparse.Namespace) -> tuple[str, list[dict]]:
    """The model folder and the exact training records (same split, same formatting) strato will train on."""
    from transformers import AutoTokenizer

    from strato_peft.config.schema import TaskConfig
    from strato_peft.data import load_task_data
    from strato_peft.data.sft import sft_records
    from strato_peft.models import resolve_model_source

    model_dir = resolve_model_source(args.model, None)
    task = TaskConfig(name="gsm8k", max_length=args.max_length, train_size=args.steps * args.batch_size, eval_size=8)
    data = load_task_data(task, args.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model_dir, sft_records(data.train, tok, task)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    add_output_args(parser, str(HERE / "results" / "train_throughput"), "report path without suffix")
    args = parser.parse_args()
    refuse_existing_report(parser, args.out, args.overwrite)

    torch.set_num_threads(torch.get_num_threads())
    model_dir, records = records_like_strato(args)
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            ours.append(strato_tokens_per_s(args, Path(tmp), i))
            plain.append(plain_trainer_tokens_per_s(model_dir, records, args))
            print(f"repeat {i}: strato {ours[-1]['tokens_per_s']:.1f} tok/s, plain {plain[-1]['tokens_per_s']:.1f} tok/s",
                  flush=True)
    med = lambda xs: statistics.median(x["tokens_per_s"] for x in xs)  # noqa: E731
    result = {
        **provenance(args),
        "strato": ours, "plain_trainer_peft": plain,
        "strato_tokens_per_s_median": med(ours), "plain_tokens_per_s_median": med(plain),
        "ratio": med(ours) / med(plain),
        "target": ">= 1.0",
    }
    runs = {name: ", ".join(f"{x['tokens_per_s']:.1f}" for x in xs) for name, xs in (("ours", ours), ("plain", plain))}
    write_report(args.out, result, "Training throughput: strato vs plain Trainer + peft", (
        "| arm | real tokens/s (median) | runs |\n|---|---|---|\n"
        f"| strato (length-grouped SFT) | {med(ours):.1f} | {runs['ours']} |\n"
        f"| plain Trainer + peft (padded) | {med(plain):.1f} | {runs['plain']} |\n\n"
        f"Ratio: **{result['ratio']:.2f}** (target >= 1.0)\n"), overwrite=args.overwrite)
    print(json.dumps({k: result[k] for k in ("strato_tokens_per_s_median", "plain_tokens_per_s_median", "ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
