"""Progress of long runs: series done, rate and time left, and where the time went.

A ``Tracker`` counts work items (series fits) against a total known up front, e.g.
windows x candidates x series for a whole backtest, so the ETA covers the whole run.
Whoever runs the work opens it with ``track``; ``tsops.core.parallel`` calls ``advance``
as chunks finish, without knowing who listens. A sink (set by the CLI with
``reporting``) shows it: a rich progress bar on a terminal, a plain line every few
seconds otherwise (CI logs). Without a tracker or a sink nothing happens. The
interval and the terminal type are arguments: the commands read
``TSOPS_PROGRESS_INTERVAL`` and ``TERM`` through ``tsops.core.settings``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TextIO

#: seconds between plain progress lines when stderr is not a terminal
DEFAULT_INTERVAL = 10.0


@dataclass
class StepStats:
    """Items done and seconds spent in the steps of one name (e.g. a candidate)."""

    items: int = 0
    seconds: float = 0.0
    runs: int = 0

    @property
    def rate(self) -> float | None:
        return self.items / self.seconds if self.seconds > 0 else None


class Tracker:
    """Counts items done out of ``total``; rate and ETA from the average since start.

    Work is done in named steps of a known size (``step``): a step counts at most its
    size, however often the layers below report (an ensemble fits its series once per
    member), and at least its size once it ends (a global model reports nothing).
    """

    def __init__(
        self,
        total: int | None = None,
        description: str = "",
        unit: str = "series",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.done = 0
        self.steps: dict[str, StepStats] = {}
        self._clock = clock
        self.started = clock()
        self.finished: float | None = None
        self._step_room: int | None = None  # items the current step may still count
        self._listeners: list[Callable[[Tracker], None]] = []

    # -- counting ------------------------------------------------------------------

    def advance(self, n: int) -> None:
        if self._step_room is not None:
            n = min(n, self._step_room)
            self._step_room -= n
        if self.total is not None:
            n = min(n, self.total - self.done)
        if n <= 0:
            return
        self.done += n
        for listener in self._listeners:
            listener(self)

    @contextlib.contextmanager
    def step(self, name: str, size: int) -> Iterator[None]:
        """A named piece of work of ``size`` items; its time and items go to ``steps``."""
        outer_room, self._step_room = self._step_room, size
        started = self._clock()
        try:
            yield
            missing = self._step_room
            self._step_room = None
            if missing:
                self.advance(missing)
        finally:
            self._step_room = outer_room
        stats = self.steps.setdefault(name, StepStats())
        stats.items += size
        stats.seconds += self._clock() - started
        stats.runs += 1

    def subscribe(self, listener: Callable[[Tracker], None]) -> None:
        self._listeners.append(listener)

    def finish(self) -> None:
        if self.finished is None:
            self.finished = self._clock()

    # -- arithmetic ----------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else self._clock()
        return max(end - self.started, 0.0)

    @property
    def rate(self) -> float | None:
        """Items per second since the start; ``None`` before the first item."""
        elapsed = self.elapsed
        return self.done / elapsed if self.done and elapsed > 0 else None

    @property
    def remaining(self) -> int | None:
        return None if self.total is None else self.total - self.done

    @property
    def eta(self) -> float | None:
        """Seconds left at the average rate so far; ``None`` while unknown."""
        rate, remaining = self.rate, self.remaining
        if remaining is None or rate is None:
            return None
        return remaining / rate

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def line(self) -> str:
        """One plain line: ``backtest: 120/600 series (20%), 35.0 series/s, ETA 0:14``."""
        head = f"{self.description}: " if self.description else ""
        if self.total is not None:
            count = f"{self.done:,}/{self.total:,} {self.unit} ({self.fraction or 0:.0%})"
        else:
            count = f"{self.done:,} {self.unit}"
        rate = self.rate
        speed = f"{rate:,.1f} {self.unit}/s" if rate is not None else f"- {self.unit}/s"
        if self.finished is not None:
            return f"{head}{count} in {duration(self.elapsed)}, {speed}"
        eta = self.eta
        return f"{head}{count}, {speed}, ETA {duration(eta) if eta is not None else '?'}"


def duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# -- who is listening ---------------------------------------------------------------


class Sink(Protocol):
    """Shows trackers: ``start`` when one opens, ``update`` as it advances, ``finish``."""

    def start(self, tracker: Tracker) -> None: ...

    def update(self, tracker: Tracker) -> None: ...

    def finish(self, tracker: Tracker) -> None: ...

    def message(self, text: str) -> None: ...


class LogSink:
    """Plain lines on a stream, at most one per ``interval`` seconds (and a last one)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interval = DEFAULT_INTERVAL if interval is None else interval
        self._clock = clock
        self._last: float | None = None

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def start(self, tracker: Tracker) -> None:
        self._last = self._clock()

    def update(self, tracker: Tracker) -> None:
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            self._write(tracker.line())

    def finish(self, tracker: Tracker) -> None:
        self._write(tracker.line())

    def message(self, text: str) -> None:
        self._write(text)


class RichSink:
    """A progress bar on a terminal (stderr), with rate and ETA of the whole run."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr)
        self._bars: dict[int, tuple[object, object]] = {}

    def start(self, tracker: Tracker) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        )
        task = bar.add_task(tracker.description, total=tracker.total, unit=tracker.unit, info="")
        bar.start()
        self._bars[id(tracker)] = (bar, task)

    def update(self, tracker: Tracker) -> None:
        bar, task = self._bars[id(tracker)]
        rate, eta = tracker.rate, tracker.eta
        info = f"{rate:,.1f}/s" if rate is not None else ""
        if eta is not None:
            info += f"  ETA {duration(eta)}"
        bar.update(task, completed=tracker.done, info=info)

    def finish(self, tracker: Tracker) -> None:
        bar, _ = self._bars.pop(id(tracker))
        bar.stop()
        self.console.print(tracker.line(), highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)


def sink_for(
    stream: TextIO | None = None, interval: float | None = None, term: str | None = None
) -> Sink:
    """A progress bar when ``stream`` (stderr) is a terminal, unless ``term`` (the
    ``TERM`` variable) is ``dumb``; plain lines every ``interval`` seconds otherwise."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty() and term != "dumb":
        return RichSink(stream)
    return LogSink(stream, interval=interval)


_sink: ContextVar[Sink | None] = ContextVar("tsops_progress_sink", default=None)
_tracker: ContextVar[Tracker | None] = ContextVar("tsops_progress_tracker", default=None)


@contextlib.contextmanager
def reporting(sink: Sink) -> Iterator[Sink]:
    """Show every tracker opened in the block on ``sink``."""
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


@contextlib.contextmanager
def track(tracker: Tracker) -> Iterator[Tracker]:
    """Make ``tracker`` the one ``advance`` counts on, shown on the current sink."""
    sink = _sink.get()
    if sink is not None:
        tracker.subscribe(sink.update)
        sink.start(tracker)
    token = _tracker.set(tracker)
    try:
        yield tracker
    finally:
        _tracker.reset(token)
        tracker.finish()
        if sink is not None:
            sink.finish(tracker)


def advance(n: int) -> None:
    """Count ``n`` items done on the active tracker, if any (``tsops.core.parallel`` calls it)."""
    tracker = _tracker.get()
    if tracker is not None:
        tracker.advance(n)


def message(text: str) -> None:
    """A line for the user next to the progress (through the sink, so a bar stays intact)."""
    sink = _sink.get()
    if sink is not None:
        sink.message(text)
