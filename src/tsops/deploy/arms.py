"""The bandit's arms beyond the A/B candidate."""

from __future__ import annotations

from pathlib import Path


def arm_releases(env_dir: Path, model: str) -> dict[str, tuple[str, str]]:
    """InferenceService name -> (release, registry version) of the overlay's extra arms."""
    return {}
