"""Live strategies read from git (tsops.deploy.strategies) and the Splitter weights edit:
what each overlay state says is served, and bad weights change no file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.deploy.cluster_model import Cluster, application
from tests.deploy.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tsops.deploy import bluegreen, shadow
from tsops.deploy import gitops as g
from tsops.deploy.manifests.validate import validate_all
from tsops.deploy.overlays import GitOpsError
from tsops.deploy.strategies import ROLE_LIVE, ROLE_SHADOW, Arm, live_strategies, weights_edits

ROOT = Path(__file__).resolve().parents[2]
MODEL = "m3-monthly"
REPO = "ghcr.io/tsops/tsops-serving"


def digest(version: str) -> str:
    return "sha256:" + version.split(".")[1] * 64


def pins_of(repo: Path, env: str) -> dict[str, str]:
    """images: entry name -> the image it renders."""
    kust = YAML(typ="safe").load(
        (repo / "manifests/overlays" / env / "kustomization.yaml").read_text()
    )
    return {
        i["name"]: f"{i['newName']}:{i['newTag']}" + (f"@{i['digest']}" if "digest" in i else "")
        for i in kust["images"]
    }


def ref(version: str) -> str:
    return f"{REPO}:{MODEL}-v{version}@{digest(version)}"


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(
        ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("crds")
    )
    return tmp_path


def snapshot(repo: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted((repo / "manifests").rglob("*.yaml"))}


def stage(repo: Path, version: str, model_version: str) -> None:
    g.apply(
        g.release_edits(repo, MODEL, version, model_version, {}, image=REPO, digest=digest(version))
    )


def test_shipped_overlays_run_one_release():
    for env in ("local", "staging", "production"):
        (only,) = live_strategies(ROOT, env)
        assert only.kind == "single" and only.baseline == "stable"
        assert only.arms == (Arm("stable", MODEL, f"{MODEL}/v1.0.0", "1", 100, ROLE_LIVE),)


def test_a_canary_is_two_arms_of_one_service(repo):
    stage(repo, "1.1.0", "2")
    g.apply(g.promote_edits(repo, MODEL, "staging", "production", canary=10))
    (canary,) = live_strategies(repo, "production")
    assert canary.kind == "canary" and canary.baseline == "stable"
    assert [(a.name, a.service, a.release, a.model_version, a.share) for a in canary.arms] == [
        ("stable", MODEL, f"{MODEL}/v1.0.0", "1", 90),
        ("canary", MODEL, f"{MODEL}/v1.1.0", "2", 10),
    ]
    with pytest.raises(GitOpsError, match="copies of the canary's share only"):
        shadow.start_edits(repo, MODEL, "production", f"{MODEL}/v1.3.0", "4", ref("1.3.0"))
    g.apply(g.canary_edits(repo, MODEL, "production", 100))
    (done,) = live_strategies(repo, "production")
    assert done.kind == "single" and done.arms[0].release == f"{MODEL}/v1.1.0"


def test_ab_weights_move_and_bad_weights_change_nothing(repo):
    candidate = (f"{MODEL}/v1.1.0", "2", ref("1.1.0"))
    g.apply(g.ab_edits(repo, MODEL, "production", "current=70,candidate=30", candidate=candidate))
    (ab,) = live_strategies(repo, "production")
    assert ab.kind == "ab" and ab.baseline == "current" and ab.policy == {}
    assert ab.weights == {"current": 70, "candidate": 30}
    assert ab.arm("candidate").service == f"{MODEL}-candidate"
    assert ab.arm("candidate").model_version == "2"
    g.apply(weights_edits(repo, MODEL, "production", {"current": 40, f"{MODEL}-candidate": 60}))
    assert live_strategies(repo, "production")[0].weights == {"current": 40, "candidate": 60}
    before = snapshot(repo)
    for weights, message in [
        ({"current": 50, "candidate": 40}, "sum to 90"),
        ({"current": 50, "other": 50}, "unknown arm other"),
        ({"current": 100}, "no share for candidate"),
        ({"current": 101, "candidate": -1}, "0..100"),
    ]:
        with pytest.raises(GitOpsError, match=message):
            weights_edits(repo, MODEL, "production", weights)
    with pytest.raises(GitOpsError, match="runs no A/B test or bandit"):
        weights_edits(repo, MODEL, "staging", {"current": 100})
    with pytest.raises(GitOpsError, match="unknown environment"):
        weights_edits(repo, MODEL, "prod", {"current": 100})
    assert snapshot(repo) == before


def test_every_strategy_renders_validates_and_serves_what_git_says(repo, crds):  # noqa: F811
    """Blue/green (production, green live), a three-armed bandit with a shadow (staging)
    and an A/B test (local): strict validation (CRDs, policies), and what a cluster serves
    and copies from each, by cluster_model.py."""
    shutil.copytree(ROOT / "argocd", repo / "argocd")
    g.apply(
        bluegreen.release_edits(repo, MODEL, "production", f"{MODEL}/v1.1.0", "2", ref("1.1.0"))
    )
    g.apply(bluegreen.switch_edits(repo, MODEL, "production", "green"))
    candidate = (f"{MODEL}/v1.1.0", "2", ref("1.1.0"))
    third = (f"{MODEL}/v1.2.0", "3", ref("1.2.0"))
    policy = {"floor": 0.1, "max_step": 0.2, "min_scored": 60}
    weights = "current=50,candidate=30,third=20"
    g.apply(g.ab_edits(repo, MODEL, "staging", weights, candidate, third, policy))
    g.apply(shadow.start_edits(repo, MODEL, "staging", f"{MODEL}/v1.3.0", "4", ref("1.3.0")))
    local = (f"{MODEL}/v1.1.0", "2", f"{REPO}:{MODEL}-v1.1.0")
    g.apply(g.ab_edits(repo, MODEL, "local", "current=90,candidate=10", candidate=local))

    # CRDs and policies here; checkov reads the same resources in the shipped tree's
    # renders with these components switched on, pinned and mirrored as the commands do
    # (test_manifests.py: +ab+bluegreen+shadow+third), which spares a second run here
    report = validate_all(repo, crds, checkov=False)
    assert report.ok, str(report)

    (bandit, shadowed) = live_strategies(repo, "staging")
    assert bandit.kind == "bandit" and bandit.policy == policy
    assert bandit.weights == {"current": 50, "candidate": 30, "third": 20}
    assert shadowed.kind == "shadow" and shadowed.baseline == "champion"
    assert [(a.name, a.release, a.share, a.role) for a in shadowed.arms] == [
        ("champion", f"{MODEL}/v1.0.0", 50, ROLE_LIVE),
        ("shadow", f"{MODEL}/v1.3.0", 0, ROLE_SHADOW),
    ]
    staging = Cluster(application(repo, "tsops-staging"))
    staging.sync(repo / "manifests/overlays/staging")
    assert staging.graph_served(f"{MODEL}-ab") == {
        f"{MODEL}/v1.0.0": 50,
        f"{MODEL}/v1.1.0": 30,
        f"{MODEL}/v1.2.0": 20,
    }
    assert staging.copies(f"{MODEL}-ab") == {f"{MODEL}/v1.3.0": 50}, "copies of current's"
    assert staging.batch_images() == {pins_of(repo, "staging")["tsops-batch"]}

    production = Cluster(application(repo, "tsops-production"))
    production.sync(repo / "manifests/overlays/production")
    assert production.graph_served(f"{MODEL}-bluegreen") == {f"{MODEL}/v1.1.0": 100}
    assert production.copies(f"{MODEL}-bluegreen") == {f"{MODEL}/v1.0.0": 100}
    assert production.batch_images() == {ref("1.1.0")}

    # the bandit's weights move within its floor; below it nothing is written
    before = snapshot(repo)
    with pytest.raises(GitOpsError, match="below the bandit's exploration floor"):
        weights_edits(repo, MODEL, "staging", {"current": 85, "candidate": 10, "third": 5})
    assert snapshot(repo) == before
    g.apply(weights_edits(repo, MODEL, "staging", {"current": 30, "candidate": 60, "third": 10}))
    staging.sync(repo / "manifests/overlays/staging")
    assert staging.graph_served(f"{MODEL}-ab")[f"{MODEL}/v1.1.0"] == 60
    assert live_strategies(repo, "staging")[0].policy == policy, "the policy stays"


def test_an_application_ignoring_the_graph_routing_fails():
    from tsops.deploy.manifests.argocd import check_argocd

    app = {
        "kind": "Application",
        "metadata": {"name": "tsops-staging"},
        "spec": {
            "source": {"path": "manifests/overlays/staging", "targetRevision": "main"},
            "ignoreDifferences": [
                {"group": "serving.kserve.io", "kind": "InferenceGraph", "jsonPointers": ["/spec"]}
            ],
        },
    }
    problems = [f.problem for f in check_argocd([app]) if "InferenceGraphs" in f.problem]
    assert problems and "live colour" in problems[0]


def test_shadow_off_restores_the_overlay_and_bad_input_changes_nothing(repo):
    before = snapshot(repo)
    release = (f"{MODEL}/v1.3.0", "4", ref("1.3.0"))
    g.apply(shadow.start_edits(repo, MODEL, "staging", *release))
    (single, found) = live_strategies(repo, "staging")
    assert single.kind == "single" and found.arm("shadow").release == f"{MODEL}/v1.3.0"
    started = snapshot(repo)
    for call, message in [
        (
            lambda: shadow.start_edits(
                repo, MODEL, "staging", f"{MODEL}/v1.3.0", "4", ref("1.2.0")
            ),
            "disagree",
        ),
        (lambda: shadow.start_edits(repo, MODEL, "qa", *release), "unknown environment"),
        (lambda: shadow.off_edits(repo, MODEL, "production"), "runs no shadow"),
        (
            lambda: shadow.start_edits(
                repo, MODEL, "production", *release[:2], f"{REPO}:{MODEL}-v1.3.0"
            ),
            "pins images by digest",
        ),
    ]:
        with pytest.raises(GitOpsError, match=message):
            call()
    assert snapshot(repo) == started
    g.apply(shadow.off_edits(repo, MODEL, "staging"))
    assert snapshot(repo) == before
    assert [s.kind for s in live_strategies(repo, "staging")] == ["single"]


def test_a_shadow_gets_a_copy_of_every_request_also_through_a_later_canary(repo):
    """cluster_model.py: the mirror flag is part of a revision's template, so the shadow
    gets copies of the traffic of the revisions that carry it."""
    shutil.copytree(ROOT / "argocd", repo / "argocd")
    production = Cluster(application(repo, "tsops-production"))
    production.sync(repo / "manifests/overlays/production")
    g.apply(shadow.start_edits(repo, MODEL, "production", f"{MODEL}/v1.3.0", "4", ref("1.3.0")))
    production.sync(repo / "manifests/overlays/production")
    assert production.served(MODEL) == {f"{MODEL}/v1.0.0": 100}
    assert production.copies(MODEL) == {f"{MODEL}/v1.3.0": 100}
    stage(repo, "1.1.0", "2")
    g.apply(g.promote_edits(repo, MODEL, "staging", "production", canary=20))
    production.sync(repo / "manifests/overlays/production")
    assert production.served(MODEL) == {f"{MODEL}/v1.0.0": 80, f"{MODEL}/v1.1.0": 20}
    assert production.copies(MODEL) == {f"{MODEL}/v1.3.0": 100}, "both revisions mirror"
    (canary, found) = live_strategies(repo, "production")
    assert canary.kind == "canary" and found.arm("champion").release == f"{MODEL}/v1.0.0"


def test_strategy_checks_fail_naming_what_breaks_each_strategy(repo):
    """tsops manifests validate's strategy checks on renders broken in one place each."""
    import copy

    from tsops.deploy.manifests.render import render
    from tsops.deploy.manifests.strategies import strategy_findings

    g.apply(
        bluegreen.release_edits(repo, MODEL, "production", f"{MODEL}/v1.1.0", "2", ref("1.1.0"))
    )
    candidate = (f"{MODEL}/v1.1.0", "2", ref("1.1.0"))
    policy = {"floor": 0.1, "max_step": 0.2, "min_scored": 60}
    g.apply(g.ab_edits(repo, MODEL, "staging", "current=50,candidate=50", candidate, None, policy))
    g.apply(shadow.start_edits(repo, MODEL, "staging", f"{MODEL}/v1.3.0", "4", ref("1.3.0")))
    renders = {env: render(repo / "manifests/overlays" / env) for env in ("staging", "production")}
    for env, docs in renders.items():
        assert strategy_findings(docs, f"manifests/overlays/{env}") == [], env

    def broken(env: str, kind: str, name: str, change) -> str:
        docs = copy.deepcopy(renders[env])
        change(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))
        found = strategy_findings(docs, f"manifests/overlays/{env}")
        assert found, f"nothing found after breaking {kind}/{name}"
        return "\n".join(f"{f.problem} | {f.fix}" for f in found)

    def container(isvc: dict) -> dict:
        return isvc["spec"]["predictor"]["containers"][0]

    def args_without_mirror(isvc: dict) -> None:
        container(isvc)["args"] = [a for a in container(isvc)["args"] if "shadow_url" not in a]

    def split(graph: dict) -> None:
        graph["spec"]["nodes"]["root"]["routerType"] = "Splitter"

    def canary(isvc: dict) -> None:
        isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
        isvc["metadata"]["annotations"]["tsops.io/previous-model-version"] = "1"

    def other_namespace(isvc: dict) -> None:
        container(isvc)["args"] = [
            a.replace("tsops-staging", "tsops-production") for a in container(isvc)["args"]
        ]

    def below_floor(graph: dict) -> None:
        steps = graph["spec"]["nodes"]["root"]["steps"]
        steps[0]["weight"], steps[1]["weight"] = 95, 5

    def batch_on_blue(job: dict) -> None:
        spec = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        spec["containers"][0]["image"] = ref("1.1.0").replace("1.1.0", "1.0.0")

    g.apply(bluegreen.switch_edits(repo, MODEL, "production", "green"))
    renders["production"] = render(repo / "manifests/overlays/production")
    cases = [
        ("production", "InferenceGraph", f"{MODEL}-bluegreen", split, "must be a Sequence"),
        ("production", "InferenceService", f"{MODEL}-green", args_without_mirror, "go cold"),
        ("production", "InferenceService", MODEL, canary, "canaryTrafficPercent 10 on a colour"),
        ("production", "CronJob", f"{MODEL}-forecast", batch_on_blue, "not the live colour's"),
        ("staging", "InferenceGraph", f"{MODEL}-ab", below_floor, "exploration floor of 10 %"),
        ("staging", "InferenceService", MODEL, canary, "2 strategies own the user traffic"),
        ("staging", "InferenceService", MODEL, other_namespace, "not 'tsops-staging'"),
        ("staging", "InferenceService", MODEL, args_without_mirror, "never scored"),
    ]
    for env, kind, name, change, words in cases:
        message = broken(env, kind, name, change)
        assert words in message, f"{words!r} not in:\n{message}"
