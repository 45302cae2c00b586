"""Configuration: schema (every field documented) and loader (YAML + overrides)."""

from strato_peft.config.loader import apply_overrides, default_config_path, load_config, validate_config
from strato_peft.config.schema import StratoConfig

__all__ = ["StratoConfig", "apply_overrides", "default_config_path", "load_config", "validate_config"]
