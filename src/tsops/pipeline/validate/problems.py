"""What a check reports: ``Problem``, ``ValidationError`` and the wording they share.

Every message details a few series and a few examples each, then counts the rest:
a panel of 1,428 broken series must still give an error a person can read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsops.core.errors import TsopsError

MISSING_COLUMNS = "missing_columns"
EMPTY_FRAME = "empty_frame"
MISSING_ID = "missing_id"
BAD_TIMESTAMPS = "bad_timestamps"
NON_NUMERIC_TARGET = "non_numeric_target"
UNSORTED_TIMESTAMPS = "unsorted_timestamps"
DUPLICATE_TIMESTAMPS = "duplicate_timestamps"
NO_OBSERVATIONS = "no_observations"
MISSING_TARGET = "missing_target"
INFINITE_TARGET = "infinite_target"
OFF_GRID_TIMESTAMPS = "off_grid_timestamps"
MISSING_PERIODS = "missing_periods"
TOO_SHORT = "too_short"

#: Every check, in the order problems are reported.
CHECKS: tuple[str, ...] = (
    MISSING_COLUMNS,
    EMPTY_FRAME,
    MISSING_ID,
    BAD_TIMESTAMPS,
    NON_NUMERIC_TARGET,
    UNSORTED_TIMESTAMPS,
    DUPLICATE_TIMESTAMPS,
    NO_OBSERVATIONS,
    MISSING_TARGET,
    INFINITE_TARGET,
    OFF_GRID_TIMESTAMPS,
    MISSING_PERIODS,
    TOO_SHORT,
)

SERIES_DETAILED = 5
EXAMPLES = 3
_SERIES_LISTED = 10

FILL_FIX = "set `fill: ffill` (or interpolate/zero) in model.yaml, or pass --fill"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: which check, what, which series, how to fix it.

    ``series`` is empty for frame-level problems (missing columns, empty frame).
    """

    check: str
    message: str
    series: tuple[str, ...]
    fix: str

    def __str__(self) -> str:
        return "\n".join(
            [
                f"[{self.check}] series: {_list_series(self.series)}",
                f"  {self.message}",
                f"  fix: {self.fix}",
            ]
        )


def format_problems(problems: Sequence[Problem]) -> str:
    """Readable multi-line report: a header, then one block per problem."""
    if not problems:
        return "no problems found"
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{len(problems)} {noun} in the input series:\n" + "\n".join(str(p) for p in problems)


class ValidationError(TsopsError, ValueError):
    """Input series that cannot be used; ``problems`` lists every reason at once."""

    headline = "validation failed, nothing was written"

    def __init__(self, problems: Sequence[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(format_problems(self.problems))

    def __reduce__(self):
        # Exceptions pickle as cls(*args); args here is the formatted text, so rebuild
        # from the problems instead (joblib workers send exceptions back pickled).
        return (type(self), (self.problems,))


def ordered(problems: list[Problem]) -> list[Problem]:
    rank = {name: i for i, name in enumerate(CHECKS)}
    return sorted(problems, key=lambda p: rank.get(p.check, len(rank)))


# ----------------------------------------------------------------- the two shapes of problem


def series_problem(
    check: str,
    what: str,
    codes: np.ndarray,
    uniques: np.ndarray,
    positions: np.ndarray,
    detail: Callable[[int, np.ndarray], str],
    fix: str,
) -> Problem:
    """A problem found at ``positions`` of a frame sorted by series (``codes`` index
    ``uniques``): ``"<what> N series: "`` and ``detail(code, positions of that series)``
    for the first few series."""
    groups = group_positions(codes, positions)
    details = [detail(code, pos) for code, pos in groups[:SERIES_DETAILED]]
    series = tuple(str(uniques[code]) for code, _ in groups)
    return Problem(
        check=check,
        message=f"{what} {count(series, 'series')}: " + join_details(details, len(series)),
        series=series,
        fix=fix,
    )


def row_problem(
    check: str,
    column: str,
    what: str,
    ids: np.ndarray,
    id_missing: np.ndarray,
    bad: np.ndarray,
    describe: Callable[[int], str],
    fix: str,
) -> Problem:
    """A problem with values of ``column`` in the input rows flagged ``bad``, with
    ``describe(row)`` for the first few rows."""
    rows = np.flatnonzero(bad)
    examples = [
        f"row {r} ({series_label(ids, id_missing, r)}): {describe(r)}"
        for r in rows[:SERIES_DETAILED]
    ]
    series = _series_of(ids, id_missing, rows)
    return Problem(
        check=check,
        message=f"{len(rows)} {column!r} value(s) are {what}, in {count(series, 'series')}: "
        + "; ".join(examples)
        + ("; ..." if len(rows) > SERIES_DETAILED else ""),
        series=series,
        fix=fix,
    )


# ------------------------------------------------------------------------------ wording


def group_positions(codes: np.ndarray, positions: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Flagged positions grouped by series code, series in code order, positions ascending."""
    if len(positions) == 0:
        return []
    positions = positions[np.argsort(codes[positions], kind="stable")]
    c = codes[positions]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    bounds = np.r_[starts, len(positions)]
    return [(int(c[s]), positions[s:e]) for s, e in itertools.pairwise(bounds)]


def _series_of(ids: np.ndarray, id_missing: np.ndarray, rows: np.ndarray) -> tuple[str, ...]:
    rows = rows[~id_missing[rows]]
    return tuple(sorted(set(ids[rows].tolist())))


def series_label(ids: np.ndarray, id_missing: np.ndarray, row: int) -> str:
    return "no id" if id_missing[row] else str(ids[row])


def fmt_ts(value: int | np.integer | pd.Timestamp) -> str:
    ts = pd.Timestamp(value)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat(sep=" ")


def fmt_examples(t: np.ndarray, pos: np.ndarray) -> str:
    shown = ", ".join(fmt_ts(t[p]) for p in pos[:EXAMPLES])
    return shown + (", ..." if len(pos) > EXAMPLES else "")


def join_details(details: list[str], n_series: int) -> str:
    text = "; ".join(details)
    if n_series > len(details):
        text += f"; and {n_series - len(details)} more series"
    return text


def count(series: Sequence[str], noun: str) -> str:
    return f"{len(series)} {noun}"


def _list_series(series: Sequence[str]) -> str:
    if not series:
        return "(whole frame)"
    shown = ", ".join(series[:_SERIES_LISTED])
    if len(series) > _SERIES_LISTED:
        shown += f" and {len(series) - _SERIES_LISTED} more"
    return shown
