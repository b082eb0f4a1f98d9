"""The train stage: fit the selected forecaster on all data and save it with its spec.

``spec.json`` holds exactly what the stage depends on (dvc.yaml's train stage): the
model.yaml keys it tracks, the selection it read, and two facts of the data it fitted
(``n_series``, ``cutoff``). Serving reads its horizon, levels and frequency; the gate
re-runs a champion's candidates and rule from it.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd

from tsops.core.config import ModelConfig, load
from tsops.core.io import (
    MissingInputError,
    atomic_dir,
    read_json,
    read_series,
    require,
    write_json,
)
from tsops.core.paths import FORECASTER_FILE, SPEC_FILE
from tsops.core.progress import Tracker, track
from tsops.core.schema import ID_COL, TIME_COL
from tsops.forecasters import candidate_factories
from tsops.forecasters.combine import Combined
from tsops.pipeline.selection import Selection

#: the model.yaml keys the train stage tracks (dvc.yaml), as spec.json records them
TRACKED_KEYS = ("freq", "horizon", "season_length", "levels", "candidates", "serving", "seed")


def build_forecaster(
    config: ModelConfig, selection: Selection, n_jobs: int | None = None
) -> Combined:
    """The registered forecaster, unfitted: the selected members combined by the rule."""
    members = {name: config.candidates[name] for name in selection.members}
    factories = candidate_factories(
        members,
        freq=config.freq,
        season_length=config.season_length,
        seed=config.seed,
        n_jobs=n_jobs,
    )
    return Combined(
        {name: make() for name, make in factories.items()}, selection.rule, selection.choice
    )


def fit(
    df: pd.DataFrame, config: ModelConfig, selection: Selection, n_jobs: int | None = None
) -> Combined:
    """The registered model: the selected candidates fitted on every observation."""
    return build_forecaster(config, selection, n_jobs).fit(df)


def spec_of(config: ModelConfig, selection: Selection, df: pd.DataFrame) -> dict:
    """What serving and the gate need to know about a trained model, besides its weights."""
    tracked = config.model_dump(mode="json", include={"name", *TRACKED_KEYS})
    return {
        "config": tracked,
        "selection": selection.to_dict(),
        "freq": config.freq,
        "horizon": config.horizon,
        "max_horizon": config.max_horizon,
        "levels": config.levels,
        "n_series": int(df[ID_COL].nunique()),
        "cutoff": str(df[TIME_COL].max().date()),
    }


def save_trained(forecaster: Combined, spec: dict, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        joblib.dump(forecaster, tmp / FORECASTER_FILE, compress=3)
        write_json(spec, tmp / SPEC_FILE)


def load_trained(model_dir: Path) -> tuple[Combined, dict]:
    model_dir = Path(model_dir)
    if not (model_dir / FORECASTER_FILE).exists():
        raise MissingInputError(
            f"no trained model in {model_dir}; run `dvc repro` (or `tsops train <model>`) first"
        )
    return joblib.load(model_dir / FORECASTER_FILE), read_json(model_dir / SPEC_FILE)


def run(root: Path, name: str, n_jobs: int | None = None) -> dict:
    """The train stage: fit the selection of ``backtest/selection.json`` on all of the
    data and write ``artifacts/<name>/model/`` (forecaster and spec)."""
    config, paths = load(root, name)
    df = read_series(paths)
    selection = Selection.from_dict(read_json(require(paths.selection, f"tsops backtest {name}")))
    # every member fits every series; the step counts members that report nothing (global
    # models) once they are done
    n_fits = df[ID_COL].nunique() * len(selection.members)
    tracker = Tracker(n_fits, f"train {name}")
    with track(tracker), tracker.step("fit", n_fits):
        forecaster = fit(df, config, selection, n_jobs)
    spec = spec_of(config, selection, df)
    save_trained(forecaster, spec, paths.model)
    return {"rule": selection.rule, "members": selection.members, "cutoff": spec["cutoff"]}
