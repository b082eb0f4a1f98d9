"""The gate stage: each check, the champion on today's windows (its backtests reused
where today's backtest ran them, refitted where not), gate.json and the exit code.

The champion comes from a real MLflow registry (a SQLite store in the test's folder),
registered by the registry's own functions from what the stages wrote.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers.once import empty_mlflow_store
from tests.helpers.tiny import TINY_MODEL
from tests.pipeline.conftest import MODEL, run_stages, write_model
from tsops.core.config import GateConfig, load, parse_model_config
from tsops.core.io import read_json
from tsops.core.metrics import MODEL_COL, score
from tsops.pipeline import backtest, evaluate, gate
from tsops.pipeline.gate import Champion, ChampionMethod, evaluate_gate, plan_champion
from tsops.pipeline.selection import SELECTED, with_rules

CANDIDATE = {"mase": 0.75, "coverage-80": 0.78, "coverage-95": 0.9}
BASELINE = {"mase": 1.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'store.db'}"


# ------------------------------------------------------------------------------ checks


def _checks(gate_config: GateConfig, champion: Champion | None = None) -> dict[str, bool]:
    result = evaluate_gate(CANDIDATE, BASELINE, gate_config, [80, 95], champion)
    return {c.name: c.passed for c in result.checks}


def test_skill_vs_seasonal_naive_passes_at_the_threshold_and_fails_above():
    assert _checks(GateConfig(min_skill_vs_naive=0.25)) == {"skill_vs_seasonal_naive": True}
    assert _checks(GateConfig(min_skill_vs_naive=0.26)) == {"skill_vs_seasonal_naive": False}


def test_max_mase_is_checked_only_when_set():
    assert "max_mase" not in _checks(GateConfig())
    assert _checks(GateConfig(max_mase=0.75))["max_mase"] is True
    assert _checks(GateConfig(max_mase=0.74))["max_mase"] is False


def test_coverage_is_checked_per_level_against_the_nominal_level():
    checks = _checks(GateConfig(min_coverage_ratio=0.95))
    # 78% inside the 80% interval is 0.975 of nominal; 90% inside the 95% one is 0.947
    assert checks["coverage_80"] is True and checks["coverage_95"] is False
    assert "coverage_80" not in _checks(GateConfig())


def test_regression_vs_champion_allows_the_configured_share():
    champion = Champion("3", {"mase": 0.74})
    config = GateConfig(max_regression_vs_champion=0.02)
    assert _checks(config, champion)["regression_vs_champion"] is True
    worse = Champion("3", {"mase": 0.7})
    result = evaluate_gate(CANDIDATE, BASELINE, config, [80], worse)
    assert not result.passed and [c.name for c in result.failed] == ["regression_vs_champion"]
    assert "vs champion v3 0.7000 on the same windows" in result.failed[0].detail


def test_gate_result_is_the_gate_json_document():
    result = evaluate_gate(
        CANDIDATE, BASELINE, GateConfig(), [80], Champion("2", {"mase": 0.9}, ["a"], ["b"])
    )
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["passed"] is True
    assert set(doc["checks"][0]) == {"name", "value", "threshold", "passed", "detail"}
    assert doc["champion"] == {
        "version": "2",
        "metrics": {"mase": 0.9},
        "reused": ["a"],
        "refitted": ["b"],
    }
    assert evaluate_gate(CANDIDATE, BASELINE, GateConfig(), [80]).to_dict()["champion"] is None
    assert "gate: passed" in result.table()


# ---------------------------------------------------------------- the champion's method

TWO_RULES = TINY_MODEL.replace("selection: {rule: median_ensemble}", "selection: {rule: RULE}")


def _spec(model_yaml: str = TINY_MODEL, rule: str = "median_ensemble") -> dict:
    config = parse_model_config(model_yaml)
    members = ["theta", "ets"] if rule.endswith("ensemble") else ["theta"]
    return {
        "config": config.model_dump(
            mode="json", include={"name", "freq", "season_length", "candidates", "seed"}
        ),
        "selection": {"rule": rule, "members": members, "choice": {}, "metric": "smape"},
    }


def test_the_champion_method_comes_from_its_spec():
    method = ChampionMethod.from_spec("4", _spec())
    assert method.version == "4" and method.selection.metric == "smape"
    assert method.needed == ["theta", "ets"]
    chooser = ChampionMethod.from_spec("4", _spec(rule="best_overall"))
    assert chooser.needed == ["seasonal_naive", "theta", "ets"]


def test_a_spec_holding_the_whole_model_yaml_still_gives_the_method():
    # versions registered before spec.json held only the train stage's keys
    config = parse_model_config(TINY_MODEL.replace("{rule: median_ensemble}", "{rule: per_series}"))
    old = {
        "config": config.model_dump(mode="json"),
        "selection": {"rule": "per_series", "members": ["theta"], "choice": {"N1": "theta"}},
    }
    method = ChampionMethod.from_spec("1", old)
    assert method.selection.metric == "mase" and method.seed == 0
    assert set(method.candidates) == {"seasonal_naive", "theta", "ets"}


def test_the_plan_reuses_same_definitions_under_any_name_and_refits_the_rest():
    today = parse_model_config(
        TINY_MODEL.replace("  ets: {kind: ets}", "  exp_smoothing: {kind: ets}").replace(
            "  theta: {kind: theta}", "  theta: {kind: theta, params: {theta: 3.0}}"
        )
    )
    method = ChampionMethod.from_spec("1", _spec())
    assert plan_champion(method, today) == ({"ets": "exp_smoothing"}, ["theta"])
    reseeded = today.model_copy(update={"seed": 7})
    assert plan_champion(method, reseeded) == ({}, ["theta", "ets"])


def test_reused_backtests_give_what_refitting_them_gives(staged_tiny):
    config, paths = load(staged_tiny, MODEL)
    df = pd.read_parquet(paths.data)
    cv, scales = pd.read_parquet(paths.cv), pd.read_parquet(paths.scales)
    method = ChampionMethod.from_spec("1", _spec())
    reused = gate.champion_on_windows(method, config, df, cv, scales)
    assert (reused.reused, reused.refitted) == (["ets", "theta"], [])
    # another seed: nothing can be reused (theta and ETS draw no random numbers)
    other = ChampionMethod.from_spec("1", _spec(TINY_MODEL.replace("seed: 0", "seed: 5")))
    refitted = gate.champion_on_windows(other, config, df, cv, scales)
    assert (refitted.reused, refitted.refitted) == ([], ["ets", "theta"])
    assert refitted.metrics == pytest.approx(reused.metrics, rel=1e-12)
    # today's model is the champion: the same numbers as its own backtest
    assert reused.metrics["mase"] == pytest.approx(read_json(paths.metrics)["selected"]["mase"])


# ------------------------------------------------------------ the stage, with a registry


@pytest.fixture(scope="module")
def champion_registered(staged_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the staged tiny model, gated and registered as version 1 of a SQLite
    registry in the same folder (``store.db``), with the champion alias on it."""
    from tsops.registry.client import connect
    from tsops.registry.publish import read_stage_outputs, register_trained
    from tsops.registry.versions import set_alias

    root = Path(shutil.copytree(staged_tiny, tmp_path_factory.mktemp("champion") / "root"))
    gate.run(root, MODEL, against_champion=False)
    empty_mlflow_store(tmp_path_factory, root / "store.db")  # the tables, created once per run
    client = connect(root, _uri(root))
    registered = register_trained(client, read_stage_outputs(root, MODEL), alias=None)
    set_alias(client, MODEL, "champion", registered.version)
    return root


@pytest.fixture
def with_champion(champion_registered: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(champion_registered, tmp_path / "root"))


def test_the_champion_is_scored_on_todays_backtest_without_fitting(with_champion):
    result = gate.run(with_champion, MODEL, tracking_uri=_uri(with_champion))
    _, paths = load(with_champion, MODEL)
    verdict = read_json(paths.gate)
    assert result.passed and verdict["passed"] is True
    assert verdict["champion"]["version"] == "1"
    assert (verdict["champion"]["reused"], verdict["champion"]["refitted"]) == (
        ["ets", "theta"],
        [],
    )
    selected = read_json(paths.metrics)["selected"]["mase"]
    assert verdict["champion"]["metrics"]["mase"] == pytest.approx(selected)
    regression = next(c for c in verdict["checks"] if c["name"] == "regression_vs_champion")
    assert regression["passed"] and "vs champion v1" in regression["detail"]


def test_only_the_champion_candidates_that_changed_are_fitted_again(with_champion):
    champion_config, paths = load(with_champion, MODEL)
    # today's theta differs from the champion's: today's backtest has no row of it
    write_model(
        with_champion,
        TINY_MODEL.replace(
            "  theta: {kind: theta}", "  theta: {kind: theta, params: {theta: 3.0}}"
        ),
    )
    backtest.run(with_champion, MODEL, n_jobs=1)
    evaluate.run(with_champion, MODEL)
    result = gate.run(with_champion, MODEL, tracking_uri=_uri(with_champion), n_jobs=1)
    assert (result.champion.reused, result.champion.refitted) == (["ets"], ["theta"])
    # the champion's own model.yaml, backtested from scratch on the same windows
    df = pd.read_parquet(paths.data)
    cv, scales = backtest.run_backtest(df, champion_config, n_jobs=1)
    overall = score(with_rules(cv, scales, champion_config), scales, champion_config.levels)
    expected = overall["overall"].set_index(MODEL_COL).loc[SELECTED]
    assert result.champion.metrics == pytest.approx(expected.to_dict(), rel=1e-12)


def test_no_champion_leaves_the_registry_alone(with_champion):
    down = f"http://127.0.0.1:{_free_port()}"
    result = gate.run(with_champion, MODEL, against_champion=False, tracking_uri=down)
    assert result.champion is None
    assert "regression_vs_champion" not in {c.name for c in result.checks}
    assert read_json(load(with_champion, MODEL)[1].gate)["champion"] is None


def test_an_unreachable_registry_leaves_the_last_verdict_as_it_was(with_champion):
    from tsops.registry.client import RegistryUnavailable

    _, paths = load(with_champion, MODEL)
    before = paths.gate.read_bytes()
    with pytest.raises(RegistryUnavailable):
        gate.run(with_champion, MODEL, tracking_uri=f"http://127.0.0.1:{_free_port()}")
    assert paths.gate.read_bytes() == before


def test_gate_json_is_replaced_whole_or_not_at_all(staged, monkeypatch):
    import tsops.core.io

    _, paths = load(staged, MODEL)
    gate.run(staged, MODEL, against_champion=False)
    before = paths.gate.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tsops.core.io.json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        gate.run(staged, MODEL, against_champion=False)
    assert paths.gate.read_bytes() == before
    assert [p.name for p in paths.artifacts.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------- the command


def _gate_command(root: Path, *args: str):
    from tsops.cli import app

    return CliRunner().invoke(app, ["gate", MODEL, "--root", str(root), *args])


def test_tsops_gate_exits_1_after_writing_a_failing_verdict(staged):
    write_model(staged, TINY_MODEL.replace("min_skill_vs_naive: -1.0", "min_skill_vs_naive: 0.99"))
    failed = _gate_command(staged, "--no-champion")
    assert failed.exit_code == 1
    assert "gate: FAILED" in failed.stdout
    assert "the gate failed (skill_vs_seasonal_naive)" in failed.stderr
    verdict = read_json(load(staged, MODEL)[1].gate)
    assert verdict["passed"] is False and verdict["checks"][0]["passed"] is False

    write_model(staged)
    passed = _gate_command(staged, "--no-champion")
    assert passed.exit_code == 0, passed.output
    assert read_json(load(staged, MODEL)[1].gate)["passed"] is True


def test_tsops_gate_asks_for_the_evaluate_stage_first(tmp_path):
    root = run_stages(write_model(tmp_path), upto="ingest")
    result = _gate_command(root, "--no-champion")
    assert result.exit_code == 1
    assert f"`tsops evaluate {MODEL}`" in result.stderr
