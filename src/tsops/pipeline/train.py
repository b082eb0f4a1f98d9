"""The train stage: fit the selected forecaster on all data and save it with its spec.

``spec.json`` holds exactly what the stage depends on (dvc.yaml's train stage): the
model.yaml keys it tracks, the selection it read, and facts of the data it fitted
(``n_series``, ``cutoff``, the class of each series and their counts, whether forecasts
are kept non-negative). Serving reads its horizon, levels and frequency; the gate
re-runs a champion's candidates and rule from it.

A panel of regular series only is registered as one ``Combined``, as before classes of
series existed; with short or intermittent series, as a ``ByClass`` of one ``Combined``
per class, each fitted on its own series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd

from tsops.core.config import ModelConfig, load
from tsops.core.io import (
    MissingInputError,
    atomic_dir,
    read_json,
    read_series,
    require,
    write_json,
)
from tsops.core.paths import FORECASTER_FILE, SPEC_FILE
from tsops.core.progress import Tracker, track
from tsops.core.schema import ID_COL, TIME_COL
from tsops.forecasters import Forecaster, candidate_factories
from tsops.forecasters.combine import ByClass, Combined
from tsops.pipeline import classes as series_classes
from tsops.pipeline.classes import REGULAR
from tsops.pipeline.selection import Selection

#: the model.yaml keys the train stage tracks (dvc.yaml), as spec.json records them
TRACKED_KEYS = (
    "freq",
    "horizon",
    "season_length",
    "levels",
    "candidates",
    "serving",
    "seed",
    "nonnegative",
    "intermittent",
)


def build_forecaster(
    config: ModelConfig,
    selection: Selection,
    n_jobs: int | None = None,
    nonnegative: bool = False,
) -> Combined:
    """The registered forecaster of one class, unfitted: the selected members combined by
    the rule (``config`` as the class reads it, ``classes.class_config``)."""
    members = {name: config.candidates[name] for name in selection.members}
    factories = candidate_factories(
        members,
        freq=config.freq,
        season_length=config.season_length,
        seed=config.seed,
        n_jobs=n_jobs,
    )
    return Combined(
        {name: make() for name, make in factories.items()},
        selection.rule,
        selection.choice,
        nonnegative,
    )


def fit(
    df: pd.DataFrame,
    config: ModelConfig,
    selection: Selection,
    n_jobs: int | None = None,
    nonnegative: bool = False,
) -> Combined:
    """The registered model of a panel of one class: the selected candidates fitted on
    every observation."""
    return build_forecaster(config, selection, n_jobs, nonnegative).fit(df)


@dataclass(frozen=True)
class ClassedSelection:
    """What ``selection.json`` holds (``tsops.pipeline.backtest.selection_document``):
    each class' selection, the class of every series that is not regular, and the class
    the gate decides on."""

    selections: dict[str, Selection]
    series_class: dict[str, str]
    gated_class: str

    @classmethod
    def from_dict(cls, document: dict) -> ClassedSelection:
        # selection.json written before classes existed holds one (regular) selection
        classes = document.get("classes") or {REGULAR: document}
        return cls(
            {c: Selection.from_dict(s) for c, s in classes.items()},
            dict(document.get("series_class") or {}),
            document.get("gated_class", REGULAR),
        )

    def classes_of(self, df: pd.DataFrame) -> dict[str, str]:
        """The class of every series of ``df``."""
        ids = df[ID_COL].astype(str).unique()
        return {uid: self.series_class.get(uid, REGULAR) for uid in sorted(ids)}


def fit_classes(
    df: pd.DataFrame,
    config: ModelConfig,
    selected: ClassedSelection,
    n_jobs: int | None = None,
    nonnegative: bool = False,
) -> Forecaster:
    """The registered model: one ``Combined`` if every series is regular, else a
    ``ByClass`` of each class' selection fitted on its series."""
    classes = selected.classes_of(df)
    present = set(classes.values())
    missing = sorted(present - set(selected.selections))
    if missing:
        raise MissingInputError(
            f"selection.json has no selection for the {', '.join(missing)} series of the "
            "data: it was written for other data; run `dvc repro` (or `tsops backtest`) again"
        )
    if present == {REGULAR}:
        return fit(df, config, selected.selections[REGULAR], n_jobs, nonnegative)
    forecasters = {
        c: build_forecaster(
            series_classes.class_config(config, c), selected.selections[c], n_jobs, nonnegative
        )
        for c in series_classes.CLASSES
        if c in present
    }
    return ByClass(forecasters, classes, nonnegative).fit(df)


def spec_of(
    config: ModelConfig,
    selection: Selection,
    df: pd.DataFrame,
    classes: dict[str, str] | None = None,
    nonnegative: bool = False,
    gated_class: str = REGULAR,
) -> dict:
    """What serving and the gate need to know about a trained model, besides its weights:
    ``selection`` is the gated class' (what a champion's method is re-run from); the
    ``series_class`` of every series and the ``class_counts``; ``nonnegative`` as
    decided on the training data; and the candidates of the gated class when it is not
    the regular one."""
    tracked = config.model_dump(mode="json", include={"name", *TRACKED_KEYS})
    classes = classes or dict.fromkeys(sorted(df[ID_COL].astype(str).unique()), REGULAR)
    spec = {
        "config": tracked,
        "selection": selection.to_dict(),
        "freq": config.freq,
        "horizon": config.horizon,
        "max_horizon": config.max_horizon,
        "levels": config.levels,
        "n_series": int(df[ID_COL].nunique()),
        "cutoff": str(df[TIME_COL].max().date()),
        "nonnegative": nonnegative,
        "gated_class": gated_class,
        "class_counts": series_classes.class_counts(classes),
        "series_class": classes,
    }
    if gated_class != REGULAR:
        own = series_classes.class_candidates(config, gated_class)
        spec["gated_candidates"] = {n: c.model_dump(mode="json") for n, c in own.items()}
    return spec


def save_trained(forecaster: Forecaster, spec: dict, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        joblib.dump(forecaster, tmp / FORECASTER_FILE, compress=3)
        write_json(spec, tmp / SPEC_FILE)


def load_trained(model_dir: Path) -> tuple[Forecaster, dict]:
    model_dir = Path(model_dir)
    if not (model_dir / FORECASTER_FILE).exists():
        raise MissingInputError(
            f"no trained model in {model_dir}; run `dvc repro` (or `tsops train <model>`) first"
        )
    return joblib.load(model_dir / FORECASTER_FILE), read_json(model_dir / SPEC_FILE)


def run(root: Path, name: str, n_jobs: int | None = None) -> dict:
    """The train stage: fit the selection of ``backtest/selection.json`` (each class') on
    all of the data and write ``artifacts/<name>/model/`` (forecaster and spec)."""
    config, paths = load(root, name)
    df = read_series(paths)
    selected = ClassedSelection.from_dict(
        read_json(require(paths.selection, f"tsops backtest {name}"))
    )
    keep_positive = series_classes.nonnegative(df, config)
    # every member fits every series of its class; the step counts members that report
    # nothing (global models) once they are done
    classes = selected.classes_of(df)
    counts = series_classes.class_counts(classes)
    n_fits = sum(counts[c] * len(s.members) for c, s in selected.selections.items())
    tracker = Tracker(n_fits, f"train {name}")
    with track(tracker), tracker.step("fit", n_fits):
        forecaster = fit_classes(df, config, selected, n_jobs, keep_positive)
    gated = selected.selections[selected.gated_class]
    spec = spec_of(config, gated, df, classes, keep_positive, selected.gated_class)
    save_trained(forecaster, spec, paths.model)
    return {
        "rule": gated.rule,
        "members": gated.members,
        "cutoff": spec["cutoff"],
        "class_counts": spec["class_counts"],
        "nonnegative": keep_positive,
    }
