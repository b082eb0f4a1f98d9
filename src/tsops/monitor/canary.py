"""Should a canary be promoted, held or rolled back? Two served versions, same targets.

Both versions' scored forecasts (``AccuracyResult.scored``) are paired on the same
series, target time and horizon step, so neither is judged on easier data. The loss
is the absolute scaled error (the summand of MASE); the test is Diebold–Mariano on
the loss differential ``d = loss(candidate) - loss(baseline)``:

1. ``d_t`` is the mean differential over series (and steps) at each target time ``t``,
   so the cross-series correlation of errors at one time is inside ``d_t``, not
   mistaken for independent evidence;
2. forecasts made from one cutoff for consecutive target times share errors, so
   ``d_t`` is autocorrelated up to ``h - 1`` lags (``h`` = the longest step paired);
   the variance of its mean is the Newey–West (HAC) estimate with ``h - 1`` lags,
   from statsmodels;
3. the Harvey–Leybourne–Newbold correction scales the statistic for small samples,
   compared with Student's t on ``T - 1`` degrees of freedom.

Each side can be limited to the forecasts of one role (``live`` or ``shadow``): a
shadow release is judged on the copies of requests it answered (role shadow) against
the champion's live answers to the same requests, so both forecast the same targets
from the same cutoffs.

Verdict: ``rollback`` when the candidate is significantly worse; ``promote`` when it
is significantly better, or significantly *not worse* by more than ``margin`` (a
share of the baseline's loss; one-sided non-inferiority test); ``hold`` otherwise,
with the number of further target times a test of this power would need.

One module (~400 lines): the pairing, the test and the verdict's report read the same
paired frame and change together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from tsops.core.metrics import STEP_COL
from tsops.core.schema import ID_COL, TIME_COL
from tsops.monitor.accuracy import json_value
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import MODEL_NAME_COL, SERVED_AT_COL, VERSION_COL

LOSS_COL = "ase"
PAIR_KEY = [ID_COL, TIME_COL, STEP_COL]
VERDICTS = ("promote", "hold", "rollback")
#: beyond this many target times a hold is reported as undecidable at the observed effect
MAX_TARGETS = 10_000
_NEEDED_COLUMNS = (MODEL_NAME_COL, VERSION_COL, *PAIR_KEY, SERVED_AT_COL, LOSS_COL)


@dataclass(frozen=True)
class ServedVersion:
    """What a ``--baseline`` / ``--candidate`` selector matched in the log."""

    selector: str
    model_names: tuple[str, ...]
    model_version: str
    #: the role its forecasts were taken from (None: every role)
    role: str | None = None

    @property
    def label(self) -> str:
        role = f" ({self.role})" if self.role else ""
        return f"{'/'.join(self.model_names)} v{self.model_version}{role}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "model_names": list(self.model_names),
            "model_version": self.model_version,
            "role": self.role,
        }


@dataclass(frozen=True)
class CanaryResult:
    baseline: ServedVersion
    candidate: ServedVersion
    n_pairs: int
    n_series: int
    n_targets: int
    max_step: int
    hac_lags: int | None
    mean_loss_baseline: float
    mean_loss_candidate: float
    dm_statistic: float | None
    p_value: float | None
    noninferiority_p_value: float | None
    verdict: str
    reason: str
    needed_more: int | None
    alpha: float
    margin: float
    min_targets: int
    power: float
    n_unscaled: int = 0
    per_target: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def difference(self) -> float:
        """Mean loss of the candidate minus the baseline's: positive means worse."""
        return self.mean_loss_candidate - self.mean_loss_baseline

    @property
    def relative_difference(self) -> float:
        if not self.mean_loss_baseline > 0:
            return float("nan")
        return self.difference / self.mean_loss_baseline

    def to_dict(self) -> dict[str, Any]:
        data = {
            "verdict": self.verdict,
            "reason": self.reason,
            "needed_more": self.needed_more,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "n_pairs": self.n_pairs,
            "n_series": self.n_series,
            "n_targets": self.n_targets,
            "max_step": self.max_step,
            "hac_lags": self.hac_lags,
            "loss": "absolute scaled error (MASE summand), mean over target times",
            "mean_loss_baseline": self.mean_loss_baseline,
            "mean_loss_candidate": self.mean_loss_candidate,
            "difference": self.difference,
            "relative_difference": self.relative_difference,
            "dm_statistic": self.dm_statistic,
            "p_value": self.p_value,
            "noninferiority_p_value": self.noninferiority_p_value,
            "alpha": self.alpha,
            "margin": self.margin,
            "min_targets": self.min_targets,
            "power": self.power,
            "n_unscaled": self.n_unscaled,
        }
        return {k: json_value(v) if not isinstance(v, dict) else v for k, v in data.items()}

    def to_markdown(self) -> str:
        def num(value: float | None, fmt: str = ".4f") -> str:
            return "–" if value is None or not np.isfinite(value) else format(value, fmt)

        more = "" if self.needed_more is None else f" (about {self.needed_more} more target times)"
        if self.verdict == "hold" and self.needed_more is None:
            more = " (no decision in sight at the observed difference)"
        rows = [
            ("version", self.baseline.label, self.candidate.label),
            (
                "mean absolute scaled error",
                num(self.mean_loss_baseline),
                num(self.mean_loss_candidate),
            ),
        ]
        return "\n".join(
            [
                f"### Canary: {self.candidate.label} against {self.baseline.label}",
                "",
                f"**Verdict: {self.verdict}**{more if self.verdict == 'hold' else ''}: "
                f"{self.reason}",
                "",
                "| | baseline | candidate |",
                "| --- | --- | --- |",
                *[f"| {name} | {b} | {c} |" for name, b, c in rows],
                "",
                "| paired forecasts | series | target times | max step | relative difference "
                "| DM (HLN) | p-value | non-inferiority p |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {self.n_pairs} | {self.n_series} | {self.n_targets} | {self.max_step} "
                f"| {num(self.relative_difference * 100, '+.2f')}% "
                f"| {num(self.dm_statistic, '.3f')} | {num(self.p_value)} "
                f"| {num(self.noninferiority_p_value)} |",
                "",
                f"alpha {self.alpha}, non-inferiority margin {self.margin:.1%} of the baseline's "
                f"loss, at least {self.min_targets} target times, power {self.power:.0%}.",
            ]
        )


def compare_versions(
    scored: pd.DataFrame,
    baseline: str,
    candidate: str,
    *,
    alpha: float = 0.05,
    margin: float = 0.02,
    min_targets: int = 12,
    power: float = 0.8,
    baseline_role: str | None = None,
    candidate_role: str | None = None,
) -> CanaryResult:
    """Diebold–Mariano comparison of two served versions on the same forecasts' targets.

    ``scored``: ``AccuracyResult.scored`` (one row per scored forecast with ``ase``).
    ``baseline`` / ``candidate``: a model version (``"3"``), a served name
    (``"challenger"``) that served a single version, or ``"NAME:VERSION"``.
    ``alpha``: significance level of every test; ``margin``: how much worse than the
    baseline's loss (relative, 0.02 = 2%) still counts as not worse; ``min_targets``:
    paired target times required before any verdict; ``power``: of the sample-size
    estimate reported with ``hold``. ``baseline_role`` / ``candidate_role``: only the
    forecasts logged with that role (``live``, ``shadow``; a log without roles is all
    live); None takes every role.

    Each version's forecast of a (series, target time, step) is the latest served at
    or before the target time (the latest served, if none was).
    """
    _check_options(alpha, margin, min_targets, power)
    missing = [c for c in _NEEDED_COLUMNS if c not in scored.columns]
    if missing:
        raise MonitorError(
            f"scored forecasts lack column(s) {', '.join(missing)}: pass "
            "realized_accuracy(...).scored"
        )
    base_ref, base_rows = _select(_of_role(scored, baseline_role), baseline, "baseline")
    cand_ref, cand_rows = _select(_of_role(scored, candidate_role), candidate, "candidate")
    base_ref = replace(base_ref, role=baseline_role)
    cand_ref = replace(cand_ref, role=candidate_role)
    if base_ref.model_version == cand_ref.model_version:
        raise MonitorError(
            f"baseline {baseline!r} and candidate {candidate!r} are the same model version "
            f"{base_ref.model_version}: compare two different versions"
        )
    unscaled = int(base_rows[LOSS_COL].isna().sum() + cand_rows[LOSS_COL].isna().sum())
    paired = _latest_per_target(base_rows).merge(
        _latest_per_target(cand_rows), on=PAIR_KEY, suffixes=("_baseline", "_candidate")
    )
    per_target = (
        paired.groupby(TIME_COL, sort=True)
        .agg(
            n=(ID_COL, "size"),
            loss_baseline=(f"{LOSS_COL}_baseline", "mean"),
            loss_candidate=(f"{LOSS_COL}_candidate", "mean"),
        )
        .reset_index()
    )
    per_target["differential"] = per_target["loss_candidate"] - per_target["loss_baseline"]
    common = {
        "baseline": base_ref,
        "candidate": cand_ref,
        "n_pairs": len(paired),
        "n_series": int(paired[ID_COL].nunique()),
        "n_targets": len(per_target),
        "max_step": int(paired[STEP_COL].max()) if len(paired) else 0,
        "mean_loss_baseline": float(per_target["loss_baseline"].mean()),
        "mean_loss_candidate": float(per_target["loss_candidate"].mean()),
        "alpha": alpha,
        "margin": margin,
        "min_targets": min_targets,
        "power": power,
        "n_unscaled": unscaled,
        "per_target": per_target,
    }
    return CanaryResult(
        **common, **_decide(per_target["differential"].to_numpy(), common, margin, alpha, power)
    )


def _check_options(alpha: float, margin: float, min_targets: int, power: float) -> None:
    if not 0 < alpha < 0.5:
        raise MonitorError(f"alpha must be in (0, 0.5), e.g. 0.05; got {alpha}")
    if margin < 0:
        raise MonitorError(f"margin is a relative share such as 0.02 (2%), not {margin}")
    if min_targets < 2:
        raise MonitorError(f"min_targets must be at least 2, got {min_targets}")
    if not 0 < power < 1:
        raise MonitorError(f"power must be in (0, 1), e.g. 0.8; got {power}")


def _of_role(scored: pd.DataFrame, role: str | None) -> pd.DataFrame:
    """The rows logged with ``role`` (None: all); a log without roles is all live."""
    from tsops.monitor.accuracy import with_role
    from tsops.monitor.inputs import ROLE_COL

    if role is None:
        return scored
    scored = with_role(scored) if ROLE_COL not in scored.columns else scored
    return scored[scored[ROLE_COL] == role]


def _select(scored: pd.DataFrame, selector: str, role: str) -> tuple[ServedVersion, pd.DataFrame]:
    """The rows of one model version, named by version, served name or NAME:VERSION."""
    names, versions = scored[MODEL_NAME_COL], scored[VERSION_COL]
    if ":" in selector:
        name, version = selector.rsplit(":", 1)
        mask = (names == name) & (versions == version)
    elif (versions == selector).any():
        mask = versions == selector
    else:
        mask = names == selector
    if not mask.any():
        served = scored[[MODEL_NAME_COL, VERSION_COL]].drop_duplicates().sort_values(VERSION_COL)
        known = ", ".join(f"{n} v{v}" for n, v in served.itertuples(index=False)) or "none"
        raise MonitorError(
            f"{role} {selector!r} matches no scored forecast; the scored versions are: "
            f"{known}. Name a model version (3), a served name (challenger) or NAME:VERSION"
        )
    found = sorted(versions[mask].unique())
    if len(found) > 1:
        raise MonitorError(
            f"{role} {selector!r} served more than one version ({', '.join(found)}): name "
            f"one, e.g. {found[-1]} or {selector}:{found[-1]}"
        )
    rows = scored[mask]
    return ServedVersion(selector, tuple(sorted(rows[MODEL_NAME_COL].unique())), found[0]), rows


def _latest_per_target(rows: pd.DataFrame) -> pd.DataFrame:
    """One forecast per (series, target time, step): what was live when the target came."""
    rows = rows[rows[LOSS_COL].notna()]
    before = (rows[SERVED_AT_COL] <= rows[TIME_COL]).rename("_before")
    ordered = rows.assign(_before=before).sort_values(["_before", SERVED_AT_COL], kind="stable")
    return ordered.drop_duplicates(PAIR_KEY, keep="last")[[*PAIR_KEY, LOSS_COL]]


def _decide(
    d: np.ndarray, common: dict[str, Any], margin: float, alpha: float, power: float
) -> dict[str, Any]:
    """DM statistic, p-values, verdict, reason and the further targets a hold needs."""
    from scipy import stats

    n_targets, h = len(d), max(common["max_step"], 1)
    min_targets = common["min_targets"]
    mean_d = float(d.mean()) if n_targets else 0.0
    margin_abs = margin * common["mean_loss_baseline"] if n_targets else 0.0
    # HLN's factor is zero at T = h and its bias argument needs T > h: with fewer target
    # times than the longest step there is no valid test yet.
    enough = max(min_targets, h + 1)
    out: dict[str, Any] = {
        "hac_lags": None,
        "dm_statistic": None,
        "p_value": None,
        "noninferiority_p_value": None,
        "needed_more": None,
    }
    sigma = _long_run_sd(d, h - 1) if n_targets >= 3 else None
    if n_targets > h:
        out["hac_lags"] = h - 1
        se = sigma / np.sqrt(n_targets)
        hln = np.sqrt((n_targets + 1 - 2 * h + h * (h - 1) / n_targets) / n_targets)
        if se > 0:
            dm = mean_d / se * hln
            ni = (mean_d - margin_abs) / se * hln
            out["dm_statistic"] = float(dm)
            out["p_value"] = float(2 * stats.t.sf(abs(dm), n_targets - 1))
            out["noninferiority_p_value"] = float(stats.t.cdf(ni, n_targets - 1))
        else:
            # the same differential at every target time: no noise to test against
            out["dm_statistic"] = float(np.sign(mean_d) * np.inf) if mean_d else None
            out["p_value"] = 0.0 if mean_d else 1.0
            out["noninferiority_p_value"] = 0.0 if mean_d < margin_abs else 1.0
    p, p_ni = out["p_value"], out["noninferiority_p_value"]

    if n_targets < enough:
        why = (
            f"{n_targets} paired target time(s); a verdict needs at least {enough} "
            f"(min_targets {min_targets}, and more than the longest step {h} for the "
            "HAC/HLN test)"
        )
        out["verdict"], out["reason"] = "hold", why
        further = _targets_needed(mean_d, margin_abs, sigma, h, alpha, power)
        out["needed_more"] = max(enough, further or 0) - n_targets
        return out
    if p is not None and p < alpha and mean_d > 0:
        out["verdict"] = "rollback"
        out["reason"] = f"candidate significantly worse (DM p = {p:.3g} < alpha {alpha})"
        return out
    if p is not None and p < alpha and mean_d < 0:
        out["verdict"] = "promote"
        out["reason"] = f"candidate significantly better (DM p = {p:.3g} < alpha {alpha})"
        return out
    if p_ni is not None and p_ni < alpha:
        out["verdict"] = "promote"
        out["reason"] = (
            f"candidate not worse than the baseline by more than {margin:.1%} "
            f"(non-inferiority p = {p_ni:.3g} < alpha {alpha}; DM p = {p:.3g})"
        )
        return out
    further = _targets_needed(mean_d, margin_abs, sigma, h, alpha, power)
    out["verdict"] = "hold"
    out["reason"] = (
        f"no significant difference yet (DM p = {p:.3g}, non-inferiority p = {p_ni:.3g}, "
        f"alpha {alpha})"
    )
    if further is None:
        out["reason"] += (
            f"; at the observed difference no test of {power:.0%} power decides within "
            f"{MAX_TARGETS} target times"
        )
    else:
        out["needed_more"] = max(further - n_targets, 1)
    return out


def _long_run_sd(d: np.ndarray, lags: int) -> float:
    """sqrt(T) times the Newey–West standard error of mean(d), from statsmodels.

    ``use_correction=False``: the HLN factor is the small-sample correction here, and
    applying statsmodels' T/(T-1) as well would correct twice.
    """
    from statsmodels.regression.linear_model import OLS

    lags = min(lags, len(d) - 2)
    fit = OLS(d, np.ones(len(d))).fit(
        cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False}
    )
    return float(fit.bse[0] * np.sqrt(len(d)))


def _targets_needed(
    mean_d: float, margin_abs: float, sigma: float | None, h: int, alpha: float, power: float
) -> int | None:
    """Smallest number of target times at which a test reaches ``power``.

    Takes the observed mean differential and long-run spread as the truth and asks
    when either decisive test would be expected to pass: DM (two-sided, for
    promote or rollback on a real difference) or non-inferiority (one-sided against
    the margin, which is what decides when the difference is about zero). HLN's
    factor and Student's t quantiles are applied at each candidate size.
    """
    from scipy import stats

    if sigma is None or not np.isfinite(sigma):
        return None
    if sigma == 0:
        return h + 1
    sizes = np.arange(h + 1, MAX_TARGETS + 1)
    hln = np.sqrt((sizes + 1 - 2 * h + h * (h - 1) / sizes) / sizes)
    z_power = stats.norm.ppf(power)
    reachable = []
    for effect, quantile in ((abs(mean_d), 1 - alpha / 2), (margin_abs - mean_d, 1 - alpha)):
        if effect <= 0:
            continue
        expected = effect * np.sqrt(sizes) / sigma * hln
        ok = np.flatnonzero(expected >= stats.t.ppf(quantile, sizes - 1) + z_power)
        if ok.size:
            reachable.append(int(sizes[ok[0]]))
    return min(reachable) if reachable else None
