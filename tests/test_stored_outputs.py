"""Library notebooks and result pages are committed executed with clean outputs (the tutorials: tests/test_tutorials.py).

Re-store them with `python .ci/execute_notebooks.py [NB ...]` then `nbdev_clean`; the result pages with
`medssl replicate --profile cpu --out medssl-out --publish nbs/results`.
"""
import json, re, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_tutorials import PATH_RE, WARNING_RE, TQDM_RE, WIDGET, code_cells, output_texts, src

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT/"nbs").glob("*.ipynb"))
PAGES = sorted((ROOT/"nbs"/"results").glob("*.ipynb"))
FLAG = re.compile(r"^\s*#\|\s*(slow|notest|gpu|eval:\s*false)\b", re.M)
SHOWS = re.compile(r"\bplt\.show\(\)|\bprint\(|\bdisplay\(")
TOP_SHOW = re.compile(r"^(?:[^\s#].*;\s*)?plt\.show\(\)", re.M)      # plt.show() run by the cell itself, not inside a def

def test_notebooks_found():
    assert len(LIBRARY) >= 60 and len(PAGES) >= 5, (len(LIBRARY), len(PAGES))

@pytest.mark.parametrize("nb", LIBRARY, ids=lambda p: p.stem)
def test_library_notebook_is_stored_executed(nb):
    "A notebook that prints or plots in a cell the tests run holds outputs; every such figure is stored; no stored error."
    run = [c for c in code_cells(nb) if not FLAG.search(src(c)) and "nbdev_export(" not in src(c)]
    if any(SHOWS.search(src(c)) for c in run):
        assert any(c.get("outputs") for c in run), f"{nb.name} has no outputs: python .ci/execute_notebooks.py {nb.relative_to(ROOT)}"
    for c in code_cells(nb):
        if TOP_SHOW.search(src(c)) and not FLAG.search(src(c)):
            assert any("image/png" in o.get("data", {}) for o in c.get("outputs", [])), f"{nb.name}: figure not stored:\n{src(c)[:300]}"
        assert not any(o["output_type"] == "error" for o in c.get("outputs", [])), f"{nb.name}: a stored error in\n{src(c)[:300]}"

@pytest.mark.parametrize("nb", LIBRARY + PAGES, ids=lambda p: p.stem)
def test_outputs_are_clean(nb):
    "No machine path, warning, stderr text or progress-bar debris in any stored output."
    for c in code_cells(nb):
        where = f"{nb.name}, cell:\n{src(c)[:200]}\n---\n"
        for o in c.get("outputs", []): assert WIDGET not in o.get("data", {}), where + "a widget (progress bar) output"
        for kind, text in output_texts(c):
            assert kind != "stderr", where + f"stderr output (a warning or a progress bar):\n{text[:500]}"
            for name, rx in (("an absolute machine path", PATH_RE), ("a warning", WARNING_RE), ("tqdm debris", TQDM_RE)):
                m = rx.search(text)
                assert m is None, where + f"{name} in the output ({kind}): ...{text[max(0, m.start() - 120):m.end() + 120]}..."

@pytest.mark.parametrize("nb", LIBRARY, ids=lambda p: p.stem)
def test_notebook_is_cleaned(nb):
    "`nbdev_clean` ran: no execution counts, no widget state."
    d = json.loads(nb.read_text())
    assert "widgets" not in d["metadata"], f"{nb.name}: widget state is stored (a notebook progress bar ran)"
    assert all(c.get("execution_count") is None for c in d["cells"]), f"{nb.name}: run nbdev_clean"
