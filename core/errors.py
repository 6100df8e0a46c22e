"""The user-error boundary: the exceptions a launch script reports as one line instead of a traceback.

A `UserError` means the run cannot go on because of something the user controls (a config, a workdir, a
corpus, the disk) and its message says what to do. Anything else is a bug and keeps its traceback. Each type
also derives from the builtin it refines (ValueError, FileNotFoundError, ...), so callers that catch the
builtin keep working.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Base class: `str(error)` is one sentence saying what went wrong and what to do."""
    exit_code = 1


class ConfigError(UserError, ValueError):
    """A config value is unknown, ill-typed or inconsistent with itself."""


class MissingSourceError(UserError, FileNotFoundError):
    """An input the config names (a config file, a corpus source directory, a checkpoint) does not exist."""


class CorpusMismatchError(UserError, ValueError):
    """A corpus directory holds a corpus built from another config; training never rebuilds it."""


class WorkdirMismatchError(UserError, ValueError):
    """A workdir was made by a run with another data or model identity (tokenizer, vocabulary, shapes,
    batch geometry); resuming it would silently mix two experiments."""


class CheckpointError(UserError, OSError):
    """No checkpoint in the workdir could be restored."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss or gradient became NaN/inf; nothing after the last good checkpoint was saved."""


class DistributedError(UserError, RuntimeError):
    """The processes of a multi-process run could not meet (a peer never started or died)."""


class EnvironmentFault(UserError, OSError):
    """The machine refused a write: disk full, read-only filesystem, no permission."""


class Interrupted(UserError):
    """SIGINT/SIGTERM: a final checkpoint was saved and the run stopped cleanly; rerun to resume."""
    exit_code = 130


# errno values that mean "the machine refused", not "the code is wrong".
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def environment_fault(error: BaseException) -> EnvironmentFault | None:
    """An EnvironmentFault for an OSError (or one in its cause/context chain) with an ENVIRONMENT_ERRNOS code;
    None for anything else, which stays a bug with its traceback."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
            where = f" ({error.filename})" if error.filename else ""
            return EnvironmentFault(
                f"{error.strerror or error}{where}: free space or fix the permissions of the workdir, then rerun "
                "the same command (it resumes from the last checkpoint).")
        # orbax and tensorstore report write failures from their threads as text, not as an OSError
        text = str(error)
        for code in ENVIRONMENT_ERRNOS:
            if os.strerror(code) in text:
                return EnvironmentFault(
                    f"{os.strerror(code)} while writing ({_first_line(text)}): free space or fix the permissions "
                    "of the workdir, then rerun the same command (it resumes from the last checkpoint).")
        error = error.__cause__ or error.__context__
    return None


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."
