"""Checks of the deployment strategies a render runs (tsops.deploy.strategies is git's
view of the same files): one owner for the user traffic, a bandit's policy and floor,
blue/green's one switch and its mirrors, and every --shadow_url reaching an
InferenceService of the render.

Owners of the traffic, at most one per overlay (the shadow combines with any of them but
blue/green, whose idle colour already is the live one's shadow):

- canary: ``canaryTrafficPercent`` on an InferenceService that names the release it
  replaced (``tsops.io/previous-model-version``; without one KServe has no earlier
  revision to split with, and the field splits nothing);
- A/B or bandit: an InferenceGraph whose root is a Splitter (a bandit when it carries the
  ``tsops.io/bandit-*`` policy);
- blue/green: InferenceGraph ``<model>-bluegreen``.

The cross-strategy rules apply to an overlay's own render: the renders with a component
switched on for its checks (``+ab``, ``+bluegreen``, ...) combine it with whatever the
overlay runs, which no command would write.
"""

from __future__ import annotations

import re

from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import annotations_of, dig, is_int, located
from tsops.deploy.overlays import PREVIOUS_MODEL_VERSION
from tsops.deploy.pins import Pin

SHADOW_FLAG = "--shadow_url="
BANDIT_FLOOR = "tsops.io/bandit-floor"
BANDIT_MAX_STEP = "tsops.io/bandit-max-step"
BANDIT_MIN_SCORED = "tsops.io/bandit-min-scored"
BLUEGREEN_SUFFIX = "-bluegreen"
GREEN_SUFFIX = "-green"
SHADOW_SUFFIX = "-shadow"
_URL = re.compile(r"^http://(?P<name>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local/?$")


def _name(doc: dict) -> str:
    return str(dig(doc, "metadata", "name") or "")


def shadow_urls(isvc: dict) -> list[str]:
    """The --shadow_url values of an InferenceService's model server."""
    containers = dig(isvc, "spec", "predictor", "containers") or [{}]
    first = containers[0] if isinstance(containers[0], dict) else {}
    return [
        str(a)[len(SHADOW_FLAG) :]
        for a in first.get("args") or []
        if str(a).startswith(SHADOW_FLAG)
    ]


def _image(isvc: dict) -> str | None:
    containers = dig(isvc, "spec", "predictor", "containers") or [{}]
    return containers[0].get("image") if isinstance(containers[0], dict) else None


def owners(docs: list[dict]) -> list[tuple[str, dict]]:
    """(strategy, resource) of every owner of the user traffic in a render."""
    found = []
    for doc in docs:
        if doc.get("kind") == "InferenceService":
            canary = dig(doc, "spec", "predictor", "canaryTrafficPercent")
            if canary is not None and annotations_of(doc).get(PREVIOUS_MODEL_VERSION):
                found.append(("canary", doc))
        elif doc.get("kind") == "InferenceGraph":
            if _name(doc).endswith(BLUEGREEN_SUFFIX):
                found.append(("blue/green", doc))
            elif dig(doc, "spec", "nodes", "root", "routerType") == "Splitter":
                bandit = BANDIT_FLOOR in annotations_of(doc)
                found.append(("bandit" if bandit else "A/B", doc))
    return found


def check_owners(docs: list[dict], label: str) -> list[Finding]:
    found = owners(docs)
    if len(found) <= 1:
        return []
    names = ", ".join(f"{what} ({located('', doc)})" for what, doc in found)
    return [
        Finding(
            "strategy",
            label,
            f"{len(found)} strategies own the user traffic: {names}; each would send the "
            "users somewhere else and monitoring could not say which release answered",
            "run one of canary, A/B, bandit and blue/green per overlay: finish a canary "
            "(`tsops canary --percent 100`) or roll it back before an A/B test or blue/green, "
            "and take components/ab or components/bluegreen out of the overlay to end those",
        )
    ]


def check_bandit(doc: dict, where: str) -> list[Finding]:
    """A bandit's policy is complete and its weights respect its floor."""
    if doc.get("kind") != "InferenceGraph":
        return []
    notes = annotations_of(doc)
    if not any(
        k in notes for k in (BANDIT_FLOOR, BANDIT_MAX_STEP, BANDIT_MIN_SCORED)
    ):  # margin: optional
        return []
    fix = (
        f"write the policy with `tsops ab ... --bandit --floor F --max-step S --min-scored N` "
        f"(annotations {BANDIT_FLOOR}, {BANDIT_MAX_STEP}: fractions; {BANDIT_MIN_SCORED}: a "
        "whole number) in the overlay's ab-weights.yaml"
    )
    try:
        floor = float(notes[BANDIT_FLOOR])
        max_step = float(notes[BANDIT_MAX_STEP])
        min_scored = int(str(notes[BANDIT_MIN_SCORED]))
    except (KeyError, ValueError) as e:
        return [Finding("bandit", where, f"the bandit policy is incomplete or malformed: {e}", fix)]
    steps = dig(doc, "spec", "nodes", "root", "steps") or []
    findings = []
    if dig(doc, "spec", "nodes", "root", "routerType") != "Splitter" or len(steps) < 2:
        findings.append(
            Finding(
                "bandit",
                where,
                "a bandit's root must be a Splitter over two or more arms",
                "keep routerType: Splitter with a step per arm",
            )
        )
    if not (0 <= floor * max(len(steps), 1) <= 1) or not 0 < max_step <= 1 or min_scored < 1:
        findings.append(
            Finding(
                "bandit",
                where,
                f"policy floor {floor:g} (for {len(steps)} arms), max_step {max_step:g}, "
                f"min_scored {min_scored}: the floors must fit in 100 %, the step be a "
                "fraction in (0, 1], min_scored at least 1",
                fix,
            )
        )
    low = [
        f"{s.get('name')}={s.get('weight')}"
        for s in steps
        if isinstance(s, dict) and is_int(s.get("weight")) and s["weight"] < int(floor * 100 + 1e-9)
    ]
    if low:
        findings.append(
            Finding(
                "bandit",
                where,
                f"{', '.join(low)} below the bandit's exploration floor of {floor * 100:g} %: "
                "that arm would stop being scored and could never win back traffic",
                "raise the arm to the floor (`tsops bandit` never writes less)",
            )
        )
    return findings


def check_mirrors(docs: list[dict], label: str, own: bool = True) -> list[Finding]:
    """Every --shadow_url names an InferenceService of the render by its cluster-local URL
    (http://<name>.<namespace>.svc.cluster.local: Knative routes by Host), other than the
    server itself, at most once; a shadow InferenceService gets its copies from the main
    one. Whether a server mirrors at all, and to one place only, is checked in an overlay's
    own render (``own``): a render with a component switched on combines mirrors no command
    would write together."""
    services = {_name(d): d for d in docs if d.get("kind") == "InferenceService"}
    findings = []
    for name, isvc in services.items():
        urls = shadow_urls(isvc)
        where = located(label, isvc)
        if own and len(urls) > 1:
            findings.append(
                Finding(
                    "shadow",
                    where,
                    f"the model server has {len(urls)} --shadow_url flags ({', '.join(urls)}): "
                    "it forwards to one, the last",
                    "run one mirror per server: a shadow, or blue/green (whose idle colour is "
                    "the live one's shadow), not both",
                )
            )
        ns = dig(isvc, "metadata", "namespace")
        for url in urls:
            match = _URL.match(url)
            target = match and services.get(match["name"])
            problem = None
            if not match:
                problem = f"--shadow_url {url!r} is not http://<name>.<namespace>.svc.cluster.local"
            elif target is None:
                problem = f"--shadow_url {url!r} names {match['name']!r}, no InferenceService here"
            elif ns and match["ns"] != ns:
                problem = f"--shadow_url {url!r} is in namespace {match['ns']!r}, not {ns!r}"
            elif match["name"] == name:
                problem = f"--shadow_url {url!r} is the server itself"
            if problem:
                findings.append(
                    Finding(
                        "shadow",
                        where,
                        problem + ": the copies would go nowhere (the user's answer is not "
                        "affected, the comparison is lost)",
                        "let `tsops shadow` or `tsops bluegreen` write the mirror (it reads the "
                        "overlay's namespace), or fix shadow-mirror.yaml / bluegreen-mirror-*.yaml",
                    )
                )
    for name, isvc in services.items() if own else ():
        if not name.endswith(SHADOW_SUFFIX) or name.endswith(f"{GREEN_SUFFIX}{SHADOW_SUFFIX}"):
            continue
        main = services.get(name.removesuffix(SHADOW_SUFFIX))
        if main is not None and not any(
            (m := _URL.match(u)) and m["name"] == name for u in shadow_urls(main)
        ):
            findings.append(
                Finding(
                    "shadow",
                    located(label, isvc),
                    f"no model server sends {name} a copy of its requests: the shadow runs "
                    "and is never scored",
                    f"add --shadow_url to {_name(main)} (`tsops shadow` writes shadow-mirror.yaml)",
                )
            )
    return findings


def check_bluegreen(docs: list[dict], label: str, own: bool) -> list[Finding]:
    """Blue/green: the graph's root is one step to blue or green (a Sequence: no random
    draw), each colour mirrors to the other, and (in the overlay's own render) neither has
    a canary share and the CronJobs run the live colour's image."""
    services = {_name(d): d for d in docs if d.get("kind") == "InferenceService"}
    findings = []
    for graph in (d for d in docs if d.get("kind") == "InferenceGraph"):
        if not _name(graph).endswith(BLUEGREEN_SUFFIX):
            continue
        where = located(label, graph)
        model = _name(graph).removesuffix(BLUEGREEN_SUFFIX)
        colours = {"blue": model, "green": f"{model}{GREEN_SUFFIX}"}
        root = dig(graph, "spec", "nodes", "root") or {}
        steps = root.get("steps") or []
        step = steps[0] if len(steps) == 1 and isinstance(steps[0], dict) else {}
        if root.get("routerType") != "Sequence" or colours.get(step.get("name")) != step.get(
            "serviceName"
        ):
            findings.append(
                Finding(
                    "bluegreen",
                    where,
                    f"the root must be a Sequence with one step, blue ({model}) or green "
                    f"({model}{GREEN_SUFFIX}), got {root.get('routerType')} {steps}",
                    "switch with `tsops bluegreen MODEL --to blue|green` (bluegreen-live.yaml)",
                )
            )
            continue
        for colour, name in colours.items():
            isvc = services.get(name)
            other = colours["green" if colour == "blue" else "blue"]
            if isvc is None:
                findings.append(
                    Finding(
                        "bluegreen",
                        where,
                        f"{colour} ({name}) is not in the render",
                        "switch components/bluegreen on with `tsops bluegreen --release`",
                    )
                )
                continue
            if own and not any(
                (m := _URL.match(u)) and m["name"] == other for u in shadow_urls(isvc)
            ):
                findings.append(
                    Finding(
                        "bluegreen",
                        located(label, isvc),
                        f"{colour} does not send {other} a copy of its requests: the idle "
                        "colour would go cold (scaled down, caches empty) and unscored",
                        f"keep bluegreen-mirror-{colour}.yaml (`tsops bluegreen --release` "
                        "writes it)",
                    )
                )
            canary = dig(isvc, "spec", "predictor", "canaryTrafficPercent")
            if own and canary is not None:
                findings.append(
                    Finding(
                        "bluegreen",
                        located(label, isvc),
                        f"canaryTrafficPercent {canary} on a colour: its next release would "
                        "split between two revisions of the colour, not switch",
                        "remove the field (canary.yaml); blue/green moves traffic by the switch",
                    )
                )
        live = services.get(colours[step["name"]])
        live_image = live and _image(live)
        if own and live_image:
            repository = Pin.split(live_image)[0]
            for job in (d for d in docs if d.get("kind") == "CronJob"):
                spec = dig(job, "spec", "jobTemplate", "spec", "template", "spec") or {}
                for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                    image = str(c.get("image") or "")
                    if Pin.split(image)[0] == repository and image != live_image:
                        findings.append(
                            Finding(
                                "bluegreen",
                                located(label, job),
                                f"container {c.get('name')} runs {image!r}, not the live "
                                f"colour's ({step['name']}) {live_image!r}: batch forecasts "
                                "would come from a release users do not get",
                                "let `tsops bluegreen --to` move the tsops-batch pin with the "
                                "switch",
                            )
                        )
    return findings


def strategy_findings(docs: list[dict], label: str) -> list[Finding]:
    """Every strategy check of one render."""
    own = "+" not in label
    findings = check_owners(docs, label) if own else []
    for doc in docs:
        findings += check_bandit(doc, located(label, doc))
    return findings + check_mirrors(docs, label, own) + check_bluegreen(docs, label, own)
