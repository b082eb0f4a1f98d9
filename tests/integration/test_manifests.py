"""The real manifests: every overlay renders with kubectl kustomize and passes the strict
schemas (real KServe and Argo CD CRDs), the policies and checkov; a release (image bump)
reaches the InferenceService; a broken copy fails with messages naming the field.

The CRDs come from $TSOPS_CRDS_DIR, else ../shared/crds beside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tsops import manifests as m

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "staging", "production")
CLI = [sys.executable, "-m", "tsops.manifests", "validate"]


@pytest.fixture(scope="module")
def crds() -> Path:
    configured = os.environ.get(m.CRDS_ENV)
    path = Path(configured) if configured else ROOT.parent / "shared" / "crds"
    if not path.is_dir():
        pytest.fail(
            f"CRD directory {path} not found: set {m.CRDS_ENV} to a directory with the KServe "
            "and Argo CD CRD YAML files (InferenceService, InferenceGraph, Application, "
            "ApplicationSet, AppProject)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module", autouse=True)
def kubectl() -> None:
    if not shutil.which("kubectl"):
        pytest.fail(
            "kubectl not found on PATH: the manifests are rendered with `kubectl kustomize` "
            "(kubectl 1.32 or newer)",
            pytrace=False,
        )


def _copy_repo(tmp_path: Path) -> Path:
    """manifests/ and argocd/ in a throwaway repository root."""
    for top in ("manifests", "argocd"):
        shutil.copytree(ROOT / top, tmp_path / top)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _image(isvc: dict) -> str:
    return isvc["spec"]["predictor"]["containers"][0]["image"]


def test_repository_manifests_pass_every_check_including_checkov(crds: Path):
    start = time.perf_counter()
    report = m.validate_all(ROOT, crds, checkov=True)
    took = time.perf_counter() - start
    print(f"\nvalidate_all with checkov: {took:.1f}s {report.summary()}")
    assert report.ok, "\n".join(map(str, report.findings))
    for env in OVERLAYS:
        assert report.renders[f"manifests/overlays/{env}"] > 0
        assert report.renders[f"manifests/overlays/{env}+ab"] > 0
    assert report.renders["argocd"] == 4  # AppProject + 3 Applications
    assert "checkov" in report.timings


@pytest.mark.parametrize("env", OVERLAYS)
def test_overlay_pins_its_namespace_release_and_knative_mode(env: str):
    docs = m.render(ROOT / "manifests" / "overlays" / env)
    isvc = _by_kind(docs, "InferenceService")["m3-monthly"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        f"tsops-{env}"
    }
    assert isvc["metadata"]["annotations"][m.DEPLOYMENT_MODE] == "Serverless"
    release = isvc["metadata"]["annotations"][m.RELEASE]
    assert _image(isvc) == f"ghcr.io/tsops/tsops-serving:{release.replace('/', '-')}"
    for cronjob in _by_kind(docs, "CronJob").values():
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == _image(isvc)
    canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    assert (canary is not None) == (env == "production")


def test_image_bump_changes_the_rendered_inference_service(tmp_path: Path):
    repo = _copy_repo(tmp_path)
    overlay = repo / "manifests" / "overlays" / "production"
    before = _by_kind(m.render(overlay), "InferenceService")["m3-monthly"]
    kustomization = overlay / "kustomization.yaml"
    old_tag = yaml.safe_load(kustomization.read_text())["images"][0]["newTag"]
    _edit(kustomization, f"newTag: {old_tag}", "newTag: m3-monthly-v9.9.9")
    after_docs = m.render(overlay)
    after = _by_kind(after_docs, "InferenceService")["m3-monthly"]
    assert _image(before) == f"ghcr.io/tsops/tsops-serving:{old_tag}"
    assert _image(after) == "ghcr.io/tsops/tsops-serving:m3-monthly-v9.9.9"
    # the batch jobs run the same release as the server
    for cronjob in _by_kind(after_docs, "CronJob").values():
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == _image(after)
    # and validate_all notices the release annotation now disagrees with the image
    findings = m.policy_findings(after_docs)
    assert any(
        f.check == "release" and "expected tag 'm3-monthly-v1.0.0'" in f.problem for f in findings
    )


def test_ab_component_adds_a_tagged_service_and_a_splitter(tmp_path: Path):
    repo = _copy_repo(tmp_path)
    overlay = repo / "manifests" / "overlays" / "production"
    with (overlay / "kustomization.yaml").open("a") as f:
        f.write("\ncomponents:\n  - ../../components/ab\n")
    docs = m.render(overlay)
    services = _by_kind(docs, "InferenceService")
    graph = _by_kind(docs, "InferenceGraph")["m3-monthly-ab"]
    assert set(services) == {"m3-monthly", "m3-monthly-v1-1-0"}
    candidate = services["m3-monthly-v1-1-0"]
    # the overlay's images: entry does not retag the candidate
    assert _image(candidate) == "ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0"
    assert _image(services["m3-monthly"]) == "ghcr.io/tsops/tsops-serving:m3-monthly-v1.0.0"
    assert candidate["metadata"]["namespace"] == "tsops-production"
    assert graph["metadata"]["namespace"] == "tsops-production"
    root = graph["spec"]["nodes"]["root"]
    assert root["routerType"] == "Splitter"
    assert {s["serviceName"] for s in root["steps"]} == set(services)
    assert sum(s["weight"] for s in root["steps"]) == 100
    waves = {
        d["kind"]: int(d["metadata"].get("annotations", {}).get(m.SYNC_WAVE, "0")) for d in docs
    }
    assert waves["InferenceGraph"] > waves["InferenceService"] > waves["ConfigMap"]


def test_argocd_syncs_staging_automatically_and_production_by_hand():
    apps = _by_kind(m.render(ROOT / "argocd"), "Application")
    assert set(apps) == {f"tsops-{env}" for env in OVERLAYS}
    for env in OVERLAYS:
        spec = apps[f"tsops-{env}"]["spec"]
        assert spec["source"]["path"] == f"manifests/overlays/{env}"
        assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
        assert spec["ignoreDifferences"][0]["jsonPointers"] == [m.CANARY_POINTER]
        automated = spec["syncPolicy"].get("automated")
        if env == "production":
            assert automated is None
        else:
            assert automated == {"prune": True, "selfHeal": True}


def test_broken_copy_fails_naming_each_field_and_file(tmp_path: Path, crds: Path):
    repo = _copy_repo(tmp_path)
    overlays = repo / "manifests" / "overlays"
    # a misspelt field in a patch (kustomize applies it without a word)
    _edit(overlays / "production" / "canary.yaml", "canaryTrafficPercent:", "canaryTrafficPercnt:")
    # a JSON patch whose target matches nothing (kustomize skips it without a word)
    _edit(overlays / "staging" / "kustomization.yaml", "name: m3-monthly", "name: m3-montly")
    # a floating tag
    _edit(overlays / "local" / "kustomization.yaml", "newTag: m3-monthly-v1.0.0", "newTag: latest")
    # weights that do not sum to 100
    _edit(
        repo / "manifests" / "components" / "ab" / "inferencegraph.yaml", "weight: 50", "weight: 60"
    )
    # production syncing on its own
    _edit(
        repo / "argocd" / "application-production.yaml",
        "  syncPolicy:\n",
        "  syncPolicy:\n    automated:\n      prune: true\n      selfHeal: true\n",
    )
    result = subprocess.run(
        [*CLI, "--crds", str(crds), "--root", str(repo), "--no-checkov"],
        capture_output=True,
        text=True,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    expected = [
        # the misspelt field, the file to fix and the right name
        "'canaryTrafficPercnt' was unexpected",
        "did you mean 'canaryTrafficPercent'? remove or rename the field in",
        "manifests/overlays/production/canary.yaml",
        # the patch that hits nothing, by file
        "manifests/overlays/staging/scale.yaml: the patch targets InferenceService 'm3-montly'",
        # the floating tag
        "uses the floating tag 'latest'",
        # 60 + 50
        "weights 60 + 50 = 110, not 100",
        # production's Application
        "argocd: Application/tsops-production: production syncs automatically",
    ]
    for words in expected:
        assert words in out, f"{words!r} missing from:\n{out}"
    assert out.count("FAIL [") >= len(expected) - 2
    assert "fix:" in out


def test_cli_without_crds_says_how_to_fix(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != m.CRDS_ENV}
    result = subprocess.run(
        [*CLI, "--root", str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "--crds DIR" in result.stderr
    missing = subprocess.run(
        [*CLI, "--crds", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
