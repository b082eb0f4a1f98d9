"""Intermittent demand: the Syntetos–Boylan profile, and the intermittent kind's forecasts,
intervals and history updates."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from statsforecast import models as sf

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters import CandidateError, make_forecaster
from tsops.forecasters.intermittent import (
    DEFAULT_CANDIDATES,
    METHODS,
    SB_ADI_CUTOFF,
    SB_CV2_CUTOFF,
    IntermittentModel,
    demand_class,
    demand_profile,
    is_intermittent,
)

LEVELS = [80.0, 95.0]


def demand(n: int, p: float, seed: int = 0) -> np.ndarray:
    """Bernoulli(p) occurrences of Poisson(3)+1 sized demand: intermittent, non-negative."""
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p) * (rng.poisson(3, n) + 1.0)


def test_profile_counts_zero_share_interval_and_size_variation():
    y = [0, 0, 3, 0, 5, 0, 0, 0]  # 2 demands in 8 periods, sizes 3 and 5
    zero_share, adi, cv2 = demand_profile(y)
    assert zero_share == 0.75
    assert adi == 4.0
    assert cv2 == pytest.approx(np.var([3, 5]) / 16)
    assert demand_profile([0, 0]).adi == np.inf
    assert np.isnan(demand_profile([]).zero_share)
    # missing values are neither demand nor its absence
    assert demand_profile([np.nan, 2, 0]) == demand_profile([2, 0])


def test_syntetos_boylan_cutoffs_split_the_four_classes():
    assert (SB_ADI_CUTOFF, SB_CV2_CUTOFF) == (1.32, 0.49)
    assert demand_class([4, 5, 4, 5, 4]) == "smooth"
    assert demand_class([1, 9, 1, 9, 1]) == "erratic"  # CV² 0.64
    assert demand_class([4, 0, 5, 0, 4, 0]) == "intermittent"  # ADI 2
    assert demand_class([1, 0, 9, 0, 1, 0]) == "lumpy"
    assert demand_class([0, 0, 0]) == "none"


def test_is_intermittent_needs_zero_share_and_interval_and_no_negative():
    assert is_intermittent([0, 0, 3, 0, 5, 0])
    assert not is_intermittent([1, 2, 3, 4, 0, 6])  # one zero in six
    assert not is_intermittent([0, 0, 3, 0, -5, 0])  # not demand
    assert is_intermittent([0, 0, 0])  # no demand at all: forecast zero
    # the thresholds are the caller's (model.yaml's intermittent block)
    sparse = [0, 1, 1, 1, 0, 1, 1, 1]  # a quarter zeros, ADI 1.33
    assert not is_intermittent(sparse)
    assert is_intermittent(sparse, min_zero_share=0.2, min_adi=1.32)
    assert not is_intermittent(sparse, min_zero_share=0.2, min_adi=1.5)


@pytest.mark.parametrize("name", sorted(DEFAULT_CANDIDATES))
def test_default_candidates_forecast_the_methods_rate_with_ordered_nonnegative_bounds(name):
    params = DEFAULT_CANDIDATES[name]["params"]
    y = demand(120, 0.3)
    forecaster = make_forecaster(
        DEFAULT_CANDIDATES[name]["kind"], params, freq="W-SUN", season_length=52
    )
    model = forecaster.model.fit(y)
    out = model.forecast(6, LEVELS)
    expected = getattr(sf, params["method"])(**params.get("options", {})).forecast(y=y, h=6)
    np.testing.assert_allclose(out[MEAN_COL], expected["mean"])
    assert np.ptp(out[MEAN_COL]) == 0  # a flat demand rate
    assert (out[lo_col(95)] <= out[lo_col(80)]).all() and (out[lo_col(80)] <= out[MEAN_COL]).all()
    assert (out[MEAN_COL] <= out[hi_col(80)]).all() and (out[hi_col(80)] <= out[hi_col(95)]).all()
    assert (out[lo_col(95)] >= 0).all()
    assert out[hi_col(95)][0] > out[MEAN_COL][0]


def test_intervals_cover_about_their_level_on_a_stationary_demand():
    # one long draw: the first 300 periods to fit, the next 300 to check the bounds on
    y = demand(600, 0.25, seed=3)
    model = IntermittentModel(method="CrostonSBA").fit(y[:300])
    out = model.forecast(300, LEVELS)
    future = y[300:]
    for level in LEVELS:
        inside = (future >= out[lo_col(level)]) & (future <= out[hi_col(level)])
        assert level / 100 - 0.05 <= inside.mean() <= 1.0, (level, inside.mean())
        # stationary demand: about as wide at step 50 as at step 1
        width = out[hi_col(level)] - out[lo_col(level)]
        assert width[49] <= 1.25 * width[0]


def test_intervals_widen_where_the_series_drifts():
    y = np.cumsum(np.random.default_rng(4).normal(0, 1, 80)) + 40  # a random walk
    out = IntermittentModel(method="ADIDA").fit(y).forecast(20, [80])
    width = out[hi_col(80)] - out[lo_col(80)]
    assert (np.diff(width) >= 0).all() and width[-1] > 1.5 * width[0]


@pytest.mark.parametrize("method", METHODS)
def test_update_reruns_the_method_on_new_history_and_keeps_the_error_quantiles(method):
    options = {"alpha_d": 0.2, "alpha_p": 0.1} if method == "TSB" else {}
    y = demand(80, 0.3, seed=1)
    history = demand(30, 0.6, seed=2)
    model = IntermittentModel(method=method, options=options).fit(y)
    updated = model.update(history)
    fresh = getattr(sf, method)(**options).forecast(y=history, h=3)
    np.testing.assert_allclose(updated.forecast(3, [])[MEAN_COL], fresh["mean"])
    # the intervals keep the training data's errors: the same width around the new rate
    width = lambda m: m.forecast(3, [80])[hi_col(80)] - m.forecast(3, [80])[MEAN_COL]  # noqa: E731
    np.testing.assert_allclose(width(updated), width(model))
    assert model.forecast(3, [])[MEAN_COL][0] != updated.forecast(3, [])[MEAN_COL][0]


def test_no_demand_forecasts_zero_and_one_observation_forecasts_it():
    zero = IntermittentModel().fit(np.zeros(10)).forecast(3, LEVELS)
    assert all((v == 0).all() for v in zero.values())
    one = IntermittentModel(method="ADIDA").fit(np.array([4.0])).forecast(2, [95])
    assert (one[MEAN_COL] == 4.0).all()


def test_per_series_frame_forecast_and_pickle_round_trip():
    dates = pd.date_range("2024-01-07", periods=40, freq="W-SUN")
    df = pd.concat(
        pd.DataFrame({"unique_id": uid, "ds": dates, "y": demand(40, 0.3, seed=i)})
        for i, uid in enumerate(["a", "b"])
    )
    forecaster = make_forecaster("intermittent", {"method": "IMAPA"}, freq="W-SUN", season_length=1)
    forecaster.fit(df)
    frame = forecaster.predict(4, level=LEVELS)
    assert len(frame) == 8 and frame["ds"].min() == dates[-1] + pd.offsets.Week(weekday=6)
    again = pickle.loads(pickle.dumps(forecaster)).predict(4, level=LEVELS)
    pd.testing.assert_frame_equal(frame, again)


def test_bad_method_or_options_say_what_to_write():
    with pytest.raises(CandidateError, match="CrostonSBA, TSB, ADIDA, IMAPA"):
        make_forecaster("intermittent", {"method": "Croston"}, freq="W-SUN", season_length=1)
    with pytest.raises(CandidateError, match="TSB needs alpha_d and alpha_p"):
        make_forecaster("intermittent", {"method": "TSB"}, freq="W-SUN", season_length=1)
