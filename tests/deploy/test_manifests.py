"""The real manifests: every overlay renders with kubectl kustomize and passes the strict
schemas (real KServe and Argo CD CRDs), the policies and checkov; a release (image bump)
reaches the InferenceService; a broken copy fails with messages naming the field.

The CRDs are the repository's own (manifests/crds), unless $TSOPS_CRDS_DIR names others.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.commands import tsops
from tsops.deploy.manifests.argocd import CANARY_POINTER
from tsops.deploy.manifests.checkov import run_checkov
from tsops.deploy.manifests.images import entry_image, image_entries
from tsops.deploy.manifests.policies import DEPLOYMENT_MODE, SYNC_WAVE, policy_findings
from tsops.deploy.manifests.render import edit_kustomization, render
from tsops.deploy.manifests.schemas import CRDS_ENV, DEFAULT_CRDS
from tsops.deploy.manifests.signatures import IMAGE_POLICY_KIND, SIGSTORE_INCLUDE
from tsops.deploy.manifests.validate import validate_all
from tsops.deploy.overlays import MODEL_VERSION, REGISTERED_MODEL, RELEASE
from tsops.deploy.pins import BATCH_IMAGE, CANDIDATE_IMAGE, DIGEST_ENVS, SERVING_IMAGE, Pin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "staging", "production")
CLI = [sys.executable, "-m", "tsops.deploy.manifests", "validate"]


@pytest.fixture(scope="module")
def crds() -> Path:
    """The CRDs the manifests are validated against: the vendored ones by default."""
    configured = os.environ.get(CRDS_ENV)
    path = Path(configured) if configured else ROOT / DEFAULT_CRDS
    if not path.is_dir():
        pytest.fail(
            f"CRD directory {path} not found: {DEFAULT_CRDS} is part of the repository "
            f"(scripts/refresh-crds.sh fetches it again); unset {CRDS_ENV} or point it at "
            "a directory with the CRD YAML files",
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
    report = validate_all(ROOT, crds, checkov=True)
    took = time.perf_counter() - start
    print(f"\nvalidate_all with checkov: {took:.1f}s {report.summary()}")
    assert report.ok, "\n".join(map(str, report.findings))
    # the shipped Dockerfile went through checkov in the same run, with nothing found
    assert not [f for f in report.findings if f.where.startswith("Dockerfile")]
    for env in OVERLAYS:
        assert report.renders[f"manifests/overlays/{env}"] > 0
        for switched_on in ("+ab+bluegreen+shadow+third", "+mlflow-runtime"):
            assert report.renders[f"manifests/overlays/{env}{switched_on}"] > 0
    assert report.renders["argocd"] == 5  # AppProject, 3 Applications, ClusterImagePolicy
    assert "checkov" in report.timings


@pytest.mark.parametrize("env", OVERLAYS)
def test_overlay_pins_its_namespace_release_and_knative_mode(env: str):
    docs = render(ROOT / "manifests" / "overlays" / env)
    isvc = _by_kind(docs, "InferenceService")["m3-monthly"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        f"tsops-{env}"
    }
    assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE] == "Serverless"
    release = isvc["metadata"]["annotations"][RELEASE]
    name, tag, digest = Pin.split(_image(isvc))
    assert (name, tag) == ("ghcr.io/tsops/tsops-serving", release.replace("/", "-"))
    # staging and production pin digests; local runs side-loaded images by tag
    assert (digest is not None) == (env in DIGEST_ENVS)
    kustomization = yaml.safe_load(
        (ROOT / "manifests" / "overlays" / env / "kustomization.yaml").read_text()
    )
    batch = entry_image(image_entries(kustomization)[BATCH_IMAGE])
    for cronjob in _by_kind(docs, "CronJob").values():
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == batch
    namespace = _by_kind(docs, "Namespace")[f"tsops-{env}"]
    included = namespace["metadata"]["labels"].get(SIGSTORE_INCLUDE)
    assert included == ("true" if env in DIGEST_ENVS else None)
    canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    assert (canary is not None) == (env == "production")


def test_image_bump_changes_the_rendered_inference_service(tmp_path: Path):
    repo = _copy_repo(tmp_path)
    overlay = repo / "manifests" / "overlays" / "production"
    before_docs = render(overlay)
    before = _by_kind(before_docs, "InferenceService")["m3-monthly"]
    kustomization = overlay / "kustomization.yaml"
    serving = yaml.safe_load(kustomization.read_text())["images"][0]
    assert serving["name"] == SERVING_IMAGE
    old_tag = serving["newTag"]
    # the first newTag is tsops-serving's: a canary of a new release moves only it
    _edit(kustomization, f"newTag: {old_tag}", "newTag: m3-monthly-v9.9.9")
    after_docs = render(overlay)
    after = _by_kind(after_docs, "InferenceService")["m3-monthly"]
    assert Pin.split(_image(before))[:2] == ("ghcr.io/tsops/tsops-serving", old_tag)
    assert Pin.split(_image(after))[:2] == ("ghcr.io/tsops/tsops-serving", "m3-monthly-v9.9.9")
    # the batch jobs stay on the stable release (the tsops-batch entry)
    cronjobs_before = _by_kind(before_docs, "CronJob")
    for name, cronjob in _by_kind(after_docs, "CronJob").items():
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        old_pod = cronjobs_before[name]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == old_pod["containers"][0]["image"]
        assert Pin.split(pod["containers"][0]["image"])[1] == old_tag
    # and validate_all notices the release annotation now disagrees with the image
    findings = policy_findings(after_docs)
    assert any(
        f.check == "release" and "expected tag 'm3-monthly-v1.0.0'" in f.problem for f in findings
    )


CANDIDATE_DIGEST = "sha256:" + "fedcba9876543210" * 4


def _pin_candidate(overlay: Path, release: str = "m3-monthly/v1.1.0", version: str = "2") -> None:
    """What `tsops ab --candidate` writes in an overlay: the component, the candidate's
    images: entry and ab-candidate.yaml (the weights keep the component's)."""

    def edit(data) -> None:
        data["components"] = ["../../components/ab"]
        data["images"].append(
            {
                "name": CANDIDATE_IMAGE,
                "newName": "ghcr.io/tsops/tsops-serving",
                "newTag": release.replace("/", "-"),
                "digest": CANDIDATE_DIGEST,
            }
        )
        data["patches"].append({"path": "ab-candidate.yaml"})

    edit_kustomization(overlay / "kustomization.yaml", edit)
    (overlay / "ab-candidate.yaml").write_text(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
        "metadata:\n  name: m3-monthly-candidate\n  annotations:\n"
        f"    {RELEASE}: {release}\n    {REGISTERED_MODEL}: m3-monthly\n"
        f'    {MODEL_VERSION}: "{version}"\n'
    )


def test_ab_component_adds_a_pinned_candidate_with_the_same_volumes(tmp_path: Path, crds: Path):
    repo = _copy_repo(tmp_path)
    overlay = repo / "manifests" / "overlays" / "production"
    _pin_candidate(overlay)
    docs = render(overlay)
    services = _by_kind(docs, "InferenceService")
    graph = _by_kind(docs, "InferenceGraph")["m3-monthly-ab"]
    assert set(services) == {"m3-monthly", "m3-monthly-candidate"}
    candidate = services["m3-monthly-candidate"]
    # the overlay's tsops-serving entry does not retag the candidate, nor the reverse
    assert _image(candidate) == (
        f"ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0@{CANDIDATE_DIGEST}"
    )
    assert Pin.split(_image(services["m3-monthly"]))[1] == "m3-monthly-v1.0.0"
    assert candidate["metadata"]["annotations"][RELEASE] == "m3-monthly/v1.1.0"
    # the candidate writes where the main server writes (read-only root file system)
    main_predictor = services["m3-monthly"]["spec"]["predictor"]
    predictor = candidate["spec"]["predictor"]
    assert predictor["volumes"] == main_predictor["volumes"]
    assert (
        predictor["containers"][0]["volumeMounts"]
        == main_predictor["containers"][0]["volumeMounts"]
    )
    assert candidate["metadata"]["namespace"] == "tsops-production"
    assert graph["metadata"]["namespace"] == "tsops-production"
    root = graph["spec"]["nodes"]["root"]
    assert root["routerType"] == "Splitter"
    assert {s["serviceName"] for s in root["steps"]} == set(services)
    assert sum(s["weight"] for s in root["steps"]) == 100
    waves = {d["kind"]: int(d["metadata"].get("annotations", {}).get(SYNC_WAVE, "0")) for d in docs}
    assert waves["InferenceGraph"] > waves["InferenceService"] > waves["ConfigMap"]
    report = validate_all(repo, crds, checkov=False)
    assert report.ok, "\n".join(map(str, report.findings))
    assert "manifests/overlays/production+ab" not in report.renders  # it runs the component


def test_argocd_syncs_staging_automatically_and_production_by_hand():
    docs = render(ROOT / "argocd")
    apps = _by_kind(docs, "Application")
    assert set(apps) == {f"tsops-{env}" for env in OVERLAYS}
    for env in OVERLAYS:
        spec = apps[f"tsops-{env}"]["spec"]
        assert spec["source"]["path"] == f"manifests/overlays/{env}"
        # git alone owns the canary share: Argo CD applies it on every sync
        assert "ignoreDifferences" not in spec
        assert "RespectIgnoreDifferences=true" not in spec["syncPolicy"]["syncOptions"]
        # production moves only with a promotion
        revision = "deploy/production" if env == "production" else "main"
        assert spec["source"]["targetRevision"] == revision
        automated = spec["syncPolicy"].get("automated")
        if env == "production":
            assert automated is None
        else:
            assert automated == {"prune": True, "selfHeal": True}
    policy = _by_kind(docs, IMAGE_POLICY_KIND)["tsops-release-signature"]
    assert policy["spec"]["images"] == [{"glob": "ghcr.io/tsops/tsops-serving**"}]
    identity = policy["spec"]["authorities"][0]["keyless"]["identities"][0]
    assert identity["issuer"] == "https://token.actions.githubusercontent.com"
    # the release workflow at a release tag signs; the same workflow on a branch does not
    workflow = "https://github.com/tsops/tsops/.github/workflows/release.yml"
    assert re.fullmatch(identity["subjectRegExp"], f"{workflow}@refs/tags/m3-monthly/v1.2.0")
    assert not re.fullmatch(identity["subjectRegExp"], f"{workflow}@refs/heads/main")
    assert not re.fullmatch(identity["subjectRegExp"], workflow.replace("release", "train"))


def _failing_validation(repo: Path, crds: Path) -> str:
    """`tsops manifests validate` on a broken copy: it must exit 1; returns what it said.
    The command runs in this process (its parsing, error policy and exit code are the
    real ones; ``python -m tsops.deploy.manifests`` as a process is the subject of
    test_cli_uses_the_vendored_crds_and_says_how_to_fix_a_missing_folder)."""
    result = tsops(
        "manifests", "validate", "--crds", str(crds), "--root", str(repo), "--no-checkov",
        cwd=repo, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    return out


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
    out = _failing_validation(repo, crds)
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


def test_unpinned_unsigned_and_two_owner_setups_fail_naming_the_fix(tmp_path: Path, crds: Path):
    repo = _copy_repo(tmp_path)
    overlays = repo / "manifests" / "overlays"

    # production's CronJobs pinned by tag only
    def tag_only(data) -> None:
        del data["images"][1]["digest"]

    edit_kustomization(overlays / "production" / "kustomization.yaml", tag_only)
    # the CronJobs following the InferenceService's pin (batch would follow a canary)
    _edit(
        repo / "manifests" / "base" / "cronjob-forecast.yaml",
        "image: tsops-batch:pin-in-overlay",
        "image: tsops-serving:pin-in-overlay",
    )
    # an A/B candidate without the forecast-log volume
    _pin_candidate(overlays / "staging")
    _edit(
        repo / "manifests" / "components" / "ab" / "inferenceservice-candidate.yaml",
        "          - name: monitoring\n            mountPath: /var/lib/tsops\n",
        "",
    )
    # no signature policy
    _edit(repo / "argocd" / "kustomization.yaml", "  - clusterimagepolicy.yaml\n", "")
    (repo / "argocd" / "clusterimagepolicy.yaml").unlink()
    # staging's Application ignoring the canary share again
    _edit(
        repo / "argocd" / "application-staging.yaml",
        "  syncPolicy:\n",
        "  ignoreDifferences:\n    - group: serving.kserve.io\n      kind: InferenceService\n"
        f"      jsonPointers:\n        - {CANARY_POINTER}\n  syncPolicy:\n",
    )
    # production following main like staging
    _edit(
        repo / "argocd" / "gitops-settings.yaml",
        "productionRevision: deploy/production",
        "productionRevision: main",
    )
    out = _failing_validation(repo, crds)
    expected = [
        "[digest] manifests/overlays/production, "
        "manifests/overlays/production+ab+bluegreen+shadow+third, "
        "manifests/overlays/production+mlflow-runtime: CronJob/m3-monthly-monitor",
        "is pinned by a tag only",
        "add digest: sha256:<64 hex> to the images: entry tsops-batch in "
        "manifests/overlays/production/kustomization.yaml",
        "follows the overlay's tsops-serving entry",
        "manifests/overlays/staging, manifests/overlays/staging+bluegreen+shadow+third: "
        "InferenceService/m3-monthly-candidate",
        "the A/B candidate mounts nothing there, while InferenceService/m3-monthly mounts "
        "persistentVolumeClaim tsops-monitoring at /var/lib/tsops",
        "[signature] argocd/kustomization.yaml: no ClusterImagePolicy",
        "argocd: Application/tsops-staging: ignoreDifferences hides "
        "/spec/predictor/canaryTrafficPercent",
        "production tracks targetRevision 'main', the same revision as staging",
    ]
    for words in expected:
        assert words in out, f"{words!r} missing from:\n{out}"


def test_cli_uses_the_vendored_crds_and_says_how_to_fix_a_missing_folder(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != CRDS_ENV}
    # a root without manifests/crds: the error names the folder and the ways to give one
    (tmp_path / "manifests").mkdir()
    result = subprocess.run(
        [*CLI, "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert f"{tmp_path / DEFAULT_CRDS} does not exist" in result.stderr
    assert "scripts/refresh-crds.sh" in result.stderr
    assert "--crds DIR" in result.stderr
    missing = subprocess.run(
        [*CLI, "--crds", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_checkov_checks_the_dockerfile_and_its_base_is_pinned_by_digest(tmp_path: Path):
    """The serving image's Dockerfile goes through checkov with the renders: the shipped
    one passes (validate_all's checkov run covers it: test_repository_manifests_pass_\
    every_check_including_checkov), a base without a version tag fails (CKV_DOCKER_7).
    checkov accepts a tag, so the digest pin of every image the build pulls is held
    here."""
    text = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM .* AS (\S+)$", text, flags=re.MULTILINE | re.IGNORECASE))
    pulled = [
        image
        for image in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
        if image not in stages
    ]
    assert pulled and all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in pulled), pulled
    untagged = tmp_path / "Dockerfile"
    untagged.write_text(
        re.sub(r"^FROM (\S+?)[:@]\S+ AS base", r"FROM python AS base", text, flags=re.M)
    )
    assert untagged.read_text() != text
    found = run_checkov({}, dockerfile=untagged)
    assert any("CKV_DOCKER_7" in f.problem and f.where.startswith("Dockerfile") for f in found)
