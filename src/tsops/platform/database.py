"""The series table in PostgreSQL: its layout, and loading a long frame into it.

Layout (``create_series_table``), measured by benchmarks/sql_ingest.py on 1,000,000 rows:

- ``PRIMARY KEY (unique_id, ds)``: one row per series and period (a duplicate is
  refused at insert, not found later by ingest), and the index that serves one
  series' history (a feature lookup, a plot, the late-correction re-read of a series)
  without scanning the table;
- an index on ``ds``: the incremental read (rows after the watermark) reads only the
  newest periods instead of the whole table;
- TimescaleDB, where the extension is installed (``timescale=True``): the table is a
  hypertable chunked on ``ds``, so time ranges skip whole chunks. Debian's archive
  has no TimescaleDB package (it comes from Timescale's own apt repository); without
  it the two indexes above are the layout.

Loading (``write_series``) goes through ``COPY`` into a temporary table, then one
``INSERT ... ON CONFLICT (unique_id, ds) DO UPDATE``: a period already there takes the
new value (a late correction, which the next ``tsops ingest`` reports), the rest are
added; ``replace=True`` empties the table first. One transaction: a failed load leaves
the table as it was.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.core.errors import TsopsError
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

#: the table ``tsops platform load-series`` writes and ``source: {kind: sql}`` reads by default
DEFAULT_TABLE = "series"


class SeriesTableError(TsopsError, ValueError):
    """A frame or table that cannot be loaded as asked."""


def _identifier(table: str) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(*table.split("."))


def timescale_available(connection: psycopg.Connection) -> bool:
    """Whether the TimescaleDB extension can be created in this server."""
    row = connection.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return bool(row and row[0])


def create_series_table(
    connection: psycopg.Connection, table: str = DEFAULT_TABLE, timescale: bool = False
) -> None:
    """The series table with its layout (module docstring), if it does not exist."""
    from psycopg import sql

    name = _identifier(table)
    index = sql.Identifier(f"{table.split('.')[-1]}_ds")
    connection.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (unique_id text NOT NULL, ds timestamp NOT NULL, "
            "y double precision, PRIMARY KEY (unique_id, ds))"
        ).format(name)
    )
    if timescale:
        if not timescale_available(connection):
            raise SeriesTableError(
                "TimescaleDB is not installed in this PostgreSQL server (Debian's archive has "
                "no package: add Timescale's apt repository and install "
                "timescaledb-2-postgresql-<version>), or load without it"
            )
        connection.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        connection.execute(
            "SELECT create_hypertable(%s, 'ds', if_not_exists => TRUE, migrate_data => TRUE)",
            (table,),
        )
    else:
        connection.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (ds)").format(index, name))


def write_series(
    url: str,
    frame: pd.DataFrame,
    table: str = DEFAULT_TABLE,
    *,
    replace: bool = False,
    timescale: bool = False,
) -> int:
    """Load a long frame (``unique_id, ds, y``) into ``table`` at ``url`` (created with
    its layout if missing); returns the number of rows written. See the module docstring."""
    import psycopg
    from psycopg import sql

    from tsops.platform.sql_source import conninfo, masked

    missing = [c for c in (ID_COL, TIME_COL, TARGET_COL) if c not in frame.columns]
    if missing:
        raise SeriesTableError(
            f"the frame has no column {', '.join(missing)} (it has {', '.join(frame.columns)}): "
            "load a canonical series file (data/<model>/series.parquet, as tsops ingest writes)"
        )
    rows = frame[[ID_COL, TIME_COL, TARGET_COL]]
    repeated = rows.duplicated([ID_COL, TIME_COL])
    if repeated.any():
        first = rows.loc[repeated].iloc[0]
        raise SeriesTableError(
            f"the frame has {int(repeated.sum())} repeated (series, period) rows, e.g. "
            f"{first[ID_COL]} {first[TIME_COL]}: keep one row per series and period"
        )
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S")
    name = _identifier(table)
    try:
        with psycopg.connect(conninfo(url)) as connection, connection.transaction():
            create_series_table(connection, table, timescale)
            if replace:
                connection.execute(sql.SQL("TRUNCATE {}").format(name))
            connection.execute(
                "CREATE TEMPORARY TABLE incoming (unique_id text, ds timestamp, y float8) "
                "ON COMMIT DROP"
            )
            with connection.cursor().copy("COPY incoming FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
            connection.execute(
                sql.SQL(
                    "INSERT INTO {} (unique_id, ds, y) SELECT unique_id, ds, y FROM incoming "
                    "ON CONFLICT (unique_id, ds) DO UPDATE SET y = EXCLUDED.y "
                    "WHERE {}.y IS DISTINCT FROM EXCLUDED.y"
                ).format(name, name)
            )
            connection.execute(sql.SQL("ANALYZE {}").format(name))
    except psycopg.OperationalError as exc:
        from tsops.platform.sql_source import DatabaseUnavailable

        raise DatabaseUnavailable(
            f"cannot load series into {masked(url)}: {str(exc).strip().splitlines()[0]}; "
            "start the database (`tsops platform up`) or fix the URL; nothing was written"
        ) from None
    return len(rows)


def load_series_file(url: str, path: Path, table: str = DEFAULT_TABLE, **options: bool) -> int:
    """``write_series`` of a canonical series file (Parquet or CSV)."""
    from tsops.core.io import read_frame
    from tsops.pipeline.validate import coerce_frame

    return write_series(url, coerce_frame(read_frame(Path(path))), table, **options)
