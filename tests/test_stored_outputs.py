"""Library notebooks and result pages are committed executed with clean outputs (the tutorials: tests/test_tutorials.py).

Re-store them with `python .ci/execute_notebooks.py [NB ...]` then `nbdev_clean`; the result pages with
`medssl replicate --profile cpu --out medssl-out --publish nbs/results`.
"""
import json, re, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_tutorials import assert_clean_outputs, assert_cleaned, code_cells, src

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
def test_outputs_are_clean(nb): assert_clean_outputs(nb)

@pytest.mark.parametrize("nb", LIBRARY, ids=lambda p: p.stem)
def test_notebook_is_cleaned(nb): assert_cleaned(nb)
