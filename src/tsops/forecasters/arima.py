"""Seasonal ARIMA via statsmodels' ``SARIMAX`` state-space model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import LocalModel
from tsops.forecasters.naive import (
    NUMERIC_ERRORS,
    CachedResults,
    NaiveFallback,
    SeasonalNaive,
    as_series,
    is_finite_forecast,
    quiet,
    tidy_intervals,
)

_TRENDS = ("n", "c", "t", "ct")


class ARIMA(NaiveFallback, CachedResults, LocalModel):
    """SARIMA(p,d,q)(P,D,Q,m) with parameters estimated by exact maximum likelihood.

    Parameters
    ----------
    season_length:
        Observations per season (the ``m`` of the seasonal order).
    order:
        ``(p, d, q)``, default ``(1, 1, 1)``.
    seasonal_order:
        ``(P, D, Q)`` or ``(P, D, Q, m)``; default ``(0, 1, 1)`` when
        ``season_length > 1`` and none otherwise.
    trend:
        statsmodels trend term of the differenced model: ``None``/``"n"``, ``"c"``
        (a drift when ``d + D = 1``), ``"t"`` or ``"ct"``.

    A series too short for the seasonal model is fitted without the seasonal part,
    then as a random walk, and finally with the seasonal naive model. ``update`` is
    ``results.apply(y)``: parameters kept, the Kalman filter re-run on ``y`` from the
    model's diffuse initial state, so it needs no alignment with the training data.
    """

    min_length = 1

    def __init__(
        self,
        season_length: int = 1,
        order: Sequence[int] = (1, 1, 1),
        seasonal_order: Sequence[int] | None = None,
        trend: str | None = None,
        maxiter: int = 50,
    ):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)
        self.order = _orders("order", order, 3)
        if seasonal_order is None:
            seasonal_order = (0, 1, 1) if self.season_length > 1 else (0, 0, 0)
        seasonal = _orders("seasonal_order", seasonal_order[:3], 3)
        if len(seasonal_order) == 4:
            period = int(seasonal_order[3])
        elif len(seasonal_order) == 3:
            period = self.season_length
        else:
            raise ValueError(
                f"seasonal_order must be (P, D, Q) or (P, D, Q, m), got {seasonal_order!r}"
            )
        self.seasonal_order = (*seasonal, period if any(seasonal) and period > 1 else 0)
        if self.seasonal_order[3] == 0 and any(seasonal):
            raise ValueError("a seasonal_order other than (0, 0, 0) needs a season length > 1")
        trend = "n" if trend is None else trend
        if trend not in _TRENDS:
            raise ValueError(f"ARIMA trend={trend!r} is not supported; use null, 'c', 't' or 'ct'")
        self.trend = trend
        self.maxiter = int(maxiter)

    def _candidates(self, n: int) -> list[dict[str, Any]]:
        """The requested model, then simpler ones the data can still support."""
        no_season = (0, 0, 0, 0)
        specs = [
            {"order": self.order, "seasonal_order": self.seasonal_order, "trend": self.trend},
            {"order": self.order, "seasonal_order": no_season, "trend": self.trend},
            {"order": (0, 1, 0), "seasonal_order": no_season, "trend": "n"},
        ]
        unique = list({repr(s): s for s in specs}.values())
        return [s for s in unique if n >= _needed(s)]

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.y_ = y
        self._results = None
        self.fallback_: SeasonalNaive | None = None
        for spec in self._candidates(len(y)):
            try:
                with quiet():
                    res = self._model(y, spec).fit(disp=False, maxiter=self.maxiter)
                    ok = np.isfinite(res.params).all() and np.isfinite(res.llf)
                    ok = ok and is_finite_forecast(self._forecast_from(res, 1, [95.0]))
            except NUMERIC_ERRORS:
                continue
            if ok:
                self.spec_ = spec
                self.params_ = np.asarray(res.params, dtype=float)
                self._results = None  # see CachedResults.results
                self.min_length = _needed(spec)
                return self
        self.spec_, self.params_ = None, np.empty(0)
        return self._fall_back(y)

    def _model(self, y: np.ndarray, spec: dict[str, Any]):
        return SARIMAX(y, **spec)

    def update(self, y: np.ndarray) -> Self:
        name = f"ARIMA{self.spec_['order']}{self.spec_['seasonal_order']}" if self.spec_ else ""
        new, y = self._copy_for_update(y, name + " needs at least {n} observations")
        if y is not None:
            new.y_ = y
            new._results = None  # rebuilt from y_ on first use: results.apply(y), see _rebuild
        return new

    def _rebuild(self):
        # Same as ``results.apply(y)`` (a clone of the model on new data, filtered
        # with the fitted parameters) without first rebuilding the training results.
        with quiet():
            return self._model(self.y_, self.spec_).filter(self.params_)

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        if self.fallback_ is not None:
            return self.fallback_.forecast(h, levels)
        return self._forecast_from(self.results(), h, levels)

    @staticmethod
    def _forecast_from(res, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        with quiet():
            pred = res.get_forecast(h)
            out = {MEAN_COL: np.asarray(pred.predicted_mean, dtype=float)}
            for level in levels:
                bounds = np.asarray(pred.conf_int(alpha=1 - level / 100.0), dtype=float)
                out[lo_col(level)], out[hi_col(level)] = bounds[:, 0], bounds[:, 1]
        return tidy_intervals(out, levels)


def _orders(name: str, value: Sequence[int], size: int) -> tuple[int, ...]:
    try:
        orders = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ARIMA {name} must be a list of {size} integers, got {value!r}") from exc
    if len(orders) != size or min(orders) < 0:
        raise ValueError(f"ARIMA {name} must be {size} non-negative integers, got {value!r}")
    return orders


def _needed(spec: dict[str, Any]) -> int:
    """Observations needed to estimate ``spec``: differencing, lags and a few spare."""
    p, d, q = spec["order"]
    big_p, big_d, big_q, m = spec["seasonal_order"]
    lags = max(p + big_p * m, q + big_q * m, 1)
    needed = d + big_d * m + lags + 3
    return max(needed, 2 * m + 2) if m else needed
