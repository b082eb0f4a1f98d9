"""Realized accuracy of served forecasts, per model version, once the actuals arrive.

The model server logs one record per (request, series, target time); this module
joins those records with the actuals on ``(unique_id, ds)`` and scores them with the
backtest's own metrics (``tsops.core.metrics``): MASE scaled by the in-sample seasonal
naive error of the history the forecast was made from, sMAPE (0..200) and interval
coverage. Every logged forecast ends up in exactly one place:

- ``scored``: its target time has passed and its actual has arrived;
- ``late``: its target time has passed but the actual is missing;
- ``pending``: its target time is still in the future.

Records carry the ``role`` their server logged them with: ``live`` (a user got the
answer) or ``shadow`` (a copy of a request, answered to nobody: a shadow release or the
idle colour of a blue/green pair). A version is scored per role, so a release's shadow
phase and its live phase never mix; a log without the column is all live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tsops.core.metrics import (
    MODEL_COL,
    STEP_COL,
    naive_scales,
    overall,
    per_horizon,
    per_series,
    pointwise_errors,
)
from tsops.core.schema import CUTOFF_COL, ID_COL, TARGET_COL, TIME_COL, hi_col, lo_col
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import (
    ROLE_COL,
    ROLE_LIVE,
    SERVED_AT_COL,
    VERSION_KEYS,
    as_utc_naive,
    coerce_forecast_log,
    interval_levels,
    long_frame,
    utc_now,
)

STATUS_COL = "status"
REASON_COL = "reason"
#: what realized accuracy is reported per: the served name, the version and the role
#: (live or shadow) its forecasts were logged with
GROUP_KEYS = [*VERSION_KEYS, ROLE_COL]
#: one forecast: the same version asked again for the same series, cutoff and target
#: gives the same forecast, so repeats are kept once (the latest served); a shadow copy
#: of a request is another forecast than the live answer to it
FORECAST_KEY = [*GROUP_KEYS, ID_COL, CUTOFF_COL, TIME_COL]
ERROR_COLS = ["ase", "sse", "smape"]
METRIC_COLS = ["mase", "smape", "rmsse"]


# ------------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class AccuracyResult:
    """Realized accuracy of a forecast log, with every record accounted for.

    ``scored`` has the log columns plus ``y``, ``ase`` (absolute scaled error), ``sse``,
    ``smape`` and ``coverage-<level>``; ``late`` adds ``reason``. ``by_version``,
    ``by_series`` and ``by_step`` have MASE, sMAPE, RMSSE and coverage per level, each
    with the number of pairs ``n`` it averages. By version, metrics are averaged over
    series first (M4 style), and the late and pending counts sit beside them.
    """

    scored: pd.DataFrame
    late: pd.DataFrame
    pending: pd.DataFrame
    by_version: pd.DataFrame
    by_series: pd.DataFrame
    by_step: pd.DataFrame
    now: pd.Timestamp
    period: tuple[pd.Timestamp | None, pd.Timestamp | None]
    levels: list[float] = field(default_factory=list)
    n_logged: int = 0
    n_outside_period: int = 0
    n_repeated: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "logged": self.n_logged,
            "outside_period": self.n_outside_period,
            "repeated": self.n_repeated,
            "scored": len(self.scored),
            "late": len(self.late),
            "pending": len(self.pending),
        }

    def pairs(self) -> pd.DataFrame:
        """Scored, late and pending records in one frame with a ``status`` column."""
        parts = [
            frame.assign(**{STATUS_COL: status})
            for status, frame in (
                ("scored", self.scored),
                ("late", self.late),
                ("pending", self.pending),
            )
            if not frame.empty
        ]
        if not parts:
            return self.scored.assign(**{STATUS_COL: pd.Series(dtype=str)})
        return pd.concat(parts, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        start, end = self.period
        return {
            "now": self.now.isoformat(),
            "period": {
                "since": start.isoformat() if start is not None else None,
                "until": end.isoformat() if end is not None else None,
            },
            "levels": self.levels,
            "counts": self.counts,
            "by_version": records(self.by_version),
            "late_by_reason": {
                str(k): int(v) for k, v in self.late[REASON_COL].value_counts().items()
            }
            if not self.late.empty
            else {},
        }

    def samples(
        self, model: str, env: str | None = None
    ) -> list[tuple[dict[str, str], dict[str, float]]]:
        """Per served name, version and role: the gauges ``tsops.monitor.publish``
        publishes (``accuracy_mase``, ``accuracy_smape``, ``accuracy_scored``,
        ``accuracy_late``, ``accuracy_pending``), labelled model, model_name, version,
        role (and env, when given)."""
        out = []
        for row in self.by_version.to_dict("records"):
            labels = {
                "model": model,
                "model_name": str(row[VERSION_KEYS[0]]),
                "version": str(row[VERSION_KEYS[1]]),
                "role": str(row[ROLE_COL]),
            } | ({"env": env} if env else {})
            numbers = {
                "accuracy_scored": row["n"],
                "accuracy_late": row["n_late"],
                "accuracy_pending": row["n_pending"],
                "accuracy_mase": row["mase"],
                "accuracy_smape": row["smape"],
            }
            out.append((labels, {k: float(v) for k, v in numbers.items() if pd.notna(v)}))
        return out

    def summary(self) -> str:
        """A few lines for people: what was scored, what is waiting and why."""
        counts = self.counts
        lines = [
            f"{counts['scored']} forecast(s) scored, {counts['late']} late (target time "
            f"passed, actual missing), {counts['pending']} pending (target time after "
            f"{self.now.isoformat()})",
        ]
        if counts["repeated"] or counts["outside_period"]:
            lines.append(
                f"of {counts['logged']} logged record(s): {counts['repeated']} repeated an "
                f"earlier forecast (latest kept), {counts['outside_period']} outside the period"
            )
        for reason, n in self.to_dict()["late_by_reason"].items():
            lines.append(f"late: {n} because {reason}")
        if not self.by_version.empty:
            lines.append(self.by_version.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts: NaN becomes None, timestamps ISO strings."""
    out = []
    for row in frame.to_dict("records"):
        out.append({str(k): json_value(v) for k, v in row.items()})
    return out


def json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------ the scoring


def realized_accuracy(
    log: pd.DataFrame,
    actuals: pd.DataFrame,
    season_length: int,
    now: pd.Timestamp | str | None = None,
    period: tuple[pd.Timestamp | str | None, pd.Timestamp | str | None] | None = None,
) -> AccuracyResult:
    """Score logged forecasts against the actuals that have arrived by ``now``.

    ``log``: forecast-log records (``tsops.monitor.inputs.load_forecast_log``, or any
    frame with the columns of ``REQUIRED_LOG_COLUMNS``); ``actuals``: long ``unique_id,
    ds, y`` frame; ``season_length``: the model's, for the MASE scale; ``now``: what
    counts as passed (default: the current UTC time); ``period``: ``(since, until)``
    bounds on the target time ``ds``, inclusive, either may be None.

    A target time has passed when ``ds <= now``. Repeats of one forecast (same
    version, series, cutoff and target) are kept once, the latest served, so a series
    polled often does not weigh more. The MASE scale of a forecast is the in-sample
    seasonal naive error of the actuals up to and including its cutoff (the last
    observation it was made from, as in the backtest), never of later ones; a forecast
    with fewer than two actuals up to its cutoff has no scale and a NaN ``ase``.
    """
    if season_length < 1:
        raise MonitorError(f"season_length must be at least 1, got {season_length}")
    log = with_role(coerce_forecast_log(log))
    actuals = long_frame(actuals)
    now = as_utc_naive(now) if now is not None else utc_now()
    since, until = (as_utc_naive(t) if t is not None else None for t in (period or (None, None)))
    if since is not None and until is not None and since > until:
        raise MonitorError(f"the period starts ({since}) after it ends ({until}): swap them")
    levels = interval_levels(log.columns)

    n_logged = len(log)
    in_period = pd.Series(True, index=log.index)
    if since is not None:
        in_period &= log[TIME_COL] >= since
    if until is not None:
        in_period &= log[TIME_COL] <= until
    log = log[in_period]
    unique = log.sort_values(SERVED_AT_COL, kind="stable").drop_duplicates(
        FORECAST_KEY, keep="last"
    )
    pairs = unique.merge(
        actuals, on=[ID_COL, TIME_COL], how="left", validate="many_to_one"
    ).sort_values([*GROUP_KEYS, ID_COL, CUTOFF_COL, TIME_COL], kind="stable")
    passed = pairs[TIME_COL] <= now
    arrived = pairs[TARGET_COL].notna()
    pending = pairs[~passed].drop(columns=TARGET_COL).reset_index(drop=True)
    late = pairs[passed & ~arrived].drop(columns=TARGET_COL).reset_index(drop=True)
    known = set(actuals[ID_COL].unique())
    late[REASON_COL] = np.where(
        late[ID_COL].isin(known), "no actual at the target time yet", "series not in the actuals"
    )
    scored = _score(pairs[passed & arrived].reset_index(drop=True), actuals, season_length, levels)

    by_version, by_series, by_step = _aggregates(scored, late, pending, unique, levels)
    return AccuracyResult(
        scored=scored,
        late=late,
        pending=pending,
        by_version=by_version,
        by_series=by_series,
        by_step=by_step,
        now=now,
        period=(since, until),
        levels=levels,
        n_logged=n_logged,
        n_outside_period=int((~in_period).sum()),
        n_repeated=len(log) - len(unique),
    )


def with_role(log: pd.DataFrame) -> pd.DataFrame:
    """``log`` with a ``role`` on every record: records from servers that did not log
    one (before shadows existed) answered users, so they are live."""
    if ROLE_COL not in log.columns:
        return log.assign(**{ROLE_COL: ROLE_LIVE})
    return log.assign(**{ROLE_COL: log[ROLE_COL].fillna(ROLE_LIVE).astype(str)})


def _score(
    scored: pd.DataFrame, actuals: pd.DataFrame, season_length: int, levels: list[float]
) -> pd.DataFrame:
    """The scored pairs with their errors, computed by ``tsops.core.metrics`` as in the backtest."""
    if scored.empty:
        return scored.assign(
            **{c: pd.Series(dtype=float) for c in ERROR_COLS},
            **{f"coverage-{lo_col(level)[3:]}": pd.Series(dtype=float) for level in levels},
        )
    scales = _scales(scored[[ID_COL, CUTOFF_COL]].drop_duplicates(), actuals, season_length)
    errors = pointwise_errors(scored.assign(**{MODEL_COL: 0}), scales, levels)
    cov_cols = [c for c in errors.columns if c.startswith("coverage-")]
    # pointwise_errors merges with how="left", which keeps the row order of ``scored``
    out = scored.copy()
    for col in ERROR_COLS + cov_cols:
        out[col] = errors[col].to_numpy()
    for level, col in zip(levels, cov_cols, strict=True):
        # a record without this interval has no coverage, not a miss
        no_interval = out[lo_col(level)].isna() | out[hi_col(level)].isna()
        out.loc[no_interval, col] = np.nan
    return out


def _scales(keys: pd.DataFrame, actuals: pd.DataFrame, season_length: int) -> pd.DataFrame:
    """Seasonal naive MAE/MSE of each series' actuals up to each cutoff (inclusive)."""
    series = {
        uid: (group[TIME_COL].to_numpy(), group[TARGET_COL].to_numpy(dtype=float))
        for uid, group in actuals.groupby(ID_COL, sort=False)
    }
    rows = []
    for uid, cutoff in keys.itertuples(index=False):
        times, y = series[uid]
        n = int(np.searchsorted(times, np.datetime64(cutoff), side="right"))
        mae, mse = naive_scales(y[:n], season_length) if n >= 2 else (np.nan, np.nan)
        rows.append((uid, cutoff, mae, mse))
    return pd.DataFrame(rows, columns=[ID_COL, CUTOFF_COL, "mae_scale", "mse_scale"])


def _aggregates(
    scored: pd.DataFrame,
    late: pd.DataFrame,
    pending: pd.DataFrame,
    unique: pd.DataFrame,
    levels: list[float],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # tsops.core.metrics aggregates by one ``model`` column: give each (served name,
    # version, role) a code there and map it back afterwards.
    versions = unique[GROUP_KEYS].drop_duplicates().sort_values(GROUP_KEYS).reset_index(drop=True)
    versions[MODEL_COL] = np.arange(len(versions))
    coded = scored.merge(versions, on=GROUP_KEYS, how="left")
    cov_cols = [f"coverage-{lo_col(level)[3:]}" for level in levels]
    points = coded[[MODEL_COL, ID_COL, STEP_COL, *ERROR_COLS, *cov_cols]]

    def finish(metrics: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        sizes = points.groupby(keys).size().rename("n").reset_index()
        metrics = metrics.merge(sizes, on=keys, how="left")
        metrics = versions.merge(metrics, on=MODEL_COL, how="inner")
        cols = [*GROUP_KEYS, *[k for k in keys if k != MODEL_COL], "n", *METRIC_COLS, *cov_cols]
        return metrics[cols].reset_index(drop=True)

    series_metrics = per_series(points)
    by_series = finish(series_metrics, [MODEL_COL, ID_COL])
    by_step = finish(per_horizon(points), [MODEL_COL, STEP_COL])

    by_version = versions.merge(overall(series_metrics), on=MODEL_COL, how="left")
    counts = {
        "n": coded.groupby(MODEL_COL).size(),
        "n_series": coded.groupby(MODEL_COL)[ID_COL].nunique(),
        "n_late": late.merge(versions, on=GROUP_KEYS).groupby(MODEL_COL).size(),
        "n_pending": pending.merge(versions, on=GROUP_KEYS).groupby(MODEL_COL).size(),
    }
    for name, values in counts.items():
        by_version[name] = by_version[MODEL_COL].map(values).fillna(0).astype("int64")
    cols = [*GROUP_KEYS, "n", "n_series", "n_late", "n_pending", *METRIC_COLS, *cov_cols]
    return by_version[cols], by_series, by_step
