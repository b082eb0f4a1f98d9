"""Strict schema validation of every rendered resource.

Built-in kinds pass the Kubernetes OpenAPI schemas strictly (``kubernetes-validate``,
unknown fields rejected, Kubernetes 1.32 by default). Custom resources (KServe
InferenceService/InferenceGraph, Argo CD Application, ApplicationSet, AppProject,
sigstore ClusterImagePolicy) pass their CRD's ``openAPIV3Schema`` with
``additionalProperties: false`` added wherever the schema lists ``properties``, which is
what the API server's strict field validation does (the CRDs themselves never say it,
so a misspelt field would pass). A finding names the files that hold the field.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tsops.deploy.manifests.render import CRDS_DIR_NAME, read_yaml_docs
from tsops.deploy.manifests.report import Finding, ManifestError
from tsops.deploy.manifests.resources import dig, field_path, resource_id

KUBERNETES_VERSION = "1.32"
# named in messages; tsops.core.settings reads it
CRDS_ENV = "TSOPS_CRDS_DIR"
# The vendored upstream CRDs (manifests/crds/README.md): the default, so that validation
# runs the same on every clone, offline.
DEFAULT_CRDS = f"manifests/{CRDS_DIR_NAME}"


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
            schema = dig(version, "schema", "openAPIV3Schema")
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
        docs.extend(d for d in read_yaml_docs(Path(name)) if isinstance(d, dict))
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
            f"{field_path(error.absolute_path)} allows: {', '.join(known[:25])}"
            + (" ..." if len(known) > 25 else "")
        )
    return f"change {field_path(error.absolute_path)} in {source} to match the schema"


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
                f"{field_path(e.absolute_path)}: {e.message}",
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
        prefix = field_path(e.absolute_path) if e.absolute_path else label or "(top level)"
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
