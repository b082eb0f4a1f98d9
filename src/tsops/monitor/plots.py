"""Plots of realized accuracy that people would rather look at than read.

Each plot is drawn from the ``scored`` pairs of
``tsops.monitor.accuracy.realized_accuracy`` (one row per served forecast whose actual
has arrived) and written as a PNG, with the data behind it as a CSV of the same name
beside it, so ``dvc plots`` or a spreadsheet can draw it again. Versions are ordered
naturally (2 before 10) and keep one colour per position in that order in every plot,
so ``v3`` has the same colour in each.

- :func:`realized_error_over_time`: MASE-scaled absolute error per target time and its
  rolling mean, a line per model version, against the backtest's expectation, with
  the times a canary or another change started marked;
- ``tsops.monitor.plots_forecasts.forecast_vs_actual``: small multiples, the actuals
  of a few series with each version's served forecasts and their interval bands, so a
  break in the data and a model that fails to follow it are visible;
- :func:`plots_markdown`: a snippet embedding the PNGs for a report or a PR comment.

Figures are drawn with ``tsops.core.figures`` (no pyplot), so plotting changes no
process-wide matplotlib state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from tsops.core.figures import save_png, subplots
from tsops.core.io import atomic_path
from tsops.core.schema import CUTOFF_COL, ID_COL, TIME_COL
from tsops.monitor.accuracy import STATUS_COL
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import MODEL_NAME_COL, VERSION_COL, VERSION_KEYS

LABEL_COL = "version_label"
ERROR_COL = "ase"
ERROR_AXIS_LABEL = "MASE-scaled absolute error"
HOW_TO_SCORE = (
    "run `tsops monitor accuracy --model <name> --out <dir>` once the actuals of served "
    "forecasts have arrived and plot its scored pairs (AccuracyResult.scored, or the rows "
    "of <dir>/pairs.parquet with status 'scored')"
)


# ------------------------------------------------------------------------------ the input


def scored_pairs(scored: pd.DataFrame, required: Sequence[str]) -> pd.DataFrame:
    """The scored rows of ``scored``, checked to carry ``required`` columns.

    A frame with a ``status`` column (``AccuracyResult.pairs()``, ``pairs.parquet``)
    keeps only its ``scored`` rows: late and pending forecasts have no actual to plot.
    """
    if STATUS_COL in scored.columns:
        scored = scored[scored[STATUS_COL] == "scored"]
    missing = [c for c in required if c not in scored.columns]
    if missing:
        raise MonitorError(
            f"the scored pairs lack column(s) {', '.join(missing)} (they have: "
            f"{', '.join(map(str, scored.columns)) or 'none'}): {HOW_TO_SCORE}"
        )
    if scored.empty:
        raise MonitorError(f"there are no scored forecasts to plot: {HOW_TO_SCORE}")
    out = scored.copy()
    out[MODEL_NAME_COL] = out[MODEL_NAME_COL].astype(str)
    out[VERSION_COL] = out[VERSION_COL].astype(str)
    if ID_COL in out.columns:
        out[ID_COL] = out[ID_COL].astype(str)
    for col in (TIME_COL, CUTOFF_COL):
        if col in out.columns:
            out[col] = pd.to_datetime(out[col])
    return out


def natural_key(text: str) -> list[int | str]:
    """Sort key that puts version "2" before "10" (digit runs compare as numbers)."""
    # re.split with a group alternates text and digit runs, so positions keep one type
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def version_order(scored: pd.DataFrame) -> pd.DataFrame:
    """The served (model name, version) pairs, naturally sorted, with label and colour.

    Colours follow the position in this order, so a version keeps its colour in every
    plot drawn from the same pairs.
    """
    versions = scored[VERSION_KEYS].drop_duplicates()
    keys = sorted(
        versions.itertuples(index=False, name=None),
        key=lambda nv: (natural_key(nv[0]), natural_key(nv[1])),
    )
    table = pd.DataFrame(keys, columns=VERSION_KEYS)
    table[LABEL_COL] = [version_label(name, version) for name, version in keys]
    table["color"] = [f"C{i % 10}" for i in range(len(table))]
    return table


def version_label(model_name: str, version: str) -> str:
    """``m3-monthly v3``: how a served version is named in legends and tables."""
    return f"{model_name} {version if version.startswith('v') else 'v' + version}"


# ------------------------------------------------------------- realized error over time


def realized_error_table(
    scored: pd.DataFrame, expected: dict[str, float] | None = None, rolling: int = 3
) -> pd.DataFrame:
    """Realized error per model version and target time: the data behind the plot.

    ``mase`` is the mean absolute scaled error of the pairs with that target time ``ds``
    (all series, cutoffs and steps; pairs without a scale are left out), ``n`` how many
    pairs it averages, ``mase_rolling`` the mean over the pairs of the last ``rolling``
    target times of that version (pooled, so a time with few pairs weighs little), and
    ``expected_mase`` the version's backtest MASE from ``expected`` (keyed by model
    version; versions not served here are ignored, so every registered version's
    expectation can be passed).
    """
    if rolling < 1:
        raise MonitorError(f"rolling must be at least 1 target time, got {rolling}")
    scored = scored_pairs(scored, [*VERSION_KEYS, TIME_COL, ERROR_COL])
    scaled = scored[np.isfinite(scored[ERROR_COL].astype(float))]
    if scaled.empty:
        raise MonitorError(
            f"none of the {len(scored)} scored forecast(s) has a scaled error: each was "
            "made from fewer than two actuals, so its series has no MASE scale yet; "
            "plot again once the forecasts' cutoffs have more history"
        )
    versions = version_order(scored)
    per_time = (
        scaled.groupby([*VERSION_KEYS, TIME_COL], sort=False)[ERROR_COL]
        .agg(n="count", error_sum="sum")
        .reset_index()
    )
    table = versions.assign(version_order=range(len(versions))).merge(
        per_time, on=VERSION_KEYS, how="inner", sort=False
    )
    table = table.sort_values(["version_order", TIME_COL], kind="stable").reset_index(drop=True)
    table["mase"] = table["error_sum"] / table["n"]
    by_version = table.groupby(VERSION_KEYS, sort=False)
    window_sum = by_version["error_sum"].transform(lambda s: s.rolling(rolling, 1).sum())
    window_n = by_version["n"].transform(lambda s: s.rolling(rolling, 1).sum())
    table["mase_rolling"] = window_sum / window_n
    expected_by_version = {str(k): float(v) for k, v in (expected or {}).items()}
    table["expected_mase"] = table[VERSION_COL].map(expected_by_version).astype(float)
    return table[[*VERSION_KEYS, LABEL_COL, TIME_COL, "n", "mase", "mase_rolling", "expected_mase"]]


def realized_error_over_time(
    scored: pd.DataFrame,
    out_png: Path,
    expected: dict[str, float] | None = None,
    events: list[tuple[pd.Timestamp, str]] | None = None,
    rolling: int = 3,
) -> Path:
    """Plot realized error over target time, a line per model version; return the PNG.

    Thin lines with dots are the MASE-scaled absolute error per target time, thick lines
    its rolling mean over ``rolling`` target times, dashed lines the backtest MASE each
    version was expected to reach (``expected``, keyed by model version). ``events``,
    ``(time, label)`` such as ``(canary start, "canary v4 at 10%")``, are drawn as a
    dotted line with its label and a shaded span up to the next event (or the end), so
    a jump in error can be read against what changed. Writes the table of
    :func:`realized_error_table` as a CSV next to the PNG.

    The backtest averages horizon steps 1..h; realized error averages the steps that
    were served, so the comparison is fair when requests ask for the whole horizon.
    """
    out_png = Path(out_png)
    table = realized_error_table(scored, expected, rolling)
    versions = version_order(scored_pairs(scored, VERSION_KEYS))
    marks = _events(events)

    fig, ax = subplots(figsize=(10, 4.8))
    for version in versions.itertuples(index=False):
        rows = table[table[LABEL_COL] == version.version_label]
        if rows.empty:
            continue
        color = version.color
        ax.plot(rows[TIME_COL], rows["mase"], color=color, lw=0.8, alpha=0.55, marker="o", ms=3)
        ax.plot(
            rows[TIME_COL], rows["mase_rolling"], color=color, lw=2.4, label=version.version_label
        )
        target = rows["expected_mase"].iloc[0]
        if np.isfinite(target):
            ax.axhline(target, color=color, lw=1.3, ls="--")
    _draw_events(ax, marks, table[TIME_COL].max())

    handles, _ = ax.get_legend_handles_labels()
    # the line styles mean the same for every version: explain them once, in grey
    handles += [
        Line2D([], [], color="0.4", lw=0.8, marker="o", ms=3, label="per target time"),
        Line2D([], [], color="0.4", lw=2.4, label=f"rolling mean ({rolling} target times)"),
    ]
    if table["expected_mase"].notna().any():
        handles.append(Line2D([], [], color="0.4", lw=1.3, ls="--", label="backtest MASE"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set(
        xlabel="target time",
        ylabel=ERROR_AXIS_LABEL,
        title=f"Realized error of served forecasts: {', '.join(versions[LABEL_COL])}",
    )
    ax.set_ylim(bottom=0)
    date_axis(ax)
    ax.grid(alpha=0.3)
    write_plot_csv(table, out_png)
    save_png(fig, out_png)
    return out_png


def _events(events: list[tuple[pd.Timestamp, str]] | None) -> list[tuple[pd.Timestamp, str]]:
    marks = []
    for item in events or []:
        try:
            when, label = item
            marks.append((pd.Timestamp(when), str(label)))
        except (TypeError, ValueError) as exc:
            raise MonitorError(
                f"event {item!r} is not a (time, label) pair such as "
                "(pd.Timestamp('2020-03-01'), 'canary v4 at 10%')"
            ) from exc
    return sorted(marks, key=lambda mark: mark[0])


def _draw_events(ax, marks: list[tuple[pd.Timestamp, str]], last_time: pd.Timestamp) -> None:
    end = max([last_time, *(when for when, _ in marks)])
    for i, (when, label) in enumerate(marks):
        until = marks[i + 1][0] if i + 1 < len(marks) else end
        ax.axvspan(when, until, color="0.5", alpha=0.08 if i % 2 == 0 else 0.16, lw=0)
        ax.axvline(when, color="0.25", lw=1, ls=":")
        # x in data, y in axes fraction: the label sits at the top whatever the errors
        ax.text(
            when,
            0.98,
            f" {label}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="0.25",
        )


# --------------------------------------------------------------------------- the snippet


def plots_markdown(paths: Sequence[Path | str], title: str, relative_to: Path | None = None) -> str:
    """A markdown section embedding each PNG and linking the CSV beside it.

    Paths are written relative to ``relative_to`` (the folder of the report that
    includes the snippet) when given, else as passed; URL-quoted, so spaces work.
    The caption is the file name in words (``realized_error_over_time`` ->
    "Realized error over time").
    """
    if not paths:
        raise MonitorError("no plots to include: pass the PNG paths the plot functions returned")
    lines = [f"## {title}", ""]
    for path in map(Path, paths):
        caption = path.stem.replace("_", " ").replace("-", " ").capitalize()
        lines += [f"### {caption}", "", f"![{caption}]({_link(path, relative_to)})", ""]
        data = path.with_suffix(".csv")
        if data.exists():
            lines += [f"Data: [{data.name}]({_link(data, relative_to)})", ""]
    return "\n".join(lines)


def _link(path: Path, relative_to: Path | None) -> str:
    if relative_to is not None:
        path = Path(_relpath(path, relative_to))
    return quote(path.as_posix())


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


# -------------------------------------------------------------------------------- helpers


def date_axis(ax) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def some(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def write_plot_csv(table: pd.DataFrame, out_png: Path) -> Path:
    """The plot's data beside it: same name, .csv; times in ISO 8601 for dvc plots."""
    path = Path(out_png).with_suffix(".csv")
    out = table.copy()
    for col in (TIME_COL, CUTOFF_COL):
        if col in out.columns:
            times = out[col]
            # a date alone when every time is midnight (daily and coarser models)
            daily = (times == times.dt.normalize()).all()
            out[col] = times.dt.strftime("%Y-%m-%d" if daily else "%Y-%m-%dT%H:%M:%S")
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.6g")
    return path
