"""The policies no schema expresses, for KServe and a render as a whole: canary percent
in 0..100 on a Knative-mode service, Splitter weights summing to 100, what KServe expects
of the model server container, an A/B candidate mounting what the main
InferenceService mounts, references that resolve, sync-wave order.

:func:`policy_findings` runs them with the image pins (:mod:`.images`), the pod security
(:mod:`.security`) and the checkov skip form (:mod:`.checkov`) on one render.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from tsops.deploy.manifests.checkov import check_checkov_skips
from tsops.deploy.manifests.environment import check_secret_values, check_tsops_variables
from tsops.deploy.manifests.images import check_pins, check_release
from tsops.deploy.manifests.mlflow_runtime import check_model_runtime
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import (
    ISVC_COMPONENTS,
    annotations_of,
    containers_of,
    dig,
    is_candidate,
    is_int,
    located,
    pod_specs,
    resource_id,
)
from tsops.deploy.manifests.security import check_pod_security
from tsops.deploy.manifests.strategies import strategy_findings
from tsops.deploy.overlays import CANDIDATE_SUFFIX, second_service

MODEL_SERVER_CONTAINER = "kserve-container"
KNATIVE_MODES = ("Serverless", "Knative")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


def check_canary(doc: dict, where: str = "") -> list[Finding]:
    """canaryTrafficPercent is a whole number in 0..100, on a Knative-mode service."""
    if doc.get("kind") != "InferenceService":
        return []
    where = where or resource_id(doc)
    findings = []
    for component in ISVC_COMPONENTS:
        value = dig(doc, "spec", component, "canaryTrafficPercent")
        if value is None:
            continue
        path = f"spec.{component}.canaryTrafficPercent"
        if not is_int(value) or not 0 <= value <= 100:
            findings.append(
                Finding(
                    "canary",
                    where,
                    f"{path} is {value!r}; it must be a whole number from 0 to 100",
                    "set it to the share of traffic for the new revision (0 rolls back); "
                    "remove the field to promote",
                )
            )
        if annotations_of(doc).get(DEPLOYMENT_MODE) not in KNATIVE_MODES:
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
    for node_name, node in (dig(doc, "spec", "nodes") or {}).items():
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
        bad = [w for w in weights if not is_int(w) or not 0 <= w <= 100]
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


def check_model_server(doc: dict, where: str = "") -> list[Finding]:
    """What KServe expects of a custom predictor, and Knative mode for canary and graphs."""
    kind = doc.get("kind")
    if kind not in ("InferenceService", "InferenceGraph"):
        return []
    where = where or resource_id(doc)
    findings = []
    if annotations_of(doc).get(DEPLOYMENT_MODE) not in KNATIVE_MODES:
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
    if dig(doc, "spec", "predictor", "model") is not None:  # components/mlflow-runtime
        return findings + check_model_runtime(doc, where)
    containers = dig(doc, "spec", "predictor", "containers") or []
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
        got = dig(first, probe, "httpGet", "path")
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


def check_references(docs: list[dict], label: str = "") -> list[Finding]:
    """ConfigMaps, ServiceAccounts and InferenceServices that resources name exist in the
    same render (a missing kustomize nameReference shows up here)."""
    have: dict[str, set[str]] = {}
    for doc in docs:
        have.setdefault(doc.get("kind", ""), set()).add(dig(doc, "metadata", "name"))
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
                    located(label, doc),
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
                need("ConfigMap", dig(volume, "configMap", "name"), doc, f"{pod_path}.volumes")
            for c_path, container in containers_of(pod):
                path = f"{pod_path}.{c_path}"
                for source in container.get("envFrom") or []:
                    need("ConfigMap", dig(source, "configMapRef", "name"), doc, f"{path}.envFrom")
                for env in container.get("env") or []:
                    need(
                        "ConfigMap",
                        dig(env, "valueFrom", "configMapKeyRef", "name"),
                        doc,
                        f"{path}.env",
                    )
        if doc.get("kind") == "InferenceGraph":
            for node_name, node in (dig(doc, "spec", "nodes") or {}).items():
                for i, step in enumerate((node or {}).get("steps") or []):
                    need(
                        "InferenceService",
                        (step or {}).get("serviceName"),
                        doc,
                        f"spec.nodes.{node_name}.steps[{i}].serviceName",
                    )
    return findings


def _wave(doc: dict) -> int | None:
    raw = annotations_of(doc).get(SYNC_WAVE, "0")
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
                    located(label, doc),
                    f"{SYNC_WAVE} is {annotations_of(doc).get(SYNC_WAVE)!r}, not an integer",
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
                            located(label, doc_a),
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
    predictor = dig(isvc, "spec", "predictor") or {}
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
            backing += (str(dig(volume, source, "claimName")),)
        out[str(mount.get("mountPath"))] = backing
    return out


def check_ab_candidate(docs: list[dict], label: str = "") -> list[Finding]:
    """The A/B candidate mounts what the main InferenceService mounts, backed alike: the
    server writes its forecast log and caches there, and its root file system is
    read-only, so a missing volume stops it at start."""
    services = {dig(d, "metadata", "name"): d for d in docs if d.get("kind") == "InferenceService"}
    findings = []
    for name, candidate in services.items():
        if not is_candidate(candidate):
            continue
        second = second_service(str(name))
        suffix = second.suffix if second else CANDIDATE_SUFFIX
        what = second.what if second else "the A/B candidate"
        file = {
            "-candidate": "manifests/components/ab/inferenceservice-candidate.yaml",
            "-green": "manifests/components/bluegreen/inferenceservice-green.yaml",
            "-shadow": "manifests/components/shadow/inferenceservice-shadow.yaml",
            "-third": "manifests/components/third/inferenceservice-third.yaml",
        }.get(suffix, "its component's InferenceService")
        main = services.get(str(name).removesuffix(suffix)) or next(
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
                    located(label, candidate),
                    f"{what} {got}, while {resource_id(main)} mounts "
                    f"{' '.join(backing)} at {path}: its root file system is read-only, so "
                    "the server cannot write there (settings.env points the forecast log at "
                    "/var/lib/tsops) and fails at start",
                    f"give it ({file}) "
                    "the same spec.predictor.volumes and containers[0].volumeMounts as "
                    "manifests/base/inferenceservice.yaml",
                )
            )
    return findings


# Each takes one resource and where it is; the order is the order of the report.
RESOURCE_CHECKS: tuple[Callable[[dict, str], list[Finding]], ...] = (
    check_canary,
    check_splitter_weights,
    check_pins,
    check_release,
    check_pod_security,
    check_model_server,
    check_checkov_skips,
    check_secret_values,
)


def policy_findings(
    docs: list[dict], label: str = "", sources: Callable[[dict], str] | None = None
) -> list[Finding]:
    """Every per-resource policy plus the cross-resource ones, for one render."""
    findings = []
    for doc in docs:
        where = located(label, doc)
        if sources:
            where += f" ({sources(doc)})"
        for check in RESOURCE_CHECKS:
            findings += check(doc, where)
    return (
        findings
        + check_references(docs, label)
        + check_sync_waves(docs, label)
        + check_ab_candidate(docs, label)
        + check_tsops_variables(docs, label, sources)
        + strategy_findings(docs, label)
    )
