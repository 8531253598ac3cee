"medssl replicate: papermill runner, resume, failures, unknown parameters, and the HTML report in a real browser."
import http.server, json, os, shutil, socketserver, subprocess, sys, threading
from functools import partial
from pathlib import Path
import nbformat, pytest
from medssl.replicate import replicate, PAPERS, write_report, ReplicationError

ROOT = Path(__file__).resolve().parents[1]

def fake_nb(d, name, body):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'\nout_dir = None\nn = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, str(Path(d)/f"{name}.ipynb"))

OK = """import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt, pandas as pd
from medssl.replicate import *
cfg, out = start_run(PAPER, profile, {'smoke': {'n': 1}, 'cpu': {'n': 2}, 'paper': {'n': 3}}, out_dir=out_dir, n=n)
fig, ax = plt.subplots(); ax.plot([0, cfg['n']]); save_figure(fig, out, 'fig1')
res = pd.DataFrame([dict(zip(RESULT_COLUMNS, [PAPER, 'fig1', 'auc', 'x', 0.7, 0.6, 0.8, 0.8, None, None]))])
finish_run(out, res, [claim(PAPER, 'c', 0.1, 0.05, (0.05, 0.15), (0.01, 0.09))], cfg)"""

@pytest.fixture
def fake_papers(tmp_path, monkeypatch):
    nbdir = tmp_path/"nbs"; nbdir.mkdir()
    fake_nb(nbdir, "moco_cxr", OK.replace("PAPER", "'moco_cxr'"))
    fake_nb(nbdir, "reports", OK.replace("PAPER", "'reports'"))
    fake_nb(nbdir, "big_ssl", "x = 1\nraise ValueError('boom')")
    monkeypatch.setenv("MEDSSL_NOTEBOOKS", str(nbdir))
    return tmp_path

def test_run_resume_force(fake_papers):
    out = fake_papers/"out"
    st = replicate(["moco_cxr", "reports"], profile="smoke", out=out, progress=False)
    assert st.status.tolist() == ["ran", "ran"]
    for p in ["moco_cxr", "reports"]:
        for f in ["executed.ipynb", "results.csv", "claims.csv", "run.json", "params.json", "figures/fig1.png"]: assert (out/p/f).exists(), (p, f)
    assert replicate(["moco_cxr"], profile="smoke", out=out, progress=False).status.tolist() == ["skipped (up to date)"]
    assert replicate(["moco_cxr"], profile="smoke", params={"n": 2}, out=out, progress=False).status.tolist() == ["ran"]
    assert replicate(["moco_cxr"], profile="smoke", params={"n": 2}, out=out, progress=False, force=True).status.tolist() == ["ran"]
    assert json.loads((out/"moco_cxr"/"params.json").read_text())["n"] == 2

def test_failure_names_notebook_and_cell_and_leaves_nothing(fake_papers):
    out = fake_papers/"out"
    with pytest.raises(ReplicationError, match=r"big_ssl.ipynb failed in cell \[3\] `x = 1` \(ValueError: boom\)"):
        replicate(["big_ssl"], profile="smoke", out=out, progress=False)
    assert not (out/"big_ssl").exists() and (out/"big_ssl.failed.ipynb").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]

def test_kernels_start_with_the_allocator_setting(fake_papers, monkeypatch):
    "The notebook's kernel sees medssl's malloc thresholds; a user's own GLIBC_TUNABLES is kept; the parent's environment is untouched."
    from medssl.core import MALLOC_TUNABLES
    nbdir = fake_papers/"nbs"
    check = "import os\nassert os.environ.get('GLIBC_TUNABLES') == EXPECTED, os.environ.get('GLIBC_TUNABLES')\n" + OK.replace("PAPER", "'moco_cxr'")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    fake_nb(nbdir, "moco_cxr", check.replace("EXPECTED", repr(MALLOC_TUNABLES)))
    assert replicate(["moco_cxr"], profile="smoke", out=fake_papers/"a", progress=False).status.tolist() == ["ran"]
    assert "GLIBC_TUNABLES" not in os.environ
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    fake_nb(nbdir, "moco_cxr", check.replace("EXPECTED", "'glibc.malloc.tcache_count=0'"))
    assert replicate(["moco_cxr"], profile="smoke", out=fake_papers/"b", progress=False).status.tolist() == ["ran"]

STAGE = """import json, os, torch
from pathlib import Path
import launch_case                                     # tests/fixtures: a norm-free encoder, a tiny dataset
r = launch_case.run(Path(out_dir)/'run')
torch.save(torch.load(r.backbone_path, weights_only=True), Path(out_dir)/'backbone.pt')
(Path(out_dir)/'stage.json').write_text(json.dumps(dict(gpus=os.environ.get('MEDSSL_GPUS'), launched=(r.run_dir/'torchrun.log').exists(),
                                                        loss=r.metrics.loss.tolist())))
"""

def test_gpus_flag_makes_pretraining_stages_torchrun_jobs(fake_papers, tmp_path, monkeypatch):
    "`medssl replicate --gpus 2`: the kernel sees $MEDSSL_GPUS, its `pretrain` call is a 2-process job (gloo), same result as without."
    import numpy as np, torch
    from medssl.cli import main
    fix = ROOT/"tests"/"fixtures"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fix), str(fix/"legacy_pretrain"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MEDSSL_GPUS", raising=False)
    fake_nb(fake_papers/"nbs", "moco_cxr", STAGE + OK.replace("PAPER", "'moco_cxr'"))
    run = lambda out, *flags: main(["replicate", "--paper", "moco_cxr", "--profile", "smoke", "--out", str(tmp_path/out), *flags])
    assert run("one") == 0 and run("two", "--gpus", "2") == 0
    a, b = (json.loads((tmp_path/o/"moco_cxr"/"stage.json").read_text()) for o in ("one", "two"))
    assert (a["gpus"], a["launched"]) == (None, False) and (b["gpus"], b["launched"]) == ("2", True)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    wa, wb = (torch.load(tmp_path/o/"moco_cxr"/"backbone.pt", weights_only=True) for o in ("one", "two"))
    assert all((wa[k] - wb[k]).abs().max() <= 1e-5 + 1e-4 * wa[k].abs().max() for k in wa)
    assert "MEDSSL_GPUS" not in os.environ                                   # only the kernels saw it
    with pytest.raises(SystemExit): run("bad", "--gpus", "0")

def test_cli_exit_codes(fake_papers):
    env = {**os.environ}
    r = subprocess.run(["medssl", "replicate", "--paper", "big_ssl", "--profile", "smoke", "--out", str(fake_papers/"o")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "big_ssl.ipynb failed in cell" in r.stderr
    r = subprocess.run(["medssl", "replicate", "--paper", "moco_cxr", "--profile", "smoke", "-p", "lr=0.1", "--out", str(fake_papers/"o")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "no parameter(s) ['lr']" in r.stderr
    r = subprocess.run(["medssl", "replicate", "--paper", "nope"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "invalid choice" in r.stderr

def test_cli_real_roots_checked_all_at_once(fake_papers, tmp_path):
    "Every malformed or missing root is reported in one go, each naming what was expected, and nothing runs (exit 2)."
    (tmp_path/"cx").mkdir(); (tmp_path/"cx"/"train.csv").write_text("Path\n")
    env = {**os.environ, "MEDSSL_DATA_SHENZHEN": str(tmp_path/"no-such-folder")}
    r = subprocess.run(["medssl", "replicate", "--paper", "moco_cxr", "--data", f"chexpert={tmp_path/'cx'}", "--data", "nope=/x",
                        "--out", str(tmp_path/"o")], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    for expected in ("chexpert:", "valid.csv", "shenzhen:", "does not exist", "nope:", "unknown dataset name"): assert expected in r.stderr, (expected, r.stderr)
    assert not (tmp_path/"o").exists()

def test_relative_out_is_resolved_where_the_command_runs(fake_papers, tmp_path):
    "A relative --out lands in the folder the command ran from, never beside the notebooks."
    here = tmp_path/"work"; here.mkdir()
    r = subprocess.run(["medssl", "replicate", "--paper", "moco_cxr", "--profile", "smoke", "--out", "rel-out"], cwd=here, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (here/"rel-out"/"report.html").exists() and (here/"rel-out"/"moco_cxr"/"run.json").exists()
    assert not (fake_papers/"nbs"/"rel-out").exists()

def test_outputs_follow_the_umask(fake_papers, tmp_path):
    "A group that shares a results folder can read it: files and folders get the user's umask, not 0600/0700."
    old = os.umask(0o022)
    try: replicate(["moco_cxr"], profile="smoke", out=tmp_path/"o", progress=False)
    finally: os.umask(old)
    for p in [tmp_path/"o"/"moco_cxr", tmp_path/"o"/"moco_cxr"/"run.json", tmp_path/"o"/"report.html", tmp_path/"o"/"moco_cxr"/"figures"/"fig1.png"]:
        assert p.stat().st_mode & 0o044 == 0o044, (p, oct(p.stat().st_mode))

def test_plan_prints_stages_and_cost(tmp_path):
    "--plan runs nothing: datasets real/phantom, stages with steps, and an estimate from a calibration."
    r = subprocess.run(["medssl", "replicate", "--paper", "moco_cxr", "--profile", "smoke", "--plan", "--out", str(tmp_path/"o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MoCo v2 pretraining" in r.stdout and "phantom" in r.stdout and "estimated total" in r.stdout
    assert not (tmp_path/"o").exists()

def _chromium():
    for c in ["chromium", "chromium-browser", "google-chrome"]:
        if shutil.which(c): return shutil.which(c)

def check_report_in_browser(out: Path, n_figures: int):
    "Serve `out` on 127.0.0.1, open report.html in headless Chromium, and check every image loaded and the scorecard exists."
    exe = _chromium()
    if exe is None: pytest.skip("chromium is not installed (.ci/run installs it)")
    (out/"_check.html").write_text("""<!doctype html><html><body><div id=result>pending</div>
<iframe id=f src="report.html" width=1200 height=800></iframe><script>
document.getElementById('f').onload = () => { const d = document.getElementById('f').contentDocument;
 const imgs = [...d.images]; const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
 document.getElementById('result').textContent = `images=${imgs.length} loaded=${ok} scorecard=${d.querySelectorAll('#scorecard table').length}`; };
</script></body></html>""")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{srv.server_address[1]}/_check.html"
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                            "--no-first-run", "--disable-sync", f"--user-data-dir={out/'_chrome'}", "--virtual-time-budget=10000", "--dump-dom", url],
                           capture_output=True, text=True, timeout=120)
        srv.shutdown()
    import re
    m = re.search(r"images=(\d+) loaded=(\d+) scorecard=(\d+)", r.stdout)
    assert m, f"report check did not run: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    images, loaded, scorecard = map(int, m.groups())
    assert images == n_figures and loaded == images and scorecard == 1, m.group(0)

def test_report_opens_in_browser(fake_papers):
    out = fake_papers/"out"
    replicate(["moco_cxr", "reports"], profile="smoke", out=out, progress=False)
    check_report_in_browser(out, n_figures=2)
    assert "2 of 2 decidable claims agree with the papers" in (out/"report.md").read_text()

REAL_NOTEBOOKS = sorted(p.stem for p in (ROOT/"nbs"/"replications").glob("*.ipynb"))

@pytest.mark.skipif(len(REAL_NOTEBOOKS) < 5, reason="not all five replication notebooks exist yet")
def test_smoke_suite_all_five(tmp_path, monkeypatch):
    "`medssl replicate --profile smoke` runs every paper's notebook and writes every expected file and a report that opens."
    monkeypatch.delenv("MEDSSL_NOTEBOOKS", raising=False)
    out = tmp_path/"out"
    r = subprocess.run(["medssl", "replicate", "--profile", "smoke", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    n_fig = 0
    for paper in PAPERS:
        d = out/paper
        for f in ["executed.ipynb", "results.csv", "claims.csv", "run.json", "params.json"]: assert (d/f).exists(), (paper, f)
        run = json.loads((d/"run.json").read_text())
        assert run["figures"], f"{paper} wrote no figure"
        n_fig += len(run["figures"])
        import pandas as pd
        assert len(pd.read_csv(d/"claims.csv")) > 0 and len(pd.read_csv(d/"results.csv")) > 0, paper
    check_report_in_browser(out, n_figures=n_fig)
