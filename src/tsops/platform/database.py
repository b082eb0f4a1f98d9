"""The series database: connecting to it (retried while it refuses), the series table's
layout, and loading a long frame into it.

Connecting (``database_url``, ``conninfo``, ``with_retries``, ``read_transaction``): the
URL is a SQLAlchemy URL taken from an environment variable (``source.url_env``, default
``TSOPS_SERIES_DATABASE_URL``), never printed with its password. A database that refuses
connections (down, restarting, starting up, or gone mid-read) is retried with tenacity
and then reported as unavailable (exit code 69); bad credentials, a missing database and
query errors fail at once with what to fix.

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
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pandas as pd

from tsops.core.errors import TsopsError, UnavailableError
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from tsops.core.config import SourceConfig

log = logging.getLogger(__name__)

#: the variable ``source.url_env`` names unless model.yaml says otherwise
DEFAULT_URL_ENV = "TSOPS_SERIES_DATABASE_URL"
#: seconds to wait for a connection before it counts as refused
CONNECT_TIMEOUT = 5
#: attempts at a database that refuses connections, the first wait (doubled after each
#: attempt) and the longest wait between two
RETRY_ATTEMPTS = 4
RETRY_FIRST_WAIT = 0.25
RETRY_MAX_WAIT = 2.0

T = TypeVar("T")

#: the table ``tsops platform load-series`` writes and ``source: {kind: sql}`` reads by default
DEFAULT_TABLE = "series"


class SqlSourceError(TsopsError, ValueError):
    """A ``kind: sql`` source that cannot be read as configured; the message says what
    to change (the URL, the table, a column, the query)."""


class DatabaseUnavailable(UnavailableError):
    """The database did not accept connections after the retries."""


# ----------------------------------------------------------------------------- connecting


def database_url(source: SourceConfig, url: str | None = None) -> str:
    """The SQLAlchemy URL of the source's database: ``url`` when given, else the value of
    the environment variable ``source.url_env`` (read through ``core.settings``)."""
    if url:
        return url
    from tsops.core.settings import environment_variable

    name = source.url_env or DEFAULT_URL_ENV
    value = environment_variable(name)
    if not value:
        raise SqlSourceError(
            f"source.kind sql reads its database URL from the environment variable {name}, "
            f"which is not set: export {name}=postgresql+psycopg://USER@HOST:PORT/DATABASE "
            "(`tsops platform up` writes one into .platform/env: source .platform/env)"
        )
    return value


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs (every
    database URL tsops prints goes through here)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: say nothing of its parts
        return "<a URL that does not parse>"


def conninfo(url: str) -> str:
    """libpq's connection string for a SQLAlchemy PostgreSQL URL
    (``postgresql://`` or ``postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SqlSourceError(  # not the value: it may hold a password
            f"the series database URL is not a SQLAlchemy URL ({exc}); write it as "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise SqlSourceError(
            f"source.kind sql reads PostgreSQL; {masked(url)} is {parsed.get_backend_name()!r}: "
            "use a postgresql+psycopg:// URL"
        )
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` means the server was not there to answer (worth retrying):
    refused or timed-out connections, a server starting up, shutting down or gone
    mid-query; not bad credentials, a missing database or a query error."""
    import psycopg

    if isinstance(exc, psycopg.errors.CannotConnectNow | psycopg.errors.AdminShutdown):
        return True
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        text = str(exc).lower()
        return not any(
            reason in text
            for reason in ("authentication failed", "does not exist", "no password supplied")
        )
    return False


def with_retries(attempt: Callable[[], T], url: str) -> T:
    """``attempt()``, again after a short wait while the database refuses connections;
    ``DatabaseUnavailable`` when it still does after ``RETRY_ATTEMPTS``."""
    import psycopg
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    retrying = Retrying(
        retry=retry_if_exception(_refused),
        stop=stop_after_attempt(RETRY_ATTEMPTS),
        wait=wait_exponential(multiplier=RETRY_FIRST_WAIT, max=RETRY_MAX_WAIT),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "series database %s refused (%s); retrying",
            masked(url),
            first_line(state.outcome.exception()),
        ),
    )
    try:
        return retrying(attempt)
    except psycopg.Error as exc:
        if _refused(exc):
            raise DatabaseUnavailable(
                f"the series database {masked(url)} did not answer after {RETRY_ATTEMPTS} "
                f"attempts ({first_line(exc)}): start it (`tsops platform up` for a local "
                "one) or fix host and port in the URL, then run again; nothing was written"
            ) from None
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            raise SqlSourceError(
                f"cannot connect to the series database {masked(url)}: {first_line(exc)}; "
                "fix the user, password or database name in the URL"
            ) from None
        raise SqlSourceError(
            f"reading the series database {masked(url)} failed: {first_line(exc)}; fix "
            "source.query, table or columns in model.yaml; nothing was written"
        ) from None


@contextmanager
def read_transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection in a read-only ``REPEATABLE READ`` transaction (one consistent view
    of the table for every query of a run), times in UTC."""
    import psycopg

    with psycopg.connect(conninfo(url), connect_timeout=CONNECT_TIMEOUT) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        connection.commit()
        with connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield connection


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- the table


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
