"""The notebooks run top to bottom headless, show what they promise, clean up after
themselves, and are stored without outputs."""

import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

CELL_TIMEOUT = 900
"""Seconds a cell may run: only a guard against hangs (a loaded 2-core machine needs
minutes for the training cells)."""

EXPECTED = {
    "gradient_maps": {
        "figures": 5,
        "texts": (
            "of pixels over-exposed",
            "mean squared gradient, LDR inside",
            "modulation layers:",
            "gradient energy inside the clipped region",
        ),
    },
    "sweep_results": {"figures": 2, "texts": ("| variant |", "loss=l1", "loss=tanh_l1")},
}
"""Per notebook: the fewest figures it draws and text its outputs must contain."""


def test_both_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["gradient_maps.ipynb", "sweep_results.ipynb"]
    assert sorted(EXPECTED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_headless_and_shows_its_results(path, monkeypatch):
    expected = EXPECTED[path.stem]
    monkeypatch.setenv("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory(prefix="hdrunet-nbtest-") as scratch:
        work, tmp = Path(scratch, "work"), Path(scratch, "tmp")
        work.mkdir()
        tmp.mkdir()
        monkeypatch.setenv("TMPDIR", str(tmp))  # the kernel's (and its tools') temp folder
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            resources={"metadata": {"path": str(work)}},
        ).execute()
        # torch keeps its compile cache (torchinductor_<user>) in the temp folder by design
        left_behind = sorted(
            p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")
        )
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= expected["figures"], f"{len(figures)} figures drawn"
    text = "".join(_text(o) for o in outputs)
    missing = [t for t in expected["texts"] if t not in text]
    assert not missing, f"not in the outputs: {missing}"
    assert not left_behind, f"temporary files left by the notebook: {left_behind}"
