"""User-facing errors: each carries one line that names the file or config key at fault.

Exit codes of the ``sceneclass`` command (see the README): 0 success, 1 an input cannot be
read (or, for a batch, some scenes failed), 2 the config or an override is invalid, 3 another
run holds the output folder, 4 an output cannot be written, 5 the data cannot be classified
as configured, 70 an internal error (a bug), 130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

#: exit code of an unexpected exception: a bug in sceneclass (sysexits.h EX_SOFTWARE)
BUG_EXIT_CODE = 70


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



class ClassificationError(SceneclassError):
    """The data cannot be classified as configured (names the config key and the data's limit)."""

    exit_code = 5


def output_error(e: OSError, output, what: str = "cannot write the output") -> OutputError:
    """An OSError met while writing ``output`` as one line naming the output and the cause.

    Parameters
    ----------
    e : OSError
        The error (read-only file system, no space left, permission denied, ...).
    output : str or os.PathLike
        The output (file, store or folder) being written.
    what : str
        What failed, in words.

    Returns
    -------
    OutputError
        Exit code 4.
    """
    cause = e.strerror or str(e) or type(e).__name__
    name = e.filename if e.filename and str(e.filename) != str(output) else None
    return OutputError(f"{output}: {what}: {cause}" + (f" ({name})" if name else ""))
