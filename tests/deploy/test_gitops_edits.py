"""Overlay edits: exact changes, comments kept, bad input leaves every file untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tsops.deploy.gitops import (
    ab_edits,
    apply,
    canary_edits,
    promote_edits,
    release_edits,
    rollback_edits,
)
from tsops.deploy.overlays import GitOpsError
from tsops.deploy.served import serving

ROOT = Path(__file__).resolve().parents[2]
LINEAGE = {"git-commit": "abc123", "data-md5": "d41d8", "mlflow-run": "run1"}
MODEL = "m3-monthly"
REPO = "ghcr.io/acme/serving"
DIGEST = {v: "sha256:" + c * 64 for v, c in (("1.2.0", "2"), ("1.3.0", "3"), ("1.4.0", "4"))}


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


def pins(repo, env) -> dict[str, str]:
    """images: entry name -> repository:tag@digest, as kustomize renders it."""
    return {
        i["name"]: f"{i['newName']}:{i['newTag']}" + (f"@{i['digest']}" if "digest" in i else "")
        for i in load(overlay(repo, env) / "kustomization.yaml")["images"]
    }


def ref(version: str) -> str:
    return f"{REPO}:{MODEL}-v{version}@{DIGEST[version]}"


def release(repo, version: str, model_version: str) -> None:
    apply(
        release_edits(
            repo, MODEL, version, model_version, LINEAGE, image=REPO, digest=DIGEST[version]
        )
    )


def test_release_pins_staging_by_digest_with_lineage(repo):
    production_before = pins(repo, "production")
    release(repo, "1.2.0", "3")
    staging = overlay(repo, "staging")
    annotations = load(staging / "model-version.yaml")["metadata"]["annotations"]
    assert annotations["tsops.io/release"] == "m3-monthly/v1.2.0"
    assert annotations["tsops.io/model-version"] == "3"
    assert annotations["tsops.io/git-commit"] == "abc123"
    # a release replaces what staging serves at once: the InferenceService and the batch
    assert pins(repo, "staging") == {"tsops-serving": ref("1.2.0"), "tsops-batch": ref("1.2.0")}
    text = (staging / "model-version.yaml").read_text()
    assert text.startswith("# The release this environment serves"), "comment lost"
    assert pins(repo, "production") == production_before, "release must only touch staging"


def test_promote_with_a_canary_keeps_batch_on_the_stable_release(repo):
    stable = pins(repo, "production")["tsops-batch"]
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    prod = overlay(repo, "production")
    staged = load(overlay(repo, "staging") / "model-version.yaml")["metadata"]["annotations"]
    promoted = load(prod / "model-version.yaml")["metadata"]["annotations"]
    assert promoted == {
        **staged,
        "tsops.io/previous-release": "m3-monthly/v1.0.0",
        "tsops.io/previous-model-version": "1",
        "tsops.io/previous-image": stable,
    }
    assert (prod / "model-version.yaml").read_text().startswith("# The release this environment")
    assert pins(repo, "production") == {"tsops-serving": ref("1.2.0"), "tsops-batch": stable}
    assert load(prod / "canary.yaml")["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_promote_without_a_canary_takes_all_traffic_and_batch(repo):
    # production ships with a canary share set: a plain promotion must not inherit it
    assert serving(repo, "production").canary is not None
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production"))
    now = serving(repo, "production")
    assert (now.release, now.canary, now.stable_version) == ("m3-monthly/v1.2.0", None, "3")
    assert pins(repo, "production") == {"tsops-serving": ref("1.2.0"), "tsops-batch": ref("1.2.0")}


def test_canary_steps_move_batch_only_at_full_promotion(repo):
    stable = pins(repo, "production")["tsops-batch"]
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    seen = []
    for percent in (50, 0, 100):
        apply(canary_edits(repo, MODEL, "production", percent))
        now = serving(repo, "production")
        seen.append((now.canary, now.stable_version, pins(repo, "production")["tsops-batch"]))
    assert seen == [(50, "1", stable), (0, "1", stable), (None, "3", ref("1.2.0"))]


def test_a_canary_share_after_full_promotion_is_refused(repo):
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    apply(canary_edits(repo, MODEL, "production", 100))
    before = snapshot(repo)
    with pytest.raises(GitOpsError, match=r"fully promoted.*tsops rollback"):
        canary_edits(repo, MODEL, "production", 50)
    assert snapshot(repo) == before


def test_rollback_during_a_canary_then_again_pins_the_previous_release(repo):
    stable = pins(repo, "production")["tsops-batch"]
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    apply(rollback_edits(repo, MODEL, "production"))  # canary 0: instant, KServe's rollback
    now = serving(repo, "production")
    assert (now.release, now.canary, now.stable_version) == ("m3-monthly/v1.2.0", 0, "1")
    apply(rollback_edits(repo, MODEL, "production"))  # pinned: survives a recreation
    now = serving(repo, "production")
    assert (now.release, now.version, now.canary) == ("m3-monthly/v1.0.0", "1", None)
    assert pins(repo, "production") == {"tsops-serving": stable, "tsops-batch": stable}
    annotations = load(overlay(repo, "production") / "model-version.yaml")["metadata"]
    assert annotations["annotations"]["tsops.io/rolled-back-from"] == "m3-monthly/v1.2.0"
    assert "tsops.io/git-commit" not in annotations["annotations"], "v1.2.0's lineage kept"
    with pytest.raises(GitOpsError, match="no release before"):
        rollback_edits(repo, MODEL, "production")


def test_rollback_after_full_promotion_pins_the_previous_release(repo):
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    apply(canary_edits(repo, MODEL, "production", 100))
    release(repo, "1.3.0", "4")
    apply(promote_edits(repo, MODEL, "staging", "production"))
    apply(rollback_edits(repo, MODEL, "production"))
    now = serving(repo, "production")
    assert (now.release, now.version, now.canary) == ("m3-monthly/v1.2.0", "3", None)
    assert pins(repo, "production") == {"tsops-serving": ref("1.2.0"), "tsops-batch": ref("1.2.0")}


def test_promoting_the_same_release_again_keeps_what_it_replaced(repo):
    release(repo, "1.2.0", "3")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    apply(promote_edits(repo, MODEL, "staging", "production", canary=30))
    now = serving(repo, "production")
    assert (now.canary, now.previous_release, now.previous_version) == (
        30,
        "m3-monthly/v1.0.0",
        "1",
    )
    # the next release replaces the one that serves: v1 while v1.2.0 is still a canary
    release(repo, "1.3.0", "4")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    assert serving(repo, "production").previous_version == "1"
    apply(canary_edits(repo, MODEL, "production", 100))
    release(repo, "1.4.0", "5")
    apply(promote_edits(repo, MODEL, "staging", "production", canary=10))
    now = serving(repo, "production")
    assert (now.previous_release, now.previous_image) == ("m3-monthly/v1.3.0", ref("1.3.0"))


def test_ab_pins_the_candidate_release_and_weights(repo):
    candidate = ("m3-monthly/v1.2.0", "3", ref("1.2.0"))
    apply(ab_edits(repo, MODEL, "production", "current=70,candidate=30", candidate=candidate))
    prod = overlay(repo, "production")
    kust = load(prod / "kustomization.yaml")
    assert "../../components/ab" in kust["components"]
    assert pins(repo, "production")["tsops-serving-candidate"] == ref("1.2.0")
    patched = load(prod / "ab-candidate.yaml")
    assert patched["metadata"]["name"] == "m3-monthly-candidate"
    assert patched["metadata"]["annotations"]["tsops.io/model-version"] == "3"
    steps = load(prod / "ab-weights.yaml")["spec"]["nodes"]["root"]["steps"]
    assert [s["weight"] for s in steps] == [70, 30]
    # later weight changes keep the candidate
    apply(ab_edits(repo, MODEL, "production", "current=50,candidate=50"))
    assert pins(repo, "production")["tsops-serving-candidate"] == ref("1.2.0")


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda r: canary_edits(r, MODEL, "production", 150), "outside 0..100"),
        (lambda r: canary_edits(r, MODEL, "production", -1), "outside 0..100"),
        (lambda r: canary_edits(r, MODEL, "staging", 20), "no canary running"),
        (lambda r: ab_edits(r, MODEL, "production", "current=60,candidate=30"), "sum to 90"),
        (lambda r: ab_edits(r, MODEL, "production", "a=50,b=50"), "unknown A/B arm"),
        (lambda r: ab_edits(r, MODEL, "production", "current=50,candidate=50"), "no A/B candidate"),
        (
            lambda r: ab_edits(
                r,
                MODEL,
                "production",
                "current=50,candidate=50",
                candidate=("m3-monthly/v1.3.0", "4", ref("1.2.0")),
            ),
            "disagree",
        ),
        (
            lambda r: ab_edits(
                r,
                MODEL,
                "production",
                "current=50,candidate=50",
                candidate=("m3-monthly/v1.2.0", "3", f"{REPO}:m3-monthly-v1.2.0"),
            ),
            "by digest",
        ),
        (lambda r: canary_edits(r, "other-model", "production", 10), "unknown model"),
        (lambda r: canary_edits(r, MODEL, "prod", 10), "unknown environment"),
        (lambda r: release_edits(r, MODEL, "latest", "3", LINEAGE), "X.Y.Z"),
        (lambda r: release_edits(r, MODEL, "1.2.0", "3", LINEAGE), "by digest"),
        (
            lambda r: release_edits(r, MODEL, "1.2.0", "3", LINEAGE, digest="sha256:abc"),
            "64 hex",
        ),
        (
            lambda r: release_edits(r, MODEL, "1.2.0", "3", LINEAGE, image="ghcr.io/a/b:v1"),
            "without tag",
        ),
        (
            lambda r: release_edits(r, MODEL, "1.2.0", "3", LINEAGE, image="ghcr.io/Acme/b"),
            "lowercase",
        ),
        (lambda r: promote_edits(r, MODEL, "staging", "staging"), "same environment"),
        (lambda r: promote_edits(r, MODEL, "local", "production"), "by digest"),
        (lambda r: rollback_edits(r, MODEL, "staging"), "no release before"),
    ],
)
def test_bad_input_changes_no_file(repo, call, needle):
    before = snapshot(repo)
    with pytest.raises(GitOpsError, match=needle):
        apply(call(repo))
    assert snapshot(repo) == before
