"""User-facing errors: each carries one line that names the file or config key at fault."""

from __future__ import annotations


class SceneclassError(Exception):
    """An error caused by the user's input or config, reported as one line without a traceback."""

    exit_code = 1


class ConfigError(SceneclassError):
    """The config file or an override is invalid (names the key)."""

    exit_code = 2


class InputError(SceneclassError):
    """An input raster is missing, unreadable or unusable (names the file)."""

    exit_code = 1


class OutputError(SceneclassError):
    """An output could not be written or put in place (names the output and the cause, e.g.
    ``No space left on device``); the previous output, legend and manifest are unchanged."""

    exit_code = 4
