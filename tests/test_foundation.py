"Project skeleton: packaging, CLI, nbdev export/clean, README and the docs site."
import configparser, json, os, re, shutil, stat, subprocess, sys
from pathlib import Path
import pytest
import medssl
from medssl.core import resolve_profile, cache_key, atomic_write

ROOT = Path(__file__).resolve().parents[1]

def run(cmd, cwd=ROOT, env=None, check=True):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and r.returncode: raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_settings_ini():
    cfg = configparser.ConfigParser(); cfg.read(ROOT/"settings.ini"); d = cfg["DEFAULT"]
    assert d["allowed_cell_metadata_keys"] == "tags"
    assert d["tst_flags"].split() == ["notest", "slow", "gpu"]
    assert d["update_pyproject"] == "False"
    dev = d["dev_requirements"].split()
    for pin in ["nbdev==2.4.14", "fastcore>=1.12.3,<1.15", "execnb>=0.1.12,<0.2", "ghapi>=1.0.3,<1.1"]: assert pin in dev
    assert not (ROOT/"pyproject.toml").exists()
    for top in ["nbs", "medssl", "settings.ini", "setup.py", "README.md", "tests", "_quarto.yml", ".ci/run", "LICENSE"]:
        assert (ROOT/top).exists(), top

def test_torch_requirements_accept_local_build():
    "The declared ranges must accept the installed torch/torchvision, so installing never forces a download."
    from importlib.metadata import version
    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser(); cfg.read(ROOT/"settings.ini")
    reqs = {Requirement(r).name: Requirement(r) for r in cfg["DEFAULT"]["requirements"].split()}
    for name in ["torch", "torchvision"]:
        v = version(name).split("+")[0]
        assert reqs[name].specifier.contains(v), (name, v, reqs[name])

def test_version_cli():
    r = run(["medssl", "--version"])
    assert r.stdout.strip() == f"medssl {medssl.__version__}"

def test_cli_unknown_command_fails():
    r = run(["medssl", "no-such-command"], check=False)
    assert r.returncode != 0 and "invalid choice" in r.stderr

def _copy_project(dst):
    for name in ["nbs", "medssl", "settings.ini", "setup.py", "_quarto.yml", "README.md"]:
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, dst/name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else: shutil.copy2(src, dst/name)

def test_export_has_no_drift(tmp_path):
    "Running nbdev_export on the committed notebooks reproduces the committed medssl/*.py exactly."
    _copy_project(tmp_path)
    run(["nbdev_export"], cwd=tmp_path)
    for p in sorted((ROOT/"medssl").glob("*.py")):
        assert (tmp_path/"medssl"/p.name).read_text() == p.read_text(), f"medssl/{p.name} differs from its notebook: run nbdev_export"
    assert sorted(q.name for q in (tmp_path/"medssl").glob("*.py")) == sorted(q.name for q in (ROOT/"medssl").glob("*.py"))

def _nb(cells):
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}

def test_parameters_tag_survives_nbdev_clean(tmp_path):
    shutil.copy2(ROOT/"settings.ini", tmp_path/"settings.ini"); (tmp_path/"nbs").mkdir()
    nb = tmp_path/"nbs"/"p.ipynb"
    nb.write_text(json.dumps(_nb([
        {"cell_type": "code", "execution_count": 3, "id": "abc", "metadata": {"tags": ["parameters"], "collapsed": True}, "outputs": [], "source": ["profile = 'smoke'\n", "n_bootstrap = 10"]},
        {"cell_type": "code", "execution_count": 4, "id": "def", "metadata": {}, "outputs": [], "source": ["print(profile)"]}])))
    run(["nbdev_clean", "--fname", str(nb)], cwd=tmp_path)
    cleaned = json.loads(nb.read_text())
    assert cleaned["cells"][0]["metadata"] == {"tags": ["parameters"]}
    r = run(["papermill", "--help-notebook", str(nb)], cwd=tmp_path)
    assert "profile" in r.stdout and "n_bootstrap" in r.stdout

@pytest.mark.parametrize("nb", sorted((ROOT/"nbs"/"replications").glob("*.ipynb")), ids=lambda p: p.stem)
def test_replication_parameters_listed(nb):
    "papermill sees every assignment of the parameters cell (it silently drops lines it cannot parse, e.g. '<=' in a comment)."
    import ast
    cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = [t.id for n in ast.parse("".join(cell["source"])).body if isinstance(n, ast.Assign) for t in n.targets]
    r = run(["papermill", "--help-notebook", str(nb)])
    assert "Unable to parse" not in r.stdout + r.stderr, (nb.name, r.stderr[-500:])
    for name in ["profile", "out_dir", "device"] + names: assert name in r.stdout, (nb.name, name)

def test_readme_is_generated_from_index():
    r = run([sys.executable, ".ci/make_readme.py", "--check"], check=False)
    assert r.returncode == 0, r.stdout

def test_readme_has_exactly_two_commands():
    blocks = re.findall(r"```sh\n(.*?)\n```", (ROOT/"README.md").read_text(), re.S)
    assert len(blocks) == 2, blocks
    main_job, tests_cmd = blocks
    assert "pip install" in main_job and "pip install" in tests_cmd
    assert "nbdev_test" in tests_cmd and "pytest" in tests_cmd

def test_docs_site_pages_and_sidebar(tmp_path):
    "nbdev_proc_nbs prepares a page for every notebook and a sidebar in reading order (Quarto itself is not needed)."
    _copy_project(tmp_path)
    fake = tmp_path/"bin"; fake.mkdir()
    (fake/"quarto").write_text("#!/bin/sh\necho 'quarto stand-in: not installed on this machine' >&2\nexit 1\n")
    (fake/"quarto").chmod(0o755)   # nbdev_proc_nbs only checks that a quarto binary exists; it never calls it
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    run(["nbdev_proc_nbs", "--n_workers", "1"], cwd=tmp_path, env=env)
    proc, nbs = tmp_path/"_proc", ROOT/"nbs"
    notebooks = sorted(p.relative_to(nbs) for p in nbs.rglob("*.ipynb") if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))
    for rel in notebooks: assert (proc/rel).exists(), f"no docs page for {rel}"
    assert (proc/"_quarto.yml").read_text() == (ROOT/"_quarto.yml").read_text()
    sidebar = (tmp_path/"nbs"/"sidebar.yml").read_text()
    listed = re.findall(r"^\s*- (\S+\.ipynb)\s*$", sidebar, re.M)
    for rel in notebooks:
        if rel.name != "index.ipynb": assert str(rel) in listed, f"{rel} missing from sidebar"
    for folder in ["", "tutorials/", "replications/"]:
        sect = [e for e in listed if e.startswith(folder) and "/" not in e[len(folder):] and e != "index.ipynb"]
        assert sect == sorted(sect), f"sidebar section {folder or 'library'} out of order: {sect}"

def test_core_profile_and_cache_key():
    table = {p: {"epochs": i, "size": 32 * (i + 1)} for i, p in enumerate(["smoke", "cpu", "paper"])}
    assert resolve_profile("paper", table, epochs=7) == {"epochs": 7, "size": 96}
    with pytest.raises(ValueError, match="unknown parameter"): resolve_profile("cpu", table, lr=1)
    assert cache_key(a=1, b=2) == cache_key(b=2, a=1) != cache_key(a=1, b=3)

def test_atomic_write_binary(tmp_path):
    p = tmp_path/"x.bin"
    with atomic_write(p, "wb") as f: f.write(b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
