"""The gate stage: may the trained candidate become ``challenger``?

The candidate's backtest is compared with seasonal naive and, when the registry has
one, with the current champion's method run on the same windows of the same data,
using the thresholds in model.yaml. The verdict is written to ``gate.json``, which
``tsops register`` publishes and obeys; it never judges again.

The champion's metrics are computed once, here, on today's backtest windows: each of
its candidates that today's model.yaml also declares (same kind, parameters, season
and seed) is taken from the backtest's ``cv.parquet``; only the others are fitted
again. Its rule is then re-run as the backtest runs today's (leave one window out).

Only the gated class of series decides (``tsops.pipeline.classes``: the regular series
whenever the panel has any): the metrics, the baseline and the champion are that class'.
Short and intermittent series are reported apart in ``gate.json`` (their count and
metrics) and cannot hide a regression of the main model. ``run`` is the stage's I/O;
the rest is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tsops.core import progress
from tsops.core.config import CandidateConfig, GateConfig, ModelConfig, load
from tsops.core.io import read_json, read_series, require, write_json
from tsops.core.metrics import CLASS_COL, MODEL_COL, REGULAR, score
from tsops.core.schema import ID_COL
from tsops.core.verdict import Champion, Check, GateResult, gate_inputs
from tsops.pipeline.classes import class_config
from tsops.pipeline.selection import ENSEMBLES, Selection, rule_cv


def evaluate_gate(
    candidate: dict[str, float],
    baseline: dict[str, float],
    gate: GateConfig,
    levels: list[float],
    champion: Champion | None = None,
    metric: str = "mase",
) -> GateResult:
    """Each metric dict holds ``mase`` (and ``metric``) and ``coverage-<level>`` from the
    same backtest. The skill and the regression against the champion are on ``metric``:
    MASE for regular series; a panel gated on its intermittent series uses the metric
    that class is selected by (RMSSE by default, see ``tsops.pipeline.classes``)."""
    result = GateResult(champion=champion)
    name = metric.upper()
    skill = 1 - candidate[metric] / baseline[metric]
    result.checks.append(
        Check(
            "skill_vs_seasonal_naive",
            skill,
            gate.min_skill_vs_naive,
            skill >= gate.min_skill_vs_naive,
            f"{name} {candidate[metric]:.4f} vs seasonal naive {baseline[metric]:.4f}",
        )
    )
    if gate.max_mase is not None:
        result.checks.append(
            Check(
                "max_mase",
                candidate["mase"],
                gate.max_mase,
                candidate["mase"] <= gate.max_mase,
                "backtest MASE of the selected model",
            )
        )
    if gate.min_coverage_ratio > 0:
        for level in levels:
            key = f"coverage-{level:g}"
            ratio = candidate.get(key, 0.0) / (level / 100)
            result.checks.append(
                Check(
                    f"coverage_{level:g}",
                    ratio,
                    gate.min_coverage_ratio,
                    ratio >= gate.min_coverage_ratio,
                    f"{candidate.get(key, 0.0):.1%} of actuals inside the {level:g}% interval",
                )
            )
    if champion is not None:
        regression = candidate[metric] / champion.metrics[metric] - 1
        result.checks.append(
            Check(
                "regression_vs_champion",
                regression,
                gate.max_regression_vs_champion,
                regression <= gate.max_regression_vs_champion,
                f"{name} {candidate[metric]:.4f} vs champion v{champion.version} "
                f"{champion.metrics[metric]:.4f} on the same windows",
            )
        )
    return result


# ------------------------------------------------------------- the champion, on today's windows


@dataclass(frozen=True)
class ChampionMethod:
    """How the champion forecasts, from the spec its training run logged: its
    candidates, the selection (rule, metric, members, choice), season and seed."""

    version: str
    candidates: dict[str, CandidateConfig]
    selection: Selection
    season_length: int
    seed: int

    #: the class of series the champion was gated on (its ``selection`` is that class')
    gated_class: str = REGULAR

    @classmethod
    def from_spec(cls, version: str, spec: dict) -> ChampionMethod:
        # spec["config"] holds the keys the train stage tracks; versions registered
        # before it did hold the whole model.yaml, whose selection had the metric
        config = spec["config"]
        selection = dict(spec["selection"])
        selection.setdefault("metric", config.get("selection", {}).get("metric", "mase"))
        # a champion gated on another class than the regular one records its candidates
        candidates = spec.get("gated_candidates") or config["candidates"]
        return cls(
            version=str(version),
            candidates={name: CandidateConfig.model_validate(c) for name, c in candidates.items()},
            selection=Selection.from_dict(selection),
            season_length=int(config["season_length"]),
            seed=int(config.get("seed", 0)),
            gated_class=spec.get("gated_class", REGULAR),
        )

    @property
    def needed(self) -> list[str]:
        """The candidates its rule reads: an ensemble's members, or all it chose from."""
        if self.selection.rule in ENSEMBLES:
            return list(self.selection.members)
        return list(self.candidates)


def plan_champion(method: ChampionMethod, config: ModelConfig) -> tuple[dict[str, str], list[str]]:
    """Which of the champion's needed candidates today's backtest already ran (champion
    name -> today's name: same kind and parameters, built with the same season and
    seed) and which must be fitted again. ``config``: today's, as the gated class reads
    it (``classes.class_config``)."""
    same_build = (method.season_length, method.seed) == (config.season_length, config.seed)
    reuse, refit = {}, []
    for name in method.needed:
        same = [t for t, c in config.candidates.items() if c == method.candidates[name]]
        if same_build and same:
            reuse[name] = same[0]
        else:
            refit.append(name)
    return reuse, refit


def champion_on_windows(
    method: ChampionMethod,
    config: ModelConfig,
    df: pd.DataFrame,
    cv: pd.DataFrame,
    scales: pd.DataFrame,
    n_jobs: int | None = None,
    tracker: progress.Tracker | None = None,
    gated_class: str = REGULAR,
) -> Champion:
    """The champion's method on today's backtest windows (``cv``, ``scales``: today's
    backtest of ``df``) of today's gated class of series (``gated_class``): its
    candidates' rows taken from ``cv`` where ``plan_champion`` finds them and fitted
    again otherwise, its rule re-run on them, scored on today's scales and levels."""
    from tsops.forecasters import candidate_factories
    from tsops.pipeline.backtest import on_windows

    if CLASS_COL in cv.columns:
        cv = cv[cv[CLASS_COL] == gated_class].drop(columns=CLASS_COL)
        df = df[df[ID_COL].astype(str).isin(cv[ID_COL].astype(str).unique())]
    config = class_config(config, gated_class)
    reuse, refit = plan_champion(method, config)
    parts = [
        cv[cv[MODEL_COL] == today].assign(**{MODEL_COL: name}) for name, today in reuse.items()
    ]
    if refit:
        factories = candidate_factories(
            {name: method.candidates[name] for name in refit},
            freq=config.freq,
            season_length=method.season_length,
            seed=method.seed,
            n_jobs=n_jobs,
        )
        refitted, _ = on_windows(df, factories, config, tracker=tracker, series_class=gated_class)
        parts.append(refitted)
    selection = method.selection
    honest = rule_cv(
        pd.concat(parts, ignore_index=True),
        scales,
        selection.rule,
        candidates=list(method.candidates),
        members=selection.members,
        metric=selection.metric,
        levels=config.levels,
    )
    overall = score(honest, scales, config.levels)["overall"].set_index(MODEL_COL)
    metrics = {k: float(v) for k, v in overall.loc[selection.rule].items()}
    return Champion(method.version, metrics, reused=sorted(reuse), refitted=sorted(refit))


def run(
    root: Path,
    name: str,
    *,
    against_champion: bool = True,
    tracking_uri: str | None = None,
    n_jobs: int | None = None,
) -> GateResult:
    """The gate stage: judge ``metrics.json`` (and the champion, from the registry at
    ``tracking_uri``, unless ``against_champion`` is false) and write ``gate.json``.

    ``gate.json`` is written whether the gate passed or not, with the sha256 of the
    files it judged (``inputs``), so ``tsops register`` can say why it refuses and can
    tell a verdict about other files.
    """

    config, paths = load(root, name)
    metrics = read_json(require(paths.metrics, f"tsops evaluate {name}"))
    gated = metrics.get("gated_class", REGULAR)
    champion = None
    if against_champion:
        found = _champion_spec(root, name, tracking_uri)
        if found is not None:
            method = ChampionMethod.from_spec(*found)
            if method.gated_class == gated:
                champion = champion_on_windows(
                    method,
                    config,
                    read_series(paths),
                    pd.read_parquet(require(paths.cv, f"tsops backtest {name}")),
                    pd.read_parquet(require(paths.scales, f"tsops backtest {name}")),
                    n_jobs,
                    progress.Tracker(description=f"gate {name}: champion v{method.version}"),
                    gated,
                )
    # regular series are gated on MASE, as always; another class on its own metric
    metric = "mase" if gated == REGULAR else class_config(config, gated).selection.metric
    result = evaluate_gate(
        metrics["selected"], metrics["baseline"], config.gate, config.levels, champion, metric
    )
    if "classes" in metrics:
        result.gated_class = gated
        result.classes = metrics["classes"]
    write_json(result.to_dict() | {"inputs": gate_inputs(paths)}, paths.gate)
    return result


def _champion_spec(root: Path, name: str, tracking_uri: str | None) -> tuple[str, dict] | None:
    """The champion's version and spec, from the registry (``None`` without a champion)."""
    from tsops.registry.client import connect
    from tsops.registry.versions import champion_spec

    return champion_spec(connect(root, tracking_uri), name)
