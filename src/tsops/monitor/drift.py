"""Has the data moved away from what the model was trained on? Evidently, on scaled features.

The reference is the training data (the long ``unique_id, ds, y`` frame the model was
fitted on), the current window the actuals that arrived after it. Both are compared
as features on each series' own training scale (``level``, ``seasonal_change``,
``step_change``: ``tsops.monitor.drift_features`` says what each measures and why raw
``y`` is not compared).

Evidently's ``DataDriftPreset`` compares the reference and current feature columns
one by one and counts the share that drifted; the dataset drifts when that share
reaches ``threshold`` (``monitoring.drift_threshold`` in model.yaml). With served
forecasts and their actuals (``AccuracyResult.scored``), Evidently's
``RegressionPreset`` adds the realized forecast quality on the same scale.

A little over 400 lines on purpose: every call into Evidently and every reading of
its snapshots is here, so an Evidently upgrade is checked against one module.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tsops.core.schema import ID_COL, MEAN_COL, TARGET_COL, TIME_COL
from tsops.monitor.accuracy import json_value, records
from tsops.monitor.drift_features import (
    LEVEL,
    SEASONAL_CHANGE,
    STEP_CHANGE,
    feature_columns,
    scaled_features,
)
from tsops.monitor.errors import MonitorError

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

#: regression columns: actual and forecast divided by the series' seasonal-change scale,
#: so Evidently's MAE is a MASE (pooled over pairs) and series weigh alike
ACTUAL_SCALED = "y_scaled"
FORECAST_SCALED = "mean_scaled"

#: Evidently's Wasserstein distance, normed by the reference's standard deviation. Its
#: usual auto choice (K-S below 1,000 reference rows, Wasserstein above) would switch
#: test, and meaning of the score, with the size of the panel.
DEFAULT_STATTEST = "wasserstein"
#: Evidently's default of 0.1 is meant for independent rows. Observations of one series
#: are autocorrelated and a current window holds few periods, so two windows of an
#: unchanged panel often lie 0.1-0.35 reference standard deviations apart (measured on
#: M3 monthly: 60 series, windows of 3-18 months), while a 40% level shift gives
#: 0.45-0.9 on level and seasonal_change. 0.4 keeps the first quiet and catches the
#: second.
DEFAULT_STATTEST_THRESHOLD = 0.4
#: below this many values a column's standard deviation, which the distance is normed by,
#: is not worth trusting
MIN_REFERENCE_ROWS = 30
#: the distance between two samples of one distribution is about 1/sqrt(n) reference
#: standard deviations: below 10 current values that noise alone reaches the threshold
MIN_CURRENT_ROWS = 10
#: R² and the error spread need at least two pairs
MIN_SCORED_PAIRS = 2

_QUALITY_METRICS = {
    # Evidently metric type -> (name in our numbers, which part of its value)
    "MAE": ("scaled_mae", "mean"),
    "RMSE": ("scaled_rmse", None),
    "MeanError": ("scaled_mean_error", "mean"),
    "MAPE": ("mape", "mean"),
    "R2Score": ("r2", None),
    "AbsMaxError": ("scaled_abs_max_error", None),
}


# ------------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class DriftResult:
    """Evidently's verdict on reference vs current, with the numbers that matter.

    ``by_column`` has one row per feature: ``column``, ``method`` (Evidently's drift
    test), ``threshold``, ``score`` (a p-value when ``score_is_p_value``, else a
    distance), ``drifted`` and the rows compared. ``quality`` holds Evidently's
    regression metrics on the scored forecast/actual pairs (None without them).
    """

    by_column: pd.DataFrame
    drift_share: float
    threshold: float
    dataset_drift: bool
    reference_summary: dict[str, Any]
    current_summary: dict[str, Any]
    drift_snapshot: Snapshot
    quality: dict[str, float] | None = None
    quality_snapshot: Snapshot | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return self.by_column.loc[self.by_column["drifted"], "column"].tolist()

    def numbers(self) -> dict[str, float]:
        """Flat numbers for MLflow and Prometheus (``tsops.monitor.publish``)."""
        out: dict[str, float] = {
            "drift_share": float(self.drift_share),
            "dataset_drift": float(self.dataset_drift),
            "drifted_columns": float(len(self.drifted_columns)),
            "drift_threshold": float(self.threshold),
            "reference_rows": float(self.reference_summary["rows"]),
            "current_rows": float(self.current_summary["rows"]),
        }
        for row in self.by_column.itertuples(index=False):
            out[f"drift_score_{row.column}"] = float(row.score)
        for key, value in (self.quality or {}).items():
            out[key] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": json_value(self.drift_share),
            "threshold": self.threshold,
            "drifted_columns": self.drifted_columns,
            "columns": records(self.by_column),
            "reference": self.reference_summary,
            "current": self.current_summary,
            "quality": {k: json_value(v) for k, v in self.quality.items()}
            if self.quality is not None
            else None,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A few lines for people: the verdict, each column, the forecast quality."""
        ref, cur = self.reference_summary, self.current_summary
        verdict = "DRIFT" if self.dataset_drift else "no drift"
        lines = [
            f"{verdict}: {len(self.drifted_columns)} of {len(self.by_column)} feature(s) "
            f"drifted (share {self.drift_share:.2f}, dataset drift at >= {self.threshold:g})",
            f"reference {ref['rows']} rows of {ref['series']} series ({ref['start']} .. "
            f"{ref['end']}); current {cur['rows']} rows of {cur['series']} series "
            f"({cur['start']} .. {cur['end']})",
        ]
        for row in self.by_column.itertuples(index=False):
            relation = "p-value" if row.score_is_p_value else "score"
            lines.append(
                f"  {row.column:<16} {relation} {row.score:.3g} ({row.method}, threshold "
                f"{row.threshold:g}){'  DRIFTED' if row.drifted else ''}"
            )
        if self.quality is not None:
            parts = ", ".join(f"{k} {v:.3g}" for k, v in self.quality.items())
            lines.append(f"forecast quality on scored pairs: {parts}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def save(self, directory: Path) -> list[Path]:
        """Evidently's own HTML and JSON of each report, and ``drift_summary.json``.

        Writes ``drift.html`` and ``drift.json`` (and ``quality.html`` /
        ``quality.json`` with scored pairs), each replaced atomically.
        """
        from tsops.core.io import atomic_path, write_json

        directory = Path(directory)
        written = []
        snapshots = [("drift", self.drift_snapshot), ("quality", self.quality_snapshot)]
        for name, snapshot in snapshots:
            if snapshot is None:
                continue
            for suffix, save in (("html", snapshot.save_html), ("json", snapshot.save_json)):
                path = directory / f"{name}.{suffix}"
                with atomic_path(path) as tmp:
                    save(str(tmp))
                written.append(path)
        write_json(self.to_dict(), directory / "drift_summary.json")
        written.append(directory / "drift_summary.json")
        return written


# ------------------------------------------------------------------------------- the report


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    season_length: int,
    threshold: float,
    scored: pd.DataFrame | None = None,
    freq: str | None = None,
    stattest: str = DEFAULT_STATTEST,
    stattest_threshold: float = DEFAULT_STATTEST_THRESHOLD,
) -> DriftResult:
    """Evidently's data drift of ``current`` against ``reference``, on scaled features.

    ``reference``: the training data (long ``unique_id, ds, y`` frame); ``current``:
    the observations after it; ``threshold``: the share of drifted feature columns at
    which the dataset counts as drifted; ``scored``: forecast/actual pairs
    (``AccuracyResult.scored``: ``unique_id, ds, y, mean``, optionally ``ase``) for the
    forecast quality report; ``freq``: match lags by time (see :func:`drift_features`);
    ``stattest`` / ``stattest_threshold``: Evidently's per-column test and its threshold.
    """
    if not 0 < threshold <= 1:
        raise MonitorError(
            f"threshold is a share of drifted columns in (0, 1], got {threshold}; "
            "0.5 means half of the feature columns must drift"
        )
    method = _check_stattest(stattest)
    ref_features, cur_features, scales = scaled_features(reference, current, season_length, freq)
    columns = feature_columns(season_length)
    _check_sizes(ref_features, cur_features, columns, season_length)
    notes = _unscaled_note(cur_features, columns)

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(id_column=ID_COL, timestamp=TIME_COL, numerical_columns=columns)
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                drift_share=threshold,
                num_method=stattest,
                num_threshold=stattest_threshold,
            )
        ],
        include_tests=True,
    )
    with _quiet():
        snapshot = report.run(
            Dataset.from_pandas(
                cur_features[[ID_COL, TIME_COL, *columns]], data_definition=definition
            ),
            Dataset.from_pandas(
                ref_features[[ID_COL, TIME_COL, *columns]], data_definition=definition
            ),
        )
    share, by_column = _parse_drift(snapshot.dict(), method)
    by_column["n_reference"] = [int(ref_features[c].notna().sum()) for c in by_column["column"]]
    by_column["n_current"] = [int(cur_features[c].notna().sum()) for c in by_column["column"]]

    quality = quality_snapshot = None
    if scored is not None:
        quality, quality_snapshot, note = _quality(scored, scales[SEASONAL_CHANGE])
        if note:
            notes.append(note)
    return DriftResult(
        by_column=by_column,
        drift_share=share,
        threshold=threshold,
        dataset_drift=bool(share >= threshold),
        reference_summary=_window(ref_features),
        current_summary=_window(cur_features),
        drift_snapshot=snapshot,
        quality=quality,
        quality_snapshot=quality_snapshot,
        notes=notes,
    )


def _check_stattest(stattest: str) -> str:
    """Evidently's display name of ``stattest``; an unknown name lists the known ones."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    try:
        return get_registered_stattest(stattest, ColumnType.Numerical).display_name
    except ValueError as exc:
        raise MonitorError(
            f"Evidently has no drift test {stattest!r} for numerical columns ({exc}); "
            f"use e.g. {DEFAULT_STATTEST}, ks, psi or jensenshannon"
        ) from exc


def _check_sizes(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], season_length: int
) -> None:
    for frame, needed, what in (
        (reference, MIN_REFERENCE_ROWS, "reference (training data)"),
        (current, MIN_CURRENT_ROWS, "current window"),
    ):
        for col in columns:
            have = int(frame[col].notna().sum())
            if have >= needed:
                continue
            why = {
                LEVEL: "an observation of a series that is also in the reference",
                SEASONAL_CHANGE: f"the series' value {season_length} period(s) earlier",
                STEP_CHANGE: "the series' value one period earlier",
            }[col]
            fix = (
                "give more training data (longer series, more series, or a later --since)"
                if what.startswith("reference")
                else "wait for more actuals, or move --since earlier"
            )
            raise MonitorError(
                f"the {what} has {have} usable value(s) of {col} (each needs {why}); "
                f"Evidently's drift test needs at least {needed} for a meaningful "
                f"result: {fix}"
            )


def _unscaled_note(current: pd.DataFrame, columns: list[str]) -> list[str]:
    unscaled = current.loc[current[LEVEL].isna(), ID_COL].unique()
    if not len(unscaled):
        return []
    shown = ", ".join(map(str, sorted(unscaled)[:5])) + (", ..." if len(unscaled) > 5 else "")
    return [
        f"{len(unscaled)} series of the current window have no training scale (not in the "
        f"reference, or flat there) and are left out of {', '.join(columns)}: {shown}"
    ]


def _window(features: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(features),
        "series": int(features[ID_COL].nunique()),
        "start": features[TIME_COL].min().date().isoformat(),
        "end": features[TIME_COL].max().date().isoformat(),
    }


def _parse_drift(document: dict[str, Any], method: str) -> tuple[float, pd.DataFrame]:
    """The drifted share and one row per column from Evidently's snapshot dict."""
    share = None
    columns: dict[str, dict[str, Any]] = {}
    for metric in document["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            share = float(metric["value"]["share"])
        elif kind == "ValueDrift":
            config = metric["config"]
            columns[metric["id"]] = {
                "column": config["column"],
                "method": method,
                "threshold": float(config["threshold"]),
                "score": float(metric["value"]),
                "score_is_p_value": "p_value" in method,
                "drifted": False,
            }
    for test in document["tests"]:
        metric_id = test["metric_config"]["metric_id"]
        if metric_id in columns:
            # Evidently's own per-column decision (p-value below, or distance at or
            # above, the threshold), the one its HTML shows
            columns[metric_id]["drifted"] = test["status"] == "FAIL"
    if share is None or not columns:
        raise MonitorError(
            "Evidently's report has no drift share or no per-column drift; is the "
            "installed evidently 0.7.x? (pip show evidently)"
        )
    return share, pd.DataFrame(list(columns.values()))


def _quality(
    scored: pd.DataFrame, scales: pd.Series
) -> tuple[dict[str, float] | None, Snapshot | None, str | None]:
    """Evidently's regression metrics on the scored pairs, scaled per series."""
    missing = [c for c in (ID_COL, TIME_COL, TARGET_COL, MEAN_COL) if c not in scored.columns]
    if missing:
        raise MonitorError(
            f"scored pairs lack column(s) {', '.join(missing)}: pass "
            "AccuracyResult.scored (realized_accuracy), which has unique_id, ds, y and mean"
        )
    scale = scored[ID_COL].astype(str).map(scales)
    pairs = pd.DataFrame(
        {
            ID_COL: scored[ID_COL].astype(str),
            TIME_COL: pd.to_datetime(scored[TIME_COL]),
            ACTUAL_SCALED: scored[TARGET_COL].astype(float) / scale,
            FORECAST_SCALED: scored[MEAN_COL].astype(float) / scale,
        }
    )
    pairs = pairs[np.isfinite(pairs[ACTUAL_SCALED]) & np.isfinite(pairs[FORECAST_SCALED])]
    if len(pairs) < MIN_SCORED_PAIRS:
        return (
            None,
            None,
            f"forecast quality left out: {len(pairs)} scored pair(s) of series with a "
            f"training scale, at least {MIN_SCORED_PAIRS} needed (served forecasts whose "
            "target time has passed and whose actual has arrived)",
        )

    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    definition = DataDefinition(
        id_column=ID_COL,
        timestamp=TIME_COL,
        numerical_columns=[ACTUAL_SCALED, FORECAST_SCALED],
        regression=[Regression(target=ACTUAL_SCALED, prediction=FORECAST_SCALED)],
    )
    # without a reference Evidently's default tests compare each metric with itself
    # (or a dummy model); they say nothing, so they are left out
    report = Report([RegressionPreset()], include_tests=False)
    with _quiet():
        snapshot = report.run(Dataset.from_pandas(pairs, data_definition=definition), None)
    quality: dict[str, float] = {"scored_pairs": float(len(pairs))}
    for metric in snapshot.dict()["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind in _QUALITY_METRICS:
            name, part = _QUALITY_METRICS[kind]
            value = metric["value"][part] if part else metric["value"]
            quality[name] = float(value)
    if "ase" in scored.columns:
        # the backtest's MASE (series first, then the mean over series, M4 style), with
        # each forecast's own scale up to its cutoff, as `tsops monitor accuracy` has it
        per_series = scored.groupby(ID_COL)["ase"].mean()
        if per_series.notna().any():
            quality["realized_mase"] = float(per_series.mean())
    return quality, snapshot, None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Evidently's statistics warn through numpy about every degenerate slice (empty
    # histogram bins, zero variance); the report is what users read, not those warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
