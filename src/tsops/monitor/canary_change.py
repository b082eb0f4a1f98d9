"""A canary verdict as the GitOps change it asks for, on a branch ready for review.

Decided first, then made: :func:`plan_change` computes the branch, the commit
message and the overlay edits from the verdict and writes nothing (a bad model or
environment fails there); :func:`apply_change` commits them on the branch through
``tsops.core.git``, which refuses to run over uncommitted changes and leaves the
checkout where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsops.monitor.canary import CanaryResult
from tsops.monitor.errors import MonitorError


@dataclass(frozen=True)
class CanaryChange:
    """The GitOps change a verdict asks for, computed but not yet written."""

    branch: str
    message: str
    command: str
    #: the file edits (``tsops.deploy.gitops``), applied on the branch
    edits: Any = field(repr=False)


class CanaryChangeError(MonitorError):
    """The verdict's GitOps change cannot be made (unknown model or overlay, no
    canary running); nothing was written."""

    headline = "no branch created"


def plan_change(root: Path, model: str, env: str, result: CanaryResult) -> CanaryChange | None:
    """What the verdict changes, decided before anything is written: promote sends all
    traffic to the canary (``tsops canary --percent 100``), rollback sends it all back
    (``tsops rollback``); hold changes nothing (None).

    Reads the overlay of ``env`` to compute the edits, so a bad model or environment
    fails here, with nothing created.
    """
    from tsops.deploy.gitops import canary_edits, rollback_edits
    from tsops.deploy.overlays import GitOpsError

    if result.verdict == "hold":
        return None
    try:
        if result.verdict == "rollback":
            edits = rollback_edits(root, model, env)
            command = f"tsops rollback {model} --env {env}"
        else:
            edits = canary_edits(root, model, env, 100)
            command = f"tsops canary {model} --env {env} --percent 100"
    except GitOpsError as exc:
        raise CanaryChangeError(str(exc)) from exc
    version = result.candidate.model_version
    message = (
        f"{result.verdict.capitalize()} {model} v{version} in {env}: {result.reason}\n\n"
        f"{result.candidate.label} against {result.baseline.label} on {result.n_targets} "
        f"target times, {result.n_series} series. Prepared by `tsops monitor canary --apply` "
        f"(the change `{command}` makes)."
    )
    branch = f"canary/{model}-{env}-{result.verdict}-v{version}"
    return CanaryChange(branch, message, command, edits)


def apply_change(root: Path, change: CanaryChange, remote: str | None = "origin") -> dict[str, Any]:
    """Commit ``change`` on its own branch (``tsops.core.git.commit_on_branch``: refused
    over uncommitted changes); the checkout stays where it was. Returns the branch,
    whether it was created now (False: it existed, nothing new), the command the change
    equals and the files it wrote."""
    from tsops.core.git import commit_on_branch
    from tsops.deploy.gitops import apply
    from tsops.deploy.overlays import GitOpsError

    written: list[Path] = []

    def write() -> list[Path]:
        try:
            written.extend(apply(change.edits))
        except GitOpsError as exc:
            raise CanaryChangeError(str(exc)) from exc
        return written

    created = commit_on_branch(
        Path(root), change.branch, change.message, write, stay=False, remote=remote
    )
    return {
        "branch": change.branch,
        "created": created,
        "command": change.command,
        "files": [str(Path(p).relative_to(root)) for p in written],
    }
