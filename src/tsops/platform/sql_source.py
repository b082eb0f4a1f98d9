"""Series from PostgreSQL: ``source: {kind: sql, url_env, table | query, *_col}``.

Ingestion is incremental. The **watermark** of a series is its last period in the
snapshot ``tsops ingest`` wrote before (``data/<model>/series.parquet``); a run reads
only the rows after it (new series: all their rows), adds them, and writes the
snapshot again. So the same database contents and the same snapshot give the same
bytes in ``data/``, and DVC versions each ingest as before.

Rows at or before a watermark are not read again, but they are **checked**: one
aggregate query compares, per series, the number and the sum of the database's values
up to the watermark with the snapshot's. A series that differs (a value corrected,
a period back-filled or deleted after it was ingested) is read in full and compared
row by row, and the run reports which periods changed, from what to what. The
snapshot keeps the values it had (a forecast already scored against them stays
explainable) until the correction is accepted: ``tsops ingest <model>
--accept-corrections`` takes the database's rows for those series.

The snapshot of a model with a ``fill`` policy holds periods that are not in the
database; ``<snapshot>.filled.json`` (next to it, written only with a fill policy)
lists them, so that they are not mistaken for deleted rows.

All reads of one run are one read-only transaction (``REPEATABLE READ``): the check
and the new rows see the same state of the table. Rows come in PostgreSQL's binary
format (faster than ``COPY`` or ``pd.read_sql``; the numbers are in
benchmarks/sql_ingest.py). Connecting, and retrying while the database refuses, is
``tsops.platform.database``'s; comparing the periods before the watermark is
``tsops.platform.corrections``'. Nothing is written unless every check passed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.platform.corrections import (
    Corrections,
    changed_periods,
    differing_series,
    filled_file,
    filled_json,
    observed_rows,
    read_filled,
)
from tsops.platform.database import (
    DEFAULT_URL_ENV,
    DatabaseUnavailable,
    SqlSourceError,
    conninfo,
    database_url,
    first_line,
    masked,
    read_transaction,
    with_retries,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from tsops.core.config import ModelConfig, SourceConfig

__all__ = [
    "DEFAULT_URL_ENV",
    "Corrections",
    "DatabaseUnavailable",
    "SqlSourceError",
    "conninfo",
    "ingest",
    "masked",
    "read_all",
    "read_increment",
]


# ----------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Relation:
    """The rows a source reads (a table or a query) and its three columns."""

    source: SourceConfig

    def rows(self) -> sql.Composable:
        from psycopg import sql

        if self.source.query:
            return sql.SQL("({}) AS source_rows").format(sql.SQL(self.source.query.rstrip("; \n")))
        return sql.SQL("{} AS source_rows").format(sql.Identifier(*self.source.table.split(".")))

    def column(self, name: str) -> sql.Composable:
        from psycopg import sql

        return sql.SQL("source_rows.{}").format(sql.Identifier(name))

    @property
    def columns(self) -> tuple[str, str, str]:
        return (self.source.id_col, self.source.time_col, self.source.target_col)

    def select(self, where: sql.Composable | None = None) -> sql.Composable:
        """The three columns under their own names, the id as text; in no order (a sort
        in the database would cost a third of the read: validation sorts)."""
        from psycopg import sql

        ids, times, target = (self.column(c) for c in self.columns)
        return sql.SQL("SELECT CAST({} AS text) AS {}, {} AS {}, {} AS {} FROM {} {}").format(
            ids, sql.Identifier(self.source.id_col),
            times, sql.Identifier(self.source.time_col),
            target, sql.Identifier(self.source.target_col),
            self.rows(),
            sql.SQL("WHERE {}").format(where) if where is not None else sql.SQL(""),
        )  # fmt: skip

    def describe(self) -> str:
        return f"table {self.source.table}" if self.source.table else "the source query"


def _check_relation(connection: psycopg.Connection, relation: Relation, url: str) -> None:
    """A missing table or column named before anything is read, with what exists."""
    import psycopg
    from psycopg import sql

    source = relation.source
    try:
        with connection.transaction():  # a savepoint: a failed probe leaves the run's view
            cursor = connection.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(relation.rows()))
    except psycopg.errors.UndefinedTable:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]
        raise SqlSourceError(
            f"the series database {masked(url)} has no table {source.table!r}"
            + (f" (tables: {', '.join(tables[:20])})" if tables else " (it has no tables)")
            + ": fix source.table in model.yaml or create and fill the table"
        ) from None
    except psycopg.Error as exc:
        raise SqlSourceError(
            f"{relation.describe()} fails in {masked(url)}: {first_line(exc)}; fix "
            "source.query (or source.table) in model.yaml"
        ) from None
    present = [c.name for c in cursor.description or ()]
    missing = [c for c in relation.columns if c not in present]
    if missing:
        raise SqlSourceError(
            f"{relation.describe()} in {masked(url)} has no column "
            f"{', '.join(map(repr, missing))} (columns: {', '.join(present)}): set "
            "source.id_col, time_col and target_col in model.yaml to its column names"
        )


def _fetch_frame(
    connection: psycopg.Connection, query: sql.Composable, relation: Relation
) -> pd.DataFrame:
    """The rows of ``query`` as a frame: the id as text, the time as a timestamp (zoned
    times as UTC wall-clock times), the target as float; values that do not convert are
    left as they are, for validation to name.

    Rows come in PostgreSQL's binary format, decoded by psycopg's C loaders: 2.7x faster
    than ``COPY ... TO STDOUT`` (which hands Python one row at a time) for 1,000,000 rows
    (benchmarks/sql_ingest.py). Values are in the statement as literals, not
    parameters, so a ``%`` in a source query means itself."""
    with connection.cursor(binary=True) as cursor:
        cursor.execute(query)
        rows = cursor.fetchall()
    _, time_col, target_col = relation.columns
    frame = pd.DataFrame.from_records(rows, columns=list(relation.columns))
    target = frame[target_col]
    if target.dtype == object:  # numeric (Decimal) or text: numbers where all convert
        numbers = pd.to_numeric(target, errors="coerce")
        if numbers.notna().sum() == target.notna().sum():
            frame[target_col] = numbers.astype("float64")
    times = frame[time_col]
    if times.dtype == object:  # dates, or times stored as text
        with contextlib.suppress(ValueError, TypeError):
            times = pd.to_datetime(times, format="ISO8601")
    # timestamptz comes in the session's zone, UTC: kept as UTC wall-clock times, as
    # validation keeps zoned times (and the watermarks compare with them)
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    frame[time_col] = times
    return frame


def _old_part_checks(
    connection: psycopg.Connection, relation: Relation, watermark: pd.Series
) -> tuple[pd.DataFrame, list[str]]:
    """Per series with a watermark, the count and sum of its non-null values up to it;
    and the series the table has that the snapshot has not. One aggregate query (one
    row per series comes back)."""
    from psycopg import sql

    ids, times, target = (relation.column(c) for c in relation.columns)
    query = sql.SQL(
        "SELECT CAST({ids} AS text) AS series, mark.series IS NULL AS new, "
        "count({target}) AS n, sum(CAST({target} AS double precision)) AS total "
        "FROM {rows} LEFT JOIN unnest({series}::text[], {lasts}::timestamp[]) "
        "AS mark(series, last) ON CAST({ids} AS text) = mark.series "
        "WHERE mark.series IS NULL OR {times} <= mark.last GROUP BY 1, 2"
    ).format(
        ids=ids, target=target, rows=relation.rows(), times=times,
        series=sql.Literal(list(watermark.index)),
        lasts=sql.Literal([t.to_pydatetime() for t in watermark]),
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(query)
        found = pd.DataFrame(cursor.fetchall(), columns=["series", "new", "n", "total"])
    new_series = sorted(found.loc[found["new"], "series"].dropna())
    checks = found.loc[~found["new"]].set_index("series")[["n", "total"]]
    return checks.reindex(watermark.index).fillna({"n": 0, "total": 0.0}), new_series


def _new_rows(
    connection: psycopg.Connection,
    relation: Relation,
    watermark: pd.Series,
    new_series: list[str],
) -> pd.DataFrame:
    """Rows after each series' watermark, and every row of ``new_series`` (series the
    snapshot has not seen)."""
    from psycopg import sql

    if watermark.empty:
        return _fetch_frame(connection, relation.select(), relation)
    ids, times = relation.column(relation.source.id_col), relation.column(relation.source.time_col)
    # rows after the earliest watermark: a range an index on time serves (each series'
    # own watermark is applied below); a new series' rows through the (series, time) index
    where: sql.Composable = sql.SQL("{} > {}").format(
        times, sql.Literal(watermark.min().to_pydatetime())
    )
    if new_series:
        where = sql.SQL("{} OR CAST({} AS text) = ANY({}::text[])").format(
            where, ids, sql.Literal(new_series)
        )
    rows = _fetch_frame(connection, relation.select(where), relation)
    id_col, time_col, _ = relation.columns
    last = rows[id_col].map(watermark)
    return rows.loc[last.isna() | (rows[time_col] > last)].reset_index(drop=True)


def _series_rows(
    connection: psycopg.Connection, relation: Relation, series: list[str]
) -> pd.DataFrame:
    from psycopg import sql

    ids = relation.column(relation.source.id_col)
    where = sql.SQL("CAST({} AS text) = ANY({}::text[])").format(ids, sql.Literal(series))
    return _fetch_frame(connection, relation.select(where), relation)


def read_all(source: SourceConfig, url: str | None = None) -> pd.DataFrame:
    """Every row of the source, with its own column names (what ``tsops monitor``
    reads its actuals from, and a first ingest)."""
    url = database_url(source, url)
    relation = Relation(source)

    def attempt() -> pd.DataFrame:
        with read_transaction(url) as connection:
            _check_relation(connection, relation, url)
            return _fetch_frame(connection, relation.select(), relation)

    return with_retries(attempt, url)


# ----------------------------------------------------------------------------- ingesting


def _canonical(raw: pd.DataFrame, source: SourceConfig) -> pd.DataFrame:
    """The database's rows under the canonical names, for comparing with the snapshot."""
    frame = raw.rename(
        columns={source.id_col: ID_COL, source.time_col: TIME_COL, source.target_col: TARGET_COL}
    )[[ID_COL, TIME_COL, TARGET_COL]]
    # a target that is not numeric stays as it is: validation names its values
    return frame


@dataclass
class IngestRead:
    """What one run read: the new rows, and the late corrections it found."""

    new_rows: pd.DataFrame
    corrections: Corrections | None


def read_increment(
    source: SourceConfig,
    snapshot: pd.DataFrame | None,
    filled: set[tuple[str, pd.Timestamp]],
    url: str | None = None,
) -> IngestRead:
    """The rows after each series' watermark in ``snapshot`` and the corrections of the
    periods before it (see the module docstring), in one read-only transaction."""
    url = database_url(source, url)
    relation = Relation(source)
    watermark = (
        snapshot.groupby(ID_COL)[TIME_COL].max()
        if snapshot is not None and not snapshot.empty
        else pd.Series(dtype="datetime64[ns]")
    )

    def attempt() -> IngestRead:
        corrections = None
        new_series: list[str] = []
        with read_transaction(url) as connection:
            _check_relation(connection, relation, url)
            if not watermark.empty:
                observed = observed_rows(snapshot, filled)
                checks, new_series = _old_part_checks(connection, relation, watermark)
                differing = differing_series(checks, observed)
                if differing:
                    rows = _canonical(_series_rows(connection, relation, differing), source)
                    rows = rows.loc[rows[TIME_COL] <= rows[ID_COL].map(watermark)]
                    changes = changed_periods(
                        rows, observed.loc[observed[ID_COL].isin(differing)], watermark
                    )
                    if not changes.empty:
                        corrections = Corrections(changes, rows)
            new_rows = _new_rows(connection, relation, watermark, new_series)
        return IngestRead(new_rows, corrections)

    return with_retries(attempt, url)


def ingest(
    config: ModelConfig,
    target: Path,
    *,
    fill: str | None = None,
    accept_corrections: bool = False,
    url: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The model's snapshot after reading what is new in its SQL source, and notes for
    the person running it (late corrections, nothing new). Writes ``target`` (and its
    ``.filled.json`` with a fill policy) only when every check passed."""
    from tsops.pipeline.validate import check_frame

    source = config.source
    fill = fill or config.fill
    snapshot = pd.read_parquet(target) if target.exists() else None
    filled = read_filled(target)
    read = read_increment(source, snapshot, filled, url)
    notes: list[str] = []
    new_rows = _canonical(read.new_rows, source)

    if snapshot is None and new_rows.empty:
        raise SqlSourceError(
            f"{Relation(source).describe()} in {masked(database_url(source, url))} returned "
            "no rows: fill the table (or fix source.query) before the first ingest"
        )
    if snapshot is None:  # the first ingest: problems named by the table's own columns
        frame = check_frame(
            read.new_rows, freq=config.freq, fill=fill,
            id_col=source.id_col, time_col=source.time_col, target_col=source.target_col,
        )  # fmt: skip
        _write(frame, target, fill, source_keys=new_rows.dropna(subset=[TARGET_COL]))
        return frame, notes

    kept = snapshot[[ID_COL, TIME_COL, TARGET_COL]]
    source_keys = observed_rows(kept, filled)
    replaced = new_rows.iloc[:0]
    if read.corrections is not None and accept_corrections:
        corrected = read.corrections.series
        replaced = read.corrections.rows
        kept = kept.loc[~kept[ID_COL].isin(corrected)]
        source_keys = source_keys.loc[~source_keys[ID_COL].isin(corrected)]
        notes.append(
            f"accepted late corrections of {len(read.corrections.changes)} period(s) in "
            f"{len(corrected)} series ({', '.join(corrected[:10])})"
        )
    elif read.corrections is not None:
        notes.append(read.corrections.describe(config.name))
    elif accept_corrections:
        notes.append("no late corrections to accept")
    if new_rows.empty:
        notes.append("no new periods after the last ingested ones")
    if new_rows.empty and replaced.empty:
        return snapshot, notes  # nothing to write: the snapshot stays as it is

    # The kept rows were validated when they were ingested: check only what changes,
    # with each growing series' last kept row (a gap after it is found, or filled).
    growing = kept[ID_COL].isin(new_rows[ID_COL].unique())
    tails = kept.loc[growing].groupby(ID_COL, sort=False).tail(1)
    # under the table's own column names, so that a problem names the user's column
    own = {ID_COL: source.id_col, TIME_COL: source.time_col, TARGET_COL: source.target_col}
    checked = check_frame(
        pd.concat([tails, replaced, new_rows], ignore_index=True).rename(columns=own),
        freq=config.freq, fill=fill,
        id_col=source.id_col, time_col=source.time_col, target_col=source.target_col,
    )  # fmt: skip
    frame = pd.concat([kept.drop(index=tails.index), checked], ignore_index=True)
    frame = frame.sort_values([ID_COL, TIME_COL], kind="stable", ignore_index=True)
    source_keys = pd.concat(
        [source_keys, replaced.dropna(subset=[TARGET_COL]), new_rows.dropna(subset=[TARGET_COL])]
    )
    _write(frame, target, fill, source_keys)
    return frame, notes


def _write(frame: pd.DataFrame, target: Path, fill: str, source_keys: pd.DataFrame) -> None:
    """The snapshot, and with a fill policy the list of the periods it filled (those
    not among ``source_keys``, the rows that came from the database)."""
    from tsops.core.io import atomic_path, write_parquet

    listing = filled_file(target)
    if fill != "none":
        keys = pd.MultiIndex.from_frame(frame[[ID_COL, TIME_COL]])
        from_source = pd.MultiIndex.from_frame(source_keys[[ID_COL, TIME_COL]])
        listed = filled_json(frame.loc[~keys.isin(from_source)])
    write_parquet(frame, target)
    if fill != "none":
        with atomic_path(listing) as tmp:
            Path(tmp).write_text(listed)
    else:
        listing.unlink(missing_ok=True)
