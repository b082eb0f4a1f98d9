"""The gate's verdict: the record the gate stage writes to ``gate.json`` and
``tsops register`` reads back and obeys.

It lives in the core because two wings share it: the pipeline's gate stage writes it
and the registry publishes it, neither importing the other's modules. ``inputs`` (the
sha256 of the files the verdict is about) lets ``register`` refuse a verdict that was
about other files than the ones it would publish.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tsops.core.paths import ModelPaths


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Champion:
    """The registry's champion scored on today's windows: its ``metrics`` (``mase``,
    ``smape``, ``rmsse``, ``coverage-<level>``), and which of its candidates' backtests
    were ``reused`` from today's or ``refitted``."""

    version: str
    metrics: dict[str, float]
    reused: list[str] = field(default_factory=list)
    refitted: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    """The checks and the champion they compared with; ``classes`` (from metrics.json,
    when the panel has short or intermittent series) reports each class of series apart:
    only ``gated_class`` is checked."""

    checks: list[Check] = field(default_factory=list)
    champion: Champion | None = None
    gated_class: str = "regular"
    classes: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def table(self) -> str:
        header = f"{'check':<28} {'value':>10} {'threshold':>10}  result  detail"
        lines = [header, "-" * len(header)]
        for c in self.checks:
            lines.append(
                f"{c.name:<28} {c.value:>10.4f} {c.threshold:>10.4f}  "
                f"{'pass' if c.passed else 'FAIL':<6}  {c.detail}"
            )
        if self.classes:
            lines.append(self._classes_line())
        lines.append(f"gate: {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)

    def _classes_line(self) -> str:
        def part(name: str, entry: dict) -> str:
            mase = (entry.get("selected") or {}).get("mase")
            scored = "" if mase is None else f", MASE {mase:.4f}"
            return f"{name} {entry.get('n_series', 0)}{scored}"

        gated = self.classes.get(self.gated_class, {})
        others = [part(n, e) for n, e in self.classes.items() if n != self.gated_class]
        return (
            f"checked on the {gated.get('n_series', 0)} {self.gated_class} series only; "
            f"reported apart: {'; '.join(others) or 'none'}"
        )

    @classmethod
    def from_dict(cls, document: dict) -> GateResult:
        """The verdict ``to_dict`` wrote (``gate.json``), read back."""
        champion = document.get("champion")
        return cls(
            checks=[Check(**check) for check in document.get("checks", [])],
            champion=None if champion is None else Champion(**champion),
            gated_class=document.get("gated_class", "regular"),
            classes=document.get("classes") or {},
        )

    def to_dict(self) -> dict:
        """What ``gate.json`` holds (besides the ``inputs`` the stage adds)."""
        document = {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "champion": None if self.champion is None else asdict(self.champion),
        }
        if self.classes:
            document |= {"gated_class": self.gated_class, "classes": self.classes}
        return document


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def gate_inputs(paths: ModelPaths) -> dict[str, str]:
    """sha256 of the files a gate verdict is about, by path under ``artifacts/<model>/``:
    ``metrics.json`` and every file of the trained ``model/`` folder. The gate stage
    writes this as ``gate.json``'s ``inputs``; ``register`` recomputes and compares it."""
    files = [paths.metrics, *sorted(p for p in paths.model.iterdir() if p.is_file())]
    return {p.relative_to(paths.artifacts).as_posix(): file_digest(p) for p in files}
