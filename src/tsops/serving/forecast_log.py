"""Every served forecast, written where monitoring can read it later.

The request path only appends what it answered (the request's metadata and its
per-series results) to an in-memory queue. A background thread encodes it in small
slices and writes one part file per ``flush_seconds``: JSON lines with one
line per series forecast (its target times, values and intervals as arrays), or
Parquet with one row per target time. ``read_forecast_log`` yields one record per
target time from either. ``close()`` drains the queue, so a clean shutdown loses
nothing.

With a ``database`` (``tsops.platform.forecast_log_sql.ForecastLogDatabase``: one table
for every replica) the writer sends each batch there instead, as the same JSON lines.
When the database cannot take a batch, the batch is written as a part file, as without
a database (the directory is then the *spill folder*), the database is tried again
after a growing pause (``retry_max_seconds`` at most), and once it takes batches again
the part files are sent too (oldest first, for at most half of each flush interval)
and deleted. A batch sent twice adds no rows (the table's key), so a crash between
sending a part file and deleting it loses and duplicates nothing. The request path is
the same either way: nothing on it waits for the database.

Waking the writer on every append (a blocking ``queue.get``) cost a third of a
no-history request: the woken thread takes the GIL from the request thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter

from tsops.core.schema import TIME_COL

if TYPE_CHECKING:
    from tsops.platform.forecast_log_sql import ForecastLogDatabase

#: how often the writer takes what the request path queued (see ``_run``)
DRAIN_SECONDS = 0.1
FORMATS = ("jsonl", "parquet")
#: how often a writer with a database looks for part files to send (other writers' too:
#: a worker or pod that stopped before sending its own)
SPILL_CHECK_SECONDS = 60.0
#: the share of each flush interval that sending part files may take (new batches first)
SPILL_SEND_SHARE = 0.5
#: where the lines a database refused go (outside the part files that are sent again)
REJECTED_DIR = "rejected"
#: every record's ``role``: ``live`` (a user's request) or ``shadow`` (a copy a champion
#: forwarded, ``tsops.serving.shadow``); records logged before roles existed have none
#: and are read as live (``tsops.monitor.inputs``)
ROLE_COL = "role"
ROLE_LIVE = "live"
ROLE_SHADOW = "shadow"

logger = logging.getLogger(__name__)

# labelled: an unlabelled metric has a value from its creation, before a server with
# several workers sets up the metrics they share (workers.multiprocess_metrics)
WRITTEN = Counter(
    "tsops_forecast_log_targets_total",
    "Target times the forecast log wrote, by destination: database; spilled (to part "
    "files while the database could not take them; sent later); file (no database); "
    "rejected (refused by the database, kept in the rejected/ folder)",
    ["destination"],
)


class ForecastLog:
    """Buffered, background-flushed sink of forecast records (one dict per target time)."""

    def __init__(
        self,
        directory: Path,
        fmt: str = "jsonl",
        flush_seconds: float = 1.0,
        max_batch: int = 50_000,
        database: ForecastLogDatabase | None = None,
        retry_max_seconds: float = 30.0,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"forecast log format {fmt!r} is not one of {FORMATS}")
        if database is not None and fmt != "jsonl":
            raise ValueError(
                f"a forecast log with a database spills JSON lines, not {fmt!r}: "
                "leave the format at jsonl"
            )
        self.directory = Path(directory)
        self.fmt = fmt
        self.database = database
        self.retry_max_seconds = retry_max_seconds
        self._writer = ""  # named by start(), in the process that writes
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], list[dict[str, Any]]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()
        self._closed = False
        #: target times written: to the database or a part file (spilled ones included)
        self.written = 0
        #: target times written to part files because the database could not take them
        self.spilled = 0
        #: series forecasts (lines) sent from part files to the database, and refused
        self.sent_from_files = 0
        self.rejected = 0
        # the database's state, as the writer thread last saw it
        self._failures = 0
        self._retry_at = 0.0
        self._check_spill_at = 0.0  # at start: part files left by an earlier run

    def start(self) -> ForecastLog:
        """Start the writer thread, in the process that serves: a server with several
        workers creates the log before forking and each worker starts its own copy."""
        # Replicas share one ReadWriteMany volume and each server is pid 1 of its pod:
        # the host name (the pod's name) keeps their part files apart, the pid those of
        # one pod's workers (a name taken before the fork would be every worker's, and
        # their part files would overwrite each other).
        host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname()) or "host"
        self._writer = f"{host}-{os.getpid()}"
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
        # The queue is taken in slices every DRAIN_SECONDS and each slice encoded at
        # once, so the writer holds the GIL for a fraction of a millisecond at a time;
        # encoding a whole second of forecasts in one go (~10 ms at 3,000 requests/s)
        # doubled the p99 latency of requests. A part file is still written once per
        # flush_seconds (or max_batch target times).
        pending: list[Any] = []
        targets = 0
        if self.database is not None:
            self._first_contact()
        deadline = time.monotonic() + self.flush_seconds
        while True:
            stopping = self._stop.wait(min(DRAIN_SECONDS, self.flush_seconds))
            while True:
                try:
                    meta, results = self._queue.get_nowait()
                except queue.Empty:
                    break
                for result in results:
                    pending.append(self._encode(dict(meta, **result)))
                    targets += len(result[TIME_COL])
                if targets >= self.max_batch and self._safe_write(pending, targets):
                    pending, targets = [], 0
            if stopping or time.monotonic() >= deadline:
                if self._safe_write(pending, targets):
                    pending, targets = [], 0
                if self.database is not None and not stopping:
                    try:
                        self._send_spilled(self.flush_seconds * SPILL_SEND_SHARE)
                    except Exception:  # e.g. an unreadable part file: say it, keep writing
                        logger.exception("forecast log: sending part files failed")
                        self._check_spill_at = time.monotonic() + SPILL_CHECK_SECONDS
                deadline = time.monotonic() + self.flush_seconds
            if stopping:
                if pending:
                    logger.error(
                        "forecast log: %d target times could not be written to %s at "
                        "shutdown (see the errors above) and are lost",
                        targets,
                        self.directory,
                    )
                return

    def _encode(self, series: dict[str, Any]) -> Any:
        """A JSON line (bytes), or the dict itself for a Parquet part."""
        if self.fmt == "jsonl":
            # One line per series forecast, its target times as arrays: a line per
            # target time cost six times the writer's time; read_forecast_log expands.
            return orjson.dumps(series, option=orjson.OPT_APPEND_NEWLINE)
        return series

    def _safe_write(self, encoded: list[Any], targets: int) -> bool:
        """:meth:`_write`, and False on any error: the writer thread must live on (the
        batch stays with it and is tried again)."""
        try:
            return self._write(encoded, targets)
        except Exception:
            logger.exception("forecast log: writing a batch to %s failed", self.directory)
            return False

    def _write(self, encoded: list[Any], targets: int) -> bool:
        """Write a batch of series forecasts (``targets`` target times in all): to the
        database when there is one and it takes them, else as a part file. False when
        neither worked (the caller keeps the batch and tries again)."""
        if not encoded:
            return True
        if self.database is not None and self._database_due():
            from tsops.platform.forecast_log_sql import BatchRejected, DatabaseUnavailable

            try:
                self.database.insert(encoded)
            except DatabaseUnavailable as exc:
                self._database_failed(exc)
            except BatchRejected as exc:
                self._database_ok()
                self._reject(encoded, exc)
                self.written += targets
                return True
            except Exception as exc:  # a bug must not stop the writer: spill, say it
                logger.exception("forecast log: sending a batch to the database failed")
                self._database_failed(exc)
            else:
                self._database_ok()
                self.written += targets
                WRITTEN.labels("database").inc(targets)
                return True
        try:
            self._write_part(encoded)
        except OSError as exc:
            # the thread must live on: the batch stays queued and is tried again
            logger.error("forecast log: cannot write a part file in %s (%s)", self.directory, exc)
            return False
        self.written += targets
        if self.database is not None:
            self.spilled += targets
            self._check_spill_at = 0.0
        WRITTEN.labels("file" if self.database is None else "spilled").inc(targets)
        return True

    def _write_part(self, encoded: list[Any], folder: Path | None = None) -> Path:
        """One part file of series forecasts, in ``folder`` (default: today's)."""
        if folder is None:
            day = time.strftime("%Y-%m-%d", time.gmtime())
            folder = self.directory / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"part-{self._writer}-{int(time.time() * 1000)}-{next(self._sequence):06d}"
        final = folder / f"{stem}.{self.fmt}"
        tmp = folder / f".{stem}.tmp"
        # write-then-rename: readers never see a half-written part file
        if self.fmt == "jsonl":
            with open(tmp, "wb") as fh:
                fh.writelines(encoded)
        else:
            import pandas as pd

            rows = [r for s in encoded for r in _expand(s)]
            pd.DataFrame.from_records(rows).to_parquet(tmp, index=False)
        os.replace(tmp, final)
        return final

    # -- the database's state (writer thread only) ---------------------------------------

    def _first_contact(self) -> None:
        """Connect (and make the table) before the first batch, so that a database that
        cannot be used is reported when the server starts, not at its first request."""
        from tsops.platform.forecast_log_sql import DatabaseUnavailable

        try:
            self.database.check()
        except DatabaseUnavailable as exc:
            self._database_failed(exc)
        except Exception as exc:
            logger.exception("forecast log: the database check failed")
            self._database_failed(exc)
        else:
            logger.info(
                "forecast log: writing to the database %s (spill folder %s)",
                self.database.where,
                self.directory,
            )

    def _database_due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _database_ok(self) -> None:
        if self._failures:
            logger.warning(
                "forecast log: the database %s takes batches again; sending the part "
                "files spilled in %s",
                self.database.where,
                self.directory,
            )
            self._check_spill_at = 0.0
        self._failures = 0
        self._retry_at = 0.0

    def _database_failed(self, exc: Exception) -> None:
        # tried again after 0.5, 1, 2, ... seconds, at most retry_max_seconds apart:
        # meanwhile batches go straight to part files (no wait for a connect timeout)
        pause = min(self.retry_max_seconds, 0.5 * 2**self._failures)
        if not self._failures:
            logger.warning(
                "forecast log: %s; spilling batches to %s until it is back (tried again "
                "every %g s at most), then sending them",
                exc,
                self.directory,
                self.retry_max_seconds,
            )
        self._failures += 1
        self._retry_at = time.monotonic() + pause

    def _reject(self, encoded: list[Any], exc: Exception) -> None:
        """A batch the database refused: its lines are sent one by one, and those it
        refuses alone are kept in ``rejected/`` (never sent again) with an error."""
        from tsops.platform.forecast_log_sql import BatchRejected, DatabaseUnavailable

        refused = []
        for index, line in enumerate(encoded):
            try:
                self.database.insert([line])
            except BatchRejected:
                refused.append(line)
            except DatabaseUnavailable as down:
                # gone meanwhile: the lines not tried yet are spilled as usual
                self._database_failed(down)
                self._write_part(encoded[index:])
                break
        if refused:
            path = self._write_part(refused, self.directory / REJECTED_DIR)
            self.rejected += len(refused)
            WRITTEN.labels("rejected").inc(sum(len(orjson.loads(r)[TIME_COL]) for r in refused))
            logger.error(
                "forecast log: %s; its %d refused series forecast(s) are kept in %s: "
                "fix them (or the table) and insert them by hand",
                exc,
                len(refused),
                path,
            )

    def _send_spilled(self, budget_seconds: float) -> None:
        """Send part files to the database, oldest first, for ``budget_seconds`` at
        most; each is deleted once the database has it."""
        from tsops.platform.forecast_log_sql import BatchRejected, DatabaseUnavailable

        now = time.monotonic()
        if now < self._check_spill_at or not self._database_due():
            return
        stop_at = now + budget_seconds
        sent = 0
        today = time.strftime("date=%Y-%m-%d", time.gmtime())
        for path in sorted(self.directory.glob("date=*/part-*.jsonl"), key=_part_order):
            try:
                lines = path.read_bytes().splitlines(keepends=True)
            except FileNotFoundError:  # another worker sent it
                continue
            try:
                self.database.insert(lines)
            except DatabaseUnavailable as exc:
                self._database_failed(exc)
                return
            except BatchRejected as exc:
                self._database_ok()
                self._reject(lines, exc)
            else:
                self._database_ok()
            path.unlink(missing_ok=True)
            if path.parent.name != today:  # an earlier day's folder, once empty
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            self.sent_from_files += len(lines)
            sent += 1
            if self._failures:  # gone while sending a refused file's lines one by one
                return
            if time.monotonic() >= stop_at:
                self._check_spill_at = 0.0  # more next flush
                break
        else:
            self._check_spill_at = time.monotonic() + SPILL_CHECK_SECONDS
        if sent:
            logger.info(
                "forecast log: sent %d spilled part file(s) from %s to the database",
                sent,
                self.directory,
            )


def _part_order(path: Path) -> tuple[str, int]:
    """Part files by the time they were written (their names' milliseconds)."""
    parts = path.stem.rsplit("-", 2)
    try:
        return path.parent.name, int(parts[-2])
    except (IndexError, ValueError):
        return path.parent.name, 0


def _expand(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A logged series forecast as one record per target time (with its ``step``)."""
    arrays = {k: v for k, v in series.items() if isinstance(v, list) and k != TIME_COL}
    scalars = {k: v for k, v in series.items() if k not in arrays and k != TIME_COL}
    return [
        dict(scalars, ds=ds, step=step + 1, **{k: float(v[step]) for k, v in arrays.items()})
        for step, ds in enumerate(series[TIME_COL])
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
                    if isinstance(logged.get(TIME_COL), list):
                        yield from _expand(logged)
                    else:
                        yield logged
        elif path.suffix == ".parquet":
            yield from pd.read_parquet(path).to_dict("records")
