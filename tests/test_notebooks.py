"""The notebooks run top to bottom on the sample capture, in a kernel of this venv's Python."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
KERNEL = "mwtap-test"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec running this interpreter, found through JUPYTER_PATH (nothing installed globally)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mwtap test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return KERNEL


@pytest.mark.parametrize("name, figures", [("debug_session", 2), ("performance", 4)])
def test_notebook_runs_top_to_bottom(name, figures, kernel):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit without outputs"
    NotebookClient(nb, kernel_name=kernel, timeout=120, startup_timeout=60,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == figures  # every plot was drawn
    shown = [out.get("data", {}).get("text/plain", "") for out in outputs]
    assert any(text.startswith("Verdict: ") for text in shown) == (name == "debug_session")  # cap.verdict()
