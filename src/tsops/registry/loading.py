"""Find and load a trained tsops model: by registry reference or from a local directory.

A registry reference is ``models:/<name>/<version>`` or ``models:/<name>@<alias>``; it is
resolved to one version (``versions.resolve``) and that version's files are downloaded
through the client the command built, never through MLflow's process-wide URI. A local
directory is what KServe's storage initializer mounts at ``/mnt/models`` (or what
``tsops export`` writes): an MLflow model folder, optionally with a ``release.json``
saying which registered version it is.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.core.errors import TsopsError
from tsops.core.io import atomic_dir, read_json, write_json
from tsops.registry.client import RegistryError, connect
from tsops.registry.versions import resolve

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

RELEASE_FILE = "release.json"
_REGISTRY_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class ModelLoadError(TsopsError):
    """The model could not be found or loaded; the message says what to check."""


@dataclass(frozen=True)
class Reference:
    """A parsed ``models:/`` reference: a version or an alias of a registered model."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


@dataclass
class LoadedModel:
    forecaster: Any
    spec: dict
    registered_name: str
    version: str
    source: str


def is_reference(reference: str) -> bool:
    """Whether ``reference`` names the registry (else it is a local directory)."""
    return reference.startswith("models:/")


def parse_reference(reference: str) -> Reference:
    """``models:/name/3`` -> version 3 of name; ``models:/name@champion`` -> its alias."""
    match = _REGISTRY_REF.match(reference)
    if not match:
        raise ModelLoadError(
            f"{reference!r} is not a registry reference; use models:/<name>/<version>, "
            "models:/<name>@<alias> or a local model directory"
        )
    return Reference(match["name"], match["version"], match["alias"])


def registry_for(
    references: list[str], root: Path, configured: str | None = None
) -> MlflowClient | None:
    """A client (``connect``) if any of ``references`` names the registry, else ``None``:
    a server on local directories needs no tracking store."""
    return connect(root, configured) if any(is_reference(r) for r in references) else None


def resolve_reference(client: MlflowClient, reference: str | Reference) -> ModelVersion:
    """The registered version ``reference`` names; ``ModelLoadError`` saying what exists."""
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    try:
        return resolve(client, ref.name, alias=ref.alias, version=ref.version)
    except RegistryError as exc:
        raise ModelLoadError(str(exc)) from exc


def download(client: MlflowClient, version: ModelVersion, dst: Path | None = None) -> Path:
    """The MLflow model folder of ``version`` on the local disk (a local store's own
    folder when ``dst`` is ``None``, else a copy in ``dst``)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    name = version.name
    try:
        uri = client.get_model_version_download_uri(name, str(version.version))
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=None if dst is None else str(dst),
            tracking_uri=client.tracking_uri,
            registry_uri=client.tracking_uri,
        )
    except MlflowException as exc:
        raise ModelLoadError(
            f"cannot download models:/{name}/{version.version} from {client.tracking_uri}: "
            f"{str(exc).splitlines()[0]}; list versions with `tsops versions {name}`"
        ) from exc
    return Path(path)


def load_model(
    reference: str,
    client: MlflowClient | None = None,
    *,
    default_version: str | None = None,
) -> LoadedModel:
    """Load ``reference``: a registry reference (through ``client``) or a local MLflow
    model directory (whose version is its release.json's, else ``default_version``)."""
    if not is_reference(reference):
        return load_directory(Path(reference), default_version=default_version)
    if client is None:
        raise ModelLoadError(f"{reference} names the registry, but no registry was connected")
    found = resolve_reference(client, reference)
    loaded = load_directory(download(client, found))
    loaded.registered_name, loaded.version, loaded.source = (
        found.name,
        str(found.version),
        reference,
    )
    return loaded


def load_pyfunc(client: MlflowClient, reference: str):
    """The MLflow pyfunc of ``reference`` (what ``mlflow models serve`` would run)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(download(client, resolve_reference(client, reference))))


def load_directory(path: Path, *, default_version: str | None = None) -> LoadedModel:
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
    version = release.get("version") or default_version or "unknown"
    return LoadedModel(wrapper.forecaster, wrapper.spec, name, str(version), str(path))


def export_model(client: MlflowClient, reference: str, out: Path) -> dict:
    """Copy a registered model into ``out`` with a ``release.json`` (for baking into an image)."""
    found = resolve_reference(client, reference)
    release = {
        "name": found.name,
        "version": str(found.version),
        "run_id": found.run_id,
        "git_commit": found.tags.get("tsops.git_commit", "unknown"),
        "data_dvc_md5": found.tags.get("tsops.data_dvc_md5", "unknown"),
    }
    with tempfile.TemporaryDirectory() as downloaded, atomic_dir(Path(out)) as tmp:
        shutil.copytree(download(client, found, Path(downloaded)), tmp, dirs_exist_ok=True)
        write_json(release, tmp / RELEASE_FILE)
    return release
