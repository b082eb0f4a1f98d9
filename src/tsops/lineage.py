"""Where a model came from: git commit, DVC data hash, trained-artifact digest."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from ruamel.yaml import YAML


def git_commit(root: Path) -> tuple[str, bool]:
    """HEAD's commit and whether the work tree has uncommitted changes (``unknown`` outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


def dvc_data_hash(root: Path, pointer: str = "data.dvc") -> str:
    """The md5 DVC recorded for ``data/`` (``unknown`` if data is not DVC-tracked)."""
    path = Path(root) / pointer
    if not path.exists():
        return "unknown"
    doc = YAML(typ="safe").load(path.read_text()) or {}
    outs = doc.get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def lineage_tags(root: Path, data_file: Path, model_file: Path) -> dict[str, str]:
    commit, dirty = git_commit(root)
    return {
        "mlflow.source.git.commit": commit,
        "tsops.git_commit": commit,
        "tsops.git_dirty": str(dirty).lower(),
        "tsops.data_dvc_md5": dvc_data_hash(root),
        "tsops.data_sha256": file_digest(data_file),
        "tsops.model_sha256": file_digest(model_file),
    }
