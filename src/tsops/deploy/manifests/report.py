"""What a validation found: :class:`Finding` (one problem and its fix), :class:`Report`
(all of them, the renders and the time each part took), and :class:`ManifestError`
when the validation itself cannot run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tsops.core.errors import TsopsError


class ManifestError(TsopsError):
    """The validation itself could not run (a tool or an input is missing)."""

    # 2, not 1: a workflow tells "the manifests have problems" (1) from "nothing was
    # validated" (a missing kubectl, checkov or CRD folder)
    exit_code = 2


@dataclass(frozen=True)
class Finding:
    """One problem: which check, where (render, resource, source files), what, how to fix."""

    check: str
    where: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.problem}\n    fix: {self.fix}"


@dataclass
class Report:
    """What :func:`validate_all` rendered, what it found and how long each part took."""

    findings: list[Finding] = field(default_factory=list)
    renders: dict[str, int] = field(default_factory=dict)  # label -> number of resources
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        resources = sum(self.renders.values())
        took = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        verdict = "OK" if self.ok else f"{len(self.findings)} problem(s)"
        return f"{verdict}: {len(self.renders)} renders, {resources} resources ({took})"


def merge_renders(findings: list[Finding]) -> list[Finding]:
    """One finding per resource and problem, naming every render it occurs in (a base
    resource fails the same check in each overlay and each A/B variant)."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for f in findings:
        label, sep, rest = f.where.partition(": ")
        if not sep:
            label, rest = "", f.where
        merged.setdefault((f.check, rest, f.problem, f.fix), []).append(label)
    out = []
    for (check, rest, problem, fix), labels in merged.items():
        prefix = ", ".join(sorted({label for label in labels if label}))
        out.append(Finding(check, f"{prefix}: {rest}" if prefix else rest, problem, fix))
    return out


@contextlib.contextmanager
def timer(report: Report, name: str) -> Iterator[None]:
    """Add the time the block takes to ``report.timings[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        report.timings[name] = report.timings.get(name, 0.0) + time.perf_counter() - start
