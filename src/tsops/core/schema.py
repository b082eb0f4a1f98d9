"""The one frame that flows through every step.

A long DataFrame with ``unique_id`` (str), ``ds`` (timestamp) and ``y`` (float);
backtests add ``cutoff``; forecasts carry ``mean`` plus ``lo-<level>`` /
``hi-<level>`` interval columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import pandas as pd
from pandas.tseries.offsets import BaseOffset

from tsops.core.errors import TsopsError

ID_COL = "unique_id"
TIME_COL = "ds"
TARGET_COL = "y"
CUTOFF_COL = "cutoff"
MEAN_COL = "mean"


class FrequencyError(TsopsError, ValueError):
    """A ``freq`` that is not a pandas offset alias."""


class LevelError(TsopsError, ValueError):
    """An interval level outside (0, 100)."""


def to_offset(freq: str) -> BaseOffset:
    """The pandas offset of ``freq``; deprecated aliases (M, Q, Y, H) are accepted."""
    try:
        with warnings.catch_warnings():
            # 'M'/'Q'/'Y' still work in pandas 2.x and appear in older model.yaml files.
            warnings.simplefilter("ignore", FutureWarning)
            return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise FrequencyError(
            f"freq {freq!r} is not a pandas offset alias; use e.g. MS, ME, QS, QE, "
            "W-SUN, D, h or YS"
        ) from exc


def lo_col(level: int | float) -> str:
    return f"lo-{_fmt_level(level)}"


def hi_col(level: int | float) -> str:
    return f"hi-{_fmt_level(level)}"


def _fmt_level(level: int | float) -> str:
    return str(int(level)) if float(level).is_integer() else str(level)


def interval_columns(levels: Iterable[int | float] | None) -> list[str]:
    cols: list[str] = []
    for level in sorted(levels or []):
        cols += [lo_col(level), hi_col(level)]
    return cols


def forecast_columns(levels: Sequence[int | float] | None) -> list[str]:
    return [ID_COL, TIME_COL, MEAN_COL, *interval_columns(levels)]


def check_levels(levels: Sequence[int | float] | None) -> list[float]:
    """Interval levels are percentages strictly between 0 and 100."""
    if levels is None:
        return []
    out = []
    for level in levels:
        value = float(level)
        if not 0 < value < 100:
            raise LevelError(
                f"interval level {level!r} is outside (0, 100): give coverage percentages "
                "such as 80 or 95"
            )
        out.append(value)
    return sorted(set(out))


def future_dates(last: pd.Timestamp, h: int, freq: str) -> pd.DatetimeIndex:
    """The ``h`` timestamps after ``last`` at frequency ``freq``."""
    # pandas' own parser: this runs per series on the server's hot path, where the
    # warning filter of ``to_offset`` would cost more than the dates
    offset = pd.tseries.frequencies.to_offset(freq)
    return pd.date_range(last + offset, periods=h, freq=offset)


def sort_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)
