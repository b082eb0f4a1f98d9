"""Features of the global model, shared by training and serving.

A target ``y[t]`` is described by the ``lookback`` values before it (its *window*)
and by its timestamp. Every feature comes from ``feature_matrix(windows, ds)``:
``training_matrix`` slides a window along each training series, ``next_step_features``
takes the last window of a series for the next recursive step. Both call the same
function on the same kind of input, so training and serving cannot disagree.

Windows are scaled by their own recent level (mean absolute value over the last
season), which makes series of different magnitudes and trending series look
alike to one model; the target is divided by the same scale and forecasts are
multiplied back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL


@dataclass(frozen=True)
class FeatureSpec:
    """Which features the global model uses.

    ``lags`` are the lags of the scaled series used directly; ``windows`` the
    lengths of the rolling mean / standard deviation; ``scale_window`` how many
    recent values set a window's scale (default: one season, at least 4).
    """

    freq: str
    season_length: int = 1
    lags: tuple[int, ...] = (1,)
    windows: tuple[int, ...] = ()
    calendar: bool = True
    scale_window: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.lags or min(self.lags) < 1:
            raise ValueError(f"lags must be positive integers, got {self.lags!r}")
        if self.windows and min(self.windows) < 2:
            raise ValueError(f"rolling windows need at least 2 values, got {self.windows!r}")
        object.__setattr__(self, "lags", tuple(sorted({int(v) for v in self.lags})))
        object.__setattr__(self, "windows", tuple(sorted({int(v) for v in self.windows})))
        if self.scale_window <= 0:
            object.__setattr__(self, "scale_window", max(int(self.season_length), 4))

    @property
    def lookback(self) -> int:
        """Values before a target that its features depend on."""
        return max(*self.lags, *self.windows, self.scale_window)

    @property
    def names(self) -> list[str]:
        cols = [f"lag_{lag}" for lag in self.lags]
        for w in self.windows:
            cols += [f"mean_{w}", f"std_{w}"]
        return cols + (calendar_names(self.freq) if self.calendar else [])


def default_spec(
    freq: str,
    season_length: int,
    lags: int | Sequence[int] | None = None,
    windows: Sequence[int] | None = None,
    calendar: bool = True,
) -> FeatureSpec:
    """Lags 1..max(season, 4) and rolling windows of 3 and one season unless given."""
    if lags is None:
        lags = max(season_length, 4)
    lag_list = list(range(1, int(lags) + 1)) if isinstance(lags, int | np.integer) else list(lags)
    if windows is None:
        windows = sorted({3, season_length} - {1})
    return FeatureSpec(
        freq=freq,
        season_length=season_length,
        lags=tuple(lag_list),
        windows=tuple(windows),
        calendar=calendar,
    )


# -- the one code path ----------------------------------------------------------------------


def window_scale(windows: np.ndarray, scale_window: int) -> np.ndarray:
    """Per-row scale: mean |y| over the last ``scale_window`` values of each window.

    Zeros (intermittent or all-zero stretches) and missing values would make that
    0 or NaN; such rows fall back to the mean |y| over the whole window, then to 1.
    """
    with np.errstate(all="ignore"):
        recent = _nanmean(np.abs(windows[:, -scale_window:]))
        whole = _nanmean(np.abs(windows))
    scale = np.where(recent > 0, recent, whole)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def window_features(windows: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Lag and rolling features of raw windows ``(rows, lookback)`` and their scales."""
    complete = _complete_window_features(windows, spec)
    if complete is not None:
        return complete
    scale = window_scale(windows, spec.scale_window)
    scaled = windows / scale[:, None]
    cols = [scaled[:, -lag] for lag in spec.lags]
    with np.errstate(all="ignore"):
        for w in spec.windows:
            recent = scaled[:, -w:]
            cols += [_nanmean(recent), _nanstd(recent)]
    return np.column_stack(cols), scale


def _complete_window_features(
    windows: np.ndarray, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray] | None:
    """``window_features`` of windows of moderate finite values, in a third of the array
    operations (a recursive forecast computes features once per step); ``None`` for
    other windows, which take the NaN-aware path.

    Without NaN, every count is the window length and every NaN-skipping sum is the
    plain sum of the same values in the same (pairwise) order, so the features are the
    same bit for bit (tests/forecasters/test_features.py compares both paths). Values
    of 1e300 or more are left to the NaN-aware path: their sums can overflow to
    ``inf - inf``, a NaN it skips and this path would not.
    """
    width = windows.shape[1]
    if width < 2:
        return None
    lag_columns, counts = _layout(spec, width)
    with np.errstate(all="ignore"):
        # a NaN or inf in the windows reaches the scaled windows, checked below
        magnitude = np.abs(windows)
        recent = np.add.reduce(magnitude[:, -spec.scale_window :], axis=1)
        recent /= min(spec.scale_window, width)
        whole = np.add.reduce(magnitude, axis=1) / width
        scale = np.where(recent > 0, recent, whole)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        scaled = windows / scale[:, None]
        if not np.abs(scaled).max() < _MODERATE:  # also true for NaN
            return None
        n_lags, n_windows = len(spec.lags), len(spec.windows)
        values = np.empty((len(windows), n_lags + 2 * n_windows))
        values[:, :n_lags] = scaled[:, lag_columns]
        # means and standard deviations of all windows, each divided in one operation
        # (the same division per element as one window at a time)
        sums = np.empty((len(windows), n_windows))
        for k, w in enumerate(spec.windows):
            np.add.reduce(scaled[:, -w:], axis=1, out=sums[:, k])
        means = sums / counts
        for k, w in enumerate(spec.windows):
            deviation = scaled[:, -w:] - means[:, k : k + 1]
            np.add.reduce(np.square(deviation, out=deviation), axis=1, out=sums[:, k])
        values[:, n_lags::2] = means
        values[:, n_lags + 1 :: 2] = np.sqrt(sums / counts)
    return values, scale


#: below this, sums of a window's values cannot overflow (see _complete_window_features)
_MODERATE = 1e300


@functools.lru_cache(maxsize=64)
def _layout(spec: FeatureSpec, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The lag columns of windows ``width`` wide and the rolling windows' value counts."""
    lag_columns = np.asarray([width - lag for lag in spec.lags], dtype=np.intp)
    counts = np.minimum(spec.windows, width).astype(float)
    lag_columns.flags.writeable = counts.flags.writeable = False
    return lag_columns, counts


def calendar_names(freq: str) -> list[str]:
    """Calendar features that vary within a season at frequency ``freq``."""
    offset = to_offset(freq)
    yearly = offsets.YearBegin | offsets.YearEnd | offsets.BYearBegin | offsets.BYearEnd
    quarterly = (
        offsets.QuarterBegin | offsets.QuarterEnd | offsets.BQuarterBegin | offsets.BQuarterEnd
    )
    if isinstance(offset, yearly):
        return []
    if isinstance(offset, quarterly):
        return ["quarter"]
    if isinstance(offset, offsets.Week):
        return ["week_of_year"]
    if isinstance(offset, offsets.Day | offsets.BusinessDay | offsets.CustomBusinessDay):
        return ["day_of_week", "month"]
    if isinstance(offset, offsets.Tick):  # hours, minutes, seconds
        return ["hour", "day_of_week"]
    return ["month"]  # month-based offsets (MS, ME, SMS, business months)


def calendar_features(ds: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``(rows, len(calendar_names(freq)))`` calendar values of the target timestamps."""
    ds = pd.DatetimeIndex(ds)
    getters = {
        "quarter": lambda d: d.quarter,
        "month": lambda d: d.month,
        "week_of_year": lambda d: d.isocalendar().week.to_numpy(),
        "day_of_week": lambda d: d.dayofweek,
        "hour": lambda d: d.hour,
    }
    names = calendar_names(freq)
    if not names:
        return np.empty((len(ds), 0))
    return np.column_stack([np.asarray(getters[n](ds), dtype=float) for n in names])


def feature_matrix(
    windows: np.ndarray, ds: pd.DatetimeIndex, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Features for the targets after each window (at times ``ds``) and the windows' scales."""
    values, scale = window_features(windows, spec)
    if spec.calendar:
        values = np.hstack([values, calendar_features(ds, spec.freq)])
    return values, scale


# -- training and serving ----------------------------------------------------------------------


def last_windows(tails: Sequence[np.ndarray], lookback: int) -> np.ndarray:
    """The last ``lookback`` values of each series, left-padded with NaN when shorter.

    ``tails`` is a list of arrays, or a 2-d array whose rows are series already
    aligned on their last value (NaN-padded on the left), as in recursive forecasting.
    """
    if isinstance(tails, np.ndarray) and tails.ndim == 2:
        block = tails[:, -lookback:].astype(float)
        pad = np.full((len(tails), lookback - block.shape[1]), np.nan)
        return np.hstack([pad, block])
    out = np.full((len(tails), lookback), np.nan)
    for i, tail in enumerate(tails):
        tail = np.asarray(tail, dtype=float)[-lookback:]
        if tail.size:
            out[i, lookback - tail.size :] = tail
    return out


def sliding_windows(y: np.ndarray, lookback: int) -> np.ndarray:
    """Row ``t`` holds the ``lookback`` values before ``y[t]`` (NaN before the start)."""
    padded = np.concatenate([np.full(lookback, np.nan), np.asarray(y, dtype=float)])
    return np.lib.stride_tricks.sliding_window_view(padded[:-1], lookback)


def min_observations(spec: FeatureSpec) -> int:
    """Observations before a target for it to become a training row (one scale window)."""
    return min(spec.scale_window, spec.lookback)


@dataclass
class TrainingSet:
    """Design matrix, scaled targets and what each row is."""

    X: np.ndarray
    target: np.ndarray
    scale: np.ndarray
    ids: np.ndarray
    ds: pd.DatetimeIndex


def training_matrix(df: pd.DataFrame, spec: FeatureSpec) -> TrainingSet:
    """One row per observation of a sorted long frame that has enough history before it.

    Series shorter than ``min_observations(spec) + 1`` still give the rows they can
    (from their second observation), so the model sees short histories too.
    """
    windows, targets, dates, ids = [], [], [], []
    for uid, group in df.groupby(ID_COL, sort=True, observed=True):
        y = group[TARGET_COL].to_numpy(dtype=float)
        start = min_observations(spec) if len(y) > min_observations(spec) else 1
        if len(y) <= start:
            continue
        windows.append(sliding_windows(y, spec.lookback)[start:])
        targets.append(y[start:])
        dates.append(group[TIME_COL].to_numpy()[start:])
        ids.append(np.repeat(str(uid), len(y) - start))
    if not windows:
        empty = np.empty((0, len(spec.names)))
        return TrainingSet(
            empty, np.empty(0), np.empty(0), np.empty(0, dtype=object), pd.DatetimeIndex([])
        )
    ds = pd.DatetimeIndex(np.concatenate(dates))
    X, scale = feature_matrix(np.vstack(windows), ds, spec)
    target = np.concatenate(targets) / scale
    keep = np.isfinite(target)
    return TrainingSet(X[keep], target[keep], scale[keep], np.concatenate(ids)[keep], ds[keep])


def next_step_features(
    tails: Sequence[np.ndarray], next_ds: pd.DatetimeIndex, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows for the observation after each tail (at ``next_ds``) and their scales."""
    return feature_matrix(last_windows(tails, spec.lookback), pd.DatetimeIndex(next_ds), spec)


def _nanmean(a: np.ndarray) -> np.ndarray:
    count = np.sum(~np.isnan(a), axis=1)
    total = np.nansum(a, axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanstd(a: np.ndarray) -> np.ndarray:
    mean = _nanmean(a)
    count = np.sum(~np.isnan(a), axis=1)
    sq = np.nansum((a - mean[:, None]) ** 2, axis=1)
    return np.where(count > 1, np.sqrt(sq / np.maximum(count, 1)), np.nan)
