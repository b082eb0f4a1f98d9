"""Synthetic long-format series for tests and examples (seeded, so reproducible)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL


def make_series(
    n_series: int = 3,
    length: int = 60,
    freq: str = "MS",
    season_length: int = 12,
    start: str = "2015-01-01",
    level: float = 100.0,
    trend: float = 0.5,
    seasonal_amplitude: float = 10.0,
    noise: float = 2.0,
    seed: int = 0,
    lengths: list[int] | None = None,
) -> pd.DataFrame:
    """Trend + seasonality + Gaussian noise, one block per series, sorted by id and time.

    ``lengths`` gives each series its own length (all series then end on the same date,
    as in real panels whose histories start at different times).
    """
    rng = np.random.default_rng(seed)
    lengths = lengths or [length] * n_series
    longest = max(lengths)
    grid = pd.date_range(start, periods=longest, freq=freq)
    frames = []
    for i, n in enumerate(lengths):
        t = np.arange(longest - n, longest, dtype=float)
        phase = rng.uniform(0, 2 * np.pi)
        seasonal = (
            seasonal_amplitude * np.sin(2 * np.pi * t / season_length + phase)
            if season_length > 1
            else 0.0
        )
        y = level * (1 + 0.2 * i) + trend * t + seasonal + rng.normal(0, noise, n)
        frames.append(pd.DataFrame({ID_COL: f"s{i}", TIME_COL: grid[longest - n :], TARGET_COL: y}))
    df = pd.concat(frames, ignore_index=True)
    df[ID_COL] = df[ID_COL].astype(str)
    return df
