"""Forecast accuracy: MASE, sMAPE, RMSSE and interval coverage.

Scaled errors follow the M4 competition: MASE and RMSSE divide by the in-sample
error of the seasonal naive forecast on the data each forecast was made from, so
they compare across series of any scale; sMAPE is on the 0..200 scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col

MODEL_COL = "model"
STEP_COL = "step"
#: the in-sample seasonal naive errors scaled metrics divide by (see ``naive_scales``)
MAE_SCALE_COL = "mae_scale"
MSE_SCALE_COL = "mse_scale"
METRICS = ("mase", "smape", "rmsse")
#: the class of a series (``tsops.pipeline.classes``): each class has its own candidates,
#: selection and scores, and the gate decides on the regular class alone
CLASS_COL = "series_class"
REGULAR = "regular"
SHORT = "short"
INTERMITTENT = "intermittent"
#: every class, in the order tables and reports list them
CLASSES = (REGULAR, SHORT, INTERMITTENT)


def naive_scales(y: np.ndarray, season_length: int) -> tuple[float, float]:
    """Mean absolute and mean squared in-sample error of the seasonal naive forecast.

    Falls back to lag 1 when the series is shorter than two seasons, and to 1.0 for a
    flat series, where any scaled error would otherwise be infinite.
    """
    lag = season_length if len(y) > season_length else 1
    diffs = y[lag:] - y[:-lag] if len(y) > lag else np.array([])
    diffs = diffs[np.isfinite(diffs)]
    mae = float(np.mean(np.abs(diffs))) if diffs.size else 0.0
    mse = float(np.mean(diffs**2)) if diffs.size else 0.0
    if mae == 0.0 and lag != 1 and len(y) > 1:
        return naive_scales(y, 1)
    return (mae or 1.0), (mse or 1.0)


def pointwise_errors(
    cv: pd.DataFrame, scales: pd.DataFrame, levels: Sequence[float]
) -> pd.DataFrame:
    """One row per forecast point with its scaled errors and coverage flags.

    ``cv`` has ``unique_id, ds, cutoff, model, y, mean`` and interval columns;
    ``scales`` has ``unique_id, cutoff, mae_scale, mse_scale``.
    """
    df = cv.merge(scales, on=[ID_COL, CUTOFF_COL], how="left", validate="many_to_one")
    err = df[TARGET_COL].to_numpy() - df[MEAN_COL].to_numpy()
    denom = np.abs(df[TARGET_COL].to_numpy()) + np.abs(df[MEAN_COL].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        smape = np.where(denom == 0, 0.0, 200.0 * np.abs(err) / denom)
    out = df[[MODEL_COL, ID_COL, CUTOFF_COL, TIME_COL]].copy()
    out[STEP_COL] = df.groupby([MODEL_COL, ID_COL, CUTOFF_COL], sort=False).cumcount() + 1
    out["ase"] = np.abs(err) / df[MAE_SCALE_COL].to_numpy()
    out["sse"] = err**2 / df[MSE_SCALE_COL].to_numpy()
    out["smape"] = smape
    for level in levels:
        lo, hi = df[lo_col(level)].to_numpy(), df[hi_col(level)].to_numpy()
        y = df[TARGET_COL].to_numpy()
        out[f"coverage-{lo_col(level)[3:]}"] = ((y >= lo) & (y <= hi)).astype(float)
    return out


def _coverage_cols(points: pd.DataFrame) -> list[str]:
    return [c for c in points.columns if c.startswith("coverage-")]


def _aggregate(points: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    agg = points.groupby(keys, sort=True).agg(
        mase=("ase", "mean"),
        smape=("smape", "mean"),
        msse=("sse", "mean"),
        **{c: (c, "mean") for c in _coverage_cols(points)},
    )
    agg.insert(2, "rmsse", np.sqrt(agg.pop("msse")))
    return agg.reset_index()


def per_series(points: pd.DataFrame) -> pd.DataFrame:
    """Metrics per model and series, averaged over windows and horizon steps."""
    return _aggregate(points, [MODEL_COL, ID_COL])


def per_horizon(points: pd.DataFrame) -> pd.DataFrame:
    """Metrics per model and horizon step, averaged over series and windows."""
    return _aggregate(points, [MODEL_COL, STEP_COL])


def overall(series_metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per model: each metric averaged over series (M4 style)."""
    cols = [c for c in series_metrics.columns if c not in (MODEL_COL, ID_COL)]
    return series_metrics.groupby(MODEL_COL, sort=True)[cols].mean().reset_index()


def score(
    cv: pd.DataFrame, scales: pd.DataFrame, levels: Sequence[float]
) -> dict[str, pd.DataFrame]:
    """Every model's metrics in a backtest: ``overall``, ``per_series`` and ``per_horizon``."""
    points = pointwise_errors(cv, scales, levels)
    series = per_series(points)
    return {"overall": overall(series), "per_series": series, "per_horizon": per_horizon(points)}
