"""The one error base class of fs: every error a user can cause or fix derives from it.

It lives on the lowest floor (``data_manifests``) so that every package above can derive from it
without importing upward; :mod:`featurestore.errors` re-exports it. The CLI catches :class:`FsError`
and prints its message (no traceback) with exit status 1. Messages name the problem and the fix.
"""

from __future__ import annotations


class FsError(Exception):
    """Base of every fs error that carries a message meant for the user."""
