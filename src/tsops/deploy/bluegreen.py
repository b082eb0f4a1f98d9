"""Blue/green: two complete releases, one switch."""

from __future__ import annotations

from pathlib import Path

COMPONENT = "../../components/bluegreen"


def strategy(root: Path, env: str):
    raise NotImplementedError
