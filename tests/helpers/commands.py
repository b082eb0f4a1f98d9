"""Running ``tsops`` and ``dvc`` from tests: as a real process, or ``tsops`` in this one.

A ``tsops`` process pays for its imports (MLflow alone is ~4 s of CPU) before doing
anything; a test that runs twenty of them spends minutes starting Python. So:

- ``run`` starts the real process: for what a test is about (the command a user types,
  its exit code, a workflow's shell step, ``dvc repro`` calling the stages); a
  ``tsops`` process is forked from a warm one that has already imported (warm.py);
- ``tsops`` runs the same command line in this process (typer's ``CliRunner`` on the
  root app), for the steps a test only needs done (building a fixture): the parsing,
  the error policy and the exit codes are the real ones.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import warm

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}

#: Six series need no worker processes: starting joblib's (each importing tsops) costs
#: more than the fits. Parallel fitting has tests of its own (tests/core/test_parallel.py).
IN_SERIES = {"TSOPS_N_JOBS": "1"}


#: programs that may start tsops: the first of them a test runs starts the warm server
MAY_RUN_TSOPS = {"tsops", "dvc", "bash", "sh", "make"}


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a command of the venv (tsops, dvc) with its output captured for assertions.
    ``tsops``, also when a script or DVC runs it, is the warm one (tests/helpers/warm.py)."""
    path = [str(BIN), os.environ["PATH"]]
    shims = warm.shim_dir(start=Path(cmd[0]).name in MAY_RUN_TSOPS)
    if shims is not None:
        path.insert(0, str(shims))
    full_env = {**os.environ, "PATH": os.pathsep.join(path), **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Ran:
    """What a ``tsops`` command did in this process (the fields of a finished process)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def tsops(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> Ran:
    """``tsops ARGS`` in this process, in ``cwd``, with ``env`` added to the environment
    for the command's duration (a ``None`` value unsets a variable)."""
    from typer.testing import CliRunner

    from tsops.cli import app

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(app, list(args), env={**IN_SERIES, **(env or {})})
    ran = Ran(list(args), result.exit_code, result.stdout, result.stderr)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if crashed or (check and ran.returncode != 0):
        trace = "".join(traceback.format_exception(result.exception)) if crashed else ""
        raise AssertionError(
            f"tsops {shlex.join(args)} (in this process) exited {ran.returncode}\n"
            f"{ran.stdout}\n{ran.stderr}\n{trace}"
        )
    return ran
