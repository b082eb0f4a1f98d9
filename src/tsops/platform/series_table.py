"""Series into PostgreSQL: a long frame written as the table a ``kind: sql`` source reads.

``tsops platform load-series FILE`` puts the series a file source (or ``tsops ingest``)
has into a database, as a team moving to the platform would once: one row per series
and period, ``unique_id text, ds timestamp, y double precision``, whose primary key
``(unique_id, ds)`` is the (series, time) index the source's reads use (see
``tsops.platform.sql_source``). The rows go in with ``COPY ... FROM STDIN``, in one
transaction: a failure leaves the table as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tsops.core.errors import TsopsError, UnavailableError, reports_errors
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

if TYPE_CHECKING:
    import pandas as pd

#: the environment variable a ``kind: sql`` source reads its URL from by default
URL_ENV = "TSOPS_SERIES_DATABASE_URL"


class SeriesTableError(TsopsError):
    """The series could not be written as asked; the message says what to change."""


def load_series(frame: pd.DataFrame, url: str, table: str = "series", replace: bool = False) -> int:
    """Write ``frame`` (``unique_id``, ``ds``, ``y``) into ``table`` at ``url`` (created
    with its primary key if missing; emptied first if ``replace``); returns the rows
    written. A row already there (same series and period) is refused, naming it."""
    import psycopg
    from psycopg import sql

    from tsops.platform.sql_source import conninfo, masked

    missing = {ID_COL, TIME_COL, TARGET_COL} - set(frame.columns)
    if missing:
        raise SeriesTableError(
            f"the series have no column {sorted(missing)}; give the long format "
            f"({ID_COL}, {TIME_COL}, {TARGET_COL}) that `tsops ingest` writes"
        )
    name = sql.Identifier(*table.split(".", 1))
    rows = frame[[ID_COL, TIME_COL, TARGET_COL]]
    try:
        with psycopg.connect(conninfo(url), connect_timeout=10) as connection:
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (unique_id text NOT NULL, "
                    "ds timestamp NOT NULL, y double precision, PRIMARY KEY (unique_id, ds))"
                ).format(name)
            )
            if replace:
                connection.execute(sql.SQL("TRUNCATE {}").format(name))
            with connection.cursor().copy(
                sql.SQL("COPY {} (unique_id, ds, y) FROM STDIN").format(name)
            ) as copy:
                for uid, ds, y in rows.itertuples(index=False, name=None):
                    copy.write_row((str(uid), ds, None if y != y else float(y)))
    except psycopg.errors.UniqueViolation as exc:
        raise SeriesTableError(
            f"{table} at {masked(url)} already has some of these rows "
            f"({exc.diag.message_detail or exc}); nothing was written: pass --replace to "
            "empty the table first"
        ) from exc
    except psycopg.OperationalError as exc:
        raise UnavailableError(
            f"cannot write to {masked(url)} ({str(exc).strip().splitlines()[0]}): start the "
            "database (`tsops platform up`) or fix the URL; nothing was written"
        ) from exc
    except psycopg.Error as exc:
        raise SeriesTableError(
            f"{table} at {masked(url)}: {str(exc).strip().splitlines()[0]}; nothing was written"
        ) from exc
    return len(rows)


@reports_errors
def load_series_command(
    file: Annotated[
        Path,
        typer.Argument(help="Parquet or CSV in the long format, e.g. data/<model>/series.parquet"),
    ],
    table: Annotated[str, typer.Option(help="the table (or schema.table) to write")] = "series",
    replace: Annotated[
        bool, typer.Option("--replace", help="empty the table before writing")
    ] = False,
) -> None:
    """Copy a long-format series file into a PostgreSQL table that a `kind: sql` source
    reads (URL from TSOPS_SERIES_DATABASE_URL; table made with its (unique_id, ds) key)."""
    import pandas as pd

    from tsops.core.settings import load_settings

    url = load_settings().series_database_url
    if not url:
        raise SeriesTableError(
            f"{URL_ENV} is not set: export the database's SQLAlchemy URL (`source "
            ".platform/env` after `tsops platform up`)"
        )
    if not file.exists():
        raise SeriesTableError(f"{file} does not exist; `tsops ingest <model>` writes one")
    frame = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    if TIME_COL in frame.columns:
        frame[TIME_COL] = pd.to_datetime(frame[TIME_COL])
    written = load_series(frame, url, table, replace)
    typer.echo(
        f"{table}: {written:,} rows of {frame[ID_COL].nunique():,} series written from {file}"
    )
