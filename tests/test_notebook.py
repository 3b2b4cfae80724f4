"""train.ipynb: made by tools/make_notebook.py, committed with outputs that hold no shared picture,
and it runs top to bottom and learns (on the shared data when present, else on a synthetic set)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pokemon"  # what the notebook reads as ../shared/data/pokemon

nbformat = pytest.importorskip("nbformat")


def generator():
    spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "tools" / "make_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cell_key(cell) -> tuple:
    return cell.cell_type, cell.source, tuple(cell.metadata.get("tags", []))


def committed():
    return nbformat.read(ROOT / "train.ipynb", as_version=4)


def test_committed_notebook_matches_its_generator():
    """Edit tools/make_notebook.py, then run `python tools/make_notebook.py --execute`."""
    made, nb = generator().build(), committed()
    assert [cell_key(c) for c in nb.cells] == [cell_key(c) for c in made.cells]


def test_committed_notebook_has_outputs_of_a_run_and_no_dataset_pictures():
    nb = committed()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "commit the notebook executed (make_notebook.py --execute)"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    tagged = [c for c in code if generator().TAG in c.metadata.get("tags", [])]
    assert tagged
    for cell in tagged:
        assert not [o for o in cell.outputs if any(k.startswith("image/") for k in o.get("data", {}))]
    for cell in code:  # no picture smuggled in another way (an HTML <img> with inline data)
        for o in cell.outputs:
            assert "data:image" not in json.dumps(o.get("data", {}))
    # the run that made the outputs learnt: the summary cell's line names the test top-1
    last = "".join(o.get("text", "") for o in code[-1].outputs)
    assert "test top-1" in last


def test_strip_dataset_pictures_keeps_text_and_leaves_a_note():
    mod = generator()
    nb = nbformat.v4.new_notebook()
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    tagged = nbformat.v4.new_code_cell("show()")
    tagged.metadata["tags"] = [mod.TAG]
    tagged.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n"),
                      nbformat.v4.new_output("display_data", data=png)]
    plain = nbformat.v4.new_code_cell("plot()")
    plain.outputs = [nbformat.v4.new_output("display_data", data=png)]
    nb.cells = [tagged, plain]
    mod.strip_dataset_pictures(nb)
    assert [o.output_type for o in tagged.outputs] == ["stream", "stream"]
    assert tagged.outputs[1].text == mod.NOTE
    assert plain.outputs[0].data["image/png"] == png["image/png"]  # generated plots stay


def run_notebook(tmp_path, monkeypatch, data: str | None) -> dict:
    nbclient = pytest.importorskip("nbclient")
    work = tmp_path / "work"
    monkeypatch.setenv("POKEMON_NOTEBOOK_WORK", str(work))  # the kernel inherits the environment
    monkeypatch.delenv("POKEMON_NOTEBOOK_FULL", raising=False)
    if data:
        monkeypatch.setenv("POKEMON_NOTEBOOK_DATA", data)
    else:
        monkeypatch.delenv("POKEMON_NOTEBOOK_DATA", raising=False)
    nb = generator().build()
    for cell in nb.cells:  # it imports the package; it must not redefine it
        if cell.cell_type == "code":
            assert "class Classifier" not in cell.source and "def train_one_epoch" not in cell.source
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    from pokemon_classifier.models import read_checkpoint

    final = read_checkpoint(work / "quick" / "calibrated.pt")
    assert len(final["soup"]) >= 1 and final["temperature"] > 0 and 0 < final["unknown_threshold"] < 1
    return json.loads((work / "summary.json").read_text())


def test_notebook_runs_top_to_bottom_and_learns(tmp_path, monkeypatch):
    """Quick mode on the synthetic shapes: every step runs, and the model ends well above chance
    (1/6). The same cells on the shared data take minutes; the next test runs them."""
    summary = run_notebook(tmp_path, monkeypatch, "synthetic")
    assert summary["mode"] == "quick" and summary["synthetic"] is True
    assert summary["test_top1"] >= 0.8 and min(summary["val_top1"]) >= 0.8, summary


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "annotations.csv").is_file() or os.environ.get("POKEMON_NOTEBOOK_TEST_SHARED") != "1",
                    reason="runs the notebook on ../shared/data/pokemon (minutes): set POKEMON_NOTEBOOK_TEST_SHARED=1")
def test_notebook_learns_on_the_shared_data(tmp_path, monkeypatch):
    summary = run_notebook(tmp_path, monkeypatch, None)
    assert summary["mode"] == "quick" and summary["synthetic"] is False
    # chance is 1/151 = 0.0066; a linear head on 8 pictures per class reaches about 0.65
    assert summary["test_top1"] >= 0.4 and min(summary["val_top1"]) >= 0.4, summary
