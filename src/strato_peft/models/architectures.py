"""Config files of well-known architectures, shipped so that ``--dry-run`` can cost a plan without any weights.

Each ``arch_configs/<name>.json`` is a plain transformers ``config.json``. Hub ids of the same models (for example
``meta-llama/Llama-2-7b-hf``) are aliases of the short names.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

from transformers import AutoConfig, PretrainedConfig

ARCHITECTURES_DIR = Path(__file__).resolve().parent / "arch_configs"

# Short name -> the hub id of the original weights (used when such a name is loaded for real).
ARCHITECTURE_HUB_IDS: dict[str, str] = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama2-13b": "meta-llama/Llama-2-13b-hf",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}

# Further spellings (compared lower-case) that mean the same architecture.
_EXTRA_ALIASES: dict[str, str] = {
    "meta-llama/llama-2-7b-chat-hf": "llama2-7b",
    "meta-llama/llama-2-7b": "llama2-7b",
    "llama-2-7b": "llama2-7b",
    "meta-llama/llama-2-13b-chat-hf": "llama2-13b",
    "meta-llama/llama-2-13b": "llama2-13b",
    "llama-2-13b": "llama2-13b",
    "mistralai/mistral-7b-instruct-v0.1": "mistral-7b",
    "mistral-7b-v0.1": "mistral-7b",
    "huggingfacetb/smollm2-135m": "smollm2-135m",
    "google/gemma-3-270m-it": "gemma3-270m",
    "gemma-3-270m": "gemma3-270m",
    "sentence-transformers/all-minilm-l6-v2": "minilm-l6",
    "all-minilm-l6-v2": "minilm-l6",
}


@lru_cache(maxsize=None)
def _aliases() -> dict[str, str]:
    aliases = {name: name for name in architecture_names()}
    aliases.update({hub_id.lower(): name for name, hub_id in ARCHITECTURE_HUB_IDS.items()})
    aliases.update(_EXTRA_ALIASES)
    return aliases


@lru_cache(maxsize=None)
def architecture_names() -> list[str]:
    """Sorted short names of the shipped architecture configs; listed in errors about unknown models."""
    return sorted(path.stem for path in ARCHITECTURES_DIR.glob("*.json"))


def canonical_architecture_name(name: str) -> Optional[str]:
    """The short name for ``name`` (a short name, or an alias such as a hub id), or None when it is not shipped."""
    key = name.strip().lower()
    aliases = _aliases()
    return aliases.get(key) or aliases.get(key.replace("_", "-"))


def architecture_hub_id(name: str) -> Optional[str]:
    """The hub id of the original weights for an architecture name or alias, or None when it is not shipped."""
    canonical = canonical_architecture_name(name)
    return ARCHITECTURE_HUB_IDS.get(canonical) if canonical else None


def architecture_config(name: str) -> Optional[PretrainedConfig]:
    """A fresh transformers config for a shipped architecture (short name or alias), or None when unknown."""
    canonical = canonical_architecture_name(name)
    if canonical is None:
        return None
    values = json.loads((ARCHITECTURES_DIR / f"{canonical}.json").read_text(encoding="utf-8"))
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)
