"""The forecaster kinds a model.yaml candidate can name, and the factory that builds them.

Local kinds (one statistical model per series) are wrapped in ``PerSeries``; the
global kind (one model across all series) is a ``Forecaster`` itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tsops.core.errors import TsopsError
from tsops.forecasters.arima import ARIMA
from tsops.forecasters.base import Forecaster, ForecastError, LocalModel, PerSeries
from tsops.forecasters.ets import ETS
from tsops.forecasters.gbm import GlobalGBM
from tsops.forecasters.intermittent import IntermittentModel
from tsops.forecasters.naive import SeasonalNaive
from tsops.forecasters.short import ShortSeries
from tsops.forecasters.statsforecast_models import StatsForecastModel
from tsops.forecasters.theta import Theta

KINDS: dict[str, type[LocalModel] | type[Forecaster]] = {
    "seasonal_naive": SeasonalNaive,
    "ets": ETS,
    "arima": ARIMA,
    "theta": Theta,
    "statsforecast": StatsForecastModel,
    "gbm": GlobalGBM,
    "intermittent": IntermittentModel,
    "short": ShortSeries,
}

#: set from model.yaml's top-level keys (and the runner), never from candidate params
_RESERVED = ("freq", "season_length", "seed", "n_jobs")

ForecasterFactory = Callable[[], Forecaster]


class CandidateError(TsopsError, ValueError):
    """A candidate that names an unknown kind or parameter, or gives an invalid value."""


class Candidate(Protocol):
    """A model.yaml candidate: a kind and its hyperparameters."""

    kind: str
    params: Mapping[str, Any]


__all__ = [
    "ARIMA",
    "ETS",
    "KINDS",
    "Candidate",
    "CandidateError",
    "ForecastError",
    "Forecaster",
    "ForecasterFactory",
    "GlobalGBM",
    "IntermittentModel",
    "PerSeries",
    "SeasonalNaive",
    "StatsForecastModel",
    "Theta",
    "candidate_factories",
    "kind_params",
    "make_forecaster",
]


def kind_params(kind: str) -> dict[str, Any]:
    """The hyperparameters a kind accepts in ``params``, with their defaults."""
    cls = _kind_class(kind)
    signature = inspect.signature(cls.__init__)
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in signature.parameters.items()
        if name != "self" and name not in _RESERVED
    }


def make_forecaster(
    kind: str,
    params: dict[str, Any],
    *,
    freq: str,
    season_length: int,
    seed: int = 0,
    n_jobs: int | None = 1,
) -> Forecaster:
    """An unfitted forecaster of ``kind`` with hyperparameters ``params``.

    ``seed`` goes to the kinds that draw random numbers (they take a ``seed``), so the
    same model.yaml gives the same forecasts without seeding any global generator.
    Raises ``CandidateError`` naming the kind or parameter when either is unknown (or a
    parameter value is invalid), listing the valid ones.
    """
    cls = _kind_class(kind)
    params = dict(params or {})
    valid = kind_params(kind)
    reserved = sorted(set(params) & set(_RESERVED))
    if reserved:
        raise CandidateError(
            f"forecaster kind {kind!r}: {', '.join(reserved)} cannot be set in params; "
            "it comes from model.yaml's top level (freq, season_length, seed) or --n-jobs"
        )
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise CandidateError(
            f"forecaster kind {kind!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )
    if "seed" in inspect.signature(cls.__init__).parameters:
        params["seed"] = seed
    try:
        if issubclass(cls, LocalModel):
            model = cls(season_length=season_length, **params)
            return PerSeries(model, freq=freq, n_jobs=n_jobs)
        return cls(freq=freq, season_length=season_length, n_jobs=n_jobs, **params)
    except (TypeError, ValueError) as exc:
        raise CandidateError(f"forecaster kind {kind!r}: {exc}") from exc


def candidate_factories(
    candidates: Mapping[str, Candidate],
    *,
    freq: str,
    season_length: int,
    seed: int = 0,
    n_jobs: int | None = None,
) -> dict[str, ForecasterFactory]:
    """A zero-argument constructor of an unfitted forecaster per named candidate: the
    backtest builds a fresh one per window, training one per member."""

    def factory(candidate: Candidate) -> ForecasterFactory:
        return lambda: make_forecaster(
            candidate.kind,
            dict(candidate.params),
            freq=freq,
            season_length=season_length,
            seed=seed,
            n_jobs=n_jobs,
        )

    return {name: factory(candidate) for name, candidate in candidates.items()}


def _kind_class(kind: str) -> type[LocalModel] | type[Forecaster]:
    try:
        return KINDS[kind]
    except KeyError:
        raise CandidateError(
            f"unknown forecaster kind {kind!r}; valid kinds: {', '.join(sorted(KINDS))}"
        ) from None
