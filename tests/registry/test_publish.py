"""`tsops register` publishes what the stages wrote, into a real SQLite MLflow store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.registry.conftest import NAME, process_state, write_stage_outputs
from tsops.cli import app
from tsops.registry.client import connect
from tsops.registry.publish import (
    StageOutputsError,
    class_tags,
    read_stage_outputs,
    register_trained,
)
from tsops.registry.versions import version_for_alias


def test_a_passed_gate_registers_moves_the_alias_and_reregistering_reuses(store):
    write_stage_outputs(store)
    before = process_state()
    client = connect(store)
    outputs = read_stage_outputs(store, NAME)
    first = register_trained(client, outputs, "challenger")
    assert (first.version, first.reused) == ("1", False)
    assert str(version_for_alias(client, NAME, "challenger").version) == "1"
    version = client.get_model_version(NAME, "1")
    assert version.tags["tsops.gate"] == "passed"
    assert version.tags["tsops.model_sha256"] == outputs.tags["tsops.model_sha256"]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"{NAME}-train"
    assert run.data.metrics["selected.mase"] == pytest.approx(0.9)
    assert run.data.metrics["selected.coverage_80"] == pytest.approx(0.8)
    assert run.data.params["horizon"] == "6"
    logged = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"metrics.json", "gate.json", "spec.json", "plots", "tables", NAME} <= logged
    assert (store / "mlartifacts").is_dir(), "the embedded store keeps artifacts beside it"

    again = register_trained(client, read_stage_outputs(store, NAME), "champion")
    assert (again.version, again.run_id, again.reused) == ("1", first.run_id, True)
    assert str(version_for_alias(client, NAME, "champion").version) == "1"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert process_state() == before, "registering changed MLflow's globals or os.environ"


def test_a_failed_gate_registers_without_moving_the_alias_and_exits_1(store):
    write_stage_outputs(store, passed=False)
    result = CliRunner().invoke(app, ["register", NAME, "--root", str(store)])
    assert result.exit_code == 1, result.output
    assert "registered version 1" in result.stdout
    assert "gate: FAILED" in result.stdout
    assert "gate failed, alias challenger not moved" in result.stderr
    client = connect(store)
    assert client.get_model_version(NAME, "1").tags["tsops.gate"] == "failed"
    assert version_for_alias(client, NAME, "challenger") is None


def test_the_command_prints_the_gate_and_the_version(store, monkeypatch):
    write_stage_outputs(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a dry run never asks
    dry = CliRunner().invoke(app, ["register", NAME, "--dry-run", "--root", str(store)])
    assert dry.exit_code == 0, dry.output
    assert "gate: passed" in dry.stdout and "dry run, nothing registered" in dry.stdout
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = CliRunner().invoke(app, ["register", NAME, "--no-alias", "--root", str(store)])
    assert result.exit_code == 0, result.output
    assert "gate: passed" in result.stdout and "registered version 1" in result.stdout
    assert "alias" not in result.stdout
    assert version_for_alias(connect(store), NAME, "challenger") is None


def test_a_missing_or_stale_gate_is_refused_before_the_registry_is_asked(store, monkeypatch):
    artifacts = write_stage_outputs(store)
    gate = artifacts / "gate.json"
    document = json.loads(gate.read_text())

    # the model changed after the gate judged it (a retrain without a new gate)
    (artifacts / "model" / "forecaster.joblib").write_bytes(b"another model")
    with pytest.raises(StageOutputsError, match=r"model/forecaster\.joblib") as stale:
        read_stage_outputs(store, NAME)
    assert "run `dvc repro` (or `tsops gate tiny`) first" in str(stale.value)
    write_stage_outputs(store)

    # a gate.json without inputs says nothing about which model it judged
    gate.write_text(json.dumps({k: v for k, v in document.items() if k != "inputs"}))
    with pytest.raises(StageOutputsError, match=r"metrics\.json"):
        read_stage_outputs(store, NAME)

    write_stage_outputs(store, passed=False)
    dry = CliRunner().invoke(app, ["register", NAME, "--dry-run", "--root", str(store)])
    assert dry.exit_code == 1 and "tiny: gate failed\n" in dry.stderr, dry.output

    gate.unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never asked
    result = CliRunner().invoke(app, ["register", NAME, "--root", str(store)])
    assert result.exit_code == 1, result.output
    assert "gate.json does not exist: run `dvc repro` (or `tsops gate tiny`)" in result.stderr
    assert "not reachable" not in result.stderr


def test_the_version_tags_count_the_series_of_each_class():
    spec = {
        "class_counts": {"regular": 57, "short": 2, "intermittent": 1},
        "gated_class": "regular",
        "nonnegative": True,
    }
    assert class_tags(spec) == {
        "tsops.series.regular": "57",
        "tsops.series.short": "2",
        "tsops.series.intermittent": "1",
        "tsops.series.gated_class": "regular",
        "tsops.nonnegative": "true",
    }
    assert class_tags({"n_series": 3}) == {}  # a spec written before classes existed
