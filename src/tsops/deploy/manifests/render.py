"""Rendering with kustomize (``kubectl kustomize``): an overlay as it is, or a copy whose
kustomization an edit changed (:func:`render_variant`), and reading YAML files."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tsops.deploy.manifests.report import ManifestError
from tsops.deploy.overlays import dump, load

OVERLAYS = "manifests/overlays"
COMPONENTS = "manifests/components"
ARGOCD = "argocd"
CRDS_DIR_NAME = "crds"  # manifests/crds: data for validation, not manifests
# libyaml's loader when PyYAML has it: the KServe CRD alone is 2 MB of YAML.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_all(text: Any) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]


def read_yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return load_all(f)


def kustomization_file(directory: Path) -> Path | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_kubectl() -> str:
    """kubectl's path, or a ManifestError saying how to install it."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise ManifestError(
            "kubectl not found on PATH: install kubectl 1.32 or newer (it contains "
            "kustomize, which renders the overlays); e.g. apt-get install kubectl from the "
            "Kubernetes package repository"
        )
    return kubectl


def render(directory: Path) -> list[dict]:
    """``kubectl kustomize DIR`` parsed; raises CalledProcessError with kustomize's
    message if it cannot render."""
    result = subprocess.run(
        [find_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return [d for d in load_all(result.stdout) if isinstance(d, dict)]


@functools.lru_cache(maxsize=256)
def read_text(path: Path) -> str:
    """A file's text ("" when it cannot be read), read once per process."""
    try:
        return path.read_text()
    except OSError:
        return ""


def edit_kustomization(path: Path, edit: Callable[[Any], None]) -> None:
    """Load a kustomization round-trip, let ``edit`` change it, write it back."""
    data = load(path)
    edit(data)
    path.write_text(dump(data))


def render_variant(
    repo_root: Path, overlay: str, edit: Callable[[Any], None], workdir: Path
) -> list[dict]:
    """Render ``overlay`` (e.g. manifests/overlays/staging) from a copy of manifests/ whose
    overlay kustomization ``edit`` changed; the repository itself is not touched."""
    copy = Path(tempfile.mkdtemp(prefix="variant-", dir=workdir))
    source = Path(repo_root) / "manifests"
    shutil.copytree(
        source,
        copy / "manifests",
        # the vendored CRDs are no kustomize input: 4 MB not to copy for each variant
        ignore=lambda d, names: [CRDS_DIR_NAME] if Path(d) == source else [],
    )
    kdir = copy / overlay
    edit_kustomization(kustomization_file(kdir), edit)
    return render(kdir)


def kustomize_error(stderr: str) -> str:
    """kustomize's own message, without kubectl's log prefix (timestamp, pid, source)."""
    match = re.search(r'err="(.*)"\s*$', stderr.strip(), re.S)
    return (match.group(1).replace('\\"', '"') if match else stderr).strip()
