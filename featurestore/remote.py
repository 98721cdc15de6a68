"""Stores on object storage (``s3://``, ``gs://``, any fsspec URL): what a local filesystem gives for free.

* **Locks.** A group's writer holds a *lease*: a small JSON object (owner host + pid, expiry)
  created only if absent (S3 ``If-None-Match: *``, through fsspec's ``pipe_file(mode="create")``)
  and renewed by a background thread. A lease whose owner is gone (same host, dead pid) or that
  has expired is taken over. A filesystem that cannot create-if-absent is refused, never
  locked unsafely.
* **Temp files.** Object stores write every chunk with one atomic PUT: a killed writer leaves
  no temp objects to clean.
* **Sizes.** ``du`` over the group's prefix.
* **Errors.** An unreachable endpoint, refused credentials, a missing bucket or denied access
  becomes a :class:`~featurestore.errors.FsError` naming the URL, the endpoint, the real cause
  and the fix. :func:`probe` finds them before anything else is read, in seconds (one attempt,
  short timeouts), so that no read command mistakes them for an empty store.

Credentials and endpoints come from the usual places of each filesystem (for S3: the AWS
environment variables or config files, ``AWS_ENDPOINT_URL`` for S3-compatible servers).
Install with ``pip install "fs-ser[s3]"``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from featurestore.errors import FsError

S3_EXTRA = 'pip install "fs-ser[s3]"  (or: pip install s3fs)'
LEASE_SECONDS = 120.0  # a lease not renewed for this long is stale (its owner is presumed dead)
PROBE_SECONDS = 3  # connect timeout of probe(): an unreachable endpoint is reported in seconds


class RemoteStoreError(FsError, RuntimeError):
    """An object store that cannot be used as asked (missing bucket, denied access, no safe lock)."""


def is_local(url: str) -> bool:
    """True for a path or ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def _is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def filesystem(url: str, *, quick: bool = False) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of ``url``; a clear error when its package is missing.

    ``quick``: an S3 filesystem that tries once with short timeouts (for :func:`probe`).
    """
    import fsspec.core

    options: dict[str, Any] = {}
    if quick and _is_s3(url):
        options = {"config_kwargs": {"connect_timeout": PROBE_SECONDS, "read_timeout": 4 * PROBE_SECONDS,
                                                   "retries": {"max_attempts": 1, "mode": "standard"}}}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        extra = S3_EXTRA if _is_s3(url) else f"the fsspec package for {url.split('://')[0]}://"
        raise RemoteStoreError(f"cannot open store {url}: {exc}. Install {extra}") from None
    except ValueError as exc:
        raise RemoteStoreError(f"cannot open store {url}: {exc}") from None


def endpoint(url: str, fs: Any = None) -> str:
    """The server a store URL talks to, for messages: the S3 endpoint URL (client, environment or AWS)."""
    if not _is_s3(url):
        return url.split("://", 1)[0] + "://"
    client = getattr(fs, "_s3", None)
    found = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return str(found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
               or "the AWS S3 endpoint")


def _unreachable(exc: BaseException) -> bool:
    """A connection that could not be made or timed out (as opposed to an answer from the server)."""
    kinds: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        kinds += (BotoConnectionError, HTTPClientError)
    except ImportError:
        pass
    try:
        from aiohttp import ClientConnectionError

        kinds += (ClientConnectionError,)
    except ImportError:
        pass
    return isinstance(exc, kinds)


def access_error(url: str, exc: BaseException, doing: str, fs: Any = None) -> RemoteStoreError:
    """``exc`` from the object store as an error naming ``url``, the endpoint, the cause and the fix.

    Decided by the exception's type (fsspec maps S3 error codes onto FileNotFoundError /
    PermissionError), never by its text: refused credentials are not a missing bucket.
    """
    text = str(exc) or type(exc).__name__
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    where = endpoint(url, fs)
    if _unreachable(exc):
        return RemoteStoreError(f"{doing} {url}: cannot reach the endpoint {where} ({type(exc).__name__}: {text}); "
                                "check that the server runs and the address (AWS_ENDPOINT_URL for S3-compatible "
                                "servers) and network are right")
    if isinstance(exc, FileNotFoundError):
        return RemoteStoreError(f"{doing} {url}: the bucket {bucket!r} does not exist at {where} ({text}); create "
                                f"it (e.g. `aws s3 mb s3://{bucket}`) or give another --store")
    if isinstance(exc, PermissionError):
        return RemoteStoreError(f"{doing} {url}: access denied by {where} ({text}); check the credentials "
                                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and give them read, write "
                                f"and delete rights on {bucket!r} (s3:ListBucket, s3:GetObject, s3:PutObject, "
                                "s3:DeleteObject), or give another --store")
    return RemoteStoreError(f"{doing} {url} at {where}: {type(exc).__name__}: {text}; check the URL, the "
                            "credentials and the endpoint (AWS_ENDPOINT_URL for S3-compatible servers)")


def probe(url: str) -> list[str]:
    """Names directly under the store at ``url`` ([] when nothing is stored there yet).

    One quick attempt: an unreachable endpoint, refused credentials or a missing bucket raise
    RemoteStoreError naming the endpoint and the cause within seconds.
    """
    fs, path = filesystem(url, quick=True)
    path = path.rstrip("/")
    bucket = path.split("/", 1)[0]
    fs.invalidate_cache()
    try:
        try:
            return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            if path != bucket:
                fs.ls(bucket, detail=False)  # the bucket exists: the store is just not made yet
            else:
                raise
            return []
    except Exception as exc:
        raise access_error(url, exc, "cannot read", fs) from None


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(lease: dict[str, Any]) -> bool:
    """Expired, or held by a process of this host that no longer runs."""
    if float(lease.get("expires", 0)) < time.time():
        return True
    return lease.get("host") == socket.gethostname() and not _pid_alive(int(lease.get("pid", -1)))


class Lease:
    """An exclusive, renewed lease object at ``path`` on ``fs`` (see the module docstring)."""

    def __init__(self, fs: Any, path: str, url: str, what: str, seconds: float = LEASE_SECONDS):
        self.fs, self.path, self.url, self.what, self.seconds = fs, path, url, what, seconds
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({**_owner(), "token": self.token, "what": self.what,
                           "expires": time.time() + self.seconds}).encode()

    def _create(self) -> bool:
        try:
            self.fs.pipe_file(self.path, self._body(), mode="create")
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError) as exc:
            raise RemoteStoreError(f"{self.url}: this filesystem cannot create an object only if it is absent "
                                   f"({exc}), so fs cannot lock {self.what} safely there; use a local path, s3:// "
                                   "or another store with conditional writes") from None
        return True

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"expires": 0}  # a torn or foreign object: treat as stale

    def acquire(self) -> None:
        """Take the lease, or raise RemoteStoreError naming its holder and the fix."""
        try:
            if not self._create():
                held = self._read()
                if held is not None and not _stale(held):
                    until = time.strftime("%H:%M:%S", time.localtime(float(held["expires"])))
                    raise RemoteStoreError(
                        f"another process (pid {held.get('pid')} on {held.get('host')}) is writing {self.what} in "
                        f"{self.url} (lease renewed until {until}); wait for it to finish, or extract another "
                        f"model. If that process is gone, its lease expires within {self.seconds:.0f} s")
                self.fs.rm_file(self.path)  # stale: take it over (create-if-absent decides a race)
                if not self._create():
                    raise RemoteStoreError(f"another process took the lease of {self.what} in {self.url} just now; "
                                           "wait for it to finish")
        except RemoteStoreError:
            raise
        except Exception as exc:
            raise access_error(self.url, exc, "cannot write to", self.fs) from None
        self._thread = threading.Thread(target=self._renew, name="fs-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                held = self._read()
                if held is None or held.get("token") != self.token:
                    self.lost = True
                    return
                self.fs.pipe_file(self.path, self._body())
            except Exception:  # a transient error: the next round tries again before expiry
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            held = self._read()
            if held is not None and held.get("token") == self.token:
                self.fs.rm_file(self.path)
        except Exception:  # expiry frees it
            pass


@contextmanager
def lease(url: str, name: str, what: str, seconds: float = LEASE_SECONDS) -> Iterator[Lease]:
    """Hold the lease ``<store>.locks/<name>.lock`` beside the store at ``url`` for the block."""
    fs, path = filesystem(url)
    held = Lease(fs, f"{path.rstrip('/')}.locks/{name}.lock", url, what, seconds)
    held.acquire()
    try:
        yield held
    finally:
        held.release()
    if held.lost:
        raise RemoteStoreError(f"the lease of {what} in {url} was taken over while this process wrote (it was not "
                               f"renewed for {seconds:.0f} s); run `fs store verify` and re-run the same command")


def du(url: str, sub: str = "") -> int:
    """Bytes stored under ``url`` (or its prefix ``sub``)."""
    fs, path = filesystem(url)
    prefix = f"{path.rstrip('/')}/{sub}".rstrip("/")
    try:
        return int(sum(fs.du(prefix, total=False).values()))
    except FileNotFoundError:
        return 0
    except Exception as exc:
        raise access_error(url, exc, "cannot list", fs) from None
