"""Exponential smoothing (ETS) state-space models via statsmodels' ``ETSModel``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import ForecastError, LocalModel, gaussian_intervals
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

_EXACT_VARIANCE = {"ANN", "AAN", "AAdN", "ANA", "AAA", "AAdA"}
_SIMULATIONS = 1000


def _heuristic_min(season_length: int) -> int:
    """Observations statsmodels' heuristic initialisation needs for a seasonal model."""
    return max(2 * season_length, 10 + 2 * (season_length // 2))


class ETS(NaiveFallback, CachedResults, LocalModel):
    """ETS with additive (or multiplicative) errors, chosen by AICc when asked to.

    Parameters
    ----------
    season_length:
        Observations per season; 1 means no seasonality.
    error:
        ``"add"`` or ``"mul"``; multiplicative errors need a positive series and fall
        back to additive otherwise.
    trend:
        ``None``, ``"add"`` or ``"auto"`` (no trend or an additive trend, damped if
        ``damped_trend``, by AICc).
    damped_trend:
        Damp the additive trend (the usual better default for forecasting).
    seasonal:
        ``None``, ``"add"``, ``"mul"`` or ``"auto"`` (none or additive, by AICc).
        Seasonal models need two full seasons; shorter series are fitted without.
        Multiplicative seasonality needs a positive series and falls back to additive.

    Intervals are analytic (fpp3 formulas) for the linear models and come from 1000
    simulations seeded with ``seed`` (model.yaml's top-level ``seed``) for
    multiplicative ones. Initial states are estimated with
    the smoothing parameters (more accurate on M3 than heuristic ones).

    ``update`` keeps every parameter and re-runs the filter. When the new series
    starts where the training data started (history spliced onto it) the estimated
    initial states still apply; otherwise (history alone, after a gap) they are
    re-derived from the new series with the Hyndman et al. heuristic. ``update`` is
    not told where its series starts, so this is decided by comparing the opening
    season with the training data's. A seasonal model needs ``min_length`` =
    two seasons (at least 10 + m/2 points) for either.
    """

    min_length = 1
    #: models pickled before the seed was a parameter simulated with seed 0
    seed = 0

    def __init__(
        self,
        season_length: int = 1,
        error: str = "add",
        trend: str | None = "auto",
        damped_trend: bool = True,
        seasonal: str | None = "auto",
        seed: int = 0,
    ):
        _check_choice("error", error, ("add", "mul"))
        _check_choice("trend", trend, (None, "add", "auto"))
        _check_choice("seasonal", seasonal, (None, "add", "mul", "auto"))
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)
        self.error = error
        self.trend = trend
        self.damped_trend = bool(damped_trend)
        self.seasonal = seasonal
        self.seed = int(seed)

    # -- fitting -----------------------------------------------------------------------

    def _candidates(self, y: np.ndarray) -> list[dict[str, Any]]:
        n, m = len(y), self.season_length
        positive = bool(y.min() > 0)
        error = self.error if positive else "add"
        trends = [None, "add"] if self.trend == "auto" else [self.trend]
        seasonals = [None, "add"] if self.seasonal == "auto" else [self.seasonal]
        if m == 1 or n < _heuristic_min(m):
            seasonals = [None]
        if not positive:
            seasonals = ["add" if s == "mul" else s for s in seasonals]
        if n < 4:  # a trend cannot be told from noise on three points
            trends = [None]
        out = []
        for seasonal in dict.fromkeys(seasonals):
            for trend in dict.fromkeys(trends):
                out.append(
                    {
                        "error": error,
                        "trend": trend,
                        "damped_trend": bool(trend and self.damped_trend),
                        "seasonal": seasonal,
                    }
                )
        return out

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.y_ = y
        self._results = None
        self.fallback_: SeasonalNaive | None = None
        best, best_score = None, np.inf
        if len(y) >= 2:
            for spec in self._candidates(y):
                try:
                    with quiet():
                        res = self._model(y, spec, "estimated").fit(disp=False)
                except NUMERIC_ERRORS:
                    continue
                if not np.isfinite(res.params).all() or not np.isfinite(res.llf):
                    continue
                score = res.aicc if np.isfinite(res.aicc) else np.inf
                # strict "<" keeps the simplest candidate on ties (no finite AICc)
                if best is None or score < best_score:
                    best, best_score = (spec, res), score
        if best is None:
            return self._fall_back(y)
        self.spec_, res = best
        self.params_ = dict(zip(res.model.param_names, np.asarray(res.params), strict=True))
        self._results = None  # see CachedResults.results
        self.fresh_start_ = False
        self.head_ = y[: self._head_length()].copy()
        if not (np.isfinite(res.mse) and is_finite_forecast(self.forecast(1, []))):
            return self._fall_back(y)
        self.min_length = self._refilter_min(self.spec_)
        return self

    def _fall_back(self, y: np.ndarray) -> Self:
        self._results = None
        self.spec_ = None
        self.params_ = {}
        return super()._fall_back(y)

    def _model(self, y: np.ndarray, spec: dict[str, Any], init: str, **known: Any):
        # a Series because get_prediction fails on plain arrays (statsmodels 0.15)
        return ETSModel(
            pd.Series(y),
            seasonal_periods=self.season_length if spec["seasonal"] else None,
            initialization_method=init,
            **spec,
            **known,
        )

    def _refilter_min(self, spec: dict[str, Any]) -> int:
        """Shortest series ``update`` accepts: the heuristic's needs for seasonal models."""
        if spec["seasonal"]:
            return _heuristic_min(self.season_length)
        return 2 if spec["trend"] else 1

    # -- state update --------------------------------------------------------------------

    def update(self, y: np.ndarray) -> Self:
        y = as_series(y, "history")
        new = copy.copy(self)
        if self.fallback_ is not None:
            new.fallback_ = self.fallback_.update(y)
            return new
        new.y_ = y
        new._results = None
        new.fresh_start_ = not self._starts_like_training(y)
        if len(y) < self.min_length:
            raise ForecastError(
                f"ETS({self._short_name()}) needs at least {self.min_length} "
                f"consecutive observations to start from new history; got {len(y)}"
            )
        return new

    def _starts_like_training(self, y: np.ndarray) -> bool:
        # splice_history keeps the training data's first observations whenever the
        # history continues it, so an identical opening season means the estimated
        # initial states describe the start of ``y`` too.
        k = min(len(y), len(self.head_))
        return bool(np.array_equal(y[:k], self.head_[:k]))

    def _head_length(self) -> int:
        return max(self.season_length, 2)

    def _rebuild(self):
        """Filter ``y_`` with every fitted parameter held fixed (no optimisation)."""
        y, spec = self.y_, self.spec_
        if self.fresh_start_:
            model = self._fresh_start_model(y)
        else:
            model = self._model(y, spec, "known", **self._fitted_initial_states())
        params = [self.params_[name] for name in model.param_names]
        with quiet():
            return model.smooth(params)

    def _fitted_initial_states(self) -> dict[str, Any]:
        # passed as known values rather than as estimated parameters, so that the
        # constructor does not also derive heuristic start values it would not use
        p, spec = self.params_, self.spec_
        known: dict[str, Any] = {"initial_level": p["initial_level"]}
        if spec["trend"]:
            known["initial_trend"] = p["initial_trend"]
        if spec["seasonal"]:
            m = self.season_length
            seasonal = np.array([p[f"initial_seasonal.{i}"] for i in range(m)])
            # parameters run s[-1], ..., s[-m]; the known argument runs s[-m], ..., s[-1]
            known["initial_seasonal"] = seasonal[::-1]
        return known

    def _fresh_start_model(self, y: np.ndarray):
        """The model on ``y`` with initial states re-derived from ``y`` itself."""
        spec = self.spec_
        if spec["seasonal"] or len(y) >= 10:
            return self._model(y, spec, "heuristic")
        # the heuristic needs ten points: take the first value (and slope)
        known = {"initial_level": y[0]}
        if spec["trend"]:
            known["initial_trend"] = y[1] - y[0]
        return self._model(y, spec, "known", **known)

    def _short_name(self) -> str:
        spec = self.spec_ or {}
        damped = "d" if spec.get("damped_trend") else ""
        trend = {None: "N", "add": "A"}[spec.get("trend")] + damped
        error = {"add": "A", "mul": "M"}.get(spec.get("error"), "A")
        seasonal = {None: "N", "add": "A", "mul": "M"}[spec.get("seasonal")]
        return f"{error},{trend},{seasonal}"

    # -- forecasting ---------------------------------------------------------------------

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        if self.fallback_ is not None:
            return self.fallback_.forecast(h, levels)
        res = self.results()
        n = len(self.y_)
        with quiet():
            if res.model.short_name in _EXACT_VARIANCE:
                pred = res.get_prediction(start=n, end=n + h - 1, method="exact")
                mean = np.asarray(pred.predicted_mean, dtype=float)
                sd = np.sqrt(np.maximum(np.asarray(pred.forecast_variance, dtype=float), 0.0))
                return tidy_intervals(gaussian_intervals(mean, sd, levels), levels)
            # Multiplicative components have no closed-form variance; the model's seed
            # keeps the simulated intervals reproducible.
            pred = res.get_prediction(
                start=n,
                end=n + h - 1,
                method="simulated",
                simulate_repetitions=_SIMULATIONS,
                rng=np.random.default_rng(self.seed),
            )
            out = {MEAN_COL: np.asarray(pred.predicted_mean, dtype=float)}
            for level in levels:
                bounds = np.asarray(pred.pred_int(alpha=1 - level / 100.0), dtype=float)
                out[lo_col(level)], out[hi_col(level)] = bounds[:, 0], bounds[:, 1]
        return tidy_intervals(out, levels)


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join("null" if a is None else repr(a) for a in allowed)
        raise ValueError(f"ETS {name}={value!r} is not supported; use one of {shown}")
