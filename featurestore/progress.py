"""Progress of a long run: a bar on a terminal, periodic plain lines in logs (batch jobs, ``nohup``, CI).

One small reporter for every long loop (extraction, training, probes)::

    with Progress(total=len(rows), desc="urdu/clean whisper", unit="utt") as progress:
        for batch in batches:
            ...
            progress.update(len(batch))
        progress.note("committed 400 rows")

On a terminal it draws a tqdm bar; otherwise it writes one line when it starts, then at most one
every ``interval_s`` seconds (done/total, %, rate, elapsed, ETA), and a last line on ``close``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def format_seconds(seconds: float) -> str:
    """``75.4`` -> ``1m15s``; ``3725`` -> ``1h02m05s``; under a minute: ``42s``."""
    s = max(0, int(round(seconds)))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Report ``update(n)`` calls towards ``total`` on ``stream`` (default stderr).

    ``bar``: draw a tqdm bar (default: when ``stream`` is a terminal), else plain lines every
    ``interval_s`` seconds. ``enabled=False`` reports nothing. ``clock`` gives seconds (tests pass
    a fake one). ``total`` may be None when unknown (no percentage or ETA then).
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", *, stream: TextIO | None = None,
                 interval_s: float = 15.0, bar: bool | None = None, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = float(interval_s)
        self.enabled = enabled
        self.clock = clock
        self.done = 0
        self.postfix: dict[str, Any] = {}
        self.started = clock()
        self._last_line = self.started
        self._closed = False
        self._bar: Any = None
        if enabled and (bar if bar is not None else _isatty(self.stream)):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
        elif enabled:
            self._write(f"{self._prefix()}started, {self.total if self.total is not None else '?'} {unit} to do")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(stopped=exc_type is not None)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        """Units per second since the start (0 before any time has passed)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the mean rate so far; None when unknown."""
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count ``n`` more units done; ``postfix`` (e.g. ``rtf="0.012"``) is shown beside the count."""
        self.done += n
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(self.postfix)
            return
        if self.clock() - self._last_line >= self.interval_s:
            self._write(self.status_line())

    def note(self, text: str) -> None:
        """A message of its own line (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"{self._prefix()}{text}", file=self.stream)
        else:
            self._write(f"{self._prefix()}{text}")

    def close(self, *, stopped: bool = False) -> None:
        """The last line (finished, or ``stopped`` early: count, time, rate), or close the bar. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        of = f"/{self.total}" if self.total is not None else ""
        how = "stopped at" if stopped else "finished"
        self._write(f"{self._prefix()}{how} {self.done}{of} {self.unit} in {format_seconds(self.elapsed)} "
                    f"({self.rate:.1f} {self.unit}/s){self._postfix()}")

    def status_line(self) -> str:
        """``desc: 120/400 utt (30%), 2.0 utt/s, elapsed 1m00s, ETA 2m20s``."""
        if self.total:
            count = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            count = f"{self.done} {self.unit}"
        eta = self.eta_seconds
        eta_text = f", ETA {format_seconds(eta)}" if eta is not None else ""
        return (f"{self._prefix()}{count}, {self.rate:.1f} {self.unit}/s, elapsed {format_seconds(self.elapsed)}"
                f"{eta_text}{self._postfix()}")

    def _prefix(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _postfix(self) -> str:
        return "".join(f", {k} {v}" for k, v in self.postfix.items())

    def _write(self, line: str) -> None:
        self._last_line = self.clock()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed log must not stop the run
            pass


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
