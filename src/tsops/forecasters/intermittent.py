"""Intermittent demand: telling such series apart, and the methods that forecast them.

A series is *intermittent* when most periods see no demand at all (spare parts,
slow-moving products, bike models sold a few times a year). Smoothing or ARIMA models
chase the zeros and the spikes; the methods here forecast the demand *rate* instead
(Croston and its variants, TSB, temporal aggregation with ADIDA / IMAPA).

Detection follows Syntetos, Boylan and Croston (2005, "On the categorization of demand
patterns", JORS 56): two numbers describe a demand series,

- ``adi``, the average demand interval: periods per period with demand
  (``len(y) / count(y != 0)``), 1 when every period sees demand;
- ``cv2``, the squared coefficient of variation of the non-zero demand sizes.

Their cut-offs, ADI 1.32 and CV² 0.49, split series into four classes: *smooth*
(ADI < 1.32, CV² < 0.49), *erratic* (ADI < 1.32, CV² >= 0.49), *intermittent*
(ADI >= 1.32, CV² < 0.49) and *lumpy* (ADI >= 1.32, CV² >= 0.49). The cut-offs are
where Croston's method (SBA) starts to beat exponential smoothing in their study.
``is_intermittent`` takes the last two (ADI >= 1.32, whatever the CV²) as the series
that need intermittent methods, and asks for a share of zero periods too so that a
series that merely starts late, or has the odd zero, stays on the regular path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import numpy as np

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import ForecastError, LocalModel
from tsops.forecasters.naive import NUMERIC_ERRORS, NaiveFallback, as_series, quiet, tidy_intervals

#: Syntetos–Boylan cut-off of the average demand interval (periods per demand)
SB_ADI_CUTOFF = 1.32
#: Syntetos–Boylan cut-off of the squared coefficient of variation of demand sizes
SB_CV2_CUTOFF = 0.49
#: default share of zero periods from which a series counts as intermittent
DEFAULT_MIN_ZERO_SHARE = 0.3

#: the model.yaml candidates (name -> kind and params) the intermittent class gets
#: unless model.yaml's ``intermittent.candidates`` names others: Croston with the
#: Syntetos–Boylan bias correction, TSB (which lets the demand probability decay, so
#: a product that stopped selling is forecast to fade out), and the two temporal
#: aggregation methods (ADIDA at the mean demand interval, IMAPA over all levels up to it)
DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    "croston_sba": {"kind": "intermittent", "params": {"method": "CrostonSBA"}},
    "tsb": {
        "kind": "intermittent",
        "params": {"method": "TSB", "options": {"alpha_d": 0.1, "alpha_p": 0.1}},
    },
    "adida": {"kind": "intermittent", "params": {"method": "ADIDA"}},
    "imapa": {"kind": "intermittent", "params": {"method": "IMAPA"}},
}


class DemandProfile(NamedTuple):
    """The numbers intermittency is judged by (unpacks as ``zero_share, adi, cv2``)."""

    #: share of periods with zero demand, in [0, 1]
    zero_share: float
    #: periods per period with demand (>= 1; inf when no period has demand)
    adi: float
    #: squared coefficient of variation of the non-zero demand sizes (0 for one demand,
    #: nan when there is none)
    cv2: float


def demand_profile(y: Any) -> DemandProfile:
    """The zero share, average demand interval and CV² of the demand series ``y``.

    Missing (non-finite) values are left out: they are neither demand nor its absence.
    """
    values = np.asarray(y, dtype=float).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return DemandProfile(float("nan"), float("nan"), float("nan"))
    sizes = values[values != 0]
    zero_share = 1.0 - sizes.size / n
    if sizes.size == 0:
        return DemandProfile(zero_share, float("inf"), float("nan"))
    adi = n / sizes.size
    mean = float(np.mean(sizes))
    cv2 = float(np.var(sizes) / mean**2) if mean != 0 else float("inf")
    return DemandProfile(zero_share, adi, cv2)


def is_intermittent(
    y: Any,
    min_zero_share: float = DEFAULT_MIN_ZERO_SHARE,
    min_adi: float = SB_ADI_CUTOFF,
) -> bool:
    """Whether ``y`` should be forecast with intermittent-demand methods.

    True when at least ``min_zero_share`` of its periods have zero demand and its
    average demand interval is at least ``min_adi`` (Syntetos–Boylan's 1.32 by
    default: their *intermittent* and *lumpy* classes), and no value is negative
    (intermittent methods forecast a non-negative demand rate; a series that goes
    below zero is not demand). A series without a single demand counts as
    intermittent: its forecast is zero.
    """
    values = np.asarray(y, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or (values < 0).any():
        return False
    zero_share, adi, _ = demand_profile(values)
    return zero_share >= min_zero_share and adi >= min_adi


def demand_class(y: Any) -> str:
    """Syntetos–Boylan class of ``y``: ``smooth``, ``erratic``, ``intermittent``,
    ``lumpy``, or ``none`` when it has no demand at all."""
    _, adi, cv2 = demand_profile(y)
    if not np.isfinite(adi):
        return "none"
    sparse = adi >= SB_ADI_CUTOFF
    variable = cv2 >= SB_CV2_CUTOFF
    if sparse:
        return "lumpy" if variable else "intermittent"
    return "erratic" if variable else "smooth"


#: statsforecast's intermittent-demand models this kind wraps. CrostonOptimized is left
#: out: its one-step in-sample forecasts, which the intervals come from, re-optimise at
#: every step (statsforecast warns it is "very expensive")
METHODS = ("CrostonClassic", "CrostonSBA", "TSB", "ADIDA", "IMAPA")

#: what statsforecast raises on data it cannot forecast
_FIT_ERRORS = (*NUMERIC_ERRORS, NotImplementedError, KeyError, ZeroDivisionError)


def _method_class(name: str) -> type:
    from statsforecast import models  # imported when a model is built, not with tsops

    if name not in METHODS:
        raise ValueError(
            f"intermittent method {name!r} is not supported; use one of {', '.join(METHODS)}"
        )
    return getattr(models, name)


class IntermittentModel(NaiveFallback, LocalModel):
    """One of statsforecast's intermittent-demand methods (``method``) on one series.

    Parameters
    ----------
    season_length:
        Accepted for the common contract and otherwise unused: these methods forecast a
        flat demand rate, with no seasonality.
    method:
        ``CrostonClassic``, ``CrostonSBA`` (Croston with the Syntetos–Boylan bias
        correction), ``TSB`` (Teunter–Syntetos–Babai), ``ADIDA`` or ``IMAPA``. IMAPA by
        default: it needs no parameter and forecasts a series without zeros as its
        level (SBA's fixed 0.95 discount would forecast 6.65 for a constant 7).
    options:
        Keyword arguments of that class; ``TSB`` needs ``alpha_d`` and ``alpha_p``.

    The point forecast is the method's: one value for every step, a demand rate per
    period. statsforecast gives these methods no intervals of their own, so they come
    from the empirical quantiles of the method's own in-sample errors at each step
    ahead: the fitted value at ``t`` is the method's forecast from the observations
    before ``t`` only, and as the forecast is flat it is also its forecast for ``t + k
    - 1``, so ``y[t + k - 1] - fitted[t]`` are genuine out-of-sample errors ``k`` steps
    ahead (a split conformal interval whose calibration windows are the series' own
    past). They keep the real shape of intermittent demand, mostly zeros and a long
    right tail, which a normal interval around a rate misses; on stationary demand they
    stay about as wide at every step, and they widen where the series drifts. Bounds
    never narrow with the horizon (each is the widest so far), and a series with no
    negative value gets no negative bound.

    ``update`` keeps the fitted errors and the options and re-runs the method on the
    new series: the methods' state is their smoothed demand and interval (and, for
    ADIDA and IMAPA, the aggregation level and smoothing weight of that run), cheap to
    re-derive; the intervals stay those of the training data.
    """

    min_length = 1

    def __init__(self, season_length: int = 1, method: str = "IMAPA", options: dict | None = None):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)
        self.method = str(method)
        self.options = dict(options or {})
        self._build()  # an unknown method or option fails when the config is read

    def _build(self) -> Any:
        try:
            return _method_class(self.method)(**self.options)
        except TypeError as exc:
            hint = (
                "TSB needs alpha_d and alpha_p, e.g. {alpha_d: 0.1, alpha_p: 0.1}"
                if self.method == "TSB"
                else "this method takes no options"
            )
            raise ValueError(
                f"intermittent {self.method}: invalid options ({exc}); {hint}"
            ) from exc

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.fallback_ = None
        self.nonnegative_ = bool((y >= 0).all())
        try:
            with quiet():
                out = self._build().forecast(y=y, h=1, fitted=True)
        except _FIT_ERRORS:
            return self._fall_back(y)
        fitted = np.asarray(out["fitted"], dtype=float)
        known = np.isfinite(fitted)
        # the observations and their one-step forecasts from the first finite one on:
        # the k-step errors pair y[t + k - 1] with fitted[t]
        first = int(np.argmax(known)) if known.any() else len(y)
        self.y_, self.fitted_ = y[first:].copy(), fitted[first:].copy()
        self.rate_ = float(np.asarray(out["mean"], dtype=float)[0])
        if not (np.isfinite(self.rate_) and np.isfinite(self.fitted_).all()):
            return self._fall_back(y)
        return self

    def update(self, y: np.ndarray) -> Self:
        new, y = self._copy_for_update(y, f"intermittent {self.method} needs {{n}} observations")
        if y is None:
            return new
        try:
            with quiet():
                out = self._build().forecast(y=y, h=1)
        except _FIT_ERRORS as exc:
            raise ForecastError(
                f"intermittent {self.method} could not forecast from this history ({exc}); "
                "send a longer history"
            ) from exc
        new.rate_ = float(np.asarray(out["mean"], dtype=float)[0])
        if not np.isfinite(new.rate_):
            raise ForecastError(
                f"intermittent {self.method} gave no finite forecast from this history; "
                "send finite, non-degenerate values"
            )
        return new

    def _bounds(self, h: int, level: float) -> tuple[np.ndarray, np.ndarray]:
        """``step_error_bounds``, kept per level for the longest horizon asked so far:
        they depend on the training data only, so the copies ``update`` makes share them
        (and a server computes them once, not on every request)."""
        cache = self.__dict__.setdefault("_bounds_cache", {})
        cached = cache.get(level)
        if cached is None or len(cached[0]) < h:
            cached = step_error_bounds(self.y_, self.fitted_, h, level)
            cache[level] = cached
        return cached[0][:h], cached[1][:h]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_bounds_cache", None)  # derived; rebuilt on the first forecast
        return state

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        if self.fallback_ is not None:
            return self.fallback_.forecast(h, levels)
        mean = np.full(h, self.rate_)
        out = {MEAN_COL: mean}
        for level in levels:
            lo, hi = self._bounds(h, level)
            out[lo_col(level)] = mean + lo
            out[hi_col(level)] = mean + hi
            if self.nonnegative_:
                out[lo_col(level)] = np.maximum(out[lo_col(level)], 0.0)
        return tidy_intervals(out, levels)


#: fewest k-step errors a step's bounds are read from; further steps keep the last such
MIN_STEP_ERRORS = 8


def step_error_bounds(
    y: np.ndarray, fitted: np.ndarray, h: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of a ``level``% interval from a flat forecast, for steps 1..h.

    At step ``k`` the errors are ``y[t + k - 1] - fitted[t]``; the bounds are their
    split conformal ranks (the ceil((n+1)(1-a/2))-th smallest error and its mirror, the
    widest seen when there are too few for the level). A step with fewer than
    ``MIN_STEP_ERRORS`` errors keeps the step before's bounds, and no bound narrows as
    the steps go on. No errors at all (one observation): no width.
    """
    n = len(y)
    tail = (1.0 - level / 100.0) / 2.0
    lo, hi = np.zeros(h), np.zeros(h)
    last = (0.0, 0.0)
    for k in range(1, h + 1):
        count = n - k + 1
        if count >= MIN_STEP_ERRORS or (k == 1 and count > 0):
            errors = np.sort(y[k - 1 :] - fitted[:count])
            rank = min(int(np.ceil((count + 1) * (1.0 - tail))), count)  # 1-based
            last = (float(errors[count - rank]), float(errors[rank - 1]))
        lo[k - 1], hi[k - 1] = last
    return np.minimum.accumulate(lo), np.maximum.accumulate(hi)
