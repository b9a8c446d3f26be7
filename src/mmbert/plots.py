"""matplotlib on demand and PNG files written atomically: what every report's plots share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbert.io import atomic_open


def pyplot() -> Any:
    """`matplotlib.pyplot` with the Agg backend, imported when a plot is drawn (it takes a second or
    more, and only the reports draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` as PNG, whole or not at all, and close it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
