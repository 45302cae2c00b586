"""Tiny randomly initialised models, tokenizers and data sets built in the tests (no downloads)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import torch

WORDS = ("zero one two three four five six seven eight nine ten plus minus equals what is the answer "
         "good bad fine great awful happy sad movie food day").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(kind: str = "llama"):
    """A small word-level fast tokenizer over WORDS (BERT-style specials for kind='bert')."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if kind == "bert" else ["<pad>", "<unk>", "<s>", "</s>"]
    chat = ["<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {t: i for i, t in enumerate(specials + chat + sorted(set(WORDS)) + [str(i) for i in range(40)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                       bos_token="<s>", eos_token="</s>", additional_special_tokens=chat)
        if kind == "llama":
            fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model_dir(root: Path, kind: str, seed: int = 0) -> Path:
    """Save a tiny random model of ``kind`` (llama, gpt2, bert) with its tokenizer into root/kind."""
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, GPT2Config,
                              LlamaConfig)

    torch.manual_seed(seed)
    tok = make_tokenizer(kind)
    vocab = len(tok)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        model = AutoModelForCausalLM.from_config(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        model = AutoModelForCausalLM.from_config(cfg)
    elif kind == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=256, pad_token_id=tok.pad_token_id)
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        raise ValueError(kind)
    out = root / kind
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_sft_jsonl(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Arithmetic prompt/response rows: 'what is three plus four' -> 'seven'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 5), rng.randint(0, 4)
        rows.append({"question": f"what is {WORDS[a]} plus {WORDS[b]}", "answer": f"the answer is {WORDS[a + b]}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_cls_csv(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Sentiment-like rows with labels good/bad chosen by the words used."""
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sentence", "sentiment"])
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            words = ["good", "great", "happy", "fine"] if label == "pos" else ["bad", "awful", "sad"]
            w.writerow([f"the {rng.choice(['movie', 'food', 'day'])} is {rng.choice(words)}", label])
    return path
