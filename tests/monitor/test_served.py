"""Which version is judged, and the changes monitoring proposes, decided before acted."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.monitor.test_accuracy import MODEL_YAML, VALUE_COLS, served_requests, write_log
from tsops.core.git import UncommittedChangesError
from tsops.monitor.canary_change import CanaryChangeError, plan_change
from tsops.monitor.cli import monitor_app
from tsops.monitor.errors import MonitorError
from tsops.monitor.served import of_model, realized_mase, served_cutoffs, served_version

T = pd.Timestamp


def log(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """Records (version, served at, series), cutoff 2020-01 each."""
    return pd.DataFrame(
        [
            {"model_version": v, "served_at": T(at), "unique_id": uid, "cutoff": T("2020-01-01")}
            for v, at, uid in rows
        ]
    )


def test_the_served_version_takes_most_of_the_recent_traffic():
    # a canary at 10%: the champion (2) answers most, whoever answered last
    canary = log(
        *[("2", f"2021-05-01 10:{m:02d}", "a") for m in range(9)], ("3", "2021-05-01 11:00", "a")
    )
    assert served_version(canary) == "2"
    # promoted a day ago: 3 has fewer forecasts in the log, but all the recent ones
    promoted = log(
        *[("2", f"2021-04-{d:02d}", "a") for d in range(1, 29)], ("3", "2021-05-01", "a")
    )
    assert served_version(promoted) == "3"
    # both asked for every request: a tie goes to the one that answered last
    tie = log(("2", "2021-05-01 10:00", "a"), ("3", "2021-05-01 10:01", "a"))
    assert served_version(tie) == "3"
    assert served_version(tie, wanted="2") == "2"
    with pytest.raises(MonitorError, match="no live forecasts of this model"):
        served_version(tie.iloc[:0])


def test_records_of_other_models_are_left_out_and_counted():
    both = log(("2", "2021-05-01", "a"), ("7", "2021-05-01", "b")).assign(
        registered_model=["m", "other"]
    )
    mine = of_model(both, "m", "logs")
    assert mine.records["model_version"].tolist() == ["2"]
    assert mine.note() == "note: 1 record(s) of other registered models ignored (other)"
    with pytest.raises(MonitorError, match="no forecasts of registered model 'x'"):
        of_model(both, "x", "logs")


def test_served_cutoffs_and_realized_mase_of_a_version():
    records = log(("2", "2021-05-01", "a"), ("2", "2021-05-02", "a"), ("2", "2021-05-01", "b"))
    records.loc[1, "cutoff"] = T("2020-02-01")  # the later request sent more history
    assert served_cutoffs(records).to_dict() == {"a": T("2020-02-01"), "b": T("2020-01-01")}
    by_version = pd.DataFrame(
        {"model_name": ["champion", "stable"], "model_version": ["2", "2"], "n": [5, 40],
         "mase": [0.7, 0.9]}
    )  # fmt: skip
    assert realized_mase(by_version, "2") == (0.9, 40)
    assert realized_mase(by_version, "3") == (None, 0)


def verdict(kind: str) -> SimpleNamespace:
    version = SimpleNamespace(model_version="4", label="m v4")
    return SimpleNamespace(verdict=kind, candidate=version, baseline=version, reason="r",
                           n_targets=12, n_series=6)  # fmt: skip


def test_a_hold_changes_nothing_and_a_bad_overlay_creates_no_branch(tmp_path):
    assert plan_change(tmp_path, "m", "production", verdict("hold")) is None
    with pytest.raises(CanaryChangeError, match="unknown environment 'nowhere'") as raised:
        plan_change(tmp_path, "m", "nowhere", verdict("promote"))
    assert raised.value.report().startswith("no branch created:")


def test_retrain_apply_refuses_over_uncommitted_work(tmp_path):
    from tests.monitor.test_retrain import decision
    from tsops.core.config import RetrainConfig
    from tsops.monitor.retrain import prepare_branch

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    (tmp_path / "data.dvc").write_text("outs:\n- md5: old\n")
    (tmp_path / "notes.md").write_text("committed\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    (tmp_path / "notes.md").write_text("work in progress\n")
    ran = []
    with pytest.raises(UncommittedChangesError, match=r"notes\.md"):
        prepare_branch(tmp_path, decision(RetrainConfig(), new_periods=1), ran.append, remote=None)
    assert ran == [] and (tmp_path / "notes.md").read_text() == "work in progress\n"
    assert git("branch", "--list", "retrain/*") == ""


def test_unusable_actuals_say_so_first(tmp_path, monkeypatch):
    monkeypatch.delenv("TSOPS_FORECAST_LOG_DIR", raising=False)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(MODEL_YAML)
    forecasts = pd.DataFrame(
        {"unique_id": ["a"], "ds": [T("2020-02-01")], "cutoff": [T("2020-01-01")],
         **{col: [1.0] for col in VALUE_COLS}}
    )  # fmt: skip
    write_log(tmp_path / "forecast-logs" / "tiny", served_requests(forecasts, "tiny", "5"))
    bad = tmp_path / "actuals.csv"
    bad.write_text("unique_id,ds,y\na,not a date,1\n")
    args = ["staleness", "--model", "tiny", "--root", str(tmp_path), "--actuals", str(bad)]
    result = CliRunner().invoke(monitor_app, args)
    assert result.exit_code == 1, result.output
    assert "error: the actuals are not a usable long frame:" in result.stderr
