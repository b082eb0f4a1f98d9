"""statsforecast's classical models as a second engine beside statsmodels.

statsforecast implements ETS, the Theta family and CES on compiled kernels: on the
1,428 M3 monthly series its AutoETS fits ~25 series/s on one core against ~6 for
the statsmodels ETS here, and its Theta ~500 series/s. ``StatsForecastModel`` puts
any of them behind the ``LocalModel`` contract, so ``PerSeries``, the backtest,
the ensembles and the model server use them like the statsmodels models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import ForecastError, LocalModel
from tsops.forecasters.naive import (
    NUMERIC_ERRORS,
    NaiveFallback,
    SeasonalNaive,
    as_series,
    is_finite_forecast,
    quiet,
    tidy_intervals,
)
from tsops.forecasters.statsforecast_speedups import cache_constants

#: statsforecast models that take ``season_length`` and implement ``forward`` (apply
#: the fitted parameters to a new series), which forecasting from fresh history needs
MODELS = (
    "AutoETS",
    "AutoCES",
    "AutoTheta",
    "Theta",
    "OptimizedTheta",
    "DynamicTheta",
    "DynamicOptimizedTheta",
    "AutoARIMA",
)

#: what statsforecast raises on data it cannot fit: NotImplementedError "tiny
#: datasets" for fewer observations than parameters, KeyError from AutoETS when no
#: candidate model fits (e.g. a short series with a level shift)
_FIT_ERRORS = (*NUMERIC_ERRORS, NotImplementedError, KeyError)


def _model_class(name: str) -> type:
    from statsforecast import models  # imported when a model is built, not with tsops

    if name not in MODELS:
        raise ValueError(f"statsforecast model {name!r} is not supported; use one of {MODELS}")
    return getattr(models, name)


class StatsForecastModel(NaiveFallback, LocalModel):
    """One statsforecast model (``model``, e.g. ``AutoETS``) fitted to one series.

    Parameters
    ----------
    season_length:
        Observations per season, passed to the model.
    model:
        Class name in ``statsforecast.models``, one of ``MODELS``.
    options:
        Further keyword arguments of that class (e.g. ``{damped: true}`` for
        AutoETS); ``season_length`` comes from model.yaml's top level.

    A series the model cannot fit (too short, degenerate) gets the seasonal naive
    forecast, as the statsmodels wrappers do. ``update`` keeps the fitted
    parameters and re-runs the model's filter on the new series (statsforecast's
    ``forward``).
    """

    min_length = 1

    def __init__(self, season_length: int = 1, model: str = "AutoETS", options: dict | None = None):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)
        self.model = str(model)
        self.options = dict(options or {})
        if "season_length" in self.options:
            raise ValueError("options.season_length: set the model's top-level season_length")
        self._build()  # an unknown model or option fails when the config is read

    def _build(self) -> Any:
        try:
            return _model_class(self.model)(season_length=self.season_length, **self.options)
        except TypeError as exc:
            raise ValueError(f"statsforecast {self.model}: invalid options ({exc})") from exc

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.fallback_: SeasonalNaive | None = None
        self.history_: np.ndarray | None = None
        self.fitted_model_ = None
        try:
            with quiet():
                self.fitted_model_ = self._build().fit(y)
        except _FIT_ERRORS:
            return self._fall_back(y)
        # forecasting from fresh history re-runs the filter: give it two seasons
        self.min_length = min(len(y), max(2 * self.season_length, 8))
        if not is_finite_forecast(self.forecast(1, [95.0])):
            return self._fall_back(y)
        return self

    def _fall_back(self, y: np.ndarray) -> Self:
        self.fitted_model_ = None
        return super()._fall_back(y)

    def update(self, y: np.ndarray) -> Self:
        new, y = self._copy_for_update(y, f"statsforecast {self.model} needs {{n}} observations")
        if y is not None:
            new.history_ = y
        return new

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        if self.fallback_ is not None:
            return self.fallback_.forecast(h, levels)
        level = list(levels) or None
        cache_constants()  # scipy work statsforecast repeats per forecast, done once
        try:
            with quiet():
                if self.history_ is None:
                    out = self.fitted_model_.predict(h, level=level)
                else:
                    out = self.fitted_model_.forward(self.history_, h, level=level)
        except _FIT_ERRORS as exc:
            raise ForecastError(
                f"statsforecast {self.model} could not forecast from this history ({exc}); "
                "send a longer history"
            ) from exc
        # statsforecast names bounds after the level as given ("lo-95.0" for 95.0)
        values = {MEAN_COL: np.asarray(out["mean"], dtype=float)}
        for lev in levels:
            values[lo_col(lev)] = np.asarray(out[f"lo-{lev}"], dtype=float)
            values[hi_col(lev)] = np.asarray(out[f"hi-{lev}"], dtype=float)
        return tidy_intervals(values, levels)
