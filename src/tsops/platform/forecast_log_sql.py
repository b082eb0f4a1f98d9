"""The forecast log in PostgreSQL: one table that every server replica writes to.

The server's background writer (``tsops.serving.forecast_log``) encodes each served
series forecast as one JSON line, the same bytes the file log writes. Here a batch of
those lines becomes rows in one statement: the lines go to the server as one JSON
array and PostgreSQL takes them apart (``jsonb_array_elements``), so the writer
thread spends no Python time per target time and a batch is one round trip. When the
database cannot take a batch, the writer keeps the same lines as a part file (its
spill folder) and sends that file again later: the primary key makes sending a batch
twice harmless (``ON CONFLICT DO NOTHING``), so a batch whose commit reached the
database but whose answer did not is not logged twice.

The table (``forecast_log``, created if missing, with the view below):

=====================  ===================  ==============================================
column                 type                 what
=====================  ===================  ==============================================
``request_id``         text, key            the request's id (``x-request-id`` or a uuid)
``model_name``         text, key            the served name (``--model NAME=...``)
``unique_id``          text, key            the series
``served_at``          timestamptz, key     when the server answered (microseconds)
``registered_model``   text                 the registered model (index: with served_at)
``model_version``      text                 the version that answered
``cutoff``             timestamptz          the last observation the forecast starts from
``ds``                 timestamptz[]        the target times, step 1 first
``mean``               float8[]             the point forecast at each target time
``intervals``          jsonb                ``{"lo-80": [...], "hi-80": [...], ...}``
``protocol``           text                 v1, v2 or grpc-v2
``with_history``       boolean              whether the request sent history
``extra``              jsonb                any other field the server logged
``logged_at``          timestamptz          when the row reached the database
=====================  ===================  ==============================================

One row per series forecast, not per target time: 18 times fewer rows to write for a
monthly model's horizon. The view ``forecast_log_targets`` has one row per target
time (``step``, ``ds``, ``mean`` and ``intervals`` at that step), for people and SQL
tools; ``tsops monitor`` gets the same records from :func:`read_records` (which reads
the table and expands the arrays itself: faster than the view).

Times are stored in UTC: a zone-less time in the log is read as UTC, as monitoring
reads the file log. The table lives in the URL's ``search_path`` (add
``?options=-csearch_path%3Dmyschema`` to the URL for another schema).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tsops.core.errors import TsopsError
from tsops.platform.database import masked

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

TABLE = "forecast_log"
VIEW = "forecast_log_targets"
#: seconds to wait for a connection (libpq's minimum is 2): the writer thread waits
#: this long at most before it spills a batch
CONNECT_TIMEOUT = 3
#: a statement taking longer (a lock, a stuck server) is cancelled and the batch spilled
STATEMENT_TIMEOUT = "30s"

#: the fields of a logged series forecast that have a column of their own
_COLUMNS = (
    "request_id",
    "model_name",
    "registered_model",
    "model_version",
    "unique_id",
    "cutoff",
    "ds",
    "mean",
    "served_at",
    "protocol",
    "with_history",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    request_id       text        NOT NULL,
    model_name       text        NOT NULL,
    unique_id        text        NOT NULL,
    served_at        timestamptz NOT NULL,
    registered_model text,
    model_version    text        NOT NULL,
    cutoff           timestamptz NOT NULL,
    ds               timestamptz[] NOT NULL,
    mean             float8[]    NOT NULL,
    intervals        jsonb       NOT NULL DEFAULT '{{}}',
    protocol         text,
    with_history     boolean,
    extra            jsonb       NOT NULL DEFAULT '{{}}',
    logged_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, model_name, unique_id, served_at)
);
CREATE INDEX IF NOT EXISTS {TABLE}_model_served_at ON {TABLE} (registered_model, served_at);
CREATE OR REPLACE VIEW {VIEW} AS
SELECT l.request_id, l.model_name, l.registered_model, l.model_version, l.protocol,
       l.with_history, l.served_at, l.unique_id, l.cutoff, t.ds, t.step::integer AS step,
       l.mean[t.step] AS mean,
       (SELECT jsonb_object_agg(i.key, i.value -> (t.step::integer - 1))
          FROM jsonb_each(l.intervals) AS i) AS intervals,
       l.extra, l.logged_at
  FROM {TABLE} AS l CROSS JOIN LATERAL unnest(l.ds) WITH ORDINALITY AS t(ds, step);
"""

# A JSON array of timestamps or numbers is a PostgreSQL array literal once its brackets
# are braces (ISO times and JSON numbers need no quoting; null is NULL): the cast is
# done by the server's C code, with no per-element SQL.
_INSERT = f"""
INSERT INTO {TABLE} (request_id, model_name, unique_id, served_at, registered_model,
                     model_version, cutoff, ds, mean, intervals, protocol, with_history, extra)
SELECT r->>'request_id', r->>'model_name', r->>'unique_id',
       to_timestamp((r->>'served_at')::float8), r->>'registered_model', r->>'model_version',
       (r->>'cutoff')::timestamptz,
       translate(r->>'ds', '[]', '{{}}')::timestamptz[],
       translate(r->>'mean', '[]', '{{}}')::float8[],
       COALESCE((SELECT jsonb_object_agg(key, value) FROM jsonb_each(r)
                  WHERE left(key, 3) IN ('lo-', 'hi-')), '{{}}'),
       r->>'protocol', (r->>'with_history')::boolean,
       COALESCE((SELECT jsonb_object_agg(key, value) FROM jsonb_each(r)
                  WHERE NOT (key = ANY(%(columns)s) OR left(key, 3) IN ('lo-', 'hi-'))),
                '{{}}')
  FROM jsonb_array_elements(%(lines)s::jsonb) AS r
ON CONFLICT DO NOTHING
"""


class ForecastLogDatabaseError(TsopsError):
    """The forecast log's database URL cannot be used, or its table cannot be read."""


class DatabaseUnavailable(ForecastLogDatabaseError):
    """The database cannot take a batch now (down, restarting, unreachable, refusing the
    credentials, too slow): keep the batch and send it again later."""


class BatchRejected(ForecastLogDatabaseError):
    """The database refuses a batch's content: sending it again cannot help."""


def connection_options(url: str, what: str = "TSOPS_FORECAST_LOG_URL") -> dict[str, Any]:
    """psycopg's connection keywords for a SQLAlchemy PostgreSQL URL
    (``postgresql://`` or ``postgresql+psycopg://``); ``what`` names the URL in errors."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ForecastLogDatabaseError(
            f"{what} is not a database URL ({exc}); use "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from exc
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in (
        "psycopg",
        "postgresql",
    ):
        raise ForecastLogDatabaseError(
            f"{what} names a {parsed.drivername!r} database "
            f"({parsed.render_as_string(hide_password=True)}); the forecast log is kept in "
            "PostgreSQL: use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    options: dict[str, Any] = {
        key: value
        for key, value in {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "dbname": parsed.database,
        }.items()
        if value is not None
    }
    options.update({k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()})
    options.setdefault("connect_timeout", CONNECT_TIMEOUT)
    # a server that vanishes mid-statement (network gone) is noticed in seconds, not hours
    options.setdefault("keepalives_idle", 5)
    options.setdefault("keepalives_interval", 2)
    options.setdefault("keepalives_count", 3)
    options.setdefault("tcp_user_timeout", 10_000)
    options.setdefault("application_name", "tsops-forecast-log")
    return options


class ForecastLogDatabase:
    """Writes batches of logged series forecasts into the ``forecast_log`` table.

    Cheap to make (it only checks the URL): a server makes it before forking its
    workers and each worker's writer thread connects on its first batch. One
    connection, used by that one thread, made again after any failure.
    """

    def __init__(self, url: str):
        self._options = connection_options(url)
        self.where = masked(url)
        self._connection: psycopg.Connection | None = None
        self._table_ready = False

    def __repr__(self) -> str:
        return f"ForecastLogDatabase({self.where!r})"

    # -- writing -------------------------------------------------------------------------

    def insert(self, lines: Sequence[bytes]) -> int:
        """Insert the JSON lines (one series forecast each); returns the rows that were
        new (a line already in the table, e.g. a batch sent again, adds none).

        Raises :class:`BatchRejected` when the database refuses the lines themselves
        (a value it cannot read: sending them again cannot help) and
        :class:`DatabaseUnavailable` for anything else (down, restarting, a read-only
        standby, wrong credentials, no right to the table): try again later.
        """
        import psycopg
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        if not lines:
            return 0
        body = (b"[" + b",".join(lines) + b"]").decode()
        # One quick second try, on a fresh connection: after a database restart the
        # kept connection is dead, and only using it tells.
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(2),
                retry=retry_if_exception_type(psycopg.OperationalError),
                before_sleep=lambda _state: self.close(),
                reraise=True,
            ):
                with attempt:
                    return self._insert(body)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise BatchRejected(
                f"the forecast log database {self.where} refused a batch "
                f"({type(exc).__name__}: {_first_line(exc)})"
            ) from exc
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(self._explain(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, body: str) -> int:
        import psycopg

        connection = self._connect()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                _utc(cursor)
                cursor.execute(_INSERT, {"lines": body, "columns": list(_COLUMNS)})
                return cursor.rowcount
        except psycopg.errors.UndefinedTable:
            self._table_ready = False  # dropped meanwhile: made again on the next try
            raise

    def _connect(self) -> psycopg.Connection:
        import psycopg

        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(autocommit=True, **self._options)
        if not self._table_ready:
            create_table(self._connection)
            self._table_ready = True
        return self._connection

    def check(self) -> None:
        """Connect and make the table if missing (raises :class:`DatabaseUnavailable`)."""
        import psycopg

        try:
            self._connect()
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(self._explain(exc)) from exc

    def _explain(self, exc: Exception) -> str:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            fix = (
                "check that it runs and that TSOPS_FORECAST_LOG_URL names it with the "
                "right user and password"
            )
        else:
            fix = (
                f"the user needs the right to create (or write) the table {TABLE} on a "
                "primary server: GRANT it, or create the table as the module "
                "tsops.platform.forecast_log_sql describes"
            )
        return (
            f"the forecast log database {self.where} cannot take batches "
            f"({type(exc).__name__}: {_first_line(exc)}); {fix}"
        )

    def close(self) -> None:
        if self._connection is not None:
            # a dead connection may fail to close; it is gone either way
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None


def create_table(connection: psycopg.Connection) -> None:
    """The ``forecast_log`` table, its index and view, made if missing (several replicas
    may start at once: the advisory lock lets one of them create, the others wait)."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [TABLE])
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL", [TABLE, VIEW]
        )
        if not cursor.fetchone()[0]:
            cursor.execute(_SCHEMA)


def _utc(cursor: psycopg.Cursor) -> None:
    # zone-less times in the log are UTC (as monitoring reads the file log); a
    # transaction-level setting also holds behind a pooler in transaction mode
    cursor.execute("SET LOCAL TIME ZONE 'UTC'")
    cursor.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ----------------------------------------------------------------------------- reading


def read_records(url: str, registered_model: str | None = None) -> pd.DataFrame:
    """The log's records, one per (request, series, target time), as the file log's
    reader gives them: ``step``, the ``lo-*`` / ``hi-*`` columns from ``intervals``, the
    ``extra`` fields as columns. Only ``registered_model``'s records (and those of
    servers that did not record one) when given. An empty frame when the table is
    empty or missing.

    Reads the table's rows (one per series forecast) and expands them here: that is
    ~10x faster than reading the per-target view row by row.
    """
    import orjson
    import pandas as pd
    import psycopg
    from psycopg.types.json import set_json_loads

    options = connection_options(url)
    where = masked(url)
    query = f"SELECT * FROM {TABLE}"
    params: list[Any] = []
    if registered_model is not None:
        query += " WHERE registered_model = %s OR registered_model IS NULL"
        params.append(registered_model)
    query += " ORDER BY served_at, request_id, model_name, unique_id"
    try:
        with psycopg.connect(**options) as connection:
            # binary: float arrays arrive as numbers, not text to parse (3x faster)
            cursor = connection.cursor(binary=True)
            set_json_loads(orjson.loads, cursor)
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
            if not cursor.fetchone()[0]:
                return pd.DataFrame()
            _utc(cursor)
            cursor.execute(query, params)
            columns = [c.name for c in cursor.description]
            rows = cursor.fetchall()
    except psycopg.OperationalError as exc:
        raise ForecastLogDatabaseError(
            f"cannot read the forecast log from {where} ({_first_line(exc)}); check that the "
            "database runs and that TSOPS_FORECAST_LOG_URL names it with the right user and "
            "password"
        ) from exc
    except psycopg.Error as exc:
        raise ForecastLogDatabaseError(
            f"cannot read the forecast log table {TABLE} in {where} ({_first_line(exc)}); "
            "it is made by `tsops serve` with TSOPS_FORECAST_LOG_URL set"
        ) from exc
    return _expand(pd.DataFrame(rows, columns=columns))


#: the record's fields in the order the file log has them (then step, values, extra)
_RECORD_ORDER = (
    "request_id",
    "model_name",
    "registered_model",
    "model_version",
    "protocol",
    "with_history",
    "served_at",
    "unique_id",
    "cutoff",
    "ds",
    "step",
    "mean",
)


def _expand(series: pd.DataFrame) -> pd.DataFrame:
    """Rows of series forecasts (arrays per target time) as one row per target time."""
    from itertools import chain

    import numpy as np
    import pandas as pd

    if series.empty:
        return pd.DataFrame()
    lengths = np.fromiter((len(d) for d in series["ds"]), dtype=np.int64, count=len(series))
    take = np.repeat(np.arange(len(series)), lengths)
    total = int(lengths.sum())
    scalars = [c for c in _RECORD_ORDER if c in series.columns and c not in ("ds", "mean")]
    out = series[scalars].iloc[take].reset_index(drop=True)
    out["ds"] = pd.to_datetime(list(chain.from_iterable(series["ds"])), utc=True)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out["step"] = np.arange(total) - starts + 1
    out["mean"] = _flat(series["mean"], lengths, total)
    levels = sorted({key for value in series["intervals"] for key in value}, key=_interval_key)
    for key in levels:
        out[key] = _flat([v.get(key) for v in series["intervals"]], lengths, total)
    extra = pd.DataFrame.from_records(series["extra"].tolist())
    for col in extra.columns:
        out[col] = extra[col].to_numpy()[take]
    return out


def _flat(arrays: Any, lengths: Any, total: int) -> Any:
    """Per-row lists of numbers (``None``: missing) as one float array of ``total``."""
    from itertools import chain

    import numpy as np

    rows = (a if a is not None else [None] * n for a, n in zip(arrays, lengths, strict=True))
    return np.array(list(chain.from_iterable(rows)), dtype=np.float64).reshape(total)


def _interval_key(column: str) -> tuple[float, str]:
    """``lo-80, hi-80, lo-95, hi-95``: by level, lower bound first."""
    side, _, level = column.partition("-")
    try:
        return float(level), side != "lo"
    except ValueError:
        return float("inf"), column


def has_records(url: str) -> bool:
    """Whether the log's table exists and holds a row (a clear error when the database
    cannot be read)."""
    import psycopg

    try:
        with psycopg.connect(**connection_options(url)) as connection:
            if not connection.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE]).fetchone()[0]:
                return False
            return bool(connection.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})").fetchone()[0])
    except psycopg.Error as exc:
        raise ForecastLogDatabaseError(
            f"cannot read the forecast log from {masked(url)} ({_first_line(exc)}); check "
            "that the database runs and that TSOPS_FORECAST_LOG_URL names it with the right "
            "user and password"
        ) from exc


def count_rows(url: str) -> tuple[int, int]:
    """``(series forecasts, target times)`` in the log: what a test or an operator
    compares with the requests served."""
    import psycopg

    with psycopg.connect(**connection_options(url)) as connection:
        row = connection.execute(
            f"SELECT count(*), COALESCE(sum(cardinality(ds)), 0) FROM {TABLE}"
        ).fetchone()
    return int(row[0]), int(row[1])
