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

from tsops.core.errors import TsopsError

ENVIRONMENTS = ("local", "staging", "production")
IMAGE_NAME = "tsops-serving"  # the release the InferenceService pins
# The stable (fully rolled-out) release, which the CronJobs run: batch forecasts follow a
# canary only once it is promoted fully, and follow a rollback.
BATCH_IMAGE_NAME = "tsops-batch"
CANDIDATE_IMAGE_NAME = "tsops-serving-candidate"  # the A/B candidate
AB_COMPONENT = "../../components/ab"
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Environments that pin images by digest (local runs side-loaded images on kind or
# minikube, which have no registry digest) and admit only signed images.
DIGEST_ENVS = ("staging", "production")
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
PREVIOUS_IMAGE = "tsops.io/previous-image"  # repository:tag@digest, for a rollback
ROLLED_BACK_FROM = "tsops.io/rolled-back-from"


class GitOpsError(TsopsError, ValueError):
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


@dataclass(frozen=True)
class Pin:
    """An image pin of an overlay's ``images:`` entry: repository, release tag, digest."""

    repository: str
    tag: str
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What kustomize renders: ``repository:tag@digest`` (the digest is what is pulled)."""
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")

    @classmethod
    def parse(cls, ref: str) -> Pin:
        rest, _, digest = ref.partition("@")
        repository, sep, tag = rest.rpartition(":")
        if not sep or "/" in tag:
            raise GitOpsError(f"image {ref!r} is not repository:tag[@sha256:...]")
        return cls(repository, tag, digest or None)


def check_digest(digest: str) -> str:
    if not DIGEST.match(digest):
        raise GitOpsError(
            f"digest {digest!r} is not sha256:<64 hex> (the build step's digest output, e.g. "
            "docker/build-push-action's `digest`)"
        )
    return digest


def _image_entry(doc: Any, path: Path, name: str) -> Any:
    for image in doc.get("images") or []:
        if image.get("name") == name:
            return image
    raise GitOpsError(
        f"{path} has no images: entry named {name!r}; add one (see manifests/README.md)"
    )


def _pin(env_dir: Path, name: str = IMAGE_NAME) -> Pin:
    path = env_dir / "kustomization.yaml"
    image = _image_entry(_load(path), path, name)
    if not image.get("newName") or not image.get("newTag"):
        raise GitOpsError(f"{path}: images entry {name!r} needs newName and newTag")
    digest = image.get("digest")
    return Pin(str(image["newName"]), str(image["newTag"]), None if digest is None else str(digest))


def _write_pin(image: Any, pin: Pin) -> None:
    image["newName"] = pin.repository
    image["newTag"] = pin.tag
    if pin.digest:
        image["digest"] = pin.digest
    else:
        image.pop("digest", None)


def _kustomization_edit(env_dir: Path, pins: dict[str, Pin], add_missing: bool = False) -> Edit:
    """Set the ``images:`` entries named in ``pins`` (``add_missing``: create absent ones)."""
    path = env_dir / "kustomization.yaml"
    doc = _load(path)
    for name, pin in pins.items():
        try:
            image = _image_entry(doc, path, name)
        except GitOpsError:
            if not add_missing:
                raise
            image = {"name": name}
            doc.setdefault("images", []).append(image)
        _write_pin(image, pin)
    return Edit(path, _dump(doc))


def _needs_digest(env: str, pin: Pin) -> None:
    if env in DIGEST_ENVS and not pin.digest:
        raise GitOpsError(
            f"{env} pins images by digest: {pin.ref} has none; pass --digest sha256:... "
            "(release.yml passes the digest the build pushed)"
        )


@dataclass(frozen=True)
class Serving:
    """What an overlay deploys, read from its files: git's view, which Argo CD applies
    (git owns canaryTrafficPercent, see manifests/README.md)."""

    env: str
    model: str
    release: str
    version: str  # registry version of the release the InferenceService pins
    canary: int | None  # canaryTrafficPercent; None when fully promoted
    image: Pin | None = None  # the InferenceService's pin
    batch_image: Pin | None = None  # the CronJobs' pin: the stable release
    previous_release: str | None = None
    previous_version: str | None = None
    previous_image: str | None = None

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


def _canary_value(env_dir: Path) -> int | None:
    if not (env_dir / "canary.yaml").exists():
        return None
    canary = _load(env_dir / "canary.yaml")["spec"]["predictor"].get(_CANARY_FIELD)
    if canary is not None and (isinstance(canary, bool) or not isinstance(canary, int)):
        raise GitOpsError(
            f"{env_dir}/canary.yaml: {_CANARY_FIELD} is {canary!r}, not a whole number"
        )
    return canary


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
    previous = annotations.get(PREVIOUS_MODEL_VERSION)
    pins = {}
    for name in (IMAGE_NAME, BATCH_IMAGE_NAME):
        try:
            pins[name] = _pin(env_dir, name)
        except GitOpsError:
            pins[name] = None
    return Serving(
        env=env,
        model=str(annotations[REGISTERED_MODEL]),
        release=str(annotations[RELEASE]),
        version=str(annotations[MODEL_VERSION]),
        canary=_canary_value(env_dir),
        image=pins[IMAGE_NAME],
        batch_image=pins[BATCH_IMAGE_NAME],
        previous_release=annotations.get(PREVIOUS_RELEASE),
        previous_version=None if previous is None else str(previous),
        previous_image=annotations.get(PREVIOUS_IMAGE),
    )


def release_pin(
    root: Path,
    model: str,
    version: str,
    env: str = "staging",
    image: str | None = None,
    digest: str | None = None,
) -> Pin:
    """The image pin of release ``model/vX.Y.Z``: ``image`` (default: the repository
    ``env`` pins), tag ``<model>-vX.Y.Z`` and ``digest`` (required outside local)."""
    semver = parse_release(version)
    if image is not None:
        check_image_repository(image)
    if digest is not None:
        check_digest(digest)
    pin = Pin(image or _pin(overlay(root, env)).repository, image_tag(model, semver), digest)
    _needs_digest(env, pin)
    return pin


def release_edits(
    root: Path,
    model: str,
    version: str,
    model_version: str,
    lineage: dict[str, str],
    env: str = "staging",
    image: str | None = None,
    digest: str | None = None,
) -> list[Edit]:
    """Point ``env`` (staging) at release ``model/vX.Y.Z`` = registry version ``model_version``,
    built into ``image`` (a repository; default: the one the overlay pins) with ``digest``.

    A release replaces what ``env`` serves at once (no canary: that is promotion's), so
    the InferenceService and the CronJobs both move to it."""
    semver = parse_release(version)
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    pin = release_pin(root, model, version, env=env, image=image, digest=digest)
    if _canary_value(env_dir) is not None:
        raise GitOpsError(
            f"{env} has a canary (canary.yaml): releases go to an environment without one; "
            "move a release into a canary environment with `tsops promote --canary N`"
        )
    path = env_dir / "model-version.yaml"
    doc = _load(path)
    annotations = doc["metadata"]["annotations"]
    annotations[RELEASE] = f"{model}/v{semver}"
    annotations[REGISTERED_MODEL] = model
    annotations[MODEL_VERSION] = DoubleQuotedScalarString(model_version)
    for key in (PREVIOUS_RELEASE, PREVIOUS_MODEL_VERSION, PREVIOUS_IMAGE):
        annotations.pop(key, None)
    for key, value in lineage.items():
        annotations[f"tsops.io/{key}"] = str(value)
    kustomization = _kustomization_edit(env_dir, {IMAGE_NAME: pin, BATCH_IMAGE_NAME: pin})
    return [Edit(path, _dump(doc)), kustomization]


def promote_edits(
    root: Path, model: str, source: str, target: str, canary: int | None = None
) -> list[Edit]:
    """Copy the release of ``source`` to ``target``: its version file and its image pin
    (repository, tag and digest). Without ``canary`` the release takes all the traffic at
    once (any canary share of ``target`` is removed); with it, the release that served
    until now keeps the rest (KServe's last rolled-out revision) and the CronJobs stay on
    it. The target's version file records the release it replaces, for a rollback."""
    if source == target:
        raise GitOpsError("--from and --to name the same environment")
    if canary is not None:
        check_percent(canary)
    src, dst = overlay(root, source), overlay(root, target)
    _check_model(src, model)
    _check_model(dst, model)
    pin = _pin(src)
    _needs_digest(target, pin)
    doc = _load(src / "model-version.yaml")
    annotations = doc["metadata"]["annotations"]
    for key in (PREVIOUS_RELEASE, PREVIOUS_MODEL_VERSION, PREVIOUS_IMAGE):
        annotations.pop(key, None)
    try:
        now: Serving | None = serving(root, target)
    except GitOpsError:  # the target names no release yet: nothing to go back to
        now = None
    previous: tuple[str | None, str | None, str | None] = (None, None, None)
    if now is not None and annotations.get(RELEASE) == now.release:
        # promoted again (e.g. another canary start): it still replaces the same release
        previous = (now.previous_release, now.previous_version, now.previous_image)
    elif now is not None:
        # the stable release is what the CronJobs run (tsops-batch)
        stable_pin = now.batch_image or now.image
        previous = (now.stable_release, now.stable_version, stable_pin and stable_pin.ref)
    if previous[1] is not None and previous[0] != annotations.get(RELEASE):
        annotations[PREVIOUS_RELEASE] = previous[0]
        annotations[PREVIOUS_MODEL_VERSION] = DoubleQuotedScalarString(previous[1])
        if previous[2]:
            annotations[PREVIOUS_IMAGE] = previous[2]
    pins = {IMAGE_NAME: pin}
    if canary is None or canary == 100:
        pins[BATCH_IMAGE_NAME] = pin  # fully promoted at once: batch follows
    edits = [Edit(dst / "model-version.yaml", _dump(doc)), _kustomization_edit(dst, pins)]
    if canary is not None and canary != 100:
        edits += _canary_field_edits(dst, model, canary, kustomization=edits[1])
    elif (dst / "canary.yaml").exists():
        edits += _canary_field_edits(dst, model, None)
    return edits


def check_percent(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise GitOpsError(
            f"canary percent {percent!r} is outside 0..100: 0 rolls back, 100 promotes fully"
        )
    return percent


def _canary_field_edits(
    env_dir: Path, model: str, percent: int | None, kustomization: Edit | None = None
) -> list[Edit]:
    """canary.yaml with ``canaryTrafficPercent`` set (None removes the field), and the
    overlay's kustomization.yaml listing it when it did not exist yet."""
    path = env_dir / "canary.yaml"
    edits: list[Edit] = []
    if path.exists():
        doc = _load(path)
    else:
        doc = _yaml().load(
            "# Share of traffic the newest revision gets (KServe, Knative mode); git owns it.\n"
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
    if percent is None:
        predictor.pop(_CANARY_FIELD, None)
    else:
        predictor[_CANARY_FIELD] = percent
    edits.append(Edit(path, _dump(doc)))
    return edits


def canary_edits(root: Path, model: str, env: str, percent: int) -> list[Edit]:
    """Set ``canaryTrafficPercent`` of an unfinished canary; 100 finishes it (the field is
    removed and the CronJobs move to the release), 0 sends all traffic back.

    Refused once a canary has finished: KServe then splits between the new release and
    its own last rolled-out revision, which after any other change (a settings or base
    edit makes a new revision) is the new release again, not the previous one. Go back
    with `tsops rollback`, which pins the previous release."""
    percent = check_percent(percent)
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    now = serving(root, env)
    if now.canary is None and percent != 100:
        what = (
            f"{now.release} is fully promoted"
            if now.previous_release
            else f"{env} has no canary running"
        )
        raise GitOpsError(
            f"{what}: a canary share now would split traffic between revisions of "
            f"{now.release} (KServe's last rolled-out revision is its own). Roll back with "
            f"`tsops rollback {model} --env {env}`, or start a canary of the next release with "
            f"`tsops promote {model} --canary {percent}`"
        )
    edits: list[Edit] = []
    if percent == 100:
        edits.append(_kustomization_edit(env_dir, {BATCH_IMAGE_NAME: now.image}))
        edits += _canary_field_edits(env_dir, model, None, kustomization=edits[0])
    else:
        edits += _canary_field_edits(env_dir, model, percent)
    return edits


def candidate_edits(
    root: Path, model: str, env: str, release: str, model_version: str, image: str
) -> list[Edit]:
    """Pin the A/B candidate of ``env`` to ``release`` (registry ``model_version``, image
    ``repository:tag@digest``): its image entry and ab-candidate.yaml."""
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    pin = Pin.parse(image)
    _needs_digest(env, pin)
    name, _, semver = release.rpartition("/v")
    if name != model or pin.tag != image_tag(model, parse_release(semver)):
        raise GitOpsError(
            f"candidate {release!r} and image tag {pin.tag!r} disagree; a candidate is a "
            f"release of {model} (<model>/vX.Y.Z) whose image tag is <model>-vX.Y.Z"
        )
    patch = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{model}-candidate",
            "annotations": {
                RELEASE: release,
                REGISTERED_MODEL: model,
                MODEL_VERSION: DoubleQuotedScalarString(model_version),
            },
        },
    }
    text = "# The A/B candidate (tsops ab --candidate); its image pin is in kustomization.yaml.\n"
    kustomization = _kustomization_edit(env_dir, {CANDIDATE_IMAGE_NAME: pin}, add_missing=True)
    kdoc = _yaml().load(kustomization.text)
    patches = kdoc.setdefault("patches", [])
    if not any(p.get("path") == "ab-candidate.yaml" for p in patches):
        patches.append({"path": "ab-candidate.yaml"})
    return [
        Edit(env_dir / "ab-candidate.yaml", text + _dump(patch)),
        Edit(kustomization.path, _dump(kdoc)),
    ]


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


def ab_edits(
    root: Path,
    model: str,
    env: str,
    weights_text: str,
    candidate: tuple[str, str, str] | None = None,
) -> list[Edit]:
    """Switch the A/B component on in ``env`` with the Splitter weights given, and pin its
    candidate to ``candidate`` = (release, registry version, image ref) when given.

    Without a candidate the overlay must already pin one (an earlier `tsops ab
    --candidate`): the component has no release of its own."""
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
    edits: list[Edit] = []
    if candidate is not None:
        edits = candidate_edits(root, model, env, *candidate)
    elif not (env_dir / "ab-candidate.yaml").exists():
        raise GitOpsError(
            f"{env} has no A/B candidate yet; name the release to compare with "
            f"--candidate {model}/vX.Y.Z (a release `tsops release` recorded in the registry)"
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
    earlier = [e for e in edits if e.path == kpath]
    kdoc = _yaml().load(earlier[0].text) if earlier else _load(kpath)
    components = kdoc.setdefault("components", [])
    if AB_COMPONENT not in components:
        components.append(AB_COMPONENT)
    patches = kdoc.setdefault("patches", [])
    if not any(p.get("path") == "ab-weights.yaml" for p in patches):
        patches.append({"path": "ab-weights.yaml"})
    edits = [e for e in edits if e.path != kpath]
    return [*edits, Edit(env_dir / "ab-weights.yaml", text), Edit(kpath, _dump(kdoc))]


def rollback_edits(root: Path, model: str, env: str) -> list[Edit]:
    """Send all traffic back to the release the current one replaced.

    During a canary: canary 0, KServe's documented rollback (the last rolled-out revision,
    still running, takes everything at once). Once the canary has finished, or after that
    first step: pin the previous release again (image and version, no canary), a new
    revision that takes the traffic once ready. Only this second form survives a
    recreated InferenceService, which starts with no revision history."""
    env_dir = overlay(root, env)
    _check_model(env_dir, model)
    now = serving(root, env)
    if now.canary:
        return canary_edits(root, model, env, 0)
    if not now.previous_release or not now.previous_version or not now.previous_image:
        raise GitOpsError(
            f"{env} records no release before {now.release} to roll back to; "
            f"to serve an earlier release, run `tsops promote` or `tsops release` with it"
        )
    pin = Pin.parse(now.previous_image)
    path = env_dir / "model-version.yaml"
    doc = _load(path)
    annotations = doc["metadata"]["annotations"]
    for key in list(annotations):
        # the lineage annotations describe the release rolled back from
        if str(key).startswith("tsops.io/"):
            del annotations[key]
    annotations[RELEASE] = now.previous_release
    annotations[REGISTERED_MODEL] = model
    annotations[MODEL_VERSION] = DoubleQuotedScalarString(now.previous_version)
    annotations[ROLLED_BACK_FROM] = now.release
    kustomization = _kustomization_edit(env_dir, {IMAGE_NAME: pin, BATCH_IMAGE_NAME: pin})
    edits = [Edit(path, _dump(doc)), kustomization]
    if now.canary is not None:
        edits += _canary_field_edits(env_dir, model, None, kustomization=kustomization)
    return edits
