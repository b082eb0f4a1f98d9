"""The backtest stage: rolling-origin cross-validation of every candidate in a model
folder, then the selection rule.

Windows are counted back from each series' own end, so series of different lengths
(or ending on different dates) are all tested on their latest data. ``run`` is the
stage's I/O; the rest is pure (frames in, frames out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tsops.core import progress
from tsops.core.config import ModelConfig, load
from tsops.core.io import atomic_dir, read_series, write_json, write_parquet
from tsops.core.metrics import MAE_SCALE_COL, MODEL_COL, MSE_SCALE_COL, naive_scales, score
from tsops.core.schema import CUTOFF_COL, ID_COL, TARGET_COL, TIME_COL, sort_frame
from tsops.forecasters import ForecasterFactory, candidate_factories
from tsops.pipeline.selection import select, with_rules

log = logging.getLogger(__name__)


Progress = Callable[[str], None] | None


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
    return pd.DataFrame(rows, columns=[ID_COL, CUTOFF_COL, MAE_SCALE_COL, MSE_SCALE_COL])


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


def on_windows(
    df: pd.DataFrame,
    factories: dict[str, ForecasterFactory],
    config: ModelConfig,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``cross_validation`` of ``factories`` on the windows, levels and season of ``config``."""
    return cross_validation(
        df,
        factories,
        h=config.horizon,
        n_windows=config.backtest.windows,
        step=config.step,
        levels=config.levels,
        season_length=config.season_length,
        min_train_length=config.min_train_length,
        on_progress=on_progress,
        tracker=tracker,
    )


def run_backtest(
    df: pd.DataFrame,
    config: ModelConfig,
    n_jobs: int | None = None,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validate every candidate of ``config`` on ``df`` (``tracker``: see
    ``cross_validation``)."""
    factories = candidate_factories(
        config.candidates,
        freq=config.freq,
        season_length=config.season_length,
        seed=config.seed,
        n_jobs=n_jobs,
    )
    return on_windows(df, factories, config, on_progress, tracker)


def candidate_summary(tracker: progress.Tracker, overall: pd.DataFrame) -> dict[str, dict]:
    """Per candidate: series fitted, seconds, series/s, and backtest sMAPE / MASE
    (``overall``: metrics indexed by model)."""
    out = {}
    for name, stats in tracker.steps.items():
        row = overall.loc[name] if name in overall.index else None
        rate = stats.rate
        out[name] = {
            "series": stats.items,
            "seconds": round(stats.seconds, 3),
            "series_per_s": round(rate, 2) if rate is not None else None,
            "smape": None if row is None else round(float(row["smape"]), 4),
            "mase": None if row is None else round(float(row["mase"]), 4),
        }
    return out


def run(root: Path, name: str, n_jobs: int | None = None, progress_to: Progress = None) -> dict:
    """The backtest stage: backtest, select and write ``artifacts/<name>/backtest/``
    (``cv.parquet``: every candidate's and every rule's forecasts; ``scales.parquet``;
    ``selection.json``).

    Returns the selection (``rule``, ``members``), the wall ``seconds`` and, per
    candidate, the series fitted (windows x series), the seconds spent fitting and
    forecasting them, the rate and the backtest sMAPE and MASE (``candidates``).
    """
    config, paths = load(root, name)
    df = read_series(paths)
    tracker = progress.Tracker(description=f"backtest {name}")
    cv, scales = run_backtest(df, config, n_jobs, progress_to, tracker)
    selection = select(cv, scales, config)
    # the candidates' own scores, for the closing table; evaluate scores the rules
    overall = score(cv, scales, config.levels)["overall"].set_index(MODEL_COL)
    cv = with_rules(cv, scales, config)
    with atomic_dir(paths.backtest) as tmp:
        # the folder is replaced whole: its files are named as ModelPaths names them
        write_parquet(cv, tmp / paths.cv.name)
        write_parquet(scales, tmp / paths.scales.name)
        write_json(selection.to_dict(), tmp / paths.selection.name)
    return {
        "rule": selection.rule,
        "members": selection.members,
        "seconds": round(tracker.elapsed, 3),
        "candidates": candidate_summary(tracker, overall),
    }
