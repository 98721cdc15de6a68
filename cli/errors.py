"""How the CLI ends on an error: one line on stderr and an exit status, never a traceback.

* :class:`featurestore.errors.FsError` (every error a user can cause or fix): ``error: <message>``,
  status :func:`featurestore.errors.exit_code` (1; 130/143 for an interrupted run).
* Ctrl-C / SIGTERM anywhere: ``interrupted`` (or the run's own account of what it kept,
  :class:`~featurestore.errors.Interrupted`), status 130 / 143.
* A closed stdout (``fs store ls | head -1``): silent, status 141 (as a shell reports SIGPIPE).
* OSError (disk full, permissions, a missing file): what the system said about which path.
* Anything else is a bug: one line naming it; the traceback with ``--debug`` or ``FS_DEBUG=1``.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

import click

from featurestore.errors import FsError, Interrupted, exit_code

SIGPIPE_STATUS = 141


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print one line about ``exc`` on stderr and return the exit status for it."""
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        return SIGPIPE_STATUS
    if isinstance(exc, KeyboardInterrupt):
        _err("interrupted" + (" (SIGTERM)" if exit_code(exc) == 143 else ""))
        return exit_code(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Interrupted):  # a stop the user asked for, not an error
        _err(str(exc))
        return exit_code(exc)
    if isinstance(exc, FsError):
        _err(f"error: {exc}")
        return _status(exc)
    if isinstance(exc, OSError):
        _err(f"error: {os_error_message(exc)}")
        return 1
    _err(f"error: unexpected {type(exc).__name__}: {exc}. This is a bug in fs; please report it with the "
         "command you ran" + ("" if debug else " (FS_DEBUG=1 or --debug shows the traceback)"))
    return 1


def os_error_message(exc: OSError) -> str:
    """A one-line account of an OSError that names the path and what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"disk full{where}; free space and re-run the same command (finished work is kept)"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded{where}; free space or raise the quota and re-run"
    if isinstance(exc, PermissionError):
        return f"permission denied{where}; check the folder's permissions or choose another --workspace"
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder{where}"
    if exc.errno == errno.EROFS:
        return f"read-only file system{where}; choose a writable --workspace / --store"
    return f"{exc.strerror or exc}{where}"


def _status(exc: FsError) -> int:
    """exit_code(exc), or 130/143 when the error was raised while handling Ctrl-C / SIGTERM."""
    status = exit_code(exc)
    cause: BaseException | None = exc.__cause__ or exc.__context__
    while status == 1 and cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return exit_code(cause)
        cause = cause.__cause__ or cause.__context__
    return status


def _err(line: str) -> None:
    try:
        click.echo(line, err=True)
    except (BrokenPipeError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests capture stdout)
        pass


def exit_quietly_on_broken_pipe() -> None:
    """Flush stdout now; if the reader has gone, exit 141 silently instead of a shutdown warning."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(SIGPIPE_STATUS)
    except (OSError, ValueError):
        pass
