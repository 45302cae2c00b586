"""The method registry: each method module registers itself with one ``register(...)`` line."""

from __future__ import annotations

from strato_peft.errors import ConfigError
from strato_peft.methods.base import MethodSpec
from strato_peft.registry import Registry

_METHODS: Registry[MethodSpec] = Registry("method", "peft.method", ConfigError)


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method under ``spec.name``; names are unique."""
    return _METHODS.register(spec.name, spec)


def get_method(name: str) -> MethodSpec:
    """The method registered as ``name`` (a ConfigError lists the known ones otherwise)."""
    return _METHODS.get(name.lower().replace("-", "_"))


def available_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return _METHODS.names()
