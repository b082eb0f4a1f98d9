"""Behaviour of the model the pipeline registers, on the default model's own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsops.core.config import load_model_config
from tsops.core.metrics import MODEL_COL, score
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.pipeline.backtest import run_backtest
from tsops.pipeline.ingest import load_source
from tsops.pipeline.selection import SELECTED, Selection, select, with_rules
from tsops.pipeline.train import fit
from tsops.pipeline.validate import check_frame

ROOT = Path(__file__).resolve().parents[2]
N_SERIES = 12


@pytest.fixture(scope="module")
def default_model():
    config = load_model_config(ROOT / "models", "m3-monthly")
    source = config.source.model_copy(update={"series": N_SERIES})
    config = config.model_copy(update={"source": source})
    raw = load_source(config.source, config.freq, ROOT)
    df = check_frame(raw, freq=config.freq, min_length=config.min_length)
    cv, scales = run_backtest(df, config, n_jobs=1)
    selection = select(cv, scales, config)
    scores = score(with_rules(cv, scales, config), scales, config.levels)
    fitted = fit(df, config, selection, n_jobs=1)
    return config, df, scores["overall"].set_index(MODEL_COL), fitted


def test_selected_beats_seasonal_naive_in_backtest(default_model):
    config, _, overall, _ = default_model
    assert overall.loc[SELECTED, "mase"] < 0.9 * overall.loc[config.baseline, "mase"]
    assert overall.loc[SELECTED, "smape"] < overall.loc[config.baseline, "smape"]


def test_intervals_widen_with_horizon(default_model):
    config, _, _, fitted = default_model
    forecast = fitted.predict(config.horizon, level=[80, 95])
    width = (forecast["hi-95"] - forecast["lo-95"]).to_numpy().reshape(-1, config.horizon)
    assert np.mean(width[:, -1] > width[:, 0]) >= 0.9
    assert (forecast["hi-95"] >= forecast["hi-80"]).all()
    assert (forecast["lo-95"] <= forecast["lo-80"]).all()


def test_same_data_and_seed_give_the_same_forecast(default_model):
    config, df, _, fitted = default_model
    again = fit(df, config, Selection(fitted.rule, sorted(fitted.members)), n_jobs=1)
    pd.testing.assert_frame_equal(fitted.predict(6, level=[80]), again.predict(6, level=[80]))


def test_history_moves_the_forecast_origin(default_model):
    config, df, _, fitted = default_model
    uid = df[ID_COL].iloc[0]
    series = df[df[ID_COL] == uid]
    new_ds = pd.date_range(series[TIME_COL].iloc[-1], periods=4, freq=config.freq)[1:]
    recent = series[TARGET_COL].iloc[-15:-12].to_numpy()  # same months a year earlier

    def with_history(model, factor: float) -> pd.DataFrame:
        history = pd.DataFrame({ID_COL: uid, TIME_COL: new_ds, TARGET_COL: recent * factor})
        return model.predict(6, history=history, ids=[uid])

    plain = fitted.predict(6, ids=[uid])
    same, higher = with_history(fitted, 1.0), with_history(fitted, 1.5)
    assert plain[TIME_COL].iloc[0] == series[TIME_COL].iloc[-1] + pd.offsets.MonthBegin(1)
    assert (same[TIME_COL] == higher[TIME_COL]).all()
    assert same[TIME_COL].iloc[0] == new_ds[-1] + pd.offsets.MonthBegin(1)
    # A higher recent history raises the level: at every step for the members that
    # extrapolate a level (the exponential-smoothing family), on average over the
    # horizon for the combination. A global tree model is not monotone in its lags: on
    # an erratic series it may read three high points as a peak to revert from.
    assert higher["mean"].mean() > same["mean"].mean()
    level_members = [
        name
        for name in fitted.members
        if config.candidates[name].kind not in ("gbm", "seasonal_naive")
    ]
    assert level_members, f"no level-extrapolating member in {sorted(fitted.members)}"
    for name in level_members:
        member = fitted.members[name]
        member_same, member_higher = with_history(member, 1.0), with_history(member, 1.5)
        assert (member_higher["mean"] > member_same["mean"]).all(), name
