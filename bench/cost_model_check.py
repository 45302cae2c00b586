"""STRATO's LoRA cost model vs measurement on the packaged models (SmolLM2-135M causal LM, MiniLM-L6 classifier).

For LoRA r=8 on all linear layers, LoRA r=8 on the query/value projections and one mixed-rank allocation, at one
batch of B x S tokens (default 8 x 128, dropout 0.05), compares the cost model's prediction with:

* params: peft's trainable count minus the non-LoRA trainables (the classifier head) - must be exact;
* FLOPs per token: ``FlopCounterMode`` over one forward+backward, adapted minus a reference pass of the same model
  whose LoRA layers run only their base layer plus a zero scalar that requires grad (identical base forward and
  backward; see strato_peft.cost.model). Counted on the meta device (the counter is shape-based: same counts, no
  compute; MiniLM's first allocation is also counted on real weights to show it), in plain training (token ids in) and with input
  embeddings that require grad (gradient checkpointing's regime, where the input gradient of every LoRA module is
  computed and the formula is exact);
* memory: unique bytes autograd saves in the adapted minus the reference forward (parameters excluded; meta device
  for both regimes, real weights in plain training for MiniLM and, by default, SmolLM2's first allocation) plus the
  LoRA weights, grads and AdamW state measured after an optimizer step on the real model; and the process RSS growth
  of the real forwards (adapted minus reference). The script re-executes itself with MALLOC_MMAP_THRESHOLD_=65536 so
  that glibc returns freed activation buffers to the OS and RSS tracks live tensors.

    python bench/cost_model_check.py                 # ~2-3 min on 2 CPU cores
    python bench/cost_model_check.py --real all      # every allocation on real weights (slow on CPU)

writes bench/results/cost_model_check.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_output_args, provenance, refuse_existing_report, write_report  # noqa: E402

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
MODELS = {"smollm2-135m": ("causal_lm", None), "minilm-l6": ("classification", 2)}
QV_KINDS = ("q_proj", "v_proj", "query", "value", "c_attn")


def allocations(costs: Any, rank: int, n_layers: int) -> dict[str, dict[str, int]]:
    """LoRA r on all-linear, r on q/v, and a mixed allocation: q/v r/2 in the bottom third, all attention r in the
    middle third, everything 2r in the top third (and r on modules outside the blocks, e.g. a pooler)."""
    mixed = {}
    for s in costs.sites:
        attention = "attn" in s.name or "attention" in s.name
        if s.layer is None:
            mixed[s.name] = rank
        elif s.layer < n_layers / 3:
            if s.kind in QV_KINDS:
                mixed[s.name] = max(rank // 2, 1)
        elif s.layer < 2 * n_layers / 3:
            if attention:
                mixed[s.name] = rank
        else:
            mixed[s.name] = 2 * rank
    return {f"lora_r{rank}_all_linear": costs.uniform_allocation(rank),
            f"lora_r{rank}_qv": costs.uniform_allocation(rank, [k for k in QV_KINDS
                                                                if any(s.kind == k for s in costs.sites)]),
            "mixed_rank": mixed}


def lora_config(allocation: dict[str, int], task_type: str, dropout: float):
    import re

    from peft import LoraConfig

    return LoraConfig(r=max(allocation.values()), lora_alpha=16, lora_dropout=dropout,
                      target_modules=sorted(allocation), rank_pattern={re.escape(n): r for n, r in allocation.items()},
                      task_type="SEQ_CLS" if task_type == "classification" else "CAUSAL_LM")


def make_batch(vocab: int, task_type: str, args: argparse.Namespace, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(5, vocab, (args.batch_size, args.seq_len), generator=g)
    labels = torch.randint(0, 2, (args.batch_size,), generator=g) if task_type == "classification" else ids
    return {"input_ids": ids.to(device), "labels": labels.to(device)}


def rel(pred: float, meas: float) -> float:
    return pred / meas - 1 if meas else float("nan")


def check_model(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from peft import get_peft_model

    from strato_peft.config.schema import ModelConfig
    from strato_peft.cost.model import (LoraCostModel, lora_trainable_params, measure_flops, measure_memory,
                                        optimizer_state_bytes)
    from strato_peft.models import build_meta_model, load_model

    task_type, num_labels = MODELS[name]
    cfg = ModelConfig(name=name)
    real_base = load_model(cfg, task_type, num_labels, "cpu", torch.float32)
    meta_base = build_meta_model(cfg, task_type, num_labels, dtype=torch.float32)
    costs = LoraCostModel.from_model(real_base, args.batch_size, args.seq_len, dropout=args.dropout)
    n_layers = real_base.config.num_hidden_layers
    vocab = real_base.config.vocab_size
    real_batch = make_batch(vocab, task_type, args)
    meta_batch = make_batch(vocab, task_type, args, "meta")
    rows = []
    for i, (alloc_name, alloc) in enumerate(allocations(costs, args.rank, n_layers).items()):
        t0 = time.perf_counter()
        pred = costs.allocation(alloc)
        state_pred = 4 * costs.param_bytes * pred.params
        meta_model = get_peft_model(copy.deepcopy(meta_base), lora_config(alloc, task_type, args.dropout))
        meas: dict[str, Any] = {}
        for regime, grad in (("plain", False), ("input_grad", True)):
            meas[f"flops_{regime}"] = measure_flops(meta_model, meta_batch, input_requires_grad=grad)["flops_per_token"]
            meas[f"saved_{regime}"] = measure_memory(meta_model, meta_batch, input_requires_grad=grad,
                                                     optimizer=False)["saved_diff"]
        del meta_model
        real_model = get_peft_model(copy.deepcopy(real_base), lora_config(alloc, task_type, args.dropout))
        meas["params"] = lora_trainable_params(real_model)
        run_real = args.real == "all" or name == "minilm-l6" or (args.real == "first" and i == 0)
        if run_real:
            real_model.train()
            with torch.no_grad():  # warm-up: one-time allocations (thread pools, kernels) out of the RSS deltas
                real_model(input_ids=real_batch["input_ids"][:1, :16])
            mem = measure_memory(real_model, real_batch, rss=True)
            meas["saved_plain_real"] = mem["saved_diff"]
            meas["saved_in_adapters_real"] = mem["saved_in_adapters"]
            meas["state_bytes"] = mem["state_bytes"]
            for k in ("rss_adapted", "rss_reference", "rss_diff"):
                if k in mem:
                    meas[k] = mem[k]
            if name == "minilm-l6" and i == 0:
                meas["flops_plain_real"] = measure_flops(real_model, real_batch)["flops_per_token"]
        else:
            meas["state_bytes"] = optimizer_state_bytes(real_model)
        del real_model
        for regime in ("plain", "input_grad"):
            meas[f"memory_{regime}"] = meas[f"saved_{regime}"] + meas["state_bytes"]
        row = {
            "model": name, "allocation": alloc_name, "modules": len(alloc), "total_rank": sum(alloc.values()),
            "predicted": {**pred.as_dict(), "memory_state": state_pred, "memory_activations": pred.memory - state_pred},
            "measured": meas,
            "error": {
                "params": pred.params - meas["params"],
                "flops_plain": rel(pred.flops, meas["flops_plain"]),
                "flops_input_grad": rel(pred.flops, meas["flops_input_grad"]),
                "memory_plain": rel(pred.memory, meas["memory_plain"]),
                "memory_input_grad": rel(pred.memory, meas["memory_input_grad"]),
                "activations_plain": rel(pred.memory - state_pred, meas["saved_plain"]),
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if "saved_plain_real" in meas:
            row["error"]["meta_vs_real_saved"] = meas["saved_plain"] - meas["saved_plain_real"]
        if "flops_plain_real" in meas:
            row["error"]["meta_vs_real_flops"] = meas["flops_plain"] - meas["flops_plain_real"]
        if "rss_diff" in meas:
            row["error"]["rss_vs_saved"] = rel(meas["rss_diff"], meas["saved_plain_real"])
        rows.append(row)
        e = row["error"]
        print(f"{name} {alloc_name}: params {pred.params}/{meas['params']}  flops {e['flops_plain']:+.2%} "
              f"(input-grad {e['flops_input_grad']:+.2%})  memory {e['memory_plain']:+.2%} "
              f"(input-grad {e['memory_input_grad']:+.2%})"
              + (f"  rss/saved {e['rss_vs_saved']:+.1%}" if "rss_vs_saved" in e else "")
              + f"  [{row['seconds']} s]", flush=True)
    return rows


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"LoRA cost model (`strato_peft.cost.model.LoraCostModel`) vs measurement, batch {args.batch_size} x "
        f"{args.seq_len} tokens, dropout {args.dropout}, fp32. Errors are predicted / measured - 1. *plain*: token "
        "ids in (ordinary LoRA training); *input-grad*: input embeddings require grad (gradient checkpointing), "
        "where every LoRA module computes its input gradient and saves its dropout mask.\n",
        "| model | allocation | modules | params (pred = meas) | FLOPs/token pred | meas plain | err | meas input-grad "
        "| err | memory MiB pred | meas plain | err | meas input-grad | err | RSS diff / saved (real) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, m, e = r["predicted"], r["measured"], r["error"]
        params = f"{p['params']:,}" + ("" if e["params"] == 0 else f" (meas {m['params']:,})")
        rss = f"{mib(m['rss_diff'])} / {mib(m['saved_plain_real'])} MiB ({e['rss_vs_saved']:+.1%})" \
            if "rss_vs_saved" in e else "-"
        lines.append(
            f"| {r['model']} | {r['allocation']} | {r['modules']} | {params} | {p['flops']:,} | "
            f"{m['flops_plain']:,.0f} | {e['flops_plain']:+.2%} | {m['flops_input_grad']:,.0f} | "
            f"{e['flops_input_grad']:+.2%} | {mib(p['memory'])} | {mib(m['memory_plain'])} | "
            f"{e['memory_plain']:+.2%} | {mib(m['memory_input_grad'])} | {e['memory_input_grad']:+.2%} | {rss} |")
    worst = {k: max(abs(r["error"][k]) for r in rows) for k in ("flops_plain", "flops_input_grad", "memory_plain",
                                                                  "memory_input_grad")}
    lines += [
        "",
        f"Params exact on every row: **{all(r['error']['params'] == 0 for r in rows)}**. Worst |error|: FLOPs "
        f"{worst['flops_plain']:.2%} plain / {worst['flops_input_grad']:.2%} input-grad; memory "
        f"{worst['memory_plain']:.2%} plain / {worst['memory_input_grad']:.2%} input-grad.",
        "",
        "In plain training the model over-counts, by design (costs stay additive over modules), the input gradient "
        "(2 r d_in FLOPs/token) and the dropout mask of the LoRA modules that read the network's input below every "
        "other trainable part (layer 0's q/k/v): neither exists when that input needs no grad. Memory = saved "
        "activations (adapted minus reference forward) + LoRA weights, grads and AdamW state after a step. FLOPs and "
        "saved bytes are counted on the meta device (shape-based, no compute); rows with an RSS column also ran on "
        "real weights, where the saved bytes matched the meta count "
        f"(max difference {max((abs(r['error'].get('meta_vs_real_saved', 0)) for r in rows), default=0)} B) and, for "
        "MiniLM's first allocation, so did the FLOPs "
        f"(max difference {max((abs(r['error'].get('meta_vs_real_flops', 0)) for r in rows), default=0)}). "
        "RSS diff is the process RSS growth of the adapted forward minus that of the reference forward "
        f"({MMAP_ENV}=65536 so freed buffers go back to the OS); it also holds allocator and page-granularity "
        "overheads.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.05)
    parser.add_argument("--real", choices=["first", "all", "none"], default="first",
                        help="SmolLM2 allocations also measured on real weights (MiniLM always is)")
    parser.add_argument("--seed", type=int, default=0)
    add_output_args(parser, str(HERE / "results" / "cost_model_check"), "report path without suffix")
    args = parser.parse_args()
    refuse_existing_report(parser, args.out, args.overwrite)
    if sys.platform.startswith("linux") and MMAP_ENV not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "65536"})

    start = time.perf_counter()
    rows = []
    for name in args.models:
        rows += check_model(name, args)
    result = {**provenance(args), "malloc_mmap_threshold": os.environ.get(MMAP_ENV), "rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}
    result["all_params_exact"] = all(r["error"]["params"] == 0 for r in rows)
    write_report(args.out, result, "LoRA cost model vs measurement", render(rows, args), overwrite=args.overwrite)
    print(json.dumps({"all_params_exact": result["all_params_exact"], "seconds": result["seconds"]}))
    return 0 if result["all_params_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
