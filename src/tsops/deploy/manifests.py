"""Render and validate the Kubernetes manifests: ``tsops manifests validate``.

For every overlay under ``manifests/overlays/`` (also with each component of
``manifests/components/`` switched on) and for ``argocd/``:

- kustomize renders it (``kubectl kustomize``);
- built-in kinds pass the Kubernetes OpenAPI schemas strictly (``kubernetes-validate``,
  unknown fields rejected, Kubernetes 1.32 by default);
- custom resources (KServe InferenceService/InferenceGraph, Argo CD Application,
  ApplicationSet, AppProject) pass their CRD's ``openAPIV3Schema`` with
  ``additionalProperties: false`` added wherever the schema lists ``properties``, which
  is what the API server's strict field validation does (the CRDs themselves never say
  it, so a misspelt field would pass);
- policies no schema expresses: canary percent in 0..100, Splitter weights summing to
  100, exact image tags and model versions (never ``latest`` or an MLflow alias), digest
  pins in staging and production, the release annotation agreeing with the image tag, an
  A/B candidate with the main InferenceService's volumes, a hardened pod spec, references
  that resolve, sync-wave order, Argo CD sync policy per environment (git alone owns the
  canary share; production tracks its own revision), a signature policy covering every
  image staging and production run, every patch file hitting a rendered resource, and an
  image bump reaching the InferenceService (``tsops-serving``) and the CronJobs
  (``tsops-batch``, the stable release) and nothing else;
- checkov finds nothing (skips only as ``checkov.io/skipN: CKV_ID=reason`` annotations).

The checks are pure functions of parsed documents returning :class:`Finding` objects;
:func:`validate_all` does the rendering and file I/O.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tsops.core.errors import TsopsError

# What the overlays hold is written by tsops.deploy.gitops: one definition of the pins' names
# (the placeholder images of manifests/, each retagged by the images: entry of that name),
# the digest form and the release annotations, for the writer and this checker alike.
from tsops.deploy.gitops import BATCH_IMAGE_NAME as BATCH_IMAGE
from tsops.deploy.gitops import CANDIDATE_IMAGE_NAME as CANDIDATE_IMAGE
from tsops.deploy.gitops import DIGEST, DIGEST_ENVS, MODEL_VERSION, REGISTERED_MODEL, RELEASE
from tsops.deploy.gitops import IMAGE_NAME as SERVING_IMAGE

KUBERNETES_VERSION = "1.32"
# checkov pins cachetools<6 while mlflow needs 7: it cannot share the project's
# environment, so it runs as a uv tool at this version unless one is on PATH.
CHECKOV_VERSION = "3.3.30"
CRDS_ENV = "TSOPS_CRDS_DIR"
# The vendored upstream CRDs (manifests/crds/README.md): the default, so that validation
# runs the same on every clone, offline.
DEFAULT_CRDS = "manifests/crds"
CHECKOV_ENV = "TSOPS_CHECKOV"

OVERLAYS = "manifests/overlays"
COMPONENTS = "manifests/components"
ARGOCD = "argocd"
CRDS_DIR_NAME = "crds"  # manifests/crds: data for validation, not manifests

CANDIDATE_SUFFIX = "-candidate"  # InferenceService <name>-candidate is <name>'s A/B arm
SIGSTORE_INCLUDE = "policy.sigstore.dev/include"
IMAGE_POLICY_KIND = "ClusterImagePolicy"

MODEL_SERVER_CONTAINER = "kserve-container"
KNATIVE_MODES = ("Serverless", "Knative")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
CANARY_POINTER = "/spec/predictor/canaryTrafficPercent"
CANARY_JQ = ".spec.predictor.canaryTrafficPercent"
# Tags that float: what they point at changes without a git change.
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly", "dev"}
MLFLOW_ALIASES = {"champion", "challenger"}
PLACEHOLDER_TAG = re.compile(r"^pin-in-")
VERSIONED_TAG = re.compile(r"(?:^|[-_.])v?\d+(?:\.\d+)*")
RELEASE_TAG = re.compile(r"^(?P<model>[a-z0-9][a-z0-9-]*)/v(?P<version>\d+\.\d+\.\d+)$")
MIN_UID = 10000
WORKLOAD_TEMPLATE = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
ISVC_COMPONENTS = ("predictor", "transformer", "explainer")
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ClusterStorageContainer",
    "ClusterServingRuntime",
}


class ManifestError(TsopsError):
    """The validation itself could not run (a tool or an input is missing)."""


@dataclass(frozen=True)
class Finding:
    """One problem: which check, where (render, resource, source files), what, how to fix."""

    check: str
    where: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.problem}\n    fix: {self.fix}"


@dataclass
class Report:
    """What :func:`validate_all` rendered, what it found and how long each part took."""

    findings: list[Finding] = field(default_factory=list)
    renders: dict[str, int] = field(default_factory=dict)  # label -> number of resources
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        resources = sum(self.renders.values())
        took = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        verdict = "OK" if self.ok else f"{len(self.findings)} problem(s)"
        return f"{verdict}: {len(self.renders)} renders, {resources} resources ({took})"


# --------------------------------------------------------------------------- helpers


def resource_id(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def _at(label: str, doc: dict) -> str:
    return f"{label}: {resource_id(doc)}" if label else resource_id(doc)


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _annotations(doc: dict) -> dict:
    return (doc.get("metadata") or {}).get("annotations") or {}


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` -> (name, tag, digest); a port is not a tag."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None


def is_candidate(doc: dict) -> bool:
    """The A/B candidate InferenceService (components/ab), not an environment's release."""
    return doc.get("kind") == "InferenceService" and (
        str(_dig(doc, "metadata", "name") or "").endswith(CANDIDATE_SUFFIX)
        or _dig(doc, "metadata", "labels", "app.kubernetes.io/component") == "predictor-candidate"
    )


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


def environment(label: str) -> str:
    """``manifests/overlays/staging+ab (image bump)`` -> ``staging``."""
    return label.split("+")[0].split(" ")[0].rstrip("/").rsplit("/", 1)[-1]


def _full_reference(image: str) -> str:
    """The image as policy-controller matches it (go-containerregistry's ``Name()``):
    Docker Hub spelt out, ``:latest`` when there is no tag, the tag dropped beside a
    digest."""
    name, tag, digest = split_image(image)
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"index.docker.io/{name if rest else 'library/' + name}"
    elif first == "docker.io":
        name = f"index.docker.io/{rest}"
    return f"{name}@{digest}" if digest else f"{name}:{tag or 'latest'}"


def glob_match(glob: str, image: str) -> bool:
    """Whether a ClusterImagePolicy ``images[].glob`` covers ``image``, as sigstore
    policy-controller decides it (pkg/apis/glob): ``*`` matches within a path segment,
    ``**`` matches anything ("/", ":" and "@" included), the whole reference must match."""
    glob = {"*/*": "index.docker.io/*/*", "*": "index.docker.io/library/*"}.get(glob, glob)
    if not re.fullmatch(r"[A-Za-z0-9_:/*.\-]+", glob or ""):
        return False
    pattern = glob.replace(".", r"\.").replace("**", "#").replace("*", "[^/]*").replace("#", ".*")
    regex = re.compile(f"^{pattern}$")
    return bool(regex.match(_full_reference(image)) or regex.match(image))


# --------------------------------------------------------------------------- schemas


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 (CRD) schema that rejects unknown fields.

    ``additionalProperties: false`` goes into every object schema that lists
    ``properties`` and neither keeps unknown fields (``x-kubernetes-preserve-unknown-
    fields``) nor already says what extra keys may hold (a map).
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if (
        isinstance(schema.get("properties"), dict)
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd_docs: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """``(apiVersion, kind) -> strict openAPIV3Schema`` for every served version."""
    schemas = {}
    for crd in crd_docs:
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec.get("versions", []):
            schema = _dig(version, "schema", "openAPIV3Schema")
            if schema and version.get("served", True):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                # The API server always accepts these at the top, whether the schema lists
                # them or not (sigstore's ClusterImagePolicy CRD lists only spec, status).
                if isinstance(schema.get("properties"), dict):
                    schema = {
                        **schema,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            **schema["properties"],
                        },
                    }
                schemas[key] = strict_schema(schema)
    return schemas


def load_crds(crds_dir: Path) -> dict[tuple[str, str], dict]:
    """Strict schemas of every CRD in ``crds_dir`` (``*.yaml``, ``*.yml``)."""
    crds_dir = Path(crds_dir)
    if not crds_dir.is_dir():
        raise ManifestError(
            f"CRD directory {crds_dir} does not exist: run from the repository root (or pass "
            f"--root), whose {DEFAULT_CRDS} holds the vendored CRDs (scripts/refresh-crds.sh "
            f"fetches them), or pass --crds DIR (or set {CRDS_ENV}) with the "
            "CustomResourceDefinitions of KServe (inferenceservices, inferencegraphs), Argo CD "
            "(application, applicationset, appproject) and sigstore policy-controller "
            "(clusterimagepolicies)"
        )
    files = sorted([*crds_dir.glob("*.yaml"), *crds_dir.glob("*.yml")])
    stamp = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    schemas = _load_crd_files(stamp)
    if not schemas:
        raise ManifestError(
            f"no CustomResourceDefinition in {crds_dir}: it should hold the CRD YAML files "
            "of KServe and Argo CD"
        )
    return schemas


@functools.lru_cache(maxsize=4)
def _load_crd_files(stamp: tuple[tuple[str, int, int], ...]) -> dict[tuple[str, str], dict]:
    # Parsing 4 MB of CRD YAML takes seconds: once per process and set of files.
    docs = []
    for name, _, _ in stamp:
        docs.extend(d for d in _read_yaml_docs(Path(name)) if isinstance(d, dict))
    return crd_schemas(docs)


# Built once per schema: creating a validator for the 2 MB InferenceService schema
# costs more than validating a resource with it.
_VALIDATORS: dict[int, Any] = {}


def _require(module: str, package: str) -> Any:
    """Import a validation dependency, or say how to install it (it is a dev dependency:
    the serving image does not carry it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ManifestError(
            f"{package} is not installed: `make install` (or pip install {package}) installs "
            "the development dependencies that tsops manifests validate needs"
        ) from e


def _crd_validator(schema: dict):
    jsonschema = _require("jsonschema", "jsonschema")
    key = id(schema)
    if key not in _VALIDATORS or _VALIDATORS[key][0] is not schema:
        _VALIDATORS[key] = (schema, jsonschema.Draft202012Validator(schema))
    return _VALIDATORS[key][1]


_UNEXPECTED = re.compile(r"\('([^']+)' (?:was|were) unexpected\)")
Source = str | Callable[[str | None], str]


def _source(source: Source, message: str) -> str:
    """The files to edit; a callable narrows them to those holding the unexpected field."""
    if callable(source):
        match = _UNEXPECTED.search(message)
        return source(match.group(1) if match else None)
    return source


def _suggest(message: str, schema: Any) -> str:
    """'did you mean X' for an unknown field, from the schema's own property names."""
    match = _UNEXPECTED.search(message)
    known = list((schema if isinstance(schema, dict) else {}).get("properties", {}))
    if match and known:
        close = difflib.get_close_matches(match.group(1), known, n=1)
        if close:
            return f"did you mean {close[0]!r}? "
    return ""


def _schema_fix(error, source: Source) -> str:
    source = _source(source, error.message)
    if error.validator == "additionalProperties":
        known = sorted((error.schema or {}).get("properties", {}))
        return (
            f"{_suggest(error.message, error.schema)}remove or rename the field in {source}; "
            f"{_path(error.absolute_path)} allows: {', '.join(known[:25])}"
            + (" ..." if len(known) > 25 else "")
        )
    return f"change {_path(error.absolute_path)} in {source} to match the schema"


def schema_findings(
    doc: dict,
    schemas: dict[tuple[str, str], dict],
    k8s_version: str = KUBERNETES_VERSION,
    where: str = "",
    source: Source = "the manifest",
) -> list[Finding]:
    """Validate one resource strictly: its CRD schema if it has one, else Kubernetes'.

    ``source`` names the files to fix, or is a function of the unexpected field name
    (None for other errors) that does.
    """
    where = where or resource_id(doc)
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in schemas:
        validator = _crd_validator(schemas[key])
        findings = [
            Finding(
                "schema",
                where,
                f"{_path(e.absolute_path)}: {e.message}",
                _schema_fix(e, source),
            )
            for e in sorted(
                validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))
            )[:20]
        ]
        # The CRDs leave metadata open; the API server checks it as ObjectMeta.
        meta_doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata")}
        findings += _builtin_findings(meta_doc, k8s_version, where, source, label="metadata")
        return findings
    return _builtin_findings(doc, k8s_version, where, source)


@functools.cache
def _k8s_validator(api_version: str, kind: str, k8s_version: str):
    """A validator of kubernetes-validate's strict schema for one kind, built once.

    Same files and resolution as ``kubernetes_validate.validate(..., strict=True)``, which
    stops at the first error and re-reads 1.3 MB of definitions per call; this reports
    every error of a resource.
    """
    jsonschema = _require("jsonschema", "jsonschema")
    referencing = _require("referencing", "referencing")
    kv = _require("kubernetes_validate.utils", "kubernetes-validate")

    version = k8s_version.removeprefix("v")
    if kv.major_minor(version) > kv.latest_version():
        raise kv.VersionNotSupportedError(version=kv.major_minor(version))
    schema_version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][
        -1
    ]
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{schema_version}-local-strict"
    try:
        schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        raise kv.SchemaNotFoundError(
            version=kv.major_minor(version), kind=kind, api_version=api_version
        ) from None
    definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Registry().with_resources(
        [
            (r.id(), r)
            for r in (
                referencing.Resource.from_contents(schema),
                referencing.Resource.from_contents(definitions),
            )
            if r.id()
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _builtin_findings(
    doc: dict, k8s_version: str, where: str, source: Source, label: str = ""
) -> list[Finding]:
    kv = _require("kubernetes_validate.utils", "kubernetes-validate")
    try:
        validator = _k8s_validator(
            str(doc.get("apiVersion", "")), str(doc.get("kind", "")), k8s_version
        )
    except kv.SchemaNotFoundError as e:
        return [
            Finding(
                "schema",
                where,
                e.message,
                "add the kind's CustomResourceDefinition to the --crds directory, or fix "
                "apiVersion/kind",
            )
        ]
    except kv.VersionNotSupportedError as e:
        raise ManifestError(
            f"{e.message}: pass a Kubernetes version that kubernetes-validate knows"
        ) from e
    findings = []
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for e in errors[:20]:
        prefix = _path(e.absolute_path) if e.absolute_path else label or "(top level)"
        explain = ".".join(str(p) for p in e.absolute_path if not isinstance(p, int))
        findings.append(
            Finding(
                "schema",
                where,
                f"{prefix}: {e.message} (Kubernetes {k8s_version}, strict)",
                f"{_suggest(e.message, e.schema)}fix {prefix} in {_source(source, e.message)} "
                f"(`kubectl explain "
                f"{str(doc.get('kind', '')).lower()}{'.' + explain if explain else ''}` lists "
                "the fields)",
            )
        )
    return findings


# --------------------------------------------------------------------------- policies


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(path, pod spec) of every pod a resource runs; an InferenceService component
    (predictor, transformer, explainer) is a pod spec of its own."""
    kind = doc.get("kind")
    if kind == "InferenceService":
        spec = doc.get("spec") or {}
        return [(f"spec.{c}", spec[c]) for c in ISVC_COMPONENTS if isinstance(spec.get(c), dict)]
    keys = WORKLOAD_TEMPLATE.get(kind)
    if keys:
        spec = _dig(doc, *keys)
        return [(".".join(keys), spec)] if isinstance(spec, dict) else []
    return []


def _containers(pod: dict) -> Iterator[tuple[str, dict]]:
    for key in ("initContainers", "containers"):
        for i, container in enumerate(pod.get(key) or []):
            if isinstance(container, dict):
                yield f"{key}[{i}]", container


def check_canary(doc: dict, where: str = "") -> list[Finding]:
    """canaryTrafficPercent is a whole number in 0..100, on a Knative-mode service."""
    if doc.get("kind") != "InferenceService":
        return []
    where = where or resource_id(doc)
    findings = []
    for component in ISVC_COMPONENTS:
        value = _dig(doc, "spec", component, "canaryTrafficPercent")
        if value is None:
            continue
        path = f"spec.{component}.canaryTrafficPercent"
        if not _is_int(value) or not 0 <= value <= 100:
            findings.append(
                Finding(
                    "canary",
                    where,
                    f"{path} is {value!r}; it must be a whole number from 0 to 100",
                    "set it to the share of traffic for the new revision (0 rolls back); "
                    "remove the field to promote",
                )
            )
        if _annotations(doc).get(DEPLOYMENT_MODE) not in KNATIVE_MODES:
            findings.append(
                Finding(
                    "canary",
                    where,
                    f"{path} is set but the InferenceService does not ask for Knative mode; "
                    "KServe ignores the field silently in Standard/RawDeployment mode",
                    f"add the annotation {DEPLOYMENT_MODE}: Serverless",
                )
            )
    return findings


def check_splitter_weights(doc: dict, where: str = "") -> list[Finding]:
    """Every Splitter node of an InferenceGraph has whole weights summing to 100."""
    if doc.get("kind") != "InferenceGraph":
        return []
    where = where or resource_id(doc)
    findings = []
    for node_name, node in (_dig(doc, "spec", "nodes") or {}).items():
        if not isinstance(node, dict) or node.get("routerType") != "Splitter":
            continue
        steps = node.get("steps") or []
        weights = [step.get("weight") for step in steps if isinstance(step, dict)]
        path = f"spec.nodes.{node_name}.steps"
        if not steps:
            findings.append(
                Finding(
                    "splitter",
                    where,
                    f"{path} is empty",
                    "list the InferenceServices (serviceName) and their weights",
                )
            )
            continue
        bad = [w for w in weights if not _is_int(w) or not 0 <= w <= 100]
        if bad or len(weights) != len(steps):
            findings.append(
                Finding(
                    "splitter",
                    where,
                    f"{path}: every step of a Splitter needs a whole weight in 0..100, "
                    f"got {weights}",
                    "give each step a weight; the weights must sum to 100",
                )
            )
        elif sum(weights) != 100:
            findings.append(
                Finding(
                    "splitter",
                    where,
                    f"{path} weights {' + '.join(map(str, weights))} = {sum(weights)}, not 100",
                    "change the weights so that they sum to 100",
                )
            )
    return findings


def check_image(image: Any, where: str, path: str) -> list[Finding]:
    """An image is pinned to an exact release: a version tag or a digest."""
    if not isinstance(image, str) or not image:
        return [Finding("pin", where, f"{path} has no image", "set the image")]
    name, tag, digest = split_image(image)
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
        for c_path, container in _containers(pod):
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
    notes = _annotations(doc)
    release = notes.get(RELEASE)
    candidate = is_candidate(doc)
    if candidate and PLACEHOLDER_TAG.match(str(release or "")):
        return [
            Finding(
                "release",
                where,
                f"the A/B candidate's {RELEASE} is still the placeholder {release!r}: nothing "
                "says which release it runs",
                "run `tsops ab MODEL --env ENV --candidate <model>/vX.Y.Z` (it writes the "
                f"overlay's ab-candidate.yaml and images: entry {CANDIDATE_IMAGE}), or write "
                f"ab-candidate.yaml with the annotations {RELEASE}, {REGISTERED_MODEL} and "
                f"{MODEL_VERSION} yourself",
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
    containers = _dig(doc, "spec", "predictor", "containers") or []
    if containers and isinstance(containers[0], dict):
        image = containers[0].get("image") or ""
        _, tag, digest = split_image(image)
        expected = f"{model}-v{version}"
        if tag != expected and not (tag is None and digest):
            fix = (
                f"set the overlay's images: entry {CANDIDATE_IMAGE} (newTag, digest) and "
                "ab-candidate.yaml to the same release (`tsops ab ... --candidate` writes both)"
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


def _effective(container: dict, pod: dict, key: str) -> Any:
    value = _dig(container, "securityContext", key)
    return value if value is not None else _dig(pod, "securityContext", key)


def check_pod_security(doc: dict, where: str = "") -> list[Finding]:
    """The restricted pod spec of the model server image: non-root uid 10001, read-only
    root file system with an emptyDir at /tmp, no privilege escalation, no capabilities,
    RuntimeDefault seccomp, no service account token, requests and limits."""
    where = where or resource_id(doc)
    findings = []
    knative = doc.get("kind") == "InferenceService"
    for pod_path, pod in pod_specs(doc):

        def add(path: str, problem: str, fix: str) -> None:
            findings.append(Finding("security", where, f"{path}: {problem}", fix))

        if pod.get("automountServiceAccountToken") is not False:
            add(
                pod_path,
                "automountServiceAccountToken is not false",
                "set automountServiceAccountToken: false (nothing here calls the Kubernetes API)",
            )
        if knative and pod.get("securityContext"):
            add(
                pod_path,
                "a pod-level securityContext, which Knative rejects unless the cluster "
                "enables kubernetes.podspec-securitycontext",
                "move the fields into each container's securityContext",
            )
        tmp_volumes = {
            v.get("name")
            for v in pod.get("volumes") or []
            if isinstance(v, dict) and "emptyDir" in v
        }
        for c_path, container in _containers(pod):
            path = f"{pod_path}.{c_path}"
            sc = f"{path}.securityContext"
            if _effective(container, pod, "runAsNonRoot") is not True:
                add(sc, "runAsNonRoot is not true", "set runAsNonRoot: true")
            uid = _effective(container, pod, "runAsUser")
            if not _is_int(uid) or uid < MIN_UID:
                add(
                    sc,
                    f"runAsUser is {uid!r}",
                    f"set runAsUser: 10001 (the image's user; at least {MIN_UID})",
                )
            if _dig(container, "securityContext", "readOnlyRootFilesystem") is not True:
                add(sc, "readOnlyRootFilesystem is not true", "set readOnlyRootFilesystem: true")
            if _dig(container, "securityContext", "allowPrivilegeEscalation") is not False:
                add(
                    sc,
                    "allowPrivilegeEscalation is not false",
                    "set allowPrivilegeEscalation: false",
                )
            drop = _dig(container, "securityContext", "capabilities", "drop") or []
            add_caps = _dig(container, "securityContext", "capabilities", "add") or []
            if "ALL" not in drop or add_caps:
                add(
                    sc,
                    "capabilities are not dropped",
                    "set capabilities: {drop: [ALL]} and add none",
                )
            seccomp = _effective(container, pod, "seccompProfile") or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                add(sc, "no seccompProfile", "set seccompProfile: {type: RuntimeDefault}")
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (resources.get(kind) or {})]
                if missing:
                    add(
                        f"{path}.resources.{kind}",
                        f"no {' and '.join(missing)}",
                        f"set resources.{kind}.{missing[0]} (scale.yaml of the overlay for the "
                        "InferenceService)",
                    )
            mounts = {
                m.get("mountPath"): m.get("name")
                for m in container.get("volumeMounts") or []
                if isinstance(m, dict)
            }
            if mounts.get("/tmp") not in tmp_volumes:
                add(
                    f"{path}.volumeMounts",
                    "no emptyDir at /tmp, the only place the server and the jobs write to",
                    "mount an emptyDir volume at /tmp",
                )
    return findings


def check_model_server(doc: dict, where: str = "") -> list[Finding]:
    """What KServe expects of a custom predictor, and Knative mode for canary and graphs."""
    kind = doc.get("kind")
    if kind not in ("InferenceService", "InferenceGraph"):
        return []
    where = where or resource_id(doc)
    findings = []
    if _annotations(doc).get(DEPLOYMENT_MODE) not in KNATIVE_MODES:
        findings.append(
            Finding(
                "kserve",
                where,
                f"no {DEPLOYMENT_MODE}: Serverless annotation; KServe's default mode is "
                "Standard (RawDeployment), where canaryTrafficPercent is ignored",
                f"add the annotation {DEPLOYMENT_MODE}: Serverless",
            )
        )
    if kind == "InferenceGraph":
        return findings
    containers = _dig(doc, "spec", "predictor", "containers") or []
    if not containers:
        return [
            *findings,
            Finding(
                "kserve",
                where,
                "spec.predictor.containers is empty",
                "run the tsops model server image as spec.predictor.containers[0]",
            ),
        ]
    first = containers[0]
    if first.get("name") != MODEL_SERVER_CONTAINER:
        findings.append(
            Finding(
                "kserve",
                where,
                f"spec.predictor.containers[0] is named {first.get('name')!r}",
                f"name it {MODEL_SERVER_CONTAINER} (KServe finds the model server by that name)",
            )
        )
    args = [str(a) for a in first.get("args") or []]
    if "--model_name" in args:
        findings.append(
            Finding(
                "kserve",
                where,
                "spec.predictor.containers[0].args has --model_name as a separate argument; "
                "KServe's controller only reads --model_name=NAME, so the InferenceGraph "
                "would call the wrong model URL",
                "write it as one argument: --model_name=<name>",
            )
        )
    for probe, path in (
        ("livenessProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
    ):
        got = _dig(first, probe, "httpGet", "path")
        if got != path:
            findings.append(
                Finding(
                    "kserve",
                    where,
                    f"spec.predictor.containers[0].{probe} does not GET {path} (got {got!r})",
                    f"add {probe}: {{httpGet: {{path: {path}, port: 8080}}}}",
                )
            )
    if len(first.get("ports") or []) > 1:
        findings.append(
            Finding(
                "kserve",
                where,
                "spec.predictor.containers[0] declares more than one port",
                "keep one port (8080, named http1): Knative serves exactly one",
            )
        )
    return findings


def check_checkov_skips(doc: dict, where: str = "") -> list[Finding]:
    """checkov skips say which check and why: ``checkov.io/skipN: CKV_ID=reason``."""
    where = where or resource_id(doc)
    findings = []
    for key, value in _annotations(doc).items():
        if not key.startswith("checkov.io/skip"):
            continue
        check, sep, reason = str(value).partition("=")
        if (
            not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check.strip())
            or not sep
            or len(reason.strip()) < 10
        ):
            findings.append(
                Finding(
                    "checkov",
                    where,
                    f"annotation {key}: {value!r} does not name a check and a reason",
                    f"write {key}: CKV_K8S_<n>=<why the check does not apply here>",
                )
            )
    return findings


RESOURCE_CHECKS: tuple[Callable[[dict, str], list[Finding]], ...] = (
    check_canary,
    check_splitter_weights,
    check_pins,
    check_release,
    check_pod_security,
    check_model_server,
    check_checkov_skips,
)


def check_references(docs: list[dict], label: str = "") -> list[Finding]:
    """ConfigMaps, ServiceAccounts and InferenceServices that resources name exist in the
    same render (a missing kustomize nameReference shows up here)."""
    have: dict[str, set[str]] = {}
    for doc in docs:
        have.setdefault(doc.get("kind", ""), set()).add(_dig(doc, "metadata", "name"))
    findings = []

    def need(kind: str, name: Any, doc: dict, path: str) -> None:
        if (
            name
            and name not in have.get(kind, set())
            and not (kind == "ServiceAccount" and name == "default")
        ):
            close = difflib.get_close_matches(
                str(name), sorted(have.get(kind, set()) - {None}), n=1
            )
            findings.append(
                Finding(
                    "reference",
                    _at(label, doc),
                    f"{path} names {kind} {name!r}, which the render does not contain",
                    f"use an existing {kind}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + "; for a generated ConfigMap on a custom resource, list the field under "
                    "nameReference in manifests/base/kustomizeconfig.yaml",
                )
            )

    for doc in docs:
        for pod_path, pod in pod_specs(doc):
            need(
                "ServiceAccount",
                pod.get("serviceAccountName"),
                doc,
                f"{pod_path}.serviceAccountName",
            )
            for volume in pod.get("volumes") or []:
                need("ConfigMap", _dig(volume, "configMap", "name"), doc, f"{pod_path}.volumes")
            for c_path, container in _containers(pod):
                path = f"{pod_path}.{c_path}"
                for source in container.get("envFrom") or []:
                    need("ConfigMap", _dig(source, "configMapRef", "name"), doc, f"{path}.envFrom")
                for env in container.get("env") or []:
                    need(
                        "ConfigMap",
                        _dig(env, "valueFrom", "configMapKeyRef", "name"),
                        doc,
                        f"{path}.env",
                    )
        if doc.get("kind") == "InferenceGraph":
            for node_name, node in (_dig(doc, "spec", "nodes") or {}).items():
                for i, step in enumerate((node or {}).get("steps") or []):
                    need(
                        "InferenceService",
                        (step or {}).get("serviceName"),
                        doc,
                        f"spec.nodes.{node_name}.steps[{i}].serviceName",
                    )
    return findings


def _wave(doc: dict) -> int | None:
    raw = _annotations(doc).get(SYNC_WAVE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return None


def check_sync_waves(docs: list[dict], label: str = "") -> list[Finding]:
    """Argo CD applies what a resource needs first: ServiceAccounts and ConfigMaps before
    the workloads, InferenceServices before the InferenceGraph that routes to them."""
    findings = []
    waves = {}
    for doc in docs:
        wave = _wave(doc)
        if wave is None:
            findings.append(
                Finding(
                    "sync-wave",
                    _at(label, doc),
                    f"{SYNC_WAVE} is {_annotations(doc).get(SYNC_WAVE)!r}, not an integer",
                    'write the wave as a quoted integer, e.g. "1"',
                )
            )
            continue
        waves.setdefault(doc.get("kind"), []).append((wave, doc))
    prerequisites = [*waves.get("ServiceAccount", []), *waves.get("ConfigMap", [])]
    workloads = [*waves.get("InferenceService", []), *waves.get("CronJob", [])]
    ordering = [
        (prerequisites, workloads),
        (waves.get("InferenceService", []), waves.get("InferenceGraph", [])),
    ]
    for before, after in ordering:
        for wave_b, doc_b in before:
            for wave_a, doc_a in after:
                if wave_a <= wave_b:
                    findings.append(
                        Finding(
                            "sync-wave",
                            _at(label, doc_a),
                            f"sync wave {wave_a} is not after {resource_id(doc_b)}'s wave "
                            f"{wave_b}, which it needs",
                            f"give {resource_id(doc_a)} a higher {SYNC_WAVE} annotation "
                            f"than {wave_b}",
                        )
                    )
    return findings


def _mounts(isvc: dict) -> dict[str, tuple[str, ...]]:
    """mountPath -> what backs it (``("emptyDir",)``, ``("persistentVolumeClaim", claim)``)
    for the model server container of an InferenceService."""
    predictor = _dig(isvc, "spec", "predictor") or {}
    volumes = {v.get("name"): v for v in predictor.get("volumes") or [] if isinstance(v, dict)}
    containers = predictor.get("containers") or [{}]
    out = {}
    for mount in (containers[0] if isinstance(containers[0], dict) else {}).get(
        "volumeMounts"
    ) or []:
        if not isinstance(mount, dict):
            continue
        volume = volumes.get(mount.get("name")) or {}
        source = next((k for k in volume if k != "name"), "no volume")
        backing = (source,)
        if source == "persistentVolumeClaim":
            backing += (str(_dig(volume, source, "claimName")),)
        out[str(mount.get("mountPath"))] = backing
    return out


def check_ab_candidate(docs: list[dict], label: str = "") -> list[Finding]:
    """The A/B candidate mounts what the main InferenceService mounts, backed alike: the
    server writes its forecast log and caches there, and its root file system is
    read-only, so a missing volume stops it at start."""
    services = {_dig(d, "metadata", "name"): d for d in docs if d.get("kind") == "InferenceService"}
    findings = []
    for name, candidate in services.items():
        if not is_candidate(candidate):
            continue
        main = services.get(str(name).removesuffix(CANDIDATE_SUFFIX)) or next(
            (d for d in services.values() if not is_candidate(d)), None
        )
        if main is None:
            continue
        have = _mounts(candidate)
        for path, backing in sorted(_mounts(main).items()):
            if have.get(path) == backing:
                continue
            got = f"has {' '.join(have[path])} there" if path in have else "mounts nothing there"
            findings.append(
                Finding(
                    "ab",
                    _at(label, candidate),
                    f"the A/B candidate {got}, while {resource_id(main)} mounts "
                    f"{' '.join(backing)} at {path}: its root file system is read-only, so "
                    "the server cannot write there (settings.env points the forecast log at "
                    "/var/lib/tsops) and fails at start",
                    "give the candidate (manifests/components/ab/inferenceservice-candidate.yaml) "
                    "the same spec.predictor.volumes and containers[0].volumeMounts as "
                    "manifests/base/inferenceservice.yaml",
                )
            )
    return findings


def _image_role(doc: dict) -> str:
    """The images: entry that pins this resource's containers."""
    if doc.get("kind") == "InferenceService":
        return CANDIDATE_IMAGE if is_candidate(doc) else SERVING_IMAGE
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
            for c_path, container in _containers(pod):
                image = container.get("image")
                if not isinstance(image, str) or not image:
                    continue
                _, tag, digest = split_image(image)
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
                        _at(label, doc),
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


def check_signature_policy(argo_docs: list[dict], renders: dict[str, list[dict]]) -> list[Finding]:
    """A sigstore ClusterImagePolicy covers every image staging and production run, and
    their namespaces opt in to it (policy-controller checks only labelled namespaces)."""
    signed = {label: docs for label, docs in renders.items() if environment(label) in DIGEST_ENVS}
    if not signed:
        return []
    policies = [d for d in argo_docs if d.get("kind") == IMAGE_POLICY_KIND]
    if not policies:
        return [
            Finding(
                "signature",
                f"{ARGOCD}/kustomization.yaml",
                f"no {IMAGE_POLICY_KIND}: nothing checks at admission that "
                f"{' and '.join(DIGEST_ENVS)} run images the release workflow signed",
                f"add argocd/clusterimagepolicy.yaml (policy.sigstore.dev/v1beta1 "
                f"{IMAGE_POLICY_KIND}: images glob of the release images, keyless authority "
                "with issuer https://token.actions.githubusercontent.com and the subject of "
                ".github/workflows/release.yml) and list it in argocd/kustomization.yaml",
            )
        ]
    globs = [
        str(image.get("glob"))
        for policy in policies
        for image in _dig(policy, "spec", "images") or []
        if isinstance(image, dict) and image.get("glob")
    ]
    findings = []
    for label, docs in signed.items():
        for doc in docs:
            labels = _dig(doc, "metadata", "labels") or {}
            if doc.get("kind") == "Namespace" and str(labels.get(SIGSTORE_INCLUDE)) != "true":
                findings.append(
                    Finding(
                        "signature",
                        _at(label, doc),
                        f'the namespace lacks the label {SIGSTORE_INCLUDE}: "true", so '
                        "policy-controller checks no signature of what runs there",
                        f'add {SIGSTORE_INCLUDE}: "true" to the labels in '
                        f"{label.split('+')[0].split(' ')[0]}/namespace.yaml",
                    )
                )
            for pod_path, pod in pod_specs(doc):
                for c_path, container in _containers(pod):
                    image = container.get("image")
                    if not isinstance(image, str) or PLACEHOLDER_TAG.match(
                        split_image(image)[1] or ""
                    ):
                        continue
                    if not any(glob_match(g, image) for g in globs):
                        findings.append(
                            Finding(
                                "signature",
                                _at(label, doc),
                                f"{pod_path}.{c_path}.image {image!r} matches no "
                                f"{IMAGE_POLICY_KIND} glob ({', '.join(globs) or 'none'}), so "
                                "its signature is never checked",
                                "set imageGlob in argocd/gitops-settings.yaml to cover the "
                                "overlay's images: newName (e.g. <registry>/tsops-serving**), "
                                "or correct the newName",
                            )
                        )
    return findings


def policy_findings(
    docs: list[dict], label: str = "", sources: Callable[[dict], str] | None = None
) -> list[Finding]:
    """Every per-resource policy plus the cross-resource ones, for one render."""
    findings = []
    for doc in docs:
        where = _at(label, doc)
        if sources:
            where += f" ({sources(doc)})"
        for check in RESOURCE_CHECKS:
            findings += check(doc, where)
    return (
        findings
        + check_references(docs, label)
        + check_sync_waves(docs, label)
        + check_ab_candidate(docs, label)
    )


# --------------------------------------------------------------------------- argo cd


def _glob(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value or "", pattern or "")


def _ignores_canary(entry: Any) -> str | None:
    """How an ``ignoreDifferences`` entry hides canaryTrafficPercent from Argo CD, if it
    does (a pointer to the field or to a parent, a jq path, or managed-fields managers,
    which hide whatever kubectl set)."""
    if not isinstance(entry, dict):
        return None
    if entry.get("group", "") not in ("serving.kserve.io", "*") or entry.get("kind") not in (
        "InferenceService",
        "*",
    ):
        return None
    for pointer in entry.get("jsonPointers") or []:
        if pointer == CANARY_POINTER or CANARY_POINTER.startswith(str(pointer).rstrip("/") + "/"):
            return f"jsonPointers {pointer}"
    for expr in entry.get("jqPathExpressions") or []:
        expr = str(expr).strip()
        if "canaryTrafficPercent" in expr or CANARY_JQ.startswith(expr.rstrip(".") + "."):
            return f"jqPathExpressions {expr}"
    if entry.get("managedFieldsManagers"):
        return f"managedFieldsManagers {entry['managedFieldsManagers']}"
    return None


def check_argocd(
    argo_docs: list[dict],
    rendered_kinds: dict[str, set[tuple[str, str, str]]] | None = None,
    label: str = ARGOCD,
) -> list[Finding]:
    """Sync policy per environment, git as the only owner of the canary share, production
    on its own revision, and a project as narrow as what the overlays render.

    ``rendered_kinds`` maps an Application's ``source.path`` to the (group, kind, name)
    of everything its overlay renders (with components switched on, which a promotion
    may do).
    """
    rendered_kinds = rendered_kinds or {}
    findings = []
    projects = {_dig(d, "metadata", "name"): d for d in argo_docs if d.get("kind") == "AppProject"}
    used: dict[str, set[tuple[str, str]]] = {}

    def add(doc: dict, problem: str, fix: str) -> None:
        findings.append(Finding("argocd", f"{label}: {resource_id(doc)}", problem, fix))

    for project in projects.values():
        spec = project.get("spec") or {}
        if any(r == "*" for r in spec.get("sourceRepos") or []):
            add(project, "sourceRepos allows any repository", "list only this repository's URL")
        for entry in [
            *(spec.get("namespaceResourceWhitelist") or []),
            *(spec.get("clusterResourceWhitelist") or []),
        ]:
            if "*" in (entry.get("group"), entry.get("kind")):
                add(
                    project,
                    f"resource whitelist entry {entry} allows every kind",
                    "list the group and kind of each resource the overlays render",
                )
    revisions: dict[str, tuple[dict, str]] = {}
    for app in (d for d in argo_docs if d.get("kind") == "Application"):
        spec = app.get("spec") or {}
        source = spec.get("source") or {}
        path = str(source.get("path", "")).rstrip("/")
        sync = spec.get("syncPolicy") or {}
        automated = sync.get("automated")
        auto_on = isinstance(automated, dict) and automated.get("enabled", True) is not False
        revisions[path.rsplit("/", 1)[-1]] = (app, str(source.get("targetRevision") or "HEAD"))
        for entry in spec.get("ignoreDifferences") or []:
            how = _ignores_canary(entry)
            if how:
                add(
                    app,
                    f"ignoreDifferences hides {CANARY_POINTER} of InferenceServices ({how}): "
                    "the canary share would have two owners, git and the live object, and "
                    "the value that a promotion, `tsops canary` or `tsops rollback` writes "
                    "to git would not reach the cluster (with RespectIgnoreDifferences=true "
                    "never; without it only at the next sync of another change)",
                    "remove that ignoreDifferences entry (and RespectIgnoreDifferences=true "
                    "if nothing else needs it): git owns canaryTrafficPercent and Argo CD "
                    "applies it on every sync; after a kubectl adjustment, merge the change "
                    "scripts/canary.sh prepares",
                )
        if path.endswith("overlays/production"):
            if auto_on:
                add(
                    app,
                    "production syncs automatically",
                    "remove spec.syncPolicy.automated: production is synced by hand after a "
                    "promotion pull request is merged",
                )
        elif path and not (auto_on and automated.get("prune") and automated.get("selfHeal")):
            add(
                app,
                f"{path} does not sync automatically with prune and selfHeal",
                "set spec.syncPolicy.automated: {prune: true, selfHeal: true}",
            )
        if rendered_kinds and path not in rendered_kinds:
            add(
                app,
                f"source.path {path!r} is not an overlay of this repository",
                f"point it at one of {sorted(rendered_kinds)}",
            )
        project = projects.get(spec.get("project"))
        if project is None:
            add(
                app,
                f"project {spec.get('project')!r} is not defined in {label}",
                "use the AppProject defined next to it (tsops)",
            )
            continue
        pspec = project.get("spec") or {}
        dest = spec.get("destination") or {}
        if not any(
            _glob(d.get("namespace", ""), dest.get("namespace", ""))
            and (
                _glob(d.get("server", ""), dest.get("server", ""))
                or _glob(d.get("name", ""), dest.get("name", ""))
            )
            for d in pspec.get("destinations") or []
        ):
            add(
                app,
                f"destination {dest} is not among the project's destinations",
                "add it to the AppProject's spec.destinations (or fix the Application's)",
            )
        if not any(_glob(r, source.get("repoURL", "")) for r in pspec.get("sourceRepos") or []):
            add(
                app,
                f"repoURL {source.get('repoURL')!r} is not in the project's sourceRepos",
                "set both from argocd/gitops-settings.yaml",
            )
        kinds = rendered_kinds.get(path, set())
        for group, kind, name in sorted(kinds):
            cluster = kind in CLUSTER_SCOPED
            key = "clusterResourceWhitelist" if cluster else "namespaceResourceWhitelist"
            entries = pspec.get(key) or []
            match = [
                e
                for e in entries
                if _glob(e.get("group", ""), group)
                and _glob(e.get("kind", ""), kind)
                and (not cluster or _glob(e.get("name") or "*", name))
            ]
            if not match:
                add(
                    project,
                    f"{path} renders {kind} {name!r} (group {group!r}), which {key} does not allow",
                    f"add {{group: {group!r}, kind: {kind}}} to spec.{key}",
                )
            for e in match:
                used.setdefault(project["metadata"]["name"], set()).add(
                    (e.get("group"), e.get("kind"))
                )
    if "staging" in revisions and "production" in revisions:
        app, revision = revisions["production"]
        if revision == revisions["staging"][1]:
            add(
                app,
                f"production tracks targetRevision {revision!r}, the same revision as "
                "staging: a change to manifests/base merged there would reach production at "
                "its next sync without a promotion, before staging ran it",
                "set productionRevision in argocd/gitops-settings.yaml to the branch a merged "
                "promotion fast-forwards (deploy/production), and keep targetRevision (main) "
                "for staging",
            )
    if rendered_kinds:
        for name, project in projects.items():
            pspec = project.get("spec") or {}
            for key in ("namespaceResourceWhitelist", "clusterResourceWhitelist"):
                for e in pspec.get(key) or []:
                    if (e.get("group"), e.get("kind")) not in used.get(name, set()):
                        add(
                            project,
                            f"{key} allows {e.get('kind')} (group {e.get('group')!r}), which no "
                            "overlay renders",
                            "remove the entry: the project should allow only what it deploys",
                        )
    return findings


# --------------------------------------------------------------------------- kustomize


# libyaml's loader when PyYAML has it: the KServe CRD alone is 2 MB of YAML.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_all(text: Any) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]


def _read_yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return _load_all(f)


def kustomization_file(directory: Path) -> Path | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    return None


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise ManifestError(
            "kubectl not found on PATH: install kubectl 1.32 or newer (it contains "
            "kustomize, which renders the overlays); e.g. apt-get install kubectl from the "
            "Kubernetes package repository"
        )
    return kubectl


def render(directory: Path) -> list[dict]:
    """``kubectl kustomize DIR`` parsed; raises CalledProcessError with kustomize's
    message if it cannot render."""
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return [d for d in _load_all(result.stdout) if isinstance(d, dict)]


def _kustomization_refs(kdir: Path, kust: dict) -> set[Path]:
    """Files of ``kdir`` that its kustomization uses."""
    refs: set[str] = set()
    for key in (
        "resources",
        "components",
        "configurations",
        "crds",
        "transformers",
        "generators",
        "patchesStrategicMerge",
        "validators",
    ):
        refs.update(str(r) for r in kust.get(key) or [] if isinstance(r, str))
    for key in ("patches", "patchesJson6902"):
        refs.update(
            str(p["path"]) for p in kust.get(key) or [] if isinstance(p, dict) and p.get("path")
        )
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in kust.get(key) or []:
            refs.update(str(e) for e in gen.get("envs") or [])
            if gen.get("env"):
                refs.add(str(gen["env"]))
            refs.update(str(f).split("=", 1)[-1] for f in gen.get("files") or [])
    if kust.get("openapi", {}).get("path") if isinstance(kust.get("openapi"), dict) else False:
        refs.add(kust["openapi"]["path"])
    return {(kdir / r).resolve() for r in refs}


def check_unused_files(kdir: Path, kust: dict, label: str) -> list[Finding]:
    """A YAML or .env file that the kustomization does not use changes nothing, which for
    a patch file means an edit that silently never happens."""
    used = _kustomization_refs(kdir, kust)
    findings = []
    for path in sorted(kdir.iterdir()):
        if path.is_dir() or path.name.startswith(".") or path.name.startswith("kustomization"):
            continue
        if path.suffix not in (".yaml", ".yml", ".env", ".json"):
            continue
        if path.resolve() not in used:
            findings.append(
                Finding(
                    "kustomize",
                    f"{label}/{path.name}",
                    f"{path.name} is not used by {label}/kustomization.yaml, so it changes nothing",
                    "list it under patches: (or resources:) in kustomization.yaml, or delete it",
                )
            )
    return findings


def _selector_match(target: dict, doc: dict) -> bool:
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/") if "/" in api else ("", "", api)
    meta = doc.get("metadata") or {}
    for key, value in (("group", group), ("version", version), ("kind", doc.get("kind"))):
        if target.get(key) not in (None, "") and target[key] != value:
            return False
    for key in ("name", "namespace"):
        if target.get(key) and not re.fullmatch(str(target[key]), str(meta.get(key) or "")):
            return False
    for key, meta_key in (("labelSelector", "labels"), ("annotationSelector", "annotations")):
        have = meta.get(meta_key) or {}
        for term in filter(None, (t.strip() for t in str(target.get(key) or "").split(","))):
            if "!=" in term:
                k, v = (x.strip() for x in term.split("!=", 1))
                ok = have.get(k) != v
            elif "=" in term:
                k, v = (x.strip() for x in term.replace("==", "=").split("=", 1))
                ok = have.get(k) == v
            else:
                ok = (term[1:] not in have) if term.startswith("!") else (term in have)
            if not ok:
                return False
    return True


def check_patch_targets(kdir: Path, kust: dict, docs: list[dict], label: str) -> list[Finding]:
    """Every patch of the kustomization matches a resource of the render: kustomize
    applies a patch whose ``target`` selects nothing without a word."""
    findings = []
    entries = [
        *(p for p in kust.get("patches") or [] if isinstance(p, dict)),
        *({"path": p} for p in kust.get("patchesStrategicMerge") or [] if isinstance(p, str)),
        *(p for p in kust.get("patchesJson6902") or [] if isinstance(p, dict)),
    ]
    for entry in entries:
        where = f"{label}/{entry['path']}" if entry.get("path") else f"{label}/kustomization.yaml"
        selectors = []
        if entry.get("target"):
            selectors.append(dict(entry["target"]))
        else:
            try:
                if entry.get("path"):
                    content = _read_yaml_docs(kdir / entry["path"])
                else:
                    content = _load_all(entry.get("patch") or "")
            except (OSError, yaml.YAMLError) as e:
                findings.append(
                    Finding("kustomize", where, f"cannot read the patch: {e}", "fix the file")
                )
                continue
            for patch in content:
                if isinstance(patch, dict):
                    api = patch.get("apiVersion", "")
                    group, _, version = api.rpartition("/") if "/" in api else ("", "", api)
                    selectors.append(
                        {
                            "group": group,
                            "version": version,
                            "kind": patch.get("kind"),
                            "name": re.escape(str(_dig(patch, "metadata", "name") or "")) or None,
                        }
                    )
        for selector in selectors:
            if not any(_selector_match(selector, doc) for doc in docs):
                same_kind = sorted(
                    _dig(d, "metadata", "name")
                    for d in docs
                    if d.get("kind") == selector.get("kind")
                )
                findings.append(
                    Finding(
                        "kustomize",
                        where,
                        f"the patch targets {selector.get('kind')} {selector.get('name')!r}, "
                        f"which the render of {label} does not contain, so it does nothing",
                        "point the patch (metadata.name, or target: in kustomization.yaml) at "
                        f"a rendered {selector.get('kind')}: {same_kind or 'there is none'}",
                    )
                )
    return findings


class SourceIndex:
    """Which files under manifests/ and argocd/ declare or patch a resource, so that a
    finding on a rendered resource names the files to edit."""

    def __init__(self, repo_root: Path):
        self.root = Path(repo_root)
        self.files: dict[tuple[str, str], list[str]] = {}
        crds = (self.root / "manifests" / CRDS_DIR_NAME).resolve()
        for top in ("manifests", ARGOCD):
            for path in sorted((self.root / top).rglob("*.y*ml")):
                if path.resolve().is_relative_to(crds):
                    continue  # 4 MB of CRDs, not manifests
                rel = path.relative_to(self.root).as_posix()
                try:
                    docs = _read_yaml_docs(path)
                except (OSError, yaml.YAMLError):
                    continue
                for doc in docs:
                    if isinstance(doc, dict) and doc.get("kind") and _dig(doc, "metadata", "name"):
                        self._add(doc["kind"], doc["metadata"]["name"], rel)
                    if isinstance(doc, dict) and path.name.startswith("kustomization"):
                        for gen in doc.get("configMapGenerator") or []:
                            if isinstance(gen, dict) and gen.get("name"):
                                self._add("ConfigMap", gen["name"], rel)
                        for p in doc.get("patches") or []:
                            t = p.get("target") if isinstance(p, dict) else None
                            if t and t.get("kind") and t.get("name") and p.get("path"):
                                self._add(
                                    t["kind"],
                                    t["name"],
                                    (path.parent / p["path"]).relative_to(self.root).as_posix(),
                                )

    def _add(self, kind: str, name: str, rel: str) -> None:
        self.files.setdefault((kind, str(name)), [])
        if rel not in self.files[(kind, str(name))]:
            self.files[(kind, str(name))].append(rel)

    def paths(self, doc: dict, overlay: str = "") -> list[str]:
        """Files declaring or patching ``doc``; of the overlays, only ``overlay``'s."""
        name = str(_dig(doc, "metadata", "name"))
        files = self.files.get((doc.get("kind", ""), name), [])
        if not files and doc.get("kind") == "ConfigMap":
            # generated: the name carries kustomize's content hash
            files = self.files.get(("ConfigMap", re.sub(r"-[a-z0-9]{10}$", "", name)), [])
        return [f for f in files if not overlay or "/overlays/" not in f or f.startswith(overlay)]

    def __call__(self, doc: dict, overlay: str = "") -> str:
        return ", ".join(self.paths(doc, overlay)) or "a generated resource"

    def fixer(self, doc: dict, overlay: str = "") -> Callable[[str | None], str]:
        """For schema errors: the files that hold an unexpected field, else all of them."""

        def locate(unexpected: str | None) -> str:
            files = self.paths(doc, overlay)
            if unexpected:
                pattern = re.compile(rf"^\s*-?\s*[\"']?{re.escape(unexpected)}[\"']?\s*:", re.M)
                holding = [f for f in files if pattern.search(_read_text(self.root / f))]
                files = holding or files
            return ", ".join(files) or "a generated resource"

        return locate


@functools.lru_cache(maxsize=256)
def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# --------------------------------------------------------------------------- checkov


def checkov_command() -> list[str]:
    """How to run checkov: $TSOPS_CHECKOV, a checkov on PATH or next to this Python, or
    ``uv tool run`` of the pinned version (uv ships with the project's environment)."""
    if os.environ.get(CHECKOV_ENV):
        return shlex.split(os.environ[CHECKOV_ENV])
    here = Path(sys.executable).parent
    found = shutil.which("checkov") or (
        str(here / "checkov") if (here / "checkov").exists() else None
    )
    if found:
        return [found]
    uv = shutil.which("uv") or (str(here / "uv") if (here / "uv").exists() else None)
    if uv:
        return [uv, "tool", "run", "--quiet", "--from", f"checkov=={CHECKOV_VERSION}", "checkov"]
    raise ManifestError(
        f"checkov not found: install it apart from the project (`uv tool install "
        f"checkov=={CHECKOV_VERSION}`; its dependencies conflict with mlflow's), set "
        f"{CHECKOV_ENV} to its command, or skip it with --no-checkov"
    )


def parse_checkov(output: str, origin: Callable[[str, str], str]) -> list[Finding]:
    """Failed checks of checkov's JSON report; ``origin(file, resource)`` says where."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as e:
        raise ManifestError(f"checkov printed no JSON report: {output[:500]!r}") from e
    reports = data if isinstance(data, list) else [data]
    findings = []
    for report in reports:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            check_id = failed.get("check_id")
            findings.append(
                Finding(
                    "checkov",
                    origin(failed.get("file_path", ""), failed.get("resource", "")),
                    f"{check_id} {failed.get('check_name')}",
                    "fix the resource"
                    + (f" (see {failed['guideline']})" if failed.get("guideline") else "")
                    + f", or, if it does not apply, annotate it with checkov.io/skip1: "
                    f"{check_id}=<reason>",
                )
            )
    return findings


def run_checkov(
    renders: dict[str, list[dict]],
    index: SourceIndex | None = None,
    dockerfile: Path | None = None,
) -> list[Finding]:
    """checkov's Kubernetes checks over every render, and its Dockerfile checks over the
    serving image's ``dockerfile`` (a base pinned by digest, a non-root user, a
    HEALTHCHECK), in one run."""
    with tempfile.TemporaryDirectory(prefix="tsops-checkov-") as tmp:
        files = {}
        for i, (label, docs) in enumerate(renders.items()):
            name = f"{i:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', label).strip('-')}.yaml"
            (Path(tmp) / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
            files[name] = label
        frameworks = ["kubernetes"]
        if dockerfile is not None and Path(dockerfile).exists():
            shutil.copy(dockerfile, Path(tmp) / "Dockerfile")
            files["Dockerfile"] = "Dockerfile"
            frameworks.append("dockerfile")
        command = [
            *checkov_command(),
            "--directory",
            tmp,
            "--framework",
            *frameworks,
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ]
        env = {**os.environ, "ANSI_COLORS_DISABLED": "1", "LOG_LEVEL": "ERROR"}
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        except FileNotFoundError as e:
            raise ManifestError(f"cannot run checkov ({command[0]}): {e}") from e
        if result.returncode not in (0, 1):
            raise ManifestError(
                f"checkov failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )

        def origin(file_path: str, resource: str) -> str:
            label = files.get(Path(file_path).name, file_path)
            if label == "Dockerfile":
                return f"Dockerfile: {resource}"
            kind, _, rest = resource.partition(".")
            name = rest.rsplit(".", 1)[-1] if rest else ""
            where = f"{label}: {kind}/{name}"
            if index:
                where += f" ({index({'kind': kind, 'metadata': {'name': name}}, label)})"
            return where

        if not result.stdout.strip():
            return []
        return parse_checkov(result.stdout, origin)


def _merge_renders(findings: list[Finding]) -> list[Finding]:
    """One finding per resource and problem, naming every render it occurs in (a base
    resource fails the same check in each overlay and each A/B variant)."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for f in findings:
        label, sep, rest = f.where.partition(": ")
        if not sep:
            label, rest = "", f.where
        merged.setdefault((f.check, rest, f.problem, f.fix), []).append(label)
    out = []
    for (check, rest, problem, fix), labels in merged.items():
        prefix = ", ".join(sorted({label for label in labels if label}))
        out.append(Finding(check, f"{prefix}: {rest}" if prefix else rest, problem, fix))
    return out


# --------------------------------------------------------------------------- validate_all


@contextlib.contextmanager
def _timer(report: Report, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        report.timings[name] = report.timings.get(name, 0.0) + time.perf_counter() - start


def _edit_kustomization(path: Path, edit: Callable[[Any], None]) -> None:
    from ruamel.yaml import YAML

    ry = YAML()
    ry.preserve_quotes = True
    data = ry.load(path.read_text())
    edit(data)
    with path.open("w") as f:
        ry.dump(data, f)


def render_variant(
    repo_root: Path, overlay: str, edit: Callable[[Any], None], workdir: Path
) -> list[dict]:
    """Render ``overlay`` (e.g. manifests/overlays/staging) from a copy of manifests/ whose
    overlay kustomization ``edit`` changed; the repository itself is not touched."""
    copy = Path(tempfile.mkdtemp(prefix="variant-", dir=workdir))
    source = Path(repo_root) / "manifests"
    shutil.copytree(
        source,
        copy / "manifests",
        # the vendored CRDs are no kustomize input: 4 MB not to copy for each variant
        ignore=lambda d, names: [CRDS_DIR_NAME] if Path(d) == source else [],
    )
    kdir = copy / overlay
    _edit_kustomization(kustomization_file(kdir), edit)
    return render(kdir)


def _main_image_entry(kust: dict) -> dict | None:
    """The overlay's images: entry of the model server (not the batch jobs' nor an A/B
    candidate's)."""
    entries = image_entries(kust)
    if SERVING_IMAGE in entries:
        return entries[SERVING_IMAGE]
    other = [e for n, e in entries.items() if n not in (BATCH_IMAGE, CANDIDATE_IMAGE)]
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
            for c_path, c in _containers(pod):
                old_images[(resource_id(doc), f"{pod_path}.{c_path}")] = c.get("image")
    serving, batch = bumped.get(SERVING_IMAGE), bumped.get(BATCH_IMAGE)
    reached_isvc = False
    findings = []

    def add(doc: dict, problem: str, fix: str) -> None:
        findings.append(Finding("image-bump", f"{label}: {resource_id(doc)}", problem, fix))

    for doc in after:
        kind = doc.get("kind")
        for pod_path, pod in pod_specs(doc):
            for c_path, c in _containers(pod):
                path = f"{pod_path}.{c_path}.image"
                image = c.get("image")
                old = old_images.get((resource_id(doc), f"{pod_path}.{c_path}"))
                if kind == "InferenceService" and is_candidate(doc):
                    if old is not None and image != old:
                        add(
                            doc,
                            f"{path} changed to {image!r} with the overlay's {SERVING_IMAGE}/"
                            f"{BATCH_IMAGE} entries: the A/B candidate must keep its own release",
                            f"give the candidate the placeholder image {CANDIDATE_IMAGE}:"
                            "pin-in-overlay (manifests/components/ab/"
                            "inferenceservice-candidate.yaml)",
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


@dataclass
class _Render:
    """One kustomize render to run: what it is, how to run it, where to blame a failure."""

    label: str
    run: Callable[[], list[dict]]
    blame: str
    docs: list[dict] | None = None
    error: Finding | None = None


def _run_renders(jobs: list[_Render], report: Report) -> None:
    """Run the renders side by side (each is a kubectl process); a failure is kept as
    the job's finding."""
    from concurrent.futures import ThreadPoolExecutor

    with _timer(report, "render"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(job, pool.submit(job.run)) for job in jobs]
        for job, future in futures:
            try:
                job.docs = future.result()
            except subprocess.CalledProcessError as e:
                job.error = Finding(
                    "kustomize",
                    job.blame,
                    f"kubectl kustomize failed: {_kustomize_error(e.stderr or '')}",
                    "fix the kustomization or the file kustomize names in its message",
                )


def _kustomize_error(stderr: str) -> str:
    """kustomize's own message, without kubectl's log prefix (timestamp, pid, source)."""
    match = re.search(r'err="(.*)"\s*$', stderr.strip(), re.S)
    return (match.group(1).replace('\\"', '"') if match else stderr).strip()


def _release_annotations(overlay: Path, kust: dict) -> tuple[str, dict] | None:
    """(InferenceService name, its release annotations) as the overlay's patch files
    write them (model-version.yaml), or None."""
    for entry in kust.get("patches") or []:
        if not isinstance(entry, dict) or not entry.get("path"):
            continue
        try:
            patches = _read_yaml_docs(overlay / entry["path"])
        except (OSError, yaml.YAMLError):
            continue
        for patch in patches:
            if not isinstance(patch, dict) or patch.get("kind") != "InferenceService":
                continue
            notes = _annotations(patch)
            name = str(_dig(patch, "metadata", "name") or "")
            if notes.get(RELEASE) and name and not name.endswith(CANDIDATE_SUFFIX):
                keys = (RELEASE, REGISTERED_MODEL, MODEL_VERSION)
                return name, {k: str(notes[k]) for k in keys if k in notes}
    return None


def _candidate_pin(overlay: Path, kust: dict, component: Path) -> Callable[[Any], None] | None:
    """For an overlay that pins no A/B candidate, what its render with ``component``
    switched on needs to be a release: the candidate pinned to the overlay's own release
    (its tsops-serving entry and model-version.yaml's annotations), as `tsops ab` would
    write for an A/B test of a release against itself. The component's own files are
    then checked as they are; which release a real A/B test compares is only known in
    the overlay that runs one, whose render is checked with its own pins."""
    entries = image_entries(kust)
    uses_candidate = any(
        f"{CANDIDATE_IMAGE}:" in _read_text(path) for path in sorted(component.glob("*.y*ml"))
    )
    if not uses_candidate or CANDIDATE_IMAGE in entries or SERVING_IMAGE not in entries:
        return None
    pin = {
        k: entries[SERVING_IMAGE][k]
        for k in ("newName", "newTag", "digest")
        if entries[SERVING_IMAGE].get(k)
    }
    release = _release_annotations(overlay, kust)

    def edit(data: Any) -> None:
        data.setdefault("images", []).append({"name": CANDIDATE_IMAGE, **pin})
        if release:
            name, notes = release
            patch = {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": f"{name}{CANDIDATE_SUFFIX}", "annotations": notes},
            }
            data.setdefault("patches", []).append({"patch": yaml.safe_dump(patch)})

    return edit


def _overlay_jobs(
    repo_root: Path, overlay: Path, kust: dict, components: list[Path], workdir: Path
) -> tuple[_Render, list[_Render], _Render | None, dict[str, str]]:
    """The overlay's own render, one with each component it does not use switched on,
    and one with its tsops-serving and tsops-batch pins bumped (None when it pins no
    model server image) with the images those entries then render."""
    rel = overlay.relative_to(repo_root).as_posix()
    main = _Render(rel, functools.partial(render, overlay), f"{rel}/kustomization.yaml")
    used = {(overlay / c).resolve() for c in kust.get("components") or []}
    variants = []
    for component in components:
        if component.resolve() in used:
            continue
        relpath = os.path.relpath(component, overlay)
        pin = _candidate_pin(overlay, kust, component)

        def switch_on(data: Any, relpath: str = relpath, pin: Any = pin) -> None:
            data.setdefault("components", []).append(relpath)
            if pin:
                pin(data)

        crel = component.relative_to(repo_root).as_posix()
        variants.append(
            _Render(
                f"{rel}+{component.name}",
                functools.partial(render_variant, repo_root, rel, switch_on, workdir),
                f"{crel}/kustomization.yaml (switched on in {rel})",
            )
        )
    entry = _main_image_entry(kust)
    if entry is None:
        return main, variants, None, {}
    entries = image_entries(kust)
    targets = {str(entry.get("name")): entry}
    if BATCH_IMAGE in entries:
        targets[BATCH_IMAGE] = entries[BATCH_IMAGE]
    # Different tags for the two, so that the render tells which entry moved which image.
    tags = {
        name: f"{e.get('newTag') or 'untagged'}-bumpcheck-{i}"
        for i, (name, e) in enumerate(targets.items())
    }
    bumped_images = {
        SERVING_IMAGE if e is entry else name: entry_image({**e, "newTag": tags[name]})
        for name, e in targets.items()
    }

    def bump(data: Any, tags: dict[str, str] = tags) -> None:
        for e in data.get("images") or []:
            if e.get("name") in tags:
                e["newTag"] = tags[e.get("name")]

    bumped = _Render(
        f"{rel} (image bump)",
        functools.partial(render_variant, repo_root, rel, bump, workdir),
        f"{rel}/kustomization.yaml",
    )
    return main, variants, bumped, bumped_images


def validate_all(
    repo_root: Path,
    crds_dir: Path | None = None,
    *,
    k8s_version: str = KUBERNETES_VERSION,
    checkov: bool = True,
) -> Report:
    """Render every overlay (alone and with each component), the Argo CD objects, and run
    every check on them. Raises :class:`ManifestError` only when a tool or an input is
    missing; everything wrong with the manifests is a finding of the report. The CRDs
    are the repository's own (``manifests/crds``) unless ``crds_dir`` names others."""
    repo_root = Path(repo_root).resolve()
    report = Report()
    with _timer(report, "crds"):
        schemas = load_crds(Path(crds_dir) if crds_dir else repo_root / DEFAULT_CRDS)
    _kubectl()
    index = SourceIndex(repo_root)
    overlays = sorted(
        p for p in (repo_root / OVERLAYS).glob("*") if p.is_dir() and kustomization_file(p)
    )
    components = sorted(
        p for p in (repo_root / COMPONENTS).glob("*") if p.is_dir() and kustomization_file(p)
    )
    if not overlays:
        raise ManifestError(f"no overlay with a kustomization.yaml under {repo_root / OVERLAYS}")
    argocd_dir = repo_root / ARGOCD

    def kustomization(directory: Path) -> dict:
        docs = _read_yaml_docs(kustomization_file(directory))
        return docs[0] if docs and isinstance(docs[0], dict) else {}

    with tempfile.TemporaryDirectory(prefix="tsops-manifests-") as tmp:
        plans = []
        jobs = []
        for overlay in overlays:
            kust = kustomization(overlay)
            main, variants, bumped, bumped_images = _overlay_jobs(
                repo_root, overlay, kust, components, Path(tmp)
            )
            plans.append((overlay, kust, main, variants, bumped, bumped_images))
            jobs += [main, *variants, *([bumped] if bumped else [])]
        argo = None
        if kustomization_file(argocd_dir):
            argo = _Render(
                ARGOCD, functools.partial(render, argocd_dir), f"{ARGOCD}/kustomization.yaml"
            )
            jobs.append(argo)
        _run_renders(jobs, report)

    renders: dict[str, list[dict]] = {}
    kinds_by_path: dict[str, set[tuple[str, str, str]]] = {}
    for overlay, kust, main, variants, bumped, bumped_images in plans:
        rel = main.label
        kinds_by_path[rel] = set()
        report.findings += check_unused_files(overlay, kust, rel)
        report.findings += check_batch_entry(kust, rel)
        if main.docs is None:
            report.findings.append(main.error)  # its variants fail the same way
            continue
        report.findings += [j.error for j in [*variants, bumped] if j and j.error]
        report.findings += check_patch_targets(overlay, kust, main.docs, rel)
        renders[rel] = main.docs
        renders.update({v.label: v.docs for v in variants if v.docs is not None})
        if bumped is None:
            report.findings.append(
                Finding(
                    "image-bump",
                    f"{rel}/kustomization.yaml",
                    "no images: entry pins the model server's image",
                    "add images: [{name: tsops-serving, newName: <registry>/tsops-serving, "
                    "newTag: <model>-vX.Y.Z}]",
                )
            )
        elif bumped.docs is not None:
            report.findings += image_bump_findings(main.docs, bumped.docs, bumped_images, rel)
    for component in components:
        crel = component.relative_to(repo_root).as_posix()
        kust = kustomization(component)
        report.findings += check_unused_files(component, kust, crel)
        switched_on = [d for label, d in renders.items() if label.endswith(f"+{component.name}")]
        if switched_on:
            report.findings += check_patch_targets(component, kust, switched_on[0], crel)

    for label, docs in renders.items():
        report.renders[label] = len(docs)
        overlay = label.split("+")[0]
        kinds_by_path.setdefault(overlay, set()).update(
            (_group(d.get("apiVersion", "")), d.get("kind", ""), _dig(d, "metadata", "name") or "")
            for d in docs
        )
        with _timer(report, "schemas"):
            for doc in docs:
                report.findings += schema_findings(
                    doc,
                    schemas,
                    k8s_version,
                    f"{label}: {resource_id(doc)}",
                    index.fixer(doc, overlay),
                )
        with _timer(report, "policies"):
            report.findings += policy_findings(docs, label, lambda d, o=overlay: index(d, o))
            report.findings += check_digest_pins(docs, label)

    if argo is None:
        report.findings.append(
            Finding(
                "argocd",
                ARGOCD,
                "no argocd/kustomization.yaml, so the Argo CD objects are neither validated "
                "nor applied together",
                "add argocd/kustomization.yaml listing the AppProject and the Applications",
            )
        )
    else:
        report.findings += check_unused_files(argocd_dir, kustomization(argocd_dir), ARGOCD)
        if argo.error:
            report.findings.append(argo.error)
        if argo.docs is not None:
            report.renders[ARGOCD] = len(argo.docs)
            with _timer(report, "schemas"):
                for doc in argo.docs:
                    report.findings += schema_findings(
                        doc, schemas, k8s_version, f"{ARGOCD}: {resource_id(doc)}", index.fixer(doc)
                    )
            with _timer(report, "policies"):
                report.findings += check_argocd(argo.docs, kinds_by_path)
                report.findings += check_signature_policy(argo.docs, renders)

    if checkov:
        with _timer(report, "checkov"):
            report.findings += run_checkov(renders, index, Path(repo_root) / "Dockerfile")
    report.findings = _merge_renders(report.findings)
    return report


# --------------------------------------------------------------------------- CLI

manifests_app = typer.Typer(
    help="Render and validate the Kubernetes manifests (manifests/, argocd/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# A callback keeps ``validate`` a subcommand when the app runs on its own (Typer
# collapses a one-command app into that command).
@manifests_app.callback()
def _manifests() -> None:
    """Render and validate the Kubernetes manifests (manifests/, argocd/)."""


@manifests_app.command("validate")
def validate_cmd(
    crds: Annotated[
        Path | None,
        typer.Option(
            "--crds",
            envvar=CRDS_ENV,
            help="directory with the CRDs to validate custom resources against "
            f"(default: <root>/{DEFAULT_CRDS}, the vendored upstream CRDs)",
        ),
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="repository root")] = Path("."),
    k8s_version: Annotated[
        str, typer.Option("--kubernetes-version", help="Kubernetes schemas to validate against")
    ] = KUBERNETES_VERSION,
    checkov: Annotated[
        bool, typer.Option("--checkov/--no-checkov", help="also run checkov (slower)")
    ] = True,
) -> None:
    """Render every overlay and argocd/, validate schemas strictly, check the policies."""
    crds = crds or root / DEFAULT_CRDS
    try:
        report = validate_all(root, crds, k8s_version=k8s_version, checkov=checkov)
    except ManifestError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    for finding in report.findings:
        typer.echo(f"FAIL {finding}")
    typer.echo(report.summary(), err=not report.ok)
    if not report.ok:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """``python -m tsops.deploy.manifests validate ...``; returns the exit code."""
    try:
        manifests_app(args=argv, prog_name="tsops manifests")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
