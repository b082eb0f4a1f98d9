"""The backtest stage: rolling-origin cross-validation of every candidate in a model
folder, then the selection rule, for each class of series apart
(``tsops.pipeline.classes``: regular, short, intermittent).

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
from tsops.pipeline import classes as series_classes
from tsops.pipeline.classes import CLASS_COL, REGULAR
from tsops.pipeline.selection import SELECTED, Selection, select, with_rules

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
    scale_season_length: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts of every candidate at every origin, joined with the actuals.

    Returns ``cv`` (``unique_id, ds, cutoff, model, y, mean, lo-*, hi-*``) and the
    naive ``scales`` per series and cutoff that scaled metrics divide by (the naive
    forecast of ``scale_season_length``, default ``season_length``). Both are empty
    when no series is long enough for any window.

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
            scale_parts.append(scales_for(train, scale_season_length or season_length, cutoffs))
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
    if not cv_parts:
        return _no_forecasts(levels), pd.DataFrame(
            columns=[ID_COL, CUTOFF_COL, MAE_SCALE_COL, MSE_SCALE_COL]
        )
    cv = pd.concat(cv_parts, ignore_index=True)
    front = [MODEL_COL, ID_COL, TIME_COL, CUTOFF_COL, TARGET_COL]
    cv = cv[front + [c for c in cv.columns if c not in front]]
    return cv, pd.concat(scale_parts, ignore_index=True)


def _no_forecasts(levels: Sequence[float]) -> pd.DataFrame:
    from tsops.core.schema import MEAN_COL, interval_columns

    columns = [MODEL_COL, ID_COL, TIME_COL, CUTOFF_COL, TARGET_COL, MEAN_COL]
    return pd.DataFrame(columns=[*columns, *interval_columns(levels)])


def on_windows(
    df: pd.DataFrame,
    factories: dict[str, ForecasterFactory],
    config: ModelConfig,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
    series_class: str = REGULAR,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``cross_validation`` of ``factories`` on the windows, levels and season of ``config``
    (the least training part and the metrics' scale of ``series_class``)."""
    return cross_validation(
        df,
        factories,
        h=config.horizon,
        n_windows=config.backtest.windows,
        step=config.step,
        levels=config.levels,
        season_length=config.season_length,
        min_train_length=series_classes.min_train_length(config, series_class),
        on_progress=on_progress,
        tracker=tracker,
        scale_season_length=series_classes.scale_season(config, series_class),
    )


def run_backtest(
    df: pd.DataFrame,
    config: ModelConfig,
    n_jobs: int | None = None,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
    series_class: str = REGULAR,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validate every candidate of ``config`` on ``df`` (``tracker``: see
    ``cross_validation``); ``config`` and ``df`` of one class (``series_class``) when
    the panel has several, see ``backtest_classes``."""
    factories = candidate_factories(
        config.candidates,
        freq=config.freq,
        season_length=config.season_length,
        seed=config.seed,
        n_jobs=n_jobs,
    )
    return on_windows(df, factories, config, on_progress, tracker, series_class)


@dataclass
class ClassBacktest:
    """One class' backtest: ``config`` as the class reads it (``classes.class_config``),
    its ``cv`` (candidates, every rule and ``selected``) and ``scales``, the
    ``selection`` train fits, the ``tracker`` that timed it and the candidates' own
    scores (``overall``, indexed by model; empty when no window scored the class)."""

    series_class: str
    config: ModelConfig
    cv: pd.DataFrame
    scales: pd.DataFrame
    selection: Selection
    tracker: progress.Tracker
    overall: pd.DataFrame


def backtest_class(
    df: pd.DataFrame,
    config: ModelConfig,
    series_class: str,
    *,
    nonnegative: bool,
    n_jobs: int | None = None,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
) -> ClassBacktest:
    """Backtest and select within one class (``df``: its series only).

    With ``nonnegative``, the forecasts the registered model would have made (the
    configured rule's and ``selected``) are raised to zero where below it, as the
    registered model raises its own; the candidates' rows and the other rules' stay as
    their models forecast, the evidence the choice of rule is made on.
    """
    own = series_classes.class_config(config, series_class)
    tracker = tracker or progress.Tracker(description=f"backtest ({series_class} series)")
    cv, scales = run_backtest(df, own, n_jobs, on_progress, tracker, series_class)
    if cv.empty:
        # no series of the class is long enough for a window: forecast, but unscored
        selection = default_selection(own)
        overall = pd.DataFrame(columns=[MODEL_COL]).set_index(MODEL_COL)
    else:
        selection = fill_choice(select(cv, scales, own), df)
        overall = score(cv, scales, own.levels)["overall"].set_index(MODEL_COL)
        cv = with_rules(cv, scales, own)
        if nonnegative:
            registered = cv[MODEL_COL].isin([SELECTED, own.selection.rule])
            cv = series_classes.clip_at_zero(cv, own.levels, registered)
    cv[CLASS_COL] = series_class
    return ClassBacktest(series_class, own, cv, scales, selection, tracker, overall)


def default_selection(config: ModelConfig) -> Selection:
    """The selection of a class no window could score: an ensemble rule as configured;
    a choosing rule falls back to its first candidate other than the baseline."""
    from tsops.pipeline.selection import ENSEMBLES, ensemble_members

    rule, metric = config.selection.rule, config.selection.metric
    if rule in ENSEMBLES:
        return Selection(rule, ensemble_members(config), metric=metric)
    return Selection("best_overall", ensemble_members(config)[:1], metric=metric)


def fill_choice(selection: Selection, df: pd.DataFrame) -> Selection:
    """A ``per_series`` selection with a member for every series of ``df``: series no
    window scored (too short for one) get the member most series chose."""
    if selection.rule != "per_series":
        return selection
    ids = sorted(df[ID_COL].astype(str).unique())
    missing = [uid for uid in ids if uid not in selection.choice]
    if not missing:
        return selection
    counts = pd.Series(list(selection.choice.values())).value_counts()
    usual = str(counts.index[0]) if len(counts) else selection.members[0]
    choice = dict(selection.choice) | dict.fromkeys(missing, usual)
    members = selection.members if usual in selection.members else [*selection.members, usual]
    return Selection(selection.rule, members, choice, selection.metric)


def backtest_classes(
    df: pd.DataFrame,
    config: ModelConfig,
    n_jobs: int | None = None,
    on_progress: Progress = None,
    tracker: progress.Tracker | None = None,
) -> tuple[pd.Series, dict[str, ClassBacktest]]:
    """The class of every series and each class' backtest (regular first)."""
    classes = series_classes.classify(df, config)
    keep_positive = series_classes.nonnegative(df, config)
    out = {}
    for series_class, frame in series_classes.class_frames(df, classes).items():
        out[series_class] = backtest_class(
            frame,
            config,
            series_class,
            nonnegative=keep_positive,
            n_jobs=n_jobs,
            on_progress=on_progress,
            tracker=tracker if series_class == REGULAR else None,
        )
    return classes, out


def selection_document(classes: pd.Series, backtests: dict[str, ClassBacktest]) -> dict:
    """``selection.json``: the gated class' selection at the top (what the gate and a
    champion's spec read), every class' selection under ``classes``, and the class of each
    series that is not regular under ``series_class``."""
    gated = series_classes.gated_class(backtests)
    return backtests[gated].selection.to_dict() | {
        "gated_class": gated,
        "classes": {c: b.selection.to_dict() for c, b in backtests.items()},
        "series_class": {uid: c for uid, c in classes.items() if c != REGULAR},
    }


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
    """The backtest stage: classify the series, backtest and select each class and write
    ``artifacts/<name>/backtest/`` (``cv.parquet``: every candidate's and every rule's
    forecasts, with the class of their series; ``scales.parquet``; ``selection.json``, see
    ``selection_document``).

    Returns the gated class' selection (``rule``, ``members``), the wall ``seconds``, per
    candidate of the regular class the series fitted (windows x series), the seconds spent
    fitting and forecasting them, the rate and the backtest sMAPE and MASE
    (``candidates``), and the other classes' series counts and candidates (``classes``).
    """
    config, paths = load(root, name)
    df = read_series(paths)
    started = time.perf_counter()
    tracker = progress.Tracker(description=f"backtest {name}")
    classes, backtests = backtest_classes(df, config, n_jobs, progress_to, tracker)
    document = selection_document(classes, backtests)
    # a class no window could score adds no rows (and its empty frame no dtypes)
    scored = [b for b in backtests.values() if not b.cv.empty] or list(backtests.values())[:1]
    cv = pd.concat([b.cv for b in scored], ignore_index=True)
    scales = pd.concat([b.scales for b in scored])
    with atomic_dir(paths.backtest) as tmp:
        # the folder is replaced whole: its files are named as ModelPaths names them
        write_parquet(cv, tmp / paths.cv.name)
        write_parquet(scales.reset_index(drop=True), tmp / paths.scales.name)
        write_json(document, tmp / paths.selection.name)
    gated = backtests[document["gated_class"]]
    counts = series_classes.class_counts(classes)
    return {
        "rule": gated.selection.rule,
        "members": gated.selection.members,
        "seconds": round(time.perf_counter() - started, 3),
        "candidates": candidate_summary(gated.tracker, gated.overall),
        "classes": {
            c: {
                "series": counts[c],
                "rule": b.selection.rule,
                "members": b.selection.members,
                "candidates": candidate_summary(b.tracker, b.overall),
            }
            for c, b in backtests.items()
            if c != gated.series_class
        },
    }
