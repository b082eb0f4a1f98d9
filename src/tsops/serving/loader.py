"""Find and load a trained tsops model: from the MLflow registry or a local directory.

A local directory is what KServe's storage initializer mounts at ``/mnt/models``
(or what ``tsops export`` writes): an MLflow model folder, optionally with a
``release.json`` saying which registered version it is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsops.core.errors import TsopsError
from tsops.core.io import read_json

RELEASE_FILE = "release.json"
_REGISTRY_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class ModelLoadError(TsopsError):
    """The model could not be found or loaded; the message says what to check."""


@dataclass
class LoadedModel:
    forecaster: Any
    spec: dict
    registered_name: str
    version: str
    source: str


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` -> (name, "3", None); ``models:/name@champion`` -> (name, None, alias)."""
    match = _REGISTRY_REF.match(reference)
    if not match:
        raise ModelLoadError(
            f"{reference!r} is not a registry reference; use models:/<name>/<version>, "
            "models:/<name>@<alias> or a local model directory"
        )
    return match["name"], match["version"], match["alias"]


def load_model(reference: str, tracking_root: Path = Path(".")) -> LoadedModel:
    """Load ``reference``: a registry reference or a local MLflow model directory."""
    if reference.startswith("models:/"):
        return _load_from_registry(reference, tracking_root)
    return load_directory(Path(reference))


def _load_from_registry(reference: str, tracking_root: Path) -> LoadedModel:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tsops.registry.store import RegistryError, client, version_for_alias

    name, version, alias = parse_reference(reference)
    try:
        c = client(tracking_root)
    except RegistryError as exc:
        raise ModelLoadError(str(exc)) from exc
    if alias:
        found = version_for_alias(c, name, alias)
        if found is None:
            raise ModelLoadError(
                f"{name!r} has no alias {alias!r}: set it with `tsops alias {name} {alias} <v>`"
            )
        version = found.version
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}")
    except MlflowException as exc:
        raise ModelLoadError(
            f"cannot download models:/{name}/{version}: {str(exc).splitlines()[0]}; "
            f"list versions with `tsops versions {name}`"
        ) from exc
    loaded = load_directory(Path(path))
    loaded.registered_name, loaded.version, loaded.source = name, str(version), reference
    return loaded


def load_directory(path: Path) -> LoadedModel:
    import mlflow.pyfunc

    if not (path / "MLmodel").exists():
        raise ModelLoadError(
            f"{path} is not an MLflow model directory (no MLmodel file); point --model at "
            "what `tsops export` wrote or at a registry reference models:/<name>/<version>"
        )
    try:
        wrapper = mlflow.pyfunc.load_model(str(path)).unwrap_python_model()
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model in {path}: {exc}") from exc
    release: dict[str, Any] = (
        read_json(path / RELEASE_FILE) if (path / RELEASE_FILE).exists() else {}
    )
    name = release.get("name") or wrapper.spec["config"]["name"]
    version = release.get("version") or os.environ.get("TSOPS_MODEL_VERSION", "unknown")
    return LoadedModel(wrapper.forecaster, wrapper.spec, name, str(version), str(path))


def export_model(reference: str, out: Path, tracking_root: Path = Path(".")) -> dict:
    """Copy a registered model into ``out`` with a ``release.json`` (for baking into an image)."""
    import shutil

    import mlflow.artifacts

    from tsops.core.io import atomic_dir, write_json
    from tsops.registry.store import client, version_for_alias

    name, version, alias = parse_reference(reference)
    c = client(tracking_root)
    if alias:
        found = version_for_alias(c, name, alias)
        if found is None:
            raise ModelLoadError(f"{name!r} has no alias {alias!r}")
        version = found.version
    model_version = c.get_model_version(name, str(version))
    release = {
        "name": name,
        "version": str(version),
        "run_id": model_version.run_id,
        "git_commit": model_version.tags.get("tsops.git_commit", "unknown"),
        "data_dvc_md5": model_version.tags.get("tsops.data_dvc_md5", "unknown"),
    }
    with atomic_dir(Path(out)) as tmp:
        src = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}")
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        write_json(release, tmp / RELEASE_FILE)
    return release
