"""Check the long frame before anything trains on it.

Every check names the series it concerns and says how to fix the problem, in the
spirit of statsforecast/mlforecast ("consider fill_gaps"). All functions are pure:
they take a frame and return problems or a new frame; the CLI does the I/O.

- :func:`validate_frame` inspects raw input (object columns straight from a CSV are
  fine) and returns every :class:`Problem` it finds.
- :func:`coerce_frame` renames and casts to the canonical ``unique_id``/``ds``/``y``.
- :func:`fill_gaps` puts each series on its full frequency grid, filling per policy.
- :func:`check_frame` does all three and raises :class:`ValidationError` listing
  every problem at once; ``tsops ingest`` and ``tsops validate`` call it.

Row numbers in messages are 0-based positions in the input frame (for a CSV with
a header line, the file line is row + 2).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.offsets import BaseOffset, Tick

from tsops.core.errors import TsopsError
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

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
    "OFF_GRID_TIMESTAMPS",
    "TOO_SHORT",
    "UNSORTED_TIMESTAMPS",
    "FillPolicy",
    "Problem",
    "ValidationError",
    "check_frame",
    "coerce_frame",
    "fill_gaps",
    "format_problems",
    "to_offset",
    "validate_frame",
]

FillPolicy = Literal["none", "ffill", "interpolate", "zero"]
FILL_POLICIES: tuple[str, ...] = ("none", "ffill", "interpolate", "zero")

MISSING_COLUMNS = "missing_columns"
EMPTY_FRAME = "empty_frame"
MISSING_ID = "missing_id"
BAD_TIMESTAMPS = "bad_timestamps"
NON_NUMERIC_TARGET = "non_numeric_target"
UNSORTED_TIMESTAMPS = "unsorted_timestamps"
DUPLICATE_TIMESTAMPS = "duplicate_timestamps"
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
    MISSING_TARGET,
    INFINITE_TARGET,
    OFF_GRID_TIMESTAMPS,
    MISSING_PERIODS,
    TOO_SHORT,
)

# Messages detail a few series and a few examples each; a panel of 1,428 broken
# series must still give an error a person can read.
_SERIES_DETAILED = 5
_EXAMPLES = 3
_SERIES_LISTED = 10

_FILL_FIX = "set `fill: ffill` (or interpolate/zero) in model.yaml, or pass --fill"

# Text that CSV readers and spreadsheets use for "no value": these make y missing
# (a fillable NaN), not non-numeric.
_NA_TOKENS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>", "nat"})

# Likely names for each role, used only to suggest a --*-col mapping.
_ROLE_HINTS = {
    ID_COL: ("unique_id", "id", "series", "series_id", "item_id", "item", "sku", "key", "name"),
    TIME_COL: ("ds", "date", "time", "timestamp", "datetime", "period", "month", "week", "day"),
    TARGET_COL: ("y", "value", "target", "sales", "demand", "quantity", "volume", "count"),
}
_ROLE_FLAG = {ID_COL: "--id-col", TIME_COL: "--time-col", TARGET_COL: "--target-col"}


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


# --------------------------------------------------------------------------- public API


def to_offset(freq: str) -> BaseOffset:
    """The pandas offset for ``freq``; deprecated aliases (M, Q, Y, H) are accepted."""
    try:
        with warnings.catch_warnings():
            # 'M'/'Q'/'Y' still work in pandas 2.x and appear in older model.yaml files.
            warnings.simplefilter("ignore", FutureWarning)
            return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"freq {freq!r} is not a pandas offset alias; use e.g. MS, ME, QS, QE, "
            "W-SUN, D, h or YS"
        ) from exc


def validate_frame(
    df: pd.DataFrame,
    *,
    freq: str,
    min_length: int,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> list[Problem]:
    """Every problem in a raw long frame, without changing it.

    Checks, in order: missing columns, empty frame, missing ids, unparseable
    timestamps, non-numeric ``y``, timestamps out of order within a series,
    duplicate ``(unique_id, ds)``, NaN and ±inf in ``y``, timestamps off the
    ``freq`` grid, missing periods, and series shorter than ``min_length``.
    Columns may hold strings (as read from a CSV). Returns ``[]`` when clean.
    """
    offset = to_offset(freq)
    parsed = _parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    if parsed.fatal:
        return parsed.problems
    problems = list(parsed.problems)
    problems += _check_order(parsed)
    problems += _check_canonical(
        parsed.canonical(), offset, min_length, ignore_nan=parsed.bad_y_keys(), fill="none"
    )
    return _ordered(problems)


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
    parsed = _parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    blocking = [p for p in parsed.problems if p.check != EMPTY_FRAME]
    if blocking:
        raise ValidationError(blocking)
    return parsed.canonical()


def fill_gaps(df: pd.DataFrame, *, freq: str, policy: FillPolicy | str) -> pd.DataFrame:
    """Put each series of a canonical frame on its full ``freq`` grid and fill ``y``.

    The grid runs from each series' first to its last timestamp. Missing periods
    become new rows; they and any NaN already in ``y`` are filled per ``policy``:

    - ``none``: return ``df`` unchanged;
    - ``ffill``: carry the last observation forward (a leading NaN stays NaN);
    - ``interpolate``: linear between the neighbouring observations (NaN at either
      end of a series stays NaN, since there is nothing to interpolate towards);
    - ``zero``: 0.0, for counts where no record means no event.

    Only ``y`` is filled; other columns of inserted rows are NaN. Timestamps off the
    grid are kept as they are (validation reports them). The result is sorted by
    ``(unique_id, ds)`` with a fresh index.
    """
    _check_policy(policy)
    if policy == "none" or df.empty:
        return df
    offset = to_offset(freq)
    frame = df.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)
    frame = _insert_missing_periods(frame, offset)
    y = frame[TARGET_COL].to_numpy(dtype="float64", copy=True)
    if np.isnan(y).any():
        codes = pd.factorize(frame[ID_COL])[0]
        if policy == "zero":
            y[np.isnan(y)] = 0.0
        elif policy == "ffill":
            y = pd.Series(y).groupby(codes).ffill().to_numpy()
        else:
            y = _interpolate_inside(y, codes)
    frame[TARGET_COL] = y
    return frame


def check_frame(
    df: pd.DataFrame,
    *,
    freq: str,
    min_length: int,
    fill: FillPolicy | str = "none",
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target_col: str = TARGET_COL,
) -> pd.DataFrame:
    """Coerce, fill (if ``fill`` is not ``none``) and validate; return the clean canonical frame.

    Raises :class:`ValidationError` listing every problem found. Row order of the
    input does not matter here, because the result is sorted.
    """
    _check_policy(fill)
    offset = to_offset(freq)
    parsed = _parse(df, id_col=id_col, time_col=time_col, target_col=target_col)
    if parsed.fatal:
        raise ValidationError(parsed.problems)
    frame = parsed.canonical()
    if fill != "none":
        frame = fill_gaps(frame, freq=freq, policy=fill)
    ignore = _keys_in(frame, parsed.bad_y_keys())
    problems = parsed.problems + _check_canonical(
        frame, offset, min_length, ignore_nan=ignore, fill=fill
    )
    if problems:
        raise ValidationError(_ordered(problems))
    return frame


# ------------------------------------------------------------------------------ parsing


@dataclass
class _Parsed:
    """Raw columns converted row by row, in input order, with what failed."""

    ids: np.ndarray  # object array of str; meaningless where id_missing
    id_missing: np.ndarray
    ts: np.ndarray  # datetime64[ns]; NaT where unparseable
    y: np.ndarray  # float64; NaN where missing or non-numeric
    bad_y: np.ndarray
    extra: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    fatal: bool = False

    @property
    def usable(self) -> np.ndarray:
        return ~self.id_missing & ~np.isnat(self.ts)

    def canonical(self) -> pd.DataFrame:
        keep = self.usable
        frame = pd.DataFrame(
            {
                ID_COL: pd.Series(self.ids[keep], dtype=object),
                TIME_COL: pd.Series(self.ts[keep], dtype="datetime64[ns]"),
                TARGET_COL: pd.Series(self.y[keep], dtype="float64"),
            }
        )
        if len(self.extra.columns):
            extra = self.extra.loc[keep].reset_index(drop=True)
            frame = pd.concat([frame, extra], axis=1)
        return frame.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)

    def bad_y_keys(self) -> pd.MultiIndex | None:
        rows = self.bad_y & self.usable
        if not rows.any():
            return None
        return pd.MultiIndex.from_arrays([self.ids[rows], self.ts[rows]])


def _parse(df: pd.DataFrame, *, id_col: str, time_col: str, target_col: str) -> _Parsed:
    missing = [c for c in (id_col, time_col, target_col) if c not in df.columns]
    if missing:
        problems = [_missing_columns_problem(df, missing, id_col, time_col, target_col)]
        if len(df) == 0:
            problems.append(_empty_problem())
        empty = np.array([], dtype=bool)
        return _Parsed(
            ids=np.array([], dtype=object),
            id_missing=empty,
            ts=np.array([], dtype="datetime64[ns]"),
            y=np.array([], dtype="float64"),
            bad_y=empty,
            extra=pd.DataFrame(),
            problems=problems,
            fatal=True,
        )

    ids, id_missing = _parse_ids(df[id_col])
    ts, ts_blank = _parse_times(df[time_col])
    y, bad_y = _parse_target(df[target_col])
    # Columns already named like a canonical one would collide after the rename.
    taken = {id_col, time_col, target_col, ID_COL, TIME_COL, TARGET_COL}
    extra = df[[c for c in df.columns if c not in taken]].reset_index(drop=True)
    parsed = _Parsed(ids=ids, id_missing=id_missing, ts=ts, y=y, bad_y=bad_y, extra=extra)

    if len(df) == 0:
        parsed.problems.append(_empty_problem())
        parsed.fatal = True
        return parsed
    if id_missing.any():
        parsed.problems.append(_missing_id_problem(df, id_col, time_col, id_missing))
    bad_ts = np.isnat(ts)
    if bad_ts.any():
        parsed.problems.append(
            _bad_timestamps_problem(df[time_col], ids, id_missing, bad_ts, ts_blank, time_col)
        )
    if bad_y.any():
        parsed.problems.append(
            _non_numeric_problem(df[target_col], ids, id_missing, bad_y, target_col)
        )
    return parsed


def _parse_ids(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    missing = raw.isna().to_numpy()
    s = raw
    if pd.api.types.is_float_dtype(s.dtype):
        present = s.dropna()
        # A blank id turns a CSV's integer id column into floats; "7.0" must still be "7".
        if len(present) and bool((present % 1 == 0).all()):
            s = s.astype("Int64")
    ids = s.astype(str).str.strip()
    missing |= (ids == "").to_numpy()
    return ids.to_numpy(dtype=object), missing


def _parse_times(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as naive datetime64[ns] (NaT where unparseable) and which were blank."""
    blank = raw.isna().to_numpy()
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"), blank
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return raw.to_numpy(dtype="datetime64[ns]"), blank
    s = raw
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        # pandas reads numbers as epoch nanoseconds; in a data file they are years or YYYYMMDD.
        present = s.dropna()
        if len(present) and bool((present % 1 == 0).all()):
            s = s.astype("Int64")
        s = s.astype(str).where(~s.isna(), None)
    else:
        s = s.astype(object)
        text = s.astype(str).str.strip()
        blank |= (text == "").to_numpy() & s.notna().to_numpy()
    out = _to_datetime(s)
    retry = np.isnat(out) & ~blank
    if retry.any():
        # The fast path infers one format from the first value; ISO variants mixed in
        # (date vs date-time) are still unambiguous, so accept them.
        out[retry] = _to_datetime(s[retry], format="ISO8601")
    return out, blank


def _to_datetime(s: pd.Series, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        # "Could not infer format" and mixed-offset warnings: bad rows are reported anyway.
        warnings.simplefilter("ignore")
        out = None
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            out = pd.to_datetime(s, errors="coerce", **kwargs)
        if out is None or not pd.api.types.is_datetime64_any_dtype(out.dtype):
            # Mixed UTC offsets (e.g. across a DST change) only compare on one clock: UTC.
            try:
                out = pd.to_datetime(s, errors="coerce", utc=True, **kwargs)
            except (ValueError, TypeError, OverflowError):
                out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    if isinstance(out.dtype, pd.DatetimeTZDtype):
        out = out.dt.tz_localize(None)
    return out.to_numpy(dtype="datetime64[ns]").copy()


def _parse_target(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as float64 and which values were text that is not a number."""
    dtype = raw.dtype
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        y = raw.to_numpy(dtype="float64", na_value=np.nan)
        return y, np.zeros(len(raw), dtype=bool)
    s = raw.astype(object)
    text = s.astype(str).str.strip()
    y = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    na_like = s.isna().to_numpy() | text.str.lower().isin(_NA_TOKENS).to_numpy()
    return y, np.isnan(y) & ~na_like


# ------------------------------------------------------------------------------- checks


def _check_order(parsed: _Parsed) -> list[Problem]:
    """Timestamps going backwards within a series, in input row order."""
    rows = np.flatnonzero(parsed.usable)
    if len(rows) < 2:
        return []
    codes, uniques = pd.factorize(parsed.ids[rows], sort=True)
    # A stable sort by series keeps input order within each series, so a step back
    # between neighbours is a timestamp that came after a later one.
    order = np.argsort(codes, kind="stable")
    c, t = codes[order], parsed.ts[rows][order].view("i8")
    back = np.flatnonzero((c[1:] == c[:-1]) & (t[1:] < t[:-1])) + 1
    if len(back) == 0:
        return []
    details = []
    groups = _group_positions(c, back)
    for code, pos in groups[:_SERIES_DETAILED]:
        examples = [
            f"{_fmt_ts(t[p])} at row {rows[order[p]]} after {_fmt_ts(t[p - 1])}"
            for p in pos[:_EXAMPLES]
        ]
        details.append(f"{uniques[code]}: {len(pos)} step(s) back, e.g. " + ", ".join(examples))
    series = tuple(str(uniques[c]) for c, _ in groups)
    return [
        Problem(
            check=UNSORTED_TIMESTAMPS,
            message=f"timestamps go backwards within {_count(series, 'series')}: "
            + _join_details(details, len(series)),
            series=series,
            fix="sort by (unique_id, ds); `tsops ingest` sorts for you, so only raw input "
            "read by other tools is affected",
        )
    ]


def _check_canonical(
    frame: pd.DataFrame,
    offset: BaseOffset,
    min_length: int,
    *,
    ignore_nan: np.ndarray | pd.MultiIndex | None,
    fill: str,
) -> list[Problem]:
    """Checks on a frame sorted by (unique_id, ds): duplicates, NaN/inf, grid, length."""
    if frame.empty:
        return []
    if isinstance(ignore_nan, pd.MultiIndex):
        ignore_nan = _keys_in(frame, ignore_nan)
    codes, uniques = pd.factorize(frame[ID_COL], sort=True)
    t = frame[TIME_COL].to_numpy(dtype="datetime64[ns]").view("i8")
    y = frame[TARGET_COL].to_numpy(dtype="float64")
    same_key = (codes[1:] == codes[:-1]) & (t[1:] == t[:-1])
    dup = np.r_[same_key, False] | np.r_[False, same_key]
    first_of_key = ~np.r_[False, same_key]

    problems: list[Problem] = []
    if dup.any():
        problems.append(_duplicates_problem(codes, uniques, t, dup & first_of_key, dup))
    nan = np.isnan(y)
    if ignore_nan is not None:
        nan &= ~ignore_nan
    if nan.any():
        problems.append(_missing_target_problem(codes, uniques, t, nan, fill))
    inf = np.isinf(y)
    if inf.any():
        problems.append(_infinite_target_problem(codes, uniques, t, y, inf))

    grid = _Grid(offset, int(t.min()), int(t.max()))
    k, on = grid.locate(t)
    off = ~on & first_of_key
    if off.any():
        problems.append(_off_grid_problem(codes, uniques, t, off, grid, offset))
    problems += _missing_periods_problems(codes, uniques, k, on & first_of_key, grid, fill)

    lengths = np.bincount(codes[first_of_key], minlength=len(uniques))
    short = np.flatnonzero(lengths < min_length)
    if len(short):
        problems.append(_too_short_problem(uniques, lengths, short, min_length))
    return problems


# ----------------------------------------------------------------------- problem makers


def _missing_columns_problem(
    df: pd.DataFrame, missing: list[str], id_col: str, time_col: str, target_col: str
) -> Problem:
    present = [str(c) for c in df.columns]
    role_of = {id_col: ID_COL, time_col: TIME_COL, target_col: TARGET_COL}
    used = {id_col, time_col, target_col}
    suggestions = []
    for col in missing:
        role = role_of[col]
        guess = _guess_column(present, role, used)
        if guess is not None:
            suggestions.append(f"{_ROLE_FLAG[role]} {guess}")
    fix = (
        "rename the columns, or map them with --id-col/--time-col/--target-col "
        "(source.id_col/time_col/target_col in model.yaml)"
    )
    if suggestions:
        fix += "; perhaps " + " ".join(suggestions)
    return Problem(
        check=MISSING_COLUMNS,
        message=f"missing column(s) {', '.join(repr(c) for c in missing)}; the input has {present}",
        series=(),
        fix=fix,
    )


def _guess_column(present: list[str], role: str, used: set[str]) -> str | None:
    free = [c for c in present if c not in used]
    lowered = {c.lower(): c for c in free}
    for hint in _ROLE_HINTS[role]:
        if hint in lowered:
            return lowered[hint]
    return None


def _empty_problem() -> Problem:
    return Problem(
        check=EMPTY_FRAME,
        message="the input has no rows",
        series=(),
        fix="check the source (path, query, filters, `source.series`): nothing reached validation",
    )


def _missing_id_problem(
    df: pd.DataFrame, id_col: str, time_col: str, id_missing: np.ndarray
) -> Problem:
    rows = np.flatnonzero(id_missing)
    times = df[time_col].to_numpy(dtype=object)
    examples = ", ".join(f"row {r} ({time_col}={times[r]!r})" for r in rows[:_EXAMPLES])
    return Problem(
        check=MISSING_ID,
        message=f"{len(rows)} row(s) have no {id_col!r}: {examples}"
        + (", ..." if len(rows) > _EXAMPLES else ""),
        series=(),
        fix=f"fill in {id_col!r} for these rows or drop them; every row must belong to a series",
    )


def _bad_timestamps_problem(
    raw: pd.Series,
    ids: np.ndarray,
    id_missing: np.ndarray,
    bad: np.ndarray,
    blank: np.ndarray,
    time_col: str,
) -> Problem:
    rows = np.flatnonzero(bad)
    values = raw.to_numpy(dtype=object)
    examples = [
        f"row {r} ({_series_label(ids, id_missing, r)}): "
        + ("missing" if blank[r] else repr(values[r]))
        for r in rows[:_SERIES_DETAILED]
    ]
    series = _series_of(ids, id_missing, rows)
    return Problem(
        check=BAD_TIMESTAMPS,
        message=f"{len(rows)} {time_col!r} value(s) are missing or not dates, in "
        f"{_count(series, 'series')}: "
        + "; ".join(examples)
        + ("; ..." if len(rows) > _SERIES_DETAILED else ""),
        series=series,
        fix="fix or drop these rows (ISO dates such as 2020-01-31 always parse), or point "
        "--time-col at the column that holds the dates",
    )


def _non_numeric_problem(
    raw: pd.Series, ids: np.ndarray, id_missing: np.ndarray, bad: np.ndarray, target_col: str
) -> Problem:
    rows = np.flatnonzero(bad)
    values = raw.to_numpy(dtype=object)
    examples = [
        f"row {r} ({_series_label(ids, id_missing, r)}): {values[r]!r}"
        for r in rows[:_SERIES_DETAILED]
    ]
    series = _series_of(ids, id_missing, rows)
    return Problem(
        check=NON_NUMERIC_TARGET,
        message=f"{len(rows)} {target_col!r} value(s) are not numbers, in "
        f"{_count(series, 'series')}: "
        + "; ".join(examples)
        + ("; ..." if len(rows) > _SERIES_DETAILED else ""),
        series=series,
        fix="clean the values (strip units, currency signs and thousands separators; use '.' "
        "for decimals) or point --target-col at the numeric column",
    )


def _duplicates_problem(
    codes: np.ndarray, uniques: np.ndarray, t: np.ndarray, first_dup: np.ndarray, dup: np.ndarray
) -> Problem:
    groups = _group_positions(codes, np.flatnonzero(first_dup))
    details = []
    for code, pos in groups[:_SERIES_DETAILED]:
        n_rows = int(np.count_nonzero(dup & (codes == code)))
        stamps = ", ".join(_fmt_ts(t[p]) for p in pos[:_EXAMPLES])
        more = ", ..." if len(pos) > _EXAMPLES else ""
        details.append(
            f"{uniques[code]}: {len(pos)} timestamp(s) repeated over {n_rows} rows ({stamps}{more})"
        )
    series = tuple(str(uniques[c]) for c, _ in groups)
    return Problem(
        check=DUPLICATE_TIMESTAMPS,
        message=f"duplicate (unique_id, ds) in {_count(series, 'series')}: "
        + _join_details(details, len(series)),
        series=series,
        fix="drop or aggregate duplicates before ingest (e.g. keep the latest value or sum "
        "per period)",
    )


def _missing_target_problem(
    codes: np.ndarray, uniques: np.ndarray, t: np.ndarray, nan: np.ndarray, fill: str
) -> Problem:
    groups = _group_positions(codes, np.flatnonzero(nan))
    details = [
        f"{uniques[c]}: {len(pos)} at " + _fmt_examples(t, pos)
        for c, pos in groups[:_SERIES_DETAILED]
    ]
    series = tuple(str(uniques[c]) for c, _ in groups)
    if fill == "none":
        fix = _FILL_FIX + ", or drop the rows"
    else:
        fix = (
            f"fill: {fill} cannot fill NaN at the start (ffill) or at either end (interpolate) "
            "of a series; trim those rows or use `fill: zero`"
        )
    return Problem(
        check=MISSING_TARGET,
        message=f"y is missing (NaN) in {_count(series, 'series')}: "
        + _join_details(details, len(series)),
        series=series,
        fix=fix,
    )


def _infinite_target_problem(
    codes: np.ndarray, uniques: np.ndarray, t: np.ndarray, y: np.ndarray, inf: np.ndarray
) -> Problem:
    groups = _group_positions(codes, np.flatnonzero(inf))
    details = []
    for code, pos in groups[:_SERIES_DETAILED]:
        examples = ", ".join(f"{y[p]:+} at {_fmt_ts(t[p])}" for p in pos[:_EXAMPLES])
        details.append(f"{uniques[code]}: {examples}" + (", ..." if len(pos) > _EXAMPLES else ""))
    series = tuple(str(uniques[c]) for c, _ in groups)
    return Problem(
        check=INFINITE_TARGET,
        message=f"y is infinite in {_count(series, 'series')}: "
        + _join_details(details, len(series)),
        series=series,
        fix="fix the source (often a division by zero) or set those values to NaN and "
        "choose a fill policy; fill policies do not replace ±inf",
    )


def _off_grid_problem(
    codes: np.ndarray,
    uniques: np.ndarray,
    t: np.ndarray,
    off: np.ndarray,
    grid: _Grid,
    offset: BaseOffset,
) -> Problem:
    groups = _group_positions(codes, np.flatnonzero(off))
    details = [
        f"{uniques[c]}: {len(pos)} at " + _fmt_examples(t, pos)
        for c, pos in groups[:_SERIES_DETAILED]
    ]
    series = tuple(str(uniques[c]) for c, _ in groups)
    freq = offset.freqstr
    hint = ""
    first_code = groups[0][0]
    inferred = _infer_freq(t[codes == first_code])
    if inferred and to_offset(inferred) != offset:
        hint = f" (pandas infers {inferred!r} from {uniques[first_code]})"
    return Problem(
        check=OFF_GRID_TIMESTAMPS,
        message=f"timestamps not on the {freq!r} grid (e.g. {_fmt_ts(grid.at(0))}, "
        f"{_fmt_ts(grid.at(1))}, ...) in {_count(series, 'series')}: "
        + _join_details(details, len(series)),
        series=series,
        fix=f"check that freq {freq!r} in model.yaml matches the data{hint}, or move the "
        "timestamps onto the grid (e.g. to the period start) before ingest",
    )


def _missing_periods_problems(
    codes: np.ndarray,
    uniques: np.ndarray,
    k: np.ndarray,
    on_unique: np.ndarray,
    grid: _Grid,
    fill: str,
) -> list[Problem]:
    rows = np.flatnonzero(on_unique)
    if len(rows) == 0:
        return []
    c, kk = codes[rows], k[rows]
    # Grid positions rise strictly within a series (sorted, deduplicated), so a step
    # of more than one position is a gap of (step - 1) periods.
    gap = (c[1:] == c[:-1]) & (np.diff(kk) > 1)
    if not gap.any():
        return []
    gap_at = np.flatnonzero(gap)
    sizes = kk[gap_at + 1] - kk[gap_at] - 1
    per_series = np.bincount(c[gap_at], weights=sizes, minlength=len(uniques)).astype(int)
    groups = _group_positions(c, gap_at)
    details = []
    for code, pos in groups[:_SERIES_DETAILED]:
        first: list[int] = []
        for p in pos:
            first += range(int(kk[p]) + 1, min(int(kk[p + 1]), int(kk[p]) + 1 + _EXAMPLES))
            if len(first) >= _EXAMPLES:
                break
        stamps = ", ".join(_fmt_ts(grid.at(x)) for x in first[:_EXAMPLES])
        more = ", ..." if per_series[code] > _EXAMPLES else ""
        details.append(f"{uniques[code]}: {per_series[code]} missing ({stamps}{more})")
    series = tuple(str(uniques[code]) for code, _ in groups)
    fix = _FILL_FIX if fill == "none" else "report this: fill_gaps should have closed these gaps"
    return [
        Problem(
            check=MISSING_PERIODS,
            message=f"{int(per_series.sum())} missing period(s) in "
            f"{_count(series, 'series')}: " + _join_details(details, len(series)),
            series=series,
            fix=fix,
        )
    ]


def _too_short_problem(
    uniques: np.ndarray, lengths: np.ndarray, short: np.ndarray, min_length: int
) -> Problem:
    details = [f"{uniques[c]} has {lengths[c]}" for c in short[:_SERIES_DETAILED]]
    series = tuple(str(uniques[c]) for c in short)
    return Problem(
        check=TOO_SHORT,
        message=f"{_count(series, 'series')} shorter than the required {min_length} "
        f"observations: {_join_details(details, len(series))}. The backtest needs, per "
        "series, the fit minimum (2 seasons, at least 8) + horizon",
        series=series,
        fix="remove the series (or extend its history), or shorten horizon in model.yaml",
    )


# ------------------------------------------------------------------------- frequency grid


class _Grid:
    """Integer positions on the ``offset`` grid covering [t_min, t_max].

    Tick offsets (D, h, min) are anchored at midnight of the earliest day, so hourly
    data must sit on the hour and daily data at midnight. Calendar offsets (MS, QS,
    W-SUN, YS, ...) use pandas' own anchoring via ``date_range``.
    """

    def __init__(self, offset: BaseOffset, t_min: int, t_max: int):
        self.offset = offset
        first = pd.Timestamp(t_min).normalize()
        self.tick = isinstance(offset, Tick)
        if self.tick:
            self.anchor = first.value
            self.step = offset.nanos
            self.points = None
        else:
            start = offset.rollback(first)
            end = offset.rollforward(pd.Timestamp(t_max)) + offset
            self.points = pd.date_range(start, end, freq=offset).asi8

    def locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each timestamp: the last grid position at or before it, and whether it is on it."""
        if self.tick:
            rel = t - self.anchor
            return rel // self.step, rel % self.step == 0
        k = np.searchsorted(self.points, t, side="right") - 1
        on = self.points[np.clip(k, 0, None)] == t
        return k, on & (k >= 0)

    def at(self, k: int | np.ndarray) -> pd.Timestamp | pd.DatetimeIndex:
        """Grid timestamp(s) at position(s) ``k``."""
        if self.tick:
            values = self.anchor + np.asarray(k, dtype="int64") * self.step
        else:
            values = self.points[np.asarray(k, dtype="int64")]
        if np.ndim(values) == 0:
            return pd.Timestamp(int(values))
        return pd.DatetimeIndex(values.astype("datetime64[ns]"))


def _insert_missing_periods(frame: pd.DataFrame, offset: BaseOffset) -> pd.DataFrame:
    """Add a NaN row for every grid period missing inside each series' span."""
    codes, uniques = pd.factorize(frame[ID_COL], sort=True)
    t = frame[TIME_COL].to_numpy(dtype="datetime64[ns]").view("i8")
    grid = _Grid(offset, int(t.min()), int(t.max()))
    k, on = grid.locate(t)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)] - 1
    # The span is the grid points inside [first, last]; an off-grid first timestamp
    # starts the span at the next grid point.
    k_first = k[starts] + (~on[starts]).astype(int)
    k_last = k[ends]
    counts = np.clip(k_last - k_first + 1, 0, None)
    total = int(counts.sum())
    if total == 0:
        return frame
    series = np.repeat(codes[starts], counts)
    offsets_in_series = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    ks = np.repeat(k_first, counts) + offsets_in_series
    width = int(max(k.max(), ks.max())) + 1
    have = codes[on].astype("int64") * width + k[on]
    want = series.astype("int64") * width + ks
    new = ~np.isin(want, have)
    if not new.any():
        return frame
    added = pd.DataFrame(
        {
            ID_COL: uniques[series[new]].astype(object),
            TIME_COL: grid.at(ks[new]),
            TARGET_COL: np.nan,
        }
    )
    out = pd.concat([frame, added], ignore_index=True)
    return out.sort_values([ID_COL, TIME_COL], kind="stable").reset_index(drop=True)


def _interpolate_inside(y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Linear interpolation by position within each series, only between two observations."""
    pos = np.arange(len(y), dtype="float64")
    valid_pos = pd.Series(np.where(np.isnan(y), np.nan, pos))
    prev = valid_pos.groupby(codes).ffill().to_numpy()
    nxt = valid_pos.groupby(codes).bfill().to_numpy()
    inside = np.isnan(y) & ~np.isnan(prev) & ~np.isnan(nxt)
    out = y.copy()
    if inside.any():
        p, q = prev[inside].astype(int), nxt[inside].astype(int)
        weight = (pos[inside] - p) / (q - p)
        out[inside] = y[p] + weight * (y[q] - y[p])
    return out


# ------------------------------------------------------------------------------ helpers


def _check_policy(policy: str) -> None:
    if policy not in FILL_POLICIES:
        raise ValueError(f"fill policy {policy!r} is not one of {', '.join(FILL_POLICIES)}")


def _keys_in(frame: pd.DataFrame, keys: pd.MultiIndex | None) -> np.ndarray | None:
    if keys is None or frame.empty:
        return None
    rows = pd.MultiIndex.from_arrays(
        [frame[ID_COL].to_numpy(dtype=object), frame[TIME_COL].to_numpy(dtype="datetime64[ns]")]
    )
    return rows.isin(keys)


def _ordered(problems: list[Problem]) -> list[Problem]:
    rank = {name: i for i, name in enumerate(CHECKS)}
    return sorted(problems, key=lambda p: rank.get(p.check, len(rank)))


def _group_positions(codes: np.ndarray, positions: np.ndarray) -> list[tuple[int, np.ndarray]]:
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


def _series_label(ids: np.ndarray, id_missing: np.ndarray, row: int) -> str:
    return "no id" if id_missing[row] else str(ids[row])


def _fmt_ts(value: int | np.integer | pd.Timestamp) -> str:
    ts = pd.Timestamp(value)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat(sep=" ")


def _fmt_examples(t: np.ndarray, pos: np.ndarray) -> str:
    shown = ", ".join(_fmt_ts(t[p]) for p in pos[:_EXAMPLES])
    return shown + (", ..." if len(pos) > _EXAMPLES else "")


def _join_details(details: list[str], n_series: int) -> str:
    text = "; ".join(details)
    if n_series > len(details):
        text += f"; and {n_series - len(details)} more series"
    return text


def _count(series: Sequence[str], noun: str) -> str:
    return f"{len(series)} {noun}"


def _list_series(series: Sequence[str]) -> str:
    if not series:
        return "(whole frame)"
    shown = ", ".join(series[:_SERIES_LISTED])
    if len(series) > _SERIES_LISTED:
        shown += f" and {len(series) - _SERIES_LISTED} more"
    return shown


def _infer_freq(t: np.ndarray) -> str | None:
    if len(t) < 3:
        return None
    try:
        return pd.infer_freq(pd.DatetimeIndex(np.unique(t).astype("datetime64[ns]")))
    except (ValueError, TypeError):
        return None
