"""The forecast log: per-target records, built off the request path, nothing lost on close."""

from __future__ import annotations

import json
import threading

from tsops.serving.forecast_log import ForecastLog, read_forecast_log, records

META = {"request_id": "r1", "model_name": "m", "model_version": "3", "with_history": False}
RESULT = {
    "unique_id": "N1",
    "cutoff": "2019-12-01T00:00:00",
    "ds": ["2020-01-01T00:00:00", "2020-02-01T00:00:00"],
    "mean": [10.0, 11.0],
    "lo-80": [8.0, 8.5],
    "hi-80": [12.0, 13.5],
}


def test_records_are_one_per_series_and_target_time():
    out = records(META, [RESULT, dict(RESULT, unique_id="N2")])
    assert len(out) == 4
    assert out[1] == {
        **META,
        "unique_id": "N1",
        "cutoff": "2019-12-01T00:00:00",
        "ds": "2020-02-01T00:00:00",
        "step": 2,
        "mean": 11.0,
        "lo-80": 8.5,
        "hi-80": 13.5,
    }
    assert [r["unique_id"] for r in out] == ["N1", "N1", "N2", "N2"]


def test_close_writes_everything_appended_from_many_threads(tmp_path):
    # a long flush interval: only close() can have written these
    log = ForecastLog(tmp_path, flush_seconds=60).start()

    def serve(thread: int) -> None:
        for i in range(500):
            log.append(dict(META, request_id=f"{thread}-{i}"), [RESULT])

    threads = [threading.Thread(target=serve, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.written == 0
    log.close()
    logged = list(read_forecast_log(tmp_path))
    assert log.written == len(logged) == 4 * 500 * 2
    assert len({r["request_id"] for r in logged}) == 2000
    log.append(META, [RESULT])  # after close: ignored, not an error
    assert len(list(read_forecast_log(tmp_path))) == 4000


def test_the_writer_flushes_on_its_interval_and_parts_are_whole(tmp_path):
    log = ForecastLog(tmp_path, flush_seconds=0.05, max_batch=3).start()
    log.append(META, [RESULT])
    log.append(META, [RESULT, RESULT])
    deadline = threading.Event()
    for _ in range(100):
        if log.written:
            break
        deadline.wait(0.05)
    assert log.written == 6  # written while the log is open
    # a line per series forecast; a part is cut once it holds max_batch target times,
    # never inside one request
    parts = sorted(tmp_path.rglob("part-*.jsonl"))
    assert [len(p.read_text().splitlines()) for p in parts] in ([3], [1, 2])
    lines = [json.loads(line) for p in parts for line in p.open()]
    assert all(line["ds"] == RESULT["ds"] and line["hi-80"] == [12.0, 13.5] for line in lines)
    assert not list(tmp_path.rglob(".*.tmp"))
    log.close()


def test_replicas_on_one_volume_never_overwrite_each_other(tmp_path, monkeypatch):
    """Every server is pid 1 of its pod: the pod's host name keeps part files apart."""
    import socket

    logs = []
    for pod in ("m3-monthly-predictor-00001-a", "m3-monthly-predictor-00001-b"):
        monkeypatch.setattr(socket, "gethostname", lambda pod=pod: pod)
        logs.append(ForecastLog(tmp_path, flush_seconds=60).start())
    for i, log in enumerate(logs):
        log.append(dict(META, request_id=f"pod-{i}"), [RESULT])
    for log in logs:
        log.close()
    parts = sorted(p.name for p in tmp_path.rglob("part-*.jsonl"))
    assert len(parts) == 2 and parts[0].startswith("part-m3-monthly-predictor-00001-a-")
    assert {r["request_id"] for r in read_forecast_log(tmp_path)} == {"pod-0", "pod-1"}
