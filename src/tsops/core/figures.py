"""Figures drawn without pyplot: no backend is chosen and no global figure registry is
kept, so drawing a report changes nothing else in the process (a server, a notebook)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tsops.core.io import atomic_path


def subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots``' signature on a standalone ``Figure`` (rendered by Agg when saved)."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def save_png(fig: Figure, path: Path, dpi: int = 90) -> None:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a file)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
