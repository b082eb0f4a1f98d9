"""The registered forecaster: candidates combined by the rule model.yaml selects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd

from tsops.forecasters.base import Forecaster, wanted_ids
from tsops.schema import ID_COL, MEAN_COL, TIME_COL, interval_columns


class Combined(Forecaster):
    """Median of several members, one member per series, or one member for all.

    ``rule``: ``median_ensemble`` (median of the members' point forecasts and of
    each interval bound), ``per_series`` (``choice`` maps a series to its member) or
    ``best_overall`` (one member).
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

    def get_params(self) -> dict:
        return {"rule": self.rule, "members": sorted(self.members)}

    def fit(self, df: pd.DataFrame) -> Self:
        for member in self.members.values():
            member.fit(df)
        self._cutoffs_ = next(iter(self.members.values())).cutoffs_
        self._known = dict.fromkeys(map(str, self._cutoffs_.index))
        return self

    def _known_ids(self) -> dict[str, None]:
        # models pickled before this attribute existed are still registered and served
        if getattr(self, "_known", None) is None:
            self._known = dict.fromkeys(map(str, self._cutoffs_.index))
        return self._known

    def predict(
        self,
        h: int,
        level: Sequence[float] | None = None,
        history: pd.DataFrame | None = None,
        ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        wanted = wanted_ids(ids, history, self._known_ids())
        if self.rule == "per_series":
            return self._predict_per_series(h, level, history, wanted)
        forecasts = [m.predict(h, level, history, wanted) for m in self.members.values()]
        if len(forecasts) == 1:
            return forecasts[0]
        value_cols = [MEAN_COL, *interval_columns(level)]
        combined = forecasts[0][[ID_COL, TIME_COL]].copy()
        stacked = np.stack([f[value_cols].to_numpy(dtype=float) for f in forecasts])
        combined[value_cols] = np.median(stacked, axis=0)
        return combined

    def _predict_per_series(
        self,
        h: int,
        level: Sequence[float] | None,
        history: pd.DataFrame | None,
        wanted: list[str],
    ) -> pd.DataFrame:
        by_member: dict[str, list[str]] = {}
        for uid in wanted:
            by_member.setdefault(self.choice[uid], []).append(uid)
        parts = []
        for name, uids in by_member.items():
            member_history = None
            if history is not None and not history.empty:
                member_history = history[history[ID_COL].isin(uids)]
            parts.append(self.members[name].predict(h, level, member_history, uids))
        order = {uid: i for i, uid in enumerate(wanted)}
        out = pd.concat(parts, ignore_index=True)
        out = out.sort_values(ID_COL, key=lambda s: s.map(order), kind="stable")
        return out.reset_index(drop=True)
