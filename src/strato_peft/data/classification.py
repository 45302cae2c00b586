"""Sequence-classification examples: tokenized text with integer labels, padded per batch by the collator."""

from __future__ import annotations

from typing import Any

from datasets import Dataset


def tokenize_classification(rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> Dataset:
    """A datasets.Dataset with input_ids, attention_mask and labels (truncated to max_length)."""
    ds = Dataset.from_list(rows)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")
