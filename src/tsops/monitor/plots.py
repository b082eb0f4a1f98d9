"""Plots of realized accuracy that people would rather look at than read.

Each plot is drawn from the ``scored`` pairs of :func:`tsops.monitor.accuracy.realized_accuracy`
(one row per served forecast whose actual has arrived) and written as a PNG, with the
data behind it as a CSV of the same name beside it, so ``dvc plots`` or a spreadsheet
can draw it again. Versions are ordered naturally (2 before 10) and keep one colour
per position in that order in every plot, so ``v3`` has the same colour in each.

- :func:`realized_error_over_time`: MASE-scaled absolute error per target time and its
  rolling mean, a line per model version, against the backtest's expectation, with
  the times a canary or another change started marked;
- :func:`forecast_vs_actual`: small multiples, the actuals of a few series with each
  version's served forecasts and their interval bands, so a break in the data and a
  model that fails to follow it are visible;
- :func:`plots_markdown`: a snippet embedding the PNGs for a report or a PR comment.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from tsops.core.io import atomic_path
from tsops.core.metrics import STEP_COL
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col
from tsops.monitor.accuracy import (
    MODEL_NAME_COL,
    STATUS_COL,
    VERSION_COL,
    VERSION_KEYS,
    MonitorError,
    interval_levels,
)

# the backtest plots' PNG settings, and importing it selects the headless Agg backend
from tsops.pipeline.evaluate import _save as save_png

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

    fig, ax = plt.subplots(figsize=(10, 4.8))
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
    _date_axis(ax)
    ax.grid(alpha=0.3)
    _write_csv(table, out_png)
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


# ------------------------------------------------------------------ forecast vs actual


def forecast_vs_actual_table(
    scored: pd.DataFrame,
    series: list[str] | None = None,
    max_series: int = 6,
    step: int | None = 1,
) -> pd.DataFrame:
    """The served forecasts drawn by :func:`forecast_vs_actual`, with their actuals.

    One row per series, version and target time: with ``step`` the forecasts made that
    many steps ahead (1 = the next period), with ``step=None`` the path forecast from
    each version's latest cutoff of the series whose path is scored in full (as many
    steps as its longest scored path: later cutoffs still wait for their actuals).
    ``series`` picks the series; by default the ``max_series`` with the largest
    realized MASE over these forecasts (ties by name), the ones most worth looking at.
    """
    if max_series < 1:
        raise MonitorError(f"max_series must be at least 1, got {max_series}")
    scored = scored_pairs(
        scored, [*VERSION_KEYS, ID_COL, TIME_COL, CUTOFF_COL, STEP_COL, MEAN_COL, TARGET_COL]
    )
    if step is not None:
        chosen = scored[scored[STEP_COL] == step]
        if chosen.empty:
            steps = sorted(scored[STEP_COL].unique())
            raise MonitorError(
                f"no scored forecast is {step} step(s) ahead; the scored steps are "
                f"{', '.join(map(str, steps))}: pass one of them, or step=None for the "
                "path forecast from the latest cutoff"
            )
        # one forecast per target time and step: if cutoffs were irregular, the latest
        chosen = chosen.sort_values(CUTOFF_COL, kind="stable").drop_duplicates(
            [*VERSION_KEYS, ID_COL, TIME_COL], keep="last"
        )
    else:
        # the latest cutoff whose path has been scored as far as any of that version's
        # paths of the series: the last cutoff alone has only its first step scored
        per_series = [*VERSION_KEYS, ID_COL]
        sized = scored.assign(
            length=scored.groupby([*per_series, CUTOFF_COL])[STEP_COL].transform("count")
        )
        complete = sized[sized["length"] == sized.groupby(per_series)["length"].transform("max")]
        complete = complete.drop(columns="length")
        latest = complete.groupby(per_series)[CUTOFF_COL].transform("max")
        chosen = complete[complete[CUTOFF_COL] == latest]

    available = set(chosen[ID_COL])
    if series is not None:
        unknown = [s for s in series if str(s) not in available]
        if unknown:
            raise MonitorError(
                f"series {', '.join(map(str, unknown))} have no scored forecast to plot "
                f"(scored series: {_some(sorted(available, key=natural_key))}); pick from "
                "those, or pass series=None for the worst ones"
            )
        picked = list(dict.fromkeys(map(str, series)))[:max_series]
    else:
        error = (
            chosen.groupby(ID_COL)[ERROR_COL].mean()
            if ERROR_COL in chosen.columns
            else pd.Series(np.nan, index=sorted(available))
        )
        ranking = pd.DataFrame({ID_COL: error.index, "error": error.to_numpy()})
        # worst first; series without a scale (NaN) go last
        ranking = ranking.sort_values(
            ["error", ID_COL], ascending=[False, True], na_position="last", kind="stable"
        )
        picked = ranking[ID_COL].head(max_series).tolist()

    versions = version_order(scored)
    levels = interval_levels(list(chosen.columns))
    interval_cols = [c for level in levels for c in (lo_col(level), hi_col(level))]
    table = versions[[*VERSION_KEYS, LABEL_COL]].merge(
        chosen[chosen[ID_COL].isin(picked)], on=VERSION_KEYS, how="inner", sort=False
    )
    table["series_order"] = table[ID_COL].map({uid: i for i, uid in enumerate(picked)})
    table["version_order"] = table[LABEL_COL].map(
        {label: i for i, label in enumerate(versions[LABEL_COL])}
    )
    table = table.sort_values(
        ["series_order", "version_order", TIME_COL], kind="stable"
    ).reset_index(drop=True)
    cols = [ID_COL, TIME_COL, TARGET_COL, *VERSION_KEYS, LABEL_COL, CUTOFF_COL, STEP_COL]
    return table[[*cols, MEAN_COL, *interval_cols]]


def forecast_vs_actual(
    scored: pd.DataFrame,
    out_png: Path,
    series: list[str] | None = None,
    max_series: int = 6,
    step: int | None = 1,
) -> Path:
    """Plot actuals against served forecasts, a panel per series; return the PNG.

    In each panel the actuals are a black line and each version's forecasts (see
    :func:`forecast_vs_actual_table` for which) a coloured line with its interval
    bands, the wider level lighter; the panel title gives each version's realized MASE
    over the forecasts drawn. Forecasts logged without intervals are drawn without
    bands. Writes the table as a CSV next to the PNG.
    """
    out_png = Path(out_png)
    pairs = scored_pairs(scored, [*VERSION_KEYS, ID_COL, TIME_COL, TARGET_COL])
    table = forecast_vs_actual_table(scored, series, max_series, step)
    versions = version_order(pairs)
    levels = interval_levels(list(table.columns))
    picked = list(dict.fromkeys(table[ID_COL]))
    # the actuals of every scored pair, not only those drawn: more context around a break
    actuals = (
        pairs[[ID_COL, TIME_COL, TARGET_COL]]
        .drop_duplicates([ID_COL, TIME_COL])
        .sort_values([ID_COL, TIME_COL])
    )
    # "v3" says enough in a panel title unless two served models share the plot
    one_model = versions[MODEL_NAME_COL].nunique() == 1

    n_cols = 1 if len(picked) == 1 else 2
    n_rows = math.ceil(len(picked) / n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(7 if n_cols == 1 else 12, 1.0 + 3.0 * n_rows), squeeze=False
    )
    for ax, uid in zip(axes.flat, picked, strict=False):
        actual = actuals[actuals[ID_COL] == uid]
        ax.plot(actual[TIME_COL], actual[TARGET_COL], color="black", lw=1.4, label="actual")
        scores = []
        for version in versions.itertuples(index=False):
            rows = table[(table[ID_COL] == uid) & (table[LABEL_COL] == version.version_label)]
            if rows.empty:
                continue
            _draw_forecast(ax, rows, levels, version.color, version.version_label)
            if step is None:
                ax.axvline(rows[CUTOFF_COL].iloc[0], color=version.color, lw=0.8, ls=":")
            if ERROR_COL in pairs.columns:
                error = _mase_of(pairs, rows)
                name = version_label("", version.model_version).strip() if one_model else None
                scores.append(f"{name or version.version_label} {error:.2f}")
        title = uid if not scores else f"{uid}   MASE: {', '.join(scores)}"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        _date_axis(ax)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("value (series units)", fontsize=8)
    for i, ax in enumerate(axes.flat[: len(picked)]):
        if i + n_cols >= len(picked):  # the lowest panel drawn in its column
            ax.set_xlabel("target time", fontsize=8)
    for ax in list(axes.flat)[len(picked) :]:
        ax.axis("off")

    handles = [Line2D([], [], color="black", lw=1.4, label="actual")]
    handles += [
        Line2D([], [], color=color, lw=1.6, marker="o", ms=3, label=label)
        for label, color in zip(versions[LABEL_COL], versions["color"], strict=True)
        if label in set(table[LABEL_COL])
    ]
    handles += [
        Patch(color="0.5", alpha=alpha, lw=0, label=f"{level:g}% interval")
        for level, alpha in _band_alphas(levels, table)
    ]
    axes.flat[0].legend(handles=handles, fontsize=7, loc="best")
    which = (
        f"{step}-step-ahead forecasts"
        if step is not None
        else "forecast paths from the latest fully scored cutoff"
    )
    fig.suptitle(f"Served {which} vs actuals, {len(picked)} series")
    _write_csv(table, out_png)
    save_png(fig, out_png)
    return out_png


def _draw_forecast(ax, rows: pd.DataFrame, levels: list[float], color: str, label: str) -> None:
    for level, alpha in _band_alphas(levels, rows):
        ax.fill_between(
            rows[TIME_COL], rows[lo_col(level)], rows[hi_col(level)], color=color, alpha=alpha, lw=0
        )
    ax.plot(rows[TIME_COL], rows[MEAN_COL], color=color, lw=1.6, marker="o", ms=2.5, label=label)


def _band_alphas(levels: list[float], rows: pd.DataFrame) -> list[tuple[float, float]]:
    """Levels with at least one finite bound in ``rows``, each with its shade: wider lighter."""
    drawn = [
        level
        for level in levels
        if rows[lo_col(level)].notna().any() and rows[hi_col(level)].notna().any()
    ]
    return [(level, 0.30 - 0.18 * i / max(len(drawn) - 1, 1)) for i, level in enumerate(drawn)]


def _mase_of(pairs: pd.DataFrame, rows: pd.DataFrame) -> float:
    keys = [*VERSION_KEYS, ID_COL, CUTOFF_COL, TIME_COL]
    errors = rows[keys].merge(pairs, on=keys)
    return float(errors[ERROR_COL].mean())


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


def _date_axis(ax) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _some(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def _write_csv(table: pd.DataFrame, out_png: Path) -> Path:
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
