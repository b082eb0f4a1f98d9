"""Fit the selected forecaster on all data and save it with the spec that built it."""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd

from tsops.core.config import ModelConfig
from tsops.core.io import atomic_dir, read_json, write_json
from tsops.forecasters import make_forecaster
from tsops.forecasters.combine import Combined
from tsops.pipeline.selection import Selection

FORECASTER_FILE = "forecaster.joblib"
SPEC_FILE = "spec.json"


def build_forecaster(config: ModelConfig, selection: Selection, n_jobs: int | None = None):
    members = {
        name: make_forecaster(
            config.candidates[name].kind,
            dict(config.candidates[name].params),
            freq=config.freq,
            season_length=config.season_length,
            n_jobs=n_jobs,
        )
        for name in selection.members
    }
    return Combined(members, selection.rule, selection.choice)


def train(
    df: pd.DataFrame, config: ModelConfig, selection: Selection, n_jobs: int | None = None
) -> Combined:
    """The registered model: the selected candidates fitted on every observation."""
    return build_forecaster(config, selection, n_jobs).fit(df)


def spec_of(config: ModelConfig, selection: Selection, df: pd.DataFrame) -> dict:
    """What serving and the gate need to know about a trained model, besides its weights."""
    return {
        "config": config.model_dump(mode="json"),
        "selection": selection.to_dict(),
        "freq": config.freq,
        "horizon": config.horizon,
        "max_horizon": config.max_horizon,
        "levels": config.levels,
        "n_series": int(df["unique_id"].nunique()),
        "cutoff": str(df["ds"].max().date()),
    }


def save_trained(forecaster: Combined, spec: dict, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        joblib.dump(forecaster, tmp / FORECASTER_FILE, compress=3)
        write_json(spec, tmp / SPEC_FILE)


def load_trained(model_dir: Path) -> tuple[Combined, dict]:
    model_dir = Path(model_dir)
    if not (model_dir / FORECASTER_FILE).exists():
        raise FileNotFoundError(
            f"no trained model in {model_dir}; run `dvc repro` (or `tsops train <model>`) first"
        )
    return joblib.load(model_dir / FORECASTER_FILE), read_json(model_dir / SPEC_FILE)
