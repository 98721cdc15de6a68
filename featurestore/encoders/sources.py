"""Where pretrained weights come from: a local directory or the Hugging Face hub/cache.

Every failure to obtain weights becomes an :class:`EncoderError` that says how to supply them, at
once: weights in the local Hugging Face cache are used without asking the hub when the hub cannot be
reached, and weights that are neither cached nor reachable (``HF_HUB_OFFLINE=1``, no network, a
dead ``HF_ENDPOINT``) are refused after one short probe instead of minutes of retries.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from .base import EncoderError

T = TypeVar("T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "on", "yes", "true"}
HUB_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT",
                "HF_TOKEN")
HUB_PROBE_TIMEOUT_S = 5.0


class HubUnreachable(ConnectionError):
    """The hub did not answer the probe (no network, a dead HF_ENDPOINT, a firewall)."""


@dataclass(frozen=True)
class Source:
    """A pretrained model location: ``ref`` goes to ``from_pretrained``."""

    ref: str
    is_local: bool


def source_for(name: str) -> Source | None:
    """A local directory or plausible hub id for ``name``; None when it is neither."""
    from .base import EncoderError

    path = Path(name).expanduser()
    if path.is_dir():
        return Source(str(path.resolve()), True)
    if path.exists():
        raise EncoderError(f"{name}: is a file; give the model directory (config.json + weights)")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise EncoderError(f"{name}: no such model directory")
    if _HUB_ID.match(name):
        return Source(name, False)
    return None


def offline() -> bool:
    """True when the environment forbids hub access."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def in_hf_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id`` (its config.json); nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id or an unreadable cache: not usable from the cache
        return False


def hub_endpoint() -> str:
    """The hub URL in use (``HF_ENDPOINT``, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


@functools.lru_cache(maxsize=8)
def hub_unreachable(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub at ``endpoint`` cannot be reached (one HEAD request, no retries); None when it answers.

    Any HTTP answer (even 401 or 404) means it is reachable; only the connection failing counts.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models", method="HEAD"),
                               timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the hub at {endpoint} cannot be reached ({getattr(reason, 'strerror', None) or reason})"
    return None


def fetch(load: Callable[..., T], src: Source, label: str, **kwargs: Any) -> T:
    """``load(src.ref, **kwargs)`` quietly; any failure becomes a helpful EncoderError.

    Hub weights: offline (``HF_HUB_OFFLINE``) or with the hub unreachable, only the local cache is
    used; not cached and not reachable is refused at once (:func:`unavailable`).
    """
    from .base import EncoderError

    if not src.is_local:
        if offline():
            kwargs["local_files_only"] = True
        else:
            why = hub_unreachable(hub_endpoint())
            if why is not None:
                if not in_hf_cache(src.ref):
                    raise unavailable(src, label, HubUnreachable(f"{why}, and the model is not in the HF cache"))
                kwargs["local_files_only"] = True
    try:
        with quiet_loading():
            return load(src.ref, **kwargs)
    except EncoderError:
        raise
    except Exception as exc:  # hub, filesystem and format errors come in many types
        raise unavailable(src, label, exc) from exc


def load_config(src: Source, label: str) -> PretrainedConfig:
    """The model's config.json (local or hub)."""
    from transformers import AutoConfig

    return fetch(AutoConfig.from_pretrained, src, label)


def unavailable(src: Source, label: str, exc: BaseException) -> EncoderError:
    """The error for weights that cannot be had, naming every way to supply them."""
    from .base import EncoderError

    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    env = ", ".join(f"{v}={os.environ[v]!r}" for v in HUB_ENV_VARS if v in os.environ and v != "HF_TOKEN")
    twin = f"'{label}-random'" if "/" not in label else "a registry '<alias>-random'"
    if src.is_local:
        head = f"cannot load encoder {label!r} from directory {src.ref} ({reason})."
    else:
        head = f"cannot load weights of {src.ref!r} for encoder {label!r} ({reason})."
    return EncoderError(
        f"{head}\nSupply the weights one of these ways:\n"
        f"  1. a local directory with config.json, the weights (*.safetensors or *.bin) and "
        f"preprocessor_config.json: pass it as the model, e.g. --model /path/to/dir\n"
        f"  2. the Hugging Face cache: on a machine with internet access run "
        f"`hf download {src.ref if not src.is_local else '<model-id>'}` (older: huggingface-cli download), "
        f"copy the cache here, point HF_HOME (or HF_HUB_CACHE) at it and set HF_HUB_OFFLINE=1\n"
        f"  3. no download at all: {twin} builds the same architecture with random weights\n"
        f"Relevant environment variables: HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_HOME, HF_HUB_CACHE, "
        f"HF_ENDPOINT, HF_TOKEN (now: {env or 'none set'})."
    )


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
