"""Progress of a long job on stderr: a tqdm bar on a terminal, a few plain lines in a log.

A tqdm bar redraws itself with carriage returns; written to a file or a CI log those redraws pile
up (and the last one is written twice, by the last update and by ``close``). So when stderr is
not a terminal, :func:`progress_bar` returns :class:`LogProgress`, which prints one line each
time another tenth of the total is done (or every ``every`` seconds when the total is unknown),
and a last line with the elapsed time. For a bar a library draws itself (LSDB's ``to_hats``),
:func:`tqdm_kwargs` gives the keywords that turn its redraws into plain lines off a terminal.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Protocol

__all__ = ["ProgressBar", "progress_bar", "LogProgress", "NoProgress", "LineStream", "tqdm_kwargs"]


class ProgressBar(Protocol):
    """What a job needs from a progress display (tqdm's own interface)."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix(self, refresh: bool = True, **values) -> object: ...

    def close(self) -> None: ...


class NoProgress:
    """Shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **values) -> None:
        pass

    def close(self) -> None:
        pass


class LogProgress:
    """Plain progress lines for logs: ``desc: done/total units (pct %), elapsed``.

    A line each time the done fraction passes another ``step`` of ``total`` (the last at 100 %),
    or, when ``total`` is None, at most one every ``every`` seconds; ``close`` prints the final
    count and time unless the last line already said it.
    """

    def __init__(self, total: int | None, desc: str, unit: str, *, file: IO[str] | None = None,
                 step: float = 0.1, every: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.step, self.every, self.clock = step, every, clock
        self.done = self.initial = initial
        self.start = self.last_time = clock()
        self.last_level = int(initial / total / step + 1e-9) if total else 0  # steps already reported
        self.last_done: int | None = None
        self.postfix = ""

    def set_postfix(self, refresh: bool = True, **values) -> None:
        """Shown at the end of the next line (e.g. the training loss)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.total:
            level = int(self.done / self.total / self.step + 1e-9)
            if level > self.last_level:
                self.last_level = level
                self._line(now)
        elif now - self.last_time >= self.every:
            self._line(now)

    def close(self) -> None:
        if self.last_done != self.done:
            self._line(self.clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        seconds = now - self.start
        if self.total:
            count = f"{self.done}/{self.total} {self.unit}s ({100.0 * self.done / self.total:.0f} %)"
        else:
            count = f"{self.done} {self.unit}s"
        when = f"in {seconds:.1f} s" if final or self.done == self.total else f"{seconds:.1f} s elapsed"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count}, {when}{extra}", file=self.file, flush=True)
        self.last_time, self.last_done = now, self.done


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int | None, *, desc: str, unit: str, enabled: bool = True,
                 initial: int = 0) -> ProgressBar:
    """A tqdm bar when stderr is a terminal, :class:`LogProgress` lines when it is not (a file,
    a pipe, a CI log), :class:`NoProgress` when not ``enabled``. ``initial``: units already done
    (a resumed job)."""
    if not enabled:
        return NoProgress()
    if not _is_terminal(sys.stderr):
        return LogProgress(total, desc, unit, initial=initial)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, initial=initial)


class LineStream:
    """A file for a tqdm bar whose redraws should become lines: each redraw that says something
    new before its `` [`` (the elapsed time) is written to ``file`` as one line; repeats (tqdm's
    ``close``) are dropped."""

    def __init__(self, file: IO[str] | None = None):
        self.file = file if file is not None else sys.stderr
        self.last = ""

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            part = part.strip()
            news = part.split(" [", 1)[0]
            if part and news != self.last:
                print(part, file=self.file, flush=True)
                self.last = news

    def flush(self) -> None:
        pass


def tqdm_kwargs(desc: str, unit: str) -> dict:
    """Keywords for a tqdm bar made by a library: a bar on a terminal; off a terminal, a line per
    update (``desc: done/total units``) through :class:`LineStream`."""
    if _is_terminal(sys.stderr):
        return {"desc": desc, "unit": unit, "dynamic_ncols": True}
    return {"desc": desc, "unit": unit, "file": LineStream(), "mininterval": 0, "ascii": True,
            "bar_format": "{desc}: {n_fmt}/{total_fmt} " + unit + "s [{elapsed}]"}
