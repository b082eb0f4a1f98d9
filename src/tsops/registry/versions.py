"""Registered versions and their aliases: find, resolve, list, point an alias.

Every function takes the ``MlflowClient`` the command built (``registry.client.connect``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.core.io import read_json
from tsops.registry.client import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"


def versions_hint(client: MlflowClient, name: str) -> str:
    """``versions: [1, 2]`` or ``no versions``, for error messages."""
    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except Exception:
        return "no versions"
    return f"versions: {versions}" if versions else "no versions"


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """Version ``version`` of ``name``; ``RegistryError`` naming the versions there are."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"the registry at {client.tracking_uri} has no version {version} of {name!r} "
            f"({versions_hint(client, name)}); pick one from `tsops versions {name}`"
        ) from exc


def version_for_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or ``None`` when the alias (or model) is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def resolve(
    client: MlflowClient, name: str, *, alias: str | None = None, version: str | None = None
) -> ModelVersion:
    """The version ``alias`` points at, or ``version`` itself (exactly one of the two):
    the one place an alias becomes a version."""
    if (alias is None) == (version is None):
        raise ValueError("resolve() takes exactly one of alias and version")
    if version is not None:
        return get_version(client, name, version)
    found = version_for_alias(client, name, alias)
    if found is None:
        raise RegistryError(
            f"{name!r} has no alias {alias!r} in the registry at {client.tracking_uri} "
            f"({versions_hint(client, name)}); set it with `tsops alias {name} {alias} <version>`"
        )
    return found


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` (promotion, or moving champion back in a rollback)."""
    get_version(client, name, version)
    client.set_registered_model_alias(name, alias, str(version))


def follow_git(client: MlflowClient, name: str, alias: str, version: str, where: str) -> str | None:
    """Point ``alias`` at the ``version`` git deploys (``where`` says where git says so).

    Returns the version the alias pointed at before (``None``: it was not set). Fails,
    moving nothing, when the registry has no such version: git then pins a model this
    registry never registered.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"{where}, but the registry at {client.tracking_uri} has no version {version} of "
            f"{name!r} ({versions_hint(client, name)}); point MLFLOW_TRACKING_URI at the "
            "registry the release was registered in. No alias was moved."
        ) from exc
    before = version_for_alias(client, name, alias)
    if before is None or str(before.version) != str(version):
        client.set_registered_model_alias(name, alias, str(version))
    return None if before is None else str(before.version)


def find_version_by_tag(client: MlflowClient, name: str, key: str, value: str):
    """The newest version of ``name`` tagged ``key=value``, or ``None``."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and tag.`{key}` = '{value}'")
    except Exception:
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def versions_table(client: MlflowClient, name: str) -> pd.DataFrame:
    """One row per registered version: aliases, gate result, lineage, creation time."""
    versions = client.search_model_versions(f"name = '{name}'")
    # a search's versions carry no aliases (MLflow fills them only for a single get);
    # the registered model lists them all
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    rows = [
        {
            "version": int(v.version),
            "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
            "run_id": v.run_id,
            "gate": v.tags.get("tsops.gate", ""),
            "git_commit": v.tags.get("tsops.git_commit", "")[:12],
            "data_md5": v.tags.get("tsops.data_dvc_md5", ""),
            "created": pd.Timestamp(v.creation_timestamp, unit="ms"),
        }
        for v in versions
    ]
    return pd.DataFrame(rows).sort_values("version") if rows else pd.DataFrame(rows)


def champion_spec(client: MlflowClient, name: str) -> tuple[str, dict] | None:
    """The champion's version and the training spec its run logged, if there is one."""
    champion = version_for_alias(client, name, CHAMPION)
    if champion is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        spec = read_json(Path(client.download_artifacts(champion.run_id, "spec.json", tmp)))
    return str(champion.version), spec
