"""The InferenceServices a strategy adds next to an environment's own (A/B candidate and
third arm, blue/green's green colour, the shadow: ``overlays.SECOND_SERVICES``): pinning
one to a release, reading which release it runs, and the model server's --shadow_url
that sends one a copy of another's requests.

Each is pinned the way ``tsops ab --candidate`` pins the candidate: an ``images:`` entry
of its own (registry, tag, digest) and a strategic merge patch with its release
annotations, both in the overlay, listed in its kustomization.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from tsops.deploy.overlays import (
    MODEL_VERSION,
    REGISTERED_MODEL,
    RELEASE,
    SECOND_SERVICES,
    GitOpsError,
    SecondService,
    dump,
    load,
    round_trip_yaml,
)
from tsops.deploy.pins import Pin, image_tag, parse_release, require_digest, set_pins

SHADOW_FLAG = "--shadow_url"  # the model server's flag (TSOPS_SHADOW_URL as a setting)
ISVC_TARGET = {"group": "serving.kserve.io", "version": "v1beta1", "kind": "InferenceService"}


def by_suffix(suffix: str) -> SecondService:
    return next(s for s in SECOND_SERVICES if s.suffix == suffix)


def check_release_pin(model: str, env: str, release: str, image: str) -> Pin:
    """The pin of ``release`` (<model>/vX.Y.Z) from its image ref, which must carry the
    release's tag (and, outside local, a digest)."""
    pin = Pin.parse(image)
    require_digest(env, pin)
    name, _, semver = release.rpartition("/v")
    if name != model or pin.tag != image_tag(model, parse_release(semver)):
        raise GitOpsError(
            f"release {release!r} and image tag {pin.tag!r} disagree; a release of {model} is "
            "<model>/vX.Y.Z and its image tag <model>-vX.Y.Z"
        )
    return pin


def release_notes(model: str, release: str, model_version: str) -> dict[str, Any]:
    return {
        RELEASE: release,
        REGISTERED_MODEL: model,
        MODEL_VERSION: DoubleQuotedScalarString(model_version),
    }


def release_patch_text(
    model: str, second: SecondService, release: str, model_version: str, comment: str
) -> str:
    """The strategic merge patch naming the release InferenceService <model><suffix> runs."""
    patch = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{model}{second.suffix}",
            "annotations": release_notes(model, release, model_version),
        },
    }
    return comment + dump(patch)


def read_release(env_dir: Path, second: SecondService) -> tuple[str, str] | None:
    """(release, registry version) the overlay pins for ``second`` (None: no patch file)."""
    path = env_dir / second.patch
    if not path.exists():
        return None
    notes = (load(path).get("metadata") or {}).get("annotations") or {}
    if not notes.get(RELEASE) or notes.get(MODEL_VERSION) is None:
        raise GitOpsError(
            f"{path} names no release ({RELEASE}, {MODEL_VERSION}) for {second.what}; "
            f"write it with `{second.command}`"
        )
    return str(notes[RELEASE]), str(notes[MODEL_VERSION])


def arm_releases(env_dir: Path, model: str) -> dict[str, tuple[str, str]]:
    """InferenceService name -> (release, registry version) of an A/B test's or bandit's
    arms beyond the environment's own release (candidate, third)."""
    out = {}
    for suffix in ("-candidate", "-third"):
        found = read_release(env_dir, by_suffix(suffix))
        if found is not None:
            out[f"{model}{suffix}"] = found
    return out


def namespace(env_dir: Path) -> str:
    kust = load(env_dir / "kustomization.yaml")
    if not kust.get("namespace"):
        raise GitOpsError(
            f"{env_dir}/kustomization.yaml sets no namespace: the cluster-local URL of an "
            "InferenceService names it (<name>.<namespace>.svc.cluster.local)"
        )
    return str(kust["namespace"])


def cluster_url(service: str, ns: str) -> str:
    """An InferenceService's cluster-local URL. Knative routes by Host: a Service's
    cluster-local host is <name>.<namespace>.svc.cluster.local (Knative "Configuring
    private Services", https://knative.dev/docs/serving/services/private-services/), and
    KServe gives the InferenceService such a host of its own (an ExternalName Service
    <name> to the local gateway, routed to its predictor)."""
    return f"http://{service}.{ns}.svc.cluster.local"


def mirror_patch_text(source: str, target_url: str, why: str) -> str:
    """A JSON patch (RFC 6902) that gives InferenceService ``source``'s model server the
    flag --shadow_url=``target_url``.

    A flag, not the TSOPS_SHADOW_URL variable: the data-platform.yaml patches replace
    the container's whole env list (op add /env), so an env entry would hold or vanish
    by the order of the patches; args always exist (manifests/base)."""
    import textwrap

    comment = textwrap.fill(why, width=88, initial_indent="# ", subsequent_indent="# ")
    return (
        f"{comment}\n"
        f"# JSON patch (RFC 6902) on InferenceService {source} (target in kustomization.yaml).\n"
        "- op: add\n"
        "  path: /spec/predictor/containers/0/args/-\n"
        f"  value: {SHADOW_FLAG}={target_url}\n"
    )


def shadow_urls(isvc: dict) -> list[str]:
    """The --shadow_url values of a rendered InferenceService's model server."""
    containers = ((isvc.get("spec") or {}).get("predictor") or {}).get("containers") or [{}]
    args = containers[0].get("args") or [] if isinstance(containers[0], dict) else []
    prefix = f"{SHADOW_FLAG}="
    return [str(a)[len(prefix) :] for a in args if str(a).startswith(prefix)]


class Kustomization:
    """An overlay's kustomization.yaml being edited (round-trip): the entries the strategy
    commands add and remove."""

    def __init__(self, env_dir: Path, text: str | None = None):
        self.path = env_dir / "kustomization.yaml"
        self.doc = round_trip_yaml().load(text) if text is not None else load(self.path)

    def text(self) -> str:
        return dump(self.doc)

    def add_component(self, component: str) -> None:
        components = self.doc.setdefault("components", [])
        if component not in components:
            components.append(component)

    def remove_component(self, component: str) -> None:
        components = self.doc.get("components") or []
        if component in components:
            components.remove(component)
        if "components" in self.doc and not self.doc["components"]:
            del self.doc["components"]

    def add_patch(self, path: str, target_name: str | None = None) -> None:
        patches = self.doc.setdefault("patches", [])
        for entry in patches:
            if entry.get("path") == path and (
                target_name is None or (entry.get("target") or {}).get("name") == target_name
            ):
                return
        entry: dict[str, Any] = {"path": path}
        if target_name is not None:
            entry["target"] = {**ISVC_TARGET, "name": target_name}
        patches.append(entry)

    def remove_patches(self, paths: set[str]) -> None:
        patches = self.doc.get("patches") or []
        for entry in [e for e in patches if e.get("path") in paths]:
            patches.remove(entry)

    def patches_on(self, path: str) -> list[str | None]:
        """The target names of the entries that apply ``path``."""
        return [
            (e.get("target") or {}).get("name")
            for e in self.doc.get("patches") or []
            if e.get("path") == path
        ]

    def pin(self, name: str, pin: Pin) -> None:
        images = self.doc.setdefault("images", CommentedSeq())
        new = not any(e.get("name") == name for e in images)
        if new:
            images.append(CommentedMap(name=name))
        set_pins(self.doc, self.path, {name: pin})
        if new:
            _keep_gap_last(images)

    def unpin(self, name: str) -> None:
        images = self.doc.get("images") or []
        for entry in [e for e in images if e.get("name") == name]:
            last = entry is images[-1]
            images.remove(entry)
            if last and images and isinstance(entry, CommentedMap) and entry:
                # what followed the list (a blank line, a comment) stays after it
                token = entry.ca.items.pop(list(entry.keys())[-1], None)
                if token is not None and isinstance(images[-1], CommentedMap):
                    images[-1].ca.items[list(images[-1].keys())[-1]] = token

    def entry_pin(self, name: str) -> Pin:
        for entry in self.doc.get("images") or []:
            if entry.get("name") == name:
                return Pin.from_entry(entry, self.path)
        raise GitOpsError(f"{self.path} has no images: entry named {name!r}")


def _keep_gap_last(seq: Any) -> None:
    """A blank line after a list's last entry (before the next key) belongs to that entry
    in ruamel; after an append it moves to the new last entry, where it was."""
    if len(seq) < 2 or not isinstance(seq[-2], CommentedMap) or not seq[-2]:
        return
    prev = seq[-2]
    last = list(prev.keys())[-1]
    token = prev.ca.items.pop(last, None)
    if token is not None:
        seq[-1].ca.items[list(seq[-1].keys())[-1]] = token
