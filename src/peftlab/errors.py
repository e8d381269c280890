"""User-facing errors: the CLI prints each as one line on stderr and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input (config, data, files), not a bug in peftlab."""


class ConfigError(UserError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


class DataError(UserError):
    """Missing, truncated, corrupt or unsafe data files."""


class WeightsError(UserError):
    """A missing or mismatched weights file."""
