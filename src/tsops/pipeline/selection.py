"""Turning candidates' backtests into the one forecaster that gets registered.

Every rule is scored on forecasts it could have made: where a rule chooses
(``best_overall``, ``per_series``), the choice for each window is made on the other
windows only (leave one window out), so selection never peeks at the errors it is
scored on. The rules' scores are written next to each other so the choice in
model.yaml can be justified by the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from tsops.core.config import ModelConfig
from tsops.core.metrics import MODEL_COL, per_series, pointwise_errors
from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TARGET_COL, TIME_COL, interval_columns

SELECTED = "selected"
RULES = ("best_overall", "per_series", "median_ensemble", "mean_ensemble")
#: rules that combine all members for every series, and how
ENSEMBLES = {"median_ensemble": "median", "mean_ensemble": "mean"}


@dataclass
class Selection:
    """What ``train`` needs to build the registered forecaster: the ``rule``, its
    ``members``, the member of each series (``per_series``), and the ``metric`` the rule
    chose by (so the gate can re-run a champion's rule as it was)."""

    rule: str
    members: list[str]
    choice: dict[str, str] = field(default_factory=dict)
    metric: str = "mase"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        """A selection from ``to_dict``'s keys; other keys (``selection.json`` adds the
        classes of series, see ``tsops.pipeline.backtest.selection_document``) are not
        its business."""
        return cls(**{k: data[k] for k in ("rule", "members", "choice", "metric") if k in data})


def ensemble_members(config: ModelConfig) -> list[str]:
    members = config.selection.members
    if members:
        return list(members)
    return [name for name in config.candidates if name != config.baseline] or [config.baseline]


def ensemble_cv(
    cv: pd.DataFrame, members: Sequence[str], levels: Sequence[float], how: str = "median"
) -> pd.DataFrame:
    """Median (or mean) over ``members`` of the point forecast and of each interval bound.

    A forecast time only some members forecast is dropped, as the registered
    ensemble, whose members all forecast every series, never produces it.
    """
    keys = [ID_COL, TIME_COL, CUTOFF_COL, TARGET_COL]
    value_cols = [MEAN_COL, *interval_columns(levels)]
    subset = cv[cv[MODEL_COL].isin(members)]
    grouped = subset.groupby(keys, sort=True)
    out = grouped[value_cols].agg(how)
    out = out[grouped.size() == len(set(members))]
    return out.reset_index()


def _scores(cv: pd.DataFrame, scales: pd.DataFrame, levels: Sequence[float], metric: str):
    return per_series(pointwise_errors(cv, scales, levels))[[MODEL_COL, ID_COL, metric]]


def _choose_per_series(scores: pd.DataFrame, metric: str, candidates: Sequence[str]) -> pd.Series:
    pivot = scores.pivot(index=ID_COL, columns=MODEL_COL, values=metric)[list(candidates)]
    # ties and all-NaN rows go to the first candidate in model.yaml order
    return pivot.fillna(np.inf).idxmin(axis=1)


def _choose_overall(scores: pd.DataFrame, metric: str, candidates: Sequence[str]) -> str:
    means = scores.groupby(MODEL_COL)[metric].mean().reindex(list(candidates))
    return str(means.fillna(np.inf).idxmin())


def rule_cv(
    cv: pd.DataFrame,
    scales: pd.DataFrame,
    rule: str,
    *,
    candidates: Sequence[str],
    members: Sequence[str],
    metric: str,
    levels: Sequence[float],
) -> pd.DataFrame:
    """Honest cross-validation forecasts of a selection rule, labelled ``rule``.

    A choosing rule picks among ``candidates`` (ties to the first) by ``metric``; an
    ensemble combines ``members``. ``cv`` needs the rows of those models only.
    """
    candidates = list(candidates)
    if rule in ENSEMBLES:
        out = ensemble_cv(cv, members, levels, ENSEMBLES[rule])
    else:
        cutoffs = sorted(cv[CUTOFF_COL].unique())
        parts = []
        for cutoff in cutoffs:
            others = cv[cv[CUTOFF_COL] != cutoff] if len(cutoffs) > 1 else cv
            scores = _scores(others, scales, levels, metric)
            held = cv[cv[CUTOFF_COL] == cutoff]
            if rule == "best_overall":
                best = _choose_overall(scores, metric, candidates)
                parts.append(held[held[MODEL_COL] == best])
            else:
                choice = _choose_per_series(scores, metric, candidates)
                chosen = held[MODEL_COL].to_numpy() == held[ID_COL].map(choice).to_numpy()
                parts.append(held[chosen])
        out = pd.concat(parts, ignore_index=True).drop(columns=MODEL_COL)
    out.insert(0, MODEL_COL, rule)
    return out


def select(cv: pd.DataFrame, scales: pd.DataFrame, config: ModelConfig) -> Selection:
    """The rule from model.yaml, resolved on all backtest windows."""
    rule, metric = config.selection.rule, config.selection.metric
    candidates = list(config.candidates)
    if rule in ENSEMBLES:
        return Selection(rule, ensemble_members(config), metric=metric)
    scores = _scores(cv, scales, config.levels, metric)
    if rule == "best_overall":
        return Selection(rule, [_choose_overall(scores, metric, candidates)], metric=metric)
    choice = _choose_per_series(scores, metric, candidates)
    members = [c for c in candidates if c in set(choice)]
    return Selection(rule, members, {str(k): str(v) for k, v in choice.items()}, metric)


def configured_rule_cv(
    cv: pd.DataFrame, scales: pd.DataFrame, config: ModelConfig, rule: str
) -> pd.DataFrame:
    """``rule_cv`` of ``rule`` with the candidates, members and metric of ``config``."""
    return rule_cv(
        cv,
        scales,
        rule,
        candidates=list(config.candidates),
        members=ensemble_members(config),
        metric=config.selection.metric,
        levels=config.levels,
    )


def with_rules(cv: pd.DataFrame, scales: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """``cv`` plus honest forecasts of every rule; the configured one also as ``selected``."""
    parts = [cv]
    for rule in RULES:
        part = configured_rule_cv(cv, scales, config, rule)
        parts.append(part)
        if rule == config.selection.rule:
            parts.append(part.assign(**{MODEL_COL: SELECTED}))
    return pd.concat(parts, ignore_index=True)
