"""Options shared by several commands, declared once: the same flag, choices, default and help everywhere.

* ``--device`` (extract, finetune): cpu, cuda, cuda:N or mps; default cuda when torch sees one, else
  cpu (:func:`resolve_device`, checked against what torch sees).
Study settings (``--layer``, ``--classifier``, ``--norm``, ...) come from the one settings table,
:func:`classifiers.studies.settings.options`.

* ``--whisper-input`` (extract, probe, finetune): full (padded to 30 s, as Whisper was trained) or trim
  (only the real frames). Default full for a new extraction; commands that read the store use the mode
  that is stored when only one is, else ask for the flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_WHISPER_INPUT = "full"
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _DEVICE.match(value):
        raise click.BadParameter(f"{value!r}: use cpu, cuda, cuda:N or mps")
    return value


def device_option(what: str) -> Callable[[F], F]:
    """``--device`` (default None: :func:`resolve_device` picks cuda when available, else cpu)."""
    return click.option("--device", default=None, callback=_check_device,
                        help=f"{what}: cpu, cuda, cuda:N or mps [default: cuda if available, else cpu].")


def resolve_device(device: str | None) -> str:
    """``device`` checked against what torch sees; None -> cuda when available, else cpu."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise click.UsageError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise click.UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible "
                                   f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise click.UsageError("--device mps: not available here; use --device cpu")
    return device


def whisper_input_option() -> Callable[[F], F]:
    """``--whisper-input full|trim`` from the settings table (default None: full when extracting, the stored
    mode when reading)."""
    from classifiers.studies import settings

    return settings.click_option("whisper_input")
