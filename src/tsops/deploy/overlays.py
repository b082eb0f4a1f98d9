"""The overlay files the GitOps commands edit and the linter reads: where an
environment's overlay is, the annotations that say which release it serves, the A/B
candidate's patch, and the round-trip YAML that keeps comments, key order and quoting
of files people also edit by hand.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tsops.core.errors import TsopsError

ENVIRONMENTS = ("local", "staging", "production")
AB_COMPONENT = "../../components/ab"
CANDIDATE_SUFFIX = "-candidate"  # InferenceService <name>-candidate is <name>'s A/B arm


@dataclass(frozen=True)
class SecondService:
    """An InferenceService a strategy's component adds next to the environment's own
    (``<model><suffix>``): it runs another release, pinned by the overlay's images: entry
    ``image`` and the release annotations in ``patch``, which ``command`` writes."""

    suffix: str
    image: str
    patch: str
    what: str
    command: str


SECOND_SERVICES = (
    SecondService(
        CANDIDATE_SUFFIX,
        "tsops-serving-candidate",
        "ab-candidate.yaml",
        "the A/B candidate",
        "tsops ab MODEL --env ENV --candidate <model>/vX.Y.Z",
    ),
    SecondService(
        "-green",
        "tsops-serving-green",
        "bluegreen-green.yaml",
        "blue/green's green colour",
        "tsops bluegreen MODEL --env ENV --release <model>/vX.Y.Z",
    ),
    SecondService(
        "-shadow",
        "tsops-serving-shadow",
        "shadow.yaml",
        "the shadow",
        "tsops shadow MODEL --env ENV --release <model>/vX.Y.Z",
    ),
    SecondService(
        "-third",
        "tsops-serving-third",
        "ab-third.yaml",
        "the third arm of an A/B test or bandit",
        "tsops ab MODEL --env ENV --third <model>/vX.Y.Z",
    ),
)


def second_service(name: str) -> SecondService | None:
    """The strategy's InferenceService ``name`` is (None: an environment's own)."""
    return next((s for s in SECOND_SERVICES if str(name).endswith(s.suffix)), None)


# model-version.yaml's annotations: the release an environment serves
RELEASE = "tsops.io/release"
REGISTERED_MODEL = "tsops.io/registered-model"
MODEL_VERSION = "tsops.io/model-version"
# What a promotion replaced: where the traffic goes back to with canary 0 (KServe's
# previously rolled-out revision).
PREVIOUS_RELEASE = "tsops.io/previous-release"
PREVIOUS_MODEL_VERSION = "tsops.io/previous-model-version"
PREVIOUS_IMAGE = "tsops.io/previous-image"  # repository:tag@digest, for a rollback
ROLLED_BACK_FROM = "tsops.io/rolled-back-from"


class GitOpsError(TsopsError, ValueError):
    """An edit that cannot be made; the message says why and what to run instead.

    Every GitOps function computes all its edits before it writes any, so this error
    always comes with nothing written.
    """

    headline = "no file changed"


def round_trip_yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def load(path: Path) -> Any:
    if not path.exists():
        raise GitOpsError(f"{path} does not exist")
    return round_trip_yaml().load(path.read_text())


def dump(doc: Any) -> str:
    buffer = io.StringIO()
    round_trip_yaml().dump(doc, buffer)
    return buffer.getvalue()


def overlay(root: Path, env: str) -> Path:
    if env not in ENVIRONMENTS:
        raise GitOpsError(f"unknown environment {env!r}; environments: {', '.join(ENVIRONMENTS)}")
    path = Path(root) / "manifests" / "overlays" / env
    if not (path / "kustomization.yaml").exists():
        raise GitOpsError(f"{path}/kustomization.yaml does not exist")
    return path


def check_model(env_dir: Path, model: str) -> None:
    doc = load(env_dir / "model-version.yaml")
    deployed = doc["metadata"]["annotations"].get(REGISTERED_MODEL)
    if deployed != model:
        raise GitOpsError(
            f"unknown model {model!r}: {env_dir.name} deploys {deployed!r}; "
            "name the model its overlay serves"
        )


def candidate_patch(service: str, annotations: Mapping[str, Any]) -> dict:
    """The patch that names the A/B candidate of InferenceService ``service`` and its
    release (``annotations``: RELEASE, REGISTERED_MODEL, MODEL_VERSION): what `tsops ab
    --candidate` writes as ab-candidate.yaml."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": f"{service}{CANDIDATE_SUFFIX}", "annotations": dict(annotations)},
    }
