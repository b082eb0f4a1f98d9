"""Features of the global model: training rows and serving rows must agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers.synthetic import make_series
from tsops.forecasters import GlobalGBM, features
from tsops.forecasters.features import (
    FeatureSpec,
    calendar_features,
    calendar_names,
    default_spec,
    min_observations,
    next_step_features,
    sliding_windows,
    training_matrix,
    window_features,
    window_scale,
)
from tsops.forecasters.gbm import _future_grid


@pytest.fixture
def spec() -> FeatureSpec:
    return default_spec("MS", 12)


@pytest.fixture
def panel() -> pd.DataFrame:
    """Series of different lengths, one with zeros, ending on the same month."""
    df = make_series(3, lengths=[40, 15, 5], seed=4)
    df.loc[df["unique_id"] == "s0", "y"] = df.loc[df["unique_id"] == "s0", "y"].where(
        np.arange((df["unique_id"] == "s0").sum()) % 7 != 0, 0.0
    )
    return df


def test_training_rows_equal_serving_rows(panel, spec):
    """Row for target t == the serving row built from the series up to t-1."""
    train = training_matrix(panel, spec)
    assert train.X.shape == (len(train.target), len(spec.names))
    for uid, group in panel.groupby("unique_id"):
        y = group["y"].to_numpy()
        ds = pd.DatetimeIndex(group["ds"])
        rows = np.flatnonzero(train.ids == uid)
        assert len(rows) > 0
        for row in rows:
            t = ds.get_loc(train.ds[row])
            X, scale = next_step_features([y[:t]], ds[t : t + 1], spec)
            np.testing.assert_array_equal(X[0], train.X[row])
            assert scale[0] == train.scale[row]
            assert train.target[row] == y[t] / scale[0]


def test_training_rows_start_after_one_scale_window(panel, spec):
    train = training_matrix(panel, spec)
    counts = pd.Series(train.ids).value_counts()
    start = min_observations(spec)
    assert counts["s0"] == 40 - start
    assert counts["s1"] == 15 - start
    assert counts["s2"] == 4  # shorter than a window: every row it can give


def test_recursive_forecast_uses_the_serving_rows(panel):
    gbm = GlobalGBM("MS", 12, max_iter=30, calibration_horizon=3).fit(panel)
    tails = list(gbm.y_.values())
    ends = pd.DatetimeIndex(gbm.cutoffs_.to_numpy())
    mean, _ = gbm._recursive(gbm.model_, tails, _future_grid(ends, 2, gbm.freq), 2)
    X, scale = next_step_features(tails, ends + pd.offsets.MonthBegin(1), gbm.spec)
    np.testing.assert_allclose(mean[:, 0], gbm.model_.predict(X) * scale)
    extended = [np.append(t, m) for t, m in zip(tails, mean[:, 0], strict=True)]
    X2, scale2 = next_step_features(extended, ends + pd.offsets.MonthBegin(2), gbm.spec)
    np.testing.assert_allclose(mean[:, 1], gbm.model_.predict(X2) * scale2)


def test_scale_is_robust_to_zeros_and_sign():
    windows = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],
            [5.0, 5.0, 0.0, 0.0],  # recent zeros: fall back to the whole window
            [0.0, 0.0, 0.0, 0.0],  # all zero: 1
            [np.nan, np.nan, -2.0, -4.0],  # negative and short
            [np.nan, np.nan, np.nan, np.nan],  # nothing known yet: 1
        ]
    )
    np.testing.assert_allclose(window_scale(windows, 2), [3.5, 2.5, 1.0, 3.0, 1.0])


def test_features_are_scale_free(spec):
    y = make_series(1, 30, seed=1)["y"].to_numpy()
    ds = pd.date_range("2020-01-01", periods=1, freq="MS")
    small, _ = next_step_features([y], ds, spec)
    big, _ = next_step_features([1000 * y], ds, spec)
    np.testing.assert_allclose(small, big)


@pytest.mark.parametrize(
    ("freq", "names"),
    [
        ("MS", ["month"]),
        ("ME", ["month"]),
        ("QS", ["quarter"]),
        ("YS", []),
        ("W-SUN", ["week_of_year"]),
        ("D", ["day_of_week", "month"]),
        ("B", ["day_of_week", "month"]),
        ("h", ["hour", "day_of_week"]),
    ],
)
def test_calendar_names_follow_the_frequency(freq, names):
    assert calendar_names(freq) == names
    ds = pd.date_range("2021-03-01", periods=3, freq=freq)
    assert calendar_features(ds, freq).shape == (3, len(names))


def test_calendar_values():
    ds = pd.DatetimeIndex(["2021-03-01", "2021-12-01"])
    np.testing.assert_array_equal(calendar_features(ds, "MS"), [[3.0], [12.0]])
    np.testing.assert_array_equal(calendar_features(ds, "D"), [[0.0, 3.0], [2.0, 12.0]])


def test_sliding_windows_hold_the_values_before_each_target():
    windows = sliding_windows(np.array([1.0, 2.0, 3.0]), 2)
    np.testing.assert_array_equal(windows, [[np.nan, np.nan], [np.nan, 1.0], [1.0, 2.0]])


def test_spec_defaults_and_validation():
    spec = default_spec("MS", 12)
    assert spec.lags == tuple(range(1, 13)) and spec.windows == (3, 12)
    assert spec.lookback == 12 and spec.scale_window == 12
    assert len(spec.names) == 12 + 2 * 2 + 1
    yearly = default_spec("YS", 1, lags=[2, 1], windows=[])
    assert yearly.lags == (1, 2) and yearly.scale_window == 4 and yearly.names[-1] == "lag_2"
    with pytest.raises(ValueError, match="lags"):
        FeatureSpec("MS", lags=(0,))
    with pytest.raises(ValueError, match="windows"):
        FeatureSpec("MS", windows=(1,))


def _nan_aware_features(windows: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """``window_features`` as it was before its path for complete windows."""
    scale = window_scale(windows, spec.scale_window)
    with np.errstate(all="ignore"):
        scaled = windows / scale[:, None]
        cols = [scaled[:, -lag] for lag in spec.lags]
        for w in spec.windows:
            cols += [features._nanmean(scaled[:, -w:]), features._nanstd(scaled[:, -w:])]
    return np.column_stack(cols), scale


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_complete_windows_get_the_same_features_bit_for_bit(rows):
    """The fast path for windows without gaps (the recursive forecast's) against the
    NaN-aware one, on values of every magnitude, zeros, and windows that are views."""
    rng = np.random.default_rng(rows)
    for spec in (
        default_spec("MS", 12, 36, [3, 6, 12, 24, 36], calendar=False),
        default_spec("MS", 12),
        default_spec("QS", 4, [1, 4, 8], [2, 5]),
    ):
        lookback = spec.lookback
        padded = rng.normal(100, 30, (rows, lookback + 3)) * rng.lognormal(0, 4, (rows, 1))
        for windows in (
            padded[:, 2 : 2 + lookback],  # a view, as in the recursion's buffer
            np.round(padded[:, :lookback]),
            # zeros over the scale window: the whole window sets the scale
            np.where(np.arange(lookback) >= lookback - spec.scale_window, 0, padded[:, :lookback]),
            np.zeros((rows, lookback)),
            rng.normal(0, 1e-300, (rows, lookback)),
        ):
            fast = features._complete_window_features(windows, spec)
            assert fast is not None
            expected = _nan_aware_features(windows, spec)
            assert np.array_equal(fast[0], expected[0], equal_nan=True)
            assert np.array_equal(fast[1], expected[1])


def test_windows_with_gaps_or_huge_values_take_the_nan_aware_path():
    spec = default_spec("MS", 12, 36, [3, 6, 12, 24, 36], calendar=False)
    windows = np.full((2, 36), 5.0)
    for bad in (np.nan, np.inf, 1e305):
        windows[1, 4] = bad
        assert features._complete_window_features(windows, spec) is None
        with np.errstate(all="ignore"):
            found = window_features(windows, spec)
            expected = _nan_aware_features(windows, spec)
        assert np.array_equal(found[0], expected[0], equal_nan=True)
