"""A real ``mlflow server`` on the run's PostgreSQL, one per test run.

- ``mlflow_server`` (session): an ``mlflow server`` (``tsops.platform.mlflow_server``)
  whose backend store is the database ``mlflow`` on the shared ``postgres_server``, its
  artifacts served from a folder beside it; started by the first xdist worker that asks
  (``built_once``), stopped by the controller in ``pytest_sessionfinish`` (below), before
  PostgreSQL. Starting it costs ~15 s of CPU (MLflow is imported by the CLI and again by
  its uvicorn worker), so every test shares it: give each test's registered models
  names of their own, and never stop it.
- ``mlflow_server_url`` (session): its tracking URI, ``http://127.0.0.1:PORT``.

tests/conftest.py registers this module as a plugin (``pytest_plugins``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.once import built_once, shared_dir
from tsops.platform.mlflow_server import (
    MlflowServer,
    MlflowServerError,
    mlflow_server_in,
    start_mlflow_server,
    stop_mlflow_server,
)
from tsops.platform.services import PostgresServer

#: the folder (under the run's shared temporary folder) of the shared server
_MLFLOW = "mlflow-server"
#: its database on the shared PostgreSQL
DATABASE = "mlflow"


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> MlflowServer:
    """The run's shared ``mlflow server`` on PostgreSQL (see the module docstring)."""

    def start(folder: Path) -> None:
        start_mlflow_server(folder / "server", postgres_server.create_database(DATABASE))

    return mlflow_server_in(built_once(tmp_path_factory, _MLFLOW, start) / "server")


@pytest.fixture(scope="session")
def mlflow_server_url(mlflow_server: MlflowServer) -> str:
    """The shared server's tracking URI (``MLFLOW_TRACKING_URI``)."""
    return mlflow_server.url


@pytest.hookimpl(tryfirst=True)  # before tests/helpers/services.py stops PostgreSQL
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (not an xdist worker) stops the shared server once every worker
    is done."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    folder = shared_dir(factory) / _MLFLOW / "server"
    if folder.exists():
        try:
            stop_mlflow_server(folder)
        except (MlflowServerError, OSError) as exc:  # report, but do not fail the run
            print(f"\nwarning: shared mlflow server in {folder} not stopped: {exc}")
