"""Every served forecast, written where monitoring can read it later.

The request path only appends what it answered (the request's metadata and its
per-series results) to an in-memory queue. A background thread wakes once per
``flush_seconds`` and writes the batch out as one part file: JSON lines with one
line per series forecast (its target times, values and intervals as arrays), or
Parquet with one row per target time. ``read_forecast_log`` yields one record per
target time from either. ``close()`` drains the queue, so a clean shutdown loses
nothing.

Waking the writer on every append (a blocking ``queue.get``) cost a third of a
no-history request: the woken thread takes the GIL from the request thread.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "parquet")


class ForecastLog:
    """Buffered, background-flushed sink of forecast records (one dict per target time)."""

    def __init__(
        self,
        directory: Path,
        fmt: str = "jsonl",
        flush_seconds: float = 1.0,
        max_batch: int = 50_000,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"forecast log format {fmt!r} is not one of {FORMATS}")
        self.directory = Path(directory)
        self.fmt = fmt
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], list[dict[str, Any]]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()
        self._closed = False
        self.written = 0

    def start(self) -> ForecastLog:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="forecast-log", daemon=True)
        self._thread.start()
        return self

    def append(self, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
        """Called on the request path: O(1), never blocks, never wakes the writer.

        ``meta`` holds the request's fields (request id, model, version, ...); each of
        ``results`` one series' answer (``unique_id``, ``cutoff``, ``ds`` and a list
        per value column). Neither may be changed afterwards.
        """
        if not self._closed:
            self._queue.put((meta, results))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_seconds)
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        pending: list[dict[str, Any]] = []
        targets = 0
        while True:
            try:
                meta, results = self._queue.get_nowait()
            except queue.Empty:
                break
            for result in results:
                pending.append(dict(meta, **result))
                targets += len(result["ds"])
            if targets >= self.max_batch:
                self._write(pending, targets)
                pending, targets = [], 0
        self._write(pending, targets)

    def _write(self, series: list[dict[str, Any]], targets: int) -> None:
        """One part file of ``series`` forecasts (``targets`` target times in all)."""
        if not series:
            return
        day = time.strftime("%Y-%m-%d", time.gmtime())
        folder = self.directory / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(self._sequence):06d}"
        final = folder / f"{stem}.{self.fmt}"
        tmp = folder / f".{stem}.tmp"
        # write-then-rename: readers never see a half-written part file
        if self.fmt == "jsonl":
            import orjson

            # One line per series forecast, its target times as arrays: expanding to a
            # line per target time here made the writer hold the GIL long enough to
            # add ~100 ms to the p99 latency of requests; read_forecast_log expands.
            with open(tmp, "wb") as fh:
                fh.writelines(orjson.dumps(s, option=orjson.OPT_APPEND_NEWLINE) for s in series)
        else:
            import pandas as pd

            rows = [r for s in series for r in _expand(s)]
            pd.DataFrame.from_records(rows).to_parquet(tmp, index=False)
        os.replace(tmp, final)
        self.written += targets


def _expand(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A logged series forecast as one record per target time (with its ``step``)."""
    arrays = {k: v for k, v in series.items() if isinstance(v, list) and k != "ds"}
    scalars = {k: v for k, v in series.items() if k not in arrays and k != "ds"}
    return [
        dict(scalars, ds=ds, step=step + 1, **{k: float(v[step]) for k, v in arrays.items()})
        for step, ds in enumerate(series["ds"])
    ]


def records(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (series, target time): ``meta`` plus the series' values at it."""
    return [r for result in results for r in _expand(dict(meta, **result))]


def read_forecast_log(directory: Path) -> Iterable[dict[str, Any]]:
    """All records under ``directory`` (JSON lines and Parquet parts), oldest part first."""
    import pandas as pd

    for path in sorted(Path(directory).rglob("part-*")):
        if path.suffix == ".jsonl":
            with open(path) as fh:
                for line in fh:
                    logged = json.loads(line)
                    if isinstance(logged.get("ds"), list):
                        yield from _expand(logged)
                    else:
                        yield logged
        elif path.suffix == ".parquet":
            yield from pd.read_parquet(path).to_dict("records")
