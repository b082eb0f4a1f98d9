"""What the judging commands share (``tsops monitor accuracy|canary|verdicts|run`` and
``tsops bandit``): where the forecast log is, a model's records of it scored against
the actuals, and a report table written atomically.

Kept apart from the command modules so that one command module never imports another.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from tsops.core.settings import Settings
    from tsops.monitor.accuracy import AccuracyResult
    from tsops.monitor.inputs import DatabaseLog
    from tsops.monitor.served import ModelLog


def log_location(root: Path, log: Path | None, settings: Settings) -> Path | DatabaseLog:
    """``--log``, else the database, else the configured folder (``forecast_log_dir``)."""
    from tsops.monitor.inputs import forecast_log_dir

    return forecast_log_dir(root, log, settings.forecast_log_dir, settings.forecast_log_url)


def model_log(log_dir: Path | DatabaseLog, model: str) -> ModelLog:
    """``model``'s records of the log, saying on stderr what else the log held."""
    from tsops.monitor.served import read_model_log

    served = read_model_log(log_dir, model)
    if served.note():
        print(served.note(), file=sys.stderr)
    return served


def score(
    root: Path,
    model: str,
    log_dir: Path | DatabaseLog,
    actuals: Path | None,
    now: str | None,
    since: str | None,
    until: str | None,
) -> AccuracyResult:
    """Realized accuracy of ``model``'s logged forecasts."""
    from tsops.core.config import load
    from tsops.monitor.accuracy import realized_accuracy
    from tsops.monitor.inputs import read_actuals

    config, _ = load(root, model)
    return realized_accuracy(
        model_log(log_dir, model).records,
        read_actuals(root, config, actuals),
        config.season_length,
        now=now,
        period=(since, until),
    )


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A report table, replaced atomically."""
    from tsops.core.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
