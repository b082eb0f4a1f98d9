"""Which version is being served, and what it was served with.

Every monitoring command judges one model version: ``tsops retrain`` its realized
error, ``tsops monitor drift`` and ``staleness`` label their numbers with it (the
MLflow run ``monitor-<model>`` of that version, the gauges' ``version``) and
staleness reads its cutoffs. :func:`served_version` is the one rule for all of them.

Only live records count: a shadow's forecasts (role shadow: copies of requests, the
answers of a shadow release or of a blue/green pair's idle colour) reached no user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.core.schema import CUTOFF_COL, ID_COL
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import (
    REGISTERED_MODEL_COL,
    ROLE_COL,
    ROLE_LIVE,
    SERVED_AT_COL,
    VERSION_COL,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: how far back from the newest record traffic is counted to find the served version
SERVING_WINDOW = pd.Timedelta(hours=24)
#: the registered run's metric a version's realized MASE is compared with
BACKTEST_MASE = "selected.mase"


@dataclass(frozen=True)
class ModelLog:
    """The forecast-log records of one registered model, and what was left out."""

    records: pd.DataFrame
    #: records of other registered models in the same directory, and their names
    n_ignored: int = 0
    ignored_models: tuple[str, ...] = ()

    def note(self) -> str | None:
        """A line for people when records of other models were left out."""
        if not self.n_ignored:
            return None
        return (
            f"note: {self.n_ignored} record(s) of other registered models ignored "
            f"({', '.join(self.ignored_models)})"
        )


def read_model_log(log_dir: Path, model: str) -> ModelLog:
    """The forecast log under ``log_dir``, with only ``model``'s records."""
    from tsops.monitor.inputs import load_forecast_log

    return of_model(load_forecast_log(log_dir), model, log_dir)


def of_model(log: pd.DataFrame, model: str, log_dir: Path) -> ModelLog:
    """The records of ``model``'s registered versions (a log directory can hold others).

    A log without a ``registered_model`` column (written before the server recorded
    it) is taken as the model's own.
    """
    if REGISTERED_MODEL_COL not in log.columns:
        return ModelLog(log)
    names = log[REGISTERED_MODEL_COL].astype(str)
    mine = names == model
    if not mine.any():
        raise MonitorError(
            f"{log_dir} has no forecasts of registered model {model!r} (it has: "
            f"{', '.join(sorted(names.unique()))}); pass the --model those forecasts belong "
            "to, or the --log of this model's server"
        )
    others = tuple(sorted(names[~mine].unique()))
    return ModelLog(log[mine].reset_index(drop=True), int((~mine).sum()), others)


def served_version(records: pd.DataFrame, wanted: str | None = None) -> str:
    """The model version being served: ``wanted`` when given, else the version that
    answered the most forecasts in the last day of the log (the ``SERVING_WINDOW``
    before its newest record), the one that answered last on a tie.

    Why this version: during a canary both versions answer, and the one taking most
    of the traffic (the champion) is what users get; after a promotion the old version
    has more forecasts in the log but none recently, so only recent traffic counts. A
    tie (both versions asked for every request, as an A/B replay does) goes to the
    version that answered last; pass ``wanted`` (``--version``) to judge another.
    """
    if wanted is not None:
        return str(wanted)
    records = live(records)
    if records.empty:
        raise MonitorError(
            "the forecast log holds no live forecasts of this model (none, or only a "
            "shadow's), so no version is being served; point --log at the directory its "
            "server writes to"
        )
    versions = records[VERSION_COL].astype(str)
    recent = records[SERVED_AT_COL] > records[SERVED_AT_COL].max() - SERVING_WINDOW
    traffic = pd.DataFrame(
        {
            "n": versions[recent].value_counts(),
            "last": records[SERVED_AT_COL].groupby(versions).max(),
        }
    ).fillna({"n": 0})
    return str(traffic.sort_values(["n", "last"], ascending=False).index[0])


def live(records: pd.DataFrame) -> pd.DataFrame:
    """The records users got (role live; a log without roles is all live)."""
    if ROLE_COL not in records.columns:
        return records
    return records[records[ROLE_COL].fillna(ROLE_LIVE) == ROLE_LIVE]


def of_version(records: pd.DataFrame, version: str) -> pd.DataFrame:
    """The live records of one model version (what users got from it)."""
    records = live(records)
    return records[records[VERSION_COL].astype(str) == str(version)].reset_index(drop=True)


def served_cutoffs(records: pd.DataFrame) -> pd.Series:
    """Per series, the cutoff of the most recent forecast served of it.

    That is the cutoff clients last got: the model's training cutoff, or a later one
    when the request sent history (the forecast then starts after that history).
    """
    latest = records.sort_values([SERVED_AT_COL, CUTOFF_COL], kind="stable").drop_duplicates(
        ID_COL, keep="last"
    )
    return latest.set_index(ID_COL)[CUTOFF_COL]


def realized_mase(by_version: pd.DataFrame, version: str) -> tuple[float | None, int]:
    """``version``'s realized MASE and the pairs it averages, from
    ``AccuracyResult.by_version`` (None and 0 when none of its live forecasts was scored).

    A version served under two names (champion, then stable) has a row per name:
    the one with more pairs counts.
    """
    rows = live(by_version)
    rows = rows[rows[VERSION_COL].astype(str) == str(version)]
    if rows.empty:
        return None, 0
    best = rows.sort_values("n", ascending=False).iloc[0]
    return float(best["mase"]), int(best["n"])


def registry_or_none(root: Path, tracking_uri: str | None) -> MlflowClient | None:
    """A client on the registry (``tracking_uri``, else the embedded store at ``root``),
    or None when it does not answer: monitoring then reports the backtest expectation
    as unknown instead of failing."""
    from tsops.registry.client import RegistryUnavailable, connect

    try:
        return connect(root, tracking_uri)
    except RegistryUnavailable:
        return None


def backtest_mases(
    client: MlflowClient | None, model: str, versions: list[str]
) -> dict[str, float]:
    """The backtest MASE the registry recorded for each of ``versions`` of ``model``
    that has one; a version the registry cannot say anything about (no such version,
    no metric, no registry: ``client`` None) is left out."""
    from mlflow.exceptions import MlflowException

    if client is None:
        return {}
    found = {}
    for version in map(str, versions):
        try:
            run_id = client.get_model_version(model, version).run_id
            value = client.get_run(run_id).data.metrics.get(BACKTEST_MASE)
        except MlflowException:
            continue
        if value is not None:
            found[version] = float(value)
    return found
