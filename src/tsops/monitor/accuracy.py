"""Realized accuracy of served forecasts, per model version, once the actuals arrive.

The model server logs one record per (request, series, target time); this module
joins those records with the actuals on ``(unique_id, ds)`` and scores them with the
backtest's own metrics (``tsops.core.metrics``): MASE scaled by the in-sample seasonal
naive error of the history the forecast was made from, sMAPE (0..200) and interval
coverage. Every logged forecast ends up in exactly one place:

- ``scored``: its target time has passed and its actual has arrived;
- ``late``: its target time has passed but the actual is missing;
- ``pending``: its target time is still in the future.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsops.core.errors import TsopsError
from tsops.core.metrics import (
    MODEL_COL,
    STEP_COL,
    naive_scales,
    overall,
    per_horizon,
    per_series,
    pointwise_errors,
)
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col

MODEL_NAME_COL = "model_name"
VERSION_COL = "model_version"
SERVED_AT_COL = "served_at"
STATUS_COL = "status"
REASON_COL = "reason"
VERSION_KEYS = [MODEL_NAME_COL, VERSION_COL]

#: what every log record must carry for monitoring (the server writes more: request_id, ...)
REQUIRED_LOG_COLUMNS = (
    MODEL_NAME_COL,
    VERSION_COL,
    ID_COL,
    CUTOFF_COL,
    TIME_COL,
    STEP_COL,
    MEAN_COL,
    SERVED_AT_COL,
)
#: one forecast: the same version asked again for the same series, cutoff and target
#: gives the same forecast, so repeats are kept once (the latest served)
FORECAST_KEY = [MODEL_NAME_COL, VERSION_COL, ID_COL, CUTOFF_COL, TIME_COL]
ERROR_COLS = ["ase", "sse", "smape"]
METRIC_COLS = ["mase", "smape", "rmsse"]

_INTERVAL = re.compile(r"^lo-(?P<level>\d+(?:\.\d+)?)$")
_STRING_COLS = (MODEL_NAME_COL, VERSION_COL, ID_COL)


class MonitorError(TsopsError, ValueError):
    """Input that monitoring cannot use; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- the forecast log


def load_forecast_log(directory: Path) -> pd.DataFrame:
    """Every record of the forecast log under ``directory`` as one typed frame.

    ``directory`` is what the server's ``--forecast_log_dir`` points at, or one served
    model's folder under it: part files are found recursively. See
    :func:`coerce_forecast_log` for the dtypes.
    """
    from tsops.serving.forecast_log import read_forecast_log

    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(
            f"forecast log directory {directory} does not exist: pass the directory the "
            "server writes to (`tsops serve --forecast_log_dir`, TSOPS_FORECAST_LOG_DIR) "
            "or one served model's folder under it"
        )
    if not directory.is_dir():
        raise MonitorError(
            f"{directory} is a file: the forecast log is a directory of "
            "date=YYYY-MM-DD/part-*.jsonl (or .parquet) files; pass the directory"
        )
    # read_forecast_log knows the layout the server writes; reading through it keeps
    # the two from drifting apart.
    try:
        records = list(read_forecast_log(directory))
    except ValueError as exc:
        raise MonitorError(
            f"a part file under {directory} cannot be read ({exc}); move the damaged "
            "part-* file aside and run again"
        ) from exc
    if not records:
        raise MonitorError(
            f"{directory} holds no forecast records (no date=YYYY-MM-DD/part-*.jsonl or "
            ".parquet files): has the server answered a request with --forecast_log_dir "
            "set? Point --log at the directory it writes to"
        )
    return coerce_forecast_log(pd.DataFrame.from_records(records), source=str(directory))


def coerce_forecast_log(log: pd.DataFrame, source: str = "forecast log") -> pd.DataFrame:
    """Check a forecast-log frame and give it the dtypes monitoring relies on.

    ``unique_id``, ``model_name`` and ``model_version`` become strings; ``cutoff`` and
    ``ds`` timestamps (tz-naive, UTC wall clock when the log carried an offset);
    ``served_at`` (unix seconds in the log) a tz-naive UTC timestamp; ``step`` an
    integer; ``mean`` and the ``lo-*`` / ``hi-*`` columns floats. Other columns are kept.
    """
    missing = [c for c in REQUIRED_LOG_COLUMNS if c not in log.columns]
    if missing:
        raise MonitorError(
            f"{source} lacks column(s) {', '.join(missing)} (it has: "
            f"{', '.join(map(str, log.columns)) or 'none'}); monitoring needs "
            f"{', '.join(REQUIRED_LOG_COLUMNS)}, as `tsops serve --forecast_log_dir` writes "
            "them: point at a log the server wrote, or add the missing columns"
        )
    out = log.copy()
    for col in _STRING_COLS:
        empty = out[col].isna()
        if empty.any():
            raise MonitorError(
                f"{source}: {int(empty.sum())} record(s) have no {col}; every record "
                f"names its {col}: drop or repair those records"
            )
        out[col] = out[col].astype(str)
    for col in (CUTOFF_COL, TIME_COL):
        out[col] = _timestamps(out[col], col, source)
    out[SERVED_AT_COL] = _served_at(out[SERVED_AT_COL], source)
    steps = pd.to_numeric(out[STEP_COL], errors="coerce")
    bad = steps.isna() | (steps < 1) | (steps != np.floor(steps))
    if bad.any():
        raise MonitorError(
            f"{source}: step must be a horizon step 1, 2, ...; "
            f"{int(bad.sum())} record(s) have e.g. {out.loc[bad, STEP_COL].iloc[0]!r}"
        )
    out[STEP_COL] = steps.astype("int64")
    for col in [MEAN_COL, *_interval_columns(out.columns)]:
        values = pd.to_numeric(out[col], errors="coerce").astype("float64")
        if col == MEAN_COL and not np.isfinite(values).all():
            bad = ~np.isfinite(values)
            raise MonitorError(
                f"{source}: {int(bad.sum())} record(s) have no finite mean forecast "
                f"(e.g. series {out.loc[bad, ID_COL].iloc[0]!r}); drop them or fix the server"
            )
        out[col] = values
    front = list(REQUIRED_LOG_COLUMNS)
    return out[front + [c for c in out.columns if c not in front]].reset_index(drop=True)


def interval_levels(columns: Sequence[str]) -> list[float]:
    """Levels with both a ``lo-<level>`` and a ``hi-<level>`` column, ascending."""
    levels = []
    for col in columns:
        match = _INTERVAL.match(str(col))
        if match and hi_col(float(match["level"])) in columns:
            levels.append(float(match["level"]))
    return sorted(levels)


def _interval_columns(columns: Sequence[str]) -> list[str]:
    return [c for level in interval_levels(columns) for c in (lo_col(level), hi_col(level))]


def _timestamps(values: pd.Series, col: str, source: str) -> pd.Series:
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        raise MonitorError(
            f"{source}: {col} must be an ISO timestamp such as 2020-01-01T00:00:00; "
            f"{int(bad.sum())} record(s) have e.g. {values[bad].iloc[0]!r}"
        )
    return parsed.dt.tz_localize(None)


def _served_at(values: pd.Series, source: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        seconds = pd.to_numeric(values, errors="coerce")
        parsed = pd.to_datetime(seconds, unit="s", utc=True)
    bad = parsed.isna()
    if bad.any():
        raise MonitorError(
            f"{source}: served_at must be unix seconds (as the server writes it); "
            f"{int(bad.sum())} record(s) have e.g. {values[bad].iloc[0]!r}"
        )
    return parsed.dt.tz_localize(None)


# ---------------------------------------------------------------------------------- actuals


def prepare_actuals(
    raw: pd.DataFrame,
    *,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> pd.DataFrame:
    """The canonical ``unique_id, ds, y`` frame of observed values, sorted.

    Uses validation's own coercion (so errors name the user's columns); rows without
    a finite ``y`` are not observations yet and are dropped, so their forecasts count
    as late. Two values for one series and time are an error: which one was observed?
    Gaps are allowed: an actual that has not arrived is what ``late`` reports.
    """
    from tsops.pipeline.validate import coerce_frame

    frame = coerce_frame(raw, id_col=id_col, time_col=time_col, target_col=target_col)
    frame = frame.loc[np.isfinite(frame[TARGET_COL]), [ID_COL, TIME_COL, TARGET_COL]]
    repeated = frame.duplicated([ID_COL, TIME_COL], keep=False)
    if repeated.any():
        first = frame.loc[repeated].iloc[0]
        series = sorted(frame.loc[repeated, ID_COL].unique())
        raise MonitorError(
            f"actuals have more than one value for the same series and time in "
            f"{len(series)} series ({', '.join(series[:5])}{', ...' if len(series) > 5 else ''}; "
            f"e.g. {first[ID_COL]!r} at {first[TIME_COL]}): keep one observation per "
            f"({id_col}, {time_col})"
        )
    return frame.reset_index(drop=True)


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

    ``log``: forecast-log records (:func:`load_forecast_log`, or any frame with the
    columns of ``REQUIRED_LOG_COLUMNS``); ``actuals``: long ``unique_id, ds, y`` frame;
    ``season_length``: the model's, for the MASE scale; ``now``: what counts as passed
    (default: the current UTC time); ``period``: ``(since, until)`` bounds on the target
    time ``ds``, inclusive, either may be None.

    A target time has passed when ``ds <= now``. Repeats of one forecast (same
    version, series, cutoff and target) are kept once, the latest served, so a series
    polled often does not weigh more. The MASE scale of a forecast is the in-sample
    seasonal naive error of the actuals up to and including its cutoff (the last
    observation it was made from, as in the backtest), never of later ones; a forecast
    with fewer than two actuals up to its cutoff has no scale and a NaN ``ase``.
    """
    if season_length < 1:
        raise MonitorError(f"season_length must be at least 1, got {season_length}")
    log = coerce_forecast_log(log)
    actuals = _check_actuals(actuals)
    now = _as_utc_naive(now) if now is not None else _utc_now()
    since, until = (_as_utc_naive(t) if t is not None else None for t in (period or (None, None)))
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
    ).sort_values([*VERSION_KEYS, ID_COL, CUTOFF_COL, TIME_COL], kind="stable")
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


def _check_actuals(actuals: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (ID_COL, TIME_COL, TARGET_COL) if c not in actuals.columns]
    if missing:
        raise MonitorError(
            f"actuals lack column(s) {', '.join(missing)} (they have: "
            f"{', '.join(map(str, actuals.columns)) or 'none'}): give a long frame with "
            "unique_id, ds and y (prepare_actuals maps other column names)"
        )
    return prepare_actuals(actuals[[ID_COL, TIME_COL, TARGET_COL]])


def _as_utc_naive(value: pd.Timestamp | str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise MonitorError(
            f"{value!r} is not a timestamp; use ISO 8601 such as 2020-06-01 or 2020-06-01T12:00:00"
        ) from exc
    if ts is pd.NaT:
        raise MonitorError(f"{value!r} is not a timestamp; use ISO 8601 such as 2020-06-01")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


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
    # tsops.core.metrics aggregates by one ``model`` column: give each (served name, version)
    # a code there and map it back afterwards.
    versions = (
        unique[VERSION_KEYS].drop_duplicates().sort_values(VERSION_KEYS).reset_index(drop=True)
    )
    versions[MODEL_COL] = np.arange(len(versions))
    coded = scored.merge(versions, on=VERSION_KEYS, how="left")
    cov_cols = [f"coverage-{lo_col(level)[3:]}" for level in levels]
    points = coded[[MODEL_COL, ID_COL, STEP_COL, *ERROR_COLS, *cov_cols]]

    def finish(metrics: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        sizes = points.groupby(keys).size().rename("n").reset_index()
        metrics = metrics.merge(sizes, on=keys, how="left")
        metrics = versions.merge(metrics, on=MODEL_COL, how="inner")
        cols = [*VERSION_KEYS, *[k for k in keys if k != MODEL_COL], "n", *METRIC_COLS, *cov_cols]
        return metrics[cols].reset_index(drop=True)

    series_metrics = per_series(points)
    by_series = finish(series_metrics, [MODEL_COL, ID_COL])
    by_step = finish(per_horizon(points), [MODEL_COL, STEP_COL])

    by_version = versions.merge(overall(series_metrics), on=MODEL_COL, how="left")
    counts = {
        "n": coded.groupby(MODEL_COL).size(),
        "n_series": coded.groupby(MODEL_COL)[ID_COL].nunique(),
        "n_late": late.merge(versions, on=VERSION_KEYS).groupby(MODEL_COL).size(),
        "n_pending": pending.merge(versions, on=VERSION_KEYS).groupby(MODEL_COL).size(),
    }
    for name, values in counts.items():
        by_version[name] = by_version[MODEL_COL].map(values).fillna(0).astype("int64")
    cols = [*VERSION_KEYS, "n", "n_series", "n_late", "n_pending", *METRIC_COLS, *cov_cols]
    return by_version[cols], by_series, by_step
