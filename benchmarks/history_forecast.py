"""CPU time of one forecast with history on a trained model, in-process, per member.

The request of the serving benchmark (benchmarks/serving/run.py): one series (N1402),
horizon 6, levels 80 and 95, the 12 months after the model's cutoff as history; timed
as the model server calls it (``predict_series``, after ``quiet_process``), the best of
several repeats of ``process_time`` (CPU of this process, all its threads).

    .venv/bin/python benchmarks/history_forecast.py            # the shipped m3-monthly model
    .venv/bin/python benchmarks/history_forecast.py --model path/to/forecaster.joblib

Another version of the code on the same model (e.g. the commit before the array-based
history path, e02ecfc)::

    git archive e02ecfc src | tar -x -C /tmp/e02ecfc
    PYTHONPATH=/tmp/e02ecfc/src .venv/bin/python benchmarks/history_forecast.py
"""

from __future__ import annotations

import argparse
import time
import timeit
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "artifacts" / "m3-monthly" / "model" / "forecaster.joblib"
SERIES = "N1402"
HISTORY_DS = [f"2020-{month:02d}-01" for month in range(1, 13)]
HISTORY_Y = [1510.0, 1490.0, 1620.0, 1700.0, 2950.0, 1800.0]
HISTORY_Y += [1650.0, 2500.0, 2100.0, 1900.0, 1750.0, 1980.0]


def members(model) -> dict:
    """The model and, for an ensemble (or one per class of series), its members."""
    found = {"whole model": model}
    for name, forecaster in getattr(model, "forecasters", {}).items():
        found.update({f"{name}/{k}": m for k, m in getattr(forecaster, "members", {}).items()})
    found.update(getattr(model, "members", {}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="a forecaster.joblib")
    parser.add_argument("--series", default=SERIES)
    parser.add_argument("--h", type=int, default=6)
    parser.add_argument("--number", type=int, default=200, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from tsops.forecasters.base import SeriesHistory
    from tsops.forecasters.naive import quiet_process

    model = joblib.load(args.model)
    quiet_process()  # as the model server does
    history = {args.series: SeriesHistory(pd.DatetimeIndex(HISTORY_DS), np.asarray(HISTORY_Y))}
    levels = [80.0, 95.0]
    print(f"{args.model}: {args.series}, h {args.h}, 12 history points, levels {levels}")
    for name, forecaster in members(model).items():

        def call(forecaster=forecaster):
            return forecaster.predict_series(args.h, levels, history, [args.series])

        call()  # first call: lazily built state (e.g. the gbm's tree arrays)
        best = min(
            timeit.repeat(call, number=args.number, repeat=args.repeat, timer=time.process_time)
        )
        print(f"  {name:14s} {best / args.number * 1e3:7.3f} ms CPU")


if __name__ == "__main__":
    main()
