"""Rolling-origin cross-validation of every candidate in a model folder.

Windows are counted back from each series' own end, so series of different lengths
(or ending on different dates) are all tested on their latest data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsops.core import progress
from tsops.core.config import ModelConfig
from tsops.core.metrics import MODEL_COL, naive_scales
from tsops.core.schema import CUTOFF_COL, ID_COL, TARGET_COL, TIME_COL, sort_frame
from tsops.forecasters import Forecaster, make_forecaster

log = logging.getLogger(__name__)

ForecasterFactory = Callable[[], Forecaster]


@dataclass(frozen=True)
class Window:
    """A rolling origin: ``offset`` points are cut from the end of every series."""

    index: int
    offset: int


def windows(h: int, n_windows: int, step: int) -> list[Window]:
    """Oldest first; the last window ends exactly at the end of the data."""
    return [Window(i, h + step * (n_windows - 1 - i)) for i in range(n_windows)]


def split_at(
    df: pd.DataFrame, offset: int, h: int, min_train_length: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (all but the last ``offset`` points of each series) and the next ``h`` points.

    A series whose training part would be shorter than ``min_train_length`` sits this
    window out: scoring a model fitted on a fraction of a season says little, and
    panels mix short and long series (a quarter of the M3 monthly series are too
    short for the oldest of three windows).
    """
    grouped = df.groupby(ID_COL, sort=False)
    position_from_end = grouped.cumcount(ascending=False)
    long_enough = grouped[TARGET_COL].transform("size") - offset >= min_train_length
    train = df[(position_from_end >= offset) & long_enough]
    test = df[(position_from_end < offset) & (position_from_end >= offset - h) & long_enough]
    return train, test


def series_per_window(
    df: pd.DataFrame, h: int, n_windows: int, step: int, min_train_length: int = 1
) -> list[int]:
    """How many series each window fits (oldest first), as ``split_at`` cuts them."""
    lengths = df.groupby(ID_COL, sort=False).size()
    return [
        int((lengths - w.offset >= min_train_length).sum()) for w in windows(h, n_windows, step)
    ]


def scales_for(train: pd.DataFrame, season_length: int, cutoff_label: pd.Series) -> pd.DataFrame:
    """In-sample seasonal naive MAE/MSE per series of one training split."""
    rows = []
    for uid, group in train.groupby(ID_COL, sort=True):
        mae, mse = naive_scales(group[TARGET_COL].to_numpy(dtype=float), season_length)
        rows.append((uid, cutoff_label[uid], mae, mse))
    return pd.DataFrame(rows, columns=[ID_COL, CUTOFF_COL, "mae_scale", "mse_scale"])


def cross_validation(
    df: pd.DataFrame,
    factories: dict[str, ForecasterFactory],
    *,
    h: int,
    n_windows: int,
    step: int,
    levels: Sequence[float],
    season_length: int,
    min_train_length: int = 1,
    on_progress: Callable[[str], None] | None = None,
    tracker: progress.Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts of every candidate at every origin, joined with the actuals.

    Returns ``cv`` (``unique_id, ds, cutoff, model, y, mean, lo-*, hi-*``) and the
    naive ``scales`` per series and cutoff that scaled metrics divide by.

    Progress goes to ``tracker`` (a new one if not given), counting series fits out of
    windows x candidates x series; its ``steps`` hold the seconds and series fitted per
    candidate (fit and forecast) afterwards.
    """
    df = sort_frame(df)
    tracker = tracker or progress.Tracker(description="backtest")
    tracker.total = sum(series_per_window(df, h, n_windows, step, min_train_length)) * len(
        factories
    )
    cv_parts, scale_parts = [], []
    with progress.track(tracker):
        for window in windows(h, n_windows, step):
            train, test = split_at(df, window.offset, h, min_train_length)
            if train.empty:
                # every series is too short for this window: nothing to fit or score
                log.info(
                    "window %d/%d: no series long enough, skipped", window.index + 1, n_windows
                )
                continue
            cutoffs = train.groupby(ID_COL, sort=True)[TIME_COL].last().rename(CUTOFF_COL)
            scale_parts.append(scales_for(train, season_length, cutoffs))
            actuals = test[[ID_COL, TIME_COL, TARGET_COL]]
            n_series = int(cutoffs.size)
            for name, factory in factories.items():
                started = time.perf_counter()
                with tracker.step(name, n_series):
                    forecast = factory().fit(train).predict(h, level=levels)
                forecast = forecast.merge(actuals, on=[ID_COL, TIME_COL], how="inner")
                forecast[CUTOFF_COL] = forecast[ID_COL].map(cutoffs)
                forecast.insert(0, MODEL_COL, name)
                cv_parts.append(forecast)
                message = (
                    f"window {window.index + 1}/{n_windows} {name}: "
                    f"{n_series} series in {time.perf_counter() - started:.1f}s"
                )
                log.info(message)
                if on_progress:
                    on_progress(message)
    cv = pd.concat(cv_parts, ignore_index=True)
    front = [MODEL_COL, ID_COL, TIME_COL, CUTOFF_COL, TARGET_COL]
    cv = cv[front + [c for c in cv.columns if c not in front]]
    return cv, pd.concat(scale_parts, ignore_index=True)


def candidate_factories(
    config: ModelConfig, names: Sequence[str] | None = None, n_jobs: int | None = None
) -> dict[str, ForecasterFactory]:
    """A zero-argument constructor per candidate declared in model.yaml."""
    factories = {}
    for name in names or list(config.candidates):
        spec = config.candidates[name]

        def factory(spec=spec) -> Forecaster:
            return make_forecaster(
                spec.kind,
                dict(spec.params),
                freq=config.freq,
                season_length=config.season_length,
                n_jobs=n_jobs,
            )

        factories[name] = factory
    return factories


def run_backtest(
    df: pd.DataFrame,
    config: ModelConfig,
    n_jobs: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    tracker: progress.Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validate every candidate of ``config`` on ``df`` (``tracker``: see
    ``cross_validation``)."""
    np.random.seed(config.seed)
    return cross_validation(
        df,
        candidate_factories(config, n_jobs=n_jobs),
        h=config.horizon,
        n_windows=config.backtest.windows,
        step=config.step,
        levels=config.levels,
        season_length=config.season_length,
        min_train_length=config.min_train_length,
        on_progress=on_progress,
        tracker=tracker,
    )
