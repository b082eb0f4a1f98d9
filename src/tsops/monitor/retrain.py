"""When to retrain, and preparing the retraining branch.

``decide`` applies the policy of ``model.yaml`` (``monitoring.retrain``) to what
monitoring measured: new complete periods of actuals since the training data, the
served version's realized error against its backtest expectation, and drift.
``prepare_branch`` turns a fired decision into a git branch that updates the data
snapshot (``data.dvc``) and the pipeline's outputs (``dvc.lock``, the committed
metrics), ready to open as a pull request; the branch is named after the new data's
fingerprint, so running it twice for the same data prepares nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tsops.core.config import RetrainConfig
from tsops.core.errors import TsopsError
from tsops.core.git import commit_on_branch
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

BRANCH_PREFIX = "retrain/"


class RetrainError(TsopsError):
    """Preparing the retraining branch failed; the message says what to do."""


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
    offset = pd.tseries.frequencies.to_offset(freq)
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


def decide(
    model: str,
    policy: RetrainConfig,
    *,
    new_periods: int,
    realized_mase: float | None,
    n_scored: int,
    expected_mase: float | None,
    served_version: str | None,
    drift_detected: bool | None,
    drift_detail: str = "",
    data_fingerprint: str | None = None,
) -> RetrainDecision:
    """Apply ``policy``; every trigger is reported, fired or not, with its numbers."""
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

    return RetrainDecision(model, bool(reasons), reasons, checks, data_fingerprint)


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
