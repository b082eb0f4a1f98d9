"""What monitoring reads: the forecast log, the actuals and the times given on the
command line (the model's config and training data come from ``tsops.core``).

Every reader checks what it read and says what to do when it cannot be used, so
the scoring, drift and staleness modules work on frames of known columns and dtypes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsops.core.config import ModelConfig
from tsops.core.metrics import STEP_COL
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col
from tsops.monitor.errors import ActualsError, MonitorError
from tsops.serving.forecast_log import ROLE_COL, ROLE_LIVE, ROLE_SHADOW

MODEL_NAME_COL = "model_name"
VERSION_COL = "model_version"
SERVED_AT_COL = "served_at"
REGISTERED_MODEL_COL = "registered_model"
VERSION_KEYS = [MODEL_NAME_COL, VERSION_COL]
#: where the forecast log is looked for when neither --log nor the setting names it
DEFAULT_LOG_DIR = "forecast-logs"
#: ``role`` of a record: ``live`` (a user's request) or ``shadow`` (a copy a champion
#: forwarded to a shadow release); a log without the column, or a record without a
#: value, is live (logs written before shadows existed)
ROLES = (ROLE_LIVE, ROLE_SHADOW)

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
_STRING_COLS = (MODEL_NAME_COL, VERSION_COL, ID_COL)
_INTERVAL = re.compile(r"^lo-(?P<level>\d+(?:\.\d+)?)$")
_ACTUALS_SUFFIXES = (".parquet", ".csv", ".txt")


# --------------------------------------------------------------------------- the forecast log


@dataclass(frozen=True)
class DatabaseLog:
    """The forecast log in PostgreSQL (``TSOPS_FORECAST_LOG_URL``): where
    :func:`load_forecast_log` reads when no ``--log`` folder is given."""

    url: str

    def __str__(self) -> str:
        from tsops.platform.database import masked

        return f"database {masked(self.url)}"


def forecast_log_dir(
    root: Path, log: Path | None, configured: Path | None, url: str | None = None
) -> Path | DatabaseLog:
    """The log to read: ``--log``, else the database (``TSOPS_FORECAST_LOG_URL``), else
    the configured folder (``TSOPS_FORECAST_LOG_DIR``, which the server writes to), else
    ``<root>/forecast-logs``."""
    if log is None and url:
        return DatabaseLog(url)
    return log or configured or Path(root) / DEFAULT_LOG_DIR


def has_forecast_log(directory: Path | DatabaseLog) -> bool:
    """Whether ``directory`` holds any part file of a forecast log (the database: any row)."""
    if isinstance(directory, DatabaseLog):
        from tsops.platform.forecast_log_sql import has_records

        return has_records(directory.url)
    return directory.is_dir() and any(directory.rglob("part-*"))


def load_forecast_log(directory: Path | DatabaseLog) -> pd.DataFrame:
    """Every record of the forecast log under ``directory`` as one typed frame.

    ``directory`` is what the server's ``--forecast_log_dir`` points at, or one served
    model's folder under it: part files are found recursively. Or the database the
    servers write to (:class:`DatabaseLog`): the same records, one per target time.
    See :func:`coerce_forecast_log` for the dtypes.
    """
    from tsops.serving.forecast_log import read_forecast_log

    if isinstance(directory, DatabaseLog):
        return _load_database_log(directory)
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


def _load_database_log(log: DatabaseLog) -> pd.DataFrame:
    from tsops.platform.forecast_log_sql import ForecastLogDatabaseError, read_records

    try:
        frame = read_records(log.url)
    except ForecastLogDatabaseError as exc:
        raise MonitorError(str(exc)) from exc
    if frame.empty:
        raise MonitorError(
            f"{log} holds no forecast records (its table forecast_log is missing or "
            "empty): has a server with TSOPS_FORECAST_LOG_URL set answered a request? "
            "Unset TSOPS_FORECAST_LOG_URL or pass --log to read a log folder instead"
        )
    return coerce_forecast_log(frame, source=str(log))


def coerce_forecast_log(log: pd.DataFrame, source: str = "forecast log") -> pd.DataFrame:
    """Check a forecast-log frame and give it the dtypes monitoring relies on.

    ``unique_id``, ``model_name`` and ``model_version`` become strings; ``cutoff`` and
    ``ds`` timestamps (tz-naive, UTC wall clock when the log carried an offset);
    ``served_at`` (unix seconds in the log) a tz-naive UTC timestamp; ``step`` an
    integer; ``mean`` and the ``lo-*`` / ``hi-*`` columns floats; ``role`` ``live`` or
    ``shadow`` (missing: ``live``). Other columns are kept.
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
    out[ROLE_COL] = _roles(out[ROLE_COL] if ROLE_COL in out.columns else None, source)
    for col in [MEAN_COL, *interval_columns(out.columns)]:
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


def interval_columns(columns: Sequence[str]) -> list[str]:
    """The ``lo-*`` and ``hi-*`` columns of :func:`interval_levels`, in pairs."""
    return [c for level in interval_levels(columns) for c in (lo_col(level), hi_col(level))]


def _roles(values: pd.Series | None, source: str) -> pd.Series | str:
    """Each record's role, ``live`` where the log has none."""
    if values is None:
        return ROLE_LIVE
    roles = values.astype(object).where(values.notna(), ROLE_LIVE).astype(str)
    bad = ~roles.isin(ROLES)
    if bad.any():
        raise MonitorError(
            f"{source}: role must be {' or '.join(ROLES)}; {int(bad.sum())} record(s) have "
            f"e.g. {roles[bad].iloc[0]!r}: drop or repair those records"
        )
    return roles


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


def read_actuals(root: Path, config: ModelConfig, override: Path | None = None) -> pd.DataFrame:
    """The observed values to score against: ``override`` (a CSV or Parquet long frame
    with ``unique_id, ds, y``) or else the model's own source, as :func:`prepare_actuals`."""
    from tsops.core.io import read_frame
    from tsops.pipeline.ingest import load_source

    if override is not None:
        if Path(override).suffix not in _ACTUALS_SUFFIXES:
            raise ActualsError(
                f"{override}: unsupported file type {Path(override).suffix!r}; pass a .csv "
                "or .parquet file with columns unique_id, ds and y"
            )
        return prepare_actuals(read_frame(override))
    source = config.source
    raw = load_source(source, config.freq, Path(root))
    return prepare_actuals(
        raw, id_col=source.id_col, time_col=source.time_col, target_col=source.target_col
    )


def long_frame(frame: pd.DataFrame, what: str = "actuals") -> pd.DataFrame:
    """``frame``'s ``unique_id, ds, y`` columns as :func:`prepare_actuals` gives them;
    ``what`` names the frame when a column is missing."""
    missing = [c for c in (ID_COL, TIME_COL, TARGET_COL) if c not in frame.columns]
    if missing:
        raise MonitorError(
            f"column(s) {', '.join(missing)} missing from the {what} (it has: "
            f"{', '.join(map(str, frame.columns)) or 'none'}): give a long frame with "
            "unique_id, ds and y (prepare_actuals maps other column names)"
        )
    return prepare_actuals(frame[[ID_COL, TIME_COL, TARGET_COL]])


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
    from tsops.pipeline.validate import ValidationError, coerce_frame

    try:
        frame = coerce_frame(raw, id_col=id_col, time_col=time_col, target_col=target_col)
    except ValidationError as exc:
        raise ActualsError(str(exc)) from exc
    frame = frame.loc[np.isfinite(frame[TARGET_COL]), [ID_COL, TIME_COL, TARGET_COL]]
    repeated = frame.duplicated([ID_COL, TIME_COL], keep=False)
    if repeated.any():
        first = frame.loc[repeated].iloc[0]
        series = sorted(frame.loc[repeated, ID_COL].unique())
        raise ActualsError(
            f"actuals have more than one value for the same series and time in "
            f"{len(series)} series ({', '.join(series[:5])}{', ...' if len(series) > 5 else ''}; "
            f"e.g. {first[ID_COL]!r} at {first[TIME_COL]}): keep one observation per "
            f"({id_col}, {time_col})"
        )
    return frame.reset_index(drop=True)


# ------------------------------------------------------------------------------------ times


def as_utc_naive(value: pd.Timestamp | str) -> pd.Timestamp:
    """``value`` as a tz-naive UTC timestamp (an offset is converted, a naive time kept);
    what every time in monitoring is compared as."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise MonitorError(
            f"{value!r} is not a timestamp; use ISO 8601 such as 2020-06-01 or 2020-06-01T12:00:00"
        ) from exc
    if ts is pd.NaT:
        raise MonitorError(f"{value!r} is not a timestamp; use ISO 8601 such as 2020-06-01")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def utc_now() -> pd.Timestamp:
    """The current time as a tz-naive UTC timestamp."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None)
