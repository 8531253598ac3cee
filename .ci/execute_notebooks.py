"""Store notebooks executed, as nbdev_test runs them: `python .ci/execute_notebooks.py nbs/05_losses.ipynb ...` (or no
argument: every library notebook and tutorial). Cells flagged `notest`, `slow` or `gpu` (MEDSSL_RUN_FLAGS=slow runs the
slow ones too), `#| eval: false` cells and `nbdev_export()` are skipped; each notebook runs in its own process and folder; outputs are written back in place.
Progress bars are switched off (TQDM_DISABLE) because stored outputs are read, not watched. Then run `nbdev_clean`.
tests/test_tutorials.py and tests/test_stored_outputs.py check what is stored."""
import os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"notest", "slow", "gpu"} - set(filter(None, os.environ.get("MEDSSL_RUN_FLAGS", "").split(",")))  # e.g. MEDSSL_RUN_FLAGS=slow

def flagged(source: str) -> bool:
    for line in source.splitlines():
        m = re.match(r"\s*#\|\s*(.*)", line)
        words = m.group(1).split() if m else []
        if words and (words[0] in SKIP or words[:2] == ["eval:", "false"]): return True
    return False

def execute(fn: Path) -> None:
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb = read_nb(fn)
    skip = lambda c: c.cell_type != "code" or flagged(c.source) or "nbdev_export(" in c.source
    for c in nb.cells:      # a skipped (slow) cell keeps what it stored; the others are run afresh
        if not skip(c): c.outputs, c.execution_count = [], None
    with working_directory(fn.parent): CaptureShell(fn).run_all(nb, exc_stop=True, preproc=skip)
    write_nb(nb, fn)

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one": execute(Path(sys.argv[2]).resolve()); sys.exit(0)
    nbs = [Path(a) for a in sys.argv[1:]] or sorted((ROOT/"nbs").glob("*.ipynb")) + sorted((ROOT/"nbs"/"tutorials").glob("*.ipynb"))
    env = {**os.environ, "TQDM_DISABLE": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    failed, limit = [], float(os.environ.get("MEDSSL_NB_TIMEOUT", 0)) or None     # seconds per notebook
    for fn in nbs:
        t0 = time.time()
        try: r = subprocess.run([sys.executable, __file__, "--one", str(fn)], env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired: r = subprocess.CompletedProcess([], 124, "", f"stopped after {limit} s; the notebook is unchanged")
        print(f"{fn}: {'ok' if r.returncode == 0 else 'FAILED'} in {time.time() - t0:.1f} s", flush=True)
        if r.returncode: failed.append(fn); print(r.stderr[-2000:])
    sys.exit(1 if failed else 0)
