"""Image and model pins: every container runs an exact release (a version tag or a
digest, never ``latest`` or an MLflow alias), staging and production pin by digest, the
release annotations agree with the image tag, the CronJobs run their own pin
(``tsops-batch``, the stable release), and an image bump reaches the InferenceService
(``tsops-serving``) and the CronJobs and nothing else.

The entry names, the digest form and the annotations come from :mod:`tsops.deploy.pins`
and :mod:`tsops.deploy.overlays`, which the GitOps commands write with.
"""

from __future__ import annotations

import re
from typing import Any

from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import (
    annotations_of,
    containers_of,
    dig,
    environment,
    is_candidate,
    located,
    pod_specs,
    resource_id,
)
from tsops.deploy.overlays import (
    MODEL_VERSION,
    REGISTERED_MODEL,
    RELEASE,
    SECOND_SERVICES,
    SecondService,
    second_service,
)
from tsops.deploy.pins import BATCH_IMAGE, DIGEST, DIGEST_ENVS, SERVING_IMAGE, Pin

# Tags that float: what they point at changes without a git change.
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly", "dev"}
MLFLOW_ALIASES = {"champion", "challenger"}
PLACEHOLDER_TAG = re.compile(r"^pin-in-")
SECOND_IMAGES = tuple(s.image for s in SECOND_SERVICES)


def _second(doc: dict) -> SecondService:
    """What a strategy's InferenceService is (the A/B candidate when its name says nothing)."""
    return second_service(str(dig(doc, "metadata", "name") or "")) or SECOND_SERVICES[0]


VERSIONED_TAG = re.compile(r"(?:^|[-_.])v?\d+(?:\.\d+)*")
RELEASE_TAG = re.compile(r"^(?P<model>[a-z0-9][a-z0-9-]*)/v(?P<version>\d+\.\d+\.\d+)$")


def entry_image(entry: dict) -> str:
    """The image a kustomize ``images:`` entry renders: ``newName:newTag@digest``."""
    image = str(entry.get("newName") or entry.get("name"))
    if entry.get("newTag"):
        image += f":{entry['newTag']}"
    if entry.get("digest"):
        image += f"@{entry['digest']}"
    return image


def image_entries(kust: dict) -> dict[str, dict]:
    """A kustomization's ``images:`` entries by name."""
    return {str(e.get("name")): e for e in kust.get("images") or [] if isinstance(e, dict)}


def check_image(image: Any, where: str, path: str) -> list[Finding]:
    """An image is pinned to an exact release: a version tag or a digest."""
    if not isinstance(image, str) or not image:
        return [Finding("pin", where, f"{path} has no image", "set the image")]
    name, tag, digest = Pin.split(image)
    if digest:
        return []
    if PLACEHOLDER_TAG.match(tag or ""):
        return [
            Finding(
                "pin",
                where,
                f"{path} is still the placeholder {image!r}",
                f"add an images: entry for {name!r} with newName (registry) and newTag "
                "(the release, e.g. m3-monthly-v1.2.0) to the overlay's kustomization.yaml",
            )
        ]
    if tag is None:
        problem = f"{path} {image!r} has no tag, which means latest"
    elif tag.lower() in FLOATING_TAGS or tag.lower() in MLFLOW_ALIASES:
        problem = f"{path} {image!r} uses the floating tag {tag!r}"
    elif not VERSIONED_TAG.search(tag):
        problem = f"{path} {image!r}: tag {tag!r} names no version"
    else:
        return []
    return [
        Finding(
            "pin",
            where,
            problem,
            "pin an exact release tag (e.g. m3-monthly-v1.2.0) or a digest with the "
            "images: newTag of the kustomization",
        )
    ]


_ALIAS_REF = re.compile(
    r"models:/[^\s/@]+@(?P<alias>[\w-]+)|@(?P<bare>champion|challenger)\b"
    r"|models:/[^\s/@]+/(?P<stage>[A-Za-z][\w-]*)\b|[:/](?P<latest>latest)$"
)


def check_model_ref(value: Any, where: str, path: str) -> list[Finding]:
    """A model reference names an exact version, never an alias or 'latest'."""
    if not isinstance(value, str):
        return []
    match = _ALIAS_REF.search(value)
    if not match:
        return []
    return [
        Finding(
            "pin",
            where,
            f"{path} {value!r} follows a moving target "
            f"({next(g for g in match.groups() if g)!r}), not an exact version",
            "use models:/<name>/<version>, a storage URI of that exact version, or the "
            "model baked into the release image (/mnt/models)",
        )
    ]


def check_pins(doc: dict, where: str = "") -> list[Finding]:
    """Images, storage URIs and model arguments of every pod pin an exact version."""
    where = where or resource_id(doc)
    findings = []
    for pod_path, pod in pod_specs(doc):
        for c_path, container in containers_of(pod):
            path = f"{pod_path}.{c_path}"
            findings += check_image(container.get("image"), where, f"{path}.image")
            for i, arg in enumerate(
                [*(container.get("command") or []), *(container.get("args") or [])]
            ):
                findings += check_model_ref(arg, where, f"{path} argument {i}")
            for env in container.get("env") or []:
                if isinstance(env, dict):
                    findings += check_model_ref(
                        env.get("value"), where, f"{path}.env {env.get('name')}"
                    )
        model = pod.get("model")
        if isinstance(model, dict):
            findings += check_model_ref(
                model.get("storageUri"), where, f"{pod_path}.model.storageUri"
            )
        findings += check_model_ref(pod.get("storageUri"), where, f"{pod_path}.storageUri")
        for i, item in enumerate(pod.get("storageUris") or []):
            if isinstance(item, dict):
                findings += check_model_ref(item.get("uri"), where, f"{pod_path}.storageUris[{i}]")
    return findings


def check_release(doc: dict, where: str = "") -> list[Finding]:
    """An InferenceService names its release (model-version.yaml; ab-candidate.yaml for the
    A/B candidate), and the model server's image tag (before any ``@digest``) is that
    release (``<model>/vX.Y.Z`` -> ``<model>-vX.Y.Z``)."""
    if doc.get("kind") != "InferenceService":
        return []
    where = where or resource_id(doc)
    notes = annotations_of(doc)
    release = notes.get(RELEASE)
    candidate = is_candidate(doc)
    if candidate and PLACEHOLDER_TAG.match(str(release or "")):
        second = _second(doc)
        return [
            Finding(
                "release",
                where,
                f"{second.what}'s {RELEASE} is still the placeholder {release!r}: nothing "
                "says which release it runs",
                f"run `{second.command}` (it writes the overlay's {second.patch} and images: "
                f"entry {second.image}), or write {second.patch} with the annotations "
                f"{RELEASE}, {REGISTERED_MODEL} and {MODEL_VERSION} yourself",
            )
        ]
    if not release:
        return [
            Finding(
                "release",
                where,
                f"no {RELEASE} annotation: nothing says which release this environment serves",
                f"add model-version.yaml with the annotations {RELEASE} (<model>/vX.Y.Z), "
                f"{REGISTERED_MODEL} and {MODEL_VERSION} to the overlay's patches",
            )
        ]
    match = RELEASE_TAG.match(str(release))
    if not match:
        return [
            Finding(
                "release",
                where,
                f"{RELEASE} is {release!r}, not a release tag like m3-monthly/v1.2.0",
                "write the git tag of the release: <model>/vX.Y.Z",
            )
        ]
    findings = []
    model, version = match["model"], match["version"]
    if notes.get(REGISTERED_MODEL) not in (None, model):
        findings.append(
            Finding(
                "release",
                where,
                f"{REGISTERED_MODEL} {notes.get(REGISTERED_MODEL)!r} differs from the model "
                f"of {RELEASE} {release!r}",
                "make both name the same registered model",
            )
        )
    registry_version = notes.get(MODEL_VERSION)
    if registry_version is not None and not re.fullmatch(r"\d+", str(registry_version)):
        findings.append(
            Finding(
                "release",
                where,
                f"{MODEL_VERSION} is {registry_version!r}, not an MLflow registry version number",
                'write the registered model version the release was built from (e.g. "3")',
            )
        )
    containers = dig(doc, "spec", "predictor", "containers") or []
    if containers and isinstance(containers[0], dict):
        image = containers[0].get("image") or ""
        _, tag, digest = Pin.split(image)
        expected = f"{model}-v{version}"
        if tag != expected and not (tag is None and digest):
            fix = (
                f"set the overlay's images: entry {_second(doc).image} (newTag, digest) and "
                f"{_second(doc).patch} to the same release (`{_second(doc).command}` writes "
                "both)"
                if candidate
                else "set the overlay's images: newTag and model-version.yaml to the same "
                "release (promotion copies both)"
            )
            findings.append(
                Finding(
                    "release",
                    where,
                    f"the model server image {image!r} is not the release {release!r} "
                    f"(expected tag {expected!r})",
                    fix,
                )
            )
    return findings


def _image_role(doc: dict) -> str:
    """The images: entry that pins this resource's containers."""
    if doc.get("kind") == "InferenceService":
        return _second(doc).image if is_candidate(doc) else SERVING_IMAGE
    return BATCH_IMAGE if doc.get("kind") == "CronJob" else "of that image"


def check_digest_pins(docs: list[dict], label: str) -> list[Finding]:
    """In staging and production every container image carries a digest: a tag can be
    pushed again, a digest names one image for good (and is what was signed)."""
    env = environment(label)
    if env not in DIGEST_ENVS:
        return []
    overlay = label.split("+")[0].split(" ")[0]
    findings = []
    for doc in docs:
        for pod_path, pod in pod_specs(doc):
            for c_path, container in containers_of(pod):
                image = container.get("image")
                if not isinstance(image, str) or not image:
                    continue
                _, tag, digest = Pin.split(image)
                if PLACEHOLDER_TAG.match(tag or "") or (digest and DIGEST.match(digest)):
                    continue
                problem = (
                    f"a malformed digest {digest!r}"
                    if digest
                    else "a tag only: the registry can serve another image under it"
                )
                findings.append(
                    Finding(
                        "digest",
                        located(label, doc),
                        f"{pod_path}.{c_path}.image {image!r} is pinned by {problem}; "
                        f"{env} pins images by digest (only local may pin by tag)",
                        f"add digest: sha256:<64 hex> to the images: entry {_image_role(doc)} "
                        f"in {overlay}/kustomization.yaml (`tsops release` writes the digest "
                        "the build pushed; `tsops promote` copies it)",
                    )
                )
    return findings


def check_batch_entry(kust: dict, label: str) -> list[Finding]:
    """The overlay pins the CronJobs' release (``tsops-batch``) apart from the
    InferenceService's, so that batch forecasts stay on the stable release in a canary."""
    entries = image_entries(kust)
    if SERVING_IMAGE not in entries or BATCH_IMAGE in entries:
        return []
    return [
        Finding(
            "batch",
            f"{label}/kustomization.yaml",
            f"no images: entry named {BATCH_IMAGE!r}: the CronJobs ({BATCH_IMAGE}:pin-in-overlay) "
            "have no release to run",
            f"add images: {{name: {BATCH_IMAGE}, newName, newTag, digest}} pinning the stable "
            "release (the fully rolled-out one; during a canary the previous release), next to "
            f"{SERVING_IMAGE}",
        )
    ]


def main_image_entry(kust: dict) -> dict | None:
    """The overlay's images: entry of the model server (not the batch jobs' nor an A/B
    candidate's)."""
    entries = image_entries(kust)
    if SERVING_IMAGE in entries:
        return entries[SERVING_IMAGE]
    other = [e for n, e in entries.items() if n not in (BATCH_IMAGE, *SECOND_IMAGES)]
    return (other or [None])[0]


def image_bump_findings(
    before: list[dict], after: list[dict], bumped: dict[str, str], label: str
) -> list[Finding]:
    """After the overlay's ``tsops-serving`` and ``tsops-batch`` entries were bumped (to
    different tags), the InferenceService's model server runs the new tsops-serving image,
    every CronJob container the new tsops-batch image, and the A/B candidate kept its own.

    ``bumped`` maps an images: entry name to the image it renders after the bump."""
    old_images = {}
    for doc in before:
        for pod_path, pod in pod_specs(doc):
            for c_path, c in containers_of(pod):
                old_images[(resource_id(doc), f"{pod_path}.{c_path}")] = c.get("image")
    serving, batch = bumped.get(SERVING_IMAGE), bumped.get(BATCH_IMAGE)
    reached_isvc = False
    findings = []

    def add(doc: dict, problem: str, fix: str) -> None:
        findings.append(Finding("image-bump", f"{label}: {resource_id(doc)}", problem, fix))

    for doc in after:
        kind = doc.get("kind")
        for pod_path, pod in pod_specs(doc):
            for c_path, c in containers_of(pod):
                path = f"{pod_path}.{c_path}.image"
                image = c.get("image")
                old = old_images.get((resource_id(doc), f"{pod_path}.{c_path}"))
                if kind == "InferenceService" and is_candidate(doc):
                    if old is not None and image != old:
                        add(
                            doc,
                            f"{path} changed to {image!r} with the overlay's {SERVING_IMAGE}/"
                            f"{BATCH_IMAGE} entries: {_second(doc).what} must keep its own "
                            "release",
                            f"give it the placeholder image {_second(doc).image}:"
                            "pin-in-overlay (manifests/components/ab/"
                            "inferenceservice-candidate.yaml for the A/B candidate)",
                        )
                elif kind == "InferenceService" and serving and pod_path == "spec.predictor":
                    if c_path != "containers[0]":
                        continue
                    if image == serving:
                        reached_isvc = True
                        continue
                    add(
                        doc,
                        f"{path} stayed {image!r} after the overlay's images: entry "
                        f"{SERVING_IMAGE} changed to {serving!r}",
                        "list the field's path under images: in "
                        "manifests/base/kustomizeconfig.yaml, and give the container the "
                        f"placeholder image {SERVING_IMAGE}:pin-in-overlay",
                    )
                elif kind == "CronJob" and batch:
                    if image == batch:
                        continue
                    if image == serving:
                        problem = (
                            f"{path} follows the overlay's {SERVING_IMAGE} entry (the release "
                            "the InferenceService runs, the canary in a canary), not "
                            f"{BATCH_IMAGE}: batch forecasts would switch at a canary's start "
                            "and not follow a rollback"
                        )
                    else:
                        problem = (
                            f"{path} stayed {image!r} after the overlay's images: entry "
                            f"{BATCH_IMAGE} changed to {batch!r}"
                        )
                    add(
                        doc,
                        problem,
                        f"give the CronJob's containers the placeholder image {BATCH_IMAGE}:"
                        "pin-in-overlay in manifests/base (the overlay's tsops-batch entry pins "
                        "the stable release)",
                    )
    if serving and not reached_isvc and not findings:
        findings.append(
            Finding(
                "image-bump",
                label,
                f"no InferenceService runs {serving!r} after an images: bump, so a "
                "release would not reach the model server",
                "make the overlay's images: entry name the InferenceService's image and list "
                "spec/predictor/containers/image under images: in "
                "manifests/base/kustomizeconfig.yaml",
            )
        )
    return findings
