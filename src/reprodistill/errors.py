"""User-facing error types: each message says what is wrong and what to do next."""


class ReprodistillError(Exception):
    """Base class for errors the CLI reports without a traceback."""


class ConfigError(ReprodistillError):
    """A config key or value is invalid."""


class DataError(ReprodistillError):
    """A data set is missing, corrupt or inconsistent."""


class WeightsError(ReprodistillError):
    """Model weights are missing, corrupt or do not fit the architecture."""
