"""One gradient-boosted tree model across all series (a global model)."""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from tsops.core.schema import (
    ID_COL,
    MEAN_COL,
    TIME_COL,
    hi_col,
    lo_col,
    sort_frame,
    to_offset,
)
from tsops.forecasters.base import (
    Forecaster,
    Histories,
    SeriesForecast,
    splice_history,
    split_series,
    wanted_ids,
)
from tsops.forecasters.features import (
    TrainingSet,
    calendar_features,
    default_spec,
    last_windows,
    min_observations,
    training_matrix,
    window_features,
)
from tsops.forecasters.trees import TreeEnsemble

#: resolution of the stored calibration-error quantile function
_GRID = np.linspace(0.0, 1.0, 401)

#: most rows per step evaluated with ``TreeEnsemble``: it tests every split of every
#: tree per row (6,000 for 200 trees of 31 leaves), which beats scikit-learn's one call
#: per tree for the few series of a request, not for the whole panel at once
_ENSEMBLE_ROWS = 32

#: sets of interval levels whose calibrated half-widths a fitted model keeps
_KEPT_LEVEL_SETS = 32


class GlobalGBM(Forecaster):
    """Gradient-boosted trees on lag, rolling and calendar features, forecast recursively.

    Every series contributes rows to one model; windows are scaled by their own
    recent level (``tsops.forecasters.features``), so the model learns shapes, not magnitudes.
    Forecasts are recursive: each step's prediction becomes the next step's lag 1. For
    the few series of a request, the steps run on arrays: the trees evaluated all at
    once (``tsops.forecasters.trees``) instead of one scikit-learn call per tree, the
    features of complete windows in a few operations and the timestamps computed once;
    the numbers are the same as scikit-learn's ``predict`` gives, bit for bit.

    Intervals are split-conformal per horizon step. ``fit`` first holds out the last
    ``calibration_horizon`` points of every series, fits on the rest and forecasts
    the held-out points from every origin inside them (observed values feed later
    origins, as history does at serving time). The absolute errors, divided by the
    scale of the window at the origin so that they transfer across series, give one
    empirical quantile per step and level (with the finite-sample correction
    ``ceil((n + 1) level) / n``); the model is then refitted on all data. Widths are
    made non-decreasing in the step; for steps beyond the calibration horizon the
    last width grows like ``sqrt(step / calibration_horizon)``, the random-walk rate,
    which is an extrapolation, not a calibrated quantity.

    Parameters
    ----------
    freq, season_length:
        Frequency alias and observations per season of the series.
    lags:
        Number of lags (1..lags) or an explicit list; default ``max(season_length, 4)``.
    windows:
        Rolling mean / std window lengths; default 3 and one season.
    calendar:
        Add calendar features of the target timestamp (month, quarter, weekday, ...).
    calibration_horizon:
        Held-out points per series for the intervals; default ``2 * season_length``,
        or 12 without seasonality.
    max_iter, learning_rate, max_leaf_nodes, max_depth, min_samples_leaf,
    l2_regularization, random_state:
        Passed to ``HistGradientBoostingRegressor`` (early stopping off, so the fit is
        deterministic for a given ``random_state``); ``random_state`` defaults to ``seed``.
    seed:
        The model's seed (model.yaml's top-level ``seed``).
    n_jobs:
        OpenMP threads for the tree fits; 1 unless a number above 1 is given.
    """

    def __init__(
        self,
        freq: str,
        season_length: int = 1,
        lags: int | Sequence[int] | None = None,
        windows: Sequence[int] | None = None,
        calendar: bool = True,
        calibration_horizon: int | None = None,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 31,
        max_depth: int | None = None,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        random_state: int | None = None,
        seed: int = 0,
        n_jobs: int | None = 1,
    ):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        if calibration_horizon is not None and int(calibration_horizon) < 1:
            raise ValueError(f"calibration_horizon must be >= 1, got {calibration_horizon!r}")
        to_offset(freq)  # an unknown alias fails here, not after a fit
        self.freq = freq
        self.season_length = int(season_length)
        self.spec = default_spec(freq, self.season_length, lags, windows, calendar)
        self.calibration_horizon = int(
            calibration_horizon or (2 * self.season_length if self.season_length > 1 else 12)
        )
        self.hyperparams = {
            "max_iter": int(max_iter),
            "learning_rate": float(learning_rate),
            "max_leaf_nodes": max_leaf_nodes,
            "max_depth": max_depth,
            "min_samples_leaf": int(min_samples_leaf),
            "l2_regularization": float(l2_regularization),
            "random_state": int(seed if random_state is None else random_state),
        }
        self.n_jobs = n_jobs
        #: shortest gap-leaving history a forecast can start from: one scale window
        self.min_length = min_observations(self.spec)

    # -- fitting -----------------------------------------------------------------------

    def fit(self, df: pd.DataFrame) -> Self:
        df = sort_frame(df)
        ids, arrays, ends = split_series(df)
        if not ids:
            raise ValueError("GlobalGBM.fit got an empty frame: give at least one series")
        self.y_ = dict(zip(ids, arrays, strict=True))
        self._cutoffs_ = pd.Series(ends, index=pd.Index(ids, name=ID_COL), name=TIME_COL)
        with self._threads():
            self._calibrate(df)
            train = training_matrix(df, self.spec)
            self.model_ = self._fit_model(train)
            if self.error_counts_.max(initial=0) == 0:
                self._calibrate_in_sample(train)
        return self

    def _fit_model(self, train: TrainingSet) -> HistGradientBoostingRegressor:
        if len(train.target) == 0:
            raise ValueError(
                "GlobalGBM needs at least one series with two or more observations to fit"
            )
        X = train.X
        empty = np.isnan(X).all(axis=0)
        if empty.any():
            # A lag longer than every training series is all NaN, and scikit-learn's
            # binning fails on a column without any value; a constant column gets no
            # split, so the feature is ignored as it should be.
            X = X.copy()
            X[:, empty] = 0.0
        model = HistGradientBoostingRegressor(early_stopping=False, **self.hyperparams)
        return model.fit(X, train.target)

    def _calibrate(self, df: pd.DataFrame) -> None:
        """Per-step quantiles of scaled absolute errors on held-out tails (see class doc)."""
        h_cal = self.calibration_horizon
        self.error_grid_ = np.full((h_cal, len(_GRID)), np.nan)
        self.error_counts_ = np.zeros(h_cal, dtype=int)
        # keep at least one scale window (plus a target) to fit on in every series
        keep_min = min_observations(self.spec) + 1
        lengths = df.groupby(ID_COL, sort=True, observed=True)[TIME_COL].transform("size")
        position = df.groupby(ID_COL, sort=True, observed=True).cumcount()
        hold = np.clip(lengths - keep_min, 0, h_cal)
        fit_part = df[position < lengths - hold]
        train = training_matrix(fit_part, self.spec)
        if len(train.target) == 0 or hold.max() == 0:
            return
        model = self._fit_model(train)

        tails, origins, truths = [], [], []
        times_by_id = df.groupby(ID_COL, sort=True, observed=True)[TIME_COL]
        for uid, times in times_by_id:
            y, times = self.y_[str(uid)], pd.DatetimeIndex(times)
            n_hold = min(h_cal, max(len(y) - keep_min, 0))
            for origin in range(len(y) - n_hold, len(y)):
                tails.append(y[:origin])
                origins.append(times[origin - 1])
                truth = np.full(h_cal, np.nan)
                truth[: len(y) - origin] = y[origin : origin + h_cal]
                truths.append(truth)
        if not tails:
            return
        grid = _future_grid(pd.DatetimeIndex(origins), h_cal, self.freq)
        mean, scale = self._recursive(model, tails, grid, h_cal)
        errors = np.abs(np.vstack(truths) - mean) / scale[:, None]
        for step in range(h_cal):
            e = errors[:, step][np.isfinite(errors[:, step])]
            if e.size:
                self.error_grid_[step] = np.quantile(e, _GRID)
                self.error_counts_[step] = e.size
        self._fill_missing_steps()

    def _calibrate_in_sample(self, train: TrainingSet) -> None:
        """Fallback when no series is long enough to hold points out: in-sample residuals."""
        resid = np.abs(train.target - self.model_.predict(train.X))
        self.error_grid_[0] = np.quantile(resid, _GRID)
        self.error_counts_[0] = resid.size
        self._fill_missing_steps()

    def _fill_missing_steps(self) -> None:
        # Later steps have fewer held-out errors; a step with none borrows the last
        # calibrated one with random-walk (sqrt) growth, as beyond the horizon.
        last = None
        for step in range(len(self.error_counts_)):
            if self.error_counts_[step]:
                last = step
            elif last is not None:
                growth = math.sqrt((step + 1) / (last + 1))
                self.error_grid_[step] = self.error_grid_[last] * growth
                self.error_counts_[step] = self.error_counts_[last]

    @contextlib.contextmanager
    def _threads(self):
        from threadpoolctl import threadpool_limits

        # One OpenMP thread unless more are asked for explicitly: OpenMP threads spin while
        # waiting, and next to the per-series worker processes on the same cores they made
        # the fit ~50x slower (72 s instead of 1.4 s for 40 Tourism series on 2 cores).
        n = self.n_jobs if self.n_jobs is not None and self.n_jobs > 1 else 1
        with threadpool_limits(limits=n, user_api="openmp"):
            yield

    # -- forecasting ---------------------------------------------------------------------

    def _recursive(
        self,
        model: HistGradientBoostingRegressor,
        tails: Sequence[np.ndarray],
        grid: np.ndarray | None,
        h: int,
        trees: TreeEnsemble | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(series, h)`` recursive forecasts after each tail, and each origin's scale.

        ``grid`` holds the ``(series, h)`` timestamps being forecast, for the calendar
        features (computed once here rather than per step; ``None`` when the model has
        none). ``trees``, ``model``'s trees
        as arrays, evaluate the steps of a few series without scikit-learn's per-tree
        calls; many series go through ``model.predict``. Both give the same numbers.
        """
        lookback = self.spec.lookback
        buffer = np.empty((len(tails), lookback + h))
        buffer[:, :lookback] = last_windows(tails, lookback)
        calendar = None
        if self.spec.calendar and grid is not None:
            calendar = calendar_features(pd.DatetimeIndex(grid.ravel()), self.freq)
            calendar = calendar.reshape(len(tails), h, -1)
        fast = trees is not None and len(tails) <= _ENSEMBLE_ROWS
        predict = trees.predict if fast else model.predict
        origin_scale = np.ones(len(tails))
        with contextlib.nullcontext() if fast else self._threads():
            for step in range(h):
                # the last ``lookback`` values: the window of the step's target
                X, scale = window_features(buffer[:, step : lookback + step], self.spec)
                if calendar is not None:
                    X = np.hstack([X, calendar[:, step]])
                buffer[:, lookback + step] = predict(X) * scale
                if step == 0:
                    origin_scale = scale
        return buffer[:, lookback:], origin_scale

    def _served_trees(self) -> TreeEnsemble | None:
        """The fitted model's trees as arrays, built on first use (~0.2 s for 200 trees)
        and kept out of pickles (``__getstate__``): a model pickled without them, or by
        an older version, builds them when it first forecasts."""
        if "_trees_" not in self.__dict__:
            self._trees_ = TreeEnsemble.build(self.model_)
        return self._trees_

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_trees_", None)
        state.pop("_quantile_cache_", None)
        return state

    def _error_quantiles(self, h: int, levels: Sequence[float]) -> np.ndarray:
        """``(h, len(levels))`` scaled half-widths, non-decreasing in step and level."""
        h_cal = self.calibration_horizon
        calibrated = self._calibrated_quantiles(tuple(levels))
        if h <= h_cal:
            return calibrated[:h]
        growth = np.sqrt(np.arange(h_cal + 1, h + 1) / h_cal)[:, None]
        return np.vstack([calibrated, calibrated[-1] * growth])

    def _calibrated_quantiles(self, levels: tuple[float, ...]) -> np.ndarray:
        """``(calibration_horizon, len(levels))`` half-widths, kept per set of levels:
        requests mostly ask for the same levels, and the per-step interpolation cost
        more than the rest of a history forecast. At most ``_KEPT_LEVEL_SETS`` sets
        are kept (levels come from clients); the cache is not pickled."""
        cache = self.__dict__.setdefault("_quantile_cache_", {})
        found = cache.get(levels)
        if found is not None:
            return found
        h_cal = self.calibration_horizon
        calibrated = np.zeros((h_cal, len(levels)))
        for step in range(h_cal):
            count = max(int(self.error_counts_[step]), 1)
            for k, level in enumerate(levels):
                prob = min(1.0, math.ceil((count + 1) * level / 100.0) / count)
                calibrated[step, k] = np.interp(prob, _GRID, self.error_grid_[step])
        calibrated = np.maximum.accumulate(np.nan_to_num(calibrated), axis=0)
        calibrated.flags.writeable = False  # shared by every request with these levels
        if len(cache) >= _KEPT_LEVEL_SETS:
            cache.clear()
        cache[levels] = calibrated
        return calibrated

    def predict_series(
        self,
        h: int,
        levels: Sequence[float],
        histories: Histories | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[SeriesForecast]:
        histories = histories or {}
        wanted = wanted_ids(ids, histories, self.y_)
        if not wanted:
            return []
        tails, ends = [], []
        for uid in wanted:
            y, end = self.y_[uid], self._cutoffs_[uid]
            if uid in histories:
                y, end = splice_history(y, end, histories[uid], self.freq, uid, self.min_length)
            tails.append(y)
            ends.append(end)
        ends_index = pd.DatetimeIndex(ends)
        dates = [_dates_after(end, h, self.freq) for end in ends_index]
        # the timestamps as a grid only for calendar features
        grid = np.stack([d.to_numpy() for d in dates]) if self.spec.calendar else None
        mean, scale = self._recursive(self.model_, tails, grid, h, self._served_trees())
        half = self._error_quantiles(h, levels)[None, :, :] * scale[:, None, None]
        out = []
        for i, uid in enumerate(wanted):
            values = {MEAN_COL: mean[i]}
            for k, lev in enumerate(levels):
                values[lo_col(lev)] = mean[i] - half[i, :, k]
                values[hi_col(lev)] = mean[i] + half[i, :, k]
            out.append(SeriesForecast(uid, ends_index[i], dates[i], values))
        return out


def _shift(times: pd.DatetimeIndex, periods: int, freq: str) -> pd.DatetimeIndex:
    """``times`` moved ``periods`` steps of ``freq`` ahead (elementwise)."""
    with warnings.catch_warnings():
        # irregular offsets (e.g. business days) are applied elementwise, which is fine
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        return times + periods * to_offset(freq)


def _future_grid(ends: pd.DatetimeIndex, h: int, freq: str) -> np.ndarray:
    """``(series, h)`` forecast timestamps after each series' end: ``end + step * freq``."""
    if not len(ends):
        return np.empty((0, h), dtype=ends.dtype)
    return np.stack([_dates_after(end, h, freq).to_numpy() for end in ends])


def _dates_after(end: pd.Timestamp, h: int, freq: str) -> pd.DatetimeIndex:
    """The ``h`` timestamps after ``end``, in its unit (kept per end: a request's series
    mostly end on the few latest periods; an index cannot be changed in place)."""
    return _dates_after_kept(end, end.unit, h, freq)


@functools.lru_cache(maxsize=1024)
def _dates_after_kept(end: pd.Timestamp, unit: str, h: int, freq: str) -> pd.DatetimeIndex:
    # An end on the frequency's grid takes ``date_range``, which steps the same way as
    # adding offsets and costs one call instead of one per step (test_golden.py compares)
    offset = to_offset(freq)
    single = pd.DatetimeIndex([end]).as_unit(unit)
    if offset.is_on_offset(end):
        dates = pd.date_range(end + offset, periods=h, freq=offset).as_unit(unit).to_numpy()
    else:
        dates = np.concatenate([_shift(single, step, freq).to_numpy() for step in range(1, h + 1)])
    return pd.DatetimeIndex(dates)
