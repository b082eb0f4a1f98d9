import numpy as np
import pandas as pd
import pytest

from tsops.core.metrics import naive_scales, per_horizon, per_series, pointwise_errors


def test_naive_scales_seasonal_and_fallbacks():
    y = np.array([1, 2, 3, 4, 2, 4, 6, 8], dtype=float)
    mae, mse = naive_scales(y, 4)
    assert mae == pytest.approx(2.5)
    assert mse == pytest.approx(np.mean([1, 4, 9, 16]))
    # shorter than a season: lag 1
    assert naive_scales(np.array([1.0, 3.0]), 12)[0] == pytest.approx(2.0)
    # flat series: a scale of 1 keeps scaled errors finite
    assert naive_scales(np.ones(10), 4) == (1.0, 1.0)


def _cv():
    cutoff = pd.Timestamp("2020-01-01")
    rows = []
    for step, (y, mean) in enumerate([(10.0, 8.0), (10.0, 12.0), (0.0, 0.0)], start=1):
        rows.append(
            {
                "model": "m",
                "unique_id": "a",
                "ds": cutoff + pd.DateOffset(months=step),
                "cutoff": cutoff,
                "y": y,
                "mean": mean,
                "lo-80": mean - 1,
                "hi-80": mean + 1,
            }
        )
    return pd.DataFrame(rows)


def test_pointwise_and_aggregates():
    scales = pd.DataFrame(
        {
            "unique_id": ["a"],
            "cutoff": [pd.Timestamp("2020-01-01")],
            "mae_scale": [2.0],
            "mse_scale": [4.0],
        }
    )
    points = pointwise_errors(_cv(), scales, [80])
    assert points["step"].tolist() == [1, 2, 3]
    assert points["ase"].tolist() == [1.0, 1.0, 0.0]
    assert points["smape"].tolist() == pytest.approx([200 * 2 / 18, 200 * 2 / 22, 0.0])
    assert points["coverage-80"].tolist() == [0.0, 0.0, 1.0]
    series = per_series(points)
    assert series.loc[0, "mase"] == pytest.approx(2 / 3)
    assert series.loc[0, "rmsse"] == pytest.approx(np.sqrt(2 / 3))
    horizon = per_horizon(points)
    assert horizon["mase"].tolist() == [1.0, 1.0, 0.0]
