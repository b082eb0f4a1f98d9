"""The ``tsops`` command line: thin wrappers that DVC stages, workflows and people call."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="tsops: continuous training and online inference of time-series models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_subcommands() -> None:
    from tsops.manifests import manifests_app
    from tsops.monitor.cli import monitor_app, retrain_command

    app.add_typer(manifests_app, name="manifests")
    app.add_typer(monitor_app, name="monitor")
    app.command("retrain")(retrain_command)


Root = Annotated[
    Path, typer.Option("--root", help="repository root (holds models/, data/, artifacts/)")
]
ModelName = Annotated[str, typer.Argument(help="model folder name under models/")]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--n-jobs",
        help="local worker processes (-1: all cores; default from TSOPS_N_JOBS or all)",
    ),
]
Cluster = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDRESS",
        help="Dask scheduler to fit on, e.g. tcp://tsops-dask-scheduler.tsops.svc:8786 "
        "(default: TSOPS_DASK_SCHEDULER; neither: local processes)",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Known failures become one readable message and a non-zero exit, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:
            # Imported only now: the forecasters alone take seconds to import, which the
            # commands that never load them (the GitOps ones) should not pay for.
            from tsops.config import ConfigError
            from tsops.forecasters.base import ForecastError
            from tsops.parallel import ClusterError
            from tsops.registry import RegistryError
            from tsops.validate import ValidationError

            if isinstance(exc, ValidationError):
                _fail(f"validation failed, nothing was written:\n{exc}")
            known = (ConfigError, ForecastError, RegistryError, ClusterError, FileNotFoundError)
            if isinstance(exc, known):
                _fail(str(exc))
            raise

    return wrapper


@contextlib.contextmanager
def _fitting(cluster: str | None) -> Iterator[Any]:
    """Fit on the Dask cluster named by ``--cluster`` or TSOPS_DASK_SCHEDULER (local
    processes if neither), with progress on stderr; yields the progress sink."""
    from tsops import progress
    from tsops.parallel import use_cluster

    with (
        use_cluster(cluster) as client,
        progress.reporting(progress.sink_for(sys.stderr)) as sink,
    ):
        if client is not None:
            threads = client.nthreads()
            sink.message(
                f"fitting on the Dask cluster at {client.scheduler.address} "
                f"({len(threads)} workers, {sum(threads.values())} threads)"
            )
        yield sink


def _summary_table(candidates: dict[str, dict]) -> str:
    """``tsops backtest``'s closing table: time, rate and accuracy per candidate."""

    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"{'candidate':<20} {'series':>7} {'fit+fcst s':>10} {'series/s':>9} "
        f"{'sMAPE':>7} {'MASE':>7}"
    ]
    for name, row in candidates.items():
        lines.append(
            f"{name:<20} {row['series']:>7,} {row['seconds']:>10.1f} "
            f"{number(row['series_per_s'], ',.1f'):>9} {number(row['smape'], '.2f'):>7} "
            f"{number(row['mase'], '.3f'):>7}"
        )
    return "\n".join(lines)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    import os

    # progress bars of artifact downloads would drown the command's own output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command("models")
@handles_errors
def models_cmd(root: Root = Path(".")) -> None:
    """List the model folders and what each declares."""
    from tsops.config import list_models, load_model_config

    for name in list_models(root / "models"):
        config = load_model_config(root / "models", name)
        typer.echo(
            f"{name:<24} freq={config.freq:<4} h={config.horizon:<3} "
            f"candidates={','.join(config.candidates)} rule={config.selection.rule}"
        )


@app.command()
@handles_errors
def ingest(
    model: Annotated[str | None, typer.Argument(help="model folder; omit with --all")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="ingest every model folder")] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="CSV or Parquet to read instead of model.yaml's source"),
    ] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="column naming the series")] = None,
    time_col: Annotated[str | None, typer.Option("--time-col", help="timestamp column")] = None,
    target_col: Annotated[str | None, typer.Option("--target-col", help="value column")] = None,
    fill: Annotated[
        str | None, typer.Option("--fill", help="fill gaps: none, ffill, interpolate or zero")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write here instead of data/<model>/")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Read a model's source, validate it and write data/<model>/series.parquet.

    Same input gives the same bytes, so the DVC hash of data/ is stable. Nothing is
    written if validation fails.
    """
    from tsops import steps
    from tsops.config import list_models

    if all_models == (model is not None):
        _fail("name one model or pass --all")
    names = list_models(root / "models") if all_models else [model]
    for name in names:
        report = steps.ingest(root, name, file, id_col, time_col, target_col, fill, out)
        typer.echo(
            f"{name}: {report['n_series']} series, {report['n_observations']} rows "
            f"{report['start']}..{report['end']} -> {report['path']}"
        )


@app.command()
@handles_errors
def validate(
    model: ModelName,
    data: Annotated[
        Path | None, typer.Option(help="file to check instead of data/<model>/")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Check a model's data: duplicates, gaps, NaN, types, lengths (first pipeline stage)."""
    from tsops import steps

    report = steps.validate(root, model, data)
    typer.echo(f"{model}: valid, {report['n_series']} series, {report['n_observations']} rows")


@app.command()
@handles_errors
def backtest(
    model: ModelName, n_jobs: Jobs = None, cluster: Cluster = None, root: Root = Path(".")
) -> None:
    """Rolling-origin backtest of every candidate, then the selection rule.

    Shows progress on stderr and ends with a table of time, series/s, sMAPE and MASE
    per candidate.
    """
    from tsops import steps

    with _fitting(cluster) as sink:
        result = steps.backtest(root, model, n_jobs, progress=sink.message)
    typer.echo(_summary_table(result["candidates"]))
    typer.echo(
        f"{model}: rule {result['rule']}, members {', '.join(result['members'])} "
        f"({result['seconds']:.1f} s)"
    )


@app.command()
@handles_errors
def train(
    model: ModelName, n_jobs: Jobs = None, cluster: Cluster = None, root: Root = Path(".")
) -> None:
    """Fit the selected model on all data; save it under artifacts/<model>/model/."""
    from tsops import steps

    with _fitting(cluster):
        result = steps.train(root, model, n_jobs)
    typer.echo(
        f"{model}: trained {result['rule']} of {', '.join(result['members'])} "
        f"(cutoff {result['cutoff']})"
    )


@app.command()
@handles_errors
def evaluate(model: ModelName, root: Root = Path(".")) -> None:
    """Write metrics.json and plots from the backtest (for dvc metrics/plots)."""
    from tsops import steps

    doc = steps.evaluate_step(root, model)
    sel = doc["selected"]
    typer.echo(
        f"{model}: MASE {sel['mase']:.4f} sMAPE {sel['smape']:.2f} "
        f"RMSSE {sel['rmsse']:.4f} skill vs naive {doc['skill_vs_naive']:.1%}"
    )


@app.command()
@handles_errors
def gate(
    model: ModelName,
    no_champion: Annotated[
        bool, typer.Option("--no-champion", help="skip the comparison with the registry's champion")
    ] = False,
    cluster: Cluster = None,
    root: Root = Path("."),
) -> None:
    """Compare the candidate with seasonal naive and the champion; exit 1 when it fails.

    The champion's method is backtested again on today's data (on --cluster if given).
    """
    from tsops import steps

    with _fitting(cluster):
        result = steps.gate(root, model, against_champion=not no_champion)
    typer.echo(result.table())
    if not result.passed:
        raise typer.Exit(1)


@app.command()
@handles_errors
def register(
    model: ModelName,
    alias: Annotated[str, typer.Option(help="alias to set when the gate passes")] = "challenger",
    no_alias: Annotated[
        bool,
        typer.Option(
            "--no-alias",
            help="register without moving any alias (a pull request's reviewed model, "
            "which its release ships later)",
        ),
    ] = False,
    cluster: Cluster = None,
    root: Root = Path("."),
) -> None:
    """Log the trained model to MLflow, register a version, set the alias if the gate passes."""
    from tsops import steps

    with _fitting(cluster):
        registered, result = steps.register(root, model, None if no_alias else alias)
    typer.echo(result.table())
    state = "already registered as" if registered.reused else "registered"
    typer.echo(f"{model}: {state} version {registered.version} (run {registered.run_id})")
    if not result.passed:
        moved = "no alias set" if no_alias else f"alias {alias} not moved"
        typer.echo(f"{model}: gate failed, {moved}", err=True)
        raise typer.Exit(1)
    if not no_alias:
        typer.echo(f"{model}: alias {alias} -> version {registered.version}")


@app.command()
@handles_errors
def alias(
    model: ModelName,
    name: Annotated[str, typer.Argument(help="alias, e.g. champion or challenger")],
    version: Annotated[str, typer.Argument(help="registered version number")],
    root: Root = Path("."),
) -> None:
    """Point an alias at a version (promotion, or rollback of the champion)."""
    from tsops.registry import set_alias

    set_alias(root, model, name, version)
    typer.echo(f"{model}: alias {name} -> version {version}")


@app.command()
@handles_errors
def versions(model: ModelName, root: Root = Path(".")) -> None:
    """List registered versions with aliases, gate result and lineage."""
    from tsops.registry import versions_table

    table = versions_table(root, model)
    typer.echo(table.to_string(index=False) if not table.empty else f"{model}: no versions")


@app.command()
@handles_errors
def predict(
    model: ModelName,
    alias_name: Annotated[str | None, typer.Option("--alias", help="registry alias")] = None,
    version: Annotated[str | None, typer.Option("--version", help="registry version")] = None,
    series: Annotated[
        list[str] | None, typer.Option("--series", help="series id (repeatable)")
    ] = None,
    h: Annotated[int | None, typer.Option("--h", help="horizon (default: the model's)")] = None,
    level: Annotated[list[float] | None, typer.Option("--level", help="interval level")] = None,
    root: Root = Path("."),
) -> None:
    """Load a model from the MLflow registry and print its forecast."""
    import pandas as pd

    from tsops.registry import load_registered

    if alias_name is None and version is None:
        alias_name = "challenger"
    pyfunc, ref = load_registered(root, model, alias_name, version)
    ids = series or _example_ids(pyfunc)
    params: dict[str, Any] = {}
    if h is not None:
        params["h"] = h
    if level:
        params["level"] = level
    forecast = pyfunc.predict(pd.DataFrame({"unique_id": ids}), params=params or None)
    typer.echo(f"forecast from {ref}:")
    with pd.option_context("display.width", 160, "display.max_rows", 60):
        typer.echo(forecast.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def serve(ctx: typer.Context) -> None:
    """Start the KServe model server (V1 + V2 protocols) on registered or local models.

    Takes kserve's own flags plus --model [NAME=]REF (repeatable), --http_host
    (default 127.0.0.1), --forecast_log_dir; run `tsops serve --help` for all of them.
    """
    from tsops.serving.server import main as serve_main

    serve_main(list(ctx.args))


@app.command()
@handles_errors
def export(
    reference: Annotated[
        str, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>")
    ],
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    root: Root = Path("."),
) -> None:
    """Copy a registered model into a directory with release.json (to bake into an image)."""
    from tsops.serving.loader import ModelLoadError, export_model

    try:
        release = export_model(reference, out, root)
    except ModelLoadError as exc:
        _fail(str(exc))
    typer.echo(f"exported {release['name']} version {release['version']} -> {out}")


@app.command()
@handles_errors
def forecast(
    model: Annotated[
        str, typer.Option("--model", help="models:/<name>/<version>, @alias or a model directory")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet (or .csv) file to write")],
    h: Annotated[int | None, typer.Option("--h", help="horizon (default: the model's)")] = None,
    level: Annotated[list[float] | None, typer.Option("--level", help="interval level")] = None,
    root: Root = Path("."),
) -> None:
    """Batch forecasts of every series (the CronJob's job), same schema as the online answer."""
    from tsops.serving.batch import batch_forecast
    from tsops.serving.loader import ModelLoadError

    try:
        frame = batch_forecast(model, out, h=h, levels=level, tracking_root=root)
    except ModelLoadError as exc:
        _fail(str(exc))
    typer.echo(f"{frame['unique_id'].nunique()} series x {frame['step'].max()} steps -> {out}")


Env = Annotated[str, typer.Option("--env", help="overlay: local, staging or production")]


def _checked(fn: Callable[[], Any]) -> Any:
    """``fn()``, or exit with its GitOpsError and the assurance that nothing was written
    (every gitops function computes before anything is written)."""
    from tsops.gitops import GitOpsError

    try:
        return fn()
    except GitOpsError as exc:
        _fail(f"{exc} (no file changed)")


def _gitops(edits_fn: Callable[[], list]) -> None:
    """Compute every edit, then write them all; any error writes nothing."""
    from tsops.gitops import apply

    for path in apply(_checked(edits_fn)):
        typer.echo(f"wrote {path}")


@app.command()
@handles_errors
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
    from tsops.io import write_json
    from tsops.registry import reviewed_version

    found = reviewed_version(root, model, commit, main)
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


@app.command()
@handles_errors
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
    from tsops.gitops import apply, parse_release, release_edits, release_pin
    from tsops.registry import record_release, release_lineage

    # before asking the registry: a typo should not wait for it
    pin = _checked(lambda: release_pin(root, model, version, env=env, image=image, digest=digest))
    found, lineage = release_lineage(root, model, model_version)
    edits = _checked(
        lambda: release_edits(
            root, model, version, found, lineage, env=env, image=image, digest=digest
        )
    )
    # The registry first: if it refuses, no file has changed yet.
    record_release(root, model, found, f"{model}/v{parse_release(version)}", pin.ref)
    for path in apply(edits):
        typer.echo(f"wrote {path}")


@app.command()
@handles_errors
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
    from tsops.gitops import promote_edits

    _gitops(lambda: promote_edits(root, model, source, target, canary))


@app.command("canary")
@handles_errors
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
    from tsops.gitops import apply, canary_edits

    if not branch:
        _gitops(lambda: canary_edits(root, model, env, percent))
        return
    from tsops.monitor.branches import BranchError, commit_on_branch

    edits = _checked(lambda: canary_edits(root, model, env, percent))
    name = f"canary/{model}-{env}-{percent}"
    try:
        created = commit_on_branch(
            root,
            name,
            f"Canary of {model} in {env}: {percent}%",
            lambda: apply(edits),
            stay=False,
        )
    except BranchError as exc:
        _fail(f"{exc} (no branch created)")
    typer.echo(f"{name}: {'prepared' if created else 'exists already, nothing new'}")


@app.command()
@handles_errors
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
    from tsops.gitops import ab_edits, parse_weights

    pinned = None
    if candidate is not None:
        from tsops.registry import find_release

        _checked(lambda: parse_weights(weights))  # a typo should not wait for the registry
        pinned = (candidate, *find_release(root, model, candidate))
    _gitops(lambda: ab_edits(root, model, env, weights, candidate=pinned))


@app.command("sync-champion")
@handles_errors
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
    from tsops.gitops import GitOpsError, serving
    from tsops.registry import follow_git

    try:
        production = serving(root, "production")
    except GitOpsError as exc:
        _fail(str(exc))
    if model is not None and model != production.model:
        _fail(f"production serves {production.model!r}, not {model!r}")
    where = f"git's production overlay serves {production.stable_release}"
    before = follow_git(root, production.model, "champion", production.stable_version, where)
    moved = "stays on" if before == production.stable_version else "->"
    typer.echo(
        f"{production.model}: champion {moved} version {production.stable_version} "
        f"({production.describe()})"
    )


@app.command()
@handles_errors
def rollback(model: ModelName, env: Env = "production", root: Root = Path(".")) -> None:
    """Send all traffic back to the release the current one replaced: canary 0 during a
    canary, else (or run again after that) pin the previous release again."""
    from tsops.gitops import rollback_edits

    _gitops(lambda: rollback_edits(root, model, env))


def _example_ids(pyfunc) -> list[str]:
    example = pyfunc.input_example
    return list(example["unique_id"]) if example is not None else []


_mount_subcommands()

if __name__ == "__main__":
    app()
