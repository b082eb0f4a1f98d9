"""The real pipeline in a throwaway repo: tsops ingest, dvc add/repro, MLflow registry."""

from __future__ import annotations

import json
import shutil
import socket

import pandas as pd
import pytest

from tests.conftest import run
from tsops.core.errors import UNAVAILABLE_EXIT
from tsops.registry.client import connect
from tsops.registry.loading import load_pyfunc

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dvc_pipeline_mlflow_registry_round_trip(repo_copy):
    repo = repo_copy
    run(["tsops", "ingest", "--all"], repo)
    first_bytes = (repo / "data/tiny/series.parquet").read_bytes()
    run(["tsops", "ingest", "tiny"], repo)
    assert (repo / "data/tiny/series.parquet").read_bytes() == first_bytes, (
        "ingest not deterministic"
    )

    run(["dvc", "add", "-q", "data"], repo)
    run(["dvc", "push", "-q"], repo)
    assert any((repo / "dvc-storage").rglob("*")), "local DVC remote is empty after push"

    out = run(["dvc", "repro"], repo).stdout
    for stage in ("validate@tiny", "backtest@tiny", "train@tiny", "evaluate@tiny", "gate@tiny"):
        assert stage in out
    gate = json.loads((repo / "artifacts/tiny/gate.json").read_text())
    assert gate["passed"] and gate["champion"] is None
    assert set(gate["inputs"]) == {"metrics.json", "model/forecaster.joblib", "model/spec.json"}
    # only the gate runs again: the champion it compares with is outside DVC
    again = run(["dvc", "repro"], repo).stdout
    assert again.count("Running stage") == 1 and "Running stage 'gate@tiny'" in again, again

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    flat = json.dumps(metrics)
    assert "artifacts/tiny/metrics.json" in flat and "mase" in flat

    # a change to gate thresholds reruns the gate only; a change to levels the right ones
    config = repo / "models/tiny/model.yaml"
    config.write_text(
        config.read_text().replace("min_skill_vs_naive: -1.0", "min_skill_vs_naive: -0.9")
    )
    assert run(["dvc", "repro"], repo).stdout.count("Running stage") == 1
    config.write_text(config.read_text().replace("levels: [80, 95]", "levels: [80, 90]"))
    rerun = run(["dvc", "repro"], repo).stdout
    assert "Running stage 'backtest@tiny'" in rerun
    assert "Running stage 'validate@tiny'" not in rerun

    reg = run(["tsops", "register", "tiny"], repo)
    assert "alias challenger -> version 1" in reg.stdout
    again = run(["tsops", "register", "tiny"], repo)
    assert "already registered as version 1" in again.stdout

    # the same store the commands used, through an explicit client: nothing global
    client = connect(repo)
    model = load_pyfunc(client, "models:/tiny@challenger")
    forecast = model.predict(pd.DataFrame({"unique_id": ["N1402"]}), params={"h": 4})
    assert forecast["unique_id"].tolist() == ["N1402"] * 4
    assert {"mean", "lo-80", "hi-90", "cutoff"} <= set(forecast.columns)
    version = client.get_model_version_by_alias("tiny", "challenger")
    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert version.tags["tsops.git_commit"] == commit
    dvc_md5 = (repo / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert version.tags["tsops.data_dvc_md5"] == dvc_md5

    printed = run(["tsops", "predict", "tiny", "--alias", "challenger", "--h", "3"], repo).stdout
    assert "forecast from models:/tiny@challenger" in printed

    batch = run(
        [
            "tsops",
            "forecast",
            "--model",
            "models:/tiny@challenger",
            "--out",
            str(repo / "forecasts.parquet"),
        ],
        repo,
    )
    assert "6 series x 6 steps" in batch.stdout
    assert pd.read_parquet(repo / "forecasts.parquet")["model_version"].eq("1").all()
    run(["tsops", "export", "models:/tiny/1", "--out", str(repo / "exported")], repo)
    assert json.loads((repo / "exported/release.json").read_text())["version"] == "1"
    assert (repo / "exported/MLmodel").exists()

    run(["tsops", "alias", "tiny", "champion", "1"], repo)
    gate = run(["tsops", "gate", "tiny"], repo).stdout
    assert "regression_vs_champion" in gate and "vs champion v1" in gate
    assert "gate: passed" in gate
    # the champion is today's model: all of its backtests come from today's cv.parquet
    assert "backtests reused for ets, theta; refitted: none" in gate
    verdict = json.loads((repo / "artifacts/tiny/gate.json").read_text())
    assert verdict["champion"]["version"] == "1"
    assert verdict["champion"]["metrics"]["mase"] == pytest.approx(
        json.loads((repo / "artifacts/tiny/metrics.json").read_text())["selected"]["mase"]
    )
    bad = run(["tsops", "alias", "tiny", "champion", "7"], repo, check=False)
    assert bad.returncode != 0 and "no version 7" in bad.stderr


def test_tracking_server_down_registers_nothing(repo_copy, staged_tiny):
    repo = repo_copy
    # ingest .. evaluate done (by the stages' functions, once per run: staged_tiny)
    for outputs in ("data/tiny", "artifacts/tiny"):
        shutil.copytree(staged_tiny / outputs, repo / outputs, dirs_exist_ok=True)
    down = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}"}
    # the gate cannot look up the champion: it says so and writes no verdict
    gate = run(["tsops", "gate", "tiny"], repo, check=False, env=down)
    assert gate.returncode == UNAVAILABLE_EXIT and "not reachable" in gate.stderr, gate.stderr
    assert not (repo / "artifacts/tiny/gate.json").exists()
    run(["tsops", "gate", "tiny", "--no-champion"], repo, env=down)
    result = run(["tsops", "register", "tiny"], repo, check=False, env=down)
    assert result.returncode == UNAVAILABLE_EXIT
    assert "not reachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / "mlflow.db").exists()
