"""Seasonal naive, plus the small helpers every local model here shares.

The seasonal naive forecast repeats the last observed season; it is the baseline
the gate compares candidates with, and the model the statistical wrappers fall
back to when statsmodels cannot fit a series (too short, constant, degenerate).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Self

import numpy as np

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import ForecastError, LocalModel, gaussian_intervals

#: what a statsmodels fit raises on degenerate data (LinAlgError is a ValueError)
NUMERIC_ERRORS = (ValueError, ArithmeticError, IndexError)


@functools.cache
def _blas():
    """threadpoolctl's view of the loaded BLAS libraries (inspecting them costs ~ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# quiet() blocks open in this process: inside one, another has nothing left to do
_open = 0
_open_lock = threading.Lock()
# the quiet() block quiet_process() opens and never closes
_process_block = contextlib.ExitStack()
_closed_at_exit = False


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Run statsmodels / statsforecast fits and filters silently and on one BLAS thread.

    Thousands of series are fitted per run; warnings about one of them are noise
    in the logs, and the caller checks the result for finiteness instead. Import
    statsmodels before entering: its import adds "always" filters that would win.

    The matrices of these models are tiny, so BLAS threads only add overhead, and
    OpenBLAS threads spinning on a busy or CPU-limited machine (a pod, parallel
    test runs) made fits over ten times slower; series-level parallelism is
    ``PerSeries``' job.

    Everything is restored when the block ends. Blocks nest: inside an open one, a
    nested block changes nothing and costs nothing, so a caller that runs many fits
    (or a server, see ``quiet_process``) may open one around all of them.
    """
    global _open
    with _open_lock:
        outer = _open == 0
        _open += 1
    try:
        if not outer:
            yield
            return
        with (
            _blas().limit(limits=1, user_api="blas"),
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        with _open_lock:
            _open -= 1


def quiet_process() -> None:
    """Open a ``quiet()`` block for the rest of the process: for a server's entry point,
    which forecasts on every request.

    Entering ``quiet()`` per request costs more than a small forecast, and
    ``warnings.catch_warnings()`` resets the warning registry each time, so every
    "once" warning of the web stack would be printed again after each request. Only
    the process's entry point may call this (a library function never does); call it
    after statsmodels is imported (loading a model imports it): its import adds
    "always" filters that would otherwise win.
    """
    global _closed_at_exit
    if not _closed_at_exit:
        # closed at exit, while the module's lock still exists: left to the garbage
        # collector at interpreter teardown, the block's cleanup found it gone (a
        # TypeError printed as every server stopped)
        atexit.register(_process_block.close)
        _closed_at_exit = True
    _process_block.enter_context(quiet())


def as_series(y: np.ndarray, what: str = "series") -> np.ndarray:
    """``y`` as a 1-d float array with at least one observation and no NaN / inf."""
    arr = np.asarray(y, dtype=float).ravel()
    if arr.size == 0:
        raise ForecastError(f"{what} is empty: send at least one observation")
    if not np.isfinite(arr).all():
        raise ForecastError(
            f"{what} contains NaN or infinite values: fill the gaps first "
            "(model.yaml `fill`) or drop them"
        )
    return arr


def tidy_intervals(out: dict[str, np.ndarray], levels: Sequence[float]) -> dict[str, np.ndarray]:
    """Make ``lo <= mean <= hi`` and nesting across levels hold exactly.

    Simulated or numerically noisy bounds can violate these by a hair; consumers
    (coverage metrics, plots, the median ensemble) rely on them.
    """
    mean = np.asarray(out[MEAN_COL], dtype=float)
    result = {MEAN_COL: mean}
    lo_prev, hi_prev = mean, mean
    for level in sorted(levels):
        lo_prev = np.minimum(np.asarray(out[lo_col(level)], dtype=float), lo_prev)
        hi_prev = np.maximum(np.asarray(out[hi_col(level)], dtype=float), hi_prev)
        result[lo_col(level)], result[hi_col(level)] = lo_prev, hi_prev
    return result


def is_finite_forecast(out: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in out.values())


class CachedResults:
    """Keeps a statsmodels results object out of pickles.

    A SARIMAX results object pickles to ~13 MB for a 120-point monthly series
    (filter and smoother matrices), against ~1 KB of parameters; a fitted
    ``PerSeries`` is shipped between processes and stored as a model artifact,
    so only parameters are kept and the results are rebuilt (a cheap filter pass
    with fixed parameters, no optimisation) the first time they are needed.
    """

    _results: object | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_results", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def results(self):
        # Not cached: a results object holds the filter's matrices (megabytes per
        # series), and a model of thousands of series kept them all alive (5.6 GB
        # for the 1,428 M3 monthly series). Rebuilding is one filter pass.
        return self._rebuild() if self._results is None else self._results

    def _rebuild(self):  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class SeasonalNaive(LocalModel):
    """Repeat the last season; ``season_length=1`` is the naive (random walk) forecast.

    Intervals follow Hyndman & Athanasopoulos (fpp3, §5.5): the in-sample
    seasonal-naive residual standard deviation times ``sqrt(k)``, with
    ``k = ceil(step / season_length)`` the number of seasons ahead. A series
    shorter than one season plus one observation is forecast naively.
    """

    min_length = 1

    def __init__(self, season_length: int = 1):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        # A residual needs one full season before it; otherwise the naive model.
        self.period_ = self.season_length if len(y) > self.season_length else 1
        resid = y[self.period_ :] - y[: -self.period_]
        self.sigma_ = float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0
        self.last_ = y[-self.period_ :].copy()
        self.min_length = self.period_
        return self

    def update(self, y: np.ndarray) -> Self:
        y = as_series(y)
        if len(y) < self.period_:
            raise ForecastError(
                f"seasonal naive needs at least one season ({self.period_} observations) "
                f"to forecast from; got {len(y)}"
            )
        new = copy.copy(self)
        new.last_ = y[-self.period_ :].copy()
        return new

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        steps = np.arange(1, h + 1)
        mean = np.resize(self.last_, h).astype(float)
        seasons_ahead = np.ceil(steps / self.period_)
        sd = self.sigma_ * np.sqrt(seasons_ahead)
        return tidy_intervals(gaussian_intervals(mean, sd, levels), levels)


def naive_fallback(y: np.ndarray, season_length: int) -> SeasonalNaive:
    """The model used when a statistical model cannot be fitted to ``y``."""
    return SeasonalNaive(season_length).fit(y)


class NaiveFallback:
    """What every statistical wrapper does around a fit that failed: forecast with
    seasonal naive instead, and start forecasts from fresh history the same way."""

    fallback_: SeasonalNaive | None = None
    season_length: int
    min_length: int

    def _fall_back(self, y: np.ndarray) -> Self:
        self.fallback_ = naive_fallback(y, self.season_length)
        self.min_length = self.fallback_.min_length
        return self

    def _copy_for_update(self, y: np.ndarray, needs: str) -> tuple[Self, np.ndarray | None]:
        """A copy to forecast after ``y``, and ``y`` checked; ``None`` for ``y`` when the
        fallback, already updated in the copy, forecasts. ``needs`` words the error for
        too short a history, with ``{n}`` for ``min_length``."""
        y = as_series(y, "history")
        new = copy.copy(self)
        if self.fallback_ is not None:
            new.fallback_ = self.fallback_.update(y)
            return new, None
        if len(y) < self.min_length:
            raise ForecastError(
                f"{needs.format(n=self.min_length)} to start from new history; got {len(y)}"
            )
        return new, y


def seasonal_ok(n: int, season_length: int, cycles: int = 2) -> bool:
    """Whether ``n`` observations hold enough full seasons to estimate seasonality."""
    return season_length > 1 and n >= cycles * season_length
