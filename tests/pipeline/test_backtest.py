import numpy as np
import pandas as pd
import pytest

from tests.helpers.fakes import last, mean
from tests.helpers.synthetic import make_series
from tsops.core.config import parse_model_config
from tsops.core.progress import Tracker
from tsops.forecasters.combine import Combined
from tsops.pipeline.backtest import cross_validation, split_at, windows
from tsops.pipeline.selection import (
    RULES,
    SELECTED,
    configured_rule_cv,
    select,
    with_rules,
)

CONFIG = """
name: demo
source: {kind: file, path: x.csv}
freq: MS
horizon: 3
season_length: 1
levels: [80]
baseline: mean
candidates:
  mean: {kind: seasonal_naive}
  last: {kind: seasonal_naive}
backtest: {windows: 3, step: 2}
selection: {rule: RULE}
serving: {}
fill: none
seed: 0
"""


def test_windows_end_at_the_data_end():
    assert [w.offset for w in windows(3, 3, 2)] == [7, 5, 3]


def test_split_at_counts_from_each_series_end():
    df = make_series(lengths=[10, 6], season_length=1)
    train, test = split_at(df, offset=4, h=3)
    assert train.groupby("unique_id").size().tolist() == [6, 2]
    assert test.groupby("unique_id").size().tolist() == [3, 3]
    for uid in ("s0", "s1"):
        assert train[train.unique_id == uid].ds.max() < test[test.unique_id == uid].ds.min()


def test_a_series_too_short_for_a_window_sits_it_out():
    df = make_series(lengths=[10, 6], season_length=1)
    train, test = split_at(df, offset=4, h=3, min_train_length=3)
    assert set(train.unique_id) == set(test.unique_id) == {"s0"}
    cv, scales = cross_validation(
        df,
        {"last": last},
        h=2,
        n_windows=2,
        step=2,
        levels=[80],
        season_length=1,
        min_train_length=3,
    )
    # s1 (6 points) fits on 2 points in the older window (offset 4): left out there only
    assert cv.groupby("unique_id")["cutoff"].nunique().to_dict() == {"s0": 2, "s1": 1}
    assert scales.groupby("unique_id").size().to_dict() == {"s0": 2, "s1": 1}


def test_a_window_no_series_is_long_enough_for_is_skipped():
    df = make_series(lengths=[8, 7], season_length=1)
    tracker = Tracker(description="backtest")
    cv, scales = cross_validation(
        df,
        {"last": last, "mean": mean},
        h=2,
        n_windows=3,
        step=2,
        levels=[80],
        season_length=1,
        min_train_length=3,
        tracker=tracker,
    )
    # offsets 6, 4, 2: the oldest leaves 2 and 1 points, both below 3
    assert cv["cutoff"].nunique() == 2
    assert sorted(scales.groupby("unique_id").size()) == [2, 2]
    # progress counted the fits that happened: 2 windows x 2 series x 2 candidates
    assert tracker.total == tracker.done == 8
    assert {name: stats.items for name, stats in tracker.steps.items()} == {"last": 4, "mean": 4}


def test_cross_validation_shape_and_no_leakage():
    df = make_series(n_series=2, length=20, season_length=1)
    cv, scales = cross_validation(
        df, {"last": last, "mean": mean}, h=3, n_windows=3, step=2, levels=[80], season_length=1
    )
    assert len(cv) == 2 * 2 * 3 * 3
    assert (cv["ds"] > cv["cutoff"]).all()
    assert cv.groupby(["model", "unique_id"])["cutoff"].nunique().eq(3).all()
    # the Last forecast equals the value at the cutoff: proves training stopped there
    lasts = cv[cv.model == "last"].merge(
        df.rename(columns={"ds": "cutoff", "y": "y_at_cutoff"}), on=["unique_id", "cutoff"]
    )
    np.testing.assert_allclose(lasts["mean"], lasts["y_at_cutoff"])
    assert len(scales) == 2 * 3


def _config(rule):
    return parse_model_config(CONFIG.replace("RULE", rule))


def _trend_and_flat_cv():
    """s0 trends (Last wins), s1 is noise around a level (Mean wins)."""
    rng = np.random.default_rng(1)
    dates = pd.date_range("2020-01-01", periods=30, freq="MS")
    df = pd.concat(
        [
            pd.DataFrame({"unique_id": "s0", "ds": dates, "y": np.arange(30.0) * 5}),
            pd.DataFrame({"unique_id": "s1", "ds": dates, "y": 50 + rng.normal(0, 5, 30)}),
        ],
        ignore_index=True,
    )
    cv, scales = cross_validation(
        df, {"mean": mean, "last": last}, h=3, n_windows=3, step=2, levels=[80], season_length=1
    )
    return df, cv, scales


def test_per_series_selection_picks_each_series_winner():
    _, cv, scales = _trend_and_flat_cv()
    selection = select(cv, scales, _config("per_series"))
    assert selection.choice == {"s0": "last", "s1": "mean"}
    assert selection.members == ["mean", "last"]


def test_rules_are_scored_on_held_out_windows():
    _, cv, scales = _trend_and_flat_cv()
    config = _config("per_series")
    honest = configured_rule_cv(cv, scales, config, "per_series")
    assert len(honest) == 2 * 3 * 3  # one forecast per series, window and step
    full = with_rules(cv, scales, config)
    assert set(full["model"]) == {"mean", "last", *RULES, SELECTED}
    sel = full[full.model == SELECTED].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(sel, honest.drop(columns="model").reset_index(drop=True))


def test_median_ensemble_of_two_is_their_mean():
    _, cv, scales = _trend_and_flat_cv()
    config = parse_model_config(CONFIG.replace("RULE", "median_ensemble, members: [mean, last]"))
    ens = configured_rule_cv(cv, scales, config, "median_ensemble").sort_values(
        ["unique_id", "ds", "cutoff"]
    )
    pair = cv.pivot_table(index=["unique_id", "ds", "cutoff"], columns="model", values="mean")
    np.testing.assert_allclose(ens["mean"].to_numpy(), pair.mean(axis=1).to_numpy())


def test_ensembles_of_three_take_the_median_or_the_mean():
    _, cv, scales = _trend_and_flat_cv()
    third = cv[cv.model == "last"].assign(model="zero", mean=0.0, **{"lo-80": -1.0, "hi-80": 1.0})
    cv3 = pd.concat([cv, third], ignore_index=True)
    trio = cv3.pivot_table(index=["unique_id", "ds", "cutoff"], columns="model", values="mean")
    for rule, expected in (
        ("median_ensemble", trio.median(axis=1)),
        ("mean_ensemble", trio.mean(axis=1)),
    ):
        config = parse_model_config(
            CONFIG.replace("RULE", f"{rule}, members: [mean, last, zero]").replace(
                "  last:", "  zero: {kind: seasonal_naive}\n  last:"
            )
        )
        ens = configured_rule_cv(cv3, scales, config, rule).sort_values(
            ["unique_id", "ds", "cutoff"]
        )
        np.testing.assert_allclose(ens["mean"].to_numpy(), expected.to_numpy())
        assert (ens["lo-80"] <= ens["mean"]).all() and (ens["mean"] <= ens["hi-80"]).all()


@pytest.mark.parametrize("rule", RULES)
def test_combined_forecaster_follows_the_rule(rule):
    df, cv, scales = _trend_and_flat_cv()
    selection = select(cv, scales, _config(rule))
    members = {"mean": mean(), "last": last()}
    combined = Combined({m: members[m] for m in selection.members}, rule, selection.choice)
    forecast = combined.fit(df).predict(3, level=[80])
    assert list(forecast.columns) == ["unique_id", "ds", "mean", "lo-80", "hi-80"]
    assert forecast["unique_id"].tolist() == ["s0"] * 3 + ["s1"] * 3
    if rule == "per_series":
        s0 = forecast[forecast.unique_id == "s0"]["mean"]
        assert (s0 == df[df.unique_id == "s0"]["y"].iloc[-1]).all()
    only_s1 = combined.predict(2, level=[80], ids=["s1"])
    assert only_s1["unique_id"].tolist() == ["s1", "s1"]
