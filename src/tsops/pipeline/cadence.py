"""The frequency, season length and horizon a panel's timestamps suggest (``tsops init``).

Each inferred value comes with the reason for it, which ``tsops init`` writes as a
comment next to the key in model.yaml.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries import offsets

from tsops.core.errors import TsopsError
from tsops.core.schema import to_offset

#: the horizons of the M4 competition (Makridakis et al., 2020), by kind of period; its
#: daily one (two weeks) in business days
_M4_HORIZONS = {
    "year": 6,
    "quarter": 8,
    "month": 18,
    "week": 13,
    "day": 14,
    "business day": 10,
    "hour": 48,
}
_ADJECTIVE = {
    "year": "yearly",
    "quarter": "quarterly",
    "month": "monthly",
    "week": "weekly",
    "day": "daily",
    "hour": "hourly",
}


class CadenceError(TsopsError, ValueError):
    """Timestamps from which no frequency can be inferred; the message says what to pass."""


@dataclass(frozen=True)
class Inferred:
    """What the data says about the model, each value with the reason for it."""

    freq: str
    season_length: int
    horizon: int
    why: dict[str, str]


#: series whose own dates vote on the frequency: enough to find the panel's, and
#: pandas.infer_freq costs a fraction of a millisecond per series
_VOTERS = 200


def infer_freq(ds_by_series: list[pd.DatetimeIndex]) -> tuple[str, str]:
    """The panel's pandas frequency alias and why.

    Series' own timestamps vote (``pandas.infer_freq``, which needs three evenly spaced
    ones; up to ``_VOTERS`` series spread over the panel); the most voted frequency
    wins if every series' dates lie on its grid. Otherwise (series with gaps, a series
    every other month among monthly ones) the coarsest calendar grid that holds every
    date and on which some two observations are one period apart.
    """
    votes: Counter[str] = Counter()
    step = max(len(ds_by_series) // _VOTERS, 1)
    for ds in ds_by_series[::step]:
        if len(ds) >= 3:
            freq = pd.infer_freq(ds)
            if freq is not None:
                votes[_plain_alias(freq)] += 1
    voters = sum(votes.values())
    for freq, n in votes.most_common():
        if _on_grid(ds_by_series, to_offset(freq)):
            if n == voters:
                return freq, f"inferred: every series with 3 or more regular dates is on {freq}"
            return freq, f"inferred: {n} of {voters} regular series are on {freq}, the most"
    freq = _grid_of(ds_by_series)
    if freq is None:
        raise CadenceError(
            "could not infer the frequency: no calendar grid (yearly ... minutely) holds "
            "every date; pass --freq (a pandas alias, e.g. MS, W-SUN, D or h)"
        )
    return freq, f"inferred: every date is on the {freq} grid (some series have gaps)"


def _on_grid(ds_by_series: list[pd.DatetimeIndex], offset: offsets.BaseOffset) -> bool:
    """Every date of each series is a whole number of ``offset`` periods after the
    series' first."""
    if isinstance(offset, offsets.Tick):
        step = offset.nanos
        return all(((ds.asi8 - ds.asi8[0]) % step == 0).all() for ds in ds_by_series)
    if offset.n == 1:
        # one calendar grid for all (month starts, Sundays ...): a date on it moves one
        # period forward and back to itself
        every = pd.DatetimeIndex(np.unique(np.concatenate([ds.values for ds in ds_by_series])))
        return bool(((every + offset) - offset == every).all())
    return all(
        ds.isin(pd.date_range(ds[0], ds[-1], freq=offset)).all()
        for ds in ds_by_series
        if len(ds) > 1
    )


def _plain_alias(freq: str) -> str:
    """``QS-OCT`` is the grid of ``QS`` (Jan/Apr/Jul/Oct), ``YS-JAN`` is ``YS``: the
    short spelling when it is the same grid."""
    offset = to_offset(freq)
    if offset.n == 1:
        if isinstance(offset, offsets.QuarterBegin) and offset.startingMonth % 3 == 1:
            return "QS"
        if isinstance(offset, offsets.QuarterEnd) and offset.startingMonth % 3 == 0:
            return "QE"
        if isinstance(offset, offsets.YearBegin) and offset.month == 1:
            return "YS"
        if isinstance(offset, offsets.YearEnd) and offset.month == 12:
            return "YE"
    return freq


# Calendar grids, coarsest first, for panels whose series all have gaps.
_GRIDS = (
    "YS",
    "YE",
    "QS",
    "QE",
    "MS",
    "ME",
    *(f"W-{day}" for day in ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
    "B",
    "D",
    "h",
    "min",
)


def _grid_of(ds_by_series: list[pd.DatetimeIndex]) -> str | None:
    for alias in _GRIDS:
        offset = to_offset(alias)
        if not _on_calendar(ds_by_series, offset):
            continue
        for ds in ds_by_series:
            if len(ds) >= 2 and ((ds[:-1] + offset) == ds[1:]).any():
                return alias
    return None


def _on_calendar(ds_by_series: list[pd.DatetimeIndex], offset: offsets.BaseOffset) -> bool:
    """Every date is on ``offset``'s calendar (a month start, a Sunday, a whole hour)."""
    every = pd.DatetimeIndex(np.unique(np.concatenate([ds.values for ds in ds_by_series])))
    if isinstance(offset, offsets.Tick):
        return bool((every.floor(offset) == every).all())
    return bool(((every + offset) - offset == every).all())


def _period_kind(offset: offsets.BaseOffset) -> str | None:
    if isinstance(offset, offsets.YearBegin | offsets.YearEnd):
        return "year"
    if isinstance(offset, offsets.QuarterBegin | offsets.QuarterEnd):
        return "quarter"
    if isinstance(offset, offsets.MonthBegin | offsets.MonthEnd):
        return "month"
    if isinstance(offset, offsets.Week):
        return "week"
    if isinstance(offset, offsets.BusinessDay):
        return "business day"
    if isinstance(offset, offsets.Day):
        return "day"
    if isinstance(offset, offsets.Hour):
        return "hour"
    if isinstance(offset, offsets.Tick):
        return "sub-hour"
    return None


def natural_season(freq: str) -> tuple[int, str]:
    """The season length of ``freq``: the periods of the cycle its data usually repeats
    (a year of months, quarters or weeks; a week of days; a day of hours), and why."""
    offset = to_offset(freq)
    kind, n = _period_kind(offset), offset.n
    per_year = {"quarter": 4, "month": 12, "week": 52}
    if kind in per_year and per_year[kind] % n == 0:
        return per_year[kind] // n, f"a year of {kind}s" if n == 1 else f"a year of {freq} periods"
    if kind == "day" and n == 1:
        return 7, "a week of days"
    if kind == "business day" and n == 1:
        return 5, "a week of business days"
    if kind in ("hour", "sub-hour"):
        per_day = pd.Timedelta(days=1) / pd.Timedelta(offset.nanos, unit="ns")
        if per_day > 1 and float(per_day).is_integer():
            return int(per_day), "a day of hours" if freq == "h" else f"a day of {freq} periods"
    return 1, f"no usual cycle for {freq} periods"


def infer(
    ds_by_series: list[pd.DatetimeIndex],
    freq: str | None = None,
    season_length: int | None = None,
    horizon: int | None = None,
) -> Inferred:
    """Frequency, season length and horizon for these series; a value given is kept.

    The season is the frequency's natural one when the median series holds two of
    them (fewer cannot be told apart from noise), else 1. The horizon is the M4
    competition's for the kind of period (one season below an hour), shortened when
    the median series would not keep two seasons (at least 8 observations) to fit on
    before it (``ModelConfig.min_train_length``).
    """
    why: dict[str, str] = {}
    if freq is None:
        freq, why["freq"] = infer_freq(ds_by_series)
    else:
        to_offset(freq)
        why["freq"] = "given (--freq)"
    median = int(statistics.median(len(ds) for ds in ds_by_series))
    if season_length is None:
        natural, reason = natural_season(freq)
        if natural > 1 and median < 2 * natural:
            season_length = 1
            why["season_length"] = (
                f"1: the median series ({median} obs) is shorter than two seasons of "
                f"{natural} ({reason})"
            )
        else:
            season_length, why["season_length"] = natural, reason
    else:
        why["season_length"] = "given (--season-length)"
    if horizon is None:
        kind = _period_kind(to_offset(freq))
        horizon = _M4_HORIZONS.get(kind or "", max(season_length, 1))
        why["horizon"] = (
            f"the M4 competition's horizon for {_ADJECTIVE.get(kind or '', kind)} data"
            if kind in _M4_HORIZONS
            else "one season"
        )
        if kind == "business day":
            why["horizon"] = "two weeks of business days, as the M4 competition's daily horizon"
        fit_on = max(2 * season_length, 8)
        if median - fit_on < horizon:
            horizon = max(median - fit_on, 1)
            why["horizon"] = (
                f"shortened so the median series ({median} obs) keeps {fit_on} to fit on"
            )
    else:
        why["horizon"] = "given (--horizon)"
    return Inferred(freq, int(season_length), int(horizon), why)
