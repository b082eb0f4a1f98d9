"""The frequency grid a series must sit on, and filling the gaps in it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.offsets import BaseOffset, Tick

from tsops.core.errors import TsopsError
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL, to_offset

FillPolicy = Literal["none", "ffill", "interpolate", "zero"]
FILL_POLICIES: tuple[str, ...] = ("none", "ffill", "interpolate", "zero")


class FillPolicyError(TsopsError, ValueError):
    """A fill policy that is not one of ``FILL_POLICIES``."""


def check_policy(policy: str) -> None:
    if policy not in FILL_POLICIES:
        raise FillPolicyError(f"fill policy {policy!r} is not one of {', '.join(FILL_POLICIES)}")


def fill_gaps(df: pd.DataFrame, *, freq: str, policy: FillPolicy | str) -> pd.DataFrame:
    """Put each series of a canonical frame on its full ``freq`` grid and fill ``y``.

    The grid runs from each series' first to its last timestamp. Missing periods
    become new rows; they and any NaN already in ``y`` are filled per ``policy``:

    - ``none``: return ``df`` unchanged;
    - ``ffill``: carry the last observation forward (a leading NaN stays NaN);
    - ``interpolate``: linear between the neighbouring observations (NaN at either
      end of a series stays NaN, since there is nothing to interpolate towards);
    - ``zero``: 0.0, for counts where no record means no event.

    Only ``y`` is filled; other columns of inserted rows are NaN. Timestamps off the
    grid are kept as they are (validation reports them). The result is sorted by
    ``(unique_id, ds)`` with a fresh index.
    """
    check_policy(policy)
    if policy == "none" or df.empty:
        return df
    offset = to_offset(freq)
    frame = df.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)
    frame = insert_missing_periods(frame, offset)
    y = frame[TARGET_COL].to_numpy(dtype="float64", copy=True)
    if np.isnan(y).any():
        codes = pd.factorize(frame[ID_COL])[0]
        if policy == "zero":
            y[np.isnan(y)] = 0.0
        elif policy == "ffill":
            y = pd.Series(y).groupby(codes).ffill().to_numpy()
        else:
            y = interpolate_inside(y, codes)
    frame[TARGET_COL] = y
    return frame


class Grid:
    """Integer positions on the ``offset`` grid covering [t_min, t_max].

    Tick offsets (D, h, min) are anchored at midnight of the earliest day, so hourly
    data must sit on the hour and daily data at midnight. Calendar offsets (MS, QS,
    W-SUN, YS, ...) use pandas' own anchoring via ``date_range``.
    """

    def __init__(self, offset: BaseOffset, t_min: int, t_max: int):
        self.offset = offset
        first = pd.Timestamp(t_min).normalize()
        self.tick = isinstance(offset, Tick)
        if self.tick:
            self.anchor = first.value
            self.step = offset.nanos
            self.points = None
        else:
            start = offset.rollback(first)
            end = offset.rollforward(pd.Timestamp(t_max)) + offset
            self.points = pd.date_range(start, end, freq=offset).asi8

    def locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each timestamp: the last grid position at or before it, and whether it is on it."""
        if self.tick:
            rel = t - self.anchor
            return rel // self.step, rel % self.step == 0
        k = np.searchsorted(self.points, t, side="right") - 1
        on = self.points[np.clip(k, 0, None)] == t
        return k, on & (k >= 0)

    def at(self, k: int | np.ndarray) -> pd.Timestamp | pd.DatetimeIndex:
        """Grid timestamp(s) at position(s) ``k``."""
        if self.tick:
            values = self.anchor + np.asarray(k, dtype="int64") * self.step
        else:
            values = self.points[np.asarray(k, dtype="int64")]
        if np.ndim(values) == 0:
            return pd.Timestamp(int(values))
        return pd.DatetimeIndex(values.astype("datetime64[ns]"))


def insert_missing_periods(frame: pd.DataFrame, offset: BaseOffset) -> pd.DataFrame:
    """Add a NaN row for every grid period missing inside each series' span."""
    codes, uniques = pd.factorize(frame[ID_COL], sort=True)
    t = frame[TIME_COL].to_numpy(dtype="datetime64[ns]").view("i8")
    grid = Grid(offset, int(t.min()), int(t.max()))
    k, on = grid.locate(t)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)] - 1
    # The span is the grid points inside [first, last]; an off-grid first timestamp
    # starts the span at the next grid point.
    k_first = k[starts] + (~on[starts]).astype(int)
    k_last = k[ends]
    counts = np.clip(k_last - k_first + 1, 0, None)
    total = int(counts.sum())
    if total == 0:
        return frame
    series = np.repeat(codes[starts], counts)
    offsets_in_series = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    ks = np.repeat(k_first, counts) + offsets_in_series
    width = int(max(k.max(), ks.max())) + 1
    have = codes[on].astype("int64") * width + k[on]
    want = series.astype("int64") * width + ks
    new = ~np.isin(want, have)
    if not new.any():
        return frame
    added = pd.DataFrame(
        {
            ID_COL: uniques[series[new]].astype(object),
            TIME_COL: grid.at(ks[new]),
            TARGET_COL: np.nan,
        }
    )
    out = pd.concat([frame, added], ignore_index=True)
    return out.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)


def interpolate_inside(y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Linear interpolation by position within each series, only between two observations."""
    pos = np.arange(len(y), dtype="float64")
    valid_pos = pd.Series(np.where(np.isnan(y), np.nan, pos))
    prev = valid_pos.groupby(codes).ffill().to_numpy()
    nxt = valid_pos.groupby(codes).bfill().to_numpy()
    inside = np.isnan(y) & ~np.isnan(prev) & ~np.isnan(nxt)
    out = y.copy()
    if inside.any():
        p, q = prev[inside].astype(int), nxt[inside].astype(int)
        weight = (pos[inside] - p) / (q - p)
        out[inside] = y[p] + weight * (y[q] - y[p])
    return out
