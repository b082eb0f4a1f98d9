"""Shadow: a challenger release that gets a copy of the main InferenceService's requests."""

from __future__ import annotations

from pathlib import Path

COMPONENT = "../../components/shadow"


def strategy(root: Path, env: str):
    """The shadow ``env`` runs, or None."""
    return None
