"""KServe's MLflow runtime as the predictor (``components/mlflow-runtime``): what KServe
and MLServer need of ``spec.predictor.model``, and how every overlay is rendered with the
component switched on.

The component replaces the tsops server's container by ``model: {modelFormat: mlflow,
protocolVersion: v2, storageUri}``. KServe accepts exactly one of a custom
``kserve-container`` and ``model``; MLServer speaks V2 only; KServe's storage initializer
downloads ``storageUri`` (s3://, gs://, pvc://, https:// ...) and cannot resolve MLflow's
own URIs (``models:/``, ``runs:/``, ``mlflow-artifacts:/``). The container hardening of
the tsops server applies to the model's container as well.

An overlay's ``scale.yaml`` sets the server's resources at
``/spec/predictor/containers/0/resources``; with the component on, that container is gone,
so an overlay that switches it on points those operations at ``/spec/predictor/model/``
(docs/deploying.md), and the render that checks the component in every other overlay
does the same (:func:`variant_edit`) with an example storageUri, as the A/B candidate is
pinned to the overlay's own release there.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tsops.deploy.manifests.render import read_text
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import dig, resource_id
from tsops.deploy.manifests.security import check_pod_security
from tsops.deploy.overlays import CANDIDATE_SUFFIX

MODEL_SERVER_CONTAINER = "kserve-container"
CONTAINER_PATH = "/spec/predictor/containers/0/"
MODEL_PATH = "/spec/predictor/model/"
PLACEHOLDER = "pin-in-overlay"
#: what KServe's storage initializer downloads (its storage.py providers)
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")
STORAGE_SCHEMES += ("oci://", "hf://", "abfs://", "az://")
#: MLflow's own URIs: only an MLflow client resolves them
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:", "/")
#: the storageUri the component's check renders use in overlays that do not switch it on
EXAMPLE_STORAGE_URI = "s3://mlflow-artifacts/example/artifacts"


def check_model_runtime(doc: dict, where: str = "") -> list[Finding]:
    """``spec.predictor.model`` of an InferenceService, as KServe and MLServer take it."""
    model = dig(doc, "spec", "predictor", "model")
    if doc.get("kind") != "InferenceService" or not isinstance(model, dict):
        return []
    where = where or resource_id(doc)
    findings = []

    def add(problem: str, fix: str) -> None:
        findings.append(Finding("kserve", where, f"spec.predictor.model: {problem}", fix))

    containers = dig(doc, "spec", "predictor", "containers") or []
    if any(isinstance(c, dict) and c.get("name") == MODEL_SERVER_CONTAINER for c in containers):
        add(
            f"set together with a custom {MODEL_SERVER_CONTAINER} in spec.predictor.containers; "
            "KServe accepts exactly one predictor",
            "remove spec.predictor.containers (components/mlflow-runtime/predictor-mlflow.yaml "
            "sets containers: null) or spec.predictor.model",
        )
    fmt = str(dig(model, "modelFormat", "name") or "")
    if fmt == "mlflow" and model.get("protocolVersion") != "v2":
        add(
            f"protocolVersion is {model.get('protocolVersion')!r}; KServe's MLflow runtime "
            "(MLServer) speaks the V2 protocol only",
            "set protocolVersion: v2",
        )
    uri = str(model.get("storageUri") or "")
    if not uri or uri == PLACEHOLDER:
        add(
            f"storageUri is {uri or 'missing'!r}: no registered version is pinned",
            "give the overlay a patch model-storage.yaml with spec.predictor.model.storageUri: "
            "the artifact location of the version model-version.yaml names (`mlflow "
            "models:/<name>/<version>`'s download URI, e.g. s3://<bucket>/<experiment>/"
            "models/<model id>/artifacts)",
        )
    elif uri.startswith(MLFLOW_SCHEMES) or not uri.startswith(STORAGE_SCHEMES):
        add(
            f"storageUri {uri!r} is not something KServe's storage initializer downloads",
            "point it at the version's artifacts in the artifact store (s3://, gs://, "
            "pvc://, https://); an MLflow alias or models:/ reference cannot be resolved there "
            "and would not pin a version",
        )
    # the tsops server's container hardening, on the model's container
    shadow = copy.deepcopy(doc)
    shadow["spec"]["predictor"]["containers"] = [model]
    for finding in check_pod_security(shadow, where):
        if "containers[0]" in finding.problem:
            problem = finding.problem.replace("containers[0]", "model")
            findings.append(dataclasses.replace(finding, problem=problem))
    return findings


def uses_model_runtime(component: Path) -> bool:
    """Whether ``component``'s patches replace the predictor by ``model``."""
    return any("modelFormat:" in read_text(path) for path in sorted(component.glob("*.y*ml")))


def retarget(operations: Any) -> Any:
    """JSON patch operations on the tsops server's container moved to the model."""
    if not isinstance(operations, list):
        return operations
    moved = []
    for op in operations:
        if isinstance(op, dict) and str(op.get("path", "")).startswith(CONTAINER_PATH):
            op = {**op, "path": MODEL_PATH + op["path"][len(CONTAINER_PATH) :]}
        moved.append(op)
    return moved


def variant_edit(overlay: Path, kust: dict, component: Path) -> Callable[[Any], None] | None:
    """For an overlay that does not switch ``component`` on, what its render with it on
    needs: its JSON patches on the server's container moved to the model, and an example
    storageUri (the overlay that runs the runtime pins its own, checked in its render)."""
    if not uses_model_runtime(component):
        return None

    def edit(data: Any) -> None:
        served = _served_name(kust, overlay)
        as_written = []
        # A --shadow_url (blue/green's or a shadow's mirror) is the tsops server's flag;
        # MLServer has none, so the runtime variant of the served model goes without it.
        data["patches"] = [
            e
            for e in data.get("patches") or []
            if not (
                isinstance(e, dict)
                and e.get("path")
                and "--shadow_url=" in read_text(overlay / e["path"])
                and (e.get("target") or {}).get("name") == served
            )
        ]
        for entry in data.get("patches") or []:
            if not isinstance(entry, dict) or not entry.get("path"):
                continue
            text = read_text(overlay / entry["path"])
            if CONTAINER_PATH not in text:
                continue
            named = (entry.get("target") or {}).get("name")
            if named not in (None, served):
                continue  # another InferenceService's (green's), which keeps its container
            entry["patch"] = yaml.safe_dump(retarget(yaml.safe_load(text)), sort_keys=False)
            path = entry.pop("path")
            target = entry.get("target")
            if isinstance(target, dict) and target.get("name") != served:
                # A patch of every InferenceService (data-platform.yaml) also reaches the
                # A/B candidate, which keeps its container: the moved operations go to the
                # served model only, the candidate gets the patch as written.
                entry["target"] = {**target, "name": re.escape(served)}
                others = f"{re.escape(served)}{re.escape(CANDIDATE_SUFFIX)}"
                as_written.append({"path": path, "target": {**target, "name": others}})
        data.setdefault("patches", []).extend(as_written)
        storage = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": served},
            "spec": {"predictor": {"model": {"storageUri": EXAMPLE_STORAGE_URI}}},
        }
        data.setdefault("patches", []).append({"patch": yaml.safe_dump(storage)})

    return edit


def _served_name(kust: dict, overlay: Path) -> str:
    """The InferenceService the overlay's container patch targets (m3-monthly)."""
    for entry in kust.get("patches") or []:
        target = entry.get("target") if isinstance(entry, dict) else None
        if (
            isinstance(target, dict)
            and target.get("kind") == "InferenceService"
            and target.get("name")
        ):
            return str(target["name"])
    return "m3-monthly"
