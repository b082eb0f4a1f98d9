"""Raw columns (straight from a CSV or Parquet file) converted row by row to the
canonical ``unique_id``/``ds``/``y``, with what could not be converted."""

from __future__ import annotations

import contextlib
import shlex
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.pipeline.validate.problems import (
    BAD_TIMESTAMPS,
    EMPTY_FRAME,
    EXAMPLES,
    MISSING_COLUMNS,
    MISSING_ID,
    NON_NUMERIC_TARGET,
    Problem,
    row_problem,
)

# Text that CSV readers and spreadsheets use for "no value": these make y missing
# (a fillable NaN), not non-numeric.
_NA_TOKENS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>", "nat"})

# Likely names for each role, used only to suggest a --*-col mapping.
_ROLE_HINTS = {
    ID_COL: (ID_COL, "id", "series", "series_id", "item_id", "item", "sku", "key", "name"),
    TIME_COL: (TIME_COL, "date", "time", "timestamp", "datetime", "period", "month", "week", "day"),
    TARGET_COL: (TARGET_COL, "value", "target", "sales", "demand", "quantity", "volume", "count"),
}
_ROLE_FLAG = {ID_COL: "--id-col", TIME_COL: "--time-col", TARGET_COL: "--target-col"}


@dataclass
class Parsed:
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


def parse(df: pd.DataFrame, *, id_col: str, time_col: str, target_col: str) -> Parsed:
    missing = [c for c in (id_col, time_col, target_col) if c not in df.columns]
    if missing:
        problems = [_missing_columns_problem(df, missing, id_col, time_col, target_col)]
        if len(df) == 0:
            problems.append(_empty_problem())
        empty = np.array([], dtype=bool)
        return Parsed(
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
    parsed = Parsed(ids=ids, id_missing=id_missing, ts=ts, y=y, bad_y=bad_y, extra=extra)

    if len(df) == 0:
        parsed.problems.append(_empty_problem())
        parsed.fatal = True
        return parsed
    if id_missing.any():
        parsed.problems.append(_missing_id_problem(df, id_col, time_col, id_missing))
    bad_ts = np.isnat(ts)
    if bad_ts.any():
        times = df[time_col].to_numpy(dtype=object)
        parsed.problems.append(
            row_problem(
                BAD_TIMESTAMPS,
                time_col,
                "missing or not dates",
                ids,
                id_missing,
                bad_ts,
                lambda r: "missing" if ts_blank[r] else _describe_time(times[r]),
                "fix or drop these rows (ISO dates such as 2020-01-31 always parse), or point "
                "--time-col at the column that holds the dates",
            )
        )
    if bad_y.any():
        values = df[target_col].to_numpy(dtype=object)
        parsed.problems.append(
            row_problem(
                NON_NUMERIC_TARGET,
                target_col,
                "not numbers",
                ids,
                id_missing,
                bad_y,
                lambda r: repr(values[r]),
                "clean the values (strip units, currency signs and thousands separators; use "
                "'.' for decimals) or point --target-col at the numeric column",
            )
        )
    return parsed


def _decoded(raw: pd.Series) -> pd.Series:
    """Byte strings (a Parquet binary column) as text; what is not UTF-8 keeps its
    bytes as escapes, so that it still names its row."""
    if raw.dtype != object or not raw.map(lambda v: isinstance(v, bytes)).any():
        return raw
    return raw.map(lambda v: v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v)


def _parse_ids(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    missing = raw.isna().to_numpy()
    s = _decoded(raw)
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
        return _in_ns_range(raw.dt.tz_localize(None).to_numpy()), blank
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return _in_ns_range(raw.to_numpy()), blank
    s = _decoded(raw)
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


#: what datetime64[ns] holds: a Parquet file's seconds or days may lie outside it
_NS_RANGE = (np.datetime64(pd.Timestamp.min.ceil("s")), np.datetime64(pd.Timestamp.max.floor("s")))


def _in_ns_range(values: np.ndarray) -> np.ndarray:
    """datetime64 values of any unit as datetime64[ns], NaT where out of its range
    (the cast alone would wrap them round to other dates without a word)."""
    if values.dtype == np.dtype("datetime64[ns]"):
        return values.copy()
    inside = (values >= _NS_RANGE[0]) & (values <= _NS_RANGE[1])
    out = np.full(values.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    out[inside] = values[inside].astype("datetime64[ns]")
    return out


def _describe_time(value: object) -> str:
    if isinstance(value, pd.Timestamp | np.datetime64):
        # a date, but one datetime64[ns] cannot hold
        return f"{value!r} (outside {_NS_RANGE[0]!s:.10}..{_NS_RANGE[1]!s:.10})"
    return repr(value)


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
    s = _decoded(raw).astype(object)
    text = s.astype(str).str.strip()
    y = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    na_like = s.isna().to_numpy() | text.str.lower().isin(_NA_TOKENS).to_numpy()
    return y, np.isnan(y) & ~na_like


# ------------------------------------------------------------------- frame-level problems


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
            suggestions.append(f"{_ROLE_FLAG[role]} {shlex.quote(guess)}")
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
    # " Date" and "DATE" are still the date column (spreadsheets pad and capitalise)
    lowered = {c.strip().lower(): c for c in free}
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
    examples = ", ".join(f"row {r} ({time_col}={times[r]!r})" for r in rows[:EXAMPLES])
    return Problem(
        check=MISSING_ID,
        message=f"{len(rows)} row(s) have no {id_col!r}: {examples}"
        + (", ..." if len(rows) > EXAMPLES else ""),
        series=(),
        fix=f"fill in {id_col!r} for these rows or drop them; every row must belong to a series",
    )
