"""The MLflow side: tracking store, training runs, registered versions and aliases.

The embedded default is a SQLite file and a local artifact folder at the repo root;
``MLFLOW_TRACKING_URI`` points everything at a tracking server instead.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from tsops.core.errors import TsopsError

ALIASES = ("champion", "challenger")
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


class RegistryError(TsopsError):
    """The registry refused or could not be reached; the message says what to do."""


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    reused: bool


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(root) / DB_FILE).resolve()}"


def artifact_location(root: Path) -> str | None:
    """Local artifact folder for the embedded store; a server decides its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(root) / ARTIFACTS_DIR).resolve().as_uri()


def client(root: Path):
    """An ``MlflowClient`` on the configured store, checked to be reachable."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _ping(c, uri)
    return c


def _ping(c, uri: str) -> None:
    @retry(
        retry=retry_if_exception_type(Exception),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def search():
        c.search_experiments(max_results=1)

    # MLflow's own HTTP client retries for minutes; a down server should fail fast
    previous = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        search()
    except Exception as exc:
        raise RegistryError(
            f"MLflow tracking store {uri} is not reachable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Start the server, fix MLFLOW_TRACKING_URI, "
            "or unset it to use the embedded SQLite store. Nothing was registered."
        ) from exc
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)


def ensure_experiment(c, name: str, root: Path) -> str:
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location(root))


def find_version_by_tag(c, name: str, key: str, value: str):
    try:
        versions = c.search_model_versions(f"name = '{name}' and tag.`{key}` = '{value}'")
    except Exception:
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def version_for_alias(c, name: str, alias: str):
    """The model version an alias points at, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` (the rollback path when moving champion back)."""
    from mlflow.exceptions import MlflowException

    c = client(root)
    try:
        c.get_model_version(name, str(version))
    except MlflowException as exc:
        known = _versions_hint(c, name)
        raise RegistryError(
            f"registered model {name!r} has no version {version} ({known}); "
            "pick a version from `tsops versions <model>`"
        ) from exc
    c.set_registered_model_alias(name, alias, str(version))


def follow_git(root: Path, name: str, alias: str, version: str, where: str) -> str | None:
    """Point ``alias`` at the ``version`` git deploys (``where`` says where git says so).

    Returns the version the alias pointed at before (``None``: it was not set). Fails,
    moving nothing, when the registry has no such version: git then pins a model this
    registry never registered.
    """
    from mlflow.exceptions import MlflowException

    c = client(root)
    try:
        c.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"{where}, but the registry at {tracking_uri(root)} has no version {version} of "
            f"{name!r} ({_versions_hint(c, name)}); point MLFLOW_TRACKING_URI at the registry "
            "the release was registered in. No alias was moved."
        ) from exc
    before = version_for_alias(c, name, alias)
    if before is None or str(before.version) != str(version):
        c.set_registered_model_alias(name, alias, str(version))
    return None if before is None else str(before.version)


def _versions_hint(c, name: str) -> str:
    try:
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'"))
    except Exception:
        return "no versions"
    return f"versions: {versions}" if versions else "no versions"


def versions_table(root: Path, name: str) -> pd.DataFrame:
    c = client(root)
    rows = []
    for v in c.search_model_versions(f"name = '{name}'"):
        rows.append(
            {
                "version": int(v.version),
                "aliases": ",".join(sorted(v.aliases)),
                "run_id": v.run_id,
                "gate": v.tags.get("tsops.gate", ""),
                "git_commit": v.tags.get("tsops.git_commit", "")[:12],
                "data_md5": v.tags.get("tsops.data_dvc_md5", ""),
                "created": pd.Timestamp(v.creation_timestamp, unit="ms"),
            }
        )
    return pd.DataFrame(rows).sort_values("version") if rows else pd.DataFrame(rows)


def _flatten(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = str(value)[:500]
    return out


def register_trained(
    root: Path,
    name: str,
    model_dir: Path,
    spec: dict,
    metrics: dict,
    gate: dict,
    tags: dict[str, str],
    artifact_paths: list[Path],
    ids: list[str],
    alias: str | None = "challenger",
) -> Registered:
    """Log the trained model as an MLflow run and register it as a new version.

    Idempotent: a model file already registered (same sha256) is reused, not
    registered twice. On any failure the run is marked FAILED and a version created
    by this call is deleted, so the registry never holds a half-registered model.
    """
    import mlflow

    from tsops.core.io import write_json
    from tsops.registry.pyfunc import log_pyfunc

    c = client(root)
    digest = tags["tsops.model_sha256"]
    existing = find_version_by_tag(c, name, "tsops.model_sha256", digest)
    if existing is not None:
        if alias and gate.get("passed"):
            c.set_registered_model_alias(name, alias, existing.version)
        return Registered(name, existing.version, existing.run_id, reused=True)

    experiment_id = ensure_experiment(c, name, root)
    version = None
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-train") as run:
        try:
            mlflow.set_tags(tags)
            mlflow.log_params(_flatten("", spec["config"], {}))
            flat_metrics = {
                k.replace("-", "_"): float(v)
                for k, v in _flatten("", metrics, {}).items()
                if _is_number(v)
            }
            mlflow.log_metrics(flat_metrics)
            for path in artifact_paths:
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=path.name)
                elif path.exists():
                    mlflow.log_artifact(str(path))
            gate_file = Path(model_dir).parent / "gate.json"
            write_json(gate, gate_file)
            mlflow.log_artifact(str(gate_file))
            mlflow.log_dict(spec, "spec.json")
            info = log_pyfunc(model_dir, spec, ids)
            version = mlflow.register_model(
                info.model_uri,
                name,
                tags={
                    **tags,
                    "tsops.gate": "passed" if gate.get("passed") else "failed",
                    "tsops.run_id": run.info.run_id,
                },
            )
            if alias and gate.get("passed"):
                c.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            if version is not None:
                # the original error is the one to report
                with contextlib.suppress(Exception):
                    c.delete_model_version(name, version.version)
            mlflow.end_run(status="FAILED")
            raise
    return Registered(name, version.version, run.info.run_id, reused=False)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def load_registered(root: Path, name: str, alias: str | None = None, version: str | None = None):
    """The pyfunc of ``models:/name@alias`` or ``models:/name/version``."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    client(root)
    ref = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    try:
        return mlflow.pyfunc.load_model(ref), ref
    except MlflowException as exc:
        raise RegistryError(
            f"cannot load {ref}: {str(exc).splitlines()[0]}. Run `tsops register {name}` "
            "first, or list versions with `tsops versions " + name + "`"
        ) from exc


def champion_spec(root: Path, name: str) -> tuple[str, dict] | None:
    """The champion's version and training spec, if the model has a champion."""
    import mlflow.artifacts

    c = client(root)
    champion = version_for_alias(c, name, "champion")
    if champion is None:
        return None
    spec = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/spec.json")
    return champion.version, spec


def release_lineage(
    root: Path, name: str, version: str | None = None
) -> tuple[str, dict[str, str]]:
    """The registry version to release (default: the challenger's) and its lineage."""
    from mlflow.exceptions import MlflowException

    c = client(root)
    if version is None:
        found = version_for_alias(c, name, "challenger")
        if found is None:
            raise RegistryError(
                f"{name!r} has no challenger; register one (`tsops register {name}`) "
                "or pass --model-version"
            )
    else:
        try:
            found = c.get_model_version(name, str(version))
        except MlflowException as exc:
            raise RegistryError(
                f"registered model {name!r} has no version {version} ({_versions_hint(c, name)})"
            ) from exc
    lineage = {
        "git-commit": found.tags.get("tsops.git_commit", "unknown"),
        "data-md5": found.tags.get("tsops.data_dvc_md5", "unknown"),
        "mlflow-run": found.run_id or "unknown",
    }
    return str(found.version), lineage


RELEASE_TAG = "tsops.release"
IMAGE_TAG = "tsops.image"


def reviewed_version(root: Path, name: str, commit: str, main: str | None = None):
    """The registered version a pull request's training produced for ``commit``.

    A release ships what was reviewed, never a retrained model: the version whose data
    hash and dvc.lock entries for ``name`` equal those of ``commit``, registered from
    ``commit`` or an ancestor of it (the pull request's head, which a merge keeps in
    main's history) with its gate passed. With ``main``, ``commit`` must be on it.
    """
    from tsops.registry.lineage import LineageError, is_ancestor, pipeline_at, resolve_commit

    try:
        sha = resolve_commit(root, commit)
        if main is not None and not is_ancestor(root, sha, resolve_commit(root, main)):
            raise RegistryError(
                f"commit {commit} ({sha[:12]}) is not on {main}: releases are cut from "
                f"commits merged to main; merge the pull request first, then tag the "
                f"merge commit"
            )
        data_md5, stages = pipeline_at(root, sha, name)
    except LineageError as exc:
        raise RegistryError(str(exc)) from exc
    if not stages:
        raise RegistryError(
            f"{sha[:12]}'s dvc.lock has no stages of {name!r}; run `dvc repro` and commit "
            "dvc.lock in the pull request that trains it"
        )
    c = client(root)
    same_data, found = [], []
    for version in c.search_model_versions(f"name = '{name}'"):
        tags = version.tags or {}
        if tags.get("tsops.data_dvc_md5") != data_md5:
            continue
        same_data.append(int(version.version))
        trained_at = tags.get("tsops.git_commit", "")
        if (
            tags.get("tsops.gate") == "passed"
            and tags.get("tsops.git_dirty") != "true"
            and trained_at
            and is_ancestor(root, trained_at, sha)
            and pipeline_at(root, trained_at, name)[1] == stages
        ):
            found.append(version)
    if not found:
        raise RegistryError(
            f"no registered version of {name!r} was trained from {sha[:12]}'s data "
            f"(data.dvc md5 {data_md5}) and pipeline (dvc.lock) with its gate passed "
            f"(versions with this data: {sorted(same_data) or 'none'}) in "
            f"{tracking_uri(root)}. The pull request that changed them registers it "
            "(train.yml, step 'Register the reviewed model', needs the shared registry in "
            "vars.MLFLOW_TRACKING_URI); rerun that workflow on the pull request's head"
        )
    return max(found, key=lambda v: int(v.version))


def record_release(root: Path, name: str, version: str, release: str, image: str) -> None:
    """Mark ``version`` as ``release`` built into ``image`` (repository:tag@digest), and
    point ``challenger`` at it: staging serves the challenger."""
    # one client: the version was looked up already (release_lineage)
    c = client(root)
    c.set_registered_model_alias(name, "challenger", str(version))
    c.set_model_version_tag(name, str(version), RELEASE_TAG, release)
    c.set_model_version_tag(name, str(version), IMAGE_TAG, image)


def find_release(root: Path, name: str, release: str) -> tuple[str, str]:
    """(registry version, image ref) of a release `tsops release` recorded."""
    c = client(root)
    found = [
        v
        for v in c.search_model_versions(f"name = '{name}'")
        if (v.tags or {}).get(RELEASE_TAG) == release and (v.tags or {}).get(IMAGE_TAG)
    ]
    if not found:
        raise RegistryError(
            f"the registry at {tracking_uri(root)} has no release {release!r} of {name!r}: "
            f"only releases `tsops release` recorded (release.yml, after the image was "
            f"built) can be compared; {_versions_hint(c, name)}"
        )
    version = max(found, key=lambda v: int(v.version))
    return str(version.version), str(version.tags[IMAGE_TAG])
