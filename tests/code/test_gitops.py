"""Overlay edits: exact changes, comments kept, bad input leaves every file untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tsops.gitops import (
    GitOpsError,
    ab_edits,
    apply,
    canary_edits,
    promote_edits,
    release_edits,
    rollback_edits,
    serving,
)

ROOT = Path(__file__).resolve().parents[2]
LINEAGE = {"git-commit": "abc123", "data-md5": "d41d8", "mlflow-run": "run1"}


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    return tmp_path


def snapshot(repo: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted((repo / "manifests").rglob("*.yaml"))}


def load(path: Path):
    return YAML(typ="safe").load(path.read_text())


def overlay(repo, env):
    return repo / "manifests" / "overlays" / env


def test_release_points_staging_at_the_version_with_lineage(repo):
    apply(release_edits(repo, "m3-monthly", "1.2.0", "3", LINEAGE))
    staging = overlay(repo, "staging")
    annotations = load(staging / "model-version.yaml")["metadata"]["annotations"]
    assert annotations["tsops.io/release"] == "m3-monthly/v1.2.0"
    assert annotations["tsops.io/model-version"] == "3"
    assert annotations["tsops.io/git-commit"] == "abc123"
    images = load(staging / "kustomization.yaml")["images"]
    assert images[0]["newTag"] == "m3-monthly-v1.2.0"
    text = (staging / "model-version.yaml").read_text()
    assert text.startswith("# The release this environment serves"), "comment lost"
    prod = load(overlay(repo, "production") / "kustomization.yaml")["images"][0]["newTag"]
    assert prod == "m3-monthly-v1.0.0", "release must only touch staging"


def test_release_with_an_image_sets_the_repository(repo):
    apply(release_edits(repo, "m3-monthly", "1.2.0", "3", LINEAGE, image="ghcr.io/acme/serving"))
    image = load(overlay(repo, "staging") / "kustomization.yaml")["images"][0]
    assert (image["newName"], image["newTag"]) == ("ghcr.io/acme/serving", "m3-monthly-v1.2.0")


def test_promote_copies_the_release_with_a_canary(repo):
    apply(release_edits(repo, "m3-monthly", "1.2.0", "3", LINEAGE, image="ghcr.io/acme/serving"))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    prod = overlay(repo, "production")
    staged = load(overlay(repo, "staging") / "model-version.yaml")["metadata"]["annotations"]
    promoted = load(prod / "model-version.yaml")["metadata"]["annotations"]
    assert promoted == {
        **staged,
        "tsops.io/previous-release": "m3-monthly/v1.0.0",
        "tsops.io/previous-model-version": "1",
    }
    assert (prod / "model-version.yaml").read_text().startswith("# The release this environment")
    image = load(prod / "kustomization.yaml")["images"][0]
    assert (image["newName"], image["newTag"]) == ("ghcr.io/acme/serving", "m3-monthly-v1.2.0")
    assert load(prod / "canary.yaml")["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_stable_version_follows_canary_full_promotion_and_rollback(repo):
    # as shipped: a canary field but nothing before v1, so v1 takes all the traffic
    assert serving(repo, "production").stable_version == "1"
    apply(release_edits(repo, "m3-monthly", "1.2.0", "3", LINEAGE))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    stable = []
    for percent in (50, 100, 0):
        apply(canary_edits(repo, "m3-monthly", "production", percent))
        now = serving(repo, "production")
        assert (now.release, now.version) == ("m3-monthly/v1.2.0", "3")
        stable.append((now.canary, now.stable_release, now.stable_version))
    assert stable == [
        (50, "m3-monthly/v1.0.0", "1"),
        (None, "m3-monthly/v1.2.0", "3"),
        (0, "m3-monthly/v1.0.0", "1"),
    ]


def test_promoting_the_same_release_again_keeps_what_it_replaced(repo):
    apply(release_edits(repo, "m3-monthly", "1.2.0", "3", LINEAGE))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=30))
    now = serving(repo, "production")
    assert (now.canary, now.previous_release, now.previous_version) == (
        30,
        "m3-monthly/v1.0.0",
        "1",
    )
    # the next release replaces the one that serves: v1 while v1.2.0 is still a canary
    apply(release_edits(repo, "m3-monthly", "1.3.0", "4", LINEAGE))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    assert serving(repo, "production").previous_version == "1"
    apply(canary_edits(repo, "m3-monthly", "production", 100))
    apply(release_edits(repo, "m3-monthly", "1.4.0", "5", LINEAGE))
    apply(promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    assert serving(repo, "production").previous_release == "m3-monthly/v1.3.0"


def test_canary_steps_full_promotion_and_rollback(repo):
    prod = overlay(repo, "production")
    apply(canary_edits(repo, "m3-monthly", "production", 50))
    assert load(prod / "canary.yaml")["spec"]["predictor"]["canaryTrafficPercent"] == 50
    apply(canary_edits(repo, "m3-monthly", "production", 100))
    assert "canaryTrafficPercent" not in load(prod / "canary.yaml")["spec"]["predictor"]
    apply(rollback_edits(repo, "m3-monthly", "production"))
    assert load(prod / "canary.yaml")["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_canary_in_an_overlay_without_one_adds_the_patch(repo):
    apply(canary_edits(repo, "m3-monthly", "staging", 20))
    kust = load(overlay(repo, "staging") / "kustomization.yaml")
    assert {"path": "canary.yaml"} in kust["patches"]


def test_ab_switches_the_component_on_with_weights(repo):
    apply(ab_edits(repo, "m3-monthly", "production", "current=70,candidate=30"))
    prod = overlay(repo, "production")
    kust = load(prod / "kustomization.yaml")
    assert "../../components/ab" in kust["components"]
    steps = load(prod / "ab-weights.yaml")["spec"]["nodes"]["root"]["steps"]
    assert [s["weight"] for s in steps] == [70, 30]


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda r: canary_edits(r, "m3-monthly", "production", 150), "outside 0..100"),
        (lambda r: canary_edits(r, "m3-monthly", "production", -1), "outside 0..100"),
        (lambda r: ab_edits(r, "m3-monthly", "production", "current=60,candidate=30"), "sum to 90"),
        (lambda r: ab_edits(r, "m3-monthly", "production", "a=50,b=50"), "unknown A/B arm"),
        (lambda r: canary_edits(r, "other-model", "production", 10), "unknown model"),
        (lambda r: canary_edits(r, "m3-monthly", "prod", 10), "unknown environment"),
        (lambda r: release_edits(r, "m3-monthly", "latest", "3", LINEAGE), "X.Y.Z"),
        (
            lambda r: release_edits(r, "m3-monthly", "1.2.0", "3", LINEAGE, image="ghcr.io/a/b:v1"),
            "without tag",
        ),
        (
            lambda r: release_edits(r, "m3-monthly", "1.2.0", "3", LINEAGE, image="ghcr.io/Acme/b"),
            "lowercase",
        ),
        (lambda r: promote_edits(r, "m3-monthly", "staging", "staging"), "same environment"),
        (lambda r: rollback_edits(r, "m3-monthly", "staging"), "no canary"),
    ],
)
def test_bad_input_changes_no_file(repo, call, needle):
    before = snapshot(repo)
    with pytest.raises(GitOpsError, match=needle):
        apply(call(repo))
    assert snapshot(repo) == before
