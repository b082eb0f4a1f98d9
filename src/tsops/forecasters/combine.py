"""The registered forecaster: candidates combined by the rule model.yaml selects."""

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
    member).
    """

    def __init__(
        self,
        members: dict[str, Forecaster],
        rule: str,
        choice: dict[str, str] | None = None,
    ):
        if not members:
            raise ValueError("Combined needs at least one member forecaster")
        if rule == "per_series" and not choice:
            raise ValueError("rule per_series needs a choice of member per series")
        self.members = members
        self.rule = rule
        self.choice = choice or {}
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
        by_member: dict[str, list[str]] = {}
        for uid in wanted:
            by_member.setdefault(self.choice[uid], []).append(uid)
        found: dict[str, SeriesForecast] = {}
        for name, uids in by_member.items():
            member_histories = {u: histories[u] for u in uids if u in histories}
            for forecast in self.members[name].predict_series(h, levels, member_histories, uids):
                found[forecast.unique_id] = forecast
        return [found[uid] for uid in wanted]
