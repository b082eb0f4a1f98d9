"""What Argo CD and KServe do with the rendered manifests, written down once, so that tests
assert what a cluster would serve and not only what git holds. No cluster runs here; this
is the stand-in for the two controllers, and every rule below is the documented (or, for
KServe, the source's) behaviour it assumes:

Argo CD (https://argo-cd.readthedocs.io/en/stable/user-guide/):
- A sync applies the Application's source at ``targetRevision`` (auto_sync/, "Automated
  Sync Policy"; with ``selfHeal`` a live edit is reverted at the next reconcile, about
  every 3 minutes; without ``automated`` it stays until someone syncs).
- ``ignoreDifferences`` only hides a field from the diff; with the sync option
  ``RespectIgnoreDifferences=true`` the sync also keeps the LIVE value of an ignored field
  of a resource that exists (sync-options/, "Respect Ignore Difference Configs": "the
  ignored fields ... are not applied ... the resource is created with the desired state
  the first time").

KServe, Knative ("Serverless") mode (https://kserve.github.io/website/latest/modelserving/
v1beta1/rollout/canary/; the controller: pkg/controller/v1beta1/inferenceservice/
reconcilers/knative/ksvc_reconciler.go and pkg/apis/serving/v1beta1/
inference_service_status.go, PropagateStatus):
- A change of the predictor's template (image, args, env, annotations; not
  ``canaryTrafficPercent``) makes a new Knative revision, the latest.
- With ``canaryTrafficPercent`` x set and a last rolled-out revision known, the latest
  revision gets x % and the last rolled-out revision 100 - x %; without the field, or
  with no rolled-out revision yet (a new or recreated InferenceService), the latest gets
  100 %.
- The latest revision with 100 % becomes the last rolled-out one (the one before it
  becomes the previous). When the latest IS the last rolled-out one and a canary share
  below 100 splits the traffic over that same revision, the previous rolled-out revision
  becomes the last rolled-out one again: canary 0 after a full promotion goes back.
- Tag routing (``serving.kserve.io/enable-tag-routing: "true"``) names the two targets
  ``latest`` and ``prev``, so the canary can be called alone.

KServe InferenceGraph (the router: cmd/router/main.go; the webhook:
pkg/apis/serving/v1alpha1/inference_graph_validation.go):
- A ``Splitter`` node sends each request to one step, drawn with the steps' weights
  (``pickupRoute``: a number below 100 against the running sum of the weights). The
  webhook requires every weight set and the sum 100 (``validateInferenceGraphSplitterWeight``);
  a weight of 0 is accepted and never drawn. Routers whose pickupRoute drew from [0, 100]
  (crypto/rand, ``big.NewInt(101)``) matched no step for 1 request in 101 and failed it
  (kserve/kserve#5408, fixed by #5489): the model counts shares, not that defect.
- A ``Sequence`` node calls its steps in order and answers with the last one's response:
  with one step, every request goes to it (blue/green's switch).
- A step names an InferenceService (``serviceName``); the router calls its URL, and the
  InferenceService serves the request as its own traffic split says (canary above).

The tsops model server (tsops.serving.shadow, the shadow forwarding of issue 16): a server
with ``--shadow_url=http://<name>.<namespace>.svc.cluster.local`` answers the user, then
sends a copy of the request, with the header ``tsops-shadow: 1``, to that URL; a copy is
never forwarded again. Knative routes by Host, and ``<name>.<namespace>.svc.cluster.local``
is a Service's cluster-local host (https://knative.dev/docs/serving/services/private-services/).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from tsops.deploy.manifests.render import render

CANARY = "canaryTrafficPercent"


@dataclass
class Revision:
    name: str
    template: str
    release: str
    version: str
    image: str
    shadow_urls: list[str] = field(default_factory=list)  # its model server's --shadow_url


@dataclass
class Predictor:
    """KServe's view of one InferenceService's predictor: its revisions and traffic."""

    revisions: list[Revision] = field(default_factory=list)
    latest_rolled_out: Revision | None = None
    previous_rolled_out: Revision | None = None
    traffic: list[tuple[Revision, int, bool]] = field(default_factory=list)  # (rev, %, latest)

    def reconcile(self, isvc: dict) -> None:
        predictor = {k: v for k, v in isvc["spec"]["predictor"].items() if k != CANARY}
        notes = isvc["metadata"].get("annotations") or {}
        template = json.dumps([predictor, notes], sort_keys=True)
        if not self.revisions or self.revisions[-1].template != template:
            self.revisions.append(
                Revision(
                    name=f"{isvc['metadata']['name']}-predictor-{len(self.revisions) + 1:05d}",
                    template=template,
                    release=notes.get("tsops.io/release", "?"),
                    version=str(notes.get("tsops.io/model-version", "?")),
                    image=predictor["containers"][0]["image"],
                    shadow_urls=_shadow_urls(isvc),
                )
            )
        canary = isvc["spec"]["predictor"].get(CANARY)
        # The controller reconciles until the status stops moving; two rounds settle it.
        for _ in range(3):
            latest = self.revisions[-1]
            if canary is not None and self.latest_rolled_out is not None:
                self.traffic = [(latest, canary, True)]
                if canary < 100:
                    self.traffic.append((self.latest_rolled_out, 100 - canary, False))
            else:
                self.traffic = [(latest, 100, True)]
            self._propagate(latest)

    def _propagate(self, latest: Revision) -> None:
        per_revision: dict[str, int] = {}
        for revision, percent, _ in self.traffic:
            per_revision[revision.name] = per_revision.get(revision.name, 0) + percent
        for revision, percent, is_latest in self.traffic:
            if revision is not latest or not is_latest:
                continue
            if self.latest_rolled_out is not latest:
                if percent == 100:
                    self.previous_rolled_out = self.latest_rolled_out
                    self.latest_rolled_out = latest
            elif (
                percent < 100
                and per_revision[latest.name] == 100
                and self.previous_rolled_out is not None
            ):
                self.latest_rolled_out = self.previous_rolled_out

    def served(self) -> dict[str, int]:
        """Release -> share of the requests."""
        shares: dict[str, int] = {}
        for revision, percent, _ in self.traffic:
            if percent:
                shares[revision.release] = shares.get(revision.release, 0) + percent
        return shares


class Cluster:
    """The live objects of one environment's namespace, Argo CD's sync of its Application,
    and KServe's reconcile of every InferenceService."""

    def __init__(self, application: dict):
        self.application = application
        self.live: dict[tuple[str, str], dict] = {}
        self.predictors: dict[str, Predictor] = {}

    def _ignored(self, obj: dict) -> list[str]:
        spec = self.application["spec"]
        options = (spec.get("syncPolicy") or {}).get("syncOptions") or []
        if "RespectIgnoreDifferences=true" not in options:
            return []
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        return [
            pointer
            for rule in spec.get("ignoreDifferences") or []
            if rule.get("kind") == obj["kind"] and rule.get("group", "") == group
            for pointer in rule.get("jsonPointers") or []
        ]

    def sync(self, overlay_dir: Path) -> None:
        """Argo CD syncs the Application: the render of ``overlay_dir`` (the source at the
        Application's targetRevision) applied, ignored fields kept live where respected."""
        desired = {(d["kind"], d["metadata"]["name"]): d for d in render(overlay_dir)}
        for key, obj in desired.items():
            obj = copy.deepcopy(obj)
            if key in self.live:
                for pointer in self._ignored(obj):
                    _copy_pointer(self.live[key], obj, pointer)
            self.live[key] = obj
        for key in [k for k in self.live if k not in desired]:  # prune
            del self.live[key]
        self.reconcile()

    def kubectl_patch_canary(self, name: str, percent: int) -> None:
        """scripts/canary.sh's cluster half: a merge patch of the live object."""
        predictor = self.live[("InferenceService", name)]["spec"]["predictor"]
        if percent == 100:
            predictor.pop(CANARY, None)
        else:
            predictor[CANARY] = percent
        self.reconcile()

    def recreate(self, name: str) -> None:
        """The InferenceService deleted and created again: KServe's history is gone."""
        self.predictors.pop(name, None)
        self.reconcile()

    def reconcile(self) -> None:
        for (kind, name), obj in self.live.items():
            if kind == "InferenceService":
                self.predictors.setdefault(name, Predictor()).reconcile(obj)

    def served(self, name: str) -> dict[str, int]:
        return self.predictors[name].served()

    def graph_served(self, graph: str) -> dict[str, float]:
        """Release -> percent of the requests to InferenceGraph ``graph`` it answers: the
        root's steps (Splitter: by weight; Sequence: the last step) through each
        InferenceService's own split."""
        root = self.live[("InferenceGraph", graph)]["spec"]["nodes"]["root"]
        steps = root["steps"]
        if root["routerType"] == "Splitter":
            routed = [(s["serviceName"], s["weight"]) for s in steps]
        elif root["routerType"] == "Sequence":
            routed = [(steps[-1]["serviceName"], 100)]
        else:
            raise NotImplementedError(root["routerType"])
        shares: dict[str, float] = {}
        for service, weight in routed:
            for release, percent in self.served(service).items():
                share = weight * percent / 100
                if share:
                    shares[release] = shares.get(release, 0) + share
        return shares

    def mirrors(self, service: str, revision: Revision | None = None) -> list[str]:
        """The InferenceServices ``service``'s model server (the ``revision`` that runs,
        default the latest) sends copies to: the flag is part of the revision's template,
        so a revision made before a mirror was set has none."""
        from tsops.deploy.manifests.strategies import _URL

        isvc = self.live[("InferenceService", service)]
        revision = revision or self.predictors[service].revisions[-1]
        found = []
        for url in revision.shadow_urls:
            match = _URL.match(url)
            namespace = isvc["metadata"].get("namespace")
            if (
                match
                and match["ns"] == namespace
                and ("InferenceService", match["name"]) in self.live
            ):
                found.append(match["name"])
        return found[-1:]  # one flag wins: the last (argparse)

    def copies(self, graph: str) -> dict[str, float]:
        """Release -> percent of the requests to ``graph`` (an InferenceGraph, or an
        InferenceService clients call directly) it gets a copy of (and answers
        to nobody): for each service that answers, each of its revisions by its share of
        the traffic, the targets of that revision's mirror."""
        if ("InferenceGraph", graph) not in self.live:  # clients call an InferenceService
            routed = [(graph, 100)]
        else:
            root = self.live[("InferenceGraph", graph)]["spec"]["nodes"]["root"]
            steps = root["steps"]
            routed = (
                [(s["serviceName"], s["weight"]) for s in steps]
                if root["routerType"] == "Splitter"
                else [(steps[-1]["serviceName"], 100)]
            )
        shares: dict[str, float] = {}
        for service, weight in routed:
            for revision, revision_share, _ in self.predictors[service].traffic:
                for target in self.mirrors(service, revision):
                    for release, percent in self.served(target).items():
                        share = weight * revision_share * percent / 10000
                        if share:
                            shares[release] = shares.get(release, 0) + share
        return shares

    def revisions(self, service: str) -> int:
        """How many Knative revisions ``service`` has made (a new one = a new rollout)."""
        return len(self.predictors[service].revisions)

    def batch_images(self) -> set[str]:
        """The images the CronJobs run."""
        return {
            c["image"]
            for (kind, _), obj in self.live.items()
            if kind == "CronJob"
            for c in obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        }


def _shadow_urls(isvc: dict) -> list[str]:
    from tsops.deploy.manifests.strategies import shadow_urls

    return shadow_urls(isvc)


def _copy_pointer(source: dict, target: dict, pointer: str) -> None:
    """Give ``target`` the value (or the absence) ``source`` has at a JSON pointer."""
    *parents, leaf = pointer.strip("/").split("/")
    src, dst = source, target
    for part in parents:
        src, dst = (src or {}).get(part), dst.setdefault(part, {})
    if isinstance(src, dict) and leaf in src:
        dst[leaf] = copy.deepcopy(src[leaf])
    else:
        dst.pop(leaf, None)


def application(repo: Path, name: str) -> dict:
    """An Application of ``argocd/`` as kustomize renders it (settings replaced)."""
    for doc in render(repo / "argocd"):
        if doc["kind"] == "Application" and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"argocd/ renders no Application {name}")
