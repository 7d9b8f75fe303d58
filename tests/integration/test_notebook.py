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
