"""Where a model came from: git commit, DVC data hash, trained-artifact digest."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from tsops.core.errors import TsopsError
from tsops.core.git import git, head_commit, is_clean
from tsops.core.verdict import file_digest


def dvc_data_hash(root: Path, pointer: str = "data.dvc") -> str:
    """The md5 DVC recorded for ``data/`` (``unknown`` if data is not DVC-tracked)."""
    path = Path(root) / pointer
    return _dvc_md5(path.read_text()) if path.exists() else "unknown"


def _dvc_md5(pointer_text: str) -> str:
    doc = YAML(typ="safe").load(pointer_text) or {}
    outs = doc.get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def lineage_tags(root: Path, data_file: Path, model_sha256: str) -> dict[str, str]:
    """Where a registered version comes from: git commit, DVC data hash, and the
    sha256 of the data file and of the trained model (computed by the caller, which
    has hashed the model already to check the gate's verdict)."""
    commit = head_commit(root)
    dirty = commit is not None and not is_clean(root)
    return {
        "mlflow.source.git.commit": commit or "unknown",
        "tsops.git_commit": commit or "unknown",
        "tsops.git_dirty": str(dirty).lower(),
        "tsops.data_dvc_md5": dvc_data_hash(root),
        "tsops.data_sha256": file_digest(data_file),
        "tsops.model_sha256": model_sha256,
    }


class LineageError(TsopsError):
    """Git could not answer a lineage question; the message says what to do."""


def resolve_commit(root: Path, ref: str) -> str:
    found = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if found.returncode != 0:
        raise LineageError(
            f"git knows no commit {ref!r} in {root}; fetch it (actions/checkout with "
            "fetch-depth: 0) or name a commit, tag or branch that exists"
        )
    return found.stdout.strip()


def is_ancestor(root: Path, ancestor: str, commit: str) -> bool:
    """Whether ``ancestor`` is ``commit`` or one of its ancestors."""
    return git(root, "merge-base", "--is-ancestor", ancestor, commit, check=False).returncode == 0


def pipeline_at(root: Path, commit: str, model: str) -> tuple[str, dict]:
    """The data hash (data.dvc) and this model's dvc.lock entries at ``commit``: two
    commits that agree on both trained the same model from the same data and code."""
    shown = git(root, "show", f"{commit}:data.dvc", check=False)
    md5 = _dvc_md5(shown.stdout) if shown.returncode == 0 else "unknown"
    shown = git(root, "show", f"{commit}:dvc.lock", check=False)
    lock = (YAML(typ="safe").load(shown.stdout) or {}) if shown.returncode == 0 else {}
    stages = {
        name: entry
        for name, entry in (lock.get("stages") or {}).items()
        if str(name).endswith(f"@{model}")
    }
    return md5, stages
