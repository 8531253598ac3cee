"""The tutorials are committed executed, with clean outputs, and their exercises keep the blank / check / solution form.

A tutorial opened on GitHub or on the docs site must teach without being run: every figure is there, and no output
shows a machine path, a warning or a progress bar. These tests read the committed notebooks only (fast); re-executing
a tutorial is `nbdev_test --path nbs/tutorials/NN_x.ipynb` (which also runs every exercise's solution through its check).
"""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT/"nbs"/"tutorials").glob("*.ipynb"))

PATH_RE = re.compile(r"(?<![\w.])/(root|home|tmp|work)\b")          # an absolute path of the machine that ran it
WARNING_RE = re.compile(r"Warning\b|WARNING")                         # DeprecationWarning, UserWarning, TqdmWarning, ...
TQDM_RE = re.compile(r"\d+%\|[^\n]*\||\d+it \[|[\d.]+(it|s)/(s|it)\]|IProgress not found")   # bars and tqdm's notice
WIDGET = "application/vnd.jupyter.widget-view+json"                    # a notebook progress bar is a widget

def cells(nb): return json.loads(nb.read_text())["cells"]
def src(c): return "".join(c["source"])
def code_cells(nb): return [c for c in cells(nb) if c["cell_type"] == "code"]

def output_texts(cell):
    "Every text an output of `cell` shows (images excluded: base64 may contain anything)."
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream": yield o["name"], "".join(o["text"])
        elif o["output_type"] == "error": yield "error", f"{o['ename']}: {o['evalue']}\n" + "\n".join(o.get("traceback", []))
        else:
            for k, v in o.get("data", {}).items():
                if k.startswith("text/") or k.endswith("json"): yield k, v if isinstance(v, str) else "".join(v) if isinstance(v, list) else json.dumps(v)

def test_tutorials_found():
    assert len(TUTORIALS) >= 8, [p.name for p in TUTORIALS]

@pytest.mark.parametrize("nb", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_stored_executed(nb):
    "Outputs are committed: the notebook has outputs, every figure cell holds its figure, and no cell stopped with an error."
    cs = code_cells(nb)
    assert any(c.get("outputs") for c in cs), f"{nb.name} has no outputs: execute it and commit the result (see the module docstring)"
    for c in cs:
        kinds = {k for o in c.get("outputs", []) for k in o.get("data", {})}
        if "plt.show()" in src(c):
            assert "image/png" in kinds, f"{nb.name}: the figure of this cell is not stored:\n{src(c)[:300]}"
        assert not any(o["output_type"] == "error" for o in c.get("outputs", [])), f"{nb.name}: a stored error in\n{src(c)[:300]}"

def assert_clean_outputs(nb):
    "No machine path, warning, stderr text, widget or progress-bar debris in any stored output of `nb`."
    for c in code_cells(nb):
        where = f"{nb.name}, cell:\n{src(c)[:200]}\n---\n"
        for o in c.get("outputs", []): assert WIDGET not in o.get("data", {}), where + "a widget (progress bar) output"
        for kind, text in output_texts(c):
            assert kind != "stderr", where + f"stderr output (a warning or a progress bar):\n{text[:500]}"
            for name, rx in (("an absolute machine path", PATH_RE), ("a warning", WARNING_RE), ("tqdm debris", TQDM_RE)):
                m = rx.search(text)
                assert m is None, where + f"{name} in the output ({kind}): ...{text[max(0, m.start() - 120):m.end() + 120]}..."

@pytest.mark.parametrize("nb", TUTORIALS, ids=lambda p: p.stem)
def test_outputs_are_clean(nb): assert_clean_outputs(nb)

def assert_cleaned(nb):
    "`nbdev_clean` ran: no execution counts and no cell metadata but `tags` (no timings, no machine-specific keys)."
    d = json.loads(nb.read_text())
    assert "widgets" not in d["metadata"], f"{nb.name}: widget state is stored (a notebook progress bar ran)"
    assert set(d["metadata"]) <= {"kernelspec", "jekyll", "jupytext", "doc"}, d["metadata"].keys()
    for c in d["cells"]:
        assert set(c.get("metadata", {})) <= {"tags", "hide_input"}, (nb.name, c["metadata"])
        assert c.get("execution_count") is None, f"{nb.name}: run nbdev_clean"

@pytest.mark.parametrize("nb", TUTORIALS, ids=lambda p: p.stem)
def test_notebook_is_cleaned(nb): assert_cleaned(nb)

EX_RE = re.compile(r"^\*\*(\d+)\.\*\*", re.M)

def exercises(nb):
    "`(number, blank, check, solution)` cells of each exercise: the four cells after its `**k.**` statement."
    cs = cells(nb)
    start = next(i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and "## Exercises" in src(c))
    found = []
    for i in range(start, len(cs)):
        m = EX_RE.match(src(cs[i])) if cs[i]["cell_type"] == "markdown" else None
        if m: found.append((int(m.group(1)), *cs[i + 1:i + 4]))
    return found

@pytest.mark.parametrize("nb", TUTORIALS, ids=lambda p: p.stem)
def test_exercises_leave_a_blank_with_a_check_and_a_folded_solution(nb):
    ex = exercises(nb)
    assert [k for k, *_ in ex] == list(range(1, len(ex) + 1)) and len(ex) >= 2, f"{nb.name}: exercises {[k for k, *_ in ex]}"
    for k, blank, check, sol in ex:
        call = f"check_{k}("
        assert re.search(r"=\s*\.\.\.\s*(#|$)", src(blank), re.M), f"{nb.name} exercise {k}: no blank (`name = ...`):\n{src(blank)}"
        assert src(check).startswith(call), f"{nb.name} exercise {k}: the cell after the blank must be its check:\n{src(check)}"
        assert src(sol).startswith("#| code-fold: true"), f"{nb.name} exercise {k}: the solution cell must be folded:\n{src(sol)[:200]}"
        assert call in src(sol), f"{nb.name} exercise {k}: the solution must run the check"
        said = lambda c: " ".join(t for _, t in output_texts(c))
        assert f"Exercise {k} is not answered yet" in said(check), f"{nb.name} exercise {k}: the stored check output should ask for an answer"
        assert f"Exercise {k}: correct" in said(sol), f"{nb.name} exercise {k}: the stored solution output should pass its check"
