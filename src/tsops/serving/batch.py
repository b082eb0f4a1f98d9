"""Batch forecasts of every series: what the forecast CronJob runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsops.core.io import atomic_path
from tsops.core.schema import ID_COL, TIME_COL, check_levels
from tsops.serving.loader import load_model


def batch_forecast(
    reference: str,
    out: Path,
    h: int | None = None,
    levels: list[float] | None = None,
    tracking_root: Path = Path("."),
) -> pd.DataFrame:
    """Forecast all series of ``reference`` and write them with the online response's fields.

    One row per series and step: ``unique_id, cutoff, ds, step, mean, lo-*, hi-*,
    model_name, model_version``.
    """
    loaded = load_model(reference, tracking_root)
    spec = loaded.spec
    h = h or int(spec["horizon"])
    if not 1 <= h <= int(spec["max_horizon"]):
        raise ValueError(f"--h {h} is outside 1..{spec['max_horizon']}, the model's maximum")
    levels = check_levels(levels or spec["levels"])
    frame = loaded.forecaster.predict(h, level=levels)
    cutoffs = loaded.forecaster.cutoffs_
    frame.insert(1, "cutoff", frame[ID_COL].map(cutoffs))
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
