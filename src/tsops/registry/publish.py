"""Publish what the pipeline's stages wrote as a registered model version.

``tsops register`` computes nothing: it reads the train stage's model folder
(``spec.json``, the fitted forecaster), the evaluate stage's ``metrics.json``, plots and
tables, and the gate stage's ``gate.json``, logs them as one MLflow run, registers the
model as a new version and, when the gate passed, points an alias at it.

``gate.json`` records the sha256 of the files it judged (``inputs``, see
:func:`gate_inputs`); a model or metrics file that changed after the gate ran is refused,
so a verdict is never published with a model it was not about.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.core.errors import TsopsError
from tsops.core.io import read_json, require
from tsops.core.paths import FORECASTER_FILE, SPEC_FILE, ModelPaths
from tsops.core.schema import ID_COL
from tsops.core.verdict import gate_inputs
from tsops.registry.client import ensure_experiment
from tsops.registry.lineage import lineage_tags
from tsops.registry.versions import find_version_by_tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

MODEL_SHA_TAG = "tsops.model_sha256"
GATE_TAG = "tsops.gate"
#: the version tags counting its series per class (``tsops.series.regular``, ...); the
#: class of each series is in the run's spec.json (``series_class``)
SERIES_TAG_PREFIX = "tsops.series."
NONNEGATIVE_TAG = "tsops.nonnegative"
#: MLflow takes at most this many params per request
_PARAMS_PER_BATCH = 100


class StageOutputsError(TsopsError):
    """What the stages wrote is missing or out of date: nothing was registered."""

    headline = "nothing was registered"


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    reused: bool


@dataclass(frozen=True)
class StageOutputs:
    """One model's stage outputs, as ``tsops register`` publishes them."""

    name: str
    model_dir: Path
    spec: dict
    metrics: dict
    gate: dict
    tags: dict[str, str]  # lineage: git commit, data and model digests
    ids: list[str]
    #: files and folders logged with the run (the model is logged apart)
    artifacts: list[Path]

    @property
    def passed(self) -> bool:
        return bool(self.gate.get("passed"))


def read_stage_outputs(root: Path, name: str) -> StageOutputs:
    """Read what the stages wrote for ``name``; refuse when the gate's verdict is
    missing or was about other files (``StageOutputsError``)."""
    paths = ModelPaths(Path(root), name)
    require(paths.model / SPEC_FILE, f"tsops train {name}")
    require(paths.model / FORECASTER_FILE, f"tsops train {name}")
    require(paths.metrics, f"tsops evaluate {name}")
    gate = read_json(require(paths.gate, f"tsops gate {name}"))
    recorded = gate.get("inputs") or {}
    digests = gate_inputs(paths)
    stale = [f for f, digest in digests.items() if recorded.get(f) != digest]
    if stale:
        raise StageOutputsError(
            f"{paths.gate} was written for other files than {', '.join(stale)} of "
            f"{paths.artifacts} (they changed after the gate ran, or it recorded no inputs): "
            f"run `dvc repro` (or `tsops gate {name}`) first"
        )
    ids = pd.read_parquet(paths.data, columns=[ID_COL])[ID_COL].astype(str).unique()
    return StageOutputs(
        name=name,
        model_dir=paths.model,
        spec=read_json(paths.model / SPEC_FILE),
        metrics=read_json(paths.metrics),
        gate=gate,
        tags=lineage_tags(
            Path(root),
            paths.data,
            digests[(paths.model / FORECASTER_FILE).relative_to(paths.artifacts).as_posix()],
        ),
        ids=sorted(ids),
        artifacts=[
            paths.metrics,
            paths.gate,
            paths.plots,
            paths.tables,
            paths.models_root / name,
        ],
    )


def register_trained(
    client: MlflowClient, outputs: StageOutputs, alias: str | None = "challenger"
) -> Registered:
    """Log ``outputs`` as an MLflow run and register its model as a new version; point
    ``alias`` at it only if the gate passed.

    Idempotent: a model file already registered (same sha256) is reused, not
    registered twice. On any failure the run is marked FAILED and a version created
    by this call is deleted, so the registry never holds a half-registered model.
    """
    name = outputs.name
    existing = find_version_by_tag(client, name, MODEL_SHA_TAG, outputs.tags[MODEL_SHA_TAG])
    if existing is not None:
        if alias and outputs.passed:
            client.set_registered_model_alias(name, alias, existing.version)
        return Registered(name, str(existing.version), existing.run_id, reused=True)

    experiment_id = ensure_experiment(client, name)
    run = client.create_run(experiment_id, run_name=f"{name}-train", tags=outputs.tags)
    run_id = run.info.run_id
    version = None
    try:
        _log_run(client, run_id, outputs)
        model_id, source = _log_model(client, experiment_id, run_id, outputs)
        _ensure_registered_model(client, name)
        version = client.create_model_version(
            name,
            source=source,
            run_id=run_id,
            model_id=model_id,
            tags={
                **outputs.tags,
                **class_tags(outputs.spec),
                GATE_TAG: "passed" if outputs.passed else "failed",
                "tsops.run_id": run_id,
            },
        )
        if alias and outputs.passed:
            client.set_registered_model_alias(name, alias, version.version)
    except BaseException:
        if version is not None:
            # the original error is the one to report
            with contextlib.suppress(Exception):
                client.delete_model_version(name, version.version)
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return Registered(name, str(version.version), run_id, reused=False)


def class_tags(spec: dict) -> dict[str, str]:
    """Version tags of a trained model's classes of series: the series per class, the
    class the gate decided on, and whether forecasts are kept non-negative (a spec
    written before classes existed gives none)."""
    counts = spec.get("class_counts")
    if counts is None:
        return {}
    tags = {f"{SERIES_TAG_PREFIX}{c}": str(n) for c, n in counts.items()}
    tags[f"{SERIES_TAG_PREFIX}gated_class"] = str(spec.get("gated_class", "regular"))
    tags[NONNEGATIVE_TAG] = str(bool(spec.get("nonnegative"))).lower()
    return tags


def _log_run(client: MlflowClient, run_id: str, outputs: StageOutputs) -> None:
    """The config as params, the backtest metrics, the stage outputs as artifacts."""
    from mlflow.entities import Metric, Param

    params = [Param(k, v) for k, v in _flatten("", outputs.spec["config"], {}).items()]
    for start in range(0, len(params), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
    stamp = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(k.replace("-", "_"), float(v), stamp, 0)
            for k, v in _flatten("", outputs.metrics, {}).items()
            if _is_number(v)
        ],
    )
    for path in outputs.artifacts:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        elif path.exists():
            client.log_artifact(run_id, str(path))
    client.log_dict(run_id, outputs.spec, "spec.json")


def _log_model(
    client: MlflowClient, experiment_id: str, run_id: str, outputs: StageOutputs
) -> tuple[str, str]:
    """Write the pyfunc model folder and upload it as the run's logged model; returns
    (model id, where its files are). ``mlflow.pyfunc.log_model`` would do the same
    through MLflow's process-wide tracking URI and active run."""
    from tsops.registry.pyfunc import save_pyfunc

    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            save_pyfunc(outputs.model_dir, outputs.spec, outputs.ids, folder)
            client.log_model_artifacts(model.model_id, str(folder))
    except BaseException:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id, model.artifact_location


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)


def _flatten(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = str(value)[:500]
    return out


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
