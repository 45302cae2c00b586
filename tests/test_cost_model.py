"""The LoRA cost model (strato_peft.cost.model) against measurement on tiny random models (no downloads).

What is measured, and why it is the adapters' share:

* params: peft's ``get_nb_trainable_parameters()[0]`` minus trainables that are not LoRA weights (the classifier
  head of a sequence-classification model) - must equal the model EXACTLY.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` total of one forward+backward of the adapted model minus the
  same for a *reference* pass of the same model in which every LoRA layer runs only its base layer and adds a zero
  scalar that requires grad. The reference therefore runs the identical base forward and the identical base backward
  (the same activations require grad, so the frozen layers compute the same input gradients, and the classifier
  head the same weight gradient); the add counts no FLOPs. The difference is exactly the LoRA matmuls. (The
  counter's per-module breakdown is not used: it attributes backward matmuls to the wrong modules.)
  Two regimes: plain training (token ids in: the LoRA modules reading the network's input below every trainable
  part do not compute their input gradient, which the model counts anyway - the documented over-count, < 5 % at 6
  layers and shrinking as 1/layers), and input embeddings that require grad (as with gradient checkpointing's
  ``enable_input_require_grads``), where the formula must be exact.
* memory: unique storage bytes autograd saves (``saved_tensors_hooks``, parameters excluded) in the adapted minus the
  reference forward, plus the LoRA weights, grads and AdamW state measured after an optimizer step. Cross-checked
  against the bytes saved inside lora_dropout/lora_A/lora_B (forward hooks). With inputs that require grad the
  estimate is exact up to AdamW's 4-byte ``step`` tensors; in plain training it over-counts the dropout masks of the
  bottom modules (not saved when their input needs no grad), so there it must be an upper bound within 15 % (the
  masks are at most ~8 % of the total for the q,v allocation of a 6-layer model, the worst case here).
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from strato_peft.cost import Cost, LoraCostModel, adapter_flops_per_token
from strato_peft.cost.model import DIMENSIONS, lora_trainable_params, measure_flops, measure_memory

HIDDEN, LAYERS, BATCH, SEQ, VOCAB = 64, 6, 4, 32, 96


pytestmark = pytest.mark.usefixtures("one_thread")


def make_base(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random llama / gpt2 (Conv1D) causal LM or a BERT sequence classifier, hidden 64, 6 layers."""
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, GPT2Config,
                              LlamaConfig)

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        return AutoModelForCausalLM.from_config(cfg)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=128)
        return AutoModelForCausalLM.from_config(cfg)
    if kind == "bert":
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=4, max_position_embeddings=128, num_labels=2)
        return AutoModelForSequenceClassification.from_config(cfg)
    raise ValueError(kind)


def lora_config(allocation: dict[str, int], kind: str, dropout: float = 0.05):
    """A peft LoraConfig that puts exactly ``allocation`` (full names -> ranks) on the model, via rank_pattern."""
    from peft import LoraConfig

    return LoraConfig(r=max(allocation.values()), lora_alpha=16, lora_dropout=dropout,
                      target_modules=sorted(allocation), rank_pattern={re.escape(n): r for n, r in allocation.items()},
                      task_type="SEQ_CLS" if kind == "bert" else "CAUSAL_LM")


def adapt(kind: str, allocation: dict[str, int], dropout: float = 0.05):
    from peft import get_peft_model

    base = make_base(kind)
    costs = LoraCostModel.from_model(base, BATCH, SEQ, dropout=dropout)
    return get_peft_model(base, lora_config(allocation, kind, dropout)), costs


def batch_for(kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (BATCH, SEQ), generator=g)
    labels = torch.randint(0, 2, (BATCH,), generator=g) if kind == "bert" else ids
    return {"input_ids": ids, "labels": labels}


def allocations(kind: str, costs: LoraCostModel) -> dict[str, dict[str, int]]:
    """Uniform all-linear, q/v-style, mixed ranks and a sparse subset, by full module name."""
    names = [s.name for s in costs.sites]
    qv = {"llama": ("q_proj", "v_proj"), "gpt2": ("c_attn",), "bert": ("query", "value")}[kind]
    mixed = {s.name: (2, 4, 8, 16)[(i * 7 + (s.layer or 0)) % 4] for i, s in enumerate(costs.sites)}
    return {
        "uniform": costs.uniform_allocation(4),
        "qv": costs.uniform_allocation(8, list(qv)),
        "mixed": mixed,
        "subset": {n: 3 + i % 5 for i, n in enumerate(names) if i % 3 == 1},
    }


# -- the model's own properties (no measurement) ----------------------------------------------------------------


def test_cost_arithmetic_and_affine_in_rank():
    a, b = Cost(1, 2, 3), Cost(10, 20, 30)
    assert a + b == Cost(11, 22, 33) and sum([a, b]) == Cost(11, 22, 33) and 2 * a == Cost(2, 4, 6)
    assert a.as_dict() == {"params": 1, "flops": 2, "memory": 3} and DIMENSIONS == ("params", "flops", "memory")
    assert a.get("memory") == 3.0
    with pytest.raises(KeyError):
        a.get("latency")
    costs = LoraCostModel.from_model(make_base("bert"), 8, 128)
    for site in costs.sites:
        fixed, per_rank = costs.affine(site)
        assert costs.module(site, 0) == Cost()
        for r in (1, 2, 7, 64):
            assert costs.module(site, r) == fixed + r * per_rank == costs.module(site.name, r)
        assert per_rank.params == site.d_in + site.d_out
    pooler = next(s for s in costs.sites if "pooler" in s.name)
    query = next(s for s in costs.sites if s.kind == "query")
    assert costs.per_rank(pooler).flops == -(-costs.per_rank(query).flops // 128)  # one token in 128
    with pytest.raises(KeyError):
        costs.module("no.such.module", 4)
    with pytest.raises(ValueError):
        costs.module(query, -1)


def test_uniform_targets_table_and_estimate_share_the_formula():
    from peft import LoraConfig, get_peft_model

    base = make_base("llama")
    costs = LoraCostModel.from_model(base, BATCH, SEQ)
    assert costs.uniform(4) == costs.uniform(4, "all-linear") == costs.allocation({s.name: 4 for s in costs.sites})
    qv = costs.uniform(8, ["q_proj", "v_proj"])
    assert qv == costs.uniform(8, r".*\.(q|v)_proj")
    assert qv == costs.allocation({s.name: 8 for s in costs.sites if s.kind in ("q_proj", "v_proj")})
    assert costs.uniform(8, ["nothing"]) == Cost()
    table = costs.per_module_table({"model.layers.1.self_attn.q_proj": 4, "model.layers.0.mlp.up_proj": 2,
                                    "model.layers.2.self_attn.k_proj": 0})
    assert [row["name"] for row in table] == ["model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"]
    assert set(table[0]) == {"name", "rank", "params", "flops", "memory"}
    assert sum(Cost(r["params"], r["flops"], r["memory"]) for r in table) == costs.allocation(
        {"model.layers.1.self_attn.q_proj": 4, "model.layers.0.mlp.up_proj": 2})
    peft_model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert adapter_flops_per_token(peft_model, SEQ) == qv.flops
    # the cost model over a peft-wrapped model lists the same sites as over the base model
    assert [s.name for s in LoraCostModel.from_model(peft_model, BATCH, SEQ).sites] == [s.name for s in costs.sites]


# -- against measurement ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert"])
def test_params_exact(kind):
    base_costs = LoraCostModel.from_model(make_base(kind), BATCH, SEQ)
    for name, alloc in allocations(kind, base_costs).items():
        model, costs = adapt(kind, alloc)
        ranks = {n[: -len(".lora_A.default.weight")]: p.shape[0] for n, p in model.get_base_model().named_parameters()
                 if n.endswith(".lora_A.default.weight")}
        assert ranks == alloc, f"{kind}/{name}: peft did not build the allocation"
        assert costs.allocation(alloc).params == lora_trainable_params(model), f"{kind}/{name}"


REPORT: list[str] = []


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert"])
def test_flops_and_memory_match_measurement(kind):
    start = time.perf_counter()
    base_costs = LoraCostModel.from_model(make_base(kind), BATCH, SEQ)
    allocs = allocations(kind, base_costs)
    for name in ("uniform", "qv", "mixed"):
        alloc = allocs[name]
        model, costs = adapt(kind, alloc)
        batch = batch_for(kind)
        predicted = costs.allocation(alloc)
        for input_grad in (False, True):
            flops = measure_flops(model, batch, input_requires_grad=input_grad)["flops_per_token"]
            mem = measure_memory(model, batch, input_requires_grad=input_grad)
            f_err = predicted.flops / flops - 1
            m_err = predicted.memory / mem["memory"] - 1
            REPORT.append(f"{kind:5s} {name:7s} input_grad={input_grad!s:5s} flops {predicted.flops}/{flops:.0f} "
                          f"({f_err:+.2%})  memory {predicted.memory}/{mem['memory']} ({m_err:+.2%})")
            print(REPORT[-1])
            # the reference pass isolates exactly what the LoRA sub-modules save
            assert mem["saved_diff"] == mem["saved_in_adapters"]
            if input_grad:
                assert flops == predicted.flops, REPORT[-1]  # exact
                assert abs(m_err) < 1e-3, REPORT[-1]        # exact but AdamW's 4-byte step tensors
            else:
                assert 0 <= f_err < 0.05, REPORT[-1]         # over-count: bottom modules' input gradient
                assert 0 <= m_err < 0.15, REPORT[-1]         # over-count: bottom modules' dropout masks
    assert time.perf_counter() - start < 30


def test_memory_without_dropout_is_an_upper_bound():
    """Without dropout lora_A saves its input itself, shared by modules reading the same tensor (q/k/v) and
    sometimes saved by the base already: the per-module charge is then an upper bound."""
    costs0 = LoraCostModel.from_model(make_base("llama"), BATCH, SEQ, dropout=0.0)
    for alloc in (costs0.uniform_allocation(4), costs0.uniform_allocation(8, ["q_proj", "v_proj"])):
        model, costs = adapt("llama", alloc, dropout=0.0)
        mem = measure_memory(model, batch_for("llama"), input_requires_grad=True)
        predicted = costs.allocation(alloc).memory
        print(f"dropout=0: memory {predicted}/{mem['memory']} ({predicted / mem['memory'] - 1:+.2%})")
        assert predicted >= mem["memory"]
