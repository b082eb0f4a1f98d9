"""The signature policy: a sigstore ClusterImagePolicy (in argocd/) covers every image
staging and production run, and their namespaces opt in to it."""

from __future__ import annotations

import re

from tsops.deploy.manifests.images import PLACEHOLDER_TAG
from tsops.deploy.manifests.render import ARGOCD
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import containers_of, dig, environment, located, pod_specs
from tsops.deploy.pins import DIGEST_ENVS, Pin

SIGSTORE_INCLUDE = "policy.sigstore.dev/include"
IMAGE_POLICY_KIND = "ClusterImagePolicy"


def _full_reference(image: str) -> str:
    """The image as policy-controller matches it (go-containerregistry's ``Name()``):
    Docker Hub spelt out, ``:latest`` when there is no tag, the tag dropped beside a
    digest."""
    name, tag, digest = Pin.split(image)
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"index.docker.io/{name if rest else 'library/' + name}"
    elif first == "docker.io":
        name = f"index.docker.io/{rest}"
    return f"{name}@{digest}" if digest else f"{name}:{tag or 'latest'}"


def glob_match(glob: str, image: str) -> bool:
    """Whether a ClusterImagePolicy ``images[].glob`` covers ``image``, as sigstore
    policy-controller decides it (pkg/apis/glob): ``*`` matches within a path segment,
    ``**`` matches anything ("/", ":" and "@" included), the whole reference must match."""
    glob = {"*/*": "index.docker.io/*/*", "*": "index.docker.io/library/*"}.get(glob, glob)
    if not re.fullmatch(r"[A-Za-z0-9_:/*.\-]+", glob or ""):
        return False
    pattern = glob.replace(".", r"\.").replace("**", "#").replace("*", "[^/]*").replace("#", ".*")
    regex = re.compile(f"^{pattern}$")
    return bool(regex.match(_full_reference(image)) or regex.match(image))


def check_signature_policy(argo_docs: list[dict], renders: dict[str, list[dict]]) -> list[Finding]:
    """A sigstore ClusterImagePolicy covers every image staging and production run, and
    their namespaces opt in to it (policy-controller checks only labelled namespaces)."""
    signed = {label: docs for label, docs in renders.items() if environment(label) in DIGEST_ENVS}
    if not signed:
        return []
    policies = [d for d in argo_docs if d.get("kind") == IMAGE_POLICY_KIND]
    if not policies:
        return [
            Finding(
                "signature",
                f"{ARGOCD}/kustomization.yaml",
                f"no {IMAGE_POLICY_KIND}: nothing checks at admission that "
                f"{' and '.join(DIGEST_ENVS)} run images the release workflow signed",
                f"add argocd/clusterimagepolicy.yaml (policy.sigstore.dev/v1beta1 "
                f"{IMAGE_POLICY_KIND}: images glob of the release images, keyless authority "
                "with issuer https://token.actions.githubusercontent.com and the subject of "
                ".github/workflows/release.yml) and list it in argocd/kustomization.yaml",
            )
        ]
    globs = [
        str(image.get("glob"))
        for policy in policies
        for image in dig(policy, "spec", "images") or []
        if isinstance(image, dict) and image.get("glob")
    ]
    findings = []
    for label, docs in signed.items():
        for doc in docs:
            labels = dig(doc, "metadata", "labels") or {}
            if doc.get("kind") == "Namespace" and str(labels.get(SIGSTORE_INCLUDE)) != "true":
                findings.append(
                    Finding(
                        "signature",
                        located(label, doc),
                        f'the namespace lacks the label {SIGSTORE_INCLUDE}: "true", so '
                        "policy-controller checks no signature of what runs there",
                        f'add {SIGSTORE_INCLUDE}: "true" to the labels in '
                        f"{label.split('+')[0].split(' ')[0]}/namespace.yaml",
                    )
                )
            for pod_path, pod in pod_specs(doc):
                for c_path, container in containers_of(pod):
                    image = container.get("image")
                    if not isinstance(image, str) or PLACEHOLDER_TAG.match(
                        Pin.split(image)[1] or ""
                    ):
                        continue
                    if not any(glob_match(g, image) for g in globs):
                        findings.append(
                            Finding(
                                "signature",
                                located(label, doc),
                                f"{pod_path}.{c_path}.image {image!r} matches no "
                                f"{IMAGE_POLICY_KIND} glob ({', '.join(globs) or 'none'}), so "
                                "its signature is never checked",
                                "set imageGlob in argocd/gitops-settings.yaml to cover the "
                                "overlay's images: newName (e.g. <registry>/tsops-serving**), "
                                "or correct the newName",
                            )
                        )
    return findings
