"""``tsops bandit``: new weights for the bandit git runs, from the realized error of its arms.

Reads the arms, their weights and the policy from git (``tsops.deploy.strategies``),
scores the forecast log against the actuals as ``tsops monitor canary`` does, decides
(``tsops.monitor.bandit.decide_weights``) and prints the weights with the evidence as
JSON. The change is computed before anything is written (``weights_edits``), then
written to the overlay, or committed on a branch of its own for a pull request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tsops.core.errors import reports_errors
from tsops.core.options import Env, ModelName, Root
from tsops.monitor.options import Actuals, LogDir, Now, Out, Since, Until

if TYPE_CHECKING:
    from tsops.deploy.strategies import Strategy
    from tsops.monitor.bandit import BanditDecision

commands = typer.Typer()


def bandit_strategy(root: Path, model: str, env: str) -> Strategy:
    """The bandit ``env`` runs for ``model``; MonitorError saying what runs instead."""
    from tsops.deploy.overlays import GitOpsError
    from tsops.deploy.strategies import live_strategies
    from tsops.monitor.errors import MonitorError

    try:
        strategies = live_strategies(Path(root), env)
    except GitOpsError as exc:
        raise MonitorError(str(exc)) from exc
    for strategy in strategies:
        if strategy.kind == "bandit":
            if strategy.model != model:
                raise MonitorError(
                    f"the bandit in {env} serves {strategy.model}, not {model}: run "
                    f"`tsops bandit {strategy.model} --env {env}`"
                )
            return strategy
    running = ", ".join(s.kind for s in strategies)
    raise MonitorError(
        f"{env} runs no bandit for {model} (it runs: {running}); start one with `tsops ab "
        f"{model} --env {env} --candidate {model}/vX.Y.Z --weights current=50,candidate=50 "
        "--bandit` (a Splitter whose policy is kept beside its weights), then run this again"
    )


@commands.command("bandit")
@reports_errors
def bandit(
    model: ModelName,
    env: Env = "production",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="print the new weights and the evidence; write nothing"),
    ] = False,
    branch: Annotated[
        bool,
        typer.Option(
            "--branch",
            help="commit the new weights on a branch bandit/<model>-<env>-<arm><percent>-... "
            "and go back to where HEAD was, ready to open as a pull request (refused while "
            "tracked files have uncommitted changes)",
        ),
    ] = False,
    floor: Annotated[
        float | None,
        typer.Option("--floor", help="minimum share of every arm, e.g. 0.1 (default: git's)"),
    ] = None,
    max_step: Annotated[
        float | None,
        typer.Option(
            "--max-step", help="largest change of a share per update, e.g. 0.2 (default: git's)"
        ),
    ] = None,
    min_scored: Annotated[
        int | None,
        typer.Option(
            "--min-scored",
            help="scored forecasts every arm needs before the weights move (default: git's)",
        ),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="arms within this share of the best arm's MASE count as equally good "
            "(default 0.05)",
        ),
    ] = None,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    since: Since = None,
    until: Until = None,
    out: Out = None,
    root: Root = Path("."),
) -> None:
    """Move the traffic of the bandit in ENV toward the arm with the lower realized MASE.

    Thompson sampling over each arm's realized error (forecast log and actuals, scored
    as by `tsops monitor accuracy`), within the policy git holds beside the weights
    (exploration floor, max step per update, scored forecasts before any move; the
    options override it). Prints the decision as JSON on stdout (a summary on stderr):
    new and previous weights, whether they moved, why, and per arm the scored forecasts,
    target times, MASE and the probability of being best. Without --dry-run a move is
    written to the overlay (or, with --branch, committed on a branch); no move writes
    nothing. With --out, writes bandit.json and bandit_evidence.csv.
    """
    from tsops.core.io import write_json
    from tsops.core.settings import load_settings
    from tsops.monitor.bandit import BanditPolicy, decide_weights
    from tsops.monitor.errors import MonitorError
    from tsops.monitor.inputs import ROLE_LIVE
    from tsops.monitor.scoring import log_location, score, write_csv

    if dry_run and branch:
        raise MonitorError("--dry-run writes nothing and --branch commits: pass one of them")
    strategy = bandit_strategy(root, model, env)
    policy = BanditPolicy.from_dict(
        strategy.policy, floor=floor, max_step=max_step, min_scored=min_scored, margin=margin
    )
    arms = {a.name: a.model_version for a in strategy.arms if a.role == ROLE_LIVE}
    log_dir = log_location(root, log, load_settings())
    result = score(root, model, log_dir, actuals, now, since, until)
    typer.echo(result.summary().splitlines()[0], err=True)
    decision = decide_weights(result.scored, arms, strategy.weights, policy)
    typer.echo(decision.summary(), err=True)

    document: dict[str, Any] = {
        "model": model,
        "env": env,
        "arms": [_arm(a) for a in strategy.arms],
        **decision.to_dict(),
        "counts": result.counts,
        "dry_run": dry_run,
        "applied": None,
    }
    if decision.moved and not dry_run:
        document["applied"] = _write(root, model, env, decision, branch)
    if out is not None:
        write_json(document, out / "bandit.json")
        write_csv(decision.evidence, out / "bandit_evidence.csv")
    typer.echo(json.dumps(document, indent=2, allow_nan=False, default=str))


def _arm(arm: Any) -> dict[str, str]:
    return {k: getattr(arm, k) for k in ("name", "service", "release", "model_version")}


def _write(root: Path, model: str, env: str, decision: BanditDecision, branch: bool) -> dict:
    """Write the new weights (or commit them on a branch); say what was written."""
    from tsops.deploy.gitops import apply
    from tsops.deploy.strategies import weights_edits

    edits = weights_edits(root, model, env, decision.weights)
    if not branch:
        files = [str(Path(p).relative_to(Path(root).resolve())) for p in _resolved(apply(edits))]
        for path in files:
            typer.echo(f"wrote {path}", err=True)
        return {"files": files}
    from tsops.core.git import commit_on_branch
    from tsops.monitor.bandit import branch_name, commit_message

    name = branch_name(model, env, decision.weights)
    message = commit_message(model, env, decision)
    created = commit_on_branch(root, name, message, lambda: apply(edits), stay=False)
    typer.echo(f"{name}: {'prepared' if created else 'exists already, nothing new'}", err=True)
    return {"branch": name, "created": created}


def _resolved(paths: list[Path]) -> list[Path]:
    return [Path(p).resolve() for p in paths]
