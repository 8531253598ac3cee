"""The README's main job, exactly as printed, in a fresh copy of the repository.

The command is read from README.md (its first ```sh block), never retyped here: if the README changes, this test
follows it. Only the profile is swapped (`cpu` -> `smoke`) so it fits in CI. It runs from the root of a fresh copy,
with the README's relative `--out`, an empty cache and its own virtual environment (so its `pip install -e .`
does not re-point the medssl the rest of the suite imports), then checks that `report.html` is where the README
says and that the run wrote nothing else into the checkout.
"""
import os, re, shlex, shutil, subprocess, sys, venv
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT/"README.md").read_text(), re.S)

def main_job() -> str:
    return readme_commands()[0].strip()

def out_folder(cmd: str) -> str:
    "The `--out` folder of the README's `medssl replicate` command (its default when the README gives none)."
    words = shlex.split(cmd)
    for k, w in enumerate(words):
        if w == "--out": return words[k + 1]
        if w.startswith("--out="): return w.split("=", 1)[1]
    return "medssl-out"

def fresh_copy(dest: Path) -> Path:
    "The repository's tracked and unignored files (what a clone of this working tree holds), committed in a new git repo."
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT/f
        if not src.exists() and not src.is_symlink(): continue       # deleted in the working tree, not yet committed
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink(): os.symlink(os.readlink(src), dest/f)
        else: shutil.copy2(src, dest/f)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=dest, capture_output=True, check=True)
    git("init", "-q"); git("add", "-A"); git("commit", "-q", "-m", "copy")
    return dest

def test_readme_main_job_names_its_report():
    cmd = main_job()
    assert "medssl replicate" in cmd and "--profile cpu" in cmd, cmd
    assert f"{out_folder(cmd)}/report.html" in (ROOT/"README.md").read_text(), "the README must say where the report appears"

@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_readme_main_job_as_printed(tmp_path):
    cmd = main_job().replace("--profile cpu", "--profile smoke")
    repo = fresh_copy(tmp_path/"medssl")
    env_dir = tmp_path/"venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)   # pip comes from the system site
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDSSL_NOTEBOOKS", "MEDSSL_RESULTS", "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir/'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(env_dir), MEDSSL_CACHE=str(tmp_path/"empty-cache"),
               PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    (env_dir/"bin"/"pip").write_text(f"#!/bin/sh\nexec '{env_dir/'bin'/'python'}' -m pip \"$@\"\n"); (env_dir/"bin"/"pip").chmod(0o755)
    r = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"README main job failed ({cmd}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    out = out_folder(cmd)
    assert (repo/out/"report.html").is_file(), f"no {out}/report.html in the copy's root"
    status = subprocess.run(["git", "status", "--porcelain", "-z", "--ignored", "--untracked-files=all"], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.split("\0")
    allowed = (f"{out}/", "medssl.egg-info/", "build/")                 # the named output folder and pip's own egg-info
    stray = [l for l in filter(None, status) if not any(l[3:].startswith(a) for a in allowed) and "__pycache__/" not in l]
    assert not stray, f"the main job wrote into the checkout: {stray[:20]}"
