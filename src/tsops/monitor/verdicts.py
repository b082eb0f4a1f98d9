"""A verdict for every strategy git runs in an environment, from the realized error.

Which strategies run comes from git (``tsops.deploy.strategies.live_strategies``); how
each is judged:

============  ===========================================  =============================
kind          compared (Diebold–Mariano, ``canary``)       a verdict asks for
============  ===========================================  =============================
canary        canary (live) against stable (live)          promote: canary 100 %;
                                                           rollback: ``tsops rollback``
ab            every other step (live) against the          rollback: the baseline step
              baseline step (live)                         takes 100 % (weights edit)
shadow        shadow (its copies, role shadow) against     nothing in git: a shadow
              the champion's live answers                  serves no user; the verdict
                                                           says whether to release it
bluegreen     the newer release's colour against the       rollback (newer colour live):
              older one's; the idle colour is scored on    switch back; promote (newer
              the shadow copies it gets                    colour idle): switch to it
bandit        ``tsops.monitor.bandit.decide_weights``      new Splitter weights
single        nothing to compare: its realized error       nothing
============  ===========================================  =============================

Both sides of a comparison forecast the same series and target times from the same
requests (a shadow copy is the same request), so neither is judged on easier data.

A ``rollback`` of what users get (canary, A/B, blue/green with the newer colour live) is
the exit condition (``ROLLBACK_EXIT``, 3), as for ``tsops monitor canary``; a shadow's
rollback is a report (users never saw its answers), a bandit's move is routine.

Decided first, then made: :func:`plan_changes` computes each verdict's GitOps change
(branch, message, edits) and writes nothing; :func:`apply_changes` commits each on its
branch (``tsops.monitor.canary_change.apply_change``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tsops.monitor.accuracy import json_value, with_role
from tsops.monitor.canary import LOSS_COL, CanaryResult, compare_versions
from tsops.monitor.canary_change import CanaryChange, CanaryChangeError
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import ROLE_COL, ROLE_LIVE, VERSION_COL

if TYPE_CHECKING:
    from tsops.deploy.strategies import Arm, Strategy
    from tsops.monitor.bandit import BanditDecision

#: strategies whose arms answer users (a shadow's never do)
USER_FACING = ("canary", "ab", "bluegreen", "bandit")
#: verdict -> the number published for it (tsops_monitor_verdict)
VERDICT_VALUES = {"rollback": -1, "hold": 0, "none": 0, "promote": 1, "move": 0, "stay": 0}


@dataclass(frozen=True)
class Options:
    """The Diebold–Mariano test's options (``tsops monitor canary`` spells them)."""

    alpha: float = 0.05
    margin: float = 0.02
    min_targets: int = 12
    power: float = 0.8


@dataclass(frozen=True)
class Verdict:
    """One strategy's verdict: one comparison (canary, shadow, blue/green, one A/B step
    against the baseline), a bandit's weights, or a single release's standing."""

    kind: str
    model: str
    env: str
    baseline: str  # arm name
    candidate: str | None  # arm name (None: single, bandit)
    verdict: str  # promote | hold | rollback (comparisons); move | stay (bandit); none
    reason: str
    #: the tsops command whose change the verdict asks for (None: nothing to change)
    command: str | None
    arms: tuple[dict[str, Any], ...]
    comparison: CanaryResult | None = field(default=None, repr=False)
    decision: BanditDecision | None = field(default=None, repr=False)
    change: CanaryChange | None = field(default=None, repr=False)
    applied: dict[str, Any] | None = None
    #: the candidate answers users (a canary, an A/B step, the live colour): not a
    #: shadow, not the idle colour
    candidate_serves: bool = False

    @property
    def user_facing(self) -> bool:
        return self.kind in USER_FACING

    @property
    def asks_rollback(self) -> bool:
        """The exit condition: users get answers from a release judged worse."""
        return self.candidate_serves and self.verdict == "rollback"

    @property
    def title(self) -> str:
        if self.candidate:
            return f"{self.kind}: {self.candidate} against {self.baseline}"
        return f"{self.kind}: {', '.join(a['arm'] for a in self.arms)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "model": self.model,
            "env": self.env,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "verdict": self.verdict,
            "reason": self.reason,
            "user_facing": self.user_facing,
            "candidate_serves": self.candidate_serves,
            "asks_rollback": self.asks_rollback,
            "command": self.command,
            "arms": [dict(a) for a in self.arms],
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "bandit": self.decision.to_dict() if self.decision else None,
            "change": None
            if self.change is None
            else {"branch": self.change.branch, "command": self.change.command},
            "applied": self.applied,
        }
        return out

    def to_markdown(self) -> str:
        rows = [
            f"| {a['arm']} | {a['release']} | v{a['model_version']} | {a['role']} "
            f"| {a['share']} % | {_num(a['realized_mase'])} | {a['scored']} |"
            for a in self.arms
        ]
        lines = [
            f"## {self.model} in {self.env}, {self.title}",
            "",
            f"**{self.verdict}**: {self.reason}",
            "",
            "| arm | release | version | role | share | realized MASE | scored |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
        if self.decision is not None:
            weights = ", ".join(
                f"{arm} {self.decision.previous.get(arm, 0)} % -> {pct} %"
                for arm, pct in self.decision.weights.items()
            )
            lines += ["", f"Weights: {weights}."]
        if self.comparison is not None:
            lines += ["", self.comparison.to_markdown().replace("### Canary:", "###")]
        if self.command:
            lines += ["", f"Change asked for: `{self.command}`."]
        if self.applied:
            state = "prepared" if self.applied.get("created") else "prepared earlier"
            lines += [f"Branch `{self.applied['branch']}` ({state})."]
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4f}"


@dataclass(frozen=True)
class Verdicts:
    """Every strategy's verdict in one environment, as one report."""

    model: str
    env: str
    verdicts: tuple[Verdict, ...]

    @property
    def rollback(self) -> bool:
        return any(v.asks_rollback for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "env": self.env,
            "rollback": self.rollback,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def to_markdown(self) -> str:
        head = [
            f"# Verdicts: {self.model} in {self.env}",
            "",
            "| strategy | compared | verdict | change |",
            "| --- | --- | --- | --- |",
            *[
                f"| {v.kind} | {v.title.split(': ', 1)[1]} | {v.verdict} "
                f"| {f'`{v.command}`' if v.command else '–'} |"
                for v in self.verdicts
            ],
        ]
        return "\n\n".join(["\n".join(head), *[v.to_markdown() for v in self.verdicts]])

    def summary(self) -> str:
        return "\n".join(f"{v.title}: {v.verdict} ({v.reason})" for v in self.verdicts)


# ------------------------------------------------------------------------------- judging


def judge(
    strategies: list[Strategy],
    scored: pd.DataFrame,
    by_version: pd.DataFrame,
    options: Options = Options(),
) -> Verdicts:
    """The verdicts of ``strategies`` (``live_strategies``: one model, one environment)
    from ``AccuracyResult.scored`` and ``.by_version`` of that model's forecast log."""
    if not strategies:
        raise MonitorError("no strategy to judge: live_strategies lists at least a single one")
    models = {s.model for s in strategies}
    envs = {s.env for s in strategies}
    if len(models) != 1 or len(envs) != 1:
        raise MonitorError(
            f"judge one model in one environment at a time, got {sorted(models)} in {sorted(envs)}"
        )
    scored = with_role(scored)
    out: list[Verdict] = []
    for strategy in strategies:
        out.extend(_judge_one(strategy, scored, by_version, options))
    return Verdicts(models.pop(), envs.pop(), tuple(out))


def _arm_rows(strategy: Strategy, by_version: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """Per arm: git's facts and its realized MASE over the forecasts of its role."""
    rows = []
    versions = by_version.assign(
        **{VERSION_COL: by_version[VERSION_COL].astype(str)},
        **{ROLE_COL: by_version.get(ROLE_COL, ROLE_LIVE)},
    )
    for arm in strategy.arms:
        mine = versions[
            (versions[VERSION_COL] == str(arm.model_version)) & (versions[ROLE_COL] == arm.role)
        ]
        # one version under two served names (champion, then stable): the one with more pairs
        best = mine.sort_values("n", ascending=False).head(1)
        rows.append(
            {
                "arm": arm.name,
                "service": arm.service,
                "release": arm.release,
                "model_version": str(arm.model_version),
                "role": arm.role,
                "share": int(arm.share),
                "realized_mase": json_value(float(best["mase"].iloc[0])) if len(best) else None,
                "scored": int(best["n"].iloc[0]) if len(best) else 0,
            }
        )
    return tuple(rows)


def _judge_one(
    strategy: Strategy, scored: pd.DataFrame, by_version: pd.DataFrame, options: Options
) -> list[Verdict]:
    arms = _arm_rows(strategy, by_version)
    common = {"kind": strategy.kind, "model": strategy.model, "env": strategy.env, "arms": arms}
    if strategy.kind == "single":
        return [
            Verdict(
                **common, baseline=strategy.baseline, candidate=None, verdict="none",
                reason="one release serves every request: nothing to compare", command=None,
            )
        ]  # fmt: skip
    if strategy.kind == "bandit":
        return [_bandit(strategy, scored, common)]
    if strategy.kind == "bluegreen":
        return [_bluegreen(strategy, scored, options, common)]
    baseline = strategy.arm(strategy.baseline)
    return [
        _compare(strategy, baseline, arm, scored, options, common)
        for arm in strategy.arms
        if arm.name != baseline.name
    ]


def _compare(
    strategy: Strategy,
    baseline: Arm,
    candidate: Arm,
    scored: pd.DataFrame,
    options: Options,
    common: dict[str, Any],
) -> Verdict:
    """Diebold–Mariano of ``candidate`` against ``baseline``, each on its role's records.

    No scored forecast of one side yet, or both arms on one version, is a hold with
    the reason, not an error: a strategy just started has nothing to judge.
    """
    names = {
        "baseline": baseline.name,
        "candidate": candidate.name,
        "candidate_serves": candidate.role == ROLE_LIVE and candidate.share > 0,
    }
    if str(baseline.model_version) == str(candidate.model_version):
        return Verdict(
            **common, **names, verdict="hold", command=None,
            reason=f"both arms serve model version {baseline.model_version}: nothing to compare",
        )  # fmt: skip
    for arm in (baseline, candidate):
        if not _has_scored(scored, arm):
            return Verdict(
                **common, **names, verdict="hold", command=None,
                reason=f"no scored {arm.role} forecast of {arm.name} ({arm.release}, "
                f"v{arm.model_version}) yet: its actuals have not arrived",
            )  # fmt: skip
    result = compare_versions(
        scored,
        str(baseline.model_version),
        str(candidate.model_version),
        alpha=options.alpha,
        margin=options.margin,
        min_targets=options.min_targets,
        power=options.power,
        baseline_role=baseline.role,
        candidate_role=candidate.role,
    )
    command = _command(strategy, result.verdict, candidate)
    return Verdict(
        **common, **names, verdict=result.verdict, reason=result.reason, command=command,
        comparison=result,
    )  # fmt: skip


def _has_scored(scored: pd.DataFrame, arm: Arm) -> bool:
    mine = (scored[VERSION_COL].astype(str) == str(arm.model_version)) & (
        scored[ROLE_COL] == arm.role
    )
    return bool(scored.loc[mine, LOSS_COL].notna().any())


def _command(strategy: Strategy, verdict: str, candidate: Arm) -> str | None:
    """The tsops command whose change a comparison's verdict asks for."""
    model, env = strategy.model, strategy.env
    if strategy.kind == "canary":
        return {
            "promote": f"tsops canary {model} --env {env} --percent 100",
            "rollback": f"tsops rollback {model} --env {env}",
        }.get(verdict)
    if strategy.kind == "ab" and verdict == "rollback":
        weights = ",".join(
            f"{a.name}={100 if a.name == strategy.baseline else 0}" for a in strategy.arms
        )
        return f"tsops ab {model} --env {env} --weights {weights}"
    return None


def _bluegreen(
    strategy: Strategy, scored: pd.DataFrame, options: Options, common: dict[str, Any]
) -> Verdict:
    """The newer release's colour against the older one's, whichever is live.

    Judging always in one direction keeps the verdict from flip-flopping: two equally
    good colours give "promote" (not worse) for the newer one, and only its being live
    or idle decides whether that asks for a switch.
    """
    older, newer = sorted(strategy.arms, key=lambda a: _version_key(a.model_version))
    verdict = _compare(strategy, older, newer, scored, options, common)
    live = strategy.arm(strategy.baseline)
    to = None
    if verdict.verdict == "rollback" and live.name == newer.name:
        to = older.name
    elif verdict.verdict == "promote" and live.name != newer.name:
        to = newer.name
    command = f"tsops bluegreen {strategy.model} --env {strategy.env} --to {to}" if to else None
    if verdict.verdict == "rollback" and to is None:
        # the worse release is the idle colour: users never got its answers
        reason = f"{verdict.reason}; {newer.name} is idle, so users are unaffected"
        return replace(verdict, reason=reason, command=None)
    return replace(verdict, command=command)


def _version_key(version: str) -> tuple[int, str]:
    text = str(version)
    return (int(text), "") if text.isdigit() else (-1, text)


def _bandit(strategy: Strategy, scored: pd.DataFrame, common: dict[str, Any]) -> Verdict:
    from tsops.monitor.bandit import BanditPolicy, decide_weights

    arms = {a.name: str(a.model_version) for a in strategy.arms if a.role == ROLE_LIVE}
    decision = decide_weights(
        scored, arms, dict(strategy.weights), BanditPolicy.from_dict(strategy.policy)
    )
    command = None
    if decision.moved:
        command = f"tsops bandit {strategy.model} --env {strategy.env}"
    return Verdict(
        **common, baseline=strategy.baseline, candidate=None,
        verdict="move" if decision.moved else "stay", reason=decision.reason, command=command,
        decision=decision,
    )  # fmt: skip


# ------------------------------------------------------------------------------- changes


def plan_changes(root: Path, verdicts: Verdicts) -> Verdicts:
    """Every verdict with the GitOps change it asks for (``change``), computed from the
    overlay and written nowhere; a bad overlay fails here (``CanaryChangeError``)."""
    planned = []
    for verdict in verdicts.verdicts:
        planned.append(replace(verdict, change=_plan(root, verdict)))
    return replace(verdicts, verdicts=tuple(planned))


def _plan(root: Path, verdict: Verdict) -> CanaryChange | None:
    from tsops.deploy.overlays import GitOpsError

    model, env = verdict.model, verdict.env
    try:
        if verdict.kind == "canary" and verdict.comparison is not None:
            from tsops.monitor.canary_change import plan_change

            return plan_change(root, model, env, verdict.comparison)
        if verdict.kind == "ab" and verdict.verdict == "rollback":
            from tsops.deploy.strategies import weights_edits

            weights = {a["arm"]: 100 if a["arm"] == verdict.baseline else 0 for a in verdict.arms}
            return _change(verdict, "ab", "rollback", weights_edits(root, model, env, weights))
        if verdict.kind == "bandit" and verdict.decision is not None and verdict.decision.moved:
            from tsops.deploy.strategies import weights_edits
            from tsops.monitor.bandit import branch_name

            weights = verdict.decision.weights
            change = _change(verdict, "bandit", "", weights_edits(root, model, env, weights))
            # `tsops bandit --branch`'s name: the same weights are one branch, whoever
            # prepared them first
            return replace(change, branch=branch_name(model, env, weights))
        if verdict.kind == "bluegreen" and verdict.command:
            from tsops.deploy.bluegreen import switch_edits

            colour = verdict.command.rsplit(" ", 1)[1]
            edits = switch_edits(root, model, env, colour)
            return _change(verdict, "bluegreen", f"to-{colour}", edits)
    except GitOpsError as exc:
        raise CanaryChangeError(str(exc)) from exc
    return None


def _change(verdict: Verdict, kind: str, what: str, edits: list) -> CanaryChange:
    versions = "-".join(f"v{a['model_version']}" for a in verdict.arms)
    branch = f"{kind}/{verdict.model}-{verdict.env}-{what}-{versions}"
    message = (
        f"{verdict.kind} {verdict.model} in {verdict.env}: {verdict.verdict}\n\n"
        f"{verdict.reason}\n\nPrepared by `tsops monitor verdicts --apply` (the change "
        f"`{verdict.command}` makes)."
    )
    return CanaryChange(branch, message, verdict.command or "", edits)


def apply_changes(root: Path, verdicts: Verdicts, remote: str | None = "origin") -> Verdicts:
    """Commit each planned change on its branch; the checkout stays where it was."""
    from tsops.monitor.canary_change import apply_change

    done = []
    for verdict in verdicts.verdicts:
        applied = None if verdict.change is None else apply_change(root, verdict.change, remote)
        done.append(replace(verdict, applied=applied))
    return replace(verdicts, verdicts=tuple(done))


# ------------------------------------------------------------------------------- numbers


def gauges(verdicts: Verdicts) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The verdicts as Prometheus samples: (labels, numbers) pairs for
    ``tsops.monitor.publish.publish_samples``.

    Per arm (labels model, env, strategy, arm, release, version, role):
    ``traffic_share`` (git's percent), ``arm_realized_mase``, ``arm_scored_forecasts``
    and, for a bandit, ``bandit_weight`` (the percent it proposes). Per verdict (labels
    model, env, strategy, baseline, candidate): ``verdict`` (-1 rollback, 0 hold or no
    move, 1 promote), ``verdict_rollback`` (1 when users get a release judged worse:
    the alert), ``verdict_p_value``, ``verdict_relative_difference``, ``verdict_targets``.
    """
    samples: list[tuple[dict[str, str], dict[str, float]]] = []
    seen: set[tuple[str, ...]] = set()
    for v in verdicts.verdicts:
        for arm in v.arms:
            labels = {
                "model": v.model, "env": v.env, "strategy": v.kind, "arm": arm["arm"],
                "release": arm["release"], "version": arm["model_version"], "role": arm["role"],
            }  # fmt: skip
            key = tuple(labels.values())
            if key in seen:  # an A/B's baseline is in every comparison
                continue
            seen.add(key)
            numbers: dict[str, float] = {
                "traffic_share": float(arm["share"]),
                "arm_scored_forecasts": float(arm["scored"]),
            }
            if arm["realized_mase"] is not None:
                numbers["arm_realized_mase"] = float(arm["realized_mase"])
            if v.decision is not None:
                numbers["bandit_weight"] = float(v.decision.weights.get(arm["arm"], 0))
            samples.append((labels, numbers))
        labels = {
            "model": v.model, "env": v.env, "strategy": v.kind, "baseline": v.baseline,
            "candidate": v.candidate or "",
        }  # fmt: skip
        numbers = {
            "verdict": float(VERDICT_VALUES.get(v.verdict, 0)),
            "verdict_rollback": float(v.asks_rollback),
        }
        if v.comparison is not None:
            c = v.comparison
            numbers["verdict_targets"] = float(c.n_targets)
            for name, value in (
                ("verdict_p_value", c.p_value),
                ("verdict_relative_difference", c.relative_difference),
            ):
                if value is not None and np.isfinite(value):
                    numbers[name] = float(value)
        samples.append((labels, numbers))
    return samples
