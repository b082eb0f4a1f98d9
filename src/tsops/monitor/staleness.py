"""Is the served model out of date, and have the actuals stopped arriving?

Two alerts, both counted in periods of the model's ``freq`` (calendar periods through
pandas offsets, not days: a month is a month whether it has 28 or 31 days):

- **model stale**: the cutoff a series is served from lies more than
  ``stale_after_periods`` periods before now; the model has not seen the newer data;
- **actuals overdue**: a series' newest actual lies more than
  ``actuals_overdue_periods`` periods before now; nothing can be scored or retrained
  on until the feed delivers again.

The age of a time ``t`` at ``now`` is the number of period boundaries of ``freq`` in
``(t, now]``: with ``MS``, 2020-01-01 is 4 periods old on 2020-05-01 and still on
2020-05-20. A value labelled with its period's start is complete one period later,
so an up-to-date monthly series is 1 period old at the start of a month.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tsops.core.schema import CUTOFF_COL, ID_COL, to_offset
from tsops.monitor.accuracy import records
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import as_utc_naive, utc_now

LAST_ACTUAL_COL = "last_actual"
CUTOFF_AGE_COL = "cutoff_age_periods"
ACTUALS_AGE_COL = "actuals_age_periods"
STALE_COL = "stale"
OVERDUE_COL = "actuals_overdue"


@dataclass(frozen=True)
class StalenessResult:
    """Per-series ages and the two alerts.

    ``by_series`` has ``unique_id``, ``cutoff`` (NaT: not served), ``cutoff_age_periods``,
    ``stale``, ``last_actual`` (NaT: no actual at all), ``actuals_age_periods`` and
    ``actuals_overdue``; ages are NaN where the time is missing.
    """

    now: pd.Timestamp
    freq: str
    stale_after_periods: int
    actuals_overdue_periods: int
    by_series: pd.DataFrame

    @property
    def stale_series(self) -> list[str]:
        return self.by_series.loc[self.by_series[STALE_COL], ID_COL].tolist()

    @property
    def overdue_series(self) -> list[str]:
        return self.by_series.loc[self.by_series[OVERDUE_COL], ID_COL].tolist()

    @property
    def model_stale(self) -> bool:
        return bool(self.stale_series)

    @property
    def actuals_overdue(self) -> bool:
        return bool(self.overdue_series)

    @property
    def alert(self) -> bool:
        return self.model_stale or self.actuals_overdue

    def numbers(self) -> dict[str, float]:
        """Flat numbers for MLflow and Prometheus (``tsops.monitor.publish``).

        Ages are the oldest over series (NaN when no series has the time): an alert
        rule on the maximum fires as soon as one series falls behind.
        """
        served = self.by_series[CUTOFF_AGE_COL].dropna()
        with_actuals = self.by_series[ACTUALS_AGE_COL].dropna()
        return {
            "cutoff_age_periods": float(served.max()) if len(served) else float("nan"),
            "stale_after_periods": float(self.stale_after_periods),
            "model_stale": float(self.model_stale),
            "stale_series": float(len(self.stale_series)),
            "actuals_age_periods": float(with_actuals.max()) if len(with_actuals) else float("nan"),
            "actuals_overdue_periods": float(self.actuals_overdue_periods),
            "actuals_overdue": float(self.actuals_overdue),
            "actuals_overdue_series": float(len(self.overdue_series)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "freq": self.freq,
            "stale_after_periods": self.stale_after_periods,
            "actuals_overdue_periods": self.actuals_overdue_periods,
            "model_stale": self.model_stale,
            "actuals_overdue": self.actuals_overdue,
            "stale_series": self.stale_series,
            "overdue_series": self.overdue_series,
            # NaT (not served, no actual) would serialise as the string "NaT"
            "series": records(self.by_series.astype(object).where(self.by_series.notna(), None)),
        }

    def summary(self) -> str:
        """What is late, by how much, and what to do about it."""
        frame = self.by_series
        lines = []
        served = frame.dropna(subset=[CUTOFF_COL])
        if self.model_stale:
            stale = frame[frame[STALE_COL]]
            oldest = stale.loc[stale[CUTOFF_AGE_COL].idxmax()]
            lines.append(
                f"MODEL STALE: {len(stale)} of {len(served)} served series are forecast from "
                f"a cutoff more than {self.stale_after_periods} period(s) ({self.freq}) "
                f"before {self.now.isoformat()} (oldest: {oldest[CUTOFF_COL].date()}, "
                f"{int(oldest[CUTOFF_AGE_COL])} periods): {_listing(stale[ID_COL])}. Retrain "
                "on the newer actuals and release the new version (`tsops retrain <model>`), or "
                "check that the newest release is the one being served"
            )
        elif len(served):
            lines.append(
                f"model fresh: every served cutoff is at most {self.stale_after_periods} "
                f"period(s) old (oldest {int(served[CUTOFF_AGE_COL].max())})"
            )
        if self.actuals_overdue:
            overdue = frame[frame[OVERDUE_COL]]
            # series fed together fall behind together: one line per newest date
            groups = [
                f"  newest {newest.date()} ({int(group[ACTUALS_AGE_COL].iloc[0])} periods "
                f"old): {_listing(group[ID_COL])}"
                if not pd.isna(newest)
                else f"  no actuals at all: {_listing(group[ID_COL])}"
                for newest, group in overdue.groupby(LAST_ACTUAL_COL, dropna=False, sort=True)
            ]
            lines.append(
                f"ACTUALS OVERDUE: {len(overdue)} series have no actual for more than "
                f"{self.actuals_overdue_periods} period(s); check the feed that delivers "
                "their actuals (the model's source, or the file passed with --actuals):"
            )
            lines.extend(groups)
        else:
            lines.append(
                f"actuals on time: every series' newest actual is at most "
                f"{self.actuals_overdue_periods} period(s) old"
            )
        return "\n".join(lines)


def _listing(ids: pd.Series, limit: int = 10) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def periods_between(start: pd.Timestamp, end: pd.Timestamp, freq: str) -> int:
    """Period boundaries of ``freq`` in ``(start, end]``; negative when ``end < start``."""
    offset = to_offset(freq)
    if end < start:
        return -periods_between(end, start, freq)
    grid = pd.date_range(start, end, freq=offset)
    # date_range starts at ``start`` itself only when it lies on the grid: it is not
    # a boundary after ``start``
    return len(grid) - int(len(grid) > 0 and grid[0] == start)


def staleness(
    now: pd.Timestamp | str | None,
    model_cutoffs: pd.Series,
    last_actuals: pd.Series,
    freq: str,
    stale_after_periods: int,
    actuals_overdue_periods: int,
) -> StalenessResult:
    """Age of each served cutoff and of each series' newest actual, with the alerts.

    ``now``: the time ages are counted to (None: the current UTC time);
    ``model_cutoffs``: the cutoff each series is served from, indexed by ``unique_id``;
    ``last_actuals``: each series' newest actual time, indexed by ``unique_id``;
    ``freq``: the model's pandas offset alias. A series is stale when its cutoff is
    more than ``stale_after_periods`` periods old, overdue when its newest actual is
    more than ``actuals_overdue_periods`` periods old; a served series without any
    actual is overdue too (its feed never delivered).
    """
    for name, value in (
        ("stale_after_periods", stale_after_periods),
        ("actuals_overdue_periods", actuals_overdue_periods),
    ):
        if int(value) != value or value < 1:
            raise MonitorError(f"{name} must be a whole number of periods >= 1, got {value!r}")
    to_offset(freq)
    now = as_utc_naive(now) if now is not None else utc_now()
    cutoffs = _times(model_cutoffs, "model_cutoffs", CUTOFF_COL)
    actuals = _times(last_actuals, "last_actuals", LAST_ACTUAL_COL)
    if cutoffs.empty:
        raise MonitorError(
            "no served cutoffs: the forecast log holds no forecasts of this model, so "
            "there is nothing to be stale; point --log at the directory its server writes to"
        )

    frame = pd.concat([cutoffs, actuals], axis=1).rename_axis(ID_COL).reset_index()
    frame = frame.sort_values(ID_COL, kind="stable", ignore_index=True)
    ages = {
        t: periods_between(t, now, freq)
        for t in pd.concat([frame[CUTOFF_COL], frame[LAST_ACTUAL_COL]]).dropna().unique()
    }
    frame[CUTOFF_AGE_COL] = frame[CUTOFF_COL].map(ages).astype("float64")
    # a missing age (NaN) compares False: a series that is not served is not stale
    frame[STALE_COL] = frame[CUTOFF_AGE_COL] > stale_after_periods
    frame[ACTUALS_AGE_COL] = frame[LAST_ACTUAL_COL].map(ages).astype("float64")
    never = frame[LAST_ACTUAL_COL].isna()
    frame[OVERDUE_COL] = (frame[ACTUALS_AGE_COL] > actuals_overdue_periods) | never
    columns = [
        ID_COL,
        CUTOFF_COL,
        CUTOFF_AGE_COL,
        STALE_COL,
        LAST_ACTUAL_COL,
        ACTUALS_AGE_COL,
        OVERDUE_COL,
    ]
    return StalenessResult(
        now=now,
        freq=freq,
        stale_after_periods=int(stale_after_periods),
        actuals_overdue_periods=int(actuals_overdue_periods),
        by_series=frame[columns],
    )


def _times(values: pd.Series, name: str, column: str) -> pd.Series:
    """``values`` as tz-naive UTC timestamps indexed by series id, checked."""
    if not isinstance(values, pd.Series):
        raise MonitorError(f"{name} must be a pandas Series indexed by unique_id")
    if values.index.has_duplicates:
        repeated = sorted(map(str, values.index[values.index.duplicated()].unique()))
        raise MonitorError(
            f"{name} names series {_listing(pd.Series(repeated))} more than once: give one "
            "time per series (e.g. the latest, with .groupby('unique_id').max())"
        )
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise MonitorError(
            f"{name}: {int(bad.sum())} value(s) are not timestamps (e.g. "
            f"{values[bad].iloc[0]!r} for series {values.index[bad][0]!r}); use ISO 8601"
        )
    parsed = parsed.dt.tz_localize(None).dropna()
    parsed.index = parsed.index.astype(str)
    return parsed.rename(column)
