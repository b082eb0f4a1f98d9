"""Reading parsed Kubernetes resources: names, annotations, the pod specs a resource
runs (an InferenceService component is one) and their containers, what every check
needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tsops.deploy.overlays import second_service

WORKLOAD_TEMPLATE = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}


ISVC_COMPONENTS = ("predictor", "transformer", "explainer")  # each a pod spec of its own


def resource_id(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def located(label: str, doc: dict) -> str:
    """``<render label>: Kind/name``, where a finding on a rendered resource is."""
    return f"{label}: {resource_id(doc)}" if label else resource_id(doc)


def api_group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def annotations_of(doc: dict) -> dict:
    return (doc.get("metadata") or {}).get("annotations") or {}


def dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def field_path(parts: Iterable[Any]) -> str:
    """``spec.predictor.containers[0]`` from a JSON-schema error's path."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def is_int(value: Any) -> bool:
    # YAML's true/false are bools, which Python counts as ints
    return isinstance(value, int) and not isinstance(value, bool)


def is_candidate(doc: dict) -> bool:
    """An InferenceService a strategy's component adds (the A/B candidate or third arm,
    blue/green's green colour, the shadow: ``tsops.deploy.overlays.SECOND_SERVICES``), not
    an environment's own release."""
    return doc.get("kind") == "InferenceService" and (
        second_service(str(dig(doc, "metadata", "name") or "")) is not None
        or str(dig(doc, "metadata", "labels", "app.kubernetes.io/component") or "")
        in ("predictor-candidate", "predictor-green", "predictor-shadow", "predictor-third")
    )


def environment(label: str) -> str:
    """``manifests/overlays/staging+ab (image bump)`` -> ``staging``."""
    return label.split("+")[0].split(" ")[0].rstrip("/").rsplit("/", 1)[-1]


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(path, pod spec) of every pod a resource runs; an InferenceService component
    (predictor, transformer, explainer) is a pod spec of its own."""
    kind = doc.get("kind")
    if kind == "InferenceService":
        spec = doc.get("spec") or {}
        return [(f"spec.{c}", spec[c]) for c in ISVC_COMPONENTS if isinstance(spec.get(c), dict)]
    keys = WORKLOAD_TEMPLATE.get(kind)
    if keys:
        spec = dig(doc, *keys)
        return [(".".join(keys), spec)] if isinstance(spec, dict) else []
    return []


def containers_of(pod: dict) -> Iterator[tuple[str, dict]]:
    for key in ("initContainers", "containers"):
        for i, container in enumerate(pod.get(key) or []):
            if isinstance(container, dict):
                yield f"{key}[{i}]", container
