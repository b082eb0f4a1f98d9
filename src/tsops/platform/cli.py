"""``tsops platform up|down``: the data platform's servers as local processes.

``up`` starts PostgreSQL (databases ``series``, ``forecast_log`` and ``mlflow``),
Redis (unless ``--no-redis``) and, with ``--mlflow``, an ``mlflow server`` whose backend
store is the ``mlflow`` database; it writes ``<dir>/env``, shell ``export`` lines with
their addresses (``source .platform/env``). Running it again keeps the servers that
run. ``down`` stops them; their data stays in ``<dir>`` (delete the folder to start
afresh).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tsops.core.errors import reports_errors

if TYPE_CHECKING:
    from tsops.platform.services import PostgresServer

platform_app = typer.Typer(
    help="Local PostgreSQL, Redis and mlflow server for the data platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Folder = Annotated[
    Path, typer.Option("--dir", help="folder of the servers' data, logs and env file")
]
#: databases made on the platform's PostgreSQL, and the variable that names each
DATABASES = {
    "series": "TSOPS_SERIES_DATABASE_URL",
    "forecast_log": "TSOPS_FORECAST_LOG_URL",
}
MLFLOW_DATABASE = "mlflow"


@platform_app.command("up")
@reports_errors
def up_command(
    folder: Folder = Path(".platform"),
    no_redis: Annotated[bool, typer.Option("--no-redis", help="do not start Redis")] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="also start an mlflow server on PostgreSQL")
    ] = False,
) -> None:
    """Start the servers (or keep those running) and write <dir>/env."""
    from tsops.platform.services import start_postgres, start_redis

    folder = folder.absolute()
    postgres = start_postgres(folder / "postgres")
    env: dict[str, str] = {}
    for name, variable in DATABASES.items():
        env[variable] = ensure_database(postgres, name)
    typer.echo(f"PostgreSQL  {postgres.url}  (log: {postgres.log_file})")
    if not no_redis:
        redis_server = start_redis(folder / "redis")
        env["TSOPS_FEATURE_STORE_REDIS_URL"] = redis_server.url
        typer.echo(f"Redis       {redis_server.url}")
    if mlflow:
        from tsops.platform.mlflow_server import start_mlflow_server

        tracking_uri = start_mlflow_server(
            folder / "mlflow", backend_store_uri=ensure_database(postgres, MLFLOW_DATABASE)
        ).url
        env["MLFLOW_TRACKING_URI"] = tracking_uri
        typer.echo(f"mlflow      {tracking_uri}")
    env_file = folder / "env"
    write_env(env_file, env)
    typer.echo(f"wrote {env_file}; load it with: source {env_file}")


@platform_app.command("down")
@reports_errors
def down_command(folder: Folder = Path(".platform")) -> None:
    """Stop the servers `tsops platform up` started in <dir> (their data stays)."""
    from tsops.platform.services import postgres_in, redis_in

    folder = folder.absolute()
    stopped = []
    if (folder / "mlflow").exists():
        from tsops.platform.mlflow_server import stop_mlflow_server

        if stop_mlflow_server(folder / "mlflow"):
            stopped.append("mlflow")
    if (folder / "redis" / "port.txt").exists():
        redis_server = redis_in(folder / "redis")
        if redis_server.running():
            redis_server.stop()
            stopped.append("Redis")
    if (folder / "postgres" / "pgdata").exists():
        postgres = postgres_in(folder / "postgres")
        if postgres.running():
            postgres.stop()
            stopped.append("PostgreSQL")
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else f"nothing ran from {folder}")


@platform_app.command("load-series")
@reports_errors
def load_series_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="a long series file (unique_id, ds, y), e.g. data/<model>/series.parquet"
        ),
    ],
    table: Annotated[
        str, typer.Option("--table", help="table (or schema.table) to load")
    ] = "series",
    replace: Annotated[
        bool, typer.Option("--replace", help="empty the table first (default: insert or update)")
    ] = False,
    timescale: Annotated[
        bool,
        typer.Option("--timescale", help="a TimescaleDB hypertable (needs the extension)"),
    ] = False,
    url_env: Annotated[
        str, typer.Option("--url-env", help="environment variable holding the database URL")
    ] = "TSOPS_SERIES_DATABASE_URL",
) -> None:
    """Load a long series file into a PostgreSQL table, what a `kind: sql` source reads.

    The table is made with the time-series layout (primary key (unique_id, ds), index on
    ds); periods already there take the file's values (corrections).
    """
    from tsops.core.config import SourceConfig
    from tsops.platform.database import database_url, load_series_file, masked

    url = database_url(SourceConfig(kind="sql", table=table, url_env=url_env))
    written = load_series_file(url, file, table, replace=replace, timescale=timescale)
    typer.echo(f"{written} rows from {file} -> {masked(url)} table {table}")


def ensure_database(server: PostgresServer, name: str) -> str:
    """The URL of database ``name`` on ``server``, created if missing."""
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=tsops dbname=postgres", autocommit=True
    ) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return server.database_url(name) if exists else server.create_database(name)


def write_env(path: Path, env: dict[str, str]) -> None:
    """Shell ``export`` lines, written whole (a reader never sees half a file)."""
    lines = ["# written by `tsops platform up`; load with: source " + str(path)]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    partial = path.with_suffix(".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)
