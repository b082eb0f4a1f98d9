"""The registered forecaster: candidates combined by the rule model.yaml selects
(``Combined``), one such combination per class of series when a panel has several
(``ByClass``: regular, short and intermittent series, see ``tsops.pipeline.classes``).

Both keep forecasts and interval bounds at or above zero when built ``nonnegative``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd

from tsops.forecasters.base import Forecaster, Histories, SeriesForecast, wanted_ids


class Combined(Forecaster):
    """Median or mean of several members, one member per series, or one member for all.

    ``rule``: ``median_ensemble`` / ``mean_ensemble`` (median / mean of the members'
    point forecasts and of each interval bound; both keep ``lo <= mean <= hi``),
    ``per_series`` (``choice`` maps a series to its member) or ``best_overall`` (one
    member). ``nonnegative``: point forecasts and bounds below zero are raised to zero
    (after combining, so an ensemble is the same whether its members were clipped).
    """

    def __init__(
        self,
        members: dict[str, Forecaster],
        rule: str,
        choice: dict[str, str] | None = None,
        nonnegative: bool = False,
    ):
        if not members:
            raise ValueError("Combined needs at least one member forecaster")
        if rule == "per_series" and not choice:
            raise ValueError("rule per_series needs a choice of member per series")
        self.members = members
        self.rule = rule
        self.choice = choice or {}
        self.nonnegative = nonnegative
        self.freq = next(iter(members.values())).freq

    def fit(self, df: pd.DataFrame) -> Self:
        for member in self.members.values():
            member.fit(df)
        self._known = dict.fromkeys(map(str, self.cutoffs_.index))
        return self

    @property
    def cutoffs_(self) -> pd.Series:
        # every member is fitted on the same frame; members may also be fitted alone
        return next(iter(self.members.values())).cutoffs_

    def _known_ids(self) -> dict[str, None]:
        # models pickled before this attribute existed are still registered and served
        if getattr(self, "_known", None) is None:
            self._known = dict.fromkeys(map(str, self.cutoffs_.index))
        return self._known

    def predict_series(
        self,
        h: int,
        levels: Sequence[float],
        histories: Histories | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[SeriesForecast]:
        histories = histories or {}
        wanted = wanted_ids(ids, histories, self._known_ids())
        forecasts = self._combined(h, levels, histories, wanted)
        # models pickled before nonnegative existed forecast as they always did
        return at_least_zero(forecasts) if getattr(self, "nonnegative", False) else forecasts

    def _combined(
        self, h: int, levels: Sequence[float], histories: Histories, wanted: list[str]
    ) -> list[SeriesForecast]:
        if self.rule == "per_series":
            return self._predict_per_series(h, levels, histories, wanted)
        forecasts = [m.predict_series(h, levels, histories, wanted) for m in self.members.values()]
        if len(forecasts) == 1:
            return forecasts[0]
        combine = np.mean if self.rule == "mean_ensemble" else np.median
        combined = []
        for parts in zip(*forecasts, strict=True):
            first = parts[0]
            values = {
                col: combine(np.stack([p.values[col] for p in parts]), axis=0)
                for col in first.values
            }
            combined.append(SeriesForecast(first.unique_id, first.cutoff, first.ds, values))
        return combined

    def _predict_per_series(
        self, h: int, levels: Sequence[float], histories: Histories, wanted: list[str]
    ) -> list[SeriesForecast]:
        return routed(self.members, self.choice, h, levels, histories, wanted)


def routed(
    forecasters: dict[str, Forecaster],
    route: dict[str, str],
    h: int,
    levels: Sequence[float],
    histories: Histories,
    wanted: list[str],
) -> list[SeriesForecast]:
    """Each series in ``wanted`` forecast by ``forecasters[route[series]]`` (one call per
    forecaster, with its series' histories), in the order of ``wanted``."""
    by_forecaster: dict[str, list[str]] = {}
    for uid in wanted:
        by_forecaster.setdefault(route[uid], []).append(uid)
    found: dict[str, SeriesForecast] = {}
    for name, uids in by_forecaster.items():
        own_histories = {u: histories[u] for u in uids if u in histories}
        for forecast in forecasters[name].predict_series(h, levels, own_histories, uids):
            found[forecast.unique_id] = forecast
    return [found[uid] for uid in wanted]


def at_least_zero(forecasts: list[SeriesForecast]) -> list[SeriesForecast]:
    """``forecasts`` with every value below zero raised to zero (``lo <= mean <= hi``
    still holds: clipping is monotone)."""
    return [
        SeriesForecast(
            f.unique_id, f.cutoff, f.ds, {k: np.maximum(v, 0.0) for k, v in f.values.items()}
        )
        for f in forecasts
    ]


class ByClass(Forecaster):
    """One forecaster per class of series, each series forecast by its class' forecaster.

    ``forecasters`` maps a class (``regular``, ``short``, ``intermittent``) to the
    ``Combined`` fitted on that class' series; ``series_class`` maps every series to its
    class. ``fit`` fits each forecaster on its own series. ``nonnegative`` as in
    ``Combined`` (the class forecasters are usually built with it already).
    """

    def __init__(
        self,
        forecasters: dict[str, Forecaster],
        series_class: dict[str, str],
        nonnegative: bool = False,
    ):
        if not forecasters:
            raise ValueError("ByClass needs at least one class forecaster")
        unknown = sorted(set(series_class.values()) - set(forecasters))
        if unknown:
            raise ValueError(
                f"series of class {', '.join(unknown)} have no forecaster; classes with one: "
                f"{', '.join(forecasters)}"
            )
        self.forecasters = forecasters
        self.series_class = {str(k): v for k, v in series_class.items()}
        self.nonnegative = nonnegative
        self.freq = next(iter(forecasters.values())).freq

    def fit(self, df: pd.DataFrame) -> Self:
        from tsops.core.schema import ID_COL

        labels = df[ID_COL].astype(str).map(self.series_class)
        if labels.isna().any():
            missing = sorted(df.loc[labels.isna(), ID_COL].astype(str).unique())
            raise ValueError(f"no class for series {missing[:5]}: classify every series first")
        for series_class, forecaster in self.forecasters.items():
            forecaster.fit(df[labels == series_class])
        return self

    @property
    def cutoffs_(self) -> pd.Series:
        parts = [f.cutoffs_ for f in self.forecasters.values()]
        return pd.concat(parts).sort_index()

    @property
    def classes_(self) -> dict[str, str]:
        """The class of every series (the same as ``series_class``)."""
        return dict(self.series_class)

    def predict_series(
        self,
        h: int,
        levels: Sequence[float],
        histories: Histories | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[SeriesForecast]:
        histories = histories or {}
        wanted = wanted_ids(ids, histories, self.series_class)
        forecasts = routed(self.forecasters, self.series_class, h, levels, histories, wanted)
        return at_least_zero(forecasts) if self.nonnegative else forecasts
