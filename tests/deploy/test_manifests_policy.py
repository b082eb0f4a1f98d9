"""Manifest policies on small hand-made resources: each names the problem and the fix.

No kubectl, no CRD files, no checkov: the pure functions of tsops.deploy.manifests only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tsops.deploy import pins
from tsops.deploy.manifests.argocd import CANARY_JQ, CANARY_POINTER, check_argocd
from tsops.deploy.manifests.checkov import check_checkov_skips, parse_checkov
from tsops.deploy.manifests.images import (
    check_batch_entry,
    check_digest_pins,
    check_pins,
    check_release,
    entry_image,
    image_bump_findings,
    image_entries,
)
from tsops.deploy.manifests.kustomizations import check_patch_targets, check_unused_files
from tsops.deploy.manifests.policies import (
    DEPLOYMENT_MODE,
    SYNC_WAVE,
    check_ab_candidate,
    check_canary,
    check_model_server,
    check_references,
    check_splitter_weights,
    check_sync_waves,
    policy_findings,
)
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.schemas import crd_schemas, schema_findings
from tsops.deploy.manifests.security import check_pod_security
from tsops.deploy.manifests.signatures import SIGSTORE_INCLUDE, check_signature_policy, glob_match
from tsops.deploy.overlays import MODEL_VERSION, REGISTERED_MODEL, RELEASE
from tsops.deploy.pins import BATCH_IMAGE, DIGEST_ENVS, SERVING_IMAGE, Pin

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "staging", "production")
DIGEST = "sha256:" + "0123456789abcdef" * 4

# -- small resources -------------------------------------------------------------------


def _container(**overrides) -> dict:
    container = {
        "name": "kserve-container",
        "image": "ghcr.io/tsops/tsops-serving:m3-monthly-v1.2.0",
        "args": ["--model_name=m3-monthly", "--model=/mnt/models"],
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": 8080}},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container.update(overrides)
    return container


def _isvc(name: str = "m3-monthly", **predictor) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "annotations": {
                DEPLOYMENT_MODE: "Serverless",
                RELEASE: "m3-monthly/v1.2.0",
                REGISTERED_MODEL: "m3-monthly",
                MODEL_VERSION: "3",
                SYNC_WAVE: "1",
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": "tsops-serving",
                "automountServiceAccountToken": False,
                "containers": [_container()],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                **predictor,
            }
        },
    }


def _graph(*weights, services=("m3-monthly", "m3-monthly-candidate")) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {
            "name": "ab",
            "annotations": {DEPLOYMENT_MODE: "Serverless", SYNC_WAVE: "2"},
        },
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Splitter",
                    "steps": [
                        {"serviceName": s, "weight": w}
                        for s, w in zip(services, weights, strict=False)
                    ],
                }
            }
        },
    }


def _checks(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def test_a_hardened_a_b_release_passes_every_policy():
    candidate = _isvc("m3-monthly-candidate")
    candidate["metadata"]["annotations"][RELEASE] = "m3-monthly/v1.1.0"
    candidate["spec"]["predictor"]["containers"][0]["image"] = (
        "ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0"
    )
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "tsops-serving", "annotations": {SYNC_WAVE: "-1"}},
    }
    render = [account, _isvc(canaryTrafficPercent=10), candidate, _graph(50, 50)]
    assert policy_findings(render, "overlays/production+ab") == []


# -- canary ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [150, -1, 10.5, "10", True])
def test_canary_outside_0_to_100_is_rejected(value):
    findings = check_canary(_isvc(canaryTrafficPercent=value))
    assert len(findings) == 1
    assert "canaryTrafficPercent" in findings[0].problem
    assert "0 to 100" in findings[0].problem
    assert "0 rolls back" in findings[0].fix


@pytest.mark.parametrize("value", [0, 10, 100])
def test_canary_within_range_passes(value):
    assert check_canary(_isvc(canaryTrafficPercent=value)) == []


def test_canary_without_knative_mode_is_rejected():
    isvc = _isvc(canaryTrafficPercent=10)
    del isvc["metadata"]["annotations"][DEPLOYMENT_MODE]
    problems = " ".join(f.problem for f in check_canary(isvc))
    assert "ignores the field silently" in problems
    assert _checks(check_model_server(isvc), "kserve")


# -- A/B splitter ----------------------------------------------------------------------


def test_splitter_weights_60_30_are_rejected():
    findings = check_splitter_weights(_graph(60, 30))
    assert len(findings) == 1
    assert "60 + 30 = 90" in findings[0].problem
    assert "sum to 100" in findings[0].fix


def test_splitter_weights_summing_to_100_pass():
    assert check_splitter_weights(_graph(50, 50)) == []
    assert check_splitter_weights(_graph(100)) == []


def test_splitter_step_without_weight_is_rejected():
    graph = _graph(50, 50)
    del graph["spec"]["nodes"]["root"]["steps"][1]["weight"]
    assert "whole weight" in check_splitter_weights(graph)[0].problem


def test_graph_step_must_name_a_rendered_inference_service():
    findings = check_references([_isvc(), _graph(50, 50)])
    missing = [f for f in findings if "InferenceService" in f.problem]
    assert len(missing) == 1
    assert "'m3-monthly-candidate'" in missing[0].problem


# -- pins: images and model references --------------------------------------------------


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("ghcr.io/tsops/tsops-serving:latest", "floating tag 'latest'"),
        ("ghcr.io/tsops/tsops-serving", "no tag, which means latest"),
        ("ghcr.io/tsops/tsops-serving:champion", "floating tag 'champion'"),
        ("ghcr.io/tsops/tsops-serving:production", "names no version"),
        ("tsops-serving:pin-in-overlay", "placeholder"),
    ],
)
def test_floating_or_placeholder_images_are_rejected(image, words):
    isvc = _isvc(containers=[_container(image=image)])
    findings = check_pins(isvc)
    assert len(findings) == 1
    assert words in findings[0].problem
    assert "images:" in findings[0].fix


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/tsops/tsops-serving:m3-monthly-v1.2.0",
        "ghcr.io/tsops/tsops-serving:m3-monthly-v3",
        "registry.local:5000/tsops-serving:m3-monthly-v1.2.0",
        "ghcr.io/tsops/tsops-serving@sha256:" + "a" * 64,
    ],
)
def test_exact_images_pass(image):
    assert check_pins(_isvc(containers=[_container(image=image)])) == []


@pytest.mark.parametrize(
    "uri",
    [
        "models:/m3-monthly@champion",
        "models:/m3-monthly@challenger",
        "models:/m3-monthly/latest",
        "models:/m3-monthly/Production",
        "s3://models/m3-monthly/latest",
        "gs://bucket/m3-monthly@champion",
    ],
)
def test_alias_and_latest_model_references_are_rejected(uri):
    isvc = _isvc(model={"storageUri": uri})
    findings = check_pins(isvc)
    assert len(findings) == 1, findings
    assert uri in findings[0].problem
    assert "exact version" in findings[0].problem


def test_alias_in_container_arguments_is_rejected():
    container = _container(args=["--model_name=m3-monthly", "--model=models:/m3-monthly@champion"])
    findings = check_pins(_isvc(containers=[container]))
    assert "'champion'" in findings[0].problem


@pytest.mark.parametrize("uri", ["models:/m3-monthly/3", "s3://models/m3-monthly/v1.2.0"])
def test_exact_model_references_pass(uri):
    assert check_pins(_isvc(model={"storageUri": uri})) == []


# -- the release names the image ----------------------------------------------------------


def test_release_annotation_must_match_the_image_tag():
    isvc = _isvc(containers=[_container(image="ghcr.io/tsops/tsops-serving:m3-monthly-v1.1.0")])
    findings = check_release(isvc)
    assert len(findings) == 1
    assert "expected tag 'm3-monthly-v1.2.0'" in findings[0].problem


def test_missing_release_annotation_points_at_model_version_yaml():
    isvc = _isvc()
    del isvc["metadata"]["annotations"][RELEASE]
    assert "model-version.yaml" in check_release(isvc)[0].fix


def test_release_must_be_a_release_tag():
    isvc = _isvc()
    isvc["metadata"]["annotations"][RELEASE] = "m3-monthly@champion"
    assert "not a release tag" in check_release(isvc)[0].problem


# -- hardened pod spec and what KServe expects ------------------------------------------------


def test_writable_root_file_system_and_root_user_are_rejected():
    container = _container()
    container["securityContext"] = {**container["securityContext"], "runAsUser": 0}
    del container["securityContext"]["readOnlyRootFilesystem"]
    problems = [f.problem for f in check_pod_security(_isvc(containers=[container]))]
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("runAsUser is 0" in p for p in problems)


def test_missing_tmp_volume_and_token_mount_are_rejected():
    isvc = _isvc(automountServiceAccountToken=True, volumes=[])
    problems = " ".join(f.problem for f in check_pod_security(isvc))
    assert "automountServiceAccountToken" in problems
    assert "/tmp" in problems


def test_pod_level_security_context_is_rejected_for_knative():
    isvc = _isvc(securityContext={"runAsNonRoot": True})
    assert "Knative rejects" in " ".join(f.problem for f in check_pod_security(isvc))


def test_cronjob_pod_spec_is_checked_too():
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "forecast"},
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "f", "image": "x:1.0"}]}}}
            }
        },
    }
    findings = check_pod_security(cronjob)
    assert any("spec.jobTemplate.spec.template.spec.containers[0]" in f.problem for f in findings)


def test_model_name_as_a_separate_argument_is_rejected():
    container = _container(args=["--model_name", "m3-monthly"])
    findings = check_model_server(_isvc(containers=[container]))
    assert "--model_name=<name>" in findings[0].fix


def test_model_server_container_must_be_named_kserve_container():
    findings = check_model_server(_isvc(containers=[_container(name="server")]))
    assert "kserve-container" in findings[0].fix


def test_checkov_skip_needs_a_reason():
    cronjob = {"kind": "CronJob", "metadata": {"name": "x", "annotations": {}}}
    cronjob["metadata"]["annotations"]["checkov.io/skip1"] = "CKV_K8S_43"
    assert check_checkov_skips(cronjob)
    cronjob["metadata"]["annotations"]["checkov.io/skip1"] = "CKV_K8S_43=tags are immutable"
    assert check_checkov_skips(cronjob) == []


# -- sync waves and references ------------------------------------------------------------------


def test_graph_must_sync_after_its_inference_services():
    graph = _graph(50, 50, services=("m3-monthly", "m3-monthly"))
    graph["metadata"]["annotations"][SYNC_WAVE] = "1"
    findings = check_sync_waves([_isvc(), graph])
    assert len(findings) == 1
    assert "InferenceGraph/ab" in findings[0].where


def test_inference_service_must_sync_after_its_config_map():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}
    assert check_sync_waves([config, _isvc()]) == []
    config["metadata"]["annotations"] = {SYNC_WAVE: "1"}
    assert check_sync_waves([config, _isvc()])


def test_unknown_config_map_reference_is_reported():
    container = _container(envFrom=[{"configMapRef": {"name": "tsops-setings"}}])
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tsops-settings"}}
    findings = check_references([config, _isvc(containers=[container])])
    assert any("did you mean 'tsops-settings'" in f.fix for f in findings)


# -- strict CRD schemas --------------------------------------------------------------------------

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "serving.kserve.io",
        "names": {"kind": "InferenceService"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "predictor": {
                                        "type": "object",
                                        "properties": {
                                            "canaryTrafficPercent": {"type": "integer"},
                                            "labels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "free": {
                                                "type": "object",
                                                "properties": {"a": {"type": "string"}},
                                                "x-kubernetes-preserve-unknown-fields": True,
                                            },
                                        },
                                    }
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _doc(predictor: dict) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m3-monthly"},
        "spec": {"predictor": predictor},
    }


def test_strict_schema_rejects_a_misspelt_field():
    schemas = crd_schemas([CRD])
    findings = schema_findings(
        _doc({"canaryTrafficPercnt": 10}), schemas, source="overlays/production/canary.yaml"
    )
    assert len(findings) == 1
    assert "'canaryTrafficPercnt' was unexpected" in findings[0].problem
    assert "spec.predictor" in findings[0].problem
    assert "did you mean 'canaryTrafficPercent'?" in findings[0].fix
    assert "overlays/production/canary.yaml" in findings[0].fix


def test_strict_schema_keeps_maps_and_preserved_fields_open():
    schemas = crd_schemas([CRD])
    doc = _doc({"canaryTrafficPercent": 10, "labels": {"x": "y"}, "free": {"b": 1}})
    assert schema_findings(doc, schemas) == []


def test_strict_schema_does_not_change_the_input():
    original = copy.deepcopy(CRD)
    crd_schemas([CRD])
    assert original == CRD


def test_strict_schema_checks_types():
    findings = schema_findings(_doc({"canaryTrafficPercent": "ten"}), crd_schemas([CRD]))
    assert "not of type 'integer'" in findings[0].problem


def test_custom_resource_metadata_is_checked_as_object_meta():
    doc = _doc({})
    doc["metadata"]["annotaions"] = {"a": "b"}
    findings = schema_findings(doc, crd_schemas([CRD]))
    assert any("annotaions" in f.problem for f in findings)


def test_builtin_kinds_are_validated_strictly():
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "x"},
        "spec": {"schedul": "* * * * *", "jobTemplate": {}},
    }
    findings = schema_findings(cronjob, {})
    misspelt = [f for f in findings if "'schedul' was unexpected" in f.problem]
    assert len(misspelt) == 1
    assert "did you mean 'schedule'?" in misspelt[0].fix
    assert any("'schedule' is a required property" in f.problem for f in findings)


def test_unknown_kind_asks_for_its_crd():
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}
    assert "CustomResourceDefinition" in schema_findings(doc, {})[0].fix


# -- Argo CD ------------------------------------------------------------------------------------


def _app(env: str, automated: bool) -> dict:
    sync = {"syncOptions": ["PruneLast=true"]}
    if automated:
        sync["automated"] = {"prune": True, "selfHeal": True}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": f"tsops-{env}"},
        "spec": {
            "project": "tsops",
            "source": {
                "repoURL": "https://git.example/tsops.git",
                "targetRevision": "deploy/production" if env == "production" else "main",
                "path": f"manifests/overlays/{env}",
            },
            "destination": {
                "server": "https://kubernetes.default.svc",
                "namespace": f"tsops-{env}",
            },
            "syncPolicy": sync,
        },
    }


PROJECT = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "AppProject",
    "metadata": {"name": "tsops"},
    "spec": {
        "sourceRepos": ["https://git.example/tsops.git"],
        "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "tsops-*"}],
        "clusterResourceWhitelist": [{"group": "", "kind": "Namespace", "name": "tsops-*"}],
        "namespaceResourceWhitelist": [{"group": "serving.kserve.io", "kind": "InferenceService"}],
    },
}
KINDS = {
    "manifests/overlays/staging": {
        ("", "Namespace", "tsops-staging"),
        ("serving.kserve.io", "InferenceService", "m3-monthly"),
    },
    "manifests/overlays/production": {("serving.kserve.io", "InferenceService", "m3-monthly")},
}


def test_argocd_setup_as_designed_passes():
    docs = [PROJECT, _app("staging", True), _app("production", False)]
    assert check_argocd(docs, KINDS) == []


def test_production_must_not_sync_automatically():
    findings = check_argocd([PROJECT, _app("staging", True), _app("production", True)], KINDS)
    assert [f.problem for f in findings] == ["production syncs automatically"]


def test_staging_must_self_heal_and_prune():
    findings = check_argocd([PROJECT, _app("staging", False)], KINDS)
    assert "prune and selfHeal" in findings[0].problem


@pytest.mark.parametrize(
    "ignore",
    [
        {"jsonPointers": [CANARY_POINTER]},
        {"jsonPointers": ["/spec/predictor"]},
        {"jqPathExpressions": [CANARY_JQ]},
        {"managedFieldsManagers": ["kubectl-patch"]},
    ],
)
@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_an_application_ignoring_the_canary_share_fails(env, ignore):
    # Issue 12 (1): with the field ignored (and RespectIgnoreDifferences) the live object
    # owns the share, and git's promotion or rollback never reaches the cluster.
    app = _app(env, env != "production")
    app["spec"]["ignoreDifferences"] = [
        {"group": "serving.kserve.io", "kind": "InferenceService", **ignore}
    ]
    app["spec"]["syncPolicy"]["syncOptions"].append("RespectIgnoreDifferences=true")
    findings = [f for f in check_argocd([PROJECT, app]) if CANARY_POINTER in f.problem]
    assert len(findings) == 1, findings
    assert f"ignoreDifferences hides {CANARY_POINTER}" in findings[0].problem
    assert "two owners" in findings[0].problem
    assert "remove that ignoreDifferences entry" in findings[0].fix
    assert findings[0].where == f"argocd: Application/tsops-{env}"


def test_ignoring_another_field_or_kind_is_not_the_canary():
    app = _app("staging", True)
    app["spec"]["ignoreDifferences"] = [
        {"group": "serving.kserve.io", "kind": "InferenceService", "jsonPointers": ["/status"]},
        {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
    ]
    assert check_argocd([PROJECT, app], KINDS) == []


def _shipped_yaml(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def test_shipped_applications_leave_the_canary_share_to_git():
    apps = [_shipped_yaml(f"argocd/application-{env}.yaml")[0] for env in OVERLAYS]
    findings = check_argocd([PROJECT, *apps])
    assert not [f for f in findings if "canaryTrafficPercent" in f.problem], findings
    for app in apps:
        assert "RespectIgnoreDifferences=true" not in app["spec"]["syncPolicy"]["syncOptions"]


def test_production_tracking_staging_s_revision_fails():
    # Issue 12 (6): a change to base/ merged on main would reach production unpromoted.
    production = _app("production", False)
    production["spec"]["source"]["targetRevision"] = "main"
    findings = check_argocd([PROJECT, _app("staging", True), production], KINDS)
    assert len(findings) == 1, findings
    assert "the same revision as staging" in findings[0].problem
    assert "productionRevision" in findings[0].fix
    assert findings[0].where == "argocd: Application/tsops-production"
    del production["spec"]["source"]["targetRevision"]  # both HEAD
    staging = _app("staging", True)
    del staging["spec"]["source"]["targetRevision"]
    assert check_argocd([PROJECT, staging, production], KINDS)


def test_shipped_settings_give_production_its_own_revision():
    settings = _shipped_yaml("argocd/gitops-settings.yaml")[0]["data"]
    assert settings["targetRevision"] == "main"
    assert settings["productionRevision"] == "deploy/production"


def test_project_must_allow_every_rendered_kind_and_nothing_else():
    kinds = {
        "manifests/overlays/staging": {
            ("", "Namespace", "tsops-staging"),
            ("batch", "CronJob", "forecast"),
        }
    }
    findings = check_argocd([PROJECT, _app("staging", True)], kinds)
    problems = " ".join(f.problem for f in findings)
    assert "CronJob 'forecast'" in problems  # rendered, not allowed
    assert "allows InferenceService" in problems  # allowed, never rendered


def test_wildcard_project_is_rejected():
    project = copy.deepcopy(PROJECT)
    project["spec"]["sourceRepos"] = ["*"]
    project["spec"]["namespaceResourceWhitelist"] = [{"group": "*", "kind": "*"}]
    problems = " ".join(f.problem for f in check_argocd([project]))
    assert "any repository" in problems
    assert "every kind" in problems


# -- kustomization files --------------------------------------------------------------------------


def test_patch_whose_target_matches_nothing_is_reported(tmp_path: Path):
    (tmp_path / "scale.yaml").write_text("- op: add\n  path: /spec/x\n  value: 1\n")
    (tmp_path / "canary.yaml").write_text(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
        "metadata:\n  name: m3-montly\nspec: {}\n"
    )
    kust = {
        "patches": [
            {"path": "scale.yaml", "target": {"kind": "InferenceService", "name": "m3-monthy"}},
            {"path": "canary.yaml"},
        ]
    }
    findings = check_patch_targets(tmp_path, kust, [_isvc()], "overlays/x")
    assert [f.where for f in findings] == ["overlays/x/scale.yaml", "overlays/x/canary.yaml"]
    assert "'m3-monthy'" in findings[0].problem
    assert "['m3-monthly']" in findings[0].fix


def test_patch_hitting_a_rendered_resource_passes(tmp_path: Path):
    kust = {
        "patches": [
            {
                "path": "s.yaml",
                "target": {
                    "group": "serving.kserve.io",
                    "kind": "InferenceService",
                    "name": "m3-monthly",
                },
            }
        ]
    }
    assert check_patch_targets(tmp_path, kust, [_isvc()], "o") == []


def test_file_not_listed_in_the_kustomization_is_reported(tmp_path: Path):
    for name in ("kustomization.yaml", "model-version.yaml", "canary.yaml"):
        (tmp_path / name).write_text("{}\n")
    findings = check_unused_files(tmp_path, {"patches": [{"path": "model-version.yaml"}]}, "o")
    assert [f.where for f in findings] == ["o/canary.yaml"]
    assert "patches:" in findings[0].fix


# -- checkov report and image names ----------------------------------------------------------------


def test_checkov_failures_become_findings():
    report = {
        "check_type": "kubernetes",
        "results": {
            "failed_checks": [
                {
                    "check_id": "CKV_K8S_20",
                    "check_name": "Containers should not run with allowPrivilegeEscalation",
                    "file_path": "/00-x.yaml",
                    "resource": "CronJob.tsops-staging.m3-monthly-forecast",
                    "guideline": "https://docs.example/ckv_k8s_20",
                }
            ]
        },
    }
    findings = parse_checkov(json.dumps(report), lambda f, r: f"{f} {r}")
    assert findings[0].check == "checkov"
    assert "CKV_K8S_20" in findings[0].problem
    assert "checkov.io/skip1: CKV_K8S_20=<reason>" in findings[0].fix


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("ghcr.io/a/b:1.0", ("ghcr.io/a/b", "1.0", None)),
        ("localhost:5000/b", ("localhost:5000/b", None, None)),
        ("b@sha256:ab", ("b", None, "sha256:ab")),
    ],
)
def test_split_image(image, parts):
    assert Pin.split(image) == parts


def test_crd_listing_only_spec_still_accepts_api_version_kind_and_metadata():
    # sigstore's ClusterImagePolicy CRD lists only spec and status at the top.
    crd = copy.deepcopy(CRD)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"] = {"spec": schema["properties"]["spec"]}
    doc = _doc({"canaryTrafficPercent": 10})
    doc["metadata"]["labels"] = {"a": "b"}
    assert schema_findings(doc, crd_schemas([crd])) == []
    doc["sepc"] = {}
    assert "'sepc' was unexpected" in schema_findings(doc, crd_schemas([crd]))[0].problem


# -- issue 12: digest pins, batch on the stable release, the A/B candidate, signatures -------


def _cronjob(image: str, name: str = "m3-monthly-forecast") -> dict:
    container = _container(name="forecast", image=image)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [container],
                            "volumes": [{"name": "tmp", "emptyDir": {}}],
                        }
                    }
                }
            }
        },
    }


TAGGED = "ghcr.io/tsops/tsops-serving:m3-monthly-v1.2.0"


@pytest.mark.parametrize("env", DIGEST_ENVS)
def test_tag_only_pin_in_staging_or_production_fails(env):
    # Issue 12 (3): a tag can be pushed again; outside local the pin must be a digest.
    isvc = _isvc(containers=[_container(image=f"{TAGGED}@{DIGEST}")])
    render = [isvc, _cronjob(TAGGED)]
    findings = check_digest_pins(render, f"manifests/overlays/{env}")
    assert len(findings) == 1, findings
    assert findings[0].check == "digest"
    assert findings[0].where == f"manifests/overlays/{env}: CronJob/m3-monthly-forecast"
    assert f"{TAGGED!r} is pinned by a tag only" in findings[0].problem
    assert (
        f"images: entry tsops-batch in manifests/overlays/{env}/kustomization.yaml"
        in findings[0].fix
    )
    # and the A/B variant's candidate names its own entry
    candidate = _isvc("m3-monthly-candidate", containers=[_container(image=TAGGED)])
    fix = check_digest_pins([candidate], f"manifests/overlays/{env}+ab")[0].fix
    assert "images: entry tsops-serving-candidate" in fix


def test_digest_pins_pass_and_local_may_pin_by_tag():
    pinned = [
        _isvc(containers=[_container(image=f"{TAGGED}@{DIGEST}")]),
        _cronjob(f"{TAGGED}@{DIGEST}"),
    ]
    assert check_digest_pins(pinned, "manifests/overlays/production") == []
    tagged = [_isvc(), _cronjob(TAGGED)]
    assert check_digest_pins(tagged, "manifests/overlays/local") == []
    assert check_digest_pins(tagged, "manifests/overlays/local+ab") == []


def test_malformed_digest_fails():
    render = [_cronjob(f"{TAGGED}@sha256:abc")]
    problem = check_digest_pins(render, "manifests/overlays/staging")[0].problem
    assert "malformed digest 'sha256:abc'" in problem


def test_shipped_staging_and_production_pin_digests():
    for env in OVERLAYS:
        kust = _shipped_yaml(f"manifests/overlays/{env}/kustomization.yaml")[0]
        entries = image_entries(kust)
        assert set(entries) == {SERVING_IMAGE, BATCH_IMAGE}
        for entry in entries.values():
            assert bool(pins.DIGEST.match(entry.get("digest", ""))) == (env in DIGEST_ENVS)
            assert entry["newTag"] == "m3-monthly-v1.0.0"
        assert check_batch_entry(kust, f"manifests/overlays/{env}") == []


def test_release_check_reads_the_tag_before_the_digest():
    isvc = _isvc(containers=[_container(image=f"{TAGGED}@{DIGEST}")])
    assert check_release(isvc) == []
    isvc["metadata"]["annotations"][RELEASE] = "m3-monthly/v1.1.0"
    assert "expected tag 'm3-monthly-v1.1.0'" in check_release(isvc)[0].problem


def test_overlay_without_a_batch_pin_fails():
    # Issue 12 (2): the CronJobs need their own pin, the stable release.
    kust = {"images": [{"name": "tsops-serving", "newName": "r/tsops-serving", "newTag": "m-v1"}]}
    findings = check_batch_entry(kust, "manifests/overlays/staging")
    assert len(findings) == 1
    assert findings[0].where == "manifests/overlays/staging/kustomization.yaml"
    assert "no images: entry named 'tsops-batch'" in findings[0].problem
    assert "stable release" in findings[0].fix


def _bump_render(cron_image: str, isvc_image: str) -> list[dict]:
    return [_isvc(containers=[_container(image=isvc_image)]), _cronjob(cron_image)]


def test_cronjob_following_the_serving_pin_fails_the_bump_check():
    # Issue 12 (2): the CronJobs moved with the InferenceService's (canary) pin.
    before = _bump_render(TAGGED, TAGGED)
    serving, batch = f"{TAGGED}-bumpcheck-0", f"{TAGGED}-bumpcheck-1"
    after = _bump_render(serving, serving)
    bumped = {SERVING_IMAGE: serving, BATCH_IMAGE: batch}
    findings = image_bump_findings(before, after, bumped, "manifests/overlays/staging")
    assert len(findings) == 1, findings
    assert findings[0].where == "manifests/overlays/staging: CronJob/m3-monthly-forecast"
    assert "follows the overlay's tsops-serving entry" in findings[0].problem
    assert "tsops-batch:pin-in-overlay" in findings[0].fix
    # as designed: each follows its own entry
    assert image_bump_findings(before, _bump_render(batch, serving), bumped, "o") == []


def test_candidate_changed_by_the_overlay_pins_fails_the_bump_check():
    candidate = _isvc("m3-monthly-candidate", containers=[_container(image=TAGGED)])
    moved = copy.deepcopy(candidate)
    moved["spec"]["predictor"]["containers"][0]["image"] = f"{TAGGED}-bumpcheck-0"
    bumped = {SERVING_IMAGE: f"{TAGGED}-bumpcheck-0"}
    before = [_isvc(), candidate]
    after = [_isvc(containers=[_container(image=f"{TAGGED}-bumpcheck-0")]), moved]
    findings = image_bump_findings(before, after, bumped, "o")
    assert ["must keep its own release" in f.problem for f in findings] == [True]


MONITORING = {"name": "monitoring", "persistentVolumeClaim": {"claimName": "tsops-monitoring"}}
MOUNTS = [
    {"name": "tmp", "mountPath": "/tmp"},
    {"name": "monitoring", "mountPath": "/var/lib/tsops"},
]


def _with_volumes(name: str, mounts: list[dict], volumes: list[dict]) -> dict:
    return _isvc(
        name,
        containers=[_container(volumeMounts=mounts)],
        volumes=volumes,
    )


def test_candidate_without_the_main_services_volumes_fails():
    # Issue 12 (4): the candidate had no forecast-log volume on a read-only root.
    main = _with_volumes("m3-monthly", MOUNTS, [{"name": "tmp", "emptyDir": {}}, MONITORING])
    candidate = _with_volumes("m3-monthly-candidate", MOUNTS[:1], [{"name": "tmp", "emptyDir": {}}])
    findings = check_ab_candidate([main, candidate], "manifests/overlays/staging+ab")
    assert len(findings) == 1, findings
    assert findings[0].check == "ab"
    assert (
        findings[0].where == "manifests/overlays/staging+ab: InferenceService/m3-monthly-candidate"
    )
    assert (
        "mounts nothing there, while InferenceService/m3-monthly mounts persistentVolumeClaim "
        "tsops-monitoring at /var/lib/tsops" in findings[0].problem
    )
    assert "manifests/components/ab/inferenceservice-candidate.yaml" in findings[0].fix
    # the same path backed by another volume is not the same either
    other = copy.deepcopy(MONITORING)
    other["persistentVolumeClaim"]["claimName"] = "scratch"
    candidate = _with_volumes(
        "m3-monthly-candidate", MOUNTS, [{"name": "tmp", "emptyDir": {}}, other]
    )
    problem = check_ab_candidate([main, candidate])[0].problem
    assert "has persistentVolumeClaim scratch there" in problem
    # and the candidate with the same volumes passes
    candidate = _with_volumes(
        "m3-monthly-candidate", MOUNTS, [{"name": "tmp", "emptyDir": {}}, MONITORING]
    )
    assert check_ab_candidate([main, candidate]) == []


def test_shipped_candidate_mounts_what_base_mounts():
    base = _shipped_yaml("manifests/base/inferenceservice.yaml")[0]
    candidate = _shipped_yaml("manifests/components/ab/inferenceservice-candidate.yaml")[0]
    assert candidate["metadata"]["name"] == "m3-monthly-candidate"
    assert check_ab_candidate([base, candidate]) == []
    container = candidate["spec"]["predictor"]["containers"][0]
    assert container["image"] == "tsops-serving-candidate:pin-in-overlay"
    component = _shipped_yaml("manifests/components/ab/kustomization.yaml")[0]
    assert "images" not in component  # the overlay pins the candidate


def test_candidate_annotations_disagreeing_with_its_image_fail():
    candidate = _isvc("m3-monthly-candidate")  # image m3-monthly-v1.2.0
    candidate["metadata"]["annotations"][RELEASE] = "m3-monthly/v1.1.0"
    findings = check_release(candidate)
    assert len(findings) == 1
    assert "expected tag 'm3-monthly-v1.1.0'" in findings[0].problem
    assert "tsops-serving-candidate" in findings[0].fix
    assert "ab-candidate.yaml" in findings[0].fix
    candidate["metadata"]["annotations"][RELEASE] = "pin-in-overlay"
    problem = check_release(candidate)[0].problem
    assert "still the placeholder 'pin-in-overlay'" in problem


def _policy(*globs: str) -> dict:
    return {
        "apiVersion": "policy.sigstore.dev/v1beta1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "tsops-release-signature"},
        "spec": {"images": [{"glob": g} for g in globs], "authorities": [{"keyless": {}}]},
    }


def _namespace(env: str, include: bool = True) -> dict:
    labels = {SIGSTORE_INCLUDE: "true"} if include else {}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": f"tsops-{env}", "labels": labels},
    }


def _signed_renders(image: str = f"{TAGGED}@{DIGEST}", include: bool = True) -> dict:
    return {
        f"manifests/overlays/{env}": [_namespace(env, include), _cronjob(image)]
        for env in DIGEST_ENVS
    } | {"manifests/overlays/local": [_namespace("local", False), _cronjob("other/x:1")]}


def test_missing_signature_policy_fails():
    # Issue 12 (3): nothing checked the release signature at admission.
    findings = check_signature_policy([PROJECT], _signed_renders())
    assert len(findings) == 1
    assert findings[0].where == "argocd/kustomization.yaml"
    assert "no ClusterImagePolicy" in findings[0].problem
    assert "argocd/clusterimagepolicy.yaml" in findings[0].fix


def test_signature_policy_must_cover_every_staging_and_production_image():
    renders = _signed_renders(f"registry.example/tsops-serving:m3-monthly-v1.2.0@{DIGEST}")
    findings = check_signature_policy([_policy("ghcr.io/tsops/tsops-serving**")], renders)
    assert {f.where for f in findings} == {
        f"manifests/overlays/{env}: CronJob/m3-monthly-forecast" for env in DIGEST_ENVS
    }
    assert (
        "matches no ClusterImagePolicy glob (ghcr.io/tsops/tsops-serving**)" in findings[0].problem
    )
    assert "imageGlob in argocd/gitops-settings.yaml" in findings[0].fix
    # local runs side-loaded images and is not checked; a covering glob passes
    assert (
        check_signature_policy([_policy("ghcr.io/tsops/tsops-serving**")], _signed_renders()) == []
    )


def test_staging_and_production_namespaces_must_opt_in_to_the_policy():
    findings = check_signature_policy(
        [_policy("ghcr.io/tsops/tsops-serving**")], _signed_renders(include=False)
    )
    assert {f.where for f in findings} == {
        f"manifests/overlays/{env}: Namespace/tsops-{env}" for env in DIGEST_ENVS
    }
    assert f'add {SIGSTORE_INCLUDE}: "true"' in findings[0].fix


def test_shipped_policy_glob_covers_the_shipped_pins():
    glob = _shipped_yaml("argocd/gitops-settings.yaml")[0]["data"]["imageGlob"]
    for env in DIGEST_ENVS:
        kust = _shipped_yaml(f"manifests/overlays/{env}/kustomization.yaml")[0]
        for entry in image_entries(kust).values():
            assert glob_match(glob, entry_image(entry)), (glob, entry)
        namespace = _shipped_yaml(f"manifests/overlays/{env}/namespace.yaml")[0]
        assert namespace["metadata"]["labels"][SIGSTORE_INCLUDE] == "true"


@pytest.mark.parametrize(
    ("glob", "image", "matches"),
    [
        (
            "ghcr.io/tsops/tsops-serving**",
            f"ghcr.io/tsops/tsops-serving:m3-monthly-v1.0.0@{DIGEST}",
            True,
        ),
        ("ghcr.io/tsops/tsops-serving**", f"ghcr.io/tsops/tsops-serving@{DIGEST}", True),
        ("ghcr.io/tsops/tsops-serving**", f"ghcr.io/fork/tsops-serving@{DIGEST}", False),
        ("ghcr.io/tsops/*", "ghcr.io/tsops/tsops-serving:v1", True),  # ":" is no separator
        ("ghcr.io/*", "ghcr.io/tsops/tsops-serving:v1", False),  # "*" stops at "/"
        ("ghcr.io/tsops/tsops-serving", "ghcr.io/tsops/tsops-serving:v1", False),
        ("index.docker.io/library/*", "busybox", True),
        ("ghcr.io/tsops/(x)", "ghcr.io/tsops/x", False),  # not a valid glob
    ],
)
def test_glob_match_follows_policy_controller(glob, image, matches):
    assert glob_match(glob, image) is matches
