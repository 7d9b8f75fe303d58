"""Figures: deletion/insertion curves and the sanity-check panel (matplotlib, imported only here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor


def _pyplot() -> Any:
    try:
        import os
        import sys

        import matplotlib

        if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg", force=False)  # a script: no window; a notebook keeps its inline backend
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'camlens[metrics]'") from None
    return plt


def plot_curves(results: Mapping[str, Any], *, image: int | None = None, title: str = "", ax: Any = None) -> Any:
    """Plot curves (deletion, insertion, ROAD) of several methods: ``{method: MetricResult}``.

    ``image=None`` draws the mean curve over the batch, else that image's curve; the legend gives the
    AUC. Returns the matplotlib Figure.
    """
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
    else:
        fig = ax.figure
    for method, result in results.items():
        if result.curve is None:
            raise ValueError(f"the result for {method!r} has no curve")
        curve = result.curve.float()
        y = curve.mean(dim=0) if image is None else curve[image]
        value = result.values.float().mean() if image is None else result.values[image]
        ax.plot(result.fractions.numpy(), y.numpy(), label=f"{method} ({float(value):.3f})")
    ax.set_xlabel("fraction of pixels")
    ax.set_ylabel("class score")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sanity(
    maps: Mapping[str, Mapping[str, Tensor]], *, image: int = 0, methods: Sequence[str] | None = None
) -> Any:
    """The sanity-check panel: a row per method, a column per step (``sanity_check(..., keep_maps=True).maps``).

    Each map is shown as ``|map|`` normalised to [0, 1]. Returns the matplotlib Figure.
    """
    plt = _pyplot()
    steps = list(maps)
    methods = list(methods or next(iter(maps.values())))
    fig, axes = plt.subplots(len(methods), len(steps), figsize=(1.4 * len(steps), 1.5 * len(methods)), squeeze=False)
    for row, method in enumerate(methods):
        for col, step in enumerate(steps):
            m = maps[step][method][image].abs().float()
            m = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-12)
            ax = axes[row][col]
            ax.imshow(m.numpy(), cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(step, fontsize=6, rotation=45, ha="left")
            if col == 0:
                ax.set_ylabel(method, fontsize=7)
    fig.tight_layout()
    return fig
