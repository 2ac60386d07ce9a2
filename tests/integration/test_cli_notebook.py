"""docs/quickstart.ipynb runs top to bottom in a real ipykernel (nbclient), and its rich
outputs are there: the job graph as SVG, the JobClient's status and metrics table."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def _kernel_name(tmp_path: Path) -> str:
    """The python3 kernel of this interpreter (registered into a temp prefix if missing)."""
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() or spec.argv[0] in ("python", "python3"):
            return "python3"
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(prefix=str(tmp_path), kernel_name="raystream-test")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(tmp_path / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")])
    return "raystream-test"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    nb = nbformat.read(ROOT / "docs" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name=_kernel_name(tmp_path), resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError with the cell's traceback if an assert in the notebook fails
    html = [
        out["data"]["text/html"]
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if "text/html" in out.get("data", {})
    ]
    graph = next(h for h in html if "<svg" in h)
    assert "hash(" in graph and "count" in graph and "parallelism 2" in graph
    job = next(h for h in html if "FINISHED" in h and "<table" in h)
    assert "<table" in job and "records out" in job and ">count<" in job
    progress = [h for h in html if h.startswith("<pre") and "wordcount" in h]
    assert progress and "FINISHED" in progress[-1] and "100%" in progress[-1], progress
