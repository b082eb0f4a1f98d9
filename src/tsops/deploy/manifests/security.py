"""The hardened pod spec every workload runs with (the model server image's restricted
profile)."""

from __future__ import annotations

from typing import Any

from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import containers_of, dig, is_int, pod_specs, resource_id

MIN_UID = 10000


def _effective(container: dict, pod: dict, key: str) -> Any:
    value = dig(container, "securityContext", key)
    return value if value is not None else dig(pod, "securityContext", key)


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
        for c_path, container in containers_of(pod):
            path = f"{pod_path}.{c_path}"
            sc = f"{path}.securityContext"
            if _effective(container, pod, "runAsNonRoot") is not True:
                add(sc, "runAsNonRoot is not true", "set runAsNonRoot: true")
            uid = _effective(container, pod, "runAsUser")
            if not is_int(uid) or uid < MIN_UID:
                add(
                    sc,
                    f"runAsUser is {uid!r}",
                    f"set runAsUser: 10001 (the image's user; at least {MIN_UID})",
                )
            if dig(container, "securityContext", "readOnlyRootFilesystem") is not True:
                add(sc, "readOnlyRootFilesystem is not true", "set readOnlyRootFilesystem: true")
            if dig(container, "securityContext", "allowPrivilegeEscalation") is not False:
                add(
                    sc,
                    "allowPrivilegeEscalation is not false",
                    "set allowPrivilegeEscalation: false",
                )
            drop = dig(container, "securityContext", "capabilities", "drop") or []
            add_caps = dig(container, "securityContext", "capabilities", "add") or []
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
