"""GitOps edits of the overlays: release, promotion, canary, A/B, rollback.

Every command computes all its edits first and writes them only when every input
checked out, each file through a temporary sibling and a rename, so bad input leaves
every file as it was. YAML is edited round-trip (ruamel.yaml): comments, key order and
quoting of the files people also edit by hand are kept.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

ENVIRONMENTS = ("local", "staging", "production")
IMAGE_NAME = "tsops-serving"
AB_COMPONENT = "../../components/ab"
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_CANARY_FIELD = "canaryTrafficPercent"
# An image repository without tag or digest (the tag is always the release), e.g.
# ghcr.io/acme/tsops-serving: an optional registry host[:port], then lowercase path parts.
_IMAGE_REPOSITORY = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
RELEASE = "tsops.io/release"
REGISTERED_MODEL = "tsops.io/registered-model"
MODEL_VERSION = "tsops.io/model-version"
# What a promotion replaced: where the traffic goes back to with canary 0 (KServe's
# previously rolled-out revision).
PREVIOUS_RELEASE = "tsops.io/previous-release"
PREVIOUS_MODEL_VERSION = "tsops.io/previous-model-version"


class GitOpsError(ValueError):
    """An edit that cannot be made; the message says why and what to run instead."""


@dataclass(frozen=True)
class Edit:
    path: Path
    text: str | None  # None deletes the file


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def _load(path: Path) -> Any:
    if not path.exists():
        raise GitOpsError(f"{path} does not exist")
    return _yaml().load(path.read_text())


def _dump(doc: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    return buffer.getvalue()


def apply(edits: list[Edit]) -> list[Path]:
    """Write every edit: all temporary files first, then the renames."""
    staged: list[tuple[Path, Path | None]] = []
    try:
        for edit in edits:
            if edit.text is None:
                staged.append((edit.path, None))
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{edit.path.name}.", dir=edit.path.parent)
            with os.fdopen(fd, "w") as fh:
                fh.write(edit.text)
            staged.append((edit.path, Path(tmp)))
        for path, tmp in staged:
            if tmp is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
    finally:
        for _, tmp in staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return [e.path for e in edits]


def overlay(root: Path, env: str) -> Path:
    if env not in ENVIRONMENTS:
        raise GitOpsError(f"unknown environment {env!r}; environments: {', '.join(ENVIRONMENTS)}")
    path = Path(root) / "manifests" / "overlays" / env
    if not (path / "kustomization.yaml").exists():
        raise GitOpsError(f"{path}/kustomization.yaml does not exist")
    return path


def _check_model(env_dir: Path, model: str) -> None:
    doc = _load(env_dir / "model-version.yaml")
    deployed = doc["metadata"]["annotations"].get(REGISTERED_MODEL)
    if deployed != model:
        raise GitOpsError(
            f"unknown model {model!r}: {env_dir.name} deploys {deployed!r}; "
            "name the model its overlay serves"
        )


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


def _image_entry(env_dir: Path) -> dict:
    path = env_dir / "kustomization.yaml"
    for image in _load(path).get("images") or []:
        if image.get("name") == IMAGE_NAME:
            return image
    raise GitOpsError(f"{path} has no images: entry named {IMAGE_NAME!r}")


def _set_image(env_dir: Path, tag: str, repository: str | None = None) -> Edit:
    """The overlay's image: ``tag`` and, if given, the repository (``newName``)."""
    path = env_dir / "kustomization.yaml"
    doc = _load(path)
    for image in doc.get("images") or []:
        if image.get("name") == IMAGE_NAME:
            image["newTag"] = tag
            if repository is not None:
                image["newName"] = check_image_repository(repository)
            return Edit(path, _dump(doc))
    raise GitOpsError(f"{path} has no images: entry named {IMAGE_NAME!r}")


@dataclass(frozen=True)
class Serving:
    """What an overlay deploys, read from its files (git's view, not the cluster's)."""

    env: str
    model: str
    release: str
    version: str  # registry version of the release the overlay pins
    canary: int | None  # canaryTrafficPercent; None when fully promoted
    previous_release: str | None = None
    previous_version: str | None = None

    @property
    def _on_previous(self) -> bool:
        # With a canary, KServe sends the rest of the traffic to the last revision rolled
        # out fully, the release this one replaced; with nothing before it, the only
        # revision takes everything.
        return self.canary is not None and bool(self.previous_version)

    @property
    def stable_release(self) -> str:
        return str(self.previous_release) if self._on_previous else self.release

    @property
    def stable_version(self) -> str:
        """The version that takes the traffic the canary does not (all of it without one)."""
        return str(self.previous_version) if self._on_previous else self.version

    def describe(self) -> str:
        text = f"{self.env} pins {self.release} (version {self.version})"
        if self.canary is None:
            return text + ", fully promoted"
        text += f" at canary {self.canary}%"
        if self._on_previous:
            text += f", the rest on {self.previous_release} (version {self.previous_version})"
        return text


def serving(root: Path, env: str) -> Serving:
    """The release ``env`` serves, its canary share and the release it replaced."""
    env_dir = overlay(root, env)
    annotations = _load(env_dir / "model-version.yaml")["metadata"]["annotations"]
    missing = [k for k in (RELEASE, REGISTERED_MODEL, MODEL_VERSION) if not annotations.get(k)]
    if missing:
        raise GitOpsError(
            f"{env_dir}/model-version.yaml has no {', '.join(missing)}; "
            "write it with `tsops release` or `tsops promote`"
        )
    canary = None
    if (env_dir / "canary.yaml").exists():
        canary = _load(env_dir / "canary.yaml")["spec"]["predictor"].get(_CANARY_FIELD)
        if canary is not None and (isinstance(canary, bool) or not isinstance(canary, int)):
            raise GitOpsError(
                f"{env_dir}/canary.yaml: {_CANARY_FIELD} is {canary!r}, not a whole number"
            )
    previous = annotations.get(PREVIOUS_MODEL_VERSION)
    return Serving(
        env=env,
        model=str(annotations[REGISTERED_MODEL]),
        release=str(annotations[RELEASE]),
        version=str(annotations[MODEL_VERSION]),
        canary=canary,
        previous_release=annotations.get(PREVIOUS_RELEASE),
        previous_version=None if previous is None else str(previous),
    )


def release_edits(
    root: Path,
    model: str,
    version: str,
    model_version: str,
    lineage: dict[str, str],
    env: str = "staging",
    image: str | None = None,
) -> list[Edit]:
    """Point ``env`` (staging) at release ``model/vX.Y.Z`` = registry version ``model_version``,
    built into ``image`` (a repository; default: the one the overlay pins)."""
    semver = parse_release(version)
    if image is not None:
        check_image_repository(image)
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    path = env_dir / "model-version.yaml"
    doc = _load(path)
    annotations = doc["metadata"]["annotations"]
    annotations[RELEASE] = f"{model}/v{semver}"
    annotations[REGISTERED_MODEL] = model
    annotations[MODEL_VERSION] = DoubleQuotedScalarString(model_version)
    for key, value in lineage.items():
        annotations[f"tsops.io/{key}"] = str(value)
    return [Edit(path, _dump(doc)), _set_image(env_dir, image_tag(model, semver), image)]


def promote_edits(
    root: Path, model: str, source: str, target: str, canary: int | None = None
) -> list[Edit]:
    """Copy the release of ``source`` to ``target``: its version file and its image (name
    and tag). The target's version file also records the release it replaces (the one
    that takes the traffic back with canary 0)."""
    if source == target:
        raise GitOpsError("--from and --to name the same environment")
    src, dst = overlay(root, source), overlay(root, target)
    _check_model(src, model)
    _check_model(dst, model)
    image = _image_entry(src)
    if not image.get("newTag"):
        raise GitOpsError(f"{src}/kustomization.yaml pins no {IMAGE_NAME} image tag")
    doc = _load(src / "model-version.yaml")
    annotations = doc["metadata"]["annotations"]
    for key in (PREVIOUS_RELEASE, PREVIOUS_MODEL_VERSION):
        annotations.pop(key, None)
    try:
        now: Serving | None = serving(root, target)
    except GitOpsError:  # the target names no release yet: nothing to go back to
        now = None
    previous: tuple[str | None, str | None] = (None, None)
    if now is not None and annotations.get(RELEASE) == now.release:
        # promoted again (e.g. another canary start): it still replaces the same release
        previous = (now.previous_release, now.previous_version)
    elif now is not None:
        previous = (now.stable_release, now.stable_version)
    if previous[1] is not None and previous[0] != annotations.get(RELEASE):
        annotations[PREVIOUS_RELEASE] = previous[0]
        annotations[PREVIOUS_MODEL_VERSION] = DoubleQuotedScalarString(previous[1])
    repository = image.get("newName")
    edits = [
        Edit(dst / "model-version.yaml", _dump(doc)),
        _set_image(dst, str(image["newTag"]), None if repository is None else str(repository)),
    ]
    if canary is not None:
        edits += canary_edits(root, model, target, canary, kustomization=edits[1])
    return edits


def check_percent(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise GitOpsError(
            f"canary percent {percent!r} is outside 0..100: 0 rolls back, 100 promotes fully"
        )
    return percent


def canary_edits(
    root: Path, model: str, env: str, percent: int, kustomization: Edit | None = None
) -> list[Edit]:
    """Set ``canaryTrafficPercent``; 100 removes the field (full promotion), 0 rolls back."""
    percent = check_percent(percent)
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    path = env_dir / "canary.yaml"
    edits: list[Edit] = []
    if path.exists():
        doc = _load(path)
    else:
        doc = _yaml().load(
            "# Share of traffic the newest revision gets (KServe, Knative mode).\n"
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
            f"metadata:\n  name: {model}\nspec:\n  predictor: {{}}\n"
        )
        kpath = env_dir / "kustomization.yaml"
        kdoc = _yaml().load(kustomization.text) if kustomization else _load(kpath)
        patches = kdoc.setdefault("patches", [])
        if not any(p.get("path") == "canary.yaml" for p in patches):
            patches.append({"path": "canary.yaml"})
        edits.append(Edit(kpath, _dump(kdoc)))
    predictor = doc["spec"]["predictor"]
    if percent == 100:
        predictor.pop(_CANARY_FIELD, None)
    else:
        predictor[_CANARY_FIELD] = percent
    edits.append(Edit(path, _dump(doc)))
    return edits


def parse_weights(text: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise GitOpsError(
                f"weights {text!r}: use name=percent pairs, e.g. current=70,candidate=30"
            )
        weights[name.strip()] = int(value)
    total = sum(weights.values())
    if total != 100:
        raise GitOpsError(f"weights {text!r} sum to {total}, not 100; e.g. current=70,candidate=30")
    return weights


def ab_edits(root: Path, model: str, env: str, weights_text: str) -> list[Edit]:
    """Switch the A/B component on in ``env`` with the Splitter weights given."""
    weights = parse_weights(weights_text)
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    graph_file = Path(root) / "manifests" / "components" / "ab" / "inferencegraph.yaml"
    graph = _load(graph_file)
    steps = graph["spec"]["nodes"]["root"]["steps"]
    arms = {s["name"] for s in steps} | {s["serviceName"] for s in steps}
    unknown = sorted(set(weights) - arms)
    if unknown:
        raise GitOpsError(
            f"unknown A/B arm {unknown}; arms: "
            + ", ".join(f"{s['name']} ({s['serviceName']})" for s in steps)
        )

    def weight(step: dict) -> int:
        return weights.get(step["name"], weights.get(step["serviceName"], 0))

    new_steps = [
        {"name": s["name"], "serviceName": s["serviceName"], "weight": weight(s)} for s in steps
    ]
    patch = {
        "apiVersion": graph["apiVersion"],
        "kind": "InferenceGraph",
        "metadata": {"name": graph["metadata"]["name"]},
        "spec": {"nodes": {"root": {"routerType": "Splitter", "steps": new_steps}}},
    }
    text = "# A/B weights of this environment (tsops ab); they sum to 100.\n" + _dump(patch)
    kpath = env_dir / "kustomization.yaml"
    kdoc = _load(kpath)
    components = kdoc.setdefault("components", [])
    if AB_COMPONENT not in components:
        components.append(AB_COMPONENT)
    patches = kdoc.setdefault("patches", [])
    if not any(p.get("path") == "ab-weights.yaml" for p in patches):
        patches.append({"path": "ab-weights.yaml"})
    return [Edit(env_dir / "ab-weights.yaml", text), Edit(kpath, _dump(kdoc))]


def rollback_edits(root: Path, model: str, env: str) -> list[Edit]:
    """Send all traffic back to the previous revision: canary 0."""
    env_dir = overlay(root, env)
    if not (env_dir / "canary.yaml").exists():
        raise GitOpsError(
            f"{env} has no canary to roll back; to serve an earlier release, "
            f"run `tsops promote` or `tsops release` with it"
        )
    return canary_edits(root, model, env, 0)
