"""The forecast log in PostgreSQL against the file log: serving throughput and reading.

``tsops serve`` (2 workers) on the shipped m3-monthly model, V1 requests without
history at concurrency 16 (``wrk``, as ``benchmarks/serving``), its forecast log written
to part files or to a PostgreSQL server on the same machine (``start_postgres``, a
throwaway server without fsync); the two runs alternate, ``--repeats`` times each.
Afterwards: the rows in the table against the requests answered (every answered
request logged once), and ``tsops monitor``'s reading of each log
(``load_forecast_log``: the folder's part files against the table) timed.

    .venv/bin/python benchmarks/forecast_log_sql.py               # ~1 min
    .venv/bin/python benchmarks/forecast_log_sql.py --duration 10 --repeats 3

Results: benchmarks/results/forecast_log_sql.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "serving"))

import run as serving  # noqa: E402  (benchmarks/serving/run.py: servers, wrk, the model)


def postgres_cpu(postgres) -> float:
    """CPU seconds used so far by PostgreSQL's processes (the postmaster and its live
    backends: the writers' connections)."""
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return serving.tree_cpu_seconds(postmaster)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=6, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=1, help="discarded seconds before each")
    parser.add_argument("--repeats", type=int, default=2, help="runs per log kind")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "forecast_log_sql.json")
    args = parser.parse_args(argv)

    from tsops.monitor.inputs import DatabaseLog, load_forecast_log
    from tsops.platform.forecast_log_sql import count_rows
    from tsops.platform.services import start_postgres

    workdir = Path(tempfile.mkdtemp(prefix="tsops-logbench-"))
    model_dir = serving.build_model(workdir, "shipped")
    body = workdir / "v1.json"
    body.write_text(json.dumps(serving.request_bodies()[("v1", False)]))
    postgres = start_postgres(workdir / "postgres", durable=False)
    url = postgres.database_url("postgres")
    path = f"/v1/models/{serving.MODEL}:predict"
    runs: list[dict] = []
    try:
        for repeat in range(args.repeats):
            for kind in ("file", "database"):
                log_dir = workdir / f"logs-{kind}"
                env = {"TSOPS_FORECAST_LOG_URL": url} if kind == "database" else {}
                server = serving.tsops_server(
                    f"tsops-{kind}", model_dir, workdir, workers=2, log_dir=str(log_dir), env=env
                )
                server.start(workdir)
                try:
                    server.wait_ready()
                    warm = serving.wrk(server.url + path, body, args.connections, args.warmup)
                    cpu = (serving.tree_cpu_seconds(server.proc.pid), postgres_cpu(postgres))
                    before = time.monotonic()
                    result = serving.wrk(server.url + path, body, args.connections, args.duration)
                    seconds = time.monotonic() - before
                    # the writers' last batch of the window (flushed each second)
                    time.sleep(1.2)
                    cpu = (
                        serving.tree_cpu_seconds(server.proc.pid) - cpu[0],
                        postgres_cpu(postgres) - cpu[1],
                    )
                finally:
                    server.stop()
                runs.append(
                    {
                        "log": kind,
                        "repeat": repeat,
                        "requests_per_s": round(result["requests"] / seconds, 1),
                        "p50_ms": result["p50_us"] / 1000,
                        "p99_ms": result["p99_us"] / 1000,
                        "errors": sum(v for k, v in result.items() if k.startswith("err_")),
                        "answered_with_warmup": warm["requests"] + result["requests"],
                        # CPU per answered request: the server's processes, PostgreSQL's
                        "server_cpu_ms_per_request": round(1000 * cpu[0] / result["requests"], 3),
                        "postgres_cpu_ms_per_request": round(1000 * cpu[1] / result["requests"], 3),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)

        # every answered request is in the table once (warm-up requests included)
        forecasts, targets = count_rows(url)
        file_dir = workdir / "logs-file" / serving.MODEL
        started = time.perf_counter()
        from_files = load_forecast_log(file_dir)
        read_files = time.perf_counter() - started
        started = time.perf_counter()
        from_database = load_forecast_log(DatabaseLog(url))
        read_database = time.perf_counter() - started
    finally:
        postgres.remove()

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["log"] == kind)

    result = {
        "what": "tsops serve, 2 workers, shipped m3-monthly, V1 without history, h=6, "
        f"c{args.connections}, wrk {args.duration} s after {args.warmup} s warm-up; forecast "
        "log to part files or to PostgreSQL 15 on the same machine (fsync off)",
        "command": "python benchmarks/forecast_log_sql.py " + " ".join(argv or sys.argv[1:]),
        "runs": runs,
        "requests_per_s": {k: median(k, "requests_per_s") for k in ("file", "database")},
        "p99_ms": {k: median(k, "p99_ms") for k in ("file", "database")},
        "server_cpu_ms_per_request": {
            k: median(k, "server_cpu_ms_per_request") for k in ("file", "database")
        },
        "postgres_cpu_ms_per_request": median("database", "postgres_cpu_ms_per_request"),
        "database_over_file_throughput": round(
            median("database", "requests_per_s") / median("file", "requests_per_s"), 3
        ),
        # one series per request: a row per answered request (wrk counts the answers it
        # read; a request answered as wrk stopped is logged but not counted)
        "table": {
            "series_forecasts": forecasts,
            "target_times": targets,
            "requests_answered": sum(
                r["answered_with_warmup"] for r in runs if r["log"] == "database"
            ),
        },
        "read": {
            "file_records": len(from_files),
            "file_seconds": round(read_files, 3),
            "database_records": len(from_database),
            "database_seconds": round(read_database, 3),
            "database_over_file_time": round(read_database / read_files, 3),
        },
        "load_average": os.getloadavg(),
        "git": serving.git_state(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("requests_per_s", "p99_ms", "server_cpu_ms_per_request", "postgres_cpu_ms_per_request")
    print(json.dumps({k: result[k] for k in (*keys, "table", "read")}, indent=2))


if __name__ == "__main__":
    main()
