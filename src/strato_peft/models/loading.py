"""Load tokenizers and base models from a ModelConfig, build weightless (meta) models for dry runs, and list the
module names an adapter can target."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
from torch import nn

from strato_peft.errors import ModelError

from .architectures import architecture_config, architecture_names
from .packaged import is_packaged_model, packaged_model_names, resolve_model_source

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from strato_peft.config.schema import ModelConfig

logger = logging.getLogger(__name__)

TaskType = Literal["causal_lm", "classification"]

# Names of output heads: never offered as adapter targets (they are trained in full via modules_to_save instead).
OUTPUT_HEAD_NAMES = frozenset({"lm_head", "classifier", "score", "qa_outputs", "embed_out", "output_projection"})
# Sub-modules that peft itself adds; skipped so that a wrapped model lists the same names as the base model.
_PEFT_INTERNAL_NAMES = frozenset({
    "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_dropout",
    "ia3_l", "modules_to_save", "original_module",
})
# Encoder-only model types: they have no sensible causal-LM head.
_ENCODER_ONLY = frozenset({
    "bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "mpnet",
    "modernbert", "camembert",
})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _source_kwargs(cfg: "ModelConfig", source: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision and not Path(source).is_dir():
        kwargs["revision"] = cfg.revision
    return kwargs


def _describe(cfg: "ModelConfig") -> str:
    return f"model.path {cfg.path}" if cfg.path else f"model {cfg.name!r}"


def load_tokenizer(cfg: "ModelConfig") -> "PreTrainedTokenizerBase":
    """The tokenizer of the configured model, padded on the right with pad_token = eos_token when it has none."""
    from transformers import AutoTokenizer

    source = resolve_model_source(cfg.name, cfg.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_source_kwargs(cfg, source))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {_describe(cfg)}: {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or getattr(tokenizer, "sep_token", None) or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"the tokenizer of {_describe(cfg)} has neither a pad nor an eos token")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


# Classification heads stay in full precision: they are trained in full (peft's modules_to_save).
CLASSIFIER_HEADS = ["classifier", "score", "pre_classifier"]


def _quantization_config(cfg: "ModelConfig", device: str, task_type: str = "causal_lm") -> Any:
    """A transformers BitsAndBytesConfig for cfg.quantization, or a ModelError when bitsandbytes is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            f"model.quantization {cfg.quantization!r} needs bitsandbytes, which is not installed: "
            "pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    skip = CLASSIFIER_HEADS if task_type == "classification" else None
    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_double_quant,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )


def _disable_cpu_4bit_packing(model: nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers on the autograd-capable path on CPU.

    bitsandbytes 0.50 repacks a CPU Linear4bit for its bf16 gemv kernel on the first no-grad eval forward; that kernel
    has no autograd, so every later training step silently gets no adapter gradients (and layers whose in_features
    is not a multiple of 64 crash). Turning the repacking off keeps eval and training exact.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _pad_token_id(cfg: "ModelConfig", config: "PretrainedConfig") -> Optional[int]:
    """The pad id load_tokenizer will use, so that classification heads find the last real token.

    Taken from the tokenizer (it may pad with eos while the config names another id); else the config's pad or eos.
    """
    try:
        tokenizer = load_tokenizer(cfg)
        if tokenizer.pad_token_id is not None:
            return int(tokenizer.pad_token_id)
    except ModelError:
        pass
    if getattr(config, "pad_token_id", None) is not None:
        return config.pad_token_id
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return eos


def load_model(
    cfg: "ModelConfig",
    task_type: TaskType,
    num_labels: Optional[int],
    device: str,
    dtype: torch.dtype,
    id2label: Optional[dict[int, str]] = None,
) -> "PreTrainedModel":
    """Load the configured base model with real weights for causal LM or sequence classification.

    Handles bitsandbytes 4/8-bit loading, device_map and attn_implementation; user errors become one-line ModelErrors.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    if task_type not in ("causal_lm", "classification"):
        raise ValueError(f"task_type must be 'causal_lm' or 'classification', not {task_type!r}")
    if task_type == "classification" and not num_labels and not id2label:
        raise ValueError("classification needs num_labels (or id2label)")

    source = resolve_model_source(cfg.name, cfg.path)
    kwargs = _source_kwargs(cfg, source)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {_describe(cfg)}: {_first_line(exc)}") from exc

    model_type = getattr(config, "model_type", "")
    if task_type == "causal_lm" and model_type in _ENCODER_ONLY:
        raise ModelError(
            f"{_describe(cfg)} is an encoder-only {model_type} model and cannot be trained as causal_lm; "
            "use task.type: classification or a decoder model"
        )

    kwargs["dtype"] = dtype
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    quantized = cfg.quantization != "none"
    if quantized:
        kwargs["quantization_config"] = _quantization_config(cfg, device, task_type)
    if cfg.device_map is not None:
        kwargs["device_map"] = cfg.device_map
    elif quantized:
        kwargs["device_map"] = {"": device}  # bitsandbytes quantizes as it places the weights

    if task_type == "classification":
        auto_cls = AutoModelForSequenceClassification
        if id2label:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            kwargs["id2label"] = id2label
            kwargs["label2id"] = {v: k for k, v in id2label.items()}
            num_labels = num_labels or len(id2label)
        kwargs["num_labels"] = num_labels
    else:
        auto_cls = AutoModelForCausalLM

    try:
        model = auto_cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load {_describe(cfg)}: {_first_line(exc)}") from exc
    except ValueError as exc:
        message = _first_line(exc)
        if "Unrecognized configuration class" in message:
            head = "sequence-classification" if task_type == "classification" else "causal-LM"
            raise ModelError(f"{_describe(cfg)} ({model_type}) has no {head} head in transformers") from exc
        raise
    except (RuntimeError, NotImplementedError) as exc:
        if quantized:
            raise ModelError(
                f"bitsandbytes cannot load {_describe(cfg)} in {cfg.quantization} on {device}: {_first_line(exc)}; "
                "set model.quantization: none"
            ) from exc
        raise

    if cfg.quantization == "4bit":
        _disable_cpu_4bit_packing(model)
    if task_type == "classification":
        model.config.pad_token_id = _pad_token_id(cfg, model.config)
    if cfg.device_map is None and not quantized:
        model.to(device)
    return model


def _meta_config(cfg: "ModelConfig") -> "PretrainedConfig":
    from transformers import AutoConfig

    if cfg.path:
        source = resolve_model_source(cfg.name, cfg.path)
        try:
            return AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the config of model.path {cfg.path}: {_first_line(exc)}") from exc
    config = architecture_config(cfg.name)
    if config is not None:
        return config
    if is_packaged_model(cfg.name):  # every packaged model ships an architecture file; keep a fallback anyway
        return AutoConfig.from_pretrained(resolve_model_source(cfg.name, None))
    try:  # a hub id whose config is already in the local Hugging Face cache: no network in a dry run
        return AutoConfig.from_pretrained(
            cfg.name, revision=cfg.revision, local_files_only=True, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError):
        known = sorted(set(architecture_names()) | set(packaged_model_names()))
        raise ModelError(
            f"no architecture config for model {cfg.name!r} (not shipped, not in the local Hugging Face cache); "
            f"known architectures: {', '.join(known)}; or set model.path to a folder with a config.json"
        ) from None


def build_meta_model(
    cfg: "ModelConfig",
    task_type: TaskType,
    num_labels: Optional[int],
    dtype: Optional[torch.dtype] = None,
) -> "PreTrainedModel":
    """The configured model's architecture on the meta device, without weights: shapes for costing a dry run.

    ``dtype`` defaults to the config's own (the dtype the weights are stored in).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = _meta_config(cfg)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if task_type == "classification":
        config.num_labels = num_labels or 2
        auto_cls = AutoModelForSequenceClassification
    else:
        if config.model_type in _ENCODER_ONLY:
            raise ModelError(f"model {cfg.name!r} is an encoder-only {config.model_type} model; use classification")
        auto_cls = AutoModelForCausalLM
    try:
        with torch.device("meta"):
            return auto_cls.from_config(config, **kwargs)
    except ValueError as exc:
        raise ModelError(
            f"cannot build model {cfg.name!r} ({config.model_type}) for {task_type}: {_first_line(exc)}"
        ) from exc


def _adaptable_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding]
    try:
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers always has it today
        pass
    if importlib.util.find_spec("bitsandbytes") is not None:
        try:
            import bitsandbytes as bnb

            types.extend([bnb.nn.Linear4bit, bnb.nn.Linear8bitLt])
        except Exception:  # noqa: BLE001 - a broken bitsandbytes install must not break listing names
            pass
    return tuple(types)


def output_head(model: nn.Module) -> Optional[nn.Module]:
    """The model's output embedding (LM head), or None; never adapted by 'all-linear'."""
    get_output = getattr(model, "get_output_embeddings", None)
    if not callable(get_output):
        return None
    try:
        return get_output()
    except Exception:  # noqa: BLE001 - some models raise instead of returning None
        return None


def adaptable_module_names(model: nn.Module) -> list[str]:
    """Sorted unique leaf names (``q_proj``, ``c_attn``, ...) of modules peft can adapt, output heads excluded.

    Used to suggest valid ``peft.target_modules`` when a requested name matches nothing.
    """
    types = _adaptable_types()
    head = output_head(model)
    head_ids = {id(head)} if head is not None else set()
    names: set[str] = set()
    for name, module in model.named_modules():
        if not name or not isinstance(module, types) or id(module) in head_ids:
            continue
        parts = name.split(".")
        if parts[-1] == "base_layer":  # wrapped by a peft tuner layer: report the wrapped name
            parts = parts[:-1]
        if any(part in OUTPUT_HEAD_NAMES or part in _PEFT_INTERNAL_NAMES for part in parts):
            continue
        names.add(parts[-1])
    return sorted(names)


__all__ = ["OUTPUT_HEAD_NAMES", "adaptable_module_names", "output_head", "build_meta_model", "load_model", "load_tokenizer"]
