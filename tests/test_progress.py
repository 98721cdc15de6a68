"""featurestore.progress: plain periodic lines off a terminal (fake clock), the bar on one."""

from __future__ import annotations

import io

from featurestore.progress import Progress, format_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_with_rate_and_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(400, "urdu/clean whisper", "utt", stream=out, interval_s=15, clock=clock)
    assert out.getvalue() == "urdu/clean whisper: started, 400 utt to do\n"
    clock.now += 5
    progress.update(40)  # 5 s < 15 s: nothing yet
    assert out.getvalue().count("\n") == 1
    clock.now += 15
    progress.update(60, rtf="0.050")  # 100 utt in 20 s: 5 utt/s, 300 left -> 60 s
    lines = out.getvalue().splitlines()
    assert lines[-1] == ("urdu/clean whisper: 100/400 utt (25%), 5.0 utt/s, elapsed 20s, ETA 1m00s, rtf 0.050")
    clock.now += 1
    progress.update(10)  # 1 s after the last line: quiet
    assert len(out.getvalue().splitlines()) == 2
    clock.now += 59
    progress.update(290)
    progress.close()
    progress.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert lines[2].startswith("urdu/clean whisper: 400/400 utt (100%), 5.0 utt/s, elapsed 1m20s, ETA 0s")
    assert lines[3] == "urdu/clean whisper: finished 400/400 utt in 1m20s (5.0 utt/s), rtf 0.050"
    assert len(lines) == 4


def test_note_stopped_unknown_total_and_disabled() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(None, "probe", "fit", stream=out, interval_s=10, clock=clock) as progress:
        clock.now += 10
        progress.update(3)
        progress.note("layer 3 chosen")
    lines = out.getvalue().splitlines()
    assert lines == ["probe: started, ? fit to do", "probe: 3 fit, 0.3 fit/s, elapsed 10s",
                     "probe: layer 3 chosen", "probe: finished 3 fit in 10s (0.3 fit/s)"]
    out = io.StringIO()
    try:
        with Progress(5, "x", stream=out, clock=clock) as progress:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert out.getvalue().splitlines()[-1].startswith("x: stopped at 0/5 it")
    quiet = io.StringIO()
    progress = Progress(5, "x", stream=quiet, enabled=False, clock=clock)
    progress.update(5)
    progress.note("hidden")
    progress.close()
    assert quiet.getvalue() == "" and progress.done == 5


def test_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with Progress(4, "bar", "utt", stream=out) as progress:
        progress.update(4)
    assert "4/4" in out.getvalue() and "started" not in out.getvalue()


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0, 42, 75.4, 3725)] == ["0s", "42s", "1m15s", "1h02m05s"]
