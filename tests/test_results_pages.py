"""The docs keep one result page per replication (`nbs/results/<paper>.ipynb`, written by `medssl.publish`).

A page records hashes of the settings and of the library code it was produced with; when either changes, the page is
stale and this test says which page to regenerate and with which command.
"""
import json
from pathlib import Path
from medssl.publish import stale
from medssl.report import TITLES

RESULTS = Path(__file__).resolve().parents[1]/"nbs"/"results"

def test_every_paper_has_a_page():
    missing = [p for p in TITLES if not (RESULTS/f"{p}.ipynb").exists()]
    assert not missing, f"no result page for {missing}: medssl replicate --profile cpu --out medssl-out --publish nbs/results"

def test_pages_are_not_stale():
    msgs = stale(RESULTS)
    assert not msgs, "\n".join(msgs)

def test_pages_show_a_scorecard_and_figures():
    for p in sorted(RESULTS.glob("*.ipynb")):
        cells = json.loads(p.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert "## Scorecard" in text and "## Protocol" in text, p.name
        pngs = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert pngs, f"{p.name} holds no figure"
