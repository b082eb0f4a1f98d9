"""The validate stage, and the checks on the long frame before anything trains on it.

Every check names the series it concerns and says how to fix the problem, in the
spirit of statsforecast/mlforecast ("consider fill_gaps"). The functions here are
pure (a frame in, problems or a new frame out) except ``run``, the stage's I/O:

- :func:`validate_frame` inspects raw input (object columns straight from a CSV are
  fine) and returns every :class:`Problem` it finds.
- :func:`coerce_frame` renames and casts to the canonical ``unique_id``/``ds``/``y``.
- :func:`fill_gaps` puts each series on its full frequency grid, filling per policy.
- :func:`check_frame` does all three and raises :class:`ValidationError` listing
  every problem at once; ``tsops ingest`` calls it before writing the data.
- :func:`run` checks the ingested data against today's model.yaml (its ``freq``) and writes
  ``validation.json``: the stages after it read the data without checking it again.

The modules: ``parse`` (raw columns to canonical ones), ``checks`` (one function per
kind of problem), ``grid`` (the frequency grid and gap filling), ``problems`` (what a
problem says and how it is worded).

Row numbers in messages are 0-based positions in the input frame (for a CSV with
a header line, the file line is row + 2).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsops.core.config import load
from tsops.core.io import read_frame, read_series, write_json
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL, to_offset
from tsops.pipeline.validate.checks import check_canonical, check_order, keys_in
from tsops.pipeline.validate.grid import FILL_POLICIES, FillPolicy, check_policy, fill_gaps
from tsops.pipeline.validate.parse import parse
from tsops.pipeline.validate.problems import (
    BAD_TIMESTAMPS,
    CHECKS,
    DUPLICATE_TIMESTAMPS,
    EMPTY_FRAME,
    INFINITE_TARGET,
    MISSING_COLUMNS,
    MISSING_ID,
    MISSING_PERIODS,
    MISSING_TARGET,
    NO_OBSERVATIONS,
    NON_NUMERIC_TARGET,
    OFF_GRID_TIMESTAMPS,
    TOO_SHORT,
    UNSORTED_TIMESTAMPS,
    Problem,
    ValidationError,
    format_problems,
    ordered,
)

__all__ = [
    "BAD_TIMESTAMPS",
    "CHECKS",
    "DUPLICATE_TIMESTAMPS",
    "EMPTY_FRAME",
    "FILL_POLICIES",
    "INFINITE_TARGET",
    "MISSING_COLUMNS",
    "MISSING_ID",
    "MISSING_PERIODS",
    "MISSING_TARGET",
    "NON_NUMERIC_TARGET",
    "NO_OBSERVATIONS",
    "OFF_GRID_TIMESTAMPS",
    "TOO_SHORT",
    "UNSORTED_TIMESTAMPS",
    "FillPolicy",
    "IngestedDataError",
    "Problem",
    "ValidationError",
    "check_frame",
    "coerce_frame",
    "fill_gaps",
    "format_problems",
    "run",
    "summary",
    "validate_frame",
]


class IngestedDataError(ValidationError):
    """Ingested data that today's model.yaml rejects (e.g. a longer horizon needs
    longer series)."""

    headline = (
        "the data does not pass validation against model.yaml (fix the source or "
        "model.yaml, then run `tsops ingest` again); validation.json was not written"
    )


def validate_frame(
    df: pd.DataFrame,
    *,
    freq: str,
    min_length: int = 1,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> list[Problem]:
    """Every problem in a raw long frame, without changing it.

    Checks, in order: missing columns, empty frame, missing ids, unparseable
    timestamps, non-numeric ``y``, timestamps out of order within a series,
    duplicate ``(unique_id, ds)``, series without one usable ``y``, NaN and ±inf in
    ``y``, timestamps off the ``freq`` grid, missing periods, and series shorter than
    ``min_length`` (1 by default: the pipeline forecasts short series too).
    Columns may hold strings (as read from a CSV). Returns ``[]`` when clean.
    """
    offset = to_offset(freq)
    parsed = parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    if parsed.fatal:
        return parsed.problems
    problems = list(parsed.problems)
    problems += check_order(parsed)
    problems += check_canonical(
        parsed.canonical(), offset, min_length, ignore_nan=parsed.bad_y_keys(), fill="none"
    )
    return ordered(problems)


def coerce_frame(
    df: pd.DataFrame,
    *,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> pd.DataFrame:
    """The canonical frame: ``unique_id`` (str), ``ds`` (datetime64[ns], tz-naive), ``y`` (float64).

    Rows are stably sorted by ``(unique_id, ds)`` with a fresh index; other columns
    (exogenous features) follow unchanged. Time zones are dropped keeping wall-clock
    time; timestamps with mixed UTC offsets are converted to UTC first. Integer
    timestamps are read as years or ``YYYYMMDD``, not as epoch nanoseconds.

    Raises :class:`ValidationError` when a column is missing or an id, timestamp or
    ``y`` value cannot be converted. NaN/inf in ``y``, duplicates and gaps are left
    for :func:`validate_frame` to report.
    """
    parsed = parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    blocking = [p for p in parsed.problems if p.check != EMPTY_FRAME]
    if blocking:
        raise ValidationError(blocking)
    return parsed.canonical()


def check_frame(
    df: pd.DataFrame,
    *,
    freq: str,
    min_length: int = 1,
    fill: FillPolicy | str = "none",
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> pd.DataFrame:
    """Coerce, fill (if ``fill`` is not ``none``) and validate; return the clean canonical frame.

    Raises :class:`ValidationError` listing every problem found. Row order of the
    input does not matter here, because the result is sorted.
    """
    check_policy(fill)
    offset = to_offset(freq)
    parsed = parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    if parsed.fatal:
        raise ValidationError(parsed.problems)
    frame = parsed.canonical()
    if fill != "none":
        frame = fill_gaps(frame, freq=freq, policy=fill)
    ignore = keys_in(frame, parsed.bad_y_keys())
    problems = parsed.problems + check_canonical(
        frame, offset, min_length, ignore_nan=ignore, fill=fill
    )
    if problems:
        raise ValidationError(ordered(problems))
    return frame


def summary(df: pd.DataFrame) -> dict:
    """Series count, rows, shortest and longest series, first and last date."""
    lengths = df.groupby(ID_COL).size()
    return {
        "n_series": int(lengths.size),
        "n_observations": len(df),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "start": str(df[TIME_COL].min().date()),
        "end": str(df[TIME_COL].max().date()),
    }


def run(root: Path, name: str, data: Path | None = None) -> dict:
    """The validate stage: check the ingested data (or ``data``) against today's
    model.yaml and write ``artifacts/<name>/validation.json``.

    The data must be complete as it is: gaps were filled (or refused) by ``tsops
    ingest``, whose ``fill`` policy is not applied again here.
    """
    config, paths = load(root, name)
    raw = read_series(paths) if data is None else read_frame(data)
    # short series are forecast too (tsops.pipeline.classes): no length is asked for
    problems = validate_frame(raw, freq=config.freq)
    if problems:
        raise IngestedDataError(problems)
    report = summary(coerce_frame(raw)) | {"valid": True}
    write_json(report, paths.validation)
    return report
