"""components/mlflow-runtime: the registered model on KServe's MLflow runtime (MLServer)
instead of the tsops server, switched on in an overlay and checked like the others.

Every overlay is also rendered with the component switched on by ``validate_all``, and
that render checked against KServe's CRD and the policies (tests/deploy/test_manifests.py
runs it on the repository); here an overlay switches it on for real, and the checks of
``spec.predictor.model`` say what is wrong and how to fix it.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from tsops.deploy.manifests.mlflow_runtime import check_model_runtime, retarget
from tsops.deploy.manifests.policies import policy_findings
from tsops.deploy.manifests.render import render

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STORAGE = "s3://mlflow-artifacts/1/models/m-0123456789abcdef/artifacts"
MODEL_STORAGE = f"""\
# the registered version model-version.yaml names: its MLflow model folder
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: m3-monthly
spec:
  predictor:
    model:
      storageUri: {STORAGE}
"""


@pytest.fixture(scope="module")
def staging_on_mlflow(tmp_path_factory) -> list[dict]:
    """Staging with the component switched on as docs/deploying.md says: the components
    entry, model-storage.yaml, and scale.yaml's and data-platform.yaml's container fields
    moved to the model."""
    root = tmp_path_factory.mktemp("mlflow-runtime")
    shutil.copytree(ROOT / "manifests", root / "manifests", ignore=shutil.ignore_patterns("crds"))
    staging = root / "manifests" / "overlays" / "staging"
    (staging / "model-storage.yaml").write_text(MODEL_STORAGE)
    for name in ("scale.yaml", "data-platform.yaml"):
        patch = staging / name
        patch.write_text(patch.read_text().replace("/containers/0/", "/model/"))
    kust = staging / "kustomization.yaml"
    text = kust.read_text()
    assert "\npatches:\n" in text
    text = text.replace("\npatches:\n", "\npatches:\n  - path: model-storage.yaml\n")
    kust.write_text(text + "\ncomponents:\n  - ../../components/mlflow-runtime\n")
    return render(staging)


def inference_service(docs: list[dict]) -> dict:
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    return isvc


def test_the_overlay_serves_the_registered_version_on_the_mlflow_runtime(staging_on_mlflow):
    isvc = inference_service(staging_on_mlflow)
    predictor = isvc["spec"]["predictor"]
    assert "containers" not in predictor  # KServe accepts one predictor: the model
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == STORAGE
    # the overlay's scale and release still apply
    assert model["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert predictor["minReplicas"] == 1
    assert isvc["metadata"]["annotations"]["tsops.io/model-version"] == "1"
    assert policy_findings(staging_on_mlflow, "staging+mlflow") == []


@pytest.mark.parametrize(
    ("change", "problem", "fix"),
    [
        (
            {"storageUri": "models:/m3-monthly@champion"},
            "not something KServe's storage initializer downloads",
            "an MLflow alias or models:/ reference cannot be resolved there",
        ),
        ({"storageUri": "pin-in-overlay"}, "no registered version is pinned", "model-storage"),
        ({"protocolVersion": "v1"}, "speaks the V2 protocol only", "protocolVersion: v2"),
        ({"securityContext": None}, "model.securityContext: runAsNonRoot", "runAsNonRoot"),
    ],
    ids=["mlflow-uri", "placeholder", "v1", "not-hardened"],
)
def test_a_predictor_model_kserve_would_not_run_is_named_with_the_fix(
    staging_on_mlflow, change, problem, fix
):
    isvc = copy.deepcopy(inference_service(staging_on_mlflow))
    isvc["spec"]["predictor"]["model"].update(change)
    findings = check_model_runtime(isvc, "staging")
    assert any(problem in f.problem and fix in f.fix for f in findings), findings


def test_a_model_beside_the_tsops_container_is_refused(staging_on_mlflow):
    isvc = copy.deepcopy(inference_service(staging_on_mlflow))
    isvc["spec"]["predictor"]["containers"] = [{"name": "kserve-container", "image": "x"}]
    (finding,) = check_model_runtime(isvc, "staging")
    assert "exactly one predictor" in finding.problem and "containers: null" in finding.fix


def test_the_check_render_moves_container_patches_to_the_model():
    ops = yaml.safe_load((ROOT / "manifests/overlays/production/scale.yaml").read_text())
    moved = {op["path"] for op in retarget(ops)}
    assert "/spec/predictor/model/resources" in moved
    assert not any("/containers/" in path for path in moved)
