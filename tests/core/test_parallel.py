"""The parallel layer: chunks, order, progress, and a clear error for an unreachable
Dask scheduler (the real cluster runs in tests/pipeline/test_dask.py)."""

from __future__ import annotations

import os
import socket
import time

import pytest
from typer.testing import CliRunner

from tsops.core import parallel, progress
from tsops.core.errors import UNAVAILABLE_EXIT
from tsops.core.parallel import ClusterError, chunked, parallel_map, use_cluster


def squares(chunk):
    return [x * x for x in chunk]


def pids(chunk):
    return [(x, os.getpid()) for x in chunk]


def test_cheap_work_stays_in_this_process_and_costly_work_goes_to_workers(monkeypatch):
    items = list(range(40))
    # a few microseconds of work: starting processes would cost more than it saves
    assert {pid for _, pid in parallel_map(pids, items, n_jobs=2)} == {os.getpid()}
    # as if the first chunk had been slow: the rest goes to worker processes, in order
    monkeypatch.setattr(parallel, "INLINE_BELOW_SECONDS", 0.0)
    tracker = progress.Tracker(total=len(items))
    with progress.track(tracker):
        out = parallel_map(pids, items, n_jobs=2)
    assert [x for x, _ in out] == items
    assert {pid for _, pid in out[:8]} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in out[8:]}
    assert tracker.done == len(items)


def test_chunks_are_contiguous_near_equal_and_cover_everything():
    parts = chunked(list(range(10)), 4)
    assert [list(p) for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert chunked([1, 2], 5) == [[1], [2]]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_results_in_order_and_every_item_reported(n_jobs):
    items = list(range(100))
    tracker = progress.Tracker(total=100)
    with progress.track(tracker):
        assert parallel_map(squares, items, n_jobs=n_jobs) == [x * x for x in items]
    assert tracker.done == 100


def test_a_function_must_return_one_result_per_item():
    with pytest.raises(ValueError, match="one result per item"):
        parallel_map(lambda chunk: chunk[:-1], list(range(20)), n_jobs=1)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _assert_helpful(message: str, address: str) -> None:
    assert address in message
    assert "dask scheduler" in message
    assert "unset TSOPS_DASK_SCHEDULER" in message


def test_unreachable_scheduler_fails_fast_and_says_how_to_fix():
    address = _closed_port()
    started = time.monotonic()
    with pytest.raises(ClusterError) as error, use_cluster(address, timeout=1):
        pass
    assert time.monotonic() - started < 10
    _assert_helpful(str(error.value), address)


def test_the_library_reads_no_environment(monkeypatch):
    # only commands read TSOPS_DASK_SCHEDULER / TSOPS_N_JOBS (through core.settings)
    monkeypatch.setenv(parallel.DASK_ENV, _closed_port())
    monkeypatch.setenv("TSOPS_N_JOBS", "not a number")
    assert parallel_map(squares, list(range(50)), n_jobs=1) == [x * x for x in range(50)]


def test_no_cluster_address_means_local_processes():
    with use_cluster(None) as client:
        assert client is None


def test_unreachable_scheduler_from_the_environment_fails_the_command(tmp_path, monkeypatch):
    from tsops.cli import app

    address = _closed_port()
    monkeypatch.setenv(parallel.DASK_ENV, address)
    monkeypatch.setenv("TSOPS_DASK_TIMEOUT", "1")
    result = CliRunner().invoke(app, ["backtest", "m", "--root", str(tmp_path)])
    assert result.exit_code == UNAVAILABLE_EXIT
    _assert_helpful(result.stderr, address)


def test_a_bad_number_of_jobs_in_the_environment_names_the_variable(tmp_path, monkeypatch):
    from tsops.cli import app

    monkeypatch.setenv("TSOPS_N_JOBS", "many")
    result = CliRunner().invoke(app, ["backtest", "m", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: TSOPS_N_JOBS='many'")


@pytest.mark.parametrize("command", ["backtest", "train", "gate"])
def test_cli_cluster_option_unreachable(command, tmp_path, monkeypatch):
    from tsops.cli import app

    address = _closed_port()
    monkeypatch.setenv("TSOPS_DASK_TIMEOUT", "1")
    result = CliRunner().invoke(app, [command, "m", "--cluster", address, "--root", str(tmp_path)])
    # a service that did not answer: running again later may succeed
    assert result.exit_code == UNAVAILABLE_EXIT
    assert result.stderr.startswith("error: cannot reach the Dask scheduler")
    _assert_helpful(result.stderr, address)
    assert not (tmp_path / "artifacts").exists()
