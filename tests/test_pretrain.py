"Tests of medssl.pretrain: exact resume (stopped, killed, legacy checkpoints), caching, DDP equivalence (2 gloo processes), export, CLI."
import os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

CASE = textwrap.dedent('''
    "A tiny dataset and a norm-free backbone shared by the single-process and the torchrun runs."
    import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
    from medssl.pretrain import pretrain

    from tiny import TinyDS as _Tiny          # tests/fixtures/legacy_pretrain/tiny.py: images, labels, patients, reports

    class TinyDS(_Tiny):
        def __init__(self, n=16, size=32, seed=0): super().__init__(n, size, seed)

    from launch_case import NormFree         # tests/fixtures/launch_case.py: no BatchNorm, fixed initial weights

    def cxrnet():
        "A quarter-width cxrnet: batch norm everywhere."
        from medssl.models import backbone
        torch.manual_seed(0); return backbone("cxrnet", width=0.25)

    CLIP_TEXT = dict(text_kw=dict(dropout=0.0, dim=16, heads=2, depth=1))
    RUNS = {  # name -> (method, backbone, settings); the single-process run and the 2-process run share them
        "moco_v2": ("moco_v2", NormFree, dict(K=24, m=0.99)),
        "moco_bn": ("moco_v2", cxrnet, dict(K=24, m=0.99, split_bn=2)),   # one process, 2 BN groups == 2 processes
        "simclr": ("simclr", NormFree, dict()),                             # projector BN: global across processes
        "clip": ("clip", NormFree, CLIP_TEXT),
        "clip_cache": ("clip", NormFree, dict(CLIP_TEXT, accumulate=2)),    # gradient cache + gathers across processes
    }

    def run(name, out_dir, **kw):
        method, bb, hp = RUNS[name]
        return pretrain(method, TinyDS(), backbone=bb(), image_size=32, epochs=1, batch_size=8, lr=0.1,
                        device="cpu", out_dir=out_dir, progress=False, **{**hp, **kw})
''')

FIXTURES = Path(__file__).parent/"fixtures"/"legacy_pretrain"

@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("case")
    (d/"ddp_case.py").write_text(CASE)
    sys.path.insert(0, str(FIXTURES)); sys.path.insert(0, str(FIXTURES.parent)); sys.path.insert(0, str(d))
    import ddp_case
    yield d, ddp_case
    sys.path.remove(str(d)); sys.path.remove(str(FIXTURES.parent)); sys.path.remove(str(FIXTURES))

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch): monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path/"cache"))

def _sd(path): return torch.load(path, weights_only=True)

def test_resume_equals_uninterrupted(case, tmp_path):
    _, c = case
    from medssl.pretrain import pretrain
    from medssl.models import backbone
    bb = backbone("cxrnet", width=0.25)  # with BatchNorm: single-process resume must still be exact
    kw = dict(backbone=bb, image_size=32, epochs=3, batch_size=8, lr=0.05, progress=False, K=20, device="cpu")
    full = pretrain("moco_v2", c.TinyDS(24), out_dir=tmp_path/"full", **kw)
    part = pretrain("moco_v2", c.TinyDS(24), out_dir=tmp_path/"part", stop_after=1, **kw)
    assert not (tmp_path/"part"/"result.json").exists() and len(part.metrics) == 1
    res = pretrain("moco_v2", c.TinyDS(24), out_dir=tmp_path/"part", **kw)
    assert not res.reused and len(res.metrics) == 3
    a, b = _sd(full.backbone_path), _sd(res.backbone_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)      # bitwise
    ca, cb = (torch.load(r.checkpoint_path, weights_only=True) for r in (full, res))
    assert all(torch.equal(ca["method"][k], cb["method"][k]) for k in ca["method"])  # queue, key encoder, heads
    np.testing.assert_array_equal(full.metrics.loss, res.metrics.loss)
    other = pretrain("moco_v2", c.TinyDS(24), out_dir=tmp_path/"other", **{**kw, "seed": 1})
    assert not torch.equal(_sd(other.backbone_path)["conv1.weight"], a["conv1.weight"])  # the test can fail

def test_cache_reuse_and_key(case):
    _, c = case
    from medssl.pretrain import pretrain
    from medssl.models import backbone
    kw = dict(backbone="cxrnet", image_size=32, epochs=1, batch_size=8, progress=False, K=16, device="cpu")
    r1 = pretrain("moco_v2", c.TinyDS(16), **kw)
    r2 = pretrain("moco_v2", c.TinyDS(16), **kw)
    assert r2.reused and r2.key == r1.key and r2.run_dir == r1.run_dir
    r3 = pretrain("moco_v2", c.TinyDS(16), **{**kw, "K": 8})
    assert r3.key != r1.key and not r3.reused
    m = backbone("cxrnet", init=r1.backbone_path)                 # backbone-only export loads straight back
    sd = _sd(r1.backbone_path)
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)
    assert not any(k.startswith(("encoder_", "head", "queue", "fc.")) for k in sd)
    assert list(r1.metrics.columns)[:3] == ["epoch", "step", "lr"] and "loss" in r1.metrics

def test_bad_arguments(case):
    _, c = case
    from medssl.pretrain import pretrain
    with pytest.raises(ValueError, match="unknown method"): pretrain("byol", c.TinyDS(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"): pretrain("simclr", c.TinyDS(), epochs=0)
    with pytest.raises(ValueError, match="no hyper-parameter"): pretrain("simclr", c.TinyDS(), epochs=1, K=3, progress=False)
    with pytest.raises(ValueError, match="smaller than one batch"): pretrain("simclr", c.TinyDS(), epochs=1, batch_size=64, progress=False)

def test_ddp_two_processes_match_single(case, tmp_path):
    """torchrun, 2 gloo processes, global batch 8 (4 per process) vs one process with batch 8: MoCo v2 (without and with
    batch norm: shuffle-BN across processes), SimCLR (global BN), CLIP (gathers), CLIP through the gradient cache."""
    d, c = case
    names = list(c.RUNS)
    script = d/"ddp_run.py"
    script.write_text("import ddp_case\n" + "".join(f"ddp_case.run({m!r}, {str(tmp_path/('ddp_' + m))!r})\n" for m in names))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(FIXTURES), str(FIXTURES.parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    singles = {m: c.run(m, tmp_path/("single_" + m), accumulate=1) for m in names}   # meanwhile, the one-process runs (whole batch)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    for m, single in singles.items():
        per_process_bn = m == "moco_bn"   # MoCo keeps BN statistics per process: running averages are rank 0's
        keep = lambda k: not (per_process_bn and ("running_" in k or "num_batches" in k))
        a, b = _sd(single.backbone_path), _sd(tmp_path/("ddp_" + m)/"backbone.pt")
        close = lambda x, y: (x.float() - y.float()).abs().max() <= 1e-5 + 1e-4 * x.float().abs().max()  # float tolerance, relative to the tensor
        assert a.keys() == b.keys() and all(close(a[k], b[k]) for k in a if keep(k)), m
        np.testing.assert_allclose(pd.read_csv(tmp_path/("ddp_" + m)/"metrics.csv").loss, single.metrics.loss, rtol=1e-5)
        ca = torch.load(single.checkpoint_path, weights_only=True)["method"]
        cb = torch.load(tmp_path/("ddp_" + m)/"checkpoint.pt", weights_only=True)["method"]
        assert all(close(ca[k], cb[k]) for k in ca if keep(k)), m  # incl. queue, key encoder, heads
    assert not torch.equal(_sd(singles["moco_bn"].backbone_path)["conv1.weight"], _sd(singles["moco_v2"].backbone_path)["conv1.weight"])

def test_cli_parses_and_registers():
    import argparse
    from medssl.pretrain import add_cli, run_cli, parse_sets
    sub = argparse.ArgumentParser().add_subparsers()
    a = add_cli(sub).parse_args(["--method", "ssl+clip", "--data", "x", "--set", "ssl=vicreg", "c=0.5"])
    assert a.func is run_cli and parse_sets(a.set) == {"ssl": "vicreg", "c": 0.5}

def test_module_backbone_refuses_init(case):
    "A module starts from its own weights: an `init` beside it would be silently ignored, so it is an error."
    _, c = case
    from medssl.pretrain import pretrain
    with pytest.raises(ValueError, match="named backbone"):
        pretrain("simclr", c.TinyDS(), backbone=c.NormFree(), init="fractal", epochs=1, batch_size=8, progress=False)

def test_cli_fractal_proxy_feeds_init_fractal(capsys, tmp_path, monkeypatch):
    "`medssl pretrain --method supervised --data fractal` writes the file that `backbone(..., init='fractal')` loads."
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path))   # an empty cache, whatever ran before (CI shares one)
    import argparse
    from medssl.pretrain import add_cli
    from medssl.models import backbone, fractal_path
    sub = argparse.ArgumentParser().add_subparsers()
    a = add_cli(sub).parse_args(["--method", "supervised", "--data", "fractal", "--image-size", "32", "--epochs", "1",
                                 "--batch-size", "16", "--lr", "0.05", "--device", "cpu", "--no-progress"])
    assert not fractal_path("cxrnet").exists()
    with pytest.raises(FileNotFoundError): backbone("cxrnet", init="fractal")
    assert a.func(a) == 0 and fractal_path("cxrnet").exists()
    trained = torch.load(fractal_path("cxrnet"), weights_only=True)
    loaded = backbone("cxrnet", init="fractal").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.items())
    assert "trained" in capsys.readouterr().out


def test_killed_mid_epoch_resumes_exactly(case, tmp_path):
    "A run killed (SIGKILL) in the middle of its second epoch, started again, ends where the uninterrupted run ends."
    import signal, time
    d, c = case
    (d/"slow_case.py").write_text(textwrap.dedent('''
        import sys, time, torch, ddp_case
        class Slow(ddp_case.TinyDS):
            def __getitem__(self, i): time.sleep(0.03); return super().__getitem__(i)
        def run(out_dir):
            return ddp_case.pretrain("moco_v2", Slow(32), backbone=ddp_case.cxrnet(), image_size=32, epochs=3, batch_size=8,
                                     lr=0.05, K=16, device="cpu", out_dir=out_dir, progress=False)
        if __name__ == "__main__": run(sys.argv[1])
    '''))
    sys.path.insert(0, str(d)); import slow_case
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(FIXTURES), str(FIXTURES.parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    killed = tmp_path/"killed"
    p = subprocess.Popen([sys.executable, str(d/"slow_case.py"), str(killed)], env=env)
    t0 = time.time()
    while not (killed/"checkpoint.pt").exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.02)
    time.sleep(0.3)                                  # into epoch 2 (32 items x 30 ms per epoch)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (killed/"result.json").exists(), "the run finished before it could be killed"
    assert torch.load(killed/"checkpoint.pt", weights_only=True)["epoch"] == 1
    # both finishing runs in fresh processes with the killed run's environment: float sums depend on the thread count
    for out in (killed, tmp_path/"whole"): subprocess.run([sys.executable, str(d/"slow_case.py"), str(out)], env=env, check=True)
    resumed, whole = slow_case.run(killed), slow_case.run(tmp_path/"whole")     # finished runs: read back, not retrained
    assert resumed.reused and whole.reused
    a, b = _sd(whole.backbone_path), _sd(resumed.backbone_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(whole.metrics.loss, resumed.metrics.loss)


def _max_rel_diff(a: dict, b: dict) -> float:
    "The largest |a-b| / max|a| over the floating tensors of two state dicts."
    return max(((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12)).item()
               for k in a if a[k].is_floating_point())


def test_legacy_checkpoints_resume(tmp_path, monkeypatch):
    """Checkpoints written by medssl before the engine (tests/fixtures/legacy_pretrain, commit cbfceb1) resume with
    today's code to the old code's final weights and metrics, and their backbone files load.

    The old code ran on another machine: float sums there and here may differ in the last bits (another CPU's kernels;
    measured 1.6e-6 relative after the resumed epoch). So the weights must agree to 1e-4 relative and the losses to 1e-5,
    and a resume that loses the checkpoint's optimiser state (measured 0.36 and 1.1 relative) must fail that bound."""
    import json, shutil
    from medssl.pretrain import pretrain
    from medssl.models import backbone
    fx = Path(__file__).parent/"fixtures"/"legacy_pretrain"
    sys.path.insert(0, str(fx)); import tiny
    meta = json.loads((fx/"meta.json").read_text())
    monkeypatch.setattr("medssl.__version__", meta["version"])     # the version is part of a run's key
    for name, (method, kw) in tiny.RUNS.items():
        old = torch.load(fx/"full"/f"{name}.pt", weights_only=True)
        shutil.copytree(fx/"part"/name, tmp_path/name)
        r = pretrain(method, tiny.TinyDS(), backbone=tiny.backbone(), out_dir=tmp_path/name, **kw)
        assert r.key == meta["runs"][name] and not r.reused and len(r.metrics) == 2
        new = _sd(r.backbone_path)
        assert old.keys() == new.keys() and _max_rel_diff(old, new) < 1e-4, name
        np.testing.assert_allclose(r.metrics.loss, pd.read_csv(fx/"full"/f"{name}.csv").loss, rtol=1e-5)
        m = backbone("cxrnet", width=0.25, init=fx/"full"/f"{name}.pt")
        assert all(torch.equal(m.state_dict()[k], old[k]) for k in old)
        # the bound can fail: the same checkpoint without its optimiser state resumes elsewhere
        shutil.copytree(fx/"part"/name, tmp_path/f"{name}-lost")
        ck = torch.load(tmp_path/f"{name}-lost"/"checkpoint.pt", weights_only=True); ck["optimizer"]["state"] = {}
        torch.save(ck, tmp_path/f"{name}-lost"/"checkpoint.pt")
        lost = pretrain(method, tiny.TinyDS(), backbone=tiny.backbone(), out_dir=tmp_path/f"{name}-lost", **kw)
        assert _max_rel_diff(old, _sd(lost.backbone_path)) > 1e-2, name


def test_config_builds_cli_and_key(case):
    "Every `PretrainConfig` field is a command-line option; fields added with the engine leave old keys alone."
    import argparse, dataclasses
    _, c = case
    from medssl.pretrain import PretrainConfig, add_cli, config_from_args, run_config
    p = add_cli(argparse.ArgumentParser().add_subparsers())
    opts = {o for a in p._actions for o in a.option_strings}
    for f in dataclasses.fields(PretrainConfig):
        if f.name != "method_kw": assert {"--" + f.name.replace("_", "-"), "--no-" + f.name.replace("_", "-")} & opts, f.name
    a = p.parse_args(["--method", "simclr", "--data", "x", "--optimizer", "lars", "--milestones", "2", "4", "--nesterov"])
    cfg = config_from_args(a)
    assert (cfg.optimizer, cfg.milestones, cfg.nesterov) == ("lars", (2.0, 4.0), True)
    old = run_config(PretrainConfig("moco_v2", method_kw=dict(K=8)), c.TinyDS())
    assert set(old) == {"method", "data", "backbone", "init", "image_size", "epochs", "batch_size", "lr", "optimizer",
                        "weight_decay", "warmup_epochs", "momentum", "betas", "seed", "method_kw", "version"}
    assert run_config(dataclasses.replace(PretrainConfig("simclr"), accumulate=4), c.TinyDS())["accumulate"] == 4


def test_moved_names_warn():
    import warnings, medssl.pretrain as mp, medssl.methods, medssl.engine
    with pytest.warns(DeprecationWarning, match="medssl.methods"): assert mp.VICReg is medssl.methods.VICReg
    with pytest.warns(DeprecationWarning, match="medssl.engine"): assert mp.rng_state is medssl.engine.rng_state
    with pytest.warns(DeprecationWarning, match="medssl.bench_training"):
        import medssl.bench_training; assert mp.bench_moco_step is medssl.bench_training.bench_moco_step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mp.METHODS is medssl.methods.METHODS and mp.pretrain and mp.PretrainResult
