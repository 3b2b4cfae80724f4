"""train.ipynb runs top to bottom (on the shared data when present, else on a synthetic set)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "train.ipynb", as_version=4)
    for cell in nb.cells:  # it imports the package; it must not redefine it
        if cell.cell_type == "code":
            assert "class Classifier" not in cell.source and "def train_one_epoch" not in cell.source
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
