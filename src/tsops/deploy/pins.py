"""Image pins: the ``images:`` entries of an overlay's kustomization.yaml, and image
references (``registry[:port]/name:tag@digest``) parsed in one place, :class:`Pin`.

The manifests carry placeholder images (``tsops-serving:pin-in-overlay``); each overlay
retags them with the entry of the same name. The GitOps commands write these entries
and ``tsops manifests validate`` checks them, both with the names defined here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsops.deploy.overlays import GitOpsError, load

SERVING_IMAGE = "tsops-serving"  # the release the InferenceService pins
# The stable (fully rolled-out) release, which the CronJobs run: batch forecasts follow a
# canary only once it is promoted fully, and follow a rollback.
BATCH_IMAGE = "tsops-batch"
CANDIDATE_IMAGE = "tsops-serving-candidate"  # the A/B candidate
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Environments that pin images by digest (local runs side-loaded images on kind or
# minikube, which have no registry digest) and admit only signed images.
DIGEST_ENVS = ("staging", "production")
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
# An image repository without tag or digest (the tag is always the release), e.g.
# ghcr.io/acme/tsops-serving: an optional registry host[:port], then lowercase path parts.
_IMAGE_REPOSITORY = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


@dataclass(frozen=True)
class Pin:
    """An image pinned to a release: repository, release tag, digest."""

    repository: str
    tag: str
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What kustomize renders: ``repository:tag@digest`` (the digest is what is pulled)."""
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")

    @staticmethod
    def split(ref: str) -> tuple[str, str | None, str | None]:
        """Any image reference as (repository, tag, digest), None for a missing part:
        ``registry:5000/name:tag@sha256:...``; a registry's port is not a tag."""
        rest, _, digest = ref.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            return rest[:colon], rest[colon + 1 :], digest or None
        return rest, None, digest or None

    @classmethod
    def parse(cls, ref: str) -> Pin:
        """A reference that names its tag: ``repository:tag[@digest]``."""
        repository, tag, digest = cls.split(ref)
        if tag is None:
            raise GitOpsError(f"image {ref!r} is not repository:tag[@sha256:...]")
        return cls(repository, tag, digest)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], where: Path | str) -> Pin:
        """The pin of a kustomize ``images:`` entry (``newName``, ``newTag``, ``digest``)."""
        if not entry.get("newName") or not entry.get("newTag"):
            raise GitOpsError(
                f"{where}: images entry {entry.get('name')!r} needs newName and newTag"
            )
        digest = entry.get("digest")
        return cls(
            str(entry["newName"]), str(entry["newTag"]), None if digest is None else str(digest)
        )

    def write(self, entry: Any) -> None:
        """Set a kustomize ``images:`` entry to this pin."""
        entry["newName"] = self.repository
        entry["newTag"] = self.tag
        if self.digest:
            entry["digest"] = self.digest
        else:
            entry.pop("digest", None)


def parse_release(version: str) -> str:
    match = _SEMVER.match(version)
    if not match:
        raise GitOpsError(f"release version {version!r} is not X.Y.Z (e.g. 1.2.0)")
    return ".".join(match.groups())


def image_tag(model: str, semver: str) -> str:
    return f"{model}-v{semver}"


def check_image_repository(image: str) -> str:
    if not _IMAGE_REPOSITORY.match(image):
        raise GitOpsError(
            f"image {image!r} is not an image repository without tag or digest "
            "(e.g. ghcr.io/acme/tsops-serving, lowercase): the tag is always the release, "
            "<model>-vX.Y.Z"
        )
    return image


def check_digest(digest: str) -> str:
    if not DIGEST.match(digest):
        raise GitOpsError(
            f"digest {digest!r} is not sha256:<64 hex> (the build step's digest output, e.g. "
            "docker/build-push-action's `digest`)"
        )
    return digest


def require_digest(env: str, pin: Pin) -> None:
    if env in DIGEST_ENVS and not pin.digest:
        raise GitOpsError(
            f"{env} pins images by digest: {pin.ref} has none; pass --digest sha256:... "
            "(release.yml passes the digest the build pushed)"
        )


def _find_entry(kustomization: Any, name: str) -> Any | None:
    return next((e for e in kustomization.get("images") or [] if e.get("name") == name), None)


def _no_entry(path: Path, name: str) -> GitOpsError:
    return GitOpsError(
        f"{path} has no images: entry named {name!r}; add one (see manifests/README.md)"
    )


def image_entry(kustomization: Any, path: Path, name: str) -> Any:
    """The ``images:`` entry ``name`` of a loaded kustomization (read from ``path``)."""
    entry = _find_entry(kustomization, name)
    if entry is None:
        raise _no_entry(path, name)
    return entry


def read_pin(env_dir: Path, name: str = SERVING_IMAGE) -> Pin:
    """The pin of the overlay's ``images:`` entry ``name``."""
    path = env_dir / "kustomization.yaml"
    return Pin.from_entry(image_entry(load(path), path, name), path)


def set_pins(
    kustomization: Any, path: Path, pins: Mapping[str, Pin], add_missing: bool = False
) -> None:
    """Set the ``images:`` entries named in ``pins`` of a loaded kustomization (read from
    ``path``); ``add_missing``: create absent ones, else an absent one is an error."""
    for name, pin in pins.items():
        entry = _find_entry(kustomization, name)
        if entry is None and not add_missing:
            raise _no_entry(path, name)
        if entry is None:
            entry = {"name": name}
            kustomization.setdefault("images", []).append(entry)
        pin.write(entry)
