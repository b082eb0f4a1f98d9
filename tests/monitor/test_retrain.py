"""The retrain policy and the idempotent retraining branch (real git)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers.git_repo import git, init_repo
from tsops.core.config import RetrainConfig
from tsops.monitor.retrain import (
    Evidence,
    RetrainError,
    data_fingerprint,
    decide,
    new_complete_periods,
    prepare_branch,
)


def frame(ids: list[str], start: str, periods: int) -> pd.DataFrame:
    times = pd.date_range(start, periods=periods, freq="MS")
    rows = [(uid, t, float(i)) for uid in ids for i, t in enumerate(times)]
    return pd.DataFrame(rows, columns=["unique_id", "ds", "y"])


def test_only_consecutive_complete_periods_count():
    trained = frame(["a", "b"], "2020-01-01", 12)  # ends 2020-12
    later = frame(["a", "b"], "2021-01-01", 3)
    assert new_complete_periods(trained, pd.concat([trained, later]), "MS") == 3
    # 2021-02 only arrived for one series: 2021-01 counts, 2021-03 does not (gap)
    partial = later[~((later["unique_id"] == "b") & (later["ds"] == "2021-02-01"))]
    assert new_complete_periods(trained, pd.concat([trained, partial]), "MS") == 1
    assert new_complete_periods(trained, trained, "MS") == 0


def test_fingerprint_ignores_row_order_and_sees_values():
    df = frame(["a", "b"], "2020-01-01", 6)
    assert data_fingerprint(df) == data_fingerprint(df.sample(frac=1, random_state=0))
    changed = df.copy()
    changed.loc[3, "y"] += 1
    assert data_fingerprint(changed) != data_fingerprint(df)


def decision(policy: RetrainConfig, **measured):
    measured = {
        "new_periods": 0,
        "realized_mase": 0.8,
        "n_scored": 40,
        "expected_mase": 0.8,
        "served_version": "3",
        "drift_detected": False,
        **measured,
    }
    return decide("m", policy, Evidence(data_fingerprint="f" * 64, **measured))


def test_each_trigger_fires_alone_and_reports_its_numbers():
    policy = RetrainConfig(on_new_period=True, max_error_ratio=1.25, min_scored=12, on_drift=True)
    assert not decision(policy).fire
    assert decision(policy, new_periods=1).reasons == ["1 new complete period(s) landed"]
    worse = decision(policy, realized_mase=1.2)
    assert worse.fire and worse.checks["error"]["value"] == pytest.approx(1.5)
    assert "1.50x" in worse.checks["error"]["detail"]
    assert decision(policy, drift_detected=True).reasons == ["target drift detected"]
    assert decision(policy).branch == "retrain/m-ffffffffffff"


def test_error_trigger_waits_for_enough_pairs_and_an_expectation():
    policy = RetrainConfig(on_new_period=False, max_error_ratio=1.25, min_scored=12, on_drift=False)
    few = decision(policy, realized_mase=3.0, n_scored=5)
    assert not few.fire and "12 needed" in few.checks["error"]["detail"]
    unknown = decision(policy, realized_mase=3.0, expected_mase=None)
    assert not unknown.fire and "no backtest MASE" in unknown.checks["error"]["detail"]
    off = RetrainConfig(on_new_period=False, max_error_ratio=None, on_drift=False)
    assert not decision(off, realized_mase=3.0, new_periods=4, drift_detected=True).fire


@pytest.fixture
def repo(tmp_path):
    return init_repo(
        tmp_path / "repo", {"data.dvc": "outs:\n- md5: old\n", "dvc.lock": "stages: {}\n"}
    )


def test_the_branch_is_prepared_once_per_data(repo):
    policy = RetrainConfig()
    fired = decision(policy, new_periods=2)
    commands = []

    def pipeline(cmd):  # stands in for ingest / dvc: writes what they would
        commands.append(cmd[:2])
        (repo / "data.dvc").write_text("outs:\n- md5: new\n")

    branch, created = prepare_branch(repo, fired, pipeline, remote=None)
    assert created and branch == "retrain/m-ffffffffffff"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == branch
    assert "Retrain m: 2 new complete period(s) landed" in git(repo, "log", "-1", "--format=%B")
    assert commands == [["tsops", "ingest"], ["dvc", "add"], ["dvc", "repro"]]
    git(repo, "switch", "-q", "main")
    again = prepare_branch(repo, fired, pipeline, remote=None)
    assert again == (branch, False) and len(commands) == 3  # nothing run twice


def test_a_failing_pipeline_leaves_no_branch(repo):
    def broken(cmd):
        raise RuntimeError("dvc repro failed")

    with pytest.raises(RuntimeError, match="dvc repro failed"):
        prepare_branch(repo, decision(RetrainConfig(), new_periods=1), broken, remote=None)
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "branch", "--list", "retrain/*") == ""


def test_nothing_to_prepare_without_a_trigger(repo):
    with pytest.raises(RetrainError, match="no trigger fired"):
        prepare_branch(repo, decision(RetrainConfig()), print, remote=None)
