"""Late corrections: periods at or before a watermark whose rows in the database differ
from the snapshot ``tsops ingest`` wrote (``tsops.platform.sql_source``).

The check is two-staged so that the common case (nothing changed) reads one row per
series: the database's count and sum per series up to the watermark (aggregated in
PostgreSQL) against the snapshot's (``differing_series``); only a series that differs is
read in full and compared row by row (``changed_periods``). The periods a ``fill``
policy added to the snapshot are listed in ``<snapshot>.filled.json`` (``filled_file``),
so that they are not taken for deleted rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.platform.database import SqlSourceError

#: corrected periods named in a report (the count says how many more)
SHOWN_CORRECTIONS = 10
#: relative tolerance of the per-series sums compared by the check (float sums in
#: another order differ in their last bits; a real correction is far larger)
SUM_TOLERANCE = 1e-9


@dataclass
class Corrections:
    """Periods at or before a watermark whose database rows differ from the snapshot."""

    #: one row per corrected period: series, time, snapshot value, database value
    changes: pd.DataFrame
    #: the corrected series' rows up to their watermark, as the database has them now
    rows: pd.DataFrame = field(repr=False)

    @property
    def series(self) -> list[str]:
        return sorted(self.changes[ID_COL].unique())

    def describe(self, model: str) -> str:
        shown = []
        for row in self.changes.head(SHOWN_CORRECTIONS).itertuples(index=False):
            before = "missing" if pd.isna(row.snapshot) else f"{row.snapshot:g}"
            after = "deleted" if pd.isna(row.database) else f"{row.database:g}"
            when = row.ds.date() if row.ds == row.ds.normalize() else row.ds
            shown.append(f"{row.unique_id} {when}: {before} -> {after}")
        more = len(self.changes) - len(shown)
        return (
            f"late corrections: {len(self.changes)} period(s) of {len(self.series)} series "
            f"already ingested differ in the database ({'; '.join(shown)}"
            f"{f'; {more} more' if more else ''}). The snapshot keeps the ingested values; "
            f"to take the database's, run `tsops ingest {model} --accept-corrections`"
        )


def filled_file(target: Path) -> Path:
    return target.with_name(f"{target.stem}.filled.json")


def read_filled(target: Path) -> set[tuple[str, pd.Timestamp]]:
    path = filled_file(target)
    if not path.exists():
        return set()
    listed = json.loads(path.read_text())
    return {(series, pd.Timestamp(t)) for series, times in listed.items() for t in times}


def filled_json(filled: pd.DataFrame) -> str:
    """The filled periods per series, deterministic (same periods, same bytes)."""
    listed: dict[str, list[str]] = {}
    for series, times in filled.groupby(ID_COL, sort=True)[TIME_COL]:
        listed[str(series)] = [t.isoformat() for t in sorted(times)]
    return json.dumps(listed, indent=1, sort_keys=True) + "\n"


def observed_rows(snapshot: pd.DataFrame, filled: set[tuple[str, pd.Timestamp]]) -> pd.DataFrame:
    """The snapshot's rows that came from the source (not filled), with a value."""
    frame = snapshot[[ID_COL, TIME_COL, TARGET_COL]]
    if filled:
        keys = pd.MultiIndex.from_frame(frame[[ID_COL, TIME_COL]])
        frame = frame.loc[~keys.isin(list(filled))]
    return frame.loc[np.isfinite(frame[TARGET_COL])]


def differing_series(checks: pd.DataFrame, observed: pd.DataFrame) -> list[str]:
    """Series whose database count or sum up to the watermark differs from the snapshot's."""
    grouped = observed.groupby(ID_COL)[TARGET_COL]
    scale = observed[TARGET_COL].abs().groupby(observed[ID_COL]).sum()
    mine = pd.DataFrame({"n": grouped.size(), "total": grouped.sum(), "scale": scale})
    mine = mine.reindex(checks.index).fillna(0.0)
    tolerance = SUM_TOLERANCE * (mine["scale"] + 1.0)
    differs = (checks["n"] != mine["n"]) | ((checks["total"] - mine["total"]).abs() > tolerance)
    return sorted(checks.index[differs.to_numpy()])


def changed_periods(
    database: pd.DataFrame, observed: pd.DataFrame, watermark: pd.Series
) -> pd.DataFrame:
    """Periods (up to each watermark) whose value differs between snapshot and database."""
    database = database.loc[database[TIME_COL] <= database[ID_COL].map(watermark)]
    both = observed.merge(
        database.dropna(subset=[TARGET_COL]),
        on=[ID_COL, TIME_COL],
        how="outer",
        suffixes=("_snapshot", "_database"),
        indicator=True,
    )
    duplicated = database.duplicated([ID_COL, TIME_COL], keep=False)
    if duplicated.any():
        repeated = database.loc[duplicated, [ID_COL, TIME_COL]].drop_duplicates()
        first = repeated.iloc[0]
        when = (
            first[TIME_COL].date()
            if first[TIME_COL] == first[TIME_COL].normalize()
            else first[TIME_COL]
        )
        raise SqlSourceError(
            f"the source has more than one row for series {first[ID_COL]} at {when} "
            f"({len(repeated)} series and period(s) repeated, all already ingested): keep one "
            "row per series and period (a primary key on (series, time) prevents this, as "
            "`tsops platform load-series` makes it); nothing was written"
        )
    changed = (both["_merge"] != "both") | (
        both[f"{TARGET_COL}_snapshot"] != both[f"{TARGET_COL}_database"]
    )
    out = both.loc[changed, [ID_COL, TIME_COL, f"{TARGET_COL}_snapshot", f"{TARGET_COL}_database"]]
    out.columns = [ID_COL, TIME_COL, "snapshot", "database"]
    return out.sort_values([ID_COL, TIME_COL]).reset_index(drop=True)
