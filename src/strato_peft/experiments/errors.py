"""The error raised for bad `strato compare` input (the CLI prints its one line and exits with code 2)."""

from strato_peft.errors import StratoError


class CompareError(StratoError):
    """A results folder, baseline or metric that cannot be compared (missing, empty, unknown name)."""
