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

    removed = {e.path for e in edits if e.text is None}
    for path in apply(edits):
        typer.echo(f"{'removed' if path in removed else 'wrote'} {path}")


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
    weights: Annotated[
        str, typer.Option("--weights", help="e.g. current=70,candidate=30 (third=.. with --third)")
    ],
    candidate: Annotated[
        str | None,
        typer.Option(
            "--candidate",
            help="release to compare with, <model>/vX.Y.Z (its image digest and registry "
            "version come from the registry, where `tsops release` recorded them)",
        ),
    ] = None,
    third: Annotated[
        str | None,
        typer.Option("--third", help="a third release as the arm `third`, <model>/vX.Y.Z"),
    ] = None,
    bandit: Annotated[
        bool,
        typer.Option(
            "--bandit",
            help="run the split as a multi-armed bandit: `tsops bandit` moves its weights "
            "within the policy below (kept in ab-weights.yaml)",
        ),
    ] = False,
    floor: Annotated[
        float, typer.Option("--floor", help="bandit: minimum share of every arm")
    ] = 0.10,
    max_step: Annotated[
        float, typer.Option("--max-step", help="bandit: largest change of a share per update")
    ] = 0.20,
    min_scored: Annotated[
        int,
        typer.Option("--min-scored", help="bandit: scored forecasts every arm needs to move"),
    ] = 60,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="bandit: arms within this fraction of the best mean loss share the win "
            "(default: tsops bandit's)",
        ),
    ] = None,
    env: Env = "production",
    root: Root = Path("."),
) -> None:
    """Switch the A/B split on in an overlay: pin the candidate (and a third) release, set
    the Splitter weights (sum 100); with --bandit, as a multi-armed bandit."""
    from tsops.deploy.gitops import ab_edits, parse_weights

    parse_weights(weights)  # a typo should not wait for the registry
    pinned = None if candidate is None else _from_registry(root, model, candidate)
    pinned_third = None if third is None else _from_registry(root, model, third)
    policy = (
        {"floor": floor, "max_step": max_step, "min_scored": min_scored, "margin": margin}
        if bandit
        else None
    )
    _write(ab_edits(root, model, env, weights, candidate=pinned, third=pinned_third, policy=policy))


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
    after a rollback), the release it replaced, which takes the rest of the traffic; in
    blue/green the live colour's release. CI runs it when an overlay change reaches main
    (.github/workflows/champion.yml).
    """
    from tsops.core.settings import load_settings
    from tsops.deploy.served import serving
    from tsops.deploy.strategies import traffic_strategy
    from tsops.registry.client import connect
    from tsops.registry.versions import follow_git

    production = serving(root, "production")
    if model is not None and model != production.model:
        fail(f"production serves {production.model!r}, not {model!r}")
    traffic = traffic_strategy(root, "production")
    if traffic.kind == "bluegreen":
        live = traffic.arm(traffic.baseline)
        release, version = live.release, live.model_version
        describe = f"production runs blue/green, {live.name} live: {release} (version {version})"
    else:
        release, version = production.stable_release, production.stable_version
        describe = production.describe()
    where = f"git's production overlay serves {release}"
    client = connect(root, load_settings().mlflow_tracking_uri)
    before = follow_git(client, production.model, "champion", version, where)
    moved = "stays on" if before == version else "->"
    typer.echo(f"{production.model}: champion {moved} version {version} ({describe})")


def _from_registry(root: Path, model: str, release: str) -> tuple[str, str, str]:
    """(release, registry version, image ref) of a release `tsops release` recorded."""
    from tsops.core.settings import load_settings
    from tsops.deploy.pins import parse_release
    from tsops.registry.client import connect
    from tsops.registry.releases import find_release

    name, sep, semver = release.rpartition("/v")
    if not sep or name != model:
        from tsops.deploy.overlays import GitOpsError

        raise GitOpsError(f"release {release!r} is not a release of {model}: <model>/vX.Y.Z")
    parse_release(semver)  # a typo should not wait for the registry
    client = connect(root, load_settings().mlflow_tracking_uri)
    return (release, *find_release(client, model, release))


def _write_or_branch(root: Path, edits: list, branch: str | None, message: str) -> None:
    if branch is None:
        _write(edits)
        return
    from tsops.core.git import commit_on_branch
    from tsops.deploy.gitops import apply

    created = commit_on_branch(root, branch, message, lambda: apply(edits), stay=False)
    typer.echo(f"{branch}: {'prepared' if created else 'exists already, nothing new'}")


@commands.command()
@reports_errors
def bluegreen(
    model: ModelName,
    release: Annotated[
        str | None,
        typer.Option(
            "--release",
            help="pin the idle colour to this release, <model>/vX.Y.Z (digest and registry "
            "version from the registry); the first time, switch blue/green on with it as green",
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="switch all users to this colour: blue or green")
    ] = None,
    off: Annotated[
        bool, typer.Option("--off", help="end blue/green (blue live): blue serves on alone")
    ] = False,
    env: Env = "production",
    branch: Annotated[
        bool,
        typer.Option(
            "--branch",
            help="commit the change on a new branch bluegreen/<model>-<env>-<colour or "
            "release> and go back to where HEAD was (what scripts/bluegreen.sh prepares)",
        ),
    ] = False,
    root: Root = Path("."),
) -> None:
    """Blue/green: pin the idle colour (--release), or switch every user to one colour
    (--to); the switch changes no InferenceService, so it is instant both ways."""
    from tsops.deploy import bluegreen as bg

    if [release is not None, to is not None, off].count(True) != 1:
        fail(
            "give one of --release <model>/vX.Y.Z (pin the idle colour), --to blue|green "
            "(switch) or --off (end blue/green on blue)"
        )
    if off:
        _write(bg.off_edits(root, model, env))
        return
    if to is not None:
        edits = bg.switch_edits(root, model, env, to)
        name, message = (
            f"bluegreen/{model}-{env}-{to}",
            f"Blue/green of {model} in {env}: {to} live",
        )
    else:
        assert release is not None
        pinned = _from_registry(root, model, release)
        edits = bg.release_edits(root, model, env, *pinned)
        semver = release.rpartition("/")[2]
        name = f"bluegreen/{model}-{env}-{semver}"
        message = f"Blue/green of {model} in {env}: {release} on the idle colour"
    _write_or_branch(root, edits, name if branch else None, message)


@commands.command()
@reports_errors
def shadow(
    model: ModelName,
    release: Annotated[
        str | None,
        typer.Option(
            "--release",
            help="run this release, <model>/vX.Y.Z, as the shadow (digest and registry "
            "version from the registry)",
        ),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="stop the shadow")] = False,
    env: Env = "production",
    root: Root = Path("."),
) -> None:
    """Run a release as the shadow of an environment: it gets a copy of every request the
    main InferenceService answers, users only get the main one's answers."""
    from tsops.deploy import shadow as sh

    if (release is None) == (not off):
        fail("give one of --release <model>/vX.Y.Z or --off")
    if off:
        _write(sh.off_edits(root, model, env))
        return
    assert release is not None
    _write(sh.start_edits(root, model, env, *_from_registry(root, model, release)))


@commands.command()
@reports_errors
def rollback(model: ModelName, env: Env = "production", root: Root = Path(".")) -> None:
    """Send all traffic back to the release the current one replaced: canary 0 during a
    canary, else (or run again after that) pin the previous release again."""
    from tsops.deploy.gitops import rollback_edits

    _write(rollback_edits(root, model, env))
