"""The Argo CD objects (argocd/): sync policy per environment, git as the only owner of
the canary share, production on its own revision, and a project as narrow as what the
overlays render."""

from __future__ import annotations

import fnmatch
from typing import Any

from tsops.deploy.manifests.render import ARGOCD
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import dig, resource_id

CANARY_POINTER = "/spec/predictor/canaryTrafficPercent"
CANARY_JQ = ".spec.predictor.canaryTrafficPercent"
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


GRAPH_POINTER = "/spec/nodes"


def _ignores_graph(entry: Any) -> str | None:
    """How an ``ignoreDifferences`` entry hides an InferenceGraph's routing (blue/green's
    live colour, the A/B or bandit weights) from Argo CD, if it does."""
    if not isinstance(entry, dict):
        return None
    if entry.get("group", "") not in ("serving.kserve.io", "*") or entry.get("kind") not in (
        "InferenceGraph",
        "*",
    ):
        return None
    for pointer in entry.get("jsonPointers") or []:
        if str(pointer).startswith(GRAPH_POINTER) or GRAPH_POINTER.startswith(
            str(pointer).rstrip("/") + "/"
        ):
            return f"jsonPointers {pointer}"
    for expr in entry.get("jqPathExpressions") or []:
        if ".spec.nodes".startswith(str(expr).strip().rstrip(".")) or ".spec.nodes" in str(expr):
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
    projects = {dig(d, "metadata", "name"): d for d in argo_docs if d.get("kind") == "AppProject"}
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
            routing = _ignores_graph(entry)
            if routing:
                add(
                    app,
                    f"ignoreDifferences hides {GRAPH_POINTER} of InferenceGraphs ({routing}): "
                    "blue/green's live colour and the A/B or bandit weights would have two "
                    "owners, git and the live object, and a switch or new weights merged in "
                    "git might never reach the cluster",
                    "remove that ignoreDifferences entry: git owns the graph's routing and "
                    "Argo CD applies it on every sync; after a kubectl switch, merge the "
                    "change scripts/bluegreen.sh prepares",
                )
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
