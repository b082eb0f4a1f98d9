"""Ingesting series from PostgreSQL against reading the same rows from Parquet, and what
the table's layout does to the reads ingestion and monitoring make.

One run, one machine, ratios taken within the run:

- **read**: 1,000,000 rows (1,000 daily series of 1,000 days) into a pandas frame, from
  the Parquet snapshot (``pd.read_parquet``) and from PostgreSQL as the sql source reads
  them (binary rows, psycopg's C loaders), through ``COPY ... TO STDOUT`` as CSV parsed
  by pyarrow, and with ``pd.read_sql`` over SQLAlchemy (what a first try would use);
- **ingest**: the whole ``tsops ingest`` step (read, validate, write the snapshot) from a
  Parquet file and from the table, first ingest; then the **incremental** ingest of one
  new day (1,000 rows) onto the 1,000,000-row snapshot (its late-correction check is
  one aggregate query over the table);
- **layout**: the three queries the platform makes (one series' history, the newest
  period of every series, the late-correction aggregate), on a plain heap, with the
  index on ``(series, time)``, and with the table clustered on that index. TimescaleDB
  (a hypertable chunked on time) is measured when the extension is installed; the run
  records whether it is.

Each timing is the median of ``--repeats`` runs after one warm-up.

    .venv/bin/python benchmarks/sql_ingest.py                # ~1-2 min: results/sql_ingest.json
    .venv/bin/python benchmarks/sql_ingest.py --rows 100000  # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from tsops.core.config import parse_model_config
from tsops.core.io import read_frame, write_parquet
from tsops.pipeline.validate import check_frame
from tsops.platform import sql_source
from tsops.platform.services import start_postgres

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "sql_ingest.json"
MODEL = """\
name: bench
source: {kind: sql, table: series, id_col: unique_id, time_col: ds, target_col: y}
freq: D
horizon: 7
season_length: 7
levels: [80]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
backtest: {windows: 2, step: 7}
selection: {rule: best_overall}
serving: {max_horizon: 14}
fill: none
seed: 0
"""


def timed(fn: Callable[[], object], repeats: int) -> dict:
    """Median, min and max wall seconds of ``fn`` over ``repeats`` runs after a warm-up,
    and the median CPU seconds of this process (the client's share: PostgreSQL's own
    work runs in its processes and shows in the wall time only)."""
    fn()
    runs, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"median_s": round(statistics.median(runs), 4), "min_s": round(min(runs), 4),
            "max_s": round(max(runs), 4), "client_cpu_s": round(statistics.median(cpu), 4),
            "runs": len(runs)}  # fmt: skip


def synthetic(rows: int, n_series: int, seed: int = 0) -> pd.DataFrame:
    periods = rows // n_series
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"S{i:05d}" for i in range(n_series)], periods)
    ds = np.tile(pd.date_range("2020-01-01", periods=periods, freq="D").to_numpy(), n_series)
    y = (100 + rng.normal(size=(n_series, periods)).cumsum(axis=1)).ravel().round(3)
    return pd.DataFrame({"unique_id": ids, "ds": ds, "y": y})


def load_table(conn: psycopg.Connection, frame: pd.DataFrame, table: str = "series") -> None:
    conn.execute(f"CREATE TABLE {table} (unique_id text NOT NULL, ds timestamp NOT NULL, y float8)")
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d")
    with conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    conn.execute(f"ANALYZE {table}")


def copy_csv(url: str) -> pd.DataFrame:
    """The same rows through ``COPY ... TO STDOUT`` as CSV, parsed by pyarrow (the sql
    source's first implementation): libpq hands the client one row at a time."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    query = "COPY (SELECT unique_id, ds, y FROM series) TO STDOUT WITH (FORMAT csv, HEADER true)"
    with psycopg.connect(sql_source.conninfo(url)) as conn, conn.cursor().copy(query) as copy:
        data = b"".join(copy)
    options = pa_csv.ConvertOptions(column_types={"ds": pa.timestamp("us")})
    return pa_csv.read_csv(pa.py_buffer(data), convert_options=options).to_pandas()


def query_timer(conn: psycopg.Connection, query: str, params: tuple, repeats: int) -> dict:
    """The query's time on an open connection (rows fetched), and the plan's top node."""
    result = timed(lambda: conn.execute(query, params).fetchall(), repeats)
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()[0][0]["Plan"]
    nodes = []
    while plan:
        nodes.append(
            plan["Node Type"] + (f" on {plan['Index Name']}" if "Index Name" in plan else "")
        )
        plan = (plan.get("Plans") or [None])[0]
    return result | {"plan": " > ".join(nodes)}


def layout_queries(url: str, frame: pd.DataFrame, repeats: int) -> dict:
    """The platform's reads: one series' history (a feature lookup, a plot), the newest
    period of every series (the sql source's incremental read: after the watermark),
    and its late-correction check (count and sum per series up to the watermark)."""
    last = frame["ds"].max()
    one = frame["unique_id"].iloc[len(frame) // 2]
    with psycopg.connect(sql_source.conninfo(url)) as conn:
        return {
            "one_series_history": query_timer(
                conn, "SELECT ds, y FROM series WHERE unique_id = %s ORDER BY ds", (one,), repeats
            ),
            "newest_period_all_series": query_timer(
                conn, "SELECT unique_id, ds, y FROM series WHERE ds > %s ORDER BY 1, 2",
                (last,), repeats,
            ),
            "late_correction_check": query_timer(
                conn, "SELECT unique_id, count(y), sum(y) FROM series WHERE ds <= %s GROUP BY 1",
                (last,), repeats,
            ),
        }  # fmt: skip


def timescaledb_status(url: str) -> dict:
    apt = subprocess.run(
        ["apt-cache", "policy", "timescaledb-2-postgresql-15"], capture_output=True, text=True
    )
    with psycopg.connect(sql_source.conninfo(url)) as conn:
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()[0]
    return {
        "extension_available": bool(available),
        "apt_cache_policy": apt.stdout.strip() or "(no such package in the configured apt sources)",
    }


def markdown(results: dict) -> str:
    """The results as the tables of the README's data-platform section."""
    read, ingest, layout = results["read_1m_rows"], results["ingest"], results["layout"]
    parquet = read["parquet"]["median_s"]

    def row(what: str, timing: dict, base: float | None = None) -> str:
        ratio = f"{timing['median_s'] / base:.1f}x" if base else ""
        wall, cpu = timing["median_s"], timing["client_cpu_s"]
        return f"| {what} | {wall:.3f} | {cpu:.3f} | {ratio} |"

    lines = [
        f"{results['rows']:,} rows, {results['series']:,} series; load average "
        f"{results['machine']['loadavg_at_start'][0]} at start, "
        f"{results['machine']['loadavg_at_end'][0]} at end ({results['machine']['nproc']} cores)",
        "",
        "| step | wall s (median) | client CPU s | vs its Parquet row |",
        "| --- | ---: | ---: | ---: |",
        row("read: Parquet snapshot (`pd.read_parquet`)", read["parquet"], parquet),
        row("read: PostgreSQL, binary rows (the sql source)", read["postgres_sql_source"], parquet),
        row("read: PostgreSQL, `COPY ... TO STDOUT` as CSV parsed by pyarrow",
            read["postgres_copy_csv"], parquet),
        row("read: PostgreSQL, `pd.read_sql` over SQLAlchemy",
            read["postgres_read_sql"], parquet),
        row("`tsops ingest` from a Parquet file (read, validate, write)",
            ingest["from_parquet_file"], ingest["from_parquet_file"]["median_s"]),
        row("`tsops ingest` from PostgreSQL, first (read, validate, write)",
            ingest["from_postgres_first"], ingest["from_parquet_file"]["median_s"]),
        row(f"`tsops ingest` from PostgreSQL, one new day ({results['series']:,} rows), heap table",
            ingest["incremental_one_new_day_heap"], ingest["from_parquet_file"]["median_s"]),
        row("`tsops ingest` from PostgreSQL, one new day, primary key + time index",
            ingest["incremental_one_new_day_with_layout"], ingest["from_parquet_file"]["median_s"]),
        "",
        "| query | heap | primary key (series, time) | + index on time | clustered |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    names = ("heap", "primary_key", "primary_key_and_time_index", "clustered_on_primary_key")
    for query in layout["heap"]:
        cells = [f"{layout[n][query]['median_s'] * 1000:.1f} ms" for n in names]
        lines.append(f"| {query.replace('_', ' ')} | " + " | ".join(cells) + " |")
    build = layout["build_s"]
    lines += [
        "",
        f"Building them on the loaded table: primary key {build['primary_key']} s, time index "
        f"{build['time_index']} s, CLUSTER {build['cluster']} s. TimescaleDB available: "
        f"{results['timescaledb']['extension_available']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    config = parse_model_config(MODEL)
    loadavg_at_start = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="tsops-sql-bench-"))
    server = start_postgres(work / "postgres")
    try:
        url = server.create_database("bench")
        frame = synthetic(args.rows, args.series)
        results: dict = {"rows": len(frame), "series": args.series}

        start = time.perf_counter()
        with psycopg.connect(sql_source.conninfo(url), autocommit=True) as conn:
            load_table(conn, frame)
        results["load_table_copy_s"] = round(time.perf_counter() - start, 3)
        parquet = work / "source.parquet"
        write_parquet(frame, parquet)
        results["parquet_bytes"] = parquet.stat().st_size

        source = config.source
        read = {
            "parquet": timed(lambda: pd.read_parquet(parquet), args.repeats),
            "postgres_sql_source": timed(lambda: sql_source.read_all(source, url), args.repeats),
            "postgres_copy_csv": timed(lambda: copy_csv(url), args.repeats),
            "postgres_read_sql": timed(
                lambda: pd.read_sql("SELECT unique_id, ds, y FROM series", url), args.repeats
            ),
        }
        read["ratio_sql_source_to_parquet"] = round(
            read["postgres_sql_source"]["median_s"] / read["parquet"]["median_s"], 2
        )
        read["ratio_read_sql_to_parquet"] = round(
            read["postgres_read_sql"]["median_s"] / read["parquet"]["median_s"], 2
        )
        results["read_1m_rows"] = read

        snapshot = work / "data" / "series.parquet"

        def ingest_file() -> None:
            df = check_frame(read_frame(parquet), freq="D")
            write_parquet(df, work / "data" / "from-file.parquet")

        def ingest_sql_first() -> None:
            snapshot.unlink(missing_ok=True)
            sql_source.ingest(config, snapshot, url=url)

        ingest = {
            "from_parquet_file": timed(ingest_file, args.repeats),
            "from_postgres_first": timed(ingest_sql_first, args.repeats),
        }
        ingest["ratio_postgres_first_to_parquet_file"] = round(
            ingest["from_postgres_first"]["median_s"] / ingest["from_parquet_file"]["median_s"], 2
        )
        assert snapshot.read_bytes() == (work / "data" / "from-file.parquet").read_bytes()

        base = work / "base.parquet"
        shutil.copy(snapshot, base)
        new_day = frame["ds"].max() + pd.Timedelta(days=1)
        with psycopg.connect(sql_source.conninfo(url), autocommit=True) as conn:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO series VALUES (%s, %s, %s)",
                    [(s, new_day, 1.0) for s in frame["unique_id"].unique()],
                )
            conn.execute("ANALYZE series")

        def ingest_sql_increment() -> None:
            shutil.copy(base, snapshot)
            _, notes = sql_source.ingest(config, snapshot, url=url)
            assert notes == [], notes

        ingest["incremental_one_new_day_heap"] = timed(ingest_sql_increment, args.repeats)
        ingest["incremental_rows_read"] = int(frame["unique_id"].nunique())

        def execute(*statements: str) -> float:
            start = time.perf_counter()
            with psycopg.connect(sql_source.conninfo(url), autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)
            return round(time.perf_counter() - start, 3)

        layout: dict = {"heap": layout_queries(url, frame, args.repeats)}
        layout["build_s"] = {
            "primary_key": execute(
                "ALTER TABLE series ADD PRIMARY KEY (unique_id, ds)", "ANALYZE series"
            )
        }
        layout["primary_key"] = layout_queries(url, frame, args.repeats)
        # the layout tsops platform load-series makes (platform.database.create_series_table)
        layout["build_s"]["time_index"] = execute(
            "CREATE INDEX series_ds ON series (ds)", "ANALYZE series"
        )
        layout["primary_key_and_time_index"] = layout_queries(url, frame, args.repeats)
        ingest["incremental_one_new_day_with_layout"] = timed(ingest_sql_increment, args.repeats)
        layout["build_s"]["cluster"] = execute("CLUSTER series USING series_pkey", "ANALYZE series")
        layout["clustered_on_primary_key"] = layout_queries(url, frame, args.repeats)
        results["ingest"] = ingest
        results["layout"] = layout
        results["timescaledb"] = timescaledb_status(url)
        with psycopg.connect(sql_source.conninfo(url)) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            results["table_bytes"] = conn.execute(
                "SELECT pg_total_relation_size('series')"
            ).fetchone()[0]
    finally:
        server.remove()
        shutil.rmtree(work, ignore_errors=True)

    results["machine"] = {
        "nproc": os.cpu_count(),
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "postgresql": pg_version,
        **{p: version(p) for p in ("pandas", "pyarrow", "psycopg", "sqlalchemy")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
