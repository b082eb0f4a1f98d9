"""The monitoring DAG on a real Airflow (`airflow dags test`, its own venv) against a
replayed forecast log in a real git repository: it ingests the actuals, emits the
new-actuals Asset, and its `tsops monitor run` task gives the verdicts the CLI gives and
fails with the command's exit code (3: the canary is worse, roll it back)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.monitor.test_verdicts import IMAGE, MODEL, NOW, git_repo, image
from tsops.core.errors import ROLLBACK_EXIT
from tsops.deploy import gitops as g
from tsops.deploy.strategies import ROLE_LIVE
from tsops.monitor.cli import monitor_app

pytestmark = pytest.mark.integration


def canary_repo(tmp_path: Path) -> Path:
    """production on a canary of v1.1.0 (registry version 2, seasonal naive, worse) over
    v1.0.0 (version 1, Theta); the forecast log and actuals beside the repository."""

    def canary(repo: Path) -> None:
        digest = image("1.1.0").split("@")[1]
        g.apply(g.release_edits(repo, MODEL, "1.1.0", "2", {}, image=IMAGE, digest=digest))
        g.apply(g.promote_edits(repo, MODEL, "staging", "production", canary=10))

    served = {"stable": ("theta", "1", ROLE_LIVE), "canary": ("seasonal_naive", "2", ROLE_LIVE)}
    return git_repo(tmp_path, canary, **served)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_dag_gives_the_clis_verdicts_and_fails_its_task_on_the_rollback_exit(
    tmp_path, airflow_dags_test
):
    repo = canary_repo(tmp_path)
    inputs, stage = repo.parent / "inputs", tmp_path / "stage"
    trained = digest(repo / "data" / MODEL / "series.parquet")

    run = airflow_dags_test(
        "tsops_monitoring",
        conf={"env": "production", "log": str(inputs / "log"), "now": NOW},
        env={"TSOPS_REPO": str(repo), "TSOPS_STAGING": str(stage)},
    )
    states = run.states()
    assert states[("models", -1)] == "success", run.output
    assert states[("per_model.ingest", 0)] == "success", run.output
    # the rollback verdict's exit code fails the task (and the run): Airflow alerts on it
    assert states[("per_model.monitor", 0)] == "failed", run.output
    assert run.returncode != 0 and "non-zero exit code 3" in run.output
    assert "canary: canary against stable: rollback" in run.output
    assert run.asset_events("tsops_new_actuals") == [("tsops_monitoring", "per_model.ingest")]

    (reports,) = stage.glob(f"monitoring/*/{MODEL}/reports")
    summary = json.loads((reports / "run.json").read_text())
    assert summary["exit_code"] == ROLLBACK_EXIT == summary["checks"]["verdicts"]
    assert summary["checks"]["accuracy"] == 0

    # the CLI on the same log, actuals and overlay
    args = [
        "verdicts", "--model", MODEL, "--env", "production", "--log", str(inputs / "log"),
        "--actuals", str(inputs / "actuals.parquet"), "--now", NOW, "--root", str(repo),
    ]  # fmt: skip
    cli = CliRunner().invoke(monitor_app, args)
    assert cli.exit_code == ROLLBACK_EXIT, cli.output
    assert json.loads((reports / "verdicts.json").read_text()) == json.loads(cli.stdout)

    # the actuals went to the staging folder: data/ is still what the model was trained on
    assert digest(repo / "data" / MODEL / "series.parquet") == trained
    assert (reports.parent / "actuals.parquet").exists()


def test_the_features_dag_is_skipped_where_no_feature_store_is_configured(
    tmp_path, airflow_dags_test
):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)  # no features/feature_store.yaml
    run = airflow_dags_test("tsops_features", env={"TSOPS_REPO": str(repo)})
    assert run.returncode == 0, run.output
    assert "no feature store: features/feature_store.yaml is missing" in run.output
    assert set(run.states().values()) == {"skipped"}, run.states()
    assert run.asset_events("tsops_features_materialized") == []
    assert not (repo / "data").exists()
