"""User-facing errors: each carries one line that names the field or file and what was expected."""


class StratoError(Exception):
    """Bad input from the user (config, data, paths). The CLI prints the message and exits with code 2."""

    exit_code = 2


class ConfigError(StratoError):
    """The configuration is invalid."""


class DataError(StratoError):
    """A data file or data set is missing, empty or lacks the needed columns."""


class ModelError(StratoError):
    """A model cannot be found or does not fit the configuration."""


class OutputExistsError(StratoError):
    """The output directory already holds a run and neither --overwrite nor --resume was given."""
