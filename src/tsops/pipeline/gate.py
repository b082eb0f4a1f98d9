"""The gate a trained candidate passes before it may become ``challenger``.

Compares the candidate's backtest with seasonal naive and, when there is one, with
the current champion's method re-run on the same windows of the same data, using
the thresholds in model.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tsops.core.config import GateConfig


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    detail: str


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def table(self) -> str:
        header = f"{'check':<28} {'value':>10} {'threshold':>10}  result  detail"
        lines = [header, "-" * len(header)]
        for c in self.checks:
            lines.append(
                f"{c.name:<28} {c.value:>10.4f} {c.threshold:>10.4f}  "
                f"{'pass' if c.passed else 'FAIL':<6}  {c.detail}"
            )
        lines.append(f"gate: {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "checks": [c.__dict__ for c in self.checks],
        }


def evaluate_gate(
    candidate: dict[str, float],
    baseline: dict[str, float],
    gate: GateConfig,
    levels: list[float],
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> GateResult:
    """Each metric dict holds ``mase`` and ``coverage-<level>`` from the same backtest."""
    result = GateResult()
    skill = 1 - candidate["mase"] / baseline["mase"]
    result.checks.append(
        Check(
            "skill_vs_seasonal_naive",
            skill,
            gate.min_skill_vs_naive,
            skill >= gate.min_skill_vs_naive,
            f"MASE {candidate['mase']:.4f} vs seasonal naive {baseline['mase']:.4f}",
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
        regression = candidate["mase"] / champion["mase"] - 1
        result.checks.append(
            Check(
                "regression_vs_champion",
                regression,
                gate.max_regression_vs_champion,
                regression <= gate.max_regression_vs_champion,
                f"MASE {candidate['mase']:.4f} vs champion v{champion_version} "
                f"{champion['mase']:.4f} on the same windows",
            )
        )
    return result
