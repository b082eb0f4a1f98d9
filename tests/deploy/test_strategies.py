"""Live strategies read from git (tsops.deploy.strategies) and the Splitter weights edit:
what each overlay state says is served, and bad weights change no file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tsops.deploy import gitops as g
from tsops.deploy.overlays import GitOpsError
from tsops.deploy.strategies import ROLE_LIVE, Arm, live_strategies, weights_edits

ROOT = Path(__file__).resolve().parents[2]
MODEL = "m3-monthly"
REPO = "ghcr.io/acme/tsops-serving"


def digest(version: str) -> str:
    return "sha256:" + version.replace(".", "")[-1] * 64


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
