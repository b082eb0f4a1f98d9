"""The Theta method (Assimakopoulos & Nikolopoulos 2000) via statsmodels' ``ThetaModel``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
from scipy.signal import lfilter
from statsmodels.tsa.forecasting.theta import ThetaModel, ThetaModelResults
from statsmodels.tsa.seasonal import seasonal_decompose
from statsmodels.tsa.stattools import acf

from tsops.forecasters.base import LocalModel, gaussian_intervals
from tsops.forecasters.naive import (
    NUMERIC_ERRORS,
    CachedResults,
    NaiveFallback,
    SeasonalNaive,
    as_series,
    is_finite_forecast,
    quiet,
    seasonal_ok,
    tidy_intervals,
)

#: 90% quantile of chi-squared(1): the seasonality test ThetaModel applies
_CHI2_90 = 2.705543454095404


class Theta(NaiveFallback, CachedResults, LocalModel):
    """Theta forecast: SES plus half the OLS slope (theta=2), on seasonally adjusted data.

    Parameters
    ----------
    season_length:
        Period of the classical seasonal decomposition; 1 means none.
    theta:
        Weight of the trend line, >= 1 (2 is the classic method, 1 plain SES).
    deseasonalize:
        ``True``, ``False`` or ``"auto"``: adjust only when the autocorrelation at
        the seasonal lag is significant at 10% (the test ``ThetaModel`` uses).
        Needs two full seasons; shorter series are not adjusted.
    method:
        ``"multiplicative"`` or ``"additive"`` decomposition; multiplicative falls
        back to additive for series with zeros or negative values.

    statsmodels estimates the SES level ``alpha``, the drift ``b0`` and the
    innovation variance; ``update`` keeps all three and re-runs the SES filter (and
    the seasonal decomposition, which is data, not a parameter) on the new series,
    then hands them to ``ThetaModelResults`` for the forecast and intervals.
    """

    min_length = 1

    def __init__(
        self,
        season_length: int = 1,
        theta: float = 2.0,
        deseasonalize: bool | str = "auto",
        method: str = "multiplicative",
    ):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        if float(theta) < 1:
            raise ValueError(f"Theta theta={theta!r} must be >= 1")
        if deseasonalize not in (True, False, "auto"):
            raise ValueError(f"Theta deseasonalize={deseasonalize!r}: use true, false or 'auto'")
        if method not in ("multiplicative", "additive"):
            raise ValueError(f"Theta method={method!r}: use 'multiplicative' or 'additive'")
        self.season_length = int(season_length)
        self.theta = float(theta)
        self.deseasonalize = deseasonalize
        self.method = method

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.y_ = y
        self._results = None
        self.fallback_: SeasonalNaive | None = None
        if len(y) < 3:  # neither a slope nor a smoothing level can be estimated
            return self._fall_back(y)
        if np.ptp(y) == 0:
            # ThetaModel's OLS design drops its intercept column for a constant series
            # (add_trend sees a constant already there) and returns a bogus slope.
            return self._fall_back(y)
        m = self.season_length
        adjust = self.deseasonalize is not False and seasonal_ok(len(y), m)
        if adjust and self.deseasonalize == "auto":
            adjust = _seasonality_test(y, m)
        self.deseasonalized_ = adjust
        method = "mul" if self.method == "multiplicative" and y.min() > 0 else "add"
        try:
            with quiet():
                model = ThetaModel(y, period=m, deseasonalize=adjust, use_test=False, method=method)
                res = model.fit()
                # ThetaModel switches to additive when a multiplicative factor is <= 0
                self.method_ = model.method
                self.alpha_, self.b0_ = float(res.params["alpha"]), float(res.params["b0"])
                self.sigma2_ = _sigma2(res, y)
        except NUMERIC_ERRORS:
            return self._fall_back(y)
        if not np.isfinite([self.alpha_, self.b0_, self.sigma2_]).all():
            return self._fall_back(y)
        self.min_length = 2 * m if adjust else 1
        if not is_finite_forecast(self.forecast(1, [95.0])):
            return self._fall_back(y)
        return self

    def update(self, y: np.ndarray) -> Self:
        new, y = self._copy_for_update(
            y, "Theta with seasonal adjustment needs {n} observations (two seasons)"
        )
        if y is not None:
            new.y_ = y
            new._results = None
        return new

    def _rebuild(self) -> ThetaModelResults:
        """Results for ``y_`` with the fitted alpha, b0 and variance held fixed.

        ``ThetaModel.fit`` always re-estimates, so the state it would compute (the
        adjusted series and the SES level after its last point) is rebuilt here and
        passed to ``ThetaModelResults``, which does the forecasting arithmetic.
        """
        y, m = self.y_, self.season_length
        method = self.method_ if y.min() > 0 else "add"
        seasonal = np.empty(0)
        adjusted = y
        with quiet():
            if self.deseasonalized_:
                decomposition = seasonal_decompose(y, model=method, period=m)
                if method == "mul" and decomposition.seasonal.min() <= 0:
                    method = "add"
                    decomposition = seasonal_decompose(y, model=method, period=m)
                seasonal = decomposition.seasonal[:m]
                factors = decomposition.seasonal
                adjusted = y / factors if method == "mul" else y - factors
            model = ThetaModel(
                y, period=m, deseasonalize=self.deseasonalized_, use_test=False, method=method
            )
        one_step = _ses_level(adjusted, self.alpha_)
        return ThetaModelResults(
            self.b0_, self.alpha_, self.sigma2_, one_step, seasonal, False, model
        )

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        if self.fallback_ is not None:
            return self.fallback_.forecast(h, levels)
        res = self.results()
        with quiet():
            mean = np.asarray(res.forecast(h, self.theta), dtype=float)
        # ThetaModelResults.prediction_intervals recomputes the point forecast for every
        # level and returns DataFrames (most of an online forecast's time); its variance,
        # that of an IMA(1,1), is applied here once for all levels instead.
        steps_before = np.arange(h)
        sd = np.sqrt(self.sigma2_ * (1 + steps_before * (1 + (self.alpha_ - 1) ** 2)))
        return tidy_intervals(gaussian_intervals(mean, sd, levels), levels)


def _seasonality_test(y: np.ndarray, period: int) -> bool:
    """ThetaModel's test: is the autocorrelation at the seasonal lag significant at 10%?"""
    with quiet():
        rho = acf(y, nlags=period, fft=True)
    stat = len(y) * rho[-1] ** 2 / np.sum(rho[:-1] ** 2)
    return bool(np.isfinite(stat) and stat > _CHI2_90)


def _ses_level(y: np.ndarray, alpha: float) -> float:
    """SES level after the last observation, started at the first (as ThetaModel does)."""
    # level_t = alpha * y_t + (1 - alpha) * level_{t-1}, level_0 = y_0
    levels, _ = lfilter([alpha], [1.0, alpha - 1.0], y, zi=[(1.0 - alpha) * y[0]])
    return float(levels[-1])


def _sigma2(res: ThetaModelResults, y: np.ndarray) -> float:
    """statsmodels' innovation variance (an IMA(1,1) fit), or the naive one if that fails."""
    try:
        value = float(res.sigma2)
    except NUMERIC_ERRORS:
        value = np.nan
    if not np.isfinite(value) or value < 0:
        value = float(np.mean(np.diff(y) ** 2))
    return value
