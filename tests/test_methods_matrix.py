"""Every method x {causal LM (Llama-like, GPT-2-like), classification (BERT-like)} on tiny random models:
trains a few steps through the real CLI path, the loss is finite, and the saved adapter reloads with plain
peft (no strato_peft import) and gives the same logits as the trained model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from strato_peft.errors import ConfigError
from strato_peft.methods import available_methods
from strato_peft.training.run import TrainOptions, train

METHODS = available_methods()
CASES = [("llama", "causal_lm"), ("gpt2", "causal_lm"), ("bert", "classification")]


def _probe_inputs(kind: str):
    from tiny import make_tokenizer

    tok = make_tokenizer(kind)
    enc = tok(["what is two plus three", "the movie is good"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def reload_logits(base_dir, saved_dir, method: str, task: str, inputs) -> torch.Tensor:
    """Logits of the saved result loaded the plain peft/transformers way."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    if method == "full":
        model = cls.from_pretrained(saved_dir)
    else:
        kwargs = {"num_labels": 2} if task == "classification" else {}
        if method == "qlora":  # the adapter was trained on the 4-bit base: load the base the same way
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
                llm_int8_skip_modules=["classifier", "score"] if task == "classification" else None)
        model = PeftModel.from_pretrained(cls.from_pretrained(base_dir, **kwargs), saved_dir)
        if method == "qlora":  # bitsandbytes 0.50's CPU repacking breaks odd-sized layers (see models/loading.py)
            import bitsandbytes as bnb

            for module in model.modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    module.support_avx512bf16_for_cpu = False
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("kind,task", CASES, ids=[f"{k}-{t}" for k, t in CASES])
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_saves_and_reloads(method, kind, task, make_config, tiny_root):
    cfg = make_config(kind, method, task)
    if method == "olora" and kind == "gpt2":
        with pytest.raises(ConfigError, match="Conv1D"):
            train(cfg)
        return
    result = train(cfg, TrainOptions())
    m = result.metrics
    losses = [e["loss"] for e in m["loss_curve"]]
    assert losses and all(math.isfinite(x) for x in losses)
    assert math.isfinite(m["final_eval"]["eval_loss"])
    assert 0 < m["params"]["trainable"] <= m["params"]["total"]
    if method != "full":
        assert m["params"]["trainable"] < m["params"]["total"] / 2
    saved = result.run_dir / ("model" if method == "full" else "adapter")
    if method != "full":
        assert (saved / "adapter_config.json").is_file() and (saved / "adapter_model.safetensors").is_file()
        assert "strato" not in (saved / "adapter_config.json").read_text().lower()
    assert (result.run_dir / "config_used.yaml").is_file()
    assert json.loads((result.run_dir / "metrics.json").read_text())["run"]["method"] == method

    inputs = _probe_inputs(kind)
    result.model.eval()
    with torch.no_grad():
        expected = result.model(**inputs).logits
    got = reload_logits(tiny_root / kind, saved, method, task, inputs)
    atol = 1e-4 if method == "qlora" else 1e-5  # 4-bit kernels: eval-mode dequantisation order differs slightly
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=atol)


RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir, adapter_dir, inputs_path, out_path = sys.argv[1:]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    assert "strato_peft" not in sys.modules
    with torch.no_grad():
        torch.save(model(**torch.load(inputs_path)).logits, out_path)
    """
)


def test_adapter_loads_in_a_process_without_strato(make_config, tiny_root, tmp_path):
    """PeftModel.from_pretrained in a fresh interpreter that never imports strato_peft gives the same logits."""
    result = train(make_config("llama", "lora"))
    inputs = _probe_inputs("llama")
    result.model.eval()
    with torch.no_grad():
        expected = result.model(**inputs).logits
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tiny_root / "llama"),
                           str(result.run_dir / "adapter"), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=1e-4, atol=1e-5)
