"""The forecast log in PostgreSQL: read as the file log, idempotent, and nothing lost or
doubled when the database stops while a real server answers requests."""

from __future__ import annotations

import argparse
import threading
import time

import httpx
import orjson
import pandas as pd
import pytest

from tests.serving.serving_fixtures import Server
from tests.serving.test_forecast_log import RESULT  # one series' logged answer
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import DatabaseLog, forecast_log_dir, load_forecast_log
from tsops.platform.forecast_log_sql import (
    ForecastLogDatabase,
    ForecastLogDatabaseError,
    count_rows,
)
from tsops.platform.services import free_port, start_postgres
from tsops.serving.forecast_log import ForecastLog

pytestmark = pytest.mark.integration  # real PostgreSQL servers

META = {
    "request_id": "r1",
    "model_name": "champion",
    "registered_model": "m3",
    "model_version": "3",
    "protocol": "v1",
    "with_history": False,
    "served_at": 1_700_000_000.25,
}
#: what one logged request can differ in: other levels, a zone offset, more fields
SERVED = [
    (META, [RESULT, dict(RESULT, unique_id="N2", mean=[1.0, 2.0])]),
    (
        dict(META, request_id="r2", served_at=1_700_000_060.5, with_history=True),
        [
            {
                "unique_id": "N1",
                "cutoff": "2020-01-01T02:00:00+02:00",
                "ds": ["2020-02-01T00:00:00+00:00"],
                "mean": [12.5],
                "lo-95": [3.0],
                "hi-95": [20.0],
                "cutoff_source": "feature_store",
            }
        ],
    ),
]


def _served(log: ForecastLog) -> ForecastLog:
    for meta, results in SERVED:
        log.append(meta, results)
    log.close()
    return log


def test_the_database_log_reads_as_the_file_log_and_a_batch_sent_twice_adds_nothing(
    postgres_url, tmp_path
):
    files = _served(ForecastLog(tmp_path / "files", flush_seconds=60).start())
    database = _served(
        ForecastLog(
            tmp_path / "spill", flush_seconds=60, database=ForecastLogDatabase(postgres_url)
        ).start()
    )
    assert database.written == files.written == 5 and database.spilled == 0
    assert not list((tmp_path / "spill").rglob("part-*"))

    from_files = load_forecast_log(tmp_path / "files")
    from_database = load_forecast_log(DatabaseLog(postgres_url))
    # the same records and dtypes (a missing level or field is NaN in both)
    pd.testing.assert_frame_equal(
        from_database.sort_values(["request_id", "unique_id", "step"]).reset_index(drop=True),
        from_files.sort_values(["request_id", "unique_id", "step"]).reset_index(drop=True),
        check_like=True,
    )
    assert from_database.loc[from_database["request_id"] == "r2", "cutoff"].iloc[0] == (
        pd.Timestamp("2020-01-01T00:00:00")  # the offset taken off, as from files
    )

    # a batch sent again (a spilled part file sent after its commit did reach the
    # database) adds no row
    lines = [orjson.dumps(dict(m, **r)) for m, results in SERVED for r in results]
    assert ForecastLogDatabase(postgres_url).insert(lines) == 0
    assert count_rows(postgres_url) == (3, 5)


def test_a_writer_started_later_sends_what_an_earlier_one_spilled(postgres_url, tmp_path):
    # nobody listens on port 1: the first writer spills its batch to a part file
    down = ForecastLogDatabase("postgresql+psycopg://tsops@127.0.0.1:1/postgres")
    first = _served(ForecastLog(tmp_path, flush_seconds=60, database=down).start())
    assert first.spilled == first.written == 5
    (part,) = tmp_path.glob("date=*/part-*.jsonl")
    spilled = part.read_bytes()
    # a later writer (a restarted pod, another replica) sends it once the database takes
    # batches, and deletes it
    later = ForecastLog(tmp_path, flush_seconds=0.05, database=ForecastLogDatabase(postgres_url))
    later.start()
    for _ in range(100):
        if later.sent_from_files:
            break
        time.sleep(0.05)
    later.close()
    assert later.sent_from_files == 3 and not part.exists()
    assert count_rows(postgres_url) == (3, 5)
    # the same part file sent again (a crash between sending and deleting) adds nothing
    part.write_bytes(spilled)
    again = ForecastLog(tmp_path, flush_seconds=0.05, database=ForecastLogDatabase(postgres_url))
    again.start()
    for _ in range(100):
        if again.sent_from_files:
            break
        time.sleep(0.05)
    again.close()
    assert not part.exists() and count_rows(postgres_url) == (3, 5)


def test_lines_the_database_refuses_are_kept_aside_and_the_rest_written(postgres_url, tmp_path):
    log = ForecastLog(tmp_path, flush_seconds=60, database=ForecastLogDatabase(postgres_url))
    log.start().append(META, [RESULT, dict(RESULT, unique_id="N2", cutoff="not a time")])
    log.close()
    assert count_rows(postgres_url) == (1, 2) and log.rejected == 1
    (kept,) = (tmp_path / "rejected").glob("part-*.jsonl")
    assert orjson.loads(kept.read_bytes())["cutoff"] == "not a time"
    assert not list(tmp_path.glob("date=*/part-*"))  # nothing left to send again


def test_urls_and_flags_that_cannot_work_say_what_to_fix(tmp_path):
    from tsops.serving.server import ServerError, _forecast_log_database

    with pytest.raises(ForecastLogDatabaseError, match="kept in PostgreSQL"):
        ForecastLogDatabase("sqlite:///log.db")
    with pytest.raises(ForecastLogDatabaseError, match="not a database URL"):
        ForecastLogDatabase("localhost:5432")
    url = "postgresql+psycopg://me:secret@127.0.0.1:1/db"
    with pytest.raises(ServerError, match="--forecast_log_dir is ''") as raised:
        _forecast_log_database(
            argparse.Namespace(forecast_log_dir="", forecast_log_format="jsonl"), url
        )
    assert "secret" not in str(raised.value)  # the password stays out of messages
    with pytest.raises(ServerError, match="drop --forecast_log_format parquet"):
        _forecast_log_database(
            argparse.Namespace(forecast_log_dir="logs", forecast_log_format="parquet"), url
        )
    # monitoring reads the database when it is configured and no --log is given
    assert forecast_log_dir(tmp_path, None, tmp_path / "x", url) == DatabaseLog(url)
    assert forecast_log_dir(tmp_path, tmp_path / "x", None, url) == tmp_path / "x"
    with pytest.raises(MonitorError, match="cannot read the forecast log from") as raised:
        load_forecast_log(DatabaseLog(url))
    assert "secret" not in str(raised.value)


def _v1(url: str, request_id: str) -> float:
    """One request for two series at h=3; its latency in seconds."""
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/models/tiny:predict",
        json={
            "instances": [{"unique_id": "N1402"}, {"unique_id": "N1405"}],
            "parameters": {"h": 3},
        },
        headers={"x-request-id": request_id},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


@pytest.mark.integration
def test_database_stopped_mid_load_nothing_lost_nothing_doubled(tmp_path, tiny_model_dir):
    """Two server workers (two writers) log to one table; the database stops while they
    answer and starts again: every forecast served is in the table once."""
    port = free_port()
    url = f"postgresql+psycopg://tsops@127.0.0.1:{port}/postgres"
    log_dir = tmp_path / "logs"
    # the database starts while the server loads (both take seconds)
    started: dict = {}
    starting = threading.Thread(
        target=lambda: started.update(pg=start_postgres(tmp_path / "pg", port, durable=False))
    )
    starting.start()
    flags = ["--workers", "2", "--forecast_log_flush_seconds", "0.2"]
    server = Server(
        ["--model", f"tiny={tiny_model_dir}", *flags],
        log_dir=log_dir,
        env={"TSOPS_FORECAST_LOG_URL": url},
    )
    starting.join()
    postgres = started["pg"]
    sent, latencies = [], {"up": [], "down": []}
    try:
        server.wait_ready("tiny")

        def load(phase: str, seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                sent.append(f"r{len(sent)}")
                latencies[phase].append(_v1(server.url, sent[-1]))

        load("up", 0.3)
        postgres.stop()
        load("down", 0.6)  # several flushes: batches spill to part files
        spilled = list(log_dir.rglob("part-*.jsonl"))
        postgres.start()
        # with no new request to write, the writers still find the database back and
        # send their part files; then requests are logged straight away again
        deadline = time.monotonic() + 10
        while list(log_dir.rglob("part-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        load("up", 0.3)
        while count_rows(url)[0] < 2 * len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        # sent while the server still runs, and the part files deleted
        assert count_rows(url) == (2 * len(sent), 2 * 3 * len(sent))
        assert not list(log_dir.rglob("part-*"))
        assert set(load_forecast_log(DatabaseLog(url))["request_id"]) == set(sent)
    finally:
        assert server.stop() == 0
        postgres.remove()  # (after the check above; the server's last batch is in)
    output = server.output.read_text()
    assert spilled and "spilling batches to" in output and "takes batches again" in output
    # answering never waited for the database (not even for one connect timeout, 3 s)
    assert max(latencies["down"]) < 2.5, latencies["down"]
    print(
        f"\n{len(sent)} requests ({len(latencies['down'])} with the database down), "
        f"{len(spilled)} part files spilled; latency p50 up "
        f"{1000 * sorted(latencies['up'])[len(latencies['up']) // 2]:.1f} ms, down "
        f"{1000 * sorted(latencies['down'])[len(latencies['down']) // 2]:.1f} ms, "
        f"max down {1000 * max(latencies['down']):.1f} ms"
    )
