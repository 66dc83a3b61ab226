"""Errors that end a run with a message for the user instead of a traceback."""


class ConfigError(ValueError):
    """A config value that cannot work. The message names the key and what was expected."""


class DataError(RuntimeError):
    """Dataset files are unusable (unreadable, inconsistent). The message names the files."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Dataset files are missing. The message names the folder, the files and how to get them."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite. The message names the step and the loss term."""
