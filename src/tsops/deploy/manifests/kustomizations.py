"""Checks of the kustomization files themselves: every file of a folder is used, and
every patch hits a rendered resource (kustomize skips both without a word)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tsops.deploy.manifests.render import load_all, read_yaml_docs
from tsops.deploy.manifests.report import Finding
from tsops.deploy.manifests.resources import dig


def _kustomization_refs(kdir: Path, kust: dict) -> set[Path]:
    """Files of ``kdir`` that its kustomization uses."""
    refs: set[str] = set()
    for key in (
        "resources",
        "components",
        "configurations",
        "crds",
        "transformers",
        "generators",
        "patchesStrategicMerge",
        "validators",
    ):
        refs.update(str(r) for r in kust.get(key) or [] if isinstance(r, str))
    for key in ("patches", "patchesJson6902"):
        refs.update(
            str(p["path"]) for p in kust.get(key) or [] if isinstance(p, dict) and p.get("path")
        )
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in kust.get(key) or []:
            refs.update(str(e) for e in gen.get("envs") or [])
            if gen.get("env"):
                refs.add(str(gen["env"]))
            refs.update(str(f).split("=", 1)[-1] for f in gen.get("files") or [])
    if kust.get("openapi", {}).get("path") if isinstance(kust.get("openapi"), dict) else False:
        refs.add(kust["openapi"]["path"])
    return {(kdir / r).resolve() for r in refs}


def check_unused_files(kdir: Path, kust: dict, label: str) -> list[Finding]:
    """A YAML or .env file that the kustomization does not use changes nothing, which for
    a patch file means an edit that silently never happens."""
    used = _kustomization_refs(kdir, kust)
    findings = []
    for path in sorted(kdir.iterdir()):
        if path.is_dir() or path.name.startswith(".") or path.name.startswith("kustomization"):
            continue
        if path.suffix not in (".yaml", ".yml", ".env", ".json"):
            continue
        if path.resolve() not in used:
            findings.append(
                Finding(
                    "kustomize",
                    f"{label}/{path.name}",
                    f"{path.name} is not used by {label}/kustomization.yaml, so it changes nothing",
                    "list it under patches: (or resources:) in kustomization.yaml, or delete it",
                )
            )
    return findings


def _selector_match(target: dict, doc: dict) -> bool:
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/") if "/" in api else ("", "", api)
    meta = doc.get("metadata") or {}
    for key, value in (("group", group), ("version", version), ("kind", doc.get("kind"))):
        if target.get(key) not in (None, "") and target[key] != value:
            return False
    for key in ("name", "namespace"):
        if target.get(key) and not re.fullmatch(str(target[key]), str(meta.get(key) or "")):
            return False
    for key, meta_key in (("labelSelector", "labels"), ("annotationSelector", "annotations")):
        have = meta.get(meta_key) or {}
        for term in filter(None, (t.strip() for t in str(target.get(key) or "").split(","))):
            if "!=" in term:
                k, v = (x.strip() for x in term.split("!=", 1))
                ok = have.get(k) != v
            elif "=" in term:
                k, v = (x.strip() for x in term.replace("==", "=").split("=", 1))
                ok = have.get(k) == v
            else:
                ok = (term[1:] not in have) if term.startswith("!") else (term in have)
            if not ok:
                return False
    return True


def check_patch_targets(kdir: Path, kust: dict, docs: list[dict], label: str) -> list[Finding]:
    """Every patch of the kustomization matches a resource of the render: kustomize
    applies a patch whose ``target`` selects nothing without a word."""
    findings = []
    entries = [
        *(p for p in kust.get("patches") or [] if isinstance(p, dict)),
        *({"path": p} for p in kust.get("patchesStrategicMerge") or [] if isinstance(p, str)),
        *(p for p in kust.get("patchesJson6902") or [] if isinstance(p, dict)),
    ]
    for entry in entries:
        where = f"{label}/{entry['path']}" if entry.get("path") else f"{label}/kustomization.yaml"
        selectors = []
        if entry.get("target"):
            selectors.append(dict(entry["target"]))
        else:
            try:
                if entry.get("path"):
                    content = read_yaml_docs(kdir / entry["path"])
                else:
                    content = load_all(entry.get("patch") or "")
            except (OSError, yaml.YAMLError) as e:
                findings.append(
                    Finding("kustomize", where, f"cannot read the patch: {e}", "fix the file")
                )
                continue
            for patch in content:
                if isinstance(patch, dict):
                    api = patch.get("apiVersion", "")
                    group, _, version = api.rpartition("/") if "/" in api else ("", "", api)
                    selectors.append(
                        {
                            "group": group,
                            "version": version,
                            "kind": patch.get("kind"),
                            "name": re.escape(str(dig(patch, "metadata", "name") or "")) or None,
                        }
                    )
        for selector in selectors:
            if not any(_selector_match(selector, doc) for doc in docs):
                same_kind = sorted(
                    dig(d, "metadata", "name")
                    for d in docs
                    if d.get("kind") == selector.get("kind")
                )
                findings.append(
                    Finding(
                        "kustomize",
                        where,
                        f"the patch targets {selector.get('kind')} {selector.get('name')!r}, "
                        f"which the render of {label} does not contain, so it does nothing",
                        "point the patch (metadata.name, or target: in kustomization.yaml) at "
                        f"a rendered {selector.get('kind')}: {same_kind or 'there is none'}",
                    )
                )
    return findings
