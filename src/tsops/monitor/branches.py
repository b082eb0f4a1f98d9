"""Changes proposed by monitoring, each on its own git branch, ready to open as a PR.

A branch is named after what it proposes (the data, the verdict and version), so a
scheduled job that runs again on the same evidence finds the branch and proposes
nothing new: no duplicate pull requests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tsops.core.errors import TsopsError


class BranchError(TsopsError):
    """A git step failed; the message says what to do."""


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise BranchError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def branch_exists(root: Path, branch: str, remote: str | None = "origin") -> bool:
    """Whether ``branch`` exists here or on ``remote`` (when the repo has that remote)."""
    if git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).stdout:
        return True
    if remote and remote in git(root, "remote").stdout.split():
        found = git(root, "ls-remote", "--heads", remote, branch, check=False)
        return bool(found.stdout.strip())
    return False


def commit_on_branch(
    root: Path,
    branch: str,
    message: str,
    make_changes: Callable[[], Sequence[str | Path]],
    *,
    stay: bool,
    remote: str | None = "origin",
) -> bool:
    """Create ``branch`` from HEAD, run ``make_changes`` (returns the paths it changed),
    commit them. Returns False, doing nothing, when the branch already exists.

    ``stay``: remain on the new branch (a retraining branch, whose data and outputs
    the working copy now holds) or go back to where HEAD was. On any failure the
    working copy goes back and the branch is deleted.
    """
    if branch_exists(root, branch, remote):
        return False
    start = git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    git(root, "switch", "-q", "-c", branch)
    try:
        changed = [str(p) for p in make_changes()]
        if not changed:
            raise BranchError(f"nothing changed for {branch}; no branch prepared")
        git(root, "add", "--", *changed)
        git(root, *_identity(root), "commit", "-q", "-m", message)
    except BaseException:
        git(root, "reset", "-q", "--hard", check=False)
        git(root, "switch", "-q", "-f", start, check=False)
        git(root, "branch", "-q", "-D", branch, check=False)
        raise
    if not stay:
        git(root, "switch", "-q", start)
    return True


def _identity(root: Path) -> list[str]:
    """A committer for machines without one (CI runners, pods); a configured one wins."""
    if git(root, "config", "user.email", check=False).stdout.strip():
        return []
    return ["-c", "user.name=tsops", "-c", "user.email=tsops@users.noreply.github.com"]
