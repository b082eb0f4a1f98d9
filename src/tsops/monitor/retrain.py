"""When to retrain, and preparing the retraining branch: measure, decide, then act.

- ``measure`` reads what the decision needs (the actuals, the training data, the
  served version's realized error and its backtest expectation, drift) into an
  ``Evidence``;
- ``decide`` applies the policy of ``model.yaml`` (``monitoring.retrain``) to it: a
  pure function, every trigger reported with its numbers;
- ``prepare_branch`` turns a fired decision into a git branch that updates the data
  snapshot (``data.dvc``) and the pipeline's outputs (``dvc.lock``, the committed
  metrics), ready to open as a pull request. The branch is named after the new data's
  fingerprint, so running it twice for the same data prepares nothing new, and it is
  made by ``tsops.core.git``, which refuses to run over uncommitted changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tsops.core.config import ModelConfig, RetrainConfig
from tsops.core.errors import TsopsError
from tsops.core.git import commit_on_branch
from tsops.core.paths import ModelPaths
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL, to_offset
from tsops.monitor.errors import MonitorError

if TYPE_CHECKING:
    from tsops.monitor.served import ModelLog

BRANCH_PREFIX = "retrain/"
#: how much of a failed pipeline command's output the error shows (its end)
OUTPUT_TAIL = 1500


class RetrainError(TsopsError):
    """Preparing the retraining branch failed; the message says what to do."""

    headline = "no branch created"


@dataclass(frozen=True)
class Evidence:
    """What monitoring measured, for :func:`decide`."""

    new_periods: int
    data_fingerprint: str | None = None
    #: the version judged (``tsops.monitor.served.served_version``); None without a log
    served_version: str | None = None
    realized_mase: float | None = None
    n_scored: int = 0
    expected_mase: float | None = None
    #: None: not measured (off, or too little data; ``drift_detail`` says which)
    drift_detected: bool | None = None
    drift_detail: str = ""


@dataclass
class RetrainDecision:
    model: str
    fire: bool
    reasons: list[str]
    #: one entry per trigger: enabled, the measured value, the threshold, fired
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_fingerprint: str | None = None

    @property
    def branch(self) -> str | None:
        if self.data_fingerprint is None:
            return None
        return f"{BRANCH_PREFIX}{self.model}-{self.data_fingerprint[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fire": self.fire,
            "reasons": self.reasons,
            "checks": self.checks,
            "data_fingerprint": self.data_fingerprint,
            "branch": self.branch,
        }

    def summary(self) -> str:
        lines = [f"retrain {self.model}: {'YES' if self.fire else 'no'}"]
        for name, check in self.checks.items():
            state = "fired" if check["fired"] else ("off" if not check["enabled"] else "ok")
            lines.append(f"  {name:<12} {state:<6} {check['detail']}")
        return "\n".join(lines)


def new_complete_periods(trained: pd.DataFrame, actuals: pd.DataFrame, freq: str) -> int:
    """Consecutive periods after the training data's end for which every trained series
    has an actual.

    A period counts only when it is complete: a retrain on half-arrived data would
    train on a panel whose series end at different times.
    """
    if trained.empty or actuals.empty:
        return 0
    offset = to_offset(freq)
    end = trained[TIME_COL].max()
    series = set(trained[ID_COL].astype(str))
    later = actuals[(actuals[TIME_COL] > end) & actuals[ID_COL].astype(str).isin(series)]
    per_period = later.groupby(TIME_COL)[ID_COL].nunique()
    complete = set(per_period[per_period == len(series)].index)
    count, period = 0, end + offset
    while period in complete:
        count += 1
        period += offset
    return count


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the (unique_id, ds, y) content, independent of row order and file format."""
    ordered = frame[[ID_COL, TIME_COL, TARGET_COL]].sort_values([ID_COL, TIME_COL])
    hashed = pd.util.hash_pandas_object(ordered.astype({ID_COL: str}), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def measure(
    root: Path,
    config: ModelConfig,
    paths: ModelPaths,
    served: ModelLog | None,
    *,
    actuals: Path | None = None,
    now: str | None = None,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> Evidence:
    """Read what :func:`decide` weighs for ``paths.name``.

    ``served``: the model's forecast-log records (None without a log: the error
    trigger then reports no served forecasts); ``actuals``: a file to use instead of
    the model's source; ``now``: what counts as passed for scoring; ``version``: the
    version to judge instead of the served one (``served_version``); ``tracking_uri``:
    the registry holding the backtest MASE (None: the embedded store at ``root``).
    """
    from tsops.core.io import read_series
    from tsops.monitor.accuracy import realized_accuracy
    from tsops.monitor.inputs import read_actuals
    from tsops.monitor.served import (
        backtest_mases,
        realized_mase,
        registry_or_none,
        served_version,
    )

    trained = read_series(paths)
    current = read_actuals(root, config, actuals)
    judged, realized, n_scored, expected = None, None, 0, None
    if served is not None:
        result = realized_accuracy(served.records, current, config.season_length, now=now)
        judged = served_version(served.records, version)
        realized, n_scored = realized_mase(result.by_version, judged)
        registry = registry_or_none(root, tracking_uri)
        expected = backtest_mases(registry, paths.name, [judged]).get(judged)
    drift_detected, drift_detail = None, "off (on_drift: false)"
    if config.monitoring.retrain.on_drift:
        drift_detected, drift_detail = measure_drift(config, trained, current)
    return Evidence(
        new_periods=new_complete_periods(trained, current, config.freq),
        data_fingerprint=data_fingerprint(current),
        served_version=judged,
        realized_mase=realized,
        n_scored=n_scored,
        expected_mase=expected,
        drift_detected=drift_detected,
        drift_detail=drift_detail,
    )


def measure_drift(
    config: ModelConfig, trained: pd.DataFrame, observed: pd.DataFrame
) -> tuple[bool | None, str]:
    """Evidently's dataset drift of the actuals after the training data, and a line
    saying what was found; (None, why) when there is too little data to measure."""
    from tsops.monitor.drift import drift_report
    from tsops.monitor.drift_features import after_training

    threshold = config.monitoring.drift_threshold
    try:
        report = drift_report(
            trained,
            after_training(trained, observed),
            season_length=config.season_length,
            threshold=threshold,
            freq=config.freq,
        )
    except MonitorError as exc:
        return None, f"not measured: {exc}"
    return report.dataset_drift, (
        f"share of drifted features {report.drift_share:.2f} (dataset drift at >= {threshold})"
    )


def decide(model: str, policy: RetrainConfig, evidence: Evidence) -> RetrainDecision:
    """Apply ``policy`` to ``evidence``; every trigger is reported, fired or not, with
    its numbers. Pure: nothing is read or written."""
    new_periods, realized_mase = evidence.new_periods, evidence.realized_mase
    n_scored, expected_mase = evidence.n_scored, evidence.expected_mase
    served_version, drift_detected = evidence.served_version, evidence.drift_detected
    drift_detail = evidence.drift_detail
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []

    fired = policy.on_new_period and new_periods > 0
    checks["new_period"] = {
        "enabled": policy.on_new_period,
        "value": new_periods,
        "threshold": 1,
        "fired": fired,
        "detail": f"{new_periods} new complete period(s) of actuals since the training data",
    }
    if fired:
        reasons.append(f"{new_periods} new complete period(s) landed")

    enabled = policy.max_error_ratio is not None
    ratio = None
    if realized_mase is not None and expected_mase:
        ratio = realized_mase / expected_mase
    if not enabled:
        detail = "off (max_error_ratio: null)"
    elif served_version is None:
        detail = "no served forecasts in the log yet"
    elif expected_mase is None:
        detail = f"version {served_version} has no backtest MASE in the registry"
    elif n_scored < policy.min_scored or realized_mase is None:
        detail = (
            f"{n_scored} forecast/actual pair(s) scored for version {served_version}; "
            f"{policy.min_scored} needed before the error counts"
        )
    else:
        detail = (
            f"version {served_version}: realized MASE {realized_mase:.3f} = {ratio:.2f}x "
            f"the backtest's {expected_mase:.3f} (limit {policy.max_error_ratio}x, "
            f"{n_scored} pairs)"
        )
    fired = (
        enabled
        and ratio is not None
        and n_scored >= policy.min_scored
        and ratio > policy.max_error_ratio
    )
    checks["error"] = {
        "enabled": enabled,
        "value": ratio,
        "threshold": policy.max_error_ratio,
        "fired": bool(fired),
        "detail": detail,
    }
    if fired:
        reasons.append(f"realized error {ratio:.2f}x the backtest expectation")

    fired = bool(policy.on_drift and drift_detected)
    checks["drift"] = {
        "enabled": policy.on_drift,
        "value": drift_detected,
        "threshold": None,
        "fired": fired,
        "detail": drift_detail or ("not measured" if drift_detected is None else ""),
    }
    if fired:
        reasons.append("target drift detected")

    return RetrainDecision(model, bool(reasons), reasons, checks, evidence.data_fingerprint)


# -- the branch -----------------------------------------------------------------------


def prepare_branch(
    root: Path,
    decision: RetrainDecision,
    run: Callable[[list[str]], Any],
    remote: str | None = "origin",
) -> tuple[str, bool]:
    """Create the retraining branch with the new data snapshot and pipeline outputs.

    ``run(cmd)`` runs one pipeline command (``tsops ingest``, ``dvc add``, ``dvc
    repro``) in ``root`` and raises on failure. Returns ``(branch, created)``;
    ``created`` is False when the branch already exists here or on ``remote``. The
    working copy stays on the new branch; on a failure it goes back.
    """
    branch = decision.branch
    if not decision.fire or branch is None:
        raise RetrainError(f"no retraining to prepare for {decision.model}: no trigger fired")
    # The backtest metrics are tracked in git too (the pull request's metrics diff
    # compares with main's), so the branch carries them beside the data and the lock.
    tracked = ["data.dvc", "dvc.lock", f"artifacts/{decision.model}/metrics.json"]

    def retrain() -> list[str]:
        run(["tsops", "ingest", decision.model])
        run(["dvc", "add", "-q", "data"])
        run(["dvc", "repro", "-q", f"train@{decision.model}", f"evaluate@{decision.model}"])
        return [path for path in tracked if (Path(root) / path).exists()]

    message = (
        f"Retrain {decision.model}: {'; '.join(decision.reasons)}\n\n"
        f"Data fingerprint {decision.data_fingerprint}. Prepared by `tsops retrain`."
    )
    created = commit_on_branch(root, branch, message, retrain, stay=True, remote=remote)
    return branch, created


def pipeline_runner(root: Path) -> Callable[[list[str]], None]:
    """``run(cmd)`` for :func:`prepare_branch`: runs ``tsops`` / ``dvc`` in ``root``
    (from this Python's environment when installed there), raising ``RetrainError``
    with the end of the command's output when it fails."""
    import subprocess
    import sys

    tools = Path(sys.executable).parent

    def run(cmd: list[str]) -> None:
        exe = tools / cmd[0]
        full = [str(exe) if exe.exists() else cmd[0], *cmd[1:]]
        done = subprocess.run(full, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-OUTPUT_TAIL:]
            raise RetrainError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")

    return run
