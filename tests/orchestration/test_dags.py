"""Every DAG file in orchestration/airflow/dags imports in Airflow's DagBag without an
error and without work at import time (no file opened outside Airflow's own install and
the DAG folder, with TSOPS_REPO and TSOPS_BIN pointing nowhere), with retries, a
timeout, one active run and no catch-up; every task is a ``tsops`` (or ``dvc``) command
whose ``--help`` succeeds."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.helpers.commands import BIN, run, tsops
from tests.orchestration.conftest import AIRFLOW_VENV, DAGS, airflow_environ

pytestmark = pytest.mark.integration

#: run in Airflow's venv: the DagBag, with an audit hook noting every file opened
#: while the DAG files are parsed
PARSE = r"""
import json, os, sys, time
opened = []
prefixes = (sys.prefix, sys.base_prefix, os.environ["AIRFLOW_HOME"], os.environ["DAGS"])
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and not args[0].startswith(prefixes):
        opened.append(args[0])
from airflow.dag_processing.dagbag import DagBag
sys.path.insert(0, os.environ["DAGS"])
sys.addaudithook(hook)
start = time.perf_counter()
bag = DagBag(dag_folder=os.environ["DAGS"])
seconds = time.perf_counter() - start
dags = {
    dag_id: {
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "tasks": {
            t.task_id: {
                "doc": t.doc,
                "retries": t.retries,
                "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
            }
            for t in dag.tasks
        },
    }
    for dag_id, dag in bag.dags.items()
}
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "opened": opened, "seconds": seconds, "dags": dags}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory, airflow_template):
    home = tmp_path_factory.mktemp("airflow-parse")
    env = airflow_environ(
        home,
        {
            "DAGS": str(DAGS),
            "TSOPS_REPO": "/nonexistent/repo",
            "TSOPS_BIN": "/nonexistent/tsops",
            "TSOPS_TASK_RETRIES": "2",
        },
    )
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{airflow_template / 'airflow.db'}"
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", PARSE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors_or_work(parsed):
    files = sorted(p.name for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    assert "tsops_training.py" in files
    assert parsed["errors"] == {}
    assert parsed["opened"] == [], "a DAG file opened files while it was parsed"
    assert len(parsed["dags"]) >= len(files)
    for dag_id, dag in parsed["dags"].items():
        assert dag["max_active_runs"] == 1, dag_id
        assert dag["catchup"] is False, dag_id
        for task_id, task in dag["tasks"].items():
            assert task["timeout"], f"{dag_id}.{task_id} has no execution_timeout"


def test_the_training_dag_has_the_loop_in_order_with_retries(parsed):
    tasks = parsed["dags"]["tsops_training"]["tasks"]
    assert list(tasks) == [
        "models",
        "per_model.ingest",
        "per_model.decide",
        "per_model.prepare",
        "per_model.repro",
        "per_model.register",
    ]
    assert tasks["per_model.ingest"]["retries"] == 2
    assert tasks["per_model.register"]["retries"] == 0  # a failed gate is not transient


def commands(parsed) -> set[tuple[str, ...]]:
    """(program, subcommand...) of every task's command (its doc: `tsops CMD ...`)."""
    found = set()
    for dag_id, dag in parsed["dags"].items():
        for task_id, task in dag["tasks"].items():
            match = re.fullmatch(r"`((?:tsops|dvc)(?: [a-z][a-z-]*)+)(?: .*)?`", task["doc"] or "")
            assert match, f"{dag_id}.{task_id} is not a tsops command: {task['doc']!r}"
            found.add(tuple(match.group(1).split()))
    return found


def test_every_task_is_a_command_whose_help_succeeds(parsed, tmp_path):
    found = commands(parsed)
    assert ("tsops", "retrain") in found and ("dvc", "repro") in found
    for program, *sub in sorted(found):
        if program == "tsops":
            # the words up to the first argument: `tsops models` has no argument
            ran = tsops(*sub, "--help", cwd=tmp_path)
        else:
            ran = run([str(BIN / program), *sub, "--help"], tmp_path)
        assert ran.returncode == 0 and "Usage" in ran.stdout.replace("usage", "Usage"), (
            program,
            sub,
        )
