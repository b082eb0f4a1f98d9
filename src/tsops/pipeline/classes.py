"""Classes of series: each series of a panel is ``regular``, ``short`` or ``intermittent``,
and each class is backtested, selected, scored and gated apart.

- ``intermittent``: many zero periods (``tsops.forecasters.intermittent.is_intermittent``
  with model.yaml's ``intermittent`` thresholds); candidates from
  ``intermittent.candidates`` (default: Croston SBA, TSB, ADIDA, IMAPA), its own rule and
  metric (RMSSE by default, on a lag-1 scale as in M5). Wins over ``short``: a new
  product that sold twice in ten weeks is intermittent demand, whatever its length.
- ``short``: fewer observations than the regular backtest needs (``config.min_length``:
  two seasons, at least 8, plus the horizon). Forecast by ``ShortSeries`` (the methods its
  length allows) and backtested on the windows it has, with a shorter least training part
  (``config.short_min_train_length``).
- ``regular``: the others, on exactly the path every series took before classes existed.

Every class is compared with model.yaml's baseline. The gate decides on the regular class
(``gated_class``), so a better score on the short or intermittent series cannot hide a
regression of the main model; a panel without regular series is gated on its
intermittent, else its short class. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from tsops.core.config import CandidateConfig, ModelConfig, SelectionConfig
from tsops.core.metrics import CLASS_COL, CLASSES, INTERMITTENT, REGULAR, SHORT
from tsops.core.schema import ID_COL, MEAN_COL, TARGET_COL, interval_columns

__all__ = [
    "CLASSES",
    "CLASS_COL",
    "INTERMITTENT",
    "REGULAR",
    "SHORT",
    "SHORT_CANDIDATE",
    "class_config",
    "class_counts",
    "class_frames",
    "classify",
    "clip_at_zero",
    "gated_class",
    "min_train_length",
    "nonnegative",
    "scale_season",
]

#: the short class' candidate beside the baseline: the methods each series' length allows
SHORT_CANDIDATE = "short"
#: which class the gate decides on, in order of preference among the classes present
GATE_PREFERENCE = (REGULAR, INTERMITTENT, SHORT)


def classify(df: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """The class of every series of ``df`` (a Series: ``unique_id`` -> class, sorted)."""
    from tsops.forecasters.intermittent import is_intermittent

    settings = config.intermittent
    classes = {}
    for uid, y in df.groupby(ID_COL, sort=True)[TARGET_COL]:
        values = y.to_numpy(dtype=float)
        if settings.detect and is_intermittent(
            values, min_zero_share=settings.min_zero_share, min_adi=settings.min_adi
        ):
            classes[str(uid)] = INTERMITTENT
        elif len(values) < config.min_length:
            classes[str(uid)] = SHORT
        else:
            classes[str(uid)] = REGULAR
    return pd.Series(classes, name=CLASS_COL, dtype=object).rename_axis(ID_COL)


def class_counts(classes: pd.Series | Mapping[str, str]) -> dict[str, int]:
    """Series per class, every class listed (zero when absent), in ``CLASSES`` order."""
    values = list(classes.values()) if isinstance(classes, Mapping) else list(classes)
    return {c: values.count(c) for c in CLASSES}


def class_frames(df: pd.DataFrame, classes: pd.Series) -> dict[str, pd.DataFrame]:
    """The rows of each class present, in ``CLASSES`` order (the regular class first)."""
    labels = df[ID_COL].astype(str).map(classes)
    return {c: df[labels == c] for c in CLASSES if (labels == c).any()}


def gated_class(present: list[str] | set[str] | Mapping[str, object]) -> str:
    """The class the gate decides on: regular when there is any (see the module)."""
    for c in GATE_PREFERENCE:
        if c in present:
            return c
    raise ValueError("no series in any class: nothing to gate")


def nonnegative(df: pd.DataFrame, config: ModelConfig) -> bool:
    """Whether forecasts are kept at or above zero: model.yaml's ``nonnegative``, or, for
    ``auto``, whether the training data has no negative value."""
    if config.nonnegative == "auto":
        return not bool((df[TARGET_COL] < 0).any())
    return bool(config.nonnegative)


def class_candidates(config: ModelConfig, series_class: str) -> dict[str, CandidateConfig]:
    """The candidates of a class: the regular ones from model.yaml; for the others the
    baseline first (each class is compared with it), then the class' own."""
    if series_class == REGULAR:
        return dict(config.candidates)
    if series_class == SHORT:
        own = {SHORT_CANDIDATE: CandidateConfig(kind="short")}
    elif series_class == INTERMITTENT:
        own = config.intermittent.candidates
        if own is None:
            from tsops.forecasters.intermittent import DEFAULT_CANDIDATES

            own = {n: CandidateConfig.model_validate(c) for n, c in DEFAULT_CANDIDATES.items()}
    else:
        raise ValueError(f"unknown series class {series_class!r}; classes: {CLASSES}")
    baseline = config.baseline
    return {baseline: config.candidates[baseline]} | {n: c for n, c in own.items() if n != baseline}


def class_config(config: ModelConfig, series_class: str) -> ModelConfig:
    """``config`` as the backtest, selection and training of one class read it: the class'
    candidates, rule and metric; the regular class' is ``config`` itself."""
    if series_class == REGULAR:
        return config
    if series_class == SHORT:
        # one method per series (the median of what its length allows) beside the baseline
        selection = SelectionConfig(rule="median_ensemble", metric=config.selection.metric)
    else:
        settings = config.intermittent
        selection = SelectionConfig(rule=settings.rule, metric=settings.metric)
    return config.model_copy(
        update={"candidates": class_candidates(config, series_class), "selection": selection}
    )


def min_train_length(config: ModelConfig, series_class: str) -> int:
    """Shortest training part a backtest window of the class fits on."""
    return config.min_train_length if series_class == REGULAR else config.short_min_train_length


def scale_season(config: ModelConfig, series_class: str) -> int:
    """Season of the naive forecast scaled metrics divide by: lag 1 for intermittent
    series (as M5 scaled its intermittent sales), the model's season otherwise."""
    return 1 if series_class == INTERMITTENT else config.season_length


def clip_at_zero(frame: pd.DataFrame, levels: list[float], rows: pd.Series | None = None):
    """``frame`` with the point forecast and interval bounds of ``rows`` (all rows by
    default) raised to zero where they were below it."""
    columns = [MEAN_COL, *interval_columns(levels)]
    out = frame.copy()
    if rows is None:
        out[columns] = out[columns].clip(lower=0.0)
    else:
        out.loc[rows, columns] = out.loc[rows, columns].clip(lower=0.0)
    return out
