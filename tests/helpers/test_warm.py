"""The tests' warm ``tsops`` (warm.py) is the installed command, only started sooner:
the same output and exit code, in the directory and environment it was given, and
ended by the signal its caller sends."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import warm
from tests.helpers.commands import BIN, run

pytestmark = pytest.mark.integration
COLD = {warm.COLD_ENV: "1"}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["models"], 0),
        (["validate", "nope"], 1),  # an explained failure
        (["nonsense"], 2),  # a usage error
        (["validate", "tiny", "--data", "missing.parquet"], 1),
    ],
)
def test_warm_and_cold_say_the_same(repo_copy: Path, args: list[str], code: int):
    hot = run(["tsops", *args], repo_copy, check=False)
    cold = run(["tsops", *args], repo_copy, check=False, env=COLD)
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert hot.returncode == code


def test_the_environment_and_directory_are_the_callers(repo_copy: Path):
    listed = run(["bash", "-c", "cd models/tiny && tsops models --root ../.."], repo_copy)
    assert listed.stdout.startswith("tiny "), listed.stdout
    down = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # the discard port: nothing answers
    result = run(["tsops", "versions", "tiny"], repo_copy, check=False, env=down)
    assert result.returncode != 0 and "http://127.0.0.1:9" in result.stderr, result.stderr


def test_a_signal_ends_the_command_as_it_would_a_fresh_one(repo_copy: Path):
    shims = warm.shim_dir()
    if shims is None:
        pytest.skip("tsops runs cold here")
    fifo = repo_copy / "blocked.csv"
    os.mkfifo(fifo)  # opening it for reading waits for a writer: the command blocks
    env = {**os.environ, "PATH": os.pathsep.join([str(shims), str(BIN), os.environ["PATH"]])}
    proc = subprocess.Popen(
        ["tsops", "ingest", "tiny", "--file", str(fifo)],
        cwd=repo_copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
