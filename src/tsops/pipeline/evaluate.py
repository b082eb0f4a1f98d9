"""The evaluate stage: backtest metrics, tables and plots in the files DVC tracks.

``metrics.json`` is what ``dvc metrics show/diff`` reads; the CSV files under
``plots/`` are what ``dvc plots show/diff`` draws; the PNGs are for people; the
tables under ``tables/`` hold every model's metrics per series, per horizon step
and overall, with the class of series (``series_class``) each row is about.

Each class of series is scored apart (``tsops.pipeline.classes``): ``metrics.json``'s
top level is the gated class' (the regular one whenever the panel has regular series),
exactly as before classes existed; a panel with other classes adds ``gated_class`` and,
under ``classes``, each class' series count, scored series and metrics. The plots are
the gated class'. ``run`` is the stage's I/O; the rest is pure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsops.core.config import ModelConfig, load
from tsops.core.errors import TsopsError
from tsops.core.figures import save_png, subplots
from tsops.core.io import atomic_dir, atomic_path, read_json, read_series, require, write_json
from tsops.core.metrics import CLASS_COL, CLASSES, MODEL_COL, REGULAR, STEP_COL, score
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, hi_col, lo_col
from tsops.pipeline.selection import RULES, SELECTED


class EvaluationError(TsopsError):
    """A backtest that cannot be scored as the gate needs it."""


#: what each table of ``tables/`` holds, by file name
TABLES = {
    "per_series.csv": "per_series",
    "per_horizon.csv": "per_horizon",
    "overall.csv": "overall",
}


def metrics_document(
    scores: dict[str, pd.DataFrame],
    config: ModelConfig,
    *,
    rule: str | None = None,
    candidates: list[str] | None = None,
) -> dict:
    """The nested dict written to metrics.json, for one class of series: the regular
    class by default, another with its ``rule`` and ``candidates`` (every class is
    compared with model.yaml's baseline)."""
    table = scores["overall"].set_index(MODEL_COL)
    as_dict = {m: {k: round(float(v), 6) for k, v in row.items()} for m, row in table.iterrows()}
    selected = as_dict[SELECTED]
    baseline = as_dict[config.baseline]
    candidates = list(config.candidates) if candidates is None else candidates
    return {
        "selected": selected,
        "baseline": {"name": config.baseline, **baseline},
        "skill_vs_naive": round(1 - selected["mase"] / baseline["mase"], 6),
        "rule": rule or config.selection.rule,
        "rules": {r: as_dict[r] for r in RULES if r in as_dict},
        "candidates": {c: as_dict[c] for c in candidates if c in as_dict},
        "n_series": int(scores["per_series"][ID_COL].nunique()),
        "windows": config.backtest.windows,
        "horizon": config.horizon,
    }


def class_scores(
    cv: pd.DataFrame, scales: pd.DataFrame, levels: list[float]
) -> dict[str, dict[str, pd.DataFrame]]:
    """``score`` of each class' rows of ``cv`` (classes without a scored row left out);
    a ``cv`` written before classes existed is all regular."""
    if CLASS_COL not in cv.columns:
        cv = cv.assign(**{CLASS_COL: REGULAR})
    out = {}
    for series_class in CLASSES:
        rows = cv[cv[CLASS_COL] == series_class].drop(columns=CLASS_COL)
        if not rows.empty:
            out[series_class] = score(rows, scales, levels)
    return out


def class_document(
    scores: dict[str, pd.DataFrame], config: ModelConfig, series_class: str, selection: dict
) -> dict:
    """``metrics_document`` of one class, its rule and candidates as the backtest wrote
    them (``selection``: selection.json; the candidates: the models of its scores that
    are no rule)."""
    if series_class == REGULAR:
        return metrics_document(scores, config)
    rule = (selection.get("classes") or {}).get(series_class, {}).get("rule")
    models = scores["overall"][MODEL_COL].tolist()
    candidates = [m for m in models if m not in (*RULES, SELECTED)]
    return metrics_document(scores, config, rule=rule, candidates=candidates)


def classes_document(
    by_class: dict[str, dict[str, pd.DataFrame]],
    config: ModelConfig,
    selection: dict,
    counts: dict[str, int],
) -> dict:
    """What metrics.json says of the classes: which one is gated, and per class present
    its series, scored series, selected and baseline metrics and skill."""
    out: dict = {"gated_class": selection.get("gated_class", REGULAR), "classes": {}}
    for series_class in CLASSES:
        if not counts.get(series_class):
            continue
        entry: dict = {"n_series": counts[series_class], "scored_series": 0}
        if series_class in by_class:
            own = class_document(by_class[series_class], config, series_class, selection)
            entry |= {
                "scored_series": own["n_series"],
                "rule": own["rule"],
                "selected": own["selected"],
                "baseline": own["baseline"],
                "skill_vs_naive": own["skill_vs_naive"],
            }
        out["classes"][series_class] = entry
    return out


def class_counts(df: pd.DataFrame, selection: dict) -> dict[str, int]:
    """Series per class (every class listed), from selection.json's ``series_class``
    (the series it does not list are regular)."""
    listed = selection.get("series_class") or {}
    labels = [listed.get(uid, REGULAR) for uid in df[ID_COL].astype(str).unique()]
    return {c: labels.count(c) for c in CLASSES}


def labelled(by_class: dict[str, dict[str, pd.DataFrame]], table: str) -> pd.DataFrame:
    """One table of every class, each row with its ``series_class`` (first column)."""
    parts = [scores[table].assign(**{CLASS_COL: c}) for c, scores in by_class.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[[CLASS_COL, *[c for c in out.columns if c != CLASS_COL]]]


def error_by_horizon_table(per_horizon_df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    wide = per_horizon_df.pivot(index=STEP_COL, columns=MODEL_COL, values="mase")
    return wide[[m for m in models if m in wide.columns]].reset_index()


def forecast_table(cv: pd.DataFrame, df: pd.DataFrame, uid: str, level: float) -> pd.DataFrame:
    """Actuals of one series next to the selected rule's forecasts at every origin."""
    sel = cv[(cv[MODEL_COL] == SELECTED) & (cv[ID_COL] == uid)]
    actual = df[df[ID_COL] == uid][[TIME_COL, TARGET_COL]].rename(columns={TARGET_COL: "actual"})
    cols = [TIME_COL, MEAN_COL, lo_col(level), hi_col(level)]
    forecast = sel[cols].rename(columns={MEAN_COL: "forecast"})
    table = actual.merge(forecast, on=TIME_COL, how="left")
    table[TIME_COL] = table[TIME_COL].dt.strftime("%Y-%m-%d")
    return table


def write_plots(
    cv: pd.DataFrame,
    df: pd.DataFrame,
    scores: dict[str, pd.DataFrame],
    config: ModelConfig,
    out_dir: Path,
    n_panels: int = 6,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    models = [SELECTED, config.baseline, *[c for c in config.candidates if c != config.baseline]]
    by_horizon = error_by_horizon_table(scores["per_horizon"], models)
    with atomic_path(out_dir / "error_by_horizon.csv") as tmp:
        by_horizon.to_csv(tmp, index=False, float_format="%.6g")
    level = max(config.levels) if config.levels else None
    first_uid = sorted(df[ID_COL].unique())[0]
    if level is not None:
        with atomic_path(out_dir / "forecast.csv") as tmp:
            forecast_table(cv, df, first_uid, level).to_csv(tmp, index=False, float_format="%.6g")

    fig, ax = subplots(figsize=(7, 4))
    for model in by_horizon.columns[1:]:
        ax.plot(
            by_horizon[STEP_COL],
            by_horizon[model],
            marker="o",
            ms=3,
            label=model,
            lw=2.5 if model == SELECTED else 1,
        )
    ax.set(xlabel="horizon step", ylabel="MASE", title=f"{config.name}: backtest error by horizon")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, out_dir / "error_by_horizon.png")

    uids = sorted(df[ID_COL].unique())[:n_panels]
    cols = 2
    rows = (len(uids) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
    sel = cv[cv[MODEL_COL] == SELECTED]
    for ax, uid in zip(axes.flat, uids, strict=False):
        series = df[df[ID_COL] == uid]
        ax.plot(series[TIME_COL], series[TARGET_COL], color="black", lw=1, label="actual")
        for _, window in sel[sel[ID_COL] == uid].groupby(CUTOFF_COL):
            ax.plot(window[TIME_COL], window[MEAN_COL], color="tab:blue", lw=1.5)
            if level is not None:
                ax.fill_between(
                    window[TIME_COL],
                    window[lo_col(level)],
                    window[hi_col(level)],
                    color="tab:blue",
                    alpha=0.2,
                    lw=0,
                )
        ax.set_title(uid, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(uids) :]:
        ax.axis("off")
    fig.suptitle(f"{config.name}: backtest forecasts ({SELECTED}, {level:g}% interval)")
    save_png(fig, out_dir / "forecast.png")


def run(root: Path, name: str) -> dict:
    """The evaluate stage: score the backtest of ``artifacts/<name>/backtest/`` once per
    class of series and write ``metrics.json``, ``plots/`` and ``tables/``; returns the
    metrics document."""
    config, paths = load(root, name)
    df = read_series(paths)
    cv = pd.read_parquet(require(paths.cv, f"tsops backtest {name}"))
    scales = pd.read_parquet(require(paths.scales, f"tsops backtest {name}"))
    selection = read_json(require(paths.selection, f"tsops backtest {name}"))
    gated = selection.get("gated_class", REGULAR)
    by_class = class_scores(cv, scales, config.levels)
    if gated not in by_class:
        raise EvaluationError(
            f"{name}: no series of the {gated} class, the one the gate decides on, is long "
            "enough for a backtest window; lengthen those series, or shorten horizon or "
            "backtest.step in model.yaml"
        )
    document = class_document(by_class[gated], config, gated, selection)
    counts = class_counts(df, selection)
    if counts[REGULAR] != sum(counts.values()):
        document |= classes_document(by_class, config, selection, counts)
    gated_cv = cv if CLASS_COL not in cv.columns else cv[cv[CLASS_COL] == gated]
    gated_df = df[df[ID_COL].astype(str).isin(gated_cv[ID_COL].astype(str).unique())]
    write_plots(gated_cv, gated_df, by_class[gated], config, paths.plots)
    with atomic_dir(paths.tables) as tmp:
        for file, table in TABLES.items():
            labelled(by_class, table).to_csv(tmp / file, index=False, float_format="%.6g")
    write_json(document, paths.metrics)
    return document
