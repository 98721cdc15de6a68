"""fs errors: the one base class :class:`FsError` (defined in :mod:`data_manifests.errors`, the lowest
floor, and re-exported here), plus the interruption and exit-status rules of long runs.

The CLI catches :class:`FsError` and prints its message (no traceback) with exit status 1.
Messages name the problem and the fix.
"""

from __future__ import annotations

from data_manifests.errors import FsError

__all__ = ["FsError", "Interrupted", "Terminated", "exit_code", "raise_on_sigterm"]


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so that work in flight is committed as on Ctrl-C."""


class Interrupted(FsError):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143) after keeping its finished work."""

    def __init__(self, message: str, *, terminated: bool = False):
        super().__init__(message)
        self.exit_code = 143 if terminated else 130


def exit_code(exc: BaseException) -> int:
    """The process exit status for ``exc``: 130 Ctrl-C, 143 SIGTERM, 1 any other fs error."""
    if isinstance(exc, Terminated):
        return 143
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return int(getattr(exc, "exit_code", 1))


def raise_on_sigterm() -> None:
    """Make SIGTERM (SLURM, Kubernetes, ``timeout``) raise :class:`Terminated` in the main thread."""
    import signal

    def _handler(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, _handler)
