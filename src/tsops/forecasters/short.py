"""Series too short for the regular candidates: the methods each one's length allows.

A panel's new products, stores or sensors have a few periods of history; the
regular candidates (two seasons of fitting, 36 lags of a global model) cannot use
them, and refusing the whole panel for them helps nobody. ``ShortSeries`` forecasts
one such series with the median of the methods its length supports, from a ladder:

- always: naive (the last value);
- 3 observations or more: ETS and Theta without seasonality (statsforecast's
  AutoETS and Theta, ``season_length=1``), which estimate a level (and ETS a trend)
  from a handful of points;
- one full season and one more observation: seasonal naive;
- two full seasons: ETS and Theta with the season (in place of the non-seasonal ones).

The median of several simple methods is the robust choice the M competitions keep
finding when no method can be chosen on the series' own history; with one member
(fewer than 3 observations) it is that member. Intervals are the median of the
members' bounds (as the registered median ensemble takes them), which keeps
``lo <= mean <= hi``, widened where needed so that they never narrow with the horizon.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Self

import numpy as np

from tsops.core.schema import MEAN_COL, hi_col, lo_col
from tsops.forecasters.base import LocalModel
from tsops.forecasters.naive import SeasonalNaive, as_series, tidy_intervals
from tsops.forecasters.statsforecast_models import StatsForecastModel

#: fewest observations from which ETS and Theta join naive
MIN_SMOOTHING_LENGTH = 3
#: full seasons needed before ETS and Theta model the season
SEASONAL_CYCLES = 2


def ladder(n: int, season_length: int) -> list[LocalModel]:
    """The unfitted methods a series of ``n`` observations supports (see the module)."""
    m = int(season_length)
    members: list[LocalModel] = [SeasonalNaive(1)]
    if m > 1 and n > m:
        members.append(SeasonalNaive(m))
    if n >= MIN_SMOOTHING_LENGTH:
        seasonal = m > 1 and n >= SEASONAL_CYCLES * m
        season = m if seasonal else 1
        members.append(StatsForecastModel(season, "AutoETS"))
        members.append(StatsForecastModel(season, "Theta"))
    return members


class ShortSeries(LocalModel):
    """The median of the methods a short series' length allows (see the module).

    Fitted members are kept, so ``update`` (forecasting from fresh history) re-filters
    each with its fitted parameters; the history must be as long as the longest
    member needs.
    """

    min_length = 1

    def __init__(self, season_length: int = 1):
        if int(season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length!r}")
        self.season_length = int(season_length)

    def fit(self, y: np.ndarray) -> Self:
        y = as_series(y)
        self.members_ = [member.fit(y) for member in ladder(len(y), self.season_length)]
        self.min_length = max(member.min_length for member in self.members_)
        return self

    @property
    def methods_(self) -> list[str]:
        """The fitted members, named for reports (``naive``, ``seasonal_naive``, ...)."""
        names = []
        for member in self.members_:
            if isinstance(member, SeasonalNaive):
                names.append("naive" if member.season_length == 1 else "seasonal_naive")
            else:
                season = "seasonal" if member.season_length > 1 else "non-seasonal"
                names.append(f"{member.model} ({season})")
        return names

    def update(self, y: np.ndarray) -> Self:
        new = copy.copy(self)
        new.members_ = [member.update(y) for member in self.members_]
        return new

    def forecast(self, h: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
        parts = [member.forecast(h, levels) for member in self.members_]
        if len(parts) == 1:
            return parts[0]
        combined = {col: np.median(np.stack([p[col] for p in parts]), axis=0) for col in parts[0]}
        return tidy_intervals(widening(combined, levels), levels)


def widening(values: dict[str, np.ndarray], levels: Sequence[float]) -> dict[str, np.ndarray]:
    """Bounds whose distance from the point forecast never shrinks with the horizon.

    The median of the members' bounds can narrow where one member's width steps (seasonal
    naive widens a season at a time) and crosses the others'; a later step is never
    less uncertain than an earlier one, so each half-width is its running maximum.
    """
    mean = values[MEAN_COL]
    out = dict(values)
    for level in levels:
        below = np.maximum.accumulate(mean - values[lo_col(level)])
        above = np.maximum.accumulate(values[hi_col(level)] - mean)
        out[lo_col(level)], out[hi_col(level)] = mean - below, mean + above
    return out
