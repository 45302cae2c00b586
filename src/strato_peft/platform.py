"""Detect the compute platform (CUDA, ROCm, MPS or CPU) and what precision it supports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

import torch

from strato_peft.errors import ConfigError

PlatformName = Literal["cuda", "rocm", "mps", "cpu"]


@dataclass(frozen=True)
class PlatformInfo:
    """The platform a run uses: name, torch device string, mixed precision and default weight dtype."""

    name: PlatformName
    device: str
    mixed_precision: Literal["no", "fp16", "bf16"]
    device_name: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def available_platform() -> PlatformName:
    """The best platform on this machine: ROCm/CUDA GPU, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return "rocm" if getattr(torch.version, "hip", None) else "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_platform(requested: str = "auto", mixed_precision: str = "auto",
                     cli_override: Optional[str] = None) -> PlatformInfo:
    """Resolve ``device_info.device_type`` (or --platform) against what the machine has."""
    want = cli_override if cli_override and cli_override != "auto" else requested
    have = available_platform()
    name: PlatformName = have if want == "auto" else want  # type: ignore[assignment]
    if name != "cpu" and name != have:
        raise ConfigError(f"device_info.device_type: {name!r} requested but this machine offers {have!r}")
    device = {"cuda": "cuda", "rocm": "cuda", "mps": "mps", "cpu": "cpu"}[name]
    gpu = name in ("cuda", "rocm")
    if mixed_precision == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "no"
    else:
        mp = mixed_precision
    if mp != "no" and name == "mps":
        raise ConfigError("device_info.mixed_precision: not supported on MPS; use 'no' or 'auto'")
    if mp != "no" and name == "cpu" and mp == "fp16":
        raise ConfigError("device_info.mixed_precision: fp16 needs a GPU; on CPU use 'no' or 'bf16'")
    device_name = torch.cuda.get_device_name(0) if gpu else ("Apple MPS" if name == "mps" else "cpu")
    return PlatformInfo(name, device, mp, device_name)  # type: ignore[arg-type]


def default_weight_dtype(device: str) -> torch.dtype:
    """Weights in bfloat16 on GPUs that support it, float32 elsewhere (CPU, MPS, older GPUs)."""
    return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
