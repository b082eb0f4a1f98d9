"""The pipeline steps with their file I/O: what each ``tsops`` command runs.

Each function reads its inputs from the paths in ``ModelPaths``, calls the pure
functions of the package, and writes its outputs atomically, so a failing step
leaves the previous outputs as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tsops.core.config import ModelConfig, load_model_config
from tsops.core.io import atomic_dir, read_frame, read_json, write_json, write_parquet
from tsops.core.paths import ModelPaths
from tsops.core.progress import Tracker, track
from tsops.core.schema import ID_COL, TIME_COL
from tsops.pipeline.gate import GateResult, evaluate_gate
from tsops.pipeline.ingest import load_source
from tsops.pipeline.validate import check_frame

# The forecasting modules (statsmodels, scikit-learn, matplotlib) are imported by the
# steps that use them: importing them costs ~4 s, and every `tsops ingest`, `validate`,
# `gate` or `register` process (each DVC stage, each workflow step) paid it for nothing.

Progress = Callable[[str], None] | None


def load(root: Path, name: str) -> tuple[ModelConfig, ModelPaths]:
    paths = ModelPaths(Path(root), name)
    return load_model_config(paths.models_root, name), paths


def ingest(
    root: Path,
    name: str,
    source_path: Path | None = None,
    id_col: str | None = None,
    time_col: str | None = None,
    target_col: str | None = None,
    fill: str | None = None,
    out: Path | None = None,
) -> dict:
    """Read the model's source (or ``source_path``), validate, write ``data/<name>/``.

    Nothing is written when validation fails.
    """
    config, paths = load(root, name)
    source = config.source
    if source_path is not None:
        source = source.model_copy(update={"kind": "file", "path": str(source_path)})
    mapping = {
        "id_col": id_col or source.id_col,
        "time_col": time_col or source.time_col,
        "target_col": target_col or source.target_col,
    }
    raw = load_source(source, config.freq, Path(root))
    df = check_frame(
        raw,
        freq=config.freq,
        min_length=config.min_length,
        fill=fill or config.fill,
        **mapping,
    )
    target = out or paths.data
    write_parquet(df, target)
    return summary(df) | {"path": str(target)}


def summary(df: pd.DataFrame) -> dict:
    lengths = df.groupby(ID_COL).size()
    return {
        "n_series": int(lengths.size),
        "n_observations": len(df),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "start": str(df[TIME_COL].min().date()),
        "end": str(df[TIME_COL].max().date()),
    }


def read_data(paths: ModelPaths, config: ModelConfig, data: Path | None = None) -> pd.DataFrame:
    path = data or paths.data
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `tsops ingest {paths.name}` (or `dvc pull`) first"
        )
    return check_frame(
        read_frame(path), freq=config.freq, min_length=config.min_length, fill=config.fill
    )


def validate(root: Path, name: str, data: Path | None = None) -> dict:
    config, paths = load(root, name)
    report = summary(read_data(paths, config, data)) | {"valid": True}
    write_json(report, paths.validation)
    return report


def backtest(root: Path, name: str, n_jobs: int | None = None, progress: Progress = None) -> dict:
    """Backtest, select and write ``artifacts/<name>/backtest/``.

    Returns the selection (``rule``, ``members``), the wall ``seconds`` and, per
    candidate, the series fitted (windows x series), the seconds spent fitting and
    forecasting them, the rate and the backtest sMAPE and MASE (``candidates``).
    """
    from tsops.core.metrics import MODEL_COL
    from tsops.pipeline.backtest import run_backtest
    from tsops.pipeline.evaluate import score
    from tsops.pipeline.selection import select, with_rules

    config, paths = load(root, name)
    df = read_data(paths, config)
    tracker = Tracker(description=f"backtest {name}")
    cv, scales = run_backtest(df, config, n_jobs=n_jobs, on_progress=progress, tracker=tracker)
    selection = select(cv, scales, config)
    overall = score(cv, scales, config.levels)["overall"].set_index(MODEL_COL)
    cv = with_rules(cv, scales, config)
    with atomic_dir(paths.backtest) as tmp:
        write_parquet(cv, tmp / "cv.parquet")
        write_parquet(scales, tmp / "scales.parquet")
        write_json(selection.to_dict(), tmp / "selection.json")
    return {
        "rule": selection.rule,
        "members": selection.members,
        "seconds": round(tracker.elapsed, 3),
        "candidates": candidate_summary(tracker, overall),
    }


def candidate_summary(tracker: Tracker, overall: pd.DataFrame) -> dict[str, dict]:
    """Per candidate: series fitted, seconds, series/s, and backtest sMAPE / MASE."""
    out = {}
    for name, stats in tracker.steps.items():
        row = overall.loc[name] if name in overall.index else None
        rate = stats.rate
        out[name] = {
            "series": stats.items,
            "seconds": round(stats.seconds, 3),
            "series_per_s": round(rate, 2) if rate is not None else None,
            "smape": None if row is None else round(float(row["smape"]), 4),
            "mase": None if row is None else round(float(row["mase"]), 4),
        }
    return out


def train(root: Path, name: str, n_jobs: int | None = None) -> dict:
    from tsops.pipeline.selection import Selection
    from tsops.pipeline.train import save_trained, spec_of
    from tsops.pipeline.train import train as fit_selected

    config, paths = load(root, name)
    df = read_data(paths, config)
    selection = Selection.from_dict(read_json(paths.backtest / "selection.json"))
    # every member fits every series; the step counts members that report nothing (global
    # models) once they are done
    n_fits = df[ID_COL].nunique() * len(selection.members)
    tracker = Tracker(n_fits, f"train {name}")
    with track(tracker), tracker.step("fit", n_fits):
        forecaster = fit_selected(df, config, selection, n_jobs=n_jobs)
    spec = spec_of(config, selection, df)
    save_trained(forecaster, spec, paths.model)
    return {"rule": selection.rule, "members": selection.members, "cutoff": spec["cutoff"]}


def evaluate_step(root: Path, name: str) -> dict:
    from tsops.pipeline.evaluate import evaluate, score

    config, paths = load(root, name)
    df = read_data(paths, config)
    cv = pd.read_parquet(paths.backtest / "cv.parquet")
    scales = pd.read_parquet(paths.backtest / "scales.parquet")
    document = evaluate(cv, scales, df, config, paths.metrics, paths.plots)
    scores = score(cv, scales, config.levels)
    with atomic_dir(paths.artifacts / "tables") as tmp:
        scores["per_series"].to_csv(tmp / "per_series.csv", index=False, float_format="%.6g")
        scores["per_horizon"].to_csv(tmp / "per_horizon.csv", index=False, float_format="%.6g")
        scores["overall"].to_csv(tmp / "overall.csv", index=False, float_format="%.6g")
    return document


def champion_metrics(root: Path, name: str, df: pd.DataFrame) -> tuple[str, dict] | None:
    """The champion's method backtested on the same windows of today's data."""
    from tsops.pipeline.backtest import run_backtest
    from tsops.pipeline.evaluate import score
    from tsops.pipeline.selection import SELECTED, with_rules
    from tsops.registry.store import champion_spec

    found = champion_spec(root, name)
    if found is None:
        return None
    version, spec = found
    champion_config = ModelConfig.model_validate(spec["config"])
    cv, scales = run_backtest(df, champion_config)
    cv = with_rules(cv, scales, champion_config)
    overall = score(cv, scales, champion_config.levels)["overall"].set_index("model")
    return version, overall.loc[SELECTED].to_dict()


def gate(root: Path, name: str, against_champion: bool = True) -> GateResult:
    config, paths = load(root, name)
    metrics = read_json(paths.metrics)
    champion = None
    if against_champion:
        champion = champion_metrics(root, name, read_data(paths, config))
    result = evaluate_gate(
        metrics["selected"],
        metrics["baseline"],
        config.gate,
        config.levels,
        champion=champion[1] if champion else None,
        champion_version=champion[0] if champion else None,
    )
    return result


def register(root: Path, name: str, alias: str | None = "challenger"):
    from tsops.pipeline.train import FORECASTER_FILE, SPEC_FILE
    from tsops.registry.lineage import lineage_tags
    from tsops.registry.store import register_trained

    _, paths = load(root, name)
    spec = read_json(paths.model / SPEC_FILE)
    result = gate(root, name)
    tags = lineage_tags(Path(root), paths.data, paths.model / FORECASTER_FILE)
    ids = sorted(pd.read_parquet(paths.data, columns=[ID_COL])[ID_COL].unique())
    registered = register_trained(
        Path(root),
        name,
        paths.model,
        spec,
        read_json(paths.metrics),
        result.to_dict(),
        tags,
        [paths.metrics, paths.plots, paths.artifacts / "tables", paths.models_root / name],
        list(ids),
        alias=alias,
    )
    return registered, result
