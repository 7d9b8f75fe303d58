"""The tour notebook runs top to bottom (nbclient, CPU)."""

from __future__ import annotations

import pytest

from helpers import EXAMPLES


@pytest.mark.slow
def test_tour_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "camlens_tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(EXAMPLES)}})  # fmt: skip
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "deletion (lower better)" in outputs
    assert "spearman |map|" in outputs
    # the figures show inline: every cell that draws one (maps, curves, sanity panel) has a PNG output
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    drawn = [cell for cell in code if "plt.subplots" in cell.source or "cm.plot_" in cell.source]
    pictures = [cell for cell in drawn if any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))]
    assert len(drawn) == 3 and len(pictures) == len(drawn), [c.source[:40] for c in drawn if c not in pictures]
