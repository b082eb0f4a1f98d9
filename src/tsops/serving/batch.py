"""Batch forecasts of every series: what the forecast CronJob runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tsops.core.io import atomic_path
from tsops.core.schema import CUTOFF_COL, ID_COL, TIME_COL
from tsops.registry.loading import load_model
from tsops.serving.requests import RequestError, check_levels


def batch_forecast(
    reference: str,
    out: Path,
    h: int | None = None,
    levels: list[float] | None = None,
    registry: Any = None,
    default_version: str | None = None,
) -> pd.DataFrame:
    """Forecast all series of ``reference`` and write them with the online response's fields.

    One row per series and step: ``unique_id, cutoff, ds, step, mean, lo-*, hi-*,
    model_name, model_version``. A horizon or level the model cannot serve is a
    ``RequestError`` naming the option (``--h``, ``--level``) and what is allowed.
    """
    loaded = load_model(reference, registry, default_version=default_version)
    spec = loaded.spec
    h = horizon(h, int(spec["horizon"]), int(spec["max_horizon"]), loaded.registered_name)
    levels = check_levels(levels or spec["levels"], [], field="--level")
    frame = loaded.forecaster.predict(h, level=levels)
    cutoffs = loaded.forecaster.cutoffs_
    frame.insert(1, CUTOFF_COL, frame[ID_COL].map(cutoffs))
    frame.insert(3, "step", frame.groupby(ID_COL).cumcount() + 1)
    frame["model_name"] = loaded.registered_name
    frame["model_version"] = loaded.version
    frame = frame.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)
    with atomic_path(Path(out)) as tmp:
        if Path(out).suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return frame


def horizon(h: int | None, default: int, max_h: int, model: str) -> int:
    """``--h``, or the model's horizon; at most ``max_h`` (model.yaml's
    ``serving.max_horizon``, written into the model when it is trained)."""
    if h is None:
        return default
    if not 1 <= h <= max_h:
        raise RequestError(
            f"--h {h} is outside 1..{max_h}, the horizons model {model!r} serves; ask for at "
            f"most {max_h} steps, or raise serving.max_horizon in models/{model}/model.yaml "
            "and train the model again"
        )
    return h
