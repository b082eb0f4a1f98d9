"""GitOps commands end to end on a copy of the manifests: the CLI, real kustomize renders
validated against the real CRDs after each edit, and the kubectl canary patch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import run
from tests.deploy.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tests.helpers.commands import tsops
from tests.helpers.once import empty_mlflow_store
from tsops.deploy import bluegreen
from tsops.deploy import gitops as g
from tsops.deploy.manifests.render import render
from tsops.deploy.manifests.validate import validate_all

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    shutil.copytree(ROOT / "argocd", tmp_path / "argocd")
    return tmp_path


def isvc(docs: list[dict], name: str = "m3-monthly") -> dict:
    return next(
        d for d in docs if d["kind"] == "InferenceService" and d["metadata"]["name"] == name
    )


def stage(repo: Path, version: str = "1.1.0") -> str:
    """Staging pinned to a new release (what `tsops release` writes; the CLI and its
    registry are the subject elsewhere). Returns its image ref."""
    digest = "sha256:" + "b" * 64
    g.apply(
        g.release_edits(
            repo, "m3-monthly", version, "2", {}, image="ghcr.io/tsops/tsops-serving", digest=digest
        )
    )
    return f"ghcr.io/tsops/tsops-serving:m3-monthly-v{version}@{digest}"


def test_promotion_steps_render_and_validate(repo, crds):  # noqa: F811
    prod = repo / "manifests/overlays/production"
    released = stage(repo)
    for args, percent, release in [
        (
            ["promote", "m3-monthly", "--from", "staging", "--to", "production", "--canary", "10"],
            10,
            "m3-monthly/v1.1.0",
        ),
        (
            ["canary", "m3-monthly", "--env", "production", "--percent", "50"],
            50,
            "m3-monthly/v1.1.0",
        ),
        (["rollback", "m3-monthly", "--env", "production"], 0, "m3-monthly/v1.1.0"),
        (
            ["canary", "m3-monthly", "--env", "production", "--percent", "100"],
            None,
            "m3-monthly/v1.1.0",
        ),
        (["rollback", "m3-monthly", "--env", "production"], None, "m3-monthly/v1.0.0"),
    ]:
        run(["tsops", *args, "--root", str(repo)], repo)
        rendered = isvc(render(prod))
        assert rendered["spec"]["predictor"].get("canaryTrafficPercent") == percent
        assert rendered["metadata"]["annotations"]["tsops.io/release"] == release
        report = validate_all(repo, crds, checkov=False)
        assert report.ok, str(report)
    assert released not in str(render(prod)), "the rollback pinned v1.0.0 again"


def test_ab_candidate_from_the_registry_renders_with_its_volumes(
    repo,
    crds,  # noqa: F811
    tmp_path,
    tmp_path_factory,
):
    """`tsops release` records a release's image in the registry; `tsops ab --candidate`
    pins the A/B candidate to it, and the candidate mounts what the main server mounts."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{empty_mlflow_store(tmp_path_factory, tmp_path / 'mlflow.db')}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m3-monthly")
    (tmp_path / "model").mkdir()
    client.create_model_version("m3-monthly", str(tmp_path / "model"))
    registry = {"MLFLOW_TRACKING_URI": uri}
    digest = "sha256:" + "c" * 64
    release = ["release", "m3-monthly", "1.1.0", "--model-version", "1"]
    release += ["--image", "ghcr.io/tsops/tsops-serving", "--digest", digest, "--root", str(repo)]
    run(["tsops", *release], repo, env=registry)
    version = client.get_model_version("m3-monthly", "1")
    assert version.tags["tsops.image"] == f"ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0@{digest}"
    assert str(client.get_model_version_by_alias("m3-monthly", "challenger").version) == "1"
    ab = ["ab", "m3-monthly", "--env", "production", "--candidate", "m3-monthly/v1.1.0"]
    run([
        "tsops", *ab, "--weights", "current=70,candidate=30", "--root", str(repo)
    ], repo, env=registry)  # fmt: skip
    docs = render(repo / "manifests/overlays/production")
    graph = next(d for d in docs if d["kind"] == "InferenceGraph")
    assert [s["weight"] for s in graph["spec"]["nodes"]["root"]["steps"]] == [70, 30]
    main, candidate = isvc(docs), isvc(docs, "m3-monthly-candidate")
    assert candidate["spec"]["predictor"]["containers"][0]["image"].endswith(digest)
    assert candidate["metadata"]["annotations"]["tsops.io/release"] == "m3-monthly/v1.1.0"

    def mounts(doc):
        return {v["mountPath"] for v in doc["spec"]["predictor"]["containers"][0]["volumeMounts"]}

    features = {"/home/tsops/features", "/home/tsops/features/feature_store.yaml"}
    assert mounts(candidate) == mounts(main) == {"/tmp", "/var/lib/tsops", *features}
    # the same release as staging's shadow and as local's green colour, pinned from the
    # registry (in this process: the CLI's parsing and registry lookup, not its start-up)
    for args in (
        ["shadow", "m3-monthly", "--env", "staging", "--release", "m3-monthly/v1.1.0"],
        ["bluegreen", "m3-monthly", "--env", "local", "--release", "m3-monthly/v1.1.0"],
        ["bluegreen", "m3-monthly", "--env", "local", "--to", "green"],
    ):
        tsops(*args, "--root", str(repo), cwd=repo, env=registry)
    staging = render(repo / "manifests/overlays/staging")
    shadow = isvc(staging, "m3-monthly-shadow")
    assert shadow["spec"]["predictor"]["containers"][0]["image"].endswith(digest)
    assert shadow["metadata"]["annotations"]["tsops.io/model-version"] == "1"
    assert (
        "--shadow_url=http://m3-monthly-shadow.tsops-staging.svc.cluster.local"
        in (isvc(staging)["spec"]["predictor"]["containers"][0]["args"])
    )
    local = render(repo / "manifests/overlays/local")
    graph = next(d for d in local if d["kind"] == "InferenceGraph")
    assert graph["spec"]["nodes"]["root"]["steps"] == [
        {"name": "green", "serviceName": "m3-monthly-green"}
    ]
    assert validate_all(repo, crds, checkov=False).ok
    # an unknown release is refused before any file changes
    before = {p: p.read_text() for p in (repo / "manifests").rglob("*.yaml")}
    bad = [
        "ab",
        "m3-monthly",
        "--candidate",
        "m3-monthly/v9.9.9",
        "--weights",
        "current=50,candidate=50",
    ]
    result = run(["tsops", *bad, "--root", str(repo)], repo, check=False, env=registry)
    assert result.returncode == 1 and "no release 'm3-monthly/v9.9.9'" in result.stderr
    for args in (
        ["shadow", "m3-monthly", "--env", "production", "--release", "m3-monthly/v9.9.9"],
        ["bluegreen", "m3-monthly", "--env", "staging", "--release", "m3-monthly/v9.9.9"],
        ["bluegreen", "m3-monthly", "--env", "local", "--to", "purple"],
        ["shadow", "m3-monthly", "--env", "production", "--off"],
    ):
        ran = tsops(*args, "--root", str(repo), cwd=repo, env=registry, check=False)
        assert ran.returncode == 1 and "error:" in ran.stderr, ran
    assert {p: p.read_text() for p in (repo / "manifests").rglob("*.yaml")} == before


@pytest.mark.parametrize(
    "args",
    [
        ["canary", "m3-monthly", "--env", "production", "--percent", "150"],
        ["ab", "m3-monthly", "--env", "production", "--weights", "a=60,b=30"],
        ["ab", "m3-monthly", "--env", "production", "--weights", "current=60,candidate=30"],
        ["promote", "m3-monthly", "--from", "staging", "--to", "qa"],
        ["release", "m3-monthly", "1.2.0", "--image", "ghcr.io/acme/tsops-serving:latest"],
    ],
)
def test_bad_commands_exit_non_zero_and_change_nothing(repo, args):
    before = {p: p.read_text() for p in (repo / "manifests").rglob("*.yaml")}
    result = run(["tsops", *args, "--root", str(repo)], repo, check=False)
    assert result.returncode != 0
    assert "no file changed" in result.stderr and "Traceback" not in result.stderr
    assert {p: p.read_text() for p in (repo / "manifests").rglob("*.yaml")} == before


def test_sync_champion_refuses_a_version_the_registry_does_not_have(
    repo, tmp_path, tmp_path_factory
):
    empty = empty_mlflow_store(tmp_path_factory, tmp_path / "mlflow.db")
    registry = {"MLFLOW_TRACKING_URI": f"sqlite:///{empty}"}
    result = run(["tsops", "sync-champion", "--root", str(repo)], repo, check=False, env=registry)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "production overlay serves m3-monthly/v1.0.0" in result.stderr
    assert "has no version 1 of 'm3-monthly'" in result.stderr
    assert "No alias was moved" in result.stderr


def test_canary_script_patches_a_rendered_manifest(repo, tmp_path):
    rendered = tmp_path / "isvc.yaml"
    docs = render(repo / "manifests/overlays/production")
    YAML().dump(isvc(docs), rendered)
    script = str(ROOT / "scripts/canary.sh")
    for percent, expected in [("30", 30), ("0", 0), ("100", None)]:
        out = subprocess.run(
            [script, "m3-monthly", percent, "--local", "-f", str(rendered)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        patched = YAML(typ="safe").load(out)
        assert patched["spec"]["predictor"].get("canaryTrafficPercent") == expected
        YAML().dump(patched, rendered)  # 100 after 100: removing an absent field is no error
    bad = subprocess.run(
        [script, "m3-monthly", "150", "--local", "-f", str(rendered)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "outside 0..100" in bad.stderr


def test_canary_branch_prepares_the_git_change_and_keeps_the_working_copy(repo):
    """The git half of scripts/canary.sh: the change committed on its own branch."""
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    identity |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "manifests"], repo, env=identity)
    stage(repo)
    g.apply(g.promote_edits(repo, "m3-monthly", "staging", "production", canary=10))
    run(["git", "commit", "-q", "-am", "canary 10"], repo, env=identity)
    out = run(
        ["tsops", "canary", "m3-monthly", "--percent", "40", "--branch", "--root", str(repo)],
        repo,
        env=identity,
    ).stdout
    assert "canary/m3-monthly-production-40: prepared" in out
    head = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], repo).stdout.strip()
    assert head == "main" and not run(["git", "status", "--porcelain"], repo).stdout
    shown = run(
        [
            "git",
            "show",
            "canary/m3-monthly-production-40:manifests/overlays/production/canary.yaml",
        ],
        repo,
    ).stdout
    assert YAML(typ="safe").load(shown)["spec"]["predictor"]["canaryTrafficPercent"] == 40


def test_sync_champion_follows_the_live_colour(repo, tmp_path, tmp_path_factory):
    """Blue/green: champion is the live colour's version, before and after a switch."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{empty_mlflow_store(tmp_path_factory, tmp_path / 'mlflow.db')}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m3-monthly")
    (tmp_path / "model").mkdir()
    for _ in range(2):
        client.create_model_version("m3-monthly", str(tmp_path / "model"))
    image = "ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0@sha256:" + "b" * 64
    g.apply(
        bluegreen.release_edits(repo, "m3-monthly", "production", "m3-monthly/v1.1.0", "2", image)
    )
    registry = {"MLFLOW_TRACKING_URI": uri}
    for colour, version in (("blue", "1"), ("green", "2"), ("blue", "1")):
        if bluegreen.live_colour(repo / "manifests/overlays/production") != colour:
            g.apply(bluegreen.switch_edits(repo, "m3-monthly", "production", colour))
        out = tsops("sync-champion", "--root", str(repo), cwd=repo, env=registry).stdout
        assert f"version {version} (production runs blue/green, {colour} live" in out, out
        assert str(client.get_model_version_by_alias("m3-monthly", "champion").version) == version
