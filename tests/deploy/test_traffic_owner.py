"""One owner for the traffic: what a cluster serves after each GitOps command, kubectl
adjustment, unrelated sync and recreation, from the model of Argo CD and KServe in
cluster_model.py (its docstring cites the behaviour it assumes). Git's view
(``tsops.deploy.served.serving``, which ``tsops sync-champion`` follows) must agree with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.cluster_model import Cluster, application
from tsops.deploy import gitops as g
from tsops.deploy.served import serving

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "m3-monthly"
REPO = "ghcr.io/acme/tsops-serving"
LINEAGE = {"git-commit": "abc123", "data-md5": "d41d8", "mlflow-run": "run1"}


def digest(version: str) -> str:
    return "sha256:" + version.replace(".", "")[-1] * 64


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    shutil.copytree(ROOT / "argocd", tmp_path / "argocd")
    return tmp_path


@pytest.fixture
def production(repo) -> Cluster:
    cluster = Cluster(application(repo, "tsops-production"))
    cluster.sync(repo / "manifests/overlays/production")
    return cluster


def release_and_promote(repo: Path, version: str, canary: int | None) -> None:
    g.apply(
        g.release_edits(repo, MODEL, version, version, LINEAGE, image=REPO, digest=digest(version))
    )
    g.apply(g.promote_edits(repo, MODEL, "staging", "production", canary=canary))


def git_says(repo: Path) -> dict[str, int]:
    """The split git describes: the pinned release at its canary share, the rest on the
    release it replaced (the stable one, which tsops sync-champion makes champion)."""
    now = serving(repo, "production")
    if now.canary is None or now.stable_release == now.release:
        return {now.release: 100}
    return {
        k: v
        for k, v in {now.release: now.canary, now.stable_release: 100 - now.canary}.items()
        if v
    }


def sync(repo: Path, cluster: Cluster) -> dict[str, int]:
    cluster.sync(repo / "manifests/overlays/production")
    served = cluster.served(MODEL)
    assert served == git_says(repo), "the cluster serves what git says after a sync"
    return served


def test_git_value_wins_over_a_kubectl_canary_at_the_next_sync(repo, production):
    release_and_promote(repo, "1.1.0", canary=10)
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 90, "m3-monthly/v1.1.0": 10}
    # scripts/canary.sh ... 100: the live field removed, git's branch not merged yet
    production.kubectl_patch_canary(MODEL, 100)
    assert production.served(MODEL) == {"m3-monthly/v1.1.0": 100}
    # a sync (of this or any unrelated change) puts git's 10 % back: no hidden second owner
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 90, "m3-monthly/v1.1.0": 10}
    # so the next release starts as the canary git asks for, not at 100 % at once
    release_and_promote(repo, "1.2.0", canary=10)
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 90, "m3-monthly/v1.2.0": 10}


def test_after_a_kubectl_rollback_the_next_release_still_gets_its_canary(repo, production):
    release_and_promote(repo, "1.1.0", canary=10)
    sync(repo, production)
    production.kubectl_patch_canary(MODEL, 0)
    assert production.served(MODEL) == {"m3-monthly/v1.0.0": 100}
    g.apply(g.rollback_edits(repo, MODEL, "production"))  # the script's branch, merged
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 100}
    release_and_promote(repo, "1.2.0", canary=20)
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 80, "m3-monthly/v1.2.0": 20}


def test_batch_runs_the_stable_release_until_full_promotion(repo, production):
    before = production.batch_images()
    assert len(before) == 1
    release_and_promote(repo, "1.1.0", canary=10)
    sync(repo, production)
    assert production.batch_images() == before, "a canary start must not move batch"
    g.apply(g.canary_edits(repo, MODEL, "production", 0))
    sync(repo, production)
    assert production.batch_images() == before
    g.apply(g.canary_edits(repo, MODEL, "production", 100))
    sync(repo, production)
    assert production.batch_images() == {f"{REPO}:m3-monthly-v1.1.0@{digest('1.1.0')}"}


def test_rollback_after_an_unrelated_change_reaches_the_previous_release(repo, production):
    release_and_promote(repo, "1.1.0", canary=10)
    sync(repo, production)
    g.apply(g.canary_edits(repo, MODEL, "production", 100))
    sync(repo, production)
    # an unrelated change (a setting) makes a new revision of v1.1.0: KServe's previous
    # rolled-out revision is now v1.1.0 itself, so canary 0 would not go back to v1.0.0
    settings = repo / "manifests/base/settings.env"
    settings.write_text(settings.read_text() + "TSOPS_EXAMPLE_SETTING=1\n")
    assert sync(repo, production) == {"m3-monthly/v1.1.0": 100}
    g.apply(g.rollback_edits(repo, MODEL, "production"))  # pins v1.0.0 again
    assert sync(repo, production) == {"m3-monthly/v1.0.0": 100}


def test_a_recreated_inference_service_serves_what_git_pins(repo, production):
    release_and_promote(repo, "1.1.0", canary=10)
    sync(repo, production)
    # KServe has no rolled-out revision after a recreation: the pinned release takes all
    # the traffic whatever the canary share (documented in the README's Deploying)
    production.recreate(MODEL)
    assert production.served(MODEL) == {"m3-monthly/v1.1.0": 100}
    # a rolled back canary, then pinned (tsops rollback twice), survives a recreation
    g.apply(g.rollback_edits(repo, MODEL, "production"))
    g.apply(g.rollback_edits(repo, MODEL, "production"))
    sync(repo, production)
    production.recreate(MODEL)
    assert production.served(MODEL) == git_says(repo) == {"m3-monthly/v1.0.0": 100}
