"""GitOps commands end to end on a copy of the manifests: the CLI, real kustomize renders
validated against the real CRDs after each edit, and the kubectl canary patch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import run
from tests.integration.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tsops import manifests as m

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


def test_promotion_steps_render_and_validate(repo, crds):  # noqa: F811
    prod = repo / "manifests/overlays/production"
    for args, percent in [
        (
            ["promote", "m3-monthly", "--from", "staging", "--to", "production", "--canary", "10"],
            10,
        ),
        (["canary", "m3-monthly", "--env", "production", "--percent", "50"], 50),
        (["canary", "m3-monthly", "--env", "production", "--percent", "100"], None),
        (["rollback", "m3-monthly", "--env", "production"], 0),
    ]:
        run(["tsops", *args, "--root", str(repo)], repo)
        rendered = isvc(m.render(prod))
        assert rendered["spec"]["predictor"].get("canaryTrafficPercent") == percent
        report = m.validate_all(repo, crds, checkov=False)
        assert report.ok, str(report)


def test_ab_weights_render_in_the_inference_graph(repo, crds):  # noqa: F811
    run(
        [
            "tsops",
            "ab",
            "m3-monthly",
            "--env",
            "production",
            "--weights",
            "current=70,candidate=30",
            "--root",
            str(repo),
        ],
        repo,
    )
    docs = m.render(repo / "manifests/overlays/production")
    graph = next(d for d in docs if d["kind"] == "InferenceGraph")
    assert [s["weight"] for s in graph["spec"]["nodes"]["root"]["steps"]] == [70, 30]
    assert m.validate_all(repo, crds, checkov=False).ok


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


def test_sync_champion_refuses_a_version_the_registry_does_not_have(repo, tmp_path):
    registry = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = run(["tsops", "sync-champion", "--root", str(repo)], repo, check=False, env=registry)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "production overlay serves m3-monthly/v1.0.0" in result.stderr
    assert "has no version 1 of 'm3-monthly'" in result.stderr
    assert "No alias was moved" in result.stderr


def test_canary_script_patches_a_rendered_manifest(repo, tmp_path):
    rendered = tmp_path / "isvc.yaml"
    docs = m.render(repo / "manifests/overlays/production")
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
    bad = subprocess.run(
        [script, "m3-monthly", "150", "--local", "-f", str(rendered)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "outside 0..100" in bad.stderr
