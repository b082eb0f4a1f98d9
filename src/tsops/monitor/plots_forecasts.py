"""Served forecasts against the actuals, a panel per series: is the model following the data?

:func:`forecast_vs_actual` draws small multiples, the actuals of a few series with each
version's served forecasts and their interval bands, so a break in the data and a
model that fails to follow it are visible; :func:`forecast_vs_actual_table` is the
data behind it (written as a CSV beside the PNG). Versions keep the colours of
``tsops.monitor.plots.version_order``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from tsops.core.figures import save_png, subplots
from tsops.core.metrics import STEP_COL
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import MODEL_NAME_COL, VERSION_KEYS, interval_levels
from tsops.monitor.plots import (
    ERROR_COL,
    LABEL_COL,
    date_axis,
    natural_key,
    scored_pairs,
    some,
    version_label,
    version_order,
    write_plot_csv,
)


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
                f"(scored series: {some(sorted(available, key=natural_key))}); pick from "
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
    fig, axes = subplots(
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
        date_axis(ax)
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
    write_plot_csv(table, out_png)
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
