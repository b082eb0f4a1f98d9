"""Shared fixtures: throwaway copies of the repository, the small test model trained
once per test run, and the order the test files are handed to pytest-xdist's workers.

The helpers live in tests/helpers/ (commands.py: running tsops and dvc; tiny.py: the
small test model; once.py: building a fixture once for all workers); the names below
are imported from here by older tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.commands import BIN, GIT_IDENTITY, ROOT, run, run_stages, tsops
from tests.helpers.once import built_once, copy_built
from tests.helpers.tiny import TINY_MODEL, build_model_dir, copy_repo

__all__ = ["BIN", "GIT_IDENTITY", "ROOT", "TINY_MODEL", "copy_repo", "run"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist hands whole files to its workers (--dist=loadfile) and by default
    # starts with the files holding the most tests; a run then ends waiting on a
    # one-test file of minutes started last. Keep the collection order instead, which
    # pytest_collection_modifyitems below makes slowest-first.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a test marked ``slow`` (minutes) first, so that the two workers start
    on them and the short files fill in the gaps at the end (sorting is stable: the
    rest keep their order)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


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


def _train_tiny(folder: Path) -> None:
    repo = copy_repo(folder / "repo")
    tsops("ingest", "tiny", cwd=repo)
    run(["dvc", "add", "-q", "data"], repo)
    run_stages(repo, "tiny")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "tiny: data and pipeline"], repo, env=GIT_IDENTITY)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo_copy whose tiny model is ingested (data.dvc) and through every pipeline
    stage (dvc.lock, artifacts/tiny/), all committed; nothing registered. Built once
    per test run: read it, or take ``trained_repo`` to change it."""
    return built_once(tmp_path_factory, "trained-tiny", _train_tiny) / "repo"


@pytest.fixture
def trained_repo(trained_tiny: Path, tmp_path: Path) -> Path:
    """A copy of ``trained_tiny`` of this test's own."""
    return copy_built(trained_tiny, tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served test model as an MLflow model folder (``build_model_dir``), built once
    per test run; servers and batch jobs read it, nothing may write to it."""
    return built_once(tmp_path_factory, "tiny-model", build_model_dir) / "mlmodel"
