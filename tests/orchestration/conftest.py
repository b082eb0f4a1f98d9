"""The Airflow tests' shared parts: Airflow's own venv (``make airflow``), one
``airflow db migrate`` per test run (a template home built once, its SQLite database
copied for each test, as tests/helpers/services.py does with PostgreSQL), and
``airflow_dags_test``: ``airflow dags test`` of a DAG in this repository's DAG folder,
its tasks running this repository's ``tsops`` (the warm one, tests/helpers/warm.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import warm
from tests.helpers.commands import BIN, GIT_IDENTITY, IN_SERIES, ROOT
from tests.helpers.once import built_once

AIRFLOW_VENV = ROOT / ".venv-airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
DAGS = ROOT / "orchestration" / "airflow" / "dags"


def airflow_environ(home: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of an Airflow command: this process's, without any AIRFLOW_*,
    TSOPS_* or MLFLOW_* setting of the caller's, with ``home`` as AIRFLOW_HOME and
    this repository's DAG folder; ``env`` added last."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TSOPS_", "MLFLOW_"))
    }
    return environ | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # `airflow dags test` waits out retry delays: a failing task fails at once
        "TSOPS_TASK_RETRIES": "0",
        **(env or {}),
    }


def _migrate(folder: Path) -> None:
    done = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=airflow_environ(folder),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The migrated Airflow home of this test run (built by the first worker)."""
    if not AIRFLOW.exists():
        pytest.fail(f"{AIRFLOW} is missing: run `make airflow` (make test does)")
    return built_once(tmp_path_factory, "airflow-home", _migrate)


@pytest.fixture
def airflow_home(tmp_path: Path, airflow_template: Path) -> Path:
    """A fresh Airflow home for one test: a copy of the migrated database."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(airflow_template / "airflow.db", home / "airflow.db")
    return home


@pytest.fixture
def tsops_bin(tmp_path: Path) -> Path:
    """A folder with ``tsops`` (warm when the warm server runs), ``dvc`` and ``python``
    of the main .venv: the tasks' TSOPS_BIN is its ``tsops``."""
    folder = tmp_path / "tsops-bin"
    folder.mkdir()
    shims = warm.shim_dir(start=True)
    tsops = shims / "tsops" if shims is not None else BIN / "tsops"
    (folder / "tsops").symlink_to(tsops)
    for name in ("dvc", "python"):
        (folder / name).symlink_to(BIN / name)
    return folder / "tsops"


@dataclass
class Run:
    """One ``airflow dags test``: its exit code, output and the home's database."""

    returncode: int
    output: str
    db: Path
    run_id: str

    def states(self) -> dict[tuple[str, int], str]:
        """(task_id, map_index) -> state of this run's task instances."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "select task_id, map_index, state from task_instance where run_id = ?",
                (self.run_id,),
            )
            return {(t, m): s for t, m, s in rows}

    def asset_events(self, name: str) -> list[tuple[str, str]]:
        """(source DAG, source task) of every event of the Asset ``name``."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "select e.source_dag_id, e.source_task_id from asset_event e "
                "join asset a on a.id = e.asset_id where a.name = ?",
                (name,),
            )
            return list(rows)


@pytest.fixture
def airflow_dags_test(airflow_home: Path, tsops_bin: Path):
    """``dags_test(dag_id, conf, env, date=...)`` runs ``airflow dags test`` in this
    test's Airflow home (runs of one test share it: give each its own ``date``)."""

    def dags_test(
        dag_id: str, conf: dict | None = None, env: dict | None = None, date: str = "2026-01-02"
    ) -> Run:
        environ = airflow_environ(
            airflow_home,
            {"TSOPS_BIN": str(tsops_bin), **IN_SERIES, **GIT_IDENTITY, **(env or {})},
        )
        done = subprocess.run(
            [str(AIRFLOW), "dags", "test", dag_id, date, "-c", json.dumps(conf or {})],
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )
        db = airflow_home / "airflow.db"
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "select run_id from dag_run where dag_id = ? order by id desc limit 1", (dag_id,)
            ).fetchone()
        return Run(done.returncode, done.stdout + done.stderr, db, row[0] if row else "")

    return dags_test
