"""GSM8K generation throughput: this evaluator (length-sorted, left-padded batches, KV cache) vs a plain loop
that calls `generate` on one prompt at a time, same model, same prompts, same greedy decoding and length cap.

    python bench/eval_throughput.py --n 32 --batch-size 16 --max-new-tokens 128

writes bench/results/eval_throughput.{json,md}. Target: ratio >= 3. Also checks that both produce the same
answers (greedy decoding with left padding must not change outputs beyond float noise; the agreement rate is
reported).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_output_args, provenance, refuse_existing_report, write_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32, help="GSM8K prompts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    add_output_args(parser, str(HERE / "results" / "eval_throughput"), "report path without suffix")
    args = parser.parse_args()
    refuse_existing_report(parser, args.out, args.overwrite)

    from strato_peft.config.schema import ModelConfig, TaskConfig
    from strato_peft.data.sources import load_source
    from strato_peft.eval.generation import GenerationConfig, generate
    from strato_peft.eval.gsm8k import build_prompt, extract_answer
    from strato_peft.models import load_model, load_tokenizer

    mcfg = ModelConfig(name=args.model)
    tok = load_tokenizer(mcfg)
    model = load_model(mcfg, "causal_lm", None, "cpu", torch.float32).eval()
    rows = load_source(TaskConfig(name="gsm8k")).rows[: args.n]
    chat = bool(tok.chat_template)
    prompts = [build_prompt(tok, r["prompt"], [], chat) for r in rows]
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)

    start = time.perf_counter()
    ours = [o[0] for o in generate(model, tok, prompts, gen, batch_size=args.batch_size, add_special_tokens=not chat)]
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    plain = []
    for p in prompts:  # the plain loop: one prompt, one generate call
        enc = tok(p, return_tensors="pt", add_special_tokens=not chat)
        with torch.no_grad():
            seq = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        plain.append(tok.decode(seq[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    plain_s = time.perf_counter() - start

    agree = sum(extract_answer(a) == extract_answer(b) for a, b in zip(ours, plain)) / len(prompts)
    result = {
        **provenance(args),
        "batched_seconds": ours_s, "plain_seconds": plain_s,
        "batched_samples_per_s": len(prompts) / ours_s, "plain_samples_per_s": len(prompts) / plain_s,
        "ratio": plain_s / ours_s, "answer_agreement": agree, "target": ">= 3.0",
    }
    write_report(args.out, result, "GSM8K evaluation throughput: batched evaluator vs one-prompt-at-a-time generate", (
        "| arm | samples/s | seconds |\n|---|---|---|\n"
        f"| strato (batch {args.batch_size}, left padding, KV cache) | {result['batched_samples_per_s']:.3f} | {ours_s:.1f} |\n"
        f"| plain loop | {result['plain_samples_per_s']:.3f} | {plain_s:.1f} |\n\n"
        f"Ratio: **{result['ratio']:.2f}** (target >= 3.0); extracted answers agree on {agree:.0%} of prompts.\n"), overwrite=args.overwrite)
    print({k: result[k] for k in ("batched_samples_per_s", "plain_samples_per_s", "ratio", "answer_agreement")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
