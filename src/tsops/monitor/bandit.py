"""Traffic weights of a multi-armed bandit from realized accuracy: Thompson sampling.

Each arm is a tagged release (a registry version) behind the Splitter; its reward is
its realized error, the absolute scaled error of its forecasts (the summand of MASE,
``ase`` in ``AccuracyResult.scored``) once their actuals arrive. Forecast errors are a
poor fit for the textbook bandit: the feedback is **delayed** (a forecast made now for
six months ahead is scored six months later), **noisy** (heavy-tailed across series)
and **correlated** (every forecast for the same target time shares that period's
shocks; forecasts from one cutoff for consecutive target times share errors). So:

1. **Unit of evidence: the arm's mean loss at one target time.** ``x[t, a]`` is the mean
   ``ase`` of arm ``a``'s scored forecasts whose target time is ``t``. The forecasts of
   one target time are not independent evidence (a shock at ``t`` hits all of them), the
   target times nearly are. Only the target times **every arm** has scored forecasts for
   are used, so a hard period counts against all arms alike and an arm added later is
   not judged on easier months; and the arms' vectors ``x[t]`` keep their correlation
   (a hard month is hard for all), which is what makes their *difference* precise.
2. **Posterior: multivariate Student t on the arms' mean losses.** ``x[t]`` is taken as
   normal with unknown mean ``mu`` (one per arm) and unknown covariance; with the
   non-informative (Jeffreys) prior the posterior of ``mu`` is multivariate t with
   ``n - K`` degrees of freedom (``n`` target times, ``K`` arms), centred on the mean of
   ``x`` with scale ``S / (n - K)``, ``S`` the covariance of ``x`` (divided by ``n``; for
   one arm this is the familiar ``t(n - 1)`` with scale ``s^2 / n``). Forecasts from one
   cutoff for target times ``t`` and ``t + 1`` share errors, so ``x[t]`` is
   autocorrelated up to ``h - 1`` lags (``h`` the longest horizon step scored): ``S`` is
   the Newey–West (Bartlett) long-run covariance of ``x`` with ``h - 1`` lags, as
   ``tsops.monitor.canary``'s Diebold–Mariano test uses for two arms. Few target times
   give heavy tails (few degrees of freedom), so little evidence moves little.
3. **Thompson sampling, in batch.** Requests are routed by weights, not one by one, so
   the weight of an arm is the probability that it is the best (lowest mean loss) under
   the posterior — the share of requests per-request Thompson sampling would give it
   (probability matching) — estimated from ``draws`` posterior samples with a fixed
   ``seed``: the same evidence gives the same weights, and a weights pull request can be
   reproduced by its reviewer.
4. **Practically equal is equal.** In each posterior draw, every arm within ``margin``
   (5%) of the best arm's mean loss counts as best, the win shared. Without it, two
   equal releases would have P(best) uniformly spread over 0..1 at any sample size
   and their weights would wander between floor and ceiling; with it, their traffic
   goes back to even once the posterior is narrower than the margin. A difference
   below the margin is not worth moving users for (the canary's non-inferiority margin
   plays the same part).
5. **Guards.** No move until every arm has ``min_scored`` scored forecasts and there
   are ``MIN_TARGETS`` (12) common target times; every arm keeps at least ``floor`` of the
   traffic (it keeps being scored, so a release that gets better, or a bad estimate,
   can be corrected: exploration under delayed feedback); no arm's share changes by more
   than ``max_step`` per update (the newest weights are judged months later; small steps
   bound the damage of acting on stale, noisy evidence). The move is made by walking
   from the current weights toward the Thompson target until the first arm hits
   ``max_step``, so the floor and the sum stay exact; percentages are whole numbers
   summing to 100 by the largest-remainder method.

Why not UCB or epsilon-greedy: UCB's bonus assumes independent, bounded, immediately
observed rewards; epsilon-greedy explores at a fixed rate whatever the evidence says.
Thompson sampling handles delay well in practice (Chapelle & Li, 2011), its weights are
a probability people can read ("P(best) = 0.93"), and with a posterior that respects
the correlation above it moves only as fast as the evidence allows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tsops.core.metrics import STEP_COL
from tsops.core.schema import CUTOFF_COL, ID_COL, TIME_COL
from tsops.monitor.accuracy import json_value, records
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import ROLE_COL, ROLE_LIVE, SERVED_AT_COL, VERSION_COL

LOSS_COL = "ase"
#: common target times before any move: a year of months, the canary's min_targets. Under
#: equal arms P(best) is about uniform whatever the sample, so the weights of an early
#: move would be a coin toss; twelve target times also make the t posterior's tails sane.
MIN_TARGETS = 12
#: one forecast of a version (the same version may be served under several names)
_FORECAST = [VERSION_COL, ID_COL, CUTOFF_COL, TIME_COL]
_NEEDED_COLUMNS = (VERSION_COL, ID_COL, CUTOFF_COL, TIME_COL, STEP_COL, SERVED_AT_COL, LOSS_COL)
EVIDENCE_COLUMNS = [
    "arm",
    "model_version",
    "share",
    "n_scored",
    "n_series",
    "n_targets",
    "mase",
    "mean_loss",
    "p_best",
    "target",
    "weight",
]


@dataclass(frozen=True)
class BanditPolicy:
    """How fast a bandit may move; git keeps ``floor``, ``max_step`` and ``min_scored``
    beside the weights (``tsops.deploy.strategies.Strategy.policy``)."""

    floor: float = 0.10  # minimum share of every arm (exploration)
    max_step: float = 0.20  # largest change of any arm's share per update
    min_scored: int = 60  # scored forecasts every arm needs before any move
    draws: int = 20_000  # Thompson samples
    seed: int = 0  # fixed: the same evidence gives the same weights (reviewable PRs)
    #: arms within this share of the best arm's mean loss count as equally good (a
    #: difference not worth moving traffic for; the canary's non-inferiority margin)
    margin: float = 0.05

    def check(self, n_arms: int) -> None:
        """Raise ``MonitorError`` saying what to fix when the policy cannot be met."""
        for name in ("floor", "max_step"):
            value = getattr(self, name)
            if not 0 <= value <= 1 or not math.isclose(value * 100, round(value * 100)):
                raise MonitorError(
                    f"bandit {name} is a share in whole percent between 0 and 1 (e.g. 0.10 "
                    f"for 10%), got {value}"
                )
        if self.floor * n_arms > 1 + 1e-9:
            raise MonitorError(
                f"bandit floor {self.floor:.0%} for each of {n_arms} arms adds up to more "
                f"than 100%: lower the floor to at most {math.floor(100 / n_arms)}%"
            )
        if self.max_step <= 0:
            raise MonitorError("bandit max_step must be above 0 (0.20 = 20 points per update)")
        if self.min_scored < 1:
            raise MonitorError(f"bandit min_scored must be at least 1, got {self.min_scored}")
        if not 0 <= self.margin < 1:
            raise MonitorError(
                f"bandit margin is a share of the best arm's loss in [0, 1), e.g. 0.05; got "
                f"{self.margin}"
            )
        if self.draws < 100:
            raise MonitorError(f"bandit draws must be at least 100, got {self.draws}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, **overrides: Any) -> BanditPolicy:
        """The policy git holds (``Strategy.policy``), then ``overrides`` that are not
        None (command-line options); unknown keys are an error, not ignored."""
        merged = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise MonitorError(
                f"unknown bandit policy key(s) {', '.join(unknown)}; the policy has "
                f"{', '.join(sorted(known))}"
            )
        types = {
            "floor": float,
            "max_step": float,
            "min_scored": int,
            "draws": int,
            "seed": int,
            "margin": float,
        }
        try:
            return cls(**{k: types[k](v) for k, v in merged.items()})
        except (TypeError, ValueError) as exc:
            raise MonitorError(
                f"bandit policy {merged} has a value of the wrong type ({exc}): floor and "
                "max_step are fractions such as 0.1, min_scored a whole number"
            ) from exc


@dataclass(frozen=True)
class BanditDecision:
    weights: dict[str, int]  # arm -> percent, sum 100
    previous: dict[str, int]
    moved: bool
    reason: str
    evidence: pd.DataFrame  # per arm: model_version, n_scored, n_targets, MASE, P(best)
    policy: BanditPolicy = field(default_factory=BanditPolicy)
    #: common target times the posterior is computed from, and the HAC lags used
    n_targets: int = 0
    hac_lags: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "previous": dict(self.previous),
            "moved": self.moved,
            "reason": self.reason,
            "n_targets": self.n_targets,
            "hac_lags": self.hac_lags,
            "loss": "absolute scaled error (MASE summand). mase: its mean over the arm's "
            "scored forecasts; mean_loss: over the target times every arm was scored at, the "
            "mean of the arm's mean at each (what the posterior is centred on)",
            "policy": {k: json_value(v) for k, v in asdict(self.policy).items()},
            "evidence": records(self.evidence),
        }

    def summary(self) -> str:
        """A few lines for people: the weights, the move and why."""
        change = ", ".join(
            f"{arm} {self.previous.get(arm, 0)}% -> {pct}%" if self.moved else f"{arm} {pct}%"
            for arm, pct in self.weights.items()
        )
        table = self.evidence.drop(columns=["target"]).to_string(
            index=False, float_format=lambda v: f"{v:.4g}"
        )
        return f"{'moved' if self.moved else 'no move'}: {change}\n{self.reason}\n{table}"


def decide_weights(
    scored: pd.DataFrame,
    arms: dict[str, str],
    current: dict[str, int],
    policy: BanditPolicy = BanditPolicy(),  # frozen, so a safe default
) -> BanditDecision:
    """New Splitter weights for ``arms`` from their realized error (see the module doc).

    ``scored``: ``AccuracyResult.scored`` (one row per scored forecast, loss ``ase``);
    records with ``role`` other than live (a shadow's copies) are not used, a missing
    role counts as live. ``arms``: arm name -> registry model version. ``current``: arm
    name -> percent git holds now (sum 100). Returns the new weights, whether they
    moved, why, and the evidence per arm; the weights are the current ones until every
    arm has ``policy.min_scored`` scored forecasts.
    """
    names = list(arms)
    _check_arms(arms, current)
    policy.check(len(names))
    rows = _arm_rows(scored, arms)
    evidence = pd.DataFrame(
        {
            "arm": names,
            "model_version": [str(arms[a]) for a in names],
            "share": [int(current[a]) for a in names],
            "n_scored": [int((rows["arm"] == a).sum()) for a in names],
            "n_series": [int(rows.loc[rows["arm"] == a, ID_COL].nunique()) for a in names],
        }
    )
    evidence["mase"] = [rows.loc[rows["arm"] == a, LOSS_COL].mean() for a in names]
    hold = {"weights": dict(current), "previous": dict(current), "moved": False}

    per_target = rows.pivot_table(
        index=TIME_COL, columns="arm", values=LOSS_COL, aggfunc="mean"
    ).reindex(columns=names)
    common = per_target.dropna()
    n, k = len(common), len(names)
    h = int(rows[STEP_COL].max()) if len(rows) else 1
    lags = max(h - 1, 0)
    evidence["n_targets"] = [int(per_target[a].notna().sum()) for a in names]
    evidence["mean_loss"] = common.mean().to_numpy() if n else np.nan
    short = evidence[evidence["n_scored"] < policy.min_scored]
    needed_targets = max(k + lags + 1, MIN_TARGETS)
    if not short.empty or n < needed_targets:
        if not short.empty:
            reason = (
                f"no move: arm(s) {', '.join(short['arm'])} have "
                f"{', '.join(str(v) for v in short['n_scored'])} scored forecast(s); every "
                f"arm needs {policy.min_scored} (min_scored) before the weights move"
            )
        else:
            reason = (
                f"no move: {n} target time(s) have scored forecasts of every arm; a move "
                f"needs {needed_targets} (at least {MIN_TARGETS}, and more than the {k} arms "
                f"plus {lags} HAC lag(s) for steps up to {h})"
            )
        evidence = evidence.assign(p_best=np.nan, target=np.nan, weight=evidence["share"])
        return BanditDecision(
            **hold, reason=reason, evidence=evidence[EVIDENCE_COLUMNS], policy=policy,
            n_targets=n, hac_lags=None,
        )  # fmt: skip

    p_best = _p_best(common.to_numpy(dtype=float), lags, policy)
    target = policy.floor + (1 - k * policy.floor) * p_best
    weights = _step_toward(np.array([current[a] for a in names], dtype=float), target, policy)
    new = dict(zip(names, weights, strict=True))
    evidence = evidence.assign(p_best=p_best, target=target * 100, weight=weights)
    moved = new != dict(current)
    best = names[int(np.argmax(p_best))]
    goal = ", ".join(f"{a} {t * 100:.0f}%" for a, t in zip(names, target, strict=True))
    reason = (
        f"{best} is the best arm with probability {p_best.max():.2f} over {n} common "
        f"target times (Thompson target {goal}; floor {policy.floor:.0%}, at most "
        f"{policy.max_step:.0%} per update)"
    )
    if not moved:
        reason = "no move: the weights are at the Thompson target; " + reason
    return BanditDecision(
        weights=new, previous=dict(current), moved=moved, reason=reason,
        evidence=evidence[EVIDENCE_COLUMNS], policy=policy, n_targets=n, hac_lags=lags,
    )  # fmt: skip


def _check_arms(arms: dict[str, str], current: dict[str, int]) -> None:
    if len(arms) < 2:
        raise MonitorError(
            f"a bandit needs two or more arms, got {len(arms)} ({', '.join(arms) or 'none'}): "
            "start one with two tagged releases"
        )
    versions = [str(v) for v in arms.values()]
    if len(set(versions)) < len(versions):
        raise MonitorError(
            f"two arms serve the same model version ({arms}): their forecasts cannot be "
            "told apart in the forecast log; give every arm its own release"
        )
    if set(current) != set(arms):
        raise MonitorError(
            f"the current weights name arms {sorted(current)} but the arms are "
            f"{sorted(arms)}: give one weight per arm"
        )
    values = list(current.values())
    if any(int(v) != v or v < 0 for v in values) or sum(values) != 100:
        raise MonitorError(
            f"the current weights {current} must be whole percents summing to 100, "
            f"sum is {sum(values)}"
        )


def _arm_rows(scored: pd.DataFrame, arms: dict[str, str]) -> pd.DataFrame:
    """Each arm's scored live forecasts, one per (series, cutoff, target time): a
    version served under two names (an alias) is one forecast, the latest served."""
    missing = [c for c in _NEEDED_COLUMNS if c not in scored.columns]
    if missing:
        raise MonitorError(
            f"scored forecasts lack column(s) {', '.join(missing)}: pass "
            "realized_accuracy(...).scored"
        )
    rows = scored[scored[LOSS_COL].notna()]
    if ROLE_COL in rows.columns:
        rows = rows[rows[ROLE_COL].fillna(ROLE_LIVE).astype(str) == ROLE_LIVE]
    by_version = {str(v): a for a, v in arms.items()}
    rows = rows.assign(**{VERSION_COL: rows[VERSION_COL].astype(str)})
    rows = rows[rows[VERSION_COL].isin(by_version)]
    rows = rows.sort_values(SERVED_AT_COL, kind="stable").drop_duplicates(_FORECAST, keep="last")
    return rows.assign(arm=rows[VERSION_COL].map(by_version))[
        ["arm", ID_COL, CUTOFF_COL, TIME_COL, STEP_COL, LOSS_COL]
    ].reset_index(drop=True)


def long_run_covariance(x: np.ndarray, lags: int) -> np.ndarray:
    """Newey–West (Bartlett kernel) long-run covariance of the rows of ``x`` (n x K),
    autocovariances divided by n, as statsmodels' HAC without small-sample correction."""
    n = len(x)
    lags = min(lags, n - 2)
    dev = x - x.mean(axis=0)
    cov = dev.T @ dev / n
    for j in range(1, lags + 1):
        gamma = dev[j:].T @ dev[:-j] / n
        cov += (1 - j / (lags + 1)) * (gamma + gamma.T)
    return cov


def _p_best(x: np.ndarray, lags: int, policy: BanditPolicy) -> np.ndarray:
    """Posterior probability that each arm (column of ``x``) has the lowest mean loss.

    Draws from the multivariate t posterior (module doc, point 2). A draw in which arms
    tie exactly (identical losses at every target time) counts as a shared win.
    """
    n, k = x.shape
    dof = n - k
    scale = long_run_covariance(x, lags) / dof
    # a symmetric square root, not Cholesky: arms with identical losses make it singular
    values, vectors = np.linalg.eigh(scale)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    rng = np.random.default_rng(policy.seed)
    normal = rng.standard_normal((policy.draws, k))
    chi2 = rng.chisquare(dof, size=policy.draws)
    mu = x.mean(axis=0) + (normal @ root.T) / np.sqrt(chi2 / dof)[:, None]
    lowest = mu.min(axis=1, keepdims=True)
    wins = mu <= lowest + policy.margin * np.abs(lowest) + 1e-12
    return (wins / wins.sum(axis=1, keepdims=True)).mean(axis=0)


def _step_toward(current: np.ndarray, target: np.ndarray, policy: BanditPolicy) -> list[int]:
    """Whole percents from ``current`` (percent) toward ``target`` (shares summing to 1):
    the whole way when no arm changes by more than ``max_step``, else the part of the way
    at which the arm that changes most changes by exactly ``max_step``. A point on the
    segment keeps the sum, and the floor wherever both ends keep it."""
    goal = target * 100
    gap = np.abs(goal - current).max()
    step = policy.max_step * 100
    moved = current + (goal - current) * (min(1.0, step / gap) if gap > 0 else 0.0)
    return largest_remainder(moved)


def largest_remainder(percents: np.ndarray) -> list[int]:
    """Whole numbers summing to 100: floors, then one more for the largest remainders
    (ties go to the earlier arm, so the result is deterministic)."""
    percents = np.asarray(percents, dtype=float) * 100 / percents.sum()
    base = np.floor(percents + 1e-9).astype(int)
    left = 100 - int(base.sum())
    order = sorted(range(len(percents)), key=lambda i: (-(percents[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return [int(v) for v in base]


# ------------------------------------------------------------ the weights as a git change


def branch_name(model: str, env: str, weights: dict[str, int]) -> str:
    """``bandit/<model>-<env>-<arm><percent>-...``: the same weights, the same branch,
    so a job that runs again on the same evidence proposes nothing new."""
    return f"bandit/{model}-{env}-" + "-".join(f"{arm}{pct}" for arm, pct in weights.items())


def commit_message(model: str, env: str, decision: BanditDecision) -> str:
    moves = ", ".join(
        f"{arm} {decision.previous[arm]}% -> {pct}%" for arm, pct in decision.weights.items()
    )
    lines = [
        f"Bandit weights of {model} in {env}: {moves}",
        "",
        decision.reason,
        "",
        "| arm | version | scored | target times | MASE | P(best) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in decision.evidence.itertuples(index=False):
        lines.append(
            f"| {row.arm} | {row.model_version} | {row.n_scored} | {row.n_targets} "
            f"| {row.mean_loss:.4f} | {row.p_best:.3f} |"
        )
    lines += ["", "Prepared by `tsops bandit` (Thompson sampling on realized MASE)."]
    return "\n".join(lines)
