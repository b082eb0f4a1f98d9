"""Forecasts every member must keep bit for bit: the cases and the recorded answers.

``golden_forecasts.npz`` holds the forecasts the code of commit e02ecfc (before the
array-based history path of the global model) gave for these cases: small members
fitted here on seeded synthetic panels, asked with and without history (continuing,
overlapping, leaving a gap, replacing all of the training data), at several horizons
and levels. ``test_golden.py`` refits the members and compares exactly.

Regenerate only on purpose (a deliberate change of the numbers), with the code whose
numbers should become the reference::

    python -m tests.forecasters.golden_cases --write

The members are fitted in-process (about 3 s); their fits are deterministic for a
given platform and library versions (the lock pins them).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers.synthetic import make_series
from tsops.forecasters import make_forecaster
from tsops.forecasters.base import Forecaster, SeriesHistory
from tsops.forecasters.combine import Combined

GOLDEN = Path(__file__).with_name("golden_forecasts.npz")

#: (name, kind, params); the first group is the shipped m3-monthly ensemble, small
MONTHLY_MEMBERS = (
    (
        "gbm36",
        "gbm",
        {"lags": 36, "windows": [3, 6, 12, 24, 36], "calendar": False, "max_iter": 40},
    ),
    ("ets", "statsforecast", {"model": "AutoETS", "options": {"damped": True}}),
    ("theta", "statsforecast", {"model": "Theta"}),
    ("dotm", "statsforecast", {"model": "DynamicOptimizedTheta"}),
    ("gbm_calendar", "gbm", {"max_iter": 30, "max_leaf_nodes": 15}),
    ("seasonal_naive", "seasonal_naive", {}),
    ("theta_statsmodels", "theta", {}),
)
DAILY_MEMBERS = (("gbm_daily", "gbm", {"max_iter": 30, "lags": 10}),)


def monthly_panel() -> pd.DataFrame:
    """Five monthly series ending together: long, with zeros, two seasons, short."""
    df = make_series(5, lengths=[84, 60, 40, 26, 14], seed=7)
    zeros = (df["unique_id"] == "s1") & (np.arange(len(df)) % 5 == 0)
    df.loc[zeros, "y"] = 0.0
    return df


def daily_panel() -> pd.DataFrame:
    return make_series(3, lengths=[90, 50, 9], freq="D", season_length=7, seed=11)


def fitted_members() -> dict[str, Forecaster]:
    """Every member fitted on its panel, plus the shipped ensemble rule over four of them."""
    members: dict[str, Forecaster] = {}
    for group, freq, season, panel in (
        (MONTHLY_MEMBERS, "MS", 12, monthly_panel()),
        (DAILY_MEMBERS, "D", 7, daily_panel()),
    ):
        for name, kind, params in group:
            model = make_forecaster(kind, params, freq=freq, season_length=season, seed=0)
            members[name] = model.fit(panel)
    shipped = {name: members[name] for name in ("ets", "theta", "dotm", "gbm36")}
    members["mean_ensemble"] = Combined(shipped, "mean_ensemble")
    return members


def _history(model: Forecaster, uid: str, start: int, values: np.ndarray) -> SeriesHistory:
    """History of ``uid`` starting ``start`` periods after its cutoff (<= 0: overlapping)."""
    offset = pd.tseries.frequencies.to_offset(model.freq)
    first = model.cutoffs_[uid] + start * offset
    return SeriesHistory(pd.date_range(first, periods=len(values), freq=offset), values)


def requests(model: Forecaster) -> Iterator[tuple[str, dict]]:
    """``(case name, predict_series keyword arguments)`` for one fitted member."""
    ids = list(map(str, model.cutoffs_.index))
    y = {uid: float(model.cutoffs_.index.get_loc(uid) + 1) for uid in ids}
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 3, 64)
    level = {uid: 100.0 + 20.0 * y[uid] for uid in ids}
    for h, levels in ((6, [80.0, 95.0]), (18, []), (36, [50.0, 99.5])):
        yield f"no-history h{h} levels{levels}", {"h": h, "levels": levels}
    long_id, zero_id, short_id = ids[0], ids[1], ids[-1]
    # the serving benchmark's shape: 12 points continuing after the cutoff
    bench = level[long_id] + noise[:12] * 5
    yield (
        "continuing",
        {
            "h": 6,
            "levels": [80.0, 95.0],
            "histories": {long_id: _history(model, long_id, 1, bench)},
            "ids": [long_id],
        },
    )
    overlapping = {uid: _history(model, uid, -2, level[uid] + noise[10:18]) for uid in ids[1:3]}
    yield (
        "overlapping, one series without history",
        {
            "h": 18,
            "levels": [95.0],
            "histories": overlapping,
            "ids": [*ids[1:3], long_id],
        },
    )
    with_zeros = np.where(np.arange(12) % 3 == 0, 0.0, level[zero_id] + noise[20:32])
    yield (
        "zeros in history",
        {
            "h": 12,
            "levels": [80.0],
            "histories": {zero_id: _history(model, zero_id, 1, with_zeros)},
            "ids": [zero_id],
        },
    )
    yield (
        "gap, long history alone",
        {
            "h": 9,
            "levels": [80.0, 95.0],
            "histories": {long_id: _history(model, long_id, 4, level[long_id] + noise[:40])},
            "ids": [long_id],
        },
    )
    yield (
        "history replacing all training data",
        {
            "h": 6,
            "levels": [80.0, 95.0],
            "histories": {short_id: _history(model, short_id, -20, level[short_id] + noise[:30])},
            "ids": [short_id],
        },
    )


def forecasts(members: dict[str, Forecaster]) -> dict[str, np.ndarray]:
    """Every member's answer to every request: ``member|case|uid|times`` holds the cutoff
    and the forecast's timestamps (ns), ``member|case|uid|<columns>`` its values."""
    out: dict[str, np.ndarray] = {}
    for name, model in members.items():
        for case, kwargs in requests(model):
            for forecast in model.predict_series(**kwargs):
                key = f"{name}|{case}|{forecast.unique_id}"
                out[f"{key}|times"] = np.concatenate([[forecast.cutoff.value], forecast.ds.asi8])
                cols = ",".join(forecast.values)
                out[f"{key}|{cols}"] = np.vstack(
                    [np.asarray(v, dtype=float) for v in forecast.values.values()]
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN.name}")
    args = parser.parse_args()
    found = forecasts(fitted_members())
    if args.write:
        np.savez_compressed(GOLDEN, **found)
        print(f"wrote {len(found)} arrays to {GOLDEN}")
    else:
        print(f"{len(found)} arrays; pass --write to replace {GOLDEN}")


if __name__ == "__main__":
    main()
