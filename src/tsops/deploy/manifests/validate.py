"""Rendering every overlay (alone, with each component switched on, with its image pins
bumped) and argocd/, and running every check on the renders: :func:`validate_all`."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tsops.deploy.arms import ISVC_TARGET, SHADOW_FLAG, cluster_url
from tsops.deploy.manifests.argocd import check_argocd
from tsops.deploy.manifests.checkov import run_checkov
from tsops.deploy.manifests.images import (
    check_batch_entry,
    check_digest_pins,
    entry_image,
    image_bump_findings,
    image_entries,
    main_image_entry,
)
from tsops.deploy.manifests.kustomizations import check_patch_targets, check_unused_files
from tsops.deploy.manifests.mlflow_runtime import variant_edit
from tsops.deploy.manifests.policies import policy_findings
from tsops.deploy.manifests.render import (
    ARGOCD,
    COMPONENTS,
    OVERLAYS,
    find_kubectl,
    kustomization_file,
    kustomize_error,
    read_text,
    read_yaml_docs,
    render,
    render_variant,
)
from tsops.deploy.manifests.report import Finding, ManifestError, Report, merge_renders, timer
from tsops.deploy.manifests.resources import annotations_of, api_group, dig, resource_id
from tsops.deploy.manifests.schemas import (
    DEFAULT_CRDS,
    KUBERNETES_VERSION,
    load_crds,
    schema_findings,
)
from tsops.deploy.manifests.signatures import check_signature_policy
from tsops.deploy.manifests.sources import SourceIndex
from tsops.deploy.overlays import (
    MODEL_VERSION,
    REGISTERED_MODEL,
    RELEASE,
    SECOND_SERVICES,
    GitOpsError,
    candidate_patch,
    second_service,
)
from tsops.deploy.pins import BATCH_IMAGE, SERVING_IMAGE, Pin, set_pins


@dataclass
class _Render:
    """One kustomize render to run: what it is, how to run it, where to blame a failure."""

    label: str
    run: Callable[[], list[dict]]
    blame: str
    docs: list[dict] | None = None
    error: Finding | None = None


def _run_renders(jobs: list[_Render], report: Report) -> None:
    """Run the renders side by side (each is a kubectl process); a failure is kept as
    the job's finding."""
    from concurrent.futures import ThreadPoolExecutor

    with timer(report, "render"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(job, pool.submit(job.run)) for job in jobs]
        for job, future in futures:
            try:
                job.docs = future.result()
            except subprocess.CalledProcessError as e:
                job.error = Finding(
                    "kustomize",
                    job.blame,
                    f"kubectl kustomize failed: {kustomize_error(e.stderr or '')}",
                    "fix the kustomization or the file kustomize names in its message",
                )


def _release_annotations(overlay: Path, kust: dict) -> tuple[str, dict] | None:
    """(InferenceService name, its release annotations) as the overlay's patch files
    write them (model-version.yaml), or None."""
    for entry in kust.get("patches") or []:
        if not isinstance(entry, dict) or not entry.get("path"):
            continue
        try:
            patches = read_yaml_docs(overlay / entry["path"])
        except (OSError, yaml.YAMLError):
            continue
        for patch in patches:
            if not isinstance(patch, dict) or patch.get("kind") != "InferenceService":
                continue
            notes = annotations_of(patch)
            name = str(dig(patch, "metadata", "name") or "")
            if notes.get(RELEASE) and name and second_service(name) is None:
                keys = (RELEASE, REGISTERED_MODEL, MODEL_VERSION)
                return name, {k: str(notes[k]) for k in keys if k in notes}
    return None


ARGS_PATH = "/spec/predictor/containers/0/args/-"
# The strategies' components an overlay does not run are switched on together, in one
# render: each adds its own resources (a third arm needs the A/B graph anyway), and what
# they would clash on (two traffic owners, two mirrors on the main server) is checked
# only in an overlay's own render. Each render is a kubectl process and a share of
# checkov's run; components that replace something (mlflow-runtime) render alone.
TOGETHER = {"ab", "third", "bluegreen", "shadow"}


def _candidate_pin(overlay: Path, kust: dict, component: Path) -> Callable[[Any], None] | None:
    """For an overlay that does not run ``component``, what its render with it switched on
    needs to be a release: each InferenceService the component adds (the A/B candidate,
    the third arm, green, the shadow: ``SECOND_SERVICES``) pinned to the overlay's own
    release (its tsops-serving entry and model-version.yaml's annotations), as `tsops ab`
    (`tsops bluegreen`, `tsops shadow`) would write for a release against itself. The
    component's own files are then checked as they are; which releases a real strategy
    runs is only known in the overlay that runs one, whose render is checked with its own
    pins."""
    entries = image_entries(kust)
    texts = "".join(read_text(path) for path in sorted(component.glob("*.y*ml")))
    seconds = [s for s in SECOND_SERVICES if f"{s.image}:" in texts and s.image not in entries]
    if not seconds or SERVING_IMAGE not in entries:
        return None
    path = kustomization_file(overlay)
    try:
        pin = Pin.from_entry(entries[SERVING_IMAGE], path)
    except GitOpsError:
        return None  # no release to copy: the overlay's own render reports its entry
    release = _release_annotations(overlay, kust)

    # what `tsops ab --candidate` writes (tsops.deploy.gitops.candidate_edits), with the
    # patch inline instead of in ab-candidate.yaml
    def edit(data: Any) -> None:
        for second in seconds:
            set_pins(data, path, {second.image: pin}, add_missing=True)
            if release:
                service, notes = release
                patch = candidate_patch(service, notes)
                patch["metadata"]["name"] = f"{service}{second.suffix}"
                data.setdefault("patches", []).append({"patch": yaml.safe_dump(patch)})
                # the mirrors `tsops shadow` / `tsops bluegreen` write with the release
                mirrors = {"-shadow": [(service, f"{service}-shadow")]}.get(second.suffix, [])
                if second.suffix == "-green":
                    mirrors = [(service, f"{service}-green"), (f"{service}-green", service)]
                for source, target in mirrors:
                    url = cluster_url(target, str(kust.get("namespace") or "default"))
                    op = {"op": "add", "path": ARGS_PATH, "value": f"{SHADOW_FLAG}={url}"}
                    data["patches"].append(
                        {"patch": yaml.safe_dump([op]), "target": {**ISVC_TARGET, "name": source}}
                    )

    return edit


def _overlay_jobs(
    repo_root: Path, overlay: Path, kust: dict, components: list[Path], workdir: Path
) -> tuple[_Render, list[_Render], _Render | None, dict[str, str]]:
    """The overlay's own render, one with each component it does not use switched on,
    and one with its tsops-serving and tsops-batch pins bumped (None when it pins no
    model server image) with the images those entries then render."""
    rel = overlay.relative_to(repo_root).as_posix()
    main = _Render(rel, functools.partial(render, overlay), f"{rel}/kustomization.yaml")
    used = {(overlay / c).resolve() for c in kust.get("components") or []}
    variants = []
    unused = [c for c in components if c.resolve() not in used]
    together = [c for c in unused if c.name in TOGETHER]
    groups = [together] if together else []
    groups += [[c] for c in unused if c.name not in TOGETHER]
    for group in groups:
        edits = []
        for member in group:
            relpath = os.path.relpath(member, overlay)
            edits.append(
                (
                    relpath,
                    _candidate_pin(overlay, kust, member),
                    variant_edit(overlay, kust, member),
                )
            )

        def switch_on(data: Any, edits: list = edits) -> None:
            for relpath, pin, runtime in edits:
                data.setdefault("components", []).append(relpath)
                for edit in (pin, runtime):
                    if edit:
                        edit(data)

        crels = " and ".join(
            f"{m.relative_to(repo_root).as_posix()}/kustomization.yaml" for m in group
        )
        variants.append(
            _Render(
                f"{rel}+" + "+".join(m.name for m in group),
                functools.partial(render_variant, repo_root, rel, switch_on, workdir),
                f"{crels} (switched on in {rel})",
            )
        )
    entry = main_image_entry(kust)
    if entry is None:
        return main, variants, None, {}
    entries = image_entries(kust)
    targets = {str(entry.get("name")): entry}
    if BATCH_IMAGE in entries:
        targets[BATCH_IMAGE] = entries[BATCH_IMAGE]
    # Different tags for the two, so that the render tells which entry moved which image.
    tags = {
        name: f"{e.get('newTag') or 'untagged'}-bumpcheck-{i}"
        for i, (name, e) in enumerate(targets.items())
    }
    bumped_images = {
        SERVING_IMAGE if e is entry else name: entry_image({**e, "newTag": tags[name]})
        for name, e in targets.items()
    }

    def bump(data: Any, tags: dict[str, str] = tags) -> None:
        for e in data.get("images") or []:
            if e.get("name") in tags:
                e["newTag"] = tags[e.get("name")]

    bumped = _Render(
        f"{rel} (image bump)",
        functools.partial(render_variant, repo_root, rel, bump, workdir),
        f"{rel}/kustomization.yaml",
    )
    return main, variants, bumped, bumped_images


def validate_all(
    repo_root: Path,
    crds_dir: Path | None = None,
    *,
    k8s_version: str = KUBERNETES_VERSION,
    checkov: bool = True,
    checkov_command: str | None = None,
) -> Report:
    """Render every overlay (alone and with each component), the Argo CD objects, and run
    every check on them. Raises :class:`ManifestError` only when a tool or an input is
    missing; everything wrong with the manifests is a finding of the report. The CRDs
    are the repository's own (``manifests/crds``) unless ``crds_dir`` names others;
    ``checkov_command`` runs checkov (default: found, see
    :func:`~tsops.deploy.manifests.checkov.checkov_command`)."""
    repo_root = Path(repo_root).resolve()
    report = Report()
    with timer(report, "crds"):
        schemas = load_crds(Path(crds_dir) if crds_dir else repo_root / DEFAULT_CRDS)
    find_kubectl()
    index = SourceIndex(repo_root)
    overlays = sorted(
        p for p in (repo_root / OVERLAYS).glob("*") if p.is_dir() and kustomization_file(p)
    )
    components = sorted(
        p for p in (repo_root / COMPONENTS).glob("*") if p.is_dir() and kustomization_file(p)
    )
    if not overlays:
        raise ManifestError(f"no overlay with a kustomization.yaml under {repo_root / OVERLAYS}")
    argocd_dir = repo_root / ARGOCD

    def kustomization(directory: Path) -> dict:
        docs = read_yaml_docs(kustomization_file(directory))
        return docs[0] if docs and isinstance(docs[0], dict) else {}

    with tempfile.TemporaryDirectory(prefix="tsops-manifests-") as tmp:
        plans = []
        jobs = []
        for overlay in overlays:
            kust = kustomization(overlay)
            main, variants, bumped, bumped_images = _overlay_jobs(
                repo_root, overlay, kust, components, Path(tmp)
            )
            plans.append((overlay, kust, main, variants, bumped, bumped_images))
            jobs += [main, *variants, *([bumped] if bumped else [])]
        argo = None
        if kustomization_file(argocd_dir):
            argo = _Render(
                ARGOCD, functools.partial(render, argocd_dir), f"{ARGOCD}/kustomization.yaml"
            )
            jobs.append(argo)
        _run_renders(jobs, report)

    renders: dict[str, list[dict]] = {}
    kinds_by_path: dict[str, set[tuple[str, str, str]]] = {}
    for overlay, kust, main, variants, bumped, bumped_images in plans:
        rel = main.label
        kinds_by_path[rel] = set()
        report.findings += check_unused_files(overlay, kust, rel)
        report.findings += check_batch_entry(kust, rel)
        if main.docs is None:
            report.findings.append(main.error)  # its variants fail the same way
            continue
        report.findings += [j.error for j in [*variants, bumped] if j and j.error]
        report.findings += check_patch_targets(overlay, kust, main.docs, rel)
        renders[rel] = main.docs
        renders.update({v.label: v.docs for v in variants if v.docs is not None})
        if bumped is None:
            report.findings.append(
                Finding(
                    "image-bump",
                    f"{rel}/kustomization.yaml",
                    "no images: entry pins the model server's image",
                    "add images: [{name: tsops-serving, newName: <registry>/tsops-serving, "
                    "newTag: <model>-vX.Y.Z}]",
                )
            )
        elif bumped.docs is not None:
            report.findings += image_bump_findings(main.docs, bumped.docs, bumped_images, rel)
    for component in components:
        crel = component.relative_to(repo_root).as_posix()
        kust = kustomization(component)
        report.findings += check_unused_files(component, kust, crel)
        switched_on = [
            d
            for label, d in renders.items()
            if component.name in label.split(" ")[0].split("+")[1:]
        ]
        if switched_on:
            report.findings += check_patch_targets(component, kust, switched_on[0], crel)

    for label, docs in renders.items():
        report.renders[label] = len(docs)
        overlay = label.split("+")[0]
        kinds_by_path.setdefault(overlay, set()).update(
            (
                api_group(d.get("apiVersion", "")),
                d.get("kind", ""),
                dig(d, "metadata", "name") or "",
            )
            for d in docs
        )
        with timer(report, "schemas"):
            for doc in docs:
                report.findings += schema_findings(
                    doc,
                    schemas,
                    k8s_version,
                    f"{label}: {resource_id(doc)}",
                    index.fixer(doc, overlay),
                )
        with timer(report, "policies"):
            report.findings += policy_findings(docs, label, lambda d, o=overlay: index(d, o))
            report.findings += check_digest_pins(docs, label)

    if argo is None:
        report.findings.append(
            Finding(
                "argocd",
                ARGOCD,
                "no argocd/kustomization.yaml, so the Argo CD objects are neither validated "
                "nor applied together",
                "add argocd/kustomization.yaml listing the AppProject and the Applications",
            )
        )
    else:
        report.findings += check_unused_files(argocd_dir, kustomization(argocd_dir), ARGOCD)
        if argo.error:
            report.findings.append(argo.error)
        if argo.docs is not None:
            report.renders[ARGOCD] = len(argo.docs)
            with timer(report, "schemas"):
                for doc in argo.docs:
                    report.findings += schema_findings(
                        doc, schemas, k8s_version, f"{ARGOCD}: {resource_id(doc)}", index.fixer(doc)
                    )
            with timer(report, "policies"):
                report.findings += check_argocd(argo.docs, kinds_by_path)
                report.findings += check_signature_policy(argo.docs, renders)

    if checkov:
        with timer(report, "checkov"):
            report.findings += run_checkov(
                renders, index, Path(repo_root) / "Dockerfile", command=checkov_command
            )
    report.findings = merge_renders(report.findings)
    return report
