"""A real MLflow store on SQLite per test, and a model's stage outputs written in a folder.

Creating a SQLite store runs MLflow's database migrations (seconds); each test gets a
copy of one store migrated once per test run instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import joblib
import mlflow
import pytest

from tests.conftest import TINY_MODEL
from tests.helpers.once import built_once
from tests.helpers.synthetic import make_series
from tsops.core.io import write_json
from tsops.core.paths import ModelPaths
from tsops.core.verdict import gate_inputs
from tsops.forecasters import make_forecaster
from tsops.registry.client import DB_FILE, connect

NAME = "tiny"


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory) -> Path:
    # connect creates and migrates mlflow.db: once per run, whatever the xdist workers
    return built_once(tmp_path_factory, "mlflow-template", connect) / DB_FILE


@pytest.fixture
def store(tmp_path, _migrated_store, monkeypatch) -> Path:
    """A folder with an empty embedded store (``mlflow.db``); MLFLOW_TRACKING_URI unset."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copyfile(_migrated_store, tmp_path / DB_FILE)
    return tmp_path


def write_stage_outputs(root: Path, *, passed: bool = True, seed: int = 0) -> Path:
    """What validate .. gate write for the model ``tiny`` (a seasonal naive fitted on
    three synthetic series); returns ``artifacts/tiny``."""
    (root / "models" / NAME).mkdir(parents=True, exist_ok=True)
    (root / "models" / NAME / "model.yaml").write_text(TINY_MODEL)
    df = make_series(n_series=3, length=48, seed=seed)
    (root / "data" / NAME).mkdir(parents=True, exist_ok=True)
    df.to_parquet(root / "data" / NAME / "series.parquet")
    artifacts = root / "artifacts" / NAME
    (artifacts / "model").mkdir(parents=True, exist_ok=True)
    forecaster = make_forecaster("seasonal_naive", {}, freq="MS", season_length=12).fit(df)
    joblib.dump(forecaster, artifacts / "model" / "forecaster.joblib")
    spec = {
        "config": {"name": NAME, "freq": "MS", "horizon": 6, "gate": {"max_mase": None}},
        "selection": {"rule": "best_overall", "members": ["seasonal_naive"], "choice": {}},
        "freq": "MS",
        "horizon": 6,
        "max_horizon": 12,
        "levels": [80.0, 95.0],
        "n_series": 3,
        "cutoff": str(df["ds"].max().date()),
    }
    write_json(spec, artifacts / "model" / "spec.json")
    scores = {"mase": 0.9 + seed / 100, "coverage-80": 0.8}
    write_json({"selected": scores, "baseline": {"mase": 1.0}}, artifacts / "metrics.json")
    for folder, file in (("plots", "forecast.csv"), ("tables", "overall.csv")):
        (artifacts / folder).mkdir(exist_ok=True)
        (artifacts / folder / file).write_text("a,b\n1,2\n")
    check = {
        "name": "skill_vs_seasonal_naive",
        "value": 0.1 if passed else -0.1,
        "threshold": 0.0,
        "passed": passed,
        "detail": "MASE 0.9 vs seasonal naive 1.0",
    }
    gate = {"passed": passed, "checks": [check], "champion": None}
    write_json({**gate, "inputs": gate_inputs(ModelPaths(root, NAME))}, artifacts / "gate.json")
    return artifacts


def process_state() -> dict:
    """MLflow's process-wide URIs and active run, and the environment (less the session
    id MLflow's own telemetry keeps there)."""
    return {
        "tracking_uri": mlflow.get_tracking_uri(),
        "registry_uri": mlflow.get_registry_uri(),
        "active_run": mlflow.active_run(),
        "environ": {k: v for k, v in os.environ.items() if not k.startswith("_MLFLOW_TELEMETRY")},
    }
