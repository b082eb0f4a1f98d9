"""Constant work statsforecast repeats on every forecast, done once per process.

Forecasting one series from fresh history with the shipped models takes well under a
millisecond of compiled filtering, but statsforecast recomputes two constants on each
call through scipy, whose distribution objects are slow to build and to call:

- interval quantiles (``statsforecast.utils._quantiles``, used by AutoETS, AutoCES
  and the others behind ``_calculate_intervals``) build a frozen scipy distribution
  per forecast: ~0.6 ms of docstring and signature work, most of an AutoETS forecast;
- the Theta family's seasonality test calls ``scipy.stats.norm.ppf(0.95)`` per
  forecast: ~0.08 ms of argument checking.

``cache_constants`` wraps both so that the first answer for the same arguments is
kept: the same numbers (a quantile never changes), computed once. Only the normal
distribution is kept; anything else, and a statsforecast whose functions look
different, goes through unchanged. It patches statsforecast's module attributes, the
only way in without copying its forecast code; the golden test
(tests/forecasters/test_golden.py) checks the forecasts stay the same bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: argument sets kept per cache; levels come from requests, so the memory is bounded
_KEPT = 256


def cache_constants() -> None:
    """Install both caches (idempotent, cheap to call before every forecast)."""
    global _installed
    if _installed:
        return
    from statsforecast import theta, utils

    if not getattr(utils._quantiles, "_tsops_cached", False):
        utils._quantiles = _cached_quantiles(utils._quantiles)
    if not isinstance(getattr(theta, "norm", None), _KeptPpf) and hasattr(theta, "norm"):
        theta.norm = _KeptPpf(theta.norm)
    _installed = True


_installed = False


def _cached_quantiles(original: Any) -> Any:
    known: dict[tuple[float, ...], np.ndarray] = {}

    def quantiles(level, distribution="normal", dist_params=None):
        if distribution != "normal" or dist_params is not None:
            return original(level, distribution=distribution, dist_params=dist_params)
        levels = np.asarray(level, dtype=float)
        key = tuple(levels.ravel().tolist())
        if key not in known:
            if len(known) >= _KEPT:
                known.clear()
            known[key] = np.asarray(original(levels, distribution, dist_params))
        return known[key].copy()

    quantiles._tsops_cached = True  # type: ignore[attr-defined]
    return quantiles


class _KeptPpf:
    """A scipy distribution whose ``ppf`` of a plain float is kept; all else delegated."""

    def __init__(self, distribution: Any):
        self._distribution = distribution
        self._known: dict[float, Any] = {}

    def ppf(self, q, *args, **kwargs):
        if args or kwargs or type(q) is not float:
            return self._distribution.ppf(q, *args, **kwargs)
        found = self._known.get(q)
        if found is None:
            if len(self._known) >= _KEPT:
                self._known.clear()
            # a numpy scalar: immutable, safe to hand out again
            found = self._known[q] = self._distribution.ppf(q)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._distribution, name)
