"""Shared fixtures: throwaway copies of the repository, the small test model trained
once per test run, and the order the test files are handed to pytest-xdist's workers.

The helpers live in tests/helpers/ (commands.py: running tsops and dvc, warm.py: the
tsops processes forked warm, tiny.py: the small test model, once.py: building a fixture
once for all workers); the names below are also imported from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.commands import BIN, GIT_IDENTITY, ROOT, run
from tests.helpers.once import built_once
from tests.helpers.tiny import TINY_MODEL, build_model_dir, copy_repo

__all__ = ["BIN", "GIT_IDENTITY", "ROOT", "TINY_MODEL", "copy_repo", "run"]

#: real PostgreSQL and Redis: postgres_server, postgres_url, redis_server, redis_url,
#: private_postgres, private_redis; mlflow_server, mlflow_server_url (an mlflow server on
#: that PostgreSQL); and stopping the shared servers at the end of the run
#: and kubectl kustomize run once per distinct input in the run (tests/helpers/render_cache.py)
pytest_plugins = [
    "tests.helpers.services",
    "tests.helpers.mlflow_server",
    "tests.helpers.render_cache",
]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist hands whole files to its workers (--dist=loadfile) and by default
    # starts with the files holding the most tests; a run then ends waiting on a
    # one-test file of minutes started last. Keep the collection order instead, which
    # pytest_collection_modifyitems below makes longest-first.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a test marked ``slow`` (a minute or more) first, then those marked
    ``integration`` (real processes and services: seconds to tens of seconds), then the
    unit tests, so that each worker starts on a long file and the short ones fill in
    the gaps at the end (the sort is stable: files keep their order within a class)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    integration = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: (item.path not in slow, item.path not in integration))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The tracked files of this repository in a new git repo, with one tiny model."""
    return copy_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served test model as an MLflow model folder (``build_model_dir``), built once
    per test run; servers and batch jobs read it, nothing may write to it."""
    return built_once(tmp_path_factory, "tiny-model", build_model_dir) / "mlmodel"
