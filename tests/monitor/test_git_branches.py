"""Branches proposed by tsops never cost the user their uncommitted work (real git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.git_repo import git as sh
from tests.helpers.git_repo import init_repo
from tsops.core.git import (
    BranchError,
    GitError,
    UncommittedChangesError,
    branch_exists,
    commit_on_branch,
    git,
    head_commit,
    is_clean,
    uncommitted,
)


@pytest.fixture
def repo(tmp_path):
    return init_repo(tmp_path / "repo", {"overlay.yaml": "percent: 10\n", "notes.md": "mine\n"})


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of the working tree (outside .git), byte for byte."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def edit_overlay(repo: Path, percent: int = 100):
    def change() -> list[Path]:
        path = repo / "overlay.yaml"
        path.write_text(f"percent: {percent}\n")
        return [path]

    return change


def test_a_branch_is_committed_and_the_checkout_goes_back(repo):
    assert commit_on_branch(repo, "canary/m-100", "Promote", edit_overlay(repo), stay=False,
                            remote=None)  # fmt: skip
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (repo / "overlay.yaml").read_text() == "percent: 10\n"
    assert sh(repo, "show", "canary/m-100:overlay.yaml") == "percent: 100"
    # the same evidence again: the branch exists, nothing new
    assert not commit_on_branch(repo, "canary/m-100", "Promote", edit_overlay(repo),
                                stay=False, remote=None)  # fmt: skip


def test_staying_leaves_the_checkout_on_the_new_branch(repo):
    assert commit_on_branch(repo, "retrain/m-1", "Retrain", edit_overlay(repo), stay=True,
                            remote=None)  # fmt: skip
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "retrain/m-1"
    assert is_clean(repo)


def test_uncommitted_work_is_refused_and_kept(repo):
    (repo / "notes.md").write_text("mine, not committed yet\n")
    before = snapshot(repo)
    with pytest.raises(UncommittedChangesError) as raised:
        commit_on_branch(repo, "canary/m-100", "Promote", edit_overlay(repo), stay=False,
                         remote=None)  # fmt: skip
    message = str(raised.value)
    assert "notes.md" in message and "commit or stash" in message
    assert snapshot(repo) == before
    assert (repo / "notes.md").read_text() == "mine, not committed yet\n"
    assert not branch_exists(repo, "canary/m-100", remote=None)
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_staged_work_is_refused_too(repo):
    (repo / "notes.md").write_text("staged\n")
    sh(repo, "add", "notes.md")
    with pytest.raises(UncommittedChangesError, match=r"notes\.md"):
        commit_on_branch(repo, "b", "m", edit_overlay(repo), stay=True, remote=None)
    assert sh(repo, "diff", "--cached", "--name-only") == "notes.md"


def test_a_failing_commit_leaves_the_tree_byte_identical(repo):
    (repo / "scratch.txt").write_text("an untracked file of the user's\n")
    before = snapshot(repo)
    head = head_commit(repo)
    # a pre-commit hook that rejects every commit: the change is written and staged,
    # then committing fails
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)

    def change() -> list[Path]:
        (repo / "overlay.yaml").write_text("percent: 0\n")
        (repo / "new.yaml").write_text("added: true\n")
        return [repo / "overlay.yaml", repo / "new.yaml"]

    with pytest.raises(BranchError, match="hook says no") as raised:
        commit_on_branch(repo, "canary/m-0", "Roll back", change, stay=False, remote=None)
    assert raised.value.report().startswith("no branch created:")
    assert snapshot(repo) == before
    assert head_commit(repo) == head and is_clean(repo)
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert not branch_exists(repo, "canary/m-0", remote=None)


def test_a_failing_change_restores_only_its_own_files(repo):
    (repo / "scratch.txt").write_text("untracked, left alone\n")
    before = snapshot(repo)

    def half_done() -> list[Path]:
        (repo / "overlay.yaml").write_text("percent: 50\n")
        raise RuntimeError("dvc repro failed")

    with pytest.raises(RuntimeError, match="dvc repro failed"):
        commit_on_branch(repo, "retrain/m-2", "Retrain", half_done, stay=True, remote=None)
    assert snapshot(repo) == before
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert not branch_exists(repo, "retrain/m-2", remote=None)


def test_a_failed_change_keeps_a_file_that_was_there_before(repo):
    (repo / "scratch.txt").write_text("untracked\n")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)

    def change() -> list[Path]:
        (repo / "scratch.txt").write_text("written by the change\n")
        return [repo / "scratch.txt"]

    with pytest.raises(BranchError):
        commit_on_branch(repo, "b", "m", change, stay=False, remote=None)
    assert (repo / "scratch.txt").exists() and is_clean(repo)
    assert sh(repo, "status", "--porcelain") == "?? scratch.txt"


def test_nothing_changed_is_no_branch(repo):
    with pytest.raises(BranchError, match="nothing changed"):
        commit_on_branch(repo, "b", "m", lambda: [], stay=False, remote=None)
    assert not branch_exists(repo, "b", remote=None)
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_a_detached_checkout_goes_back_to_its_commit(repo):
    head = head_commit(repo)
    sh(repo, "switch", "-q", "--detach", "HEAD")
    assert commit_on_branch(repo, "b", "m", edit_overlay(repo), stay=False, remote=None)
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"
    assert head_commit(repo) == head


def test_the_runner_reports_gits_words_and_the_state_helpers(repo, tmp_path):
    with pytest.raises(GitError, match="unknown-ref"):
        git(repo, "rev-parse", "--verify", "unknown-ref")
    assert git(repo, "rev-parse", "--verify", "unknown-ref", check=False).returncode != 0
    assert uncommitted(repo) == []
    (repo / "overlay.yaml").write_text("changed\n")
    assert uncommitted(repo) == [" M overlay.yaml"]
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert head_commit(outside) is None
