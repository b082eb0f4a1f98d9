"""The registry on a real ``mlflow server`` with a PostgreSQL backend store, over HTTP.

``tsops register``, aliases, versions, the gate's champion and the model server's
``--model models:/...`` run against the run's shared server (``mlflow_server_url``,
tests/helpers/mlflow_server.py) exactly as the other tests of this folder run them
against the embedded SQLite store: the same commands, the same outputs. What only the
server adds is checked too: the rows are in PostgreSQL, the files in the server's
artifacts destination, nothing is written beside the client. The registered model is
the test model the serving tests serve (``tiny_model_dir``'s repository), evaluated and
gated here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.registry.conftest import NAME
from tests.serving.serving_fixtures import Server
from tsops.cli import app
from tsops.core.io import read_json
from tsops.platform.mlflow_server import (
    BackendStoreUnavailable,
    MlflowServerError,
    backend_store_uri,
    mlflow_server_in,
    start_mlflow_server,
)
from tsops.platform.services import free_port
from tsops.registry.client import connect

pytestmark = pytest.mark.integration


def _tsops(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def registered(mlflow_server_url, tiny_model_dir, tmp_path_factory) -> Path:
    """The test model's stage outputs (evaluate and gate run here), registered on the
    server with ``tsops register`` (alias challenger) and made champion with ``tsops
    alias``; returns the project folder, in which MLFLOW_TRACKING_URI names the server."""
    from tsops.pipeline import evaluate, gate

    root = tmp_path_factory.mktemp("on-server") / "repo"
    shutil.copytree(tiny_model_dir.parent / "repo", root)
    evaluate.run(root, NAME)
    gate.run(root, NAME, against_champion=False)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
        out = _tsops("register", NAME, "--root", str(root))
        assert f"{NAME}: registered version 1 (run " in out
        assert f"{NAME}: alias challenger -> version 1" in out
        again = _tsops("register", NAME, "--root", str(root))
        assert f"{NAME}: already registered as version 1" in again
        assert _tsops("alias", NAME, "champion", "1", "--root", str(root)) == (
            f"{NAME}: alias champion -> version 1\n"
        )
    return root


@pytest.fixture
def on_server(registered, mlflow_server_url, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
    return registered


def test_versions_and_aliases_are_rows_in_postgresql_and_files_on_the_server(
    on_server, mlflow_server, postgres_server
):
    import psycopg

    row = _tsops("versions", NAME, "--root", str(on_server)).splitlines()[1].split()
    assert row[:2] == ["1", "challenger,champion"] and row[3] == "passed"
    with psycopg.connect(postgres_server.database_url("mlflow").replace("+psycopg", "")) as db:
        aliases = db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias",
            (NAME,),
        ).fetchall()
        (source,) = db.execute(
            "SELECT source FROM model_versions WHERE name = %s", (NAME,)
        ).fetchone()
    assert aliases == [("challenger", 1), ("champion", 1)]
    # the client uploaded through the server (--serve-artifacts): no path of the client's
    assert source.startswith("mlflow-artifacts:/")
    stored = mlflow_server.folder / "mlartifacts"
    assert {p.name for p in stored.rglob("*")} >= {"MLmodel", "gate.json", "metrics.json"}
    assert not (on_server / "mlflow.db").exists() and not (on_server / "mlartifacts").exists()

    # what the registry refuses, it refuses as the SQLite store does
    missing = CliRunner().invoke(app, ["alias", NAME, "champion", "9", "--root", str(on_server)])
    assert missing.exit_code == 1
    assert f"has no version 9 of '{NAME}' (versions: [1])" in missing.stderr


def test_the_gate_scores_the_champion_it_finds_on_the_server(on_server, mlflow_server_url):
    from tsops.pipeline import gate

    result = gate.run(on_server, NAME, tracking_uri=mlflow_server_url)
    verdict = read_json(on_server / "artifacts" / NAME / "gate.json")
    assert result.passed and verdict["champion"]["version"] == "1"
    # the champion is today's model: its candidates' backtests are reused, none refitted
    assert (verdict["champion"]["reused"], verdict["champion"]["refitted"]) == (["theta"], [])
    selected = read_json(on_server / "artifacts" / NAME / "metrics.json")["selected"]["mase"]
    assert verdict["champion"]["metrics"]["mase"] == pytest.approx(selected)
    regression = next(c for c in verdict["checks"] if c["name"] == "regression_vs_champion")
    assert regression["passed"] and "vs champion v1" in regression["detail"]


def test_the_model_server_loads_the_champion_from_the_server(
    on_server, mlflow_server_url, tmp_path
):
    import joblib

    server = Server(
        ["--model", f"models:/{NAME}@champion"],
        tmp_path / "log",
        env={"MLFLOW_TRACKING_URI": mlflow_server_url},
    )
    try:
        server.wait_ready(NAME)
        answer = httpx.post(
            f"{server.url}/v1/models/{NAME}:predict",
            json={"instances": [{"unique_id": "N1402"}], "parameters": {"h": 3}},
            timeout=30,
        ).json()
    finally:
        server.stop()
    assert (answer["registered_model"], answer["model_version"]) == (NAME, "1")
    # the forecast of the files the pipeline wrote, downloaded through the server
    local = joblib.load(on_server / "artifacts" / NAME / "model" / "forecaster.joblib")
    expected = local.predict(3)
    expected = expected[expected["unique_id"] == "N1402"]["mean"].tolist()
    assert answer["predictions"][0]["mean"] == pytest.approx(expected)


# ----------------------------------------------------------- starting it: what goes wrong


def test_a_backend_store_that_refuses_is_said_before_any_server_starts(tmp_path):
    url = f"postgresql://tsops:secret@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(BackendStoreUnavailable) as raised:
        start_mlflow_server(tmp_path / "mlflow", url, connect_attempts=1)
    message = str(raised.value)
    assert "does not accept a connection" in message and "tsops platform up" in message
    assert "secret" not in message and "***" in message
    assert not (tmp_path / "mlflow" / "mlflow.pid").exists()
    with pytest.raises(MlflowServerError, match="not a backend store URL"):
        start_mlflow_server(tmp_path / "mlflow", "not a url")
    with pytest.raises(MlflowServerError, match="start one with `tsops platform up --mlflow`"):
        mlflow_server_in(tmp_path / "mlflow")


def test_a_taken_port_is_refused_and_drivers_are_psycopg_3(mlflow_server, tmp_path):
    taken = mlflow_server.port
    with pytest.raises(MlflowServerError, match=f"port {taken} on 127.0.0.1 is already in use"):
        start_mlflow_server(tmp_path / "mlflow", "sqlite:///" + str(tmp_path / "m.db"), port=taken)
    assert backend_store_uri("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert backend_store_uri("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert backend_store_uri("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
    # the shared server is found again from its folder (what `tsops platform down` does)
    assert mlflow_server_in(mlflow_server.folder) == mlflow_server
    assert connect(tmp_path, mlflow_server.url).tracking_uri == mlflow_server.url
