"""Git for tsops: one runner, the state of the working tree, and commits on new branches.

Commands that propose a change (``tsops retrain --apply``, ``tsops monitor canary
--apply``, ``tsops canary --branch``) commit it on a branch of its own, ready to open
as a pull request. They work in the user's checkout, not in a separate worktree,
because a retraining branch must end up checked out with the new data beside it: the
DVC-tracked data and cache are not in git and would be missing from a fresh worktree.
Working in the checkout is made safe by two rules:

- **refuse over uncommitted work**: before touching anything, ``commit_on_branch``
  refuses when tracked files have uncommitted changes (staged or not), and lists them.
  Untracked files are left alone: switching to a new branch at HEAD keeps them, and a
  failed change removes only files that were not there before it.
- **undo only its own changes**: on a failure, the files that differ from the starting
  commit are, by the rule above, the ones the change wrote; exactly those are restored
  (files it added are unstaged, and removed unless they were there before), then the
  checkout goes back to where it was and the half-made branch is deleted. There is no
  ``git reset --hard``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tsops.core.errors import TsopsError

#: a committer for machines without one (CI runners, pods); a configured one wins
FALLBACK_IDENTITY = ("tsops", "tsops@users.noreply.github.com")


class GitError(TsopsError):
    """A git command failed; the message holds git's own words and what to do."""


class UncommittedChangesError(GitError):
    """The working tree has uncommitted changes a git step could overwrite."""


class BranchError(GitError):
    """Preparing a branch failed; nothing was left behind."""

    headline = "no branch created"


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git args`` in ``root`` and return the finished process (text output).

    ``check``: raise ``GitError`` with git's stderr when git exits non-zero; without
    it the caller reads ``returncode`` (for questions such as "is this an ancestor?").
    A missing git executable is always an error.
    """
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise GitError(
            f"git is not installed (or not on PATH): {exc}; install git to use this command"
        ) from exc
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
        raise GitError(
            f"`git {' '.join(args)}` failed in {root}: {said}\n"
            "fix what git reports above (is this a git repository? does the ref exist?) "
            "and run again"
        )
    return done


def uncommitted(root: Path) -> list[str]:
    """Tracked files with uncommitted changes, staged or not, as ``git status --short``
    lines (``" M models/m/model.yaml"``). Untracked files are not listed."""
    status = git(root, "status", "--porcelain", "--untracked-files=no")
    return [line for line in status.stdout.splitlines() if line.strip()]


def is_clean(root: Path) -> bool:
    """Whether no tracked file has uncommitted changes."""
    return not uncommitted(root)


def require_clean(root: Path, doing: str) -> None:
    """Raise ``UncommittedChangesError`` naming the changed files unless the tree is clean."""
    changes = uncommitted(root)
    if changes:
        listed = "\n".join(f"  {line}" for line in changes[:20])
        more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
        raise UncommittedChangesError(
            f"{root} has uncommitted changes, which {doing} could overwrite:\n"
            f"{listed}{more}\n"
            "commit or stash them first (git stash), then run again; nothing was changed"
        )


def head_commit(root: Path) -> str | None:
    """HEAD's commit, or None where git cannot tell: outside a repository, before the
    first commit, or without git installed (lineage then records "unknown")."""
    try:
        done = git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    except GitError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


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
    commit them. Returns False, doing nothing, when the branch already exists (here or
    on ``remote``): a job that runs again on the same evidence proposes nothing new.

    Refuses (``UncommittedChangesError``, nothing touched) when tracked files have
    uncommitted changes. ``stay``: remain on the new branch (a retraining branch, whose
    data and outputs the checkout now holds) or go back to where HEAD was. On a failure
    the files the change wrote are restored, the checkout goes back and the branch is
    deleted; the error is re-raised (git's as ``BranchError``).
    """
    root = Path(root)
    if branch_exists(root, branch, remote):
        return False
    require_clean(root, f"preparing branch {branch}")
    start_commit = git(root, "rev-parse", "HEAD").stdout.strip()
    start = git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()  # "HEAD": detached
    untracked = _untracked(root)
    git(root, "switch", "-q", "-c", branch)
    try:
        changed = [str(p) for p in make_changes()]
        if not changed:
            raise BranchError(f"nothing changed for {branch}; no branch prepared")
        git(root, "add", "--", *changed)
        git(root, *_identity(root), "commit", "-q", "-m", message)
    except BaseException as exc:
        _undo(root, start_commit, start, branch, keep=untracked)
        if isinstance(exc, GitError) and not isinstance(exc, BranchError):
            raise BranchError(str(exc)) from exc
        raise
    if not stay:
        _go_back(root, start_commit, start)
    return True


def _undo(root: Path, start_commit: str, start: str, branch: str, keep: set[str]) -> None:
    """Restore what a failed change wrote, go back to ``start``, delete ``branch``.

    The tree was clean when the change began, so every tracked difference from
    ``start_commit`` is the change's own. A file it added is removed unless it was
    there, untracked, before (``keep``). Best effort: a failure here must not hide the
    error that caused it.
    """
    for path in _changed_paths(root):
        if git(root, "cat-file", "-e", f"{start_commit}:{path}", check=False).returncode == 0:
            git(root, "restore", f"--source={start_commit}", "--staged", "--worktree", "--",
                path, check=False)  # fmt: skip
        else:  # added by the change: unstage it and remove the file it wrote
            git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", path, check=False)
            if path not in keep:
                (root / path).unlink(missing_ok=True)
    _go_back(root, start_commit, start, check=False)
    git(root, "branch", "-q", "-D", branch, check=False)


def _untracked(root: Path) -> set[str]:
    """Untracked files (not ignored) now: a failed change leaves these in place."""
    status = git(root, "status", "--porcelain", "-z", "--untracked-files=all")
    return {entry[3:] for entry in status.stdout.split("\0") if entry.startswith("?? ")}


def _changed_paths(root: Path) -> list[str]:
    """Paths of tracked changes (both sides of a rename), read NUL-separated so any
    file name comes through unquoted."""
    # check=False: this runs while undoing, where a second error must not hide the first
    status = git(root, "status", "--porcelain", "-z", "--untracked-files=no", check=False)
    fields = status.stdout.split("\0") if status.returncode == 0 else []
    paths, rest = [], iter(fields)
    for entry in rest:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: its source follows as its own field
            paths.append(next(rest, ""))
    return [p for p in paths if p]


def _go_back(root: Path, start_commit: str, start: str, check: bool = True) -> None:
    if start == "HEAD":  # a detached checkout goes back to its commit
        git(root, "switch", "-q", "--detach", start_commit, check=check)
    else:
        git(root, "switch", "-q", start, check=check)


def _identity(root: Path) -> list[str]:
    """``-c`` options naming a committer when git has none configured."""
    if git(root, "config", "user.email", check=False).stdout.strip():
        return []
    name, email = FALLBACK_IDENTITY
    return ["-c", f"user.name={name}", "-c", f"user.email={email}"]
