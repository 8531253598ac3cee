"medssl.launch: every pretraining stage as a torchrun job ($MEDSSL_GPUS): two gloo processes equal one process at the same global batch."
import os, sys, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from medssl import launch

FIX = Path(__file__).parent/"fixtures"
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def case(monkeypatch, tmp_path):
    "The fixture module importable here and in the job's processes; a fresh cache."
    path = os.pathsep.join([str(FIX), str(FIX/"legacy_pretrain"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path); monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path/"cache"))
    monkeypatch.delenv("MEDSSL_GPUS", raising=False)
    monkeypatch.syspath_prepend(str(FIX/"legacy_pretrain")); monkeypatch.syspath_prepend(str(FIX))
    import launch_case
    return launch_case

def _sd(p): return torch.load(p, weights_only=True)

def _close(a, b): return (a.float() - b.float()).abs().max() <= 1e-5 + 1e-4 * a.float().abs().max()

def test_gpus_2_is_a_torchrun_job_equal_to_one_process(case, tmp_path, monkeypatch):
    single = case.run(tmp_path/"single")
    monkeypatch.setenv("MEDSSL_GPUS", "2"); (tmp_path/"marks").mkdir()
    job = case.run(tmp_path/"job", marks=tmp_path/"marks")
    assert sorted(p.name for p in (tmp_path/"marks").iterdir()) == ["rank0", "rank1"]      # two processes read the data
    assert (tmp_path/"job"/"torchrun.log").exists() and not (tmp_path/"job"/"job.pkl").exists()
    assert not job.reused and job.key == single.key and len(job.metrics) == 2
    np.testing.assert_allclose(job.metrics.loss, single.metrics.loss, rtol=1e-5)
    a, b = _sd(single.backbone_path), _sd(job.backbone_path)
    assert a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    ca, cb = (torch.load(r.checkpoint_path, weights_only=True)["method"] for r in (single, job))
    assert all(_close(ca[k], cb[k]) for k in ca)                                         # projector, its global BN statistics
    assert not torch.equal(a["conv1.weight"], case.NormFree().state_dict()["conv1.weight"])  # it trained
    again = case.run(tmp_path/"job", marks=tmp_path/"marks")                              # finished: reused, nothing launched
    assert again.reused and again.key == job.key

def test_interrupted_job_resumes(case, tmp_path, monkeypatch):
    "A job stopped after one epoch returns the partial run; the next call's job continues it to the uninterrupted result."
    full = case.run(tmp_path/"full")
    monkeypatch.setenv("MEDSSL_GPUS", "2")
    part = case.run(tmp_path/"part", stop_after=1)
    assert len(part.metrics) == 1 and not (tmp_path/"part"/"result.json").exists()
    done = case.run(tmp_path/"part")
    np.testing.assert_allclose(done.metrics.loss, full.metrics.loss, rtol=1e-5)
    a, b = _sd(full.backbone_path), _sd(done.backbone_path)
    assert all(_close(a[k], b[k]) for k in a)

def test_what_a_worker_cannot_import_trains_here(case, tmp_path, monkeypatch):
    "A dataset class defined in __main__ (a notebook) is not sent to a job: a warning, and the run trains in this process."
    class NotebookDS(case.TinyDS): pass
    NotebookDS.__module__ = "__main__"
    monkeypatch.setenv("MEDSSL_GPUS", "2")
    from medssl.pretrain import pretrain
    with pytest.warns(RuntimeWarning, match="__main__"):
        r = pretrain("simclr", NotebookDS(), backbone=case.NormFree(), image_size=32, epochs=1, batch_size=8, device="cpu",
                     out_dir=tmp_path/"here", progress=False)
    assert len(r.metrics) == 1 and not (tmp_path/"here"/"torchrun.log").exists()

def test_failed_job_names_the_error(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)torchrun job failed.*invalid literal"):
        launch.run_job(launch.Job(2), tmp_path, "bad", int, "x")
    assert (tmp_path/"job.pkl").exists()                                                  # kept for a rerun by hand

def test_environment_and_command():
    assert launch.job_from_env({"MEDSSL_GPUS": "1"}) is None and launch.job_from_env({"MEDSSL_GPUS": "4", "LOCAL_RANK": "0"}) is None
    job = launch.job_from_env({"MEDSSL_GPUS": "4", "MEDSSL_NNODES": "2", "MEDSSL_RDZV_ENDPOINT": "n0:29400",
                               "MEDSSL_LAUNCHER": "srun --nodes=2 --ntasks-per-node=1"})
    cmd = launch.torchrun_command(job, "/shared/run/job.pkl", "key1")
    assert cmd[:3] == ["srun", "--nodes=2", "--ntasks-per-node=1"] and cmd[3] == sys.executable
    for a, b in (("--nnodes", "2"), ("--nproc-per-node", "4"), ("--rdzv-endpoint", "n0:29400"), ("--rdzv-id", "key1")):
        assert cmd[cmd.index(a) + 1] == b
    assert cmd[-3:] == ["-m", "medssl.launch", "/shared/run/job.pkl"] and "--standalone" not in cmd
    with pytest.raises(ValueError, match="MEDSSL_RDZV_ENDPOINT"): launch.job_from_env({"MEDSSL_NNODES": "2"})
    with pytest.raises(ValueError, match="MEDSSL_GPUS"): launch.job_from_env({"MEDSSL_GPUS": "0"})
