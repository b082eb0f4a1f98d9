"""Which files under manifests/ and argocd/ declare or patch a rendered resource, so a
finding names the files to edit rather than only the rendered object."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from tsops.deploy.manifests.render import ARGOCD, CRDS_DIR_NAME, read_text, read_yaml_docs
from tsops.deploy.manifests.resources import dig

#: the name under which a patch of every resource of a kind (a target without a name) is kept
EVERY = "*"


class SourceIndex:
    """Which files under manifests/ and argocd/ declare or patch a resource, so that a
    finding on a rendered resource names the files to edit."""

    def __init__(self, repo_root: Path):
        self.root = Path(repo_root)
        self.files: dict[tuple[str, str], list[str]] = {}
        crds = (self.root / "manifests" / CRDS_DIR_NAME).resolve()
        for top in ("manifests", ARGOCD):
            for path in sorted((self.root / top).rglob("*.y*ml")):
                if path.resolve().is_relative_to(crds):
                    continue  # 4 MB of CRDs, not manifests
                rel = path.relative_to(self.root).as_posix()
                try:
                    docs = read_yaml_docs(path)
                except (OSError, yaml.YAMLError):
                    continue
                for doc in docs:
                    if isinstance(doc, dict) and doc.get("kind") and dig(doc, "metadata", "name"):
                        self._add(doc["kind"], doc["metadata"]["name"], rel)
                    if isinstance(doc, dict) and path.name.startswith("kustomization"):
                        for gen in doc.get("configMapGenerator") or []:
                            if isinstance(gen, dict) and gen.get("name"):
                                self._add("ConfigMap", gen["name"], rel)
                        for p in doc.get("patches") or []:
                            t = p.get("target") if isinstance(p, dict) else None
                            if t and t.get("kind") and p.get("path"):
                                self._add(
                                    t["kind"],
                                    t.get("name") or EVERY,
                                    (path.parent / p["path"]).relative_to(self.root).as_posix(),
                                )

    def _add(self, kind: str, name: str, rel: str) -> None:
        self.files.setdefault((kind, str(name)), [])
        if rel not in self.files[(kind, str(name))]:
            self.files[(kind, str(name))].append(rel)

    def paths(self, doc: dict, overlay: str = "") -> list[str]:
        """Files declaring or patching ``doc``; of the overlays, only ``overlay``'s."""
        name = str(dig(doc, "metadata", "name"))
        kind = doc.get("kind", "")
        files = [*self.files.get((kind, name), [])]
        files += [f for f in self.files.get((kind, EVERY), []) if f not in files]
        if not files and doc.get("kind") == "ConfigMap":
            # generated: the name carries kustomize's content hash
            files = self.files.get(("ConfigMap", re.sub(r"-[a-z0-9]{10}$", "", name)), [])
        return [f for f in files if not overlay or "/overlays/" not in f or f.startswith(overlay)]

    def __call__(self, doc: dict, overlay: str = "") -> str:
        return ", ".join(self.paths(doc, overlay)) or "a generated resource"

    def fixer(self, doc: dict, overlay: str = "") -> Callable[[str | None], str]:
        """For schema errors: the files that hold an unexpected field, else all of them."""

        def locate(unexpected: str | None) -> str:
            files = self.paths(doc, overlay)
            if unexpected:
                pattern = re.compile(rf"^\s*-?\s*[\"']?{re.escape(unexpected)}[\"']?\s*:", re.M)
                holding = [f for f in files if pattern.search(read_text(self.root / f))]
                files = holding or files
            return ", ".join(files) or "a generated resource"

        return locate
