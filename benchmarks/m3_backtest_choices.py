"""How the m3-monthly candidates were chosen: variants scored on the backtest windows only.

Every choice in ``models/m3-monthly/model.yaml`` (the ETS model space, the gradient
boosting's features, which members the mean combines) was made here, on the rolling
origins of the backtest inside the competition's training parts ``s.x``. The holdout
``s.xx`` is never loaded: ``m3_monthly.py`` scores the result on it afterwards.

The script cross-validates the shipped candidates once, as ``tsops backtest`` does
(same windows, same series), then each variant below, and prints for each:

- the variant alone (sMAPE, MASE over the backtest windows);
- the mean ensemble with the variant in place of the member it replaces (or added
  as a fifth member), next to the shipped ensemble;
- its fit-and-forecast seconds over the three windows (the pipeline's time driver).

Usage (from the repository root)::

    .venv/bin/python benchmarks/m3_backtest_choices.py              # ~12 min
    .venv/bin/python benchmarks/m3_backtest_choices.py --only ets-all,gbm-24 --series 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tsops.core import progress
from tsops.core.config import CandidateConfig
from tsops.core.io import write_json
from tsops.core.metrics import MODEL_COL, score
from tsops.core.settings import load_settings
from tsops.pipeline.backtest import run_backtest
from tsops.pipeline.selection import ENSEMBLES, ensemble_cv, ensemble_members

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m3_monthly import ROOT, code_version, load_config, load_training, log, machine_info

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "m3_backtest_choices.json"

#: name -> (member it replaces, or None to add it; kind; params)
VARIANTS: dict[str, tuple[str | None, str, dict[str, Any]]] = {
    "ets-all": ("ets", "statsforecast", {"model": "AutoETS"}),
    "ets-additive-error": (
        "ets",
        "statsforecast",
        {"model": "AutoETS", "options": {"model": "AZZ"}},
    ),
    "ets-multiplicative-error": (
        "ets",
        "statsforecast",
        {"model": "AutoETS", "options": {"model": "MZZ"}},
    ),
    "ets-additive-season": (
        "ets",
        "statsforecast",
        {"model": "AutoETS", "options": {"model": "ZZA"}},
    ),
    "gbm-24": ("gbm", "gbm", {"lags": 24, "calendar": False}),
    "gbm-36": ("gbm", "gbm", {"lags": 36, "calendar": False}),
    "gbm-48": ("gbm", "gbm", {"lags": 48, "calendar": False}),
    "gbm-36-windows-24": ("gbm", "gbm", {"lags": 36, "windows": [3, 6, 12, 24], "calendar": False}),
    "gbm-36-leaves-15": (
        "gbm",
        "gbm",
        {"lags": 36, "windows": [3, 6, 12, 24, 36], "calendar": False, "max_leaf_nodes": 15},
    ),
    "gbm-36-leaf-50": (
        "gbm",
        "gbm",
        {"lags": 36, "windows": [3, 6, 12, 24, 36], "calendar": False, "min_samples_leaf": 50},
    ),
    "gbm-36-l2": (
        "gbm",
        "gbm",
        {"lags": 36, "windows": [3, 6, 12, 24, 36], "calendar": False, "l2_regularization": 1.0},
    ),
    "gbm-24-calendar": ("gbm", "gbm", {"lags": 24, "calendar": True}),
    "add-optimized-theta": (None, "statsforecast", {"model": "OptimizedTheta"}),
    # AutoCES: 5x AutoETS's time here (308 s for the three windows), so only on request
    "add-ces": (None, "statsforecast", {"model": "AutoCES"}),
}
SLOW = ("add-ces",)


def _n_jobs() -> int:
    """TSOPS_N_JOBS, else all cores."""
    return load_settings().n_jobs or -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=None, help="first N series (default: all)")
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--slow", action="store_true", help=f"also run {', '.join(SLOW)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    default = [v for v in VARIANTS if args.slow or v not in SLOW]
    names = args.only.split(",") if args.only else default
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    config = load_config()
    df = load_training(config, args.series, tile=1)
    n_jobs = _n_jobs()
    members = ensemble_members(config)
    how = ENSEMBLES.get(config.selection.rule, "median")  # the shipped rule's combination
    log(f"shipped candidates on {df['unique_id'].nunique()} series: {', '.join(config.candidates)}")
    tracker = progress.Tracker(description="shipped candidates")
    cv, scales = run_backtest(df, config, n_jobs=n_jobs, tracker=tracker)
    seconds = {name: round(stats.seconds, 1) for name, stats in tracker.steps.items()}
    ensembles = [ensemble_cv(cv, members, config.levels, how).assign(**{MODEL_COL: "shipped"})]
    for name in names:
        member, kind, params = VARIANTS[name]
        log(f"variant {name}: {kind} {params}")
        # the variant as the model's only candidate: the backtest's own windows and seed
        alone = config.model_copy(
            update={"candidates": {name: CandidateConfig(kind=kind, params=params)}}
        )
        started = time.perf_counter()
        part, _ = run_backtest(df, alone, n_jobs=n_jobs)
        seconds[name] = round(time.perf_counter() - started, 1)
        cv = pd.concat([cv, part], ignore_index=True)
        combined = [m for m in members if m != member] + [name]
        ensemble = ensemble_cv(cv, combined, config.levels, how)
        ensembles.append(ensemble.assign(**{MODEL_COL: f"with {name}"}))

    table = score(pd.concat([cv, *ensembles], ignore_index=True), scales, config.levels)
    overall = table["overall"].set_index(MODEL_COL)

    def scores(label: str | None, prefix: str) -> dict[str, float | None]:
        found = label is not None and label in overall.index
        return {
            f"{prefix}_smape": round(float(overall.loc[label, "smape"]), 3) if found else None,
            f"{prefix}_mase": round(float(overall.loc[label, "mase"]), 4) if found else None,
        }

    rows = [
        {"name": "shipped", "replaces": None, "params": None}
        | scores(None, "alone")
        | scores("shipped", how)
        | {"seconds": None}
    ]
    for name in [*members, *names]:
        variant = VARIANTS.get(name)
        rows.append(
            {
                "name": name,
                "replaces": variant[0] if variant else None,
                "params": variant[2] if variant else config.candidates[name].params,
            }
            | scores(name, "alone")
            | scores(f"with {name}" if variant else None, how)
            | {"seconds": seconds.get(name)}
        )
    frame = pd.DataFrame(rows)
    print(frame.drop(columns=["params"]).to_string(index=False))
    write_json(
        {
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["benchmarks/m3_backtest_choices.py", *(argv or sys.argv[1:])]),
            "series": int(df["unique_id"].nunique()),
            "n_jobs": n_jobs,
            "shipped": {name: spec.params for name, spec in config.candidates.items()},
            "rule": f"{how} of " + ", ".join(members),
            "seconds": seconds,
            "rows": rows,
            "machine": machine_info(),
            "code": code_version(),
        },
        args.out,
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
