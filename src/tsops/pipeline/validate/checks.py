"""The checks on series: order, duplicates, no usable value, NaN/inf, the frequency grid,
and (for callers that ask, ``min_length`` > 1) length.

A short series is not a problem: the pipeline forecasts it with the methods its length
allows (``tsops.pipeline.classes``). Only a series without a single usable (finite)
value is refused, by name: nothing can be forecast from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.offsets import BaseOffset

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL, to_offset
from tsops.pipeline.validate.grid import Grid
from tsops.pipeline.validate.parse import Parsed
from tsops.pipeline.validate.problems import (
    DUPLICATE_TIMESTAMPS,
    EXAMPLES,
    FILL_FIX,
    INFINITE_TARGET,
    MISSING_PERIODS,
    MISSING_TARGET,
    NO_OBSERVATIONS,
    OFF_GRID_TIMESTAMPS,
    SERIES_DETAILED,
    TOO_SHORT,
    UNSORTED_TIMESTAMPS,
    Problem,
    count,
    fmt_examples,
    fmt_ts,
    join_details,
    series_problem,
)


def check_order(parsed: Parsed) -> list[Problem]:
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

    def detail(code: int, pos: np.ndarray) -> str:
        examples = [
            f"{fmt_ts(t[p])} at row {rows[order[p]]} after {fmt_ts(t[p - 1])}"
            for p in pos[:EXAMPLES]
        ]
        return f"{uniques[code]}: {len(pos)} step(s) back, e.g. " + ", ".join(examples)

    return [
        series_problem(
            UNSORTED_TIMESTAMPS,
            "timestamps go backwards within",
            c,
            uniques,
            back,
            detail,
            f"sort by ({ID_COL}, {TIME_COL}); `tsops ingest` sorts for you, so only raw input "
            "read by other tools is affected",
        )
    ]


def check_canonical(
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
        ignore_nan = keys_in(frame, ignore_nan)
    codes, uniques = pd.factorize(frame[ID_COL], sort=True)
    t = frame[TIME_COL].to_numpy(dtype="datetime64[ns]").view("i8")
    y = frame[TARGET_COL].to_numpy(dtype="float64")
    same_key = (codes[1:] == codes[:-1]) & (t[1:] == t[:-1])
    dup = np.r_[same_key, False] | np.r_[False, same_key]
    first_of_key = ~np.r_[False, same_key]

    def at_times(code: int, pos: np.ndarray) -> str:
        return f"{uniques[code]}: {len(pos)} at " + fmt_examples(t, pos)

    problems: list[Problem] = []
    if dup.any():

        def repeated(code: int, pos: np.ndarray) -> str:
            n_rows = int(np.count_nonzero(dup & (codes == code)))
            return (
                f"{uniques[code]}: {len(pos)} timestamp(s) repeated over {n_rows} rows "
                f"({fmt_examples(t, pos)})"
            )

        problems.append(
            series_problem(
                DUPLICATE_TIMESTAMPS,
                f"duplicate ({ID_COL}, {TIME_COL}) in",
                codes,
                uniques,
                np.flatnonzero(dup & first_of_key),
                repeated,
                "drop or aggregate duplicates before ingest (e.g. keep the latest value or sum "
                "per period)",
            )
        )
    # a series without one finite value is refused as such, not value by value
    usable = np.bincount(codes, weights=np.isfinite(y), minlength=len(uniques))
    empty = np.flatnonzero(usable == 0)
    in_empty = np.isin(codes, empty)
    if len(empty):
        problems.append(_no_observations(uniques, codes, empty))
    nan = np.isnan(y) & ~in_empty
    if ignore_nan is not None:
        nan &= ~ignore_nan
    if nan.any():
        if fill == "none":
            fix = FILL_FIX + ", or drop the rows"
        else:
            fix = (
                f"fill: {fill} cannot fill NaN at the start (ffill) or at either end "
                "(interpolate) of a series; trim those rows or use `fill: zero`"
            )
        problems.append(
            series_problem(
                MISSING_TARGET,
                f"{TARGET_COL} is missing (NaN) in",
                codes,
                uniques,
                np.flatnonzero(nan),
                at_times,
                fix,
            )
        )
    inf = np.isinf(y) & ~in_empty
    if inf.any():

        def values(code: int, pos: np.ndarray) -> str:
            shown = ", ".join(f"{y[p]:+} at {fmt_ts(t[p])}" for p in pos[:EXAMPLES])
            return f"{uniques[code]}: {shown}" + (", ..." if len(pos) > EXAMPLES else "")

        problems.append(
            series_problem(
                INFINITE_TARGET,
                f"{TARGET_COL} is infinite in",
                codes,
                uniques,
                np.flatnonzero(inf),
                values,
                "fix the source (often a division by zero) or set those values to NaN and "
                "choose a fill policy; fill policies do not replace ±inf",
            )
        )

    grid = Grid(offset, int(t.min()), int(t.max()))
    k, on = grid.locate(t)
    off = np.flatnonzero(~on & first_of_key)
    if len(off):
        freq = offset.freqstr
        hint = ""
        first_code = int(codes[off].min())
        inferred = _infer_freq(t[codes == first_code])
        if inferred and to_offset(inferred) != offset:
            hint = f" (pandas infers {inferred!r} from {uniques[first_code]})"
        problems.append(
            series_problem(
                OFF_GRID_TIMESTAMPS,
                f"timestamps not on the {freq!r} grid (e.g. {fmt_ts(grid.at(0))}, "
                f"{fmt_ts(grid.at(1))}, ...) in",
                codes,
                uniques,
                off,
                at_times,
                f"check that freq {freq!r} in model.yaml matches the data{hint}, or move the "
                "timestamps onto the grid (e.g. to the period start) before ingest",
            )
        )
    problems += _missing_periods(codes, uniques, k, on & first_of_key, grid, fill)

    lengths = np.bincount(codes[first_of_key], minlength=len(uniques))
    short = np.flatnonzero(lengths < min_length)
    if len(short):
        problems.append(_too_short(uniques, lengths, short, min_length))
    return problems


def keys_in(frame: pd.DataFrame, keys: pd.MultiIndex | None) -> np.ndarray | None:
    """Which rows of ``frame`` have a ``(unique_id, ds)`` among ``keys``."""
    if keys is None or frame.empty:
        return None
    rows = pd.MultiIndex.from_arrays(
        [frame[ID_COL].to_numpy(dtype=object), frame[TIME_COL].to_numpy(dtype="datetime64[ns]")]
    )
    return rows.isin(keys)


def _missing_periods(
    codes: np.ndarray,
    uniques: np.ndarray,
    k: np.ndarray,
    on_unique: np.ndarray,
    grid: Grid,
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

    def missing(code: int, pos: np.ndarray) -> str:
        first: list[int] = []
        for p in pos:
            first += range(int(kk[p]) + 1, min(int(kk[p + 1]), int(kk[p]) + 1 + EXAMPLES))
            if len(first) >= EXAMPLES:
                break
        stamps = ", ".join(fmt_ts(grid.at(x)) for x in first[:EXAMPLES])
        more = ", ..." if per_series[code] > EXAMPLES else ""
        return f"{uniques[code]}: {per_series[code]} missing ({stamps}{more})"

    fix = FILL_FIX if fill == "none" else "report this: fill_gaps should have closed these gaps"
    return [
        series_problem(
            MISSING_PERIODS,
            f"{int(per_series.sum())} missing period(s) in",
            c,
            uniques,
            gap_at,
            missing,
            fix,
        )
    ]


def _no_observations(uniques: np.ndarray, codes: np.ndarray, empty: np.ndarray) -> Problem:
    rows = np.bincount(codes, minlength=len(uniques))
    details = [f"{uniques[c]} ({rows[c]} row(s))" for c in empty[:SERIES_DETAILED]]
    series = tuple(str(uniques[c]) for c in empty)
    return Problem(
        check=NO_OBSERVATIONS,
        message=f"{count(series, 'series')} without a single usable {TARGET_COL} value "
        f"(every one missing, non-numeric or infinite): {join_details(details, len(series))}",
        series=series,
        fix="remove the series from the source, or fix its values there; a series with at "
        "least one value is forecast, however short (`fill: zero` makes missing values "
        "zero demand)",
    )


def _too_short(
    uniques: np.ndarray, lengths: np.ndarray, short: np.ndarray, min_length: int
) -> Problem:
    details = [f"{uniques[c]} has {lengths[c]}" for c in short[:SERIES_DETAILED]]
    series = tuple(str(uniques[c]) for c in short)
    return Problem(
        check=TOO_SHORT,
        message=f"{count(series, 'series')} shorter than the required {min_length} "
        f"observations: {join_details(details, len(series))}",
        series=series,
        fix="remove the series (or extend its history), or ask for fewer observations "
        "(a pipeline stage forecasts short series with the methods their length allows)",
    )


def _infer_freq(t: np.ndarray) -> str | None:
    if len(t) < 3:
        return None
    try:
        return pd.infer_freq(pd.DatetimeIndex(np.unique(t).astype("datetime64[ns]")))
    except (ValueError, TypeError):
        return None
