"""Every served forecast, written where monitoring can read it later.

The request path only appends records to an in-memory queue; a background thread
writes them out in batches (JSON lines or Parquet part files), and ``close()``
drains the queue, so a clean shutdown loses nothing.
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
        self._queue: queue.SimpleQueue[list[dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()
        self._closed = False
        self.written = 0

    def start(self) -> ForecastLog:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="forecast-log", daemon=True)
        self._thread.start()
        return self

    def append(self, records: list[dict[str, Any]]) -> None:
        """Called on the request path: O(1), never blocks on I/O."""
        if not self._closed:
            self._queue.put(records)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_seconds
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = []
            if item is None:
                self._write(pending)
                return
            pending.extend(item)
            if len(pending) >= self.max_batch or time.monotonic() >= deadline:
                self._write(pending)
                pending = []
                deadline = time.monotonic() + self.flush_seconds

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        day = time.strftime("%Y-%m-%d", time.gmtime())
        folder = self.directory / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(self._sequence):06d}"
        final = folder / f"{stem}.{self.fmt}"
        tmp = folder / f".{stem}.tmp"
        # write-then-rename: readers never see a half-written part file
        if self.fmt == "jsonl":
            with open(tmp, "w") as fh:
                fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        else:
            import pandas as pd

            pd.DataFrame.from_records(records).to_parquet(tmp, index=False)
        os.replace(tmp, final)
        self.written += len(records)


def read_forecast_log(directory: Path) -> Iterable[dict[str, Any]]:
    """All records under ``directory`` (JSON lines and Parquet parts), oldest part first."""
    import pandas as pd

    for path in sorted(Path(directory).rglob("part-*")):
        if path.suffix == ".jsonl":
            with open(path) as fh:
                for line in fh:
                    yield json.loads(line)
        elif path.suffix == ".parquet":
            yield from pd.read_parquet(path).to_dict("records")
