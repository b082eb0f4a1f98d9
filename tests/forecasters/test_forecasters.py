"""The forecaster contract, checked for every registered kind on synthetic series."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.forecasting.theta import ThetaModel
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tests.helpers.synthetic import make_series
from tsops.core.schema import forecast_columns, future_dates, hi_col, lo_col
from tsops.forecasters import (
    ETS,
    KINDS,
    ForecastError,
    GlobalGBM,
    PerSeries,
    SeasonalNaive,
    Theta,
    kind_params,
    make_forecaster,
)
from tsops.forecasters.base import forecast_frame, group_history
from tsops.forecasters.combine import Combined

FREQ, SEASON, H = "MS", 12, 18
LEVELS = [80, 95]
#: small settings where the defaults are slow; behaviour is the same
PARAMS = {"gbm": {"max_iter": 60}}


def build(kind: str, season_length: int = SEASON):
    return make_forecaster(
        kind, PARAMS.get(kind, {}), freq=FREQ, season_length=season_length, n_jobs=1
    )


def random_walk_panel(n_series: int = 2, length: int = 72, seed: int = 1) -> pd.DataFrame:
    """Integrated noise with a little seasonality: uncertainty must grow with the horizon."""
    df = make_series(n_series, length, season_length=SEASON, trend=0, noise=0, seed=seed)
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 3, len(df))
    df["y"] = df["y"] + df.groupby("unique_id")["y"].transform(
        lambda s: pd.Series(np.cumsum(steps[s.index]), index=s.index)
    )
    return df


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    """Three trending seasonal series; the last 6 points are kept back as fresh history."""
    return make_series(3, 66, seed=3)


@pytest.fixture(scope="module")
def train(panel) -> pd.DataFrame:
    return panel.groupby("unique_id").head(60).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(train) -> dict:
    return {kind: build(kind).fit(train) for kind in KINDS}


@pytest.fixture(scope="module")
def forecasts(fitted) -> dict:
    return {kind: fc.predict(H, LEVELS) for kind, fc in fitted.items()}


def widths(frame: pd.DataFrame, level: int) -> np.ndarray:
    return (frame[hi_col(level)] - frame[lo_col(level)]).to_numpy()


def min_length(forecaster, uid: str) -> int:
    if isinstance(forecaster, PerSeries):
        return forecaster.models_[uid].min_length
    return forecaster.min_length


# -- output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_returns_the_forecast_schema_and_dates(kind, train, fitted, forecasts):
    out = forecasts[kind]
    assert list(out.columns) == forecast_columns(LEVELS)
    assert len(out) == 3 * H
    assert out[forecast_columns(LEVELS)[2:]].notna().all().all()
    for uid, group in out.groupby("unique_id"):
        cutoff = train.loc[train["unique_id"] == uid, "ds"].max()
        assert fitted[kind].cutoffs_[uid] == cutoff
        assert list(group["ds"]) == list(future_dates(cutoff, H, FREQ))


@pytest.mark.parametrize("kind", list(KINDS))
def test_intervals_are_ordered_and_nested(kind, forecasts):
    out = forecasts[kind]
    assert (out["lo-95"] <= out["lo-80"]).all()
    assert (out["lo-80"] <= out["mean"]).all()
    assert (out["mean"] <= out["hi-80"]).all()
    assert (out["hi-80"] <= out["hi-95"]).all()
    assert widths(out, 95).mean() > widths(out, 80).mean() > 0


def test_no_levels_gives_only_the_mean(fitted):
    out = fitted["ets"].predict(3, None, ids=["s1"])
    assert list(out.columns) == ["unique_id", "ds", "mean"]
    assert set(out["unique_id"]) == {"s1"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_intervals_widen_with_the_horizon(kind):
    h = 30  # beyond one season (naive) and beyond the gbm's calibration horizon
    out = build(kind).fit(random_walk_panel()).predict(h, [80])
    for _, group in out.groupby("unique_id"):
        width = widths(group, 80)
        assert np.all(np.diff(width) >= -1e-9 * width.max()), width
        assert width[-1] > 1.2 * width[0]


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_data_gives_the_same_forecast(kind, train, forecasts):
    again = build(kind).fit(train).predict(H, LEVELS)
    pd.testing.assert_frame_equal(again, forecasts[kind])


@pytest.mark.parametrize("kind", list(KINDS))
def test_pickled_forecaster_forecasts_the_same(kind, fitted, forecasts):
    restored = pickle.loads(pickle.dumps(fitted[kind]))
    pd.testing.assert_frame_equal(restored.predict(H, LEVELS), forecasts[kind])


# -- history ----------------------------------------------------------------------------------


@pytest.fixture
def no_refit(monkeypatch):
    """Any parameter estimation during predict fails the test."""

    def refit(*args, **kwargs):
        raise AssertionError("predict(history=...) re-estimated parameters")

    for cls in (ETSModel, SARIMAX, ThetaModel, HistGradientBoostingRegressor):
        monkeypatch.setattr(cls, "fit", refit)


@pytest.mark.parametrize("kind", list(KINDS))
def test_history_moves_the_origin_without_refitting(kind, panel, fitted, forecasts, no_refit):
    forecaster = fitted[kind]
    before = pickle.dumps(forecaster)
    fresh = panel[panel["unique_id"] == "s0"].tail(6)
    out = forecaster.predict(H, LEVELS, history=fresh)

    s0 = out[out["unique_id"] == "s0"]
    assert s0["ds"].iloc[0] == fresh["ds"].iloc[-1] + pd.offsets.MonthBegin(1)
    old = forecasts[kind]
    same_dates = old.loc[old["unique_id"] == "s0", "mean"].to_numpy()[6:]
    assert not np.allclose(s0["mean"].to_numpy()[:12], same_dates)  # the new data counts
    # series without history still start from the training cutoff, unchanged
    pd.testing.assert_frame_equal(
        out[out["unique_id"] != "s0"].reset_index(drop=True),
        old[old["unique_id"] != "s0"].reset_index(drop=True),
    )
    assert pickle.dumps(forecaster) == before  # fitted parameters and state untouched


@pytest.mark.parametrize("kind", list(KINDS))
def test_history_equal_to_the_training_tail_changes_nothing(kind, train, fitted, forecasts):
    tail = train.groupby("unique_id").tail(8)
    out = fitted[kind].predict(H, LEVELS, history=tail)
    pd.testing.assert_frame_equal(out, forecasts[kind], rtol=1e-6)


@pytest.mark.parametrize("kind", [*KINDS, "median"])
def test_predict_series_is_predict_without_the_frame(kind, panel, fitted):
    """The server's array path and the frame path give the same numbers and cutoffs."""
    forecaster = (
        Combined({k: fitted[k] for k in ("theta", "seasonal_naive")}, "median_ensemble")
        if kind == "median"
        else fitted[kind]
    )
    fresh = panel[panel["unique_id"] == "s1"].tail(7)
    frame = forecaster.predict(H, LEVELS, history=fresh, ids=["s1", "s0"])
    series = forecaster.predict_series(H, LEVELS, group_history(fresh), ["s1", "s0"])
    assert [f.unique_id for f in series] == ["s1", "s0"]
    assert series[0].cutoff == fresh["ds"].iloc[-1]
    assert series[1].cutoff == forecaster.cutoffs_["s0"]
    pd.testing.assert_frame_equal(forecast_frame(series, LEVELS), frame)


@pytest.mark.parametrize("kind", list(KINDS))
def test_history_after_a_gap_needs_min_length(kind, panel, train, fitted):
    forecaster = fitted[kind]
    needed = min_length(forecaster, "s0")
    later = make_series(1, needed + 12, start="2021-01-01", seed=9).assign(unique_id="s0")
    out = forecaster.predict(3, LEVELS, history=later.tail(needed), ids=["s0"])
    assert out["ds"].iloc[0] == later["ds"].iloc[-1] + pd.offsets.MonthBegin(1)
    assert np.isfinite(out[forecast_columns(LEVELS)[2:]].to_numpy()).all()
    if needed > 1:
        with pytest.raises(ForecastError, match="s0"):
            forecaster.predict(3, LEVELS, history=later.tail(needed - 1), ids=["s0"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_unknown_series_raise(kind, fitted, panel):
    with pytest.raises(ForecastError, match="unknown series"):
        fitted[kind].predict(3, LEVELS, ids=["nope"])
    stranger = panel[panel["unique_id"] == "s1"].tail(3).assign(unique_id="stranger")
    with pytest.raises(ForecastError, match="stranger"):
        fitted[kind].predict(3, LEVELS, history=stranger)


# -- awkward data ------------------------------------------------------------------------------


def awkward_panel() -> pd.DataFrame:
    lengths = {"one": 1, "two": 2, "five": 5, "thirteen": 13, "flat": 40, "zeros": 40, "sparse": 40}
    rng = np.random.default_rng(0)
    values = {
        "flat": np.full(40, 7.0),
        "zeros": np.zeros(40),
        "sparse": rng.poisson(0.4, 40).astype(float),
    }
    frames = []
    for uid, n in lengths.items():
        y = values.get(uid, 50 + rng.normal(0, 5, n))
        ds = pd.date_range(end="2020-12-01", periods=n, freq=FREQ)
        frames.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("kind", list(KINDS))
def test_short_constant_and_zero_series_do_not_crash(kind):
    df = awkward_panel()
    out = build(kind).fit(df).predict(6, LEVELS)
    assert len(out) == 6 * df["unique_id"].nunique()
    values = out[forecast_columns(LEVELS)[2:]].to_numpy()
    assert np.isfinite(values).all()
    assert (out["lo-95"] <= out["mean"]).all() and (out["mean"] <= out["hi-95"]).all()
    flat = out[out["unique_id"] == "flat"]
    if kind != "gbm":  # the trees need not reproduce a constant exactly
        np.testing.assert_allclose(flat["mean"], 7.0, atol=1e-3)


def test_multiplicative_seasonality_falls_back_to_additive_on_zeros():
    y = make_series(1, 48, seed=2)["y"].to_numpy()
    y[5] = 0.0
    assert ETS(SEASON, trend=None, seasonal="mul").fit(y).spec_["seasonal"] == "add"
    theta = Theta(SEASON, deseasonalize=True).fit(y)
    assert theta.method_ == "add"
    positive = Theta(SEASON, deseasonalize=True).fit(y + 1)
    assert positive.method_ == "mul"


# -- the models themselves --------------------------------------------------------------------


def test_seasonal_naive_repeats_the_season_with_fpp3_intervals():
    y = np.array([1.0, 2, 3, 4, 2, 4, 6, 8])
    model = SeasonalNaive(4).fit(y)
    out = model.forecast(9, [95])
    np.testing.assert_allclose(out["mean"], [2, 4, 6, 8, 2, 4, 6, 8, 2])
    sigma = np.sqrt(np.mean(np.array([1, 2, 3, 4.0]) ** 2))
    k = np.ceil(np.arange(1, 10) / 4)
    np.testing.assert_allclose(out["hi-95"] - out["mean"], 1.959963984540054 * sigma * np.sqrt(k))
    short = SeasonalNaive(12).fit(np.array([1.0, 3.0]))  # shorter than a season: naive
    np.testing.assert_allclose(short.forecast(3, [])["mean"], [3, 3, 3])


def test_theta_matches_statsmodels():
    y = make_series(1, 60, seed=5)["y"].to_numpy()
    ours = Theta(SEASON).fit(y).forecast(H, [90])
    reference = ThetaModel(y, period=SEASON).fit()
    np.testing.assert_allclose(ours["mean"], reference.forecast(H), rtol=1e-9)
    np.testing.assert_allclose(
        ours["hi-90"], reference.prediction_intervals(H, alpha=0.1)["upper"], rtol=1e-9
    )


def test_ets_auto_picks_a_seasonal_model_for_seasonal_data():
    y = make_series(1, 60, seed=5)["y"].to_numpy()
    assert ETS(SEASON).fit(y).spec_["seasonal"] == "add"
    assert ETS(1).fit(y).spec_["seasonal"] is None
    short = ETS(SEASON).fit(y[:20])  # under two seasons: fitted without seasonality
    assert short.spec_["seasonal"] is None


def test_ets_update_reuses_initial_states_only_when_the_start_matches():
    y = make_series(1, 60, seed=5)["y"].to_numpy()
    model = ETS(SEASON).fit(y)
    spliced = model.update(np.append(y, [130.0, 131.0]))
    assert not spliced.fresh_start_
    np.testing.assert_allclose(
        model.update(y).forecast(H, [80])["hi-80"], model.forecast(H, [80])["hi-80"]
    )
    after_gap = model.update(y[-30:] + 5)
    assert after_gap.fresh_start_ and np.isfinite(after_gap.forecast(H, [80])["lo-80"]).all()
    assert after_gap.params_ is model.params_


def test_gbm_fits_when_a_lag_is_longer_than_every_series():
    short = make_series(3, 14, seed=4)
    gbm = GlobalGBM(FREQ, SEASON, lags=24, max_iter=20).fit(short)
    assert np.isfinite(gbm.predict(6, LEVELS)[forecast_columns(LEVELS)[2:]].to_numpy()).all()


def test_gbm_calibrates_per_step_and_extends_beyond(train):
    gbm = GlobalGBM(FREQ, SEASON, max_iter=60, calibration_horizon=6).fit(train)
    assert len(gbm.error_counts_) == 6 and gbm.error_counts_[0] > gbm.error_counts_[-1] > 0
    half = gbm._error_quantiles(10, [80, 95])
    assert np.all(np.diff(half, axis=0) >= 0) and np.all(half[:, 1] >= half[:, 0])
    np.testing.assert_allclose(half[9] / half[5], np.sqrt(10 / 6))


# -- registry ---------------------------------------------------------------------------------


def test_make_forecaster_builds_each_kind():
    for kind in KINDS:
        forecaster = make_forecaster(kind, {}, freq=FREQ, season_length=SEASON)
        if kind == "gbm":
            assert isinstance(forecaster, GlobalGBM)
        else:
            assert isinstance(forecaster, PerSeries)
            assert forecaster.model.season_length == SEASON
        assert forecaster.freq == FREQ
    ets = make_forecaster("ets", {"trend": "add"}, freq=FREQ, season_length=4)
    assert ets.model.trend == "add" and ets.model.season_length == 4
    assert "trend" in kind_params("ets") and "season_length" not in kind_params("ets")


def test_make_forecaster_rejects_unknown_kinds_and_params():
    with pytest.raises(ValueError, match=r"unknown forecaster kind 'prophet'.*ets.*theta"):
        make_forecaster("prophet", {}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match=r"'alpha'.*valid parameters: .*trend"):
        make_forecaster("ets", {"alpha": 0.3}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match="season_length"):
        make_forecaster("arima", {"season_length": 4}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match="trend='cubic'"):
        make_forecaster("ets", {"trend": "cubic"}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match="order"):
        make_forecaster("arima", {"order": [1, 1]}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match=r"'Prophet' is not supported; use one of.*AutoETS"):
        make_forecaster("statsforecast", {"model": "Prophet"}, freq=FREQ, season_length=SEASON)
    with pytest.raises(ValueError, match=r"AutoETS: invalid options.*wiggle"):
        make_forecaster(
            "statsforecast", {"options": {"wiggle": 1}}, freq=FREQ, season_length=SEASON
        )


def test_statsforecast_engine_keeps_its_parameters_on_new_history():
    """A forecast from fresh history re-filters with the fitted parameters (``forward``),
    as the statsmodels wrappers do; refitting on that history would differ."""
    from statsforecast.models import AutoETS

    y = make_series(1, 60, seed=3)["y"].to_numpy()
    model = make_forecaster("statsforecast", {}, freq=FREQ, season_length=SEASON).model
    fitted = model.fit(y[:48])
    assert fitted.fallback_ is None
    direct = AutoETS(season_length=SEASON).fit(y[:48]).forward(y, 6, level=[80])
    got = fitted.update(y).forecast(6, [80.0])
    np.testing.assert_allclose(got["mean"], direct["mean"])
    np.testing.assert_allclose(got["hi-80"], direct["hi-80"])
    refit = AutoETS(season_length=SEASON).fit(y).predict(6)["mean"]
    assert not np.allclose(got["mean"], refit)
    with pytest.raises(ForecastError, match=r"needs .* observations"):
        fitted.update(y[:3])
