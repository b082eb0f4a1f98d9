"""One contract for every forecaster.

``Forecaster`` works on the long frame (``unique_id``, ``ds``, ``y``):
``__init__`` takes hyperparameters only, ``fit(df)`` returns self and keeps fitted
state in attributes ending in ``_``, ``predict(h, level, history)`` returns
``unique_id, ds, mean, lo-<level>, hi-<level>``.

``predict`` is built on ``predict_series``, which takes and returns plain arrays per
series: the model server calls it directly, because for the few series of one online
request building DataFrames cost several times more than the forecast arithmetic.

Classical models are written once, for a single series (``LocalModel``), and
``PerSeries`` does the grouping and the parallelism for them; global models (one
model across all series) implement ``Forecaster`` directly.
"""

from __future__ import annotations

import copy
import functools
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Self

import numpy as np
import pandas as pd

from tsops.core.errors import TsopsError
from tsops.core.parallel import parallel_map
from tsops.core.schema import (
    ID_COL,
    MEAN_COL,
    TARGET_COL,
    TIME_COL,
    check_levels,
    forecast_columns,
    future_dates,
    hi_col,
    lo_col,
)


class ForecastError(TsopsError, ValueError):
    """A forecast that cannot be made from the given input; the message says how to fix it."""


@dataclass(frozen=True)
class SeriesHistory:
    """Recent observations of one series: strictly increasing times and finite values."""

    ds: pd.DatetimeIndex
    y: np.ndarray


#: recent observations per series id
Histories = Mapping[str, SeriesHistory]


@dataclass(frozen=True)
class SeriesForecast:
    """The forecast of one series: ``values`` maps ``mean``, ``lo-<l>``, ``hi-<l>`` to
    arrays of length ``h``; ``cutoff`` is the last observation it starts after."""

    unique_id: str
    cutoff: pd.Timestamp
    ds: pd.DatetimeIndex
    values: dict[str, np.ndarray]


class Forecaster(ABC):
    """Frame-level contract (sklearn / statsforecast style)."""

    freq: str

    @abstractmethod
    def fit(self, df: pd.DataFrame) -> Self: ...

    @abstractmethod
    def predict_series(
        self,
        h: int,
        levels: Sequence[float],
        histories: Histories | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[SeriesForecast]:
        """``predict`` without frames: one ``SeriesForecast`` per wanted series, in order.

        ``levels`` are checked (``check_levels``); ``histories`` as ``group_history``
        returns them.
        """

    def predict(
        self,
        h: int,
        level: Sequence[float] | None = None,
        history: pd.DataFrame | None = None,
        ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Forecast ``h`` steps for every fitted series (or only ``ids``).

        With ``history`` (long frame of recent observations), each series in it is
        forecast from its last given observation, the fitted parameters kept and only
        the state updated; other series are forecast from the fitted cutoff.
        """
        levels = check_levels(level)
        return forecast_frame(self.predict_series(h, levels, group_history(history), ids), levels)

    @property
    def cutoffs_(self) -> pd.Series:
        """Last training timestamp per series."""
        return self._cutoffs_


class LocalModel(ABC):
    """A forecasting model of one series, given as a float array on a regular grid."""

    #: on the class, the shortest series ``fit`` accepts; a fitted instance may raise it to
    #: the shortest series ``update`` can re-filter (e.g. two seasons for seasonal models)
    min_length: int = 2

    @abstractmethod
    def fit(self, y: np.ndarray) -> Self:
        """Estimate parameters and state from ``y``."""

    @abstractmethod
    def update(self, y: np.ndarray) -> Self:
        """A copy with the fitted parameters kept and the state re-filtered on ``y``.

        ``y`` is the whole series the forecast should start after (training data
        spliced with fresh history); nothing is re-estimated.
        """

    @abstractmethod
    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        """``{"mean": ..., "lo-80": ..., "hi-80": ...}``, each of length ``h``."""


def splice_history(
    fitted_y: np.ndarray,
    fitted_end: pd.Timestamp,
    history: SeriesHistory,
    freq: str,
    uid: str,
    min_length: int,
) -> tuple[np.ndarray, pd.Timestamp]:
    """The series a forecast with ``history`` starts after, and its last timestamp.

    History that overlaps or directly continues the training data replaces the
    overlapping tail; history that leaves a gap is used alone when it is long enough.
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    values = history.y
    first, last = history.ds[0], history.ds[-1]
    if first == fitted_end + offset:
        # history that continues the training data (the usual request): nothing is
        # replaced, and the checks below would only count that
        return np.concatenate([fitted_y, values]), last
    fitted_start = fitted_end - (len(fitted_y) - 1) * offset
    if first <= fitted_start:
        return values, last
    if first <= fitted_end + offset:
        # count the (few) replaced periods, not the whole training span
        replaced = len(pd.date_range(first, fitted_end, freq=offset))
        return np.concatenate([fitted_y[: len(fitted_y) - replaced], values]), last
    if len(values) >= min_length:
        return values, last
    raise ForecastError(
        f"history for series {uid!r} starts at {first.date()}, leaving a gap after the "
        f"model's data, which ends at {fitted_end.date()}; send history that continues from "
        f"{(fitted_end + offset).date()} or at least {min_length} consecutive observations"
    )


def _fit_chunk(prototype: LocalModel, chunk: Sequence[np.ndarray]) -> list[LocalModel]:
    return [copy.deepcopy(prototype).fit(y) for y in chunk]


class PerSeries(Forecaster):
    """Fits one ``LocalModel`` per series; the orchestrator for classical models."""

    def __init__(self, model: LocalModel, freq: str, n_jobs: int | None = 1):
        self.model = model
        self.freq = freq
        self.n_jobs = n_jobs

    def fit(self, df: pd.DataFrame) -> Self:
        ids, arrays, ends = split_series(df)
        from functools import partial

        fitted = parallel_map(partial(_fit_chunk, self.model), arrays, self.n_jobs)
        self.models_ = dict(zip(ids, fitted, strict=True))
        self.y_ = dict(zip(ids, arrays, strict=True))
        self._cutoffs_ = pd.Series(ends, index=pd.Index(ids, name=ID_COL), name=TIME_COL)
        return self

    def predict_series(
        self,
        h: int,
        levels: Sequence[float],
        histories: Histories | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[SeriesForecast]:
        histories = histories or {}
        out = []
        for uid in wanted_ids(ids, histories, self.models_):
            model, end = self.models_[uid], self._cutoffs_[uid]
            if uid in histories:
                y, end = splice_history(
                    self.y_[uid], end, histories[uid], self.freq, uid, model.min_length
                )
                model = model.update(y)
            dates = _future_dates(end, h, self.freq)
            out.append(SeriesForecast(uid, end, dates, model.forecast(h, levels)))
        return out


@functools.lru_cache(maxsize=1024)
def _future_dates(end: pd.Timestamp, h: int, freq: str) -> pd.DatetimeIndex:
    """``future_dates``, kept: every member of an ensemble asks for the same dates, and
    requests mostly start from the same few periods (an index cannot be changed in place,
    so the forecasts can share it)."""
    return future_dates(end, h, freq)


def wanted_ids(
    ids: Sequence[str] | None, histories: Collection[str] | None, known: Collection[str]
) -> list[str]:
    """The series to forecast (all ``known`` ones by default), checked to be known;
    ``histories`` (the ids history was sent for) must be known too."""
    wanted = list(known) if ids is None else [str(u) for u in ids]
    unknown = [u for u in wanted if u not in known]
    if histories:
        unknown += sorted(set(histories) - set(known) - set(unknown))
    if unknown:
        raise ForecastError(
            f"unknown series {unknown[:5]}: the model was trained on "
            f"{len(known)} series; ask for one of them or retrain with the new series"
        )
    return wanted


def split_series(df: pd.DataFrame) -> tuple[list[str], list[np.ndarray], list[pd.Timestamp]]:
    """Ids, value arrays and last timestamps of a sorted long frame."""
    ids, arrays, ends = [], [], []
    for uid, group in df.groupby(ID_COL, sort=True, observed=True):
        ids.append(str(uid))
        arrays.append(group[TARGET_COL].to_numpy(dtype=float))
        ends.append(pd.Timestamp(group[TIME_COL].iloc[-1]))
    return ids, arrays, ends


def group_history(history: pd.DataFrame | None) -> dict[str, SeriesHistory]:
    """A long frame of recent observations as ``SeriesHistory`` per series, sorted by time."""
    if history is None or history.empty:
        return {}
    ordered = history.sort_values([ID_COL, TIME_COL], kind="stable")
    return {
        str(uid): SeriesHistory(pd.DatetimeIndex(g[TIME_COL]), g[TARGET_COL].to_numpy(dtype=float))
        for uid, g in ordered.groupby(ID_COL, sort=False, observed=True)
    }


def forecast_frame(forecasts: Sequence[SeriesForecast], levels: Sequence[float]) -> pd.DataFrame:
    """The long forecast frame of ``SeriesForecast``s, in their order."""
    if not forecasts:
        return empty_forecast(levels)
    data: dict[str, Any] = {
        ID_COL: np.repeat(
            np.asarray([f.unique_id for f in forecasts], dtype=object),
            [len(f.ds) for f in forecasts],
        ),
        TIME_COL: np.concatenate([f.ds.to_numpy() for f in forecasts]),
    }
    for col in (MEAN_COL, *(c for lev in levels for c in (lo_col(lev), hi_col(lev)))):
        data[col] = np.concatenate([np.asarray(f.values[col], dtype=float) for f in forecasts])
    frame = pd.DataFrame(data)
    frame[ID_COL] = frame[ID_COL].astype(str)
    return frame


def empty_forecast(levels: Sequence[float]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in forecast_columns(levels)})
    frame[ID_COL] = frame[ID_COL].astype(str)
    frame[TIME_COL] = pd.to_datetime(frame[TIME_COL])
    return frame


def gaussian_intervals(
    mean: np.ndarray, sd: np.ndarray, levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Symmetric normal intervals around ``mean`` with per-step standard deviation ``sd``."""
    out: dict[str, np.ndarray] = {MEAN_COL: mean}
    for level in levels:
        # the standard library's quantile: scipy's ppf costs ~100 us a call in argument
        # checks, more than the rest of a small forecast
        z = NormalDist().inv_cdf(0.5 + level / 200.0)
        out[lo_col(level)] = mean - z * sd
        out[hi_col(level)] = mean + z * sd
    return out
