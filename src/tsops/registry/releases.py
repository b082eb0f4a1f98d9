"""Releases in the registry: which version a release ships, and what it was built into.

A release ships what a pull request reviewed, never a retrained model
(:func:`reviewed_version`); ``tsops release`` records the release and its image on that
version (:func:`record_release`) so that later commands find it (:func:`find_release`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tsops.registry.client import RegistryError
from tsops.registry.versions import CHALLENGER, get_version, version_for_alias, versions_hint

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

RELEASE_TAG = "tsops.release"
IMAGE_TAG = "tsops.image"


def release_lineage(
    client: MlflowClient, name: str, version: str | None = None
) -> tuple[str, dict[str, str]]:
    """The registry version to release (default: the challenger's) and its lineage."""
    if version is None:
        found = version_for_alias(client, name, CHALLENGER)
        if found is None:
            raise RegistryError(
                f"{name!r} has no challenger; register one (`tsops register {name}`) "
                "or pass --model-version"
            )
    else:
        found = get_version(client, name, version)
    lineage = {
        "git-commit": found.tags.get("tsops.git_commit", "unknown"),
        "data-md5": found.tags.get("tsops.data_dvc_md5", "unknown"),
        "mlflow-run": found.run_id or "unknown",
    }
    return str(found.version), lineage


def reviewed_version(
    client: MlflowClient, root: Path, name: str, commit: str, main: str | None = None
) -> ModelVersion:
    """The registered version a pull request's training produced for ``commit``.

    The version whose data hash and dvc.lock entries for ``name`` equal those of
    ``commit``, registered from ``commit`` or an ancestor of it (the pull request's head,
    which a merge keeps in main's history) with its gate passed. With ``main``,
    ``commit`` must be on it.
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
    same_data, found = [], []
    for version in client.search_model_versions(f"name = '{name}'"):
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
            f"{client.tracking_uri}. The pull request that changed them registers it "
            "(train.yml, step 'Register the reviewed model', needs the shared registry in "
            "vars.MLFLOW_TRACKING_URI); rerun that workflow on the pull request's head"
        )
    return max(found, key=lambda v: int(v.version))


def record_release(client: MlflowClient, name: str, version: str, release: str, image: str) -> None:
    """Mark ``version`` as ``release`` built into ``image`` (repository:tag@digest), and
    point ``challenger`` at it: staging serves the challenger."""
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    client.set_model_version_tag(name, str(version), RELEASE_TAG, release)
    client.set_model_version_tag(name, str(version), IMAGE_TAG, image)


def find_release(client: MlflowClient, name: str, release: str) -> tuple[str, str]:
    """(registry version, image ref) of a release `tsops release` recorded."""
    found = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if (v.tags or {}).get(RELEASE_TAG) == release and (v.tags or {}).get(IMAGE_TAG)
    ]
    if not found:
        raise RegistryError(
            f"the registry at {client.tracking_uri} has no release {release!r} of {name!r}: "
            f"only releases `tsops release` recorded (release.yml, after the image was "
            f"built) can be compared; {versions_hint(client, name)}"
        )
    version = max(found, key=lambda v: int(v.version))
    return str(version.version), str(version.tags[IMAGE_TAG])
