"""The GitOps commands: each computes its edits of the overlays first, then writes them
all; Argo CD applies what git holds. A GitOpsError is raised while computing, so it
always means that no file changed (it says so itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsops.core.errors import fail, reports_errors
from tsops.core.options import Env, ModelName, Root

commands = typer.Typer()


def _write(edits: list) -> None:
    """Write the computed edits all at once and say which files changed."""
    from tsops.deploy.gitops import apply

    for path in apply(edits):
        typer.echo(f"wrote {path}")


@commands.command()
@reports_errors
def reviewed(
    model: ModelName,
    commit: Annotated[str, typer.Option("--commit", help="the release's commit (tag)")] = "HEAD",
    main: Annotated[
        str | None,
        typer.Option("--main", help="branch the commit must be on, e.g. origin/main"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the answer as JSON")] = None,
    root: Root = Path("."),
) -> None:
    """The registered version that the pull request's training produced for a commit.

    Matched by the commit's data hash and dvc.lock entries, registered from the commit or
    an ancestor with its gate passed: what release.yml bakes into the image, so a tag
    ships the model the pull request reviewed instead of training again.
    """
    from tsops.core.io import write_json
    from tsops.core.settings import load_settings
    from tsops.registry.client import connect
    from tsops.registry.releases import reviewed_version

    client = connect(root, load_settings().mlflow_tracking_uri)
    found = reviewed_version(client, root, model, commit, main)
    answer = {
        "name": model,
        "version": str(found.version),
        "git_commit": found.tags.get("tsops.git_commit"),
        "data_md5": found.tags.get("tsops.data_dvc_md5"),
        "run_id": found.run_id,
    }
    if out is not None:
        write_json(answer, out)
    typer.echo(
        f"{model}: version {answer['version']} (trained at {answer['git_commit']}, "
        f"data {answer['data_md5']}) is what {commit} releases"
    )


@commands.command()
@reports_errors
def release(
    model: ModelName,
    version: Annotated[str, typer.Argument(help="release version X.Y.Z (git tag <model>/vX.Y.Z)")],
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="registry version (default: the challenger's)"),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="image repository the release was pushed to, without tag "
            "(e.g. ghcr.io/acme/tsops-serving; default: the one the overlay pins)",
        ),
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option(
            "--digest",
            help="the pushed image's digest, sha256:... (required outside local: staging "
            "and production pin images by digest)",
        ),
    ] = None,
    env: Env = "staging",
    root: Root = Path("."),
) -> None:
    """Point the staging overlay at a registered version built into an image (by digest),
    with its lineage as annotations; the registry records the release and moves
    ``challenger`` to it."""
    from tsops.core.settings import load_settings
    from tsops.deploy.gitops import release_edits, release_pin
    from tsops.deploy.pins import parse_release
    from tsops.registry.client import connect
    from tsops.registry.releases import record_release, release_lineage

    # before asking the registry: a typo should not wait for it
    pin = release_pin(root, model, version, env=env, image=image, digest=digest)
    client = connect(root, load_settings().mlflow_tracking_uri)
    found, lineage = release_lineage(client, model, model_version)
    edits = release_edits(root, model, version, found, lineage, env=env, image=image, digest=digest)
    # The registry first: if it refuses, no file has changed yet.
    record_release(client, model, found, f"{model}/v{parse_release(version)}", pin.ref)
    _write(edits)


@commands.command()
@reports_errors
def promote(
    model: ModelName,
    source: Annotated[str, typer.Option("--from", help="environment to copy from")] = "staging",
    target: Annotated[str, typer.Option("--to", help="environment to copy to")] = "production",
    canary: Annotated[
        int | None, typer.Option("--canary", help="start as a canary with this traffic %")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Copy a release from one overlay to the next (the promotion pull request's change):
    all traffic at once, or with --canary a share while the current release keeps the rest."""
    from tsops.deploy.gitops import promote_edits

    _write(promote_edits(root, model, source, target, canary))


@commands.command("canary")
@reports_errors
def canary_cmd(
    model: ModelName,
    percent: Annotated[int, typer.Option("--percent", help="0 rolls back, 100 promotes fully")],
    env: Env = "production",
    branch: Annotated[
        bool,
        typer.Option(
            "--branch",
            help="commit the change on a new branch canary/<model>-<env>-<percent> and go "
            "back to where HEAD was (what scripts/canary.sh prepares for its pull request)",
        ),
    ] = False,
    root: Root = Path("."),
) -> None:
    """Set the canary's traffic share of an unfinished canary in an overlay (git owns it;
    Argo CD applies it on sync). scripts/canary.sh also patches the live object."""
    from tsops.deploy.gitops import apply, canary_edits

    edits = canary_edits(root, model, env, percent)
    if not branch:
        _write(edits)
        return
    from tsops.core.git import commit_on_branch

    name = f"canary/{model}-{env}-{percent}"
    message = f"Canary of {model} in {env}: {percent}%"
    created = commit_on_branch(root, name, message, lambda: apply(edits), stay=False)
    typer.echo(f"{name}: {'prepared' if created else 'exists already, nothing new'}")


@commands.command()
@reports_errors
def ab(
    model: ModelName,
    weights: Annotated[str, typer.Option("--weights", help="e.g. current=70,candidate=30")],
    candidate: Annotated[
        str | None,
        typer.Option(
            "--candidate",
            help="release to compare with, <model>/vX.Y.Z (its image digest and registry "
            "version come from the registry, where `tsops release` recorded them)",
        ),
    ] = None,
    env: Env = "production",
    root: Root = Path("."),
) -> None:
    """Switch the A/B split on in an overlay: pin the candidate release, set the Splitter
    weights (sum 100)."""
    from tsops.deploy.gitops import ab_edits, parse_weights

    pinned = None
    if candidate is not None:
        from tsops.core.settings import load_settings
        from tsops.registry.client import connect
        from tsops.registry.releases import find_release

        parse_weights(weights)  # a typo should not wait for the registry
        client = connect(root, load_settings().mlflow_tracking_uri)
        pinned = (candidate, *find_release(client, model, candidate))
    _write(ab_edits(root, model, env, weights, candidate=pinned))


@commands.command("sync-champion")
@reports_errors
def sync_champion(
    model: Annotated[
        str | None,
        typer.Argument(help="registered model (default: the one production serves)"),
    ] = None,
    root: Root = Path("."),
) -> None:
    """Point the registry's champion at the version production serves according to git.

    That is the release the production overlay pins, or, while it has a canary (also 0
    after a rollback), the release it replaced, which takes the rest of the traffic.
    CI runs it when an overlay change reaches main (.github/workflows/champion.yml).
    """
    from tsops.core.settings import load_settings
    from tsops.deploy.served import serving
    from tsops.registry.client import connect
    from tsops.registry.versions import follow_git

    production = serving(root, "production")
    if model is not None and model != production.model:
        fail(f"production serves {production.model!r}, not {model!r}")
    where = f"git's production overlay serves {production.stable_release}"
    client = connect(root, load_settings().mlflow_tracking_uri)
    before = follow_git(client, production.model, "champion", production.stable_version, where)
    moved = "stays on" if before == production.stable_version else "->"
    typer.echo(
        f"{production.model}: champion {moved} version {production.stable_version} "
        f"({production.describe()})"
    )


@commands.command()
@reports_errors
def rollback(model: ModelName, env: Env = "production", root: Root = Path(".")) -> None:
    """Send all traffic back to the release the current one replaced: canary 0 during a
    canary, else (or run again after that) pin the previous release again."""
    from tsops.deploy.gitops import rollback_edits

    _write(rollback_edits(root, model, env))
