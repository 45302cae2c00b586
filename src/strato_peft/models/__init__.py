"""Base models: packaged models by short name, shipped architecture configs for dry runs, loading and module names.

Public API::

    resolve_model_source(name, path) -> str
    load_tokenizer(cfg) -> PreTrainedTokenizerBase
    load_model(cfg, task_type, num_labels, device, dtype, id2label=None) -> PreTrainedModel
    build_meta_model(cfg, task_type, num_labels, dtype=None) -> PreTrainedModel   # meta device, no weights
    adaptable_module_names(model) -> list[str]
    architecture_config(name) -> PretrainedConfig | None
"""

from .architectures import (
    ARCHITECTURE_HUB_IDS,
    architecture_config,
    architecture_hub_id,
    architecture_names,
    canonical_architecture_name,
)
from .loading import OUTPUT_HEAD_NAMES, adaptable_module_names, build_meta_model, load_model, load_tokenizer
from .packaged import (
    PACKAGED_MODELS,
    PackagedModel,
    cache_dir,
    is_packaged_model,
    packaged_model_names,
    packaged_model_path,
    resolve_model_source,
)

__all__ = [
    "ARCHITECTURE_HUB_IDS",
    "OUTPUT_HEAD_NAMES",
    "PACKAGED_MODELS",
    "PackagedModel",
    "adaptable_module_names",
    "architecture_config",
    "architecture_hub_id",
    "architecture_names",
    "build_meta_model",
    "cache_dir",
    "canonical_architecture_name",
    "is_packaged_model",
    "load_model",
    "load_tokenizer",
    "packaged_model_names",
    "packaged_model_path",
    "resolve_model_source",
]
