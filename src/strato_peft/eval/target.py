"""What is evaluated: a base model (--model), or a run folder / adapter folder (--checkpoint) on its base model.

An adapter is loaded onto the base model it was trained on (from the run's config_used.yaml, else the adapter's
``base_model_name_or_path``); asking for another base model is an error that names both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from strato_peft.config.schema import ModelConfig, StratoConfig
from strato_peft.errors import StratoError
from strato_peft.platform import default_weight_dtype


class EvalInputError(StratoError):
    """A checkpoint, model or evaluation option is unusable."""


@dataclass
class EvalTarget:
    """A loaded model ready to score, with what identifies it in eval_results.json."""

    model: Any
    tokenizer: Any
    task_type: str
    identity: dict[str, Any]
    run_dir: Optional[Path] = None
    run_config: Optional[StratoConfig] = field(default=None, repr=False)


def heldout_rows(target: EvalTarget, limit: Optional[int], task: str, task_type: str, kind: str
                 ) -> tuple[StratoConfig, Any, list[dict[str, Any]]]:
    """(run config, its task data, the held-out rows to score) of the run ``target`` came from: the same split
    training used. Tasks that score a run's own held-out split call this; anything else is a one-line error."""
    from strato_peft.data import load_task_data

    cfg = target.run_config
    if cfg is None or target.task_type != task_type:
        raise EvalInputError(f"--tasks {task} needs --checkpoint of a {kind} run (its config names the data and the "
                             "held-out split)")
    data = load_task_data(cfg.task, cfg.seed)
    return cfg, data, data.eval[:limit] if limit else data.eval


def _read_run_config(run_dir: Path) -> StratoConfig:
    from strato_peft.config import validate_config

    return validate_config(yaml.safe_load((run_dir / "config_used.yaml").read_text()) or {},
                           source=str(run_dir / "config_used.yaml"))


def locate_checkpoint(path: str | Path) -> tuple[Optional[Path], Optional[Path], Optional[StratoConfig]]:
    """(run_dir, saved adapter-or-model dir, run config) for a run folder or an adapter folder."""
    p = Path(path)
    if not p.exists():
        raise EvalInputError(f"--checkpoint: {p} does not exist")
    if (p / "config_used.yaml").is_file():
        saved = next((p / d for d in ("adapter", "model") if (p / d).is_dir()), None)
        if saved is None:
            raise EvalInputError(f"--checkpoint: run {p} has no adapter/ or model/ folder (unfinished run?)")
        return p, saved, _read_run_config(p)
    if (p / "adapter_config.json").is_file():
        run_dir = p.parent if (p.parent / "config_used.yaml").is_file() else None
        return run_dir, p, _read_run_config(run_dir) if run_dir else None
    raise EvalInputError(f"--checkpoint: {p} holds neither a run (config_used.yaml) nor an adapter "
                         "(adapter_config.json)")


def _fingerprint(folder: Path) -> Optional[str]:
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return None
    h = hashlib.sha256()
    for w in weights:
        h.update(w.read_bytes())
    return h.hexdigest()[:16]


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def load_eval_target(checkpoint: Optional[str] = None, model: Optional[str] = None, device: str = "cpu"
                     ) -> EvalTarget:
    """Load what ``--checkpoint`` and/or ``--model`` name, on ``device``."""
    from strato_peft.models import load_model, load_tokenizer, resolve_model_source

    if not checkpoint and not model:
        raise EvalInputError("give --checkpoint RUN_DIR|ADAPTER_DIR or --model NAME_OR_PATH")
    dtype = default_weight_dtype(device)
    explicit = ModelConfig(path=model) if model and Path(model).is_dir() else ModelConfig(name=model) if model else None
    if not checkpoint:
        assert explicit is not None
        tok = load_tokenizer(explicit)
        net = load_model(explicit, "causal_lm", None, device, dtype)
        return EvalTarget(net.eval(), tok, "causal_lm", {"base_model": model, "adapter": None})

    run_dir, saved, cfg = locate_checkpoint(checkpoint)
    assert saved is not None
    task_type = cfg.task.type if cfg and cfg.task.type else None
    if cfg is not None and task_type is None:
        from strato_peft.data.sources import task_type_of

        task_type = task_type_of(cfg.task)
    if saved.name == "model" and not (saved / "adapter_config.json").exists():  # full fine-tuning
        mcfg = ModelConfig(path=str(saved))
        net = load_model(mcfg, task_type or "causal_lm", _num_labels(saved), device, dtype)
        return EvalTarget(net.eval(), load_tokenizer(mcfg), task_type or "causal_lm",
                          {"base_model": str(saved), "adapter": None, "weights_sha256": _fingerprint(saved)},
                          run_dir, cfg)

    adapter_cfg = json.loads((saved / "adapter_config.json").read_text())
    trained_on = adapter_cfg.get("base_model_name_or_path") or ""
    if task_type is None:
        task_type = "classification" if adapter_cfg.get("task_type") == "SEQ_CLS" else "causal_lm"
    base = cfg.model.model_copy() if cfg else ModelConfig(path=trained_on) if Path(trained_on).is_dir() else \
        ModelConfig(name=trained_on)
    if explicit is not None:
        wanted = resolve_model_source(explicit.name, explicit.path)
        if trained_on and not _same_model(wanted, trained_on):
            raise EvalInputError(f"adapter {saved} was trained on base model {trained_on!r}, not on --model "
                                 f"{model!r} ({wanted})")
        base = explicit
    from peft import PeftModel

    net = load_model(base, task_type, _num_labels(saved), device, dtype)
    try:
        net = PeftModel.from_pretrained(net, str(saved))
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise EvalInputError(f"adapter {saved} does not fit base model {base.path or base.name!r} "
                                 f"(it was trained on {trained_on!r}): weight shapes differ") from None
        raise
    identity = {"base_model": base.path or base.name, "trained_on": trained_on, "adapter": str(saved),
                "adapter_sha256": _fingerprint(saved), "peft_type": adapter_cfg.get("peft_type")}
    return EvalTarget(net.eval(), load_tokenizer(base), task_type, identity, run_dir, cfg)


def _num_labels(saved: Path) -> Optional[int]:
    """Number of classes of a saved classifier head (read from the safetensors header), if any."""
    from safetensors import safe_open

    for weights in sorted(saved.glob("*.safetensors")):
        with safe_open(str(weights), "pt") as fh:
            for key in fh.keys():
                if (".classifier." in key or ".score." in key or key.startswith(("classifier.", "score."))) \
                        and key.endswith("weight"):
                    return int(fh.get_slice(key).get_shape()[0])
    return None
