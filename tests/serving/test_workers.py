"""``tsops serve --workers 2`` over real HTTP on 127.0.0.1: both workers serve, each
behind the guard; /metrics counts every worker's requests; every forecast is logged
once, by the worker that served it; a worker that dies is replaced; SIGTERM ends all.
And how many workers the default gives (the cgroup's CPU quota)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.serving_fixtures import Server
from tsops.serving.forecast_log import read_forecast_log
from tsops.serving.workers import available_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "0::/\n") -> dict:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(own)
    return {"cgroup_root": tmp_path, "proc_cgroup": tmp_path / "self-cgroup"}


@pytest.mark.parametrize(
    ("files", "own", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1),  # 1.5 CPUs: rounded down
        ({"cpu.max": "max 100000\n"}, "0::/\n", AFFINITY),  # no limit
        ({"pod/cpu.max": "100000 100000\n"}, "0::/pod\n", 1),  # the process's own cgroup
        (
            {"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "4:cpu,cpuacct:/\n",
            1,  # cgroup v1, half a CPU: still one worker
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "", AFFINITY),
        ({}, "", AFFINITY),  # no cgroup files at all
    ],
)
def test_default_workers_follow_the_cgroup_cpu_quota(tmp_path, files, own, expected):
    assert available_cpus(**_cgroup(tmp_path, files, own)) == min(expected, AFFINITY)


def test_a_quota_above_the_cpus_is_capped_by_the_affinity(tmp_path):
    quota = f"{(AFFINITY + 3) * 100000} 100000\n"
    assert available_cpus(**_cgroup(tmp_path, {"cpu.max": quota})) == AFFINITY


def _workers(server: Server) -> set[int]:
    """The server's live worker pids, as its log announces them (the server may be a
    child of the tests' warm server, not of this process)."""
    import re

    started = set(map(int, re.findall(r"worker \d+ started: pid (\d+)", _text(server))))
    return {pid for pid in started if _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _text(server: Server) -> str:
    return server.output.read_text()


# no keep-alive: every request on a new connection, which the kernel gives to either worker
FRESH = httpx.Limits(max_keepalive_connections=0)


def _ask(client: httpx.Client, request_id: str, **extra) -> httpx.Response:
    body = {"instances": [{"unique_id": "N1402", **extra}], "parameters": {"h": 2}}
    return client.post("/v1/models/tiny:predict", json=body, headers={"x-request-id": request_id})


@pytest.mark.integration
def test_two_workers_serve_guard_count_log_and_stop_cleanly(tmp_path, tiny_model_dir):
    log_dir = tmp_path / "forecast-logs"
    server = Server(["--model", f"tiny={tiny_model_dir}", "--workers", "2"], log_dir=log_dir)
    try:
        server.wait_ready("tiny")
        first = _workers(server)
        assert len(first) == 2
        # a worker that dies is replaced
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _workers(server) & {victim} or len(_workers(server)) < 2:
            assert time.monotonic() < deadline, _text(server)[-3000:]
            time.sleep(0.1)
        workers = _workers(server)
        server.wait_ready("tiny")

        ids = [f"req-{i}" for i in range(30)]
        with httpx.Client(base_url=server.url, limits=FRESH, timeout=30) as client:
            for request_id in ids:
                answer = _ask(client, request_id)
                assert answer.status_code == 200, answer.text
            for _ in range(6):  # the guard is in front of every worker
                too_large = client.post("/v1/models/tiny:predict", content=b"x" * 300_000)
                assert too_large.status_code == 413
                assert client.get("/v2/models/tiny/versions/3").status_code == 404
            huge = _ask(client, "huge", history={"ds": ["2020-01-01"], "y": [1e308]})
            assert huge.status_code == 400
            assert "history of 'N1402': y[0] is 1e+308, beyond" in huge.json()["error"]
            metrics = client.get("/metrics").text
        # both workers' counts, whichever answers
        assert 'tsops_forecasts_total{history="false",model="tiny",version="unknown"} 30.0' in (
            metrics
        )
        assert 'tsops_rejected_requests_total{model="tiny"} 1.0' in metrics
    finally:
        code = server.stop()
    assert code == 0, _text(server)[-3000:]
    assert not any(_alive(pid) for pid in workers)
    logged = [r["request_id"] for r in read_forecast_log(log_dir / "tiny") if r["step"] == 1]
    assert sorted(logged) == sorted(ids)  # none lost, none twice
    # each worker wrote its own part files (host-pid-time-sequence)
    writers = {int(p.name.split("-")[-3]) for p in log_dir.rglob("part-*")}
    assert writers == workers
