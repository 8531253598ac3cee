"Tests of the training side: optimisers and schedules, the gradient cache, accumulation, global BN and gradient averaging in 2 gloo processes, exact resume of fine-tunes and sweeps."
import math, socket, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import torch.nn as nn
import torch.nn.functional as F
import torch.multiprocessing as mp
from torch.utils.data import Dataset, Subset
from medssl.optim import LARS, make_optimizer, make_scheduler, lr_lambda, param_groups
from medssl.engine import train_step, fit, Objective, Checkpoint
from medssl.gradcache import grad_cache_backward, split_batch
from medssl.distributed import GlobalBatchNorm, convert_global_bn, all_reduce_grads

CPU = torch.device("cpu")

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch): monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))


class NormFree(nn.Module):
    "A backbone without batch norm: micro-batches and processes cannot change its statistics."
    def __init__(self, seed=0):
        super().__init__(); torch.manual_seed(seed)
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1); self.num_features = 16
    def forward_features(self, x): return F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3))
    def forward(self, x): return self.forward_features(x)


sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "legacy_pretrain"))
from tiny import TinyDS    # images, three labels, patients, report texts

class Reports(TinyDS):
    "`n` 32 px images with labels, patients and report texts."
    def __init__(self, n=16, seed=0): super().__init__(n, 32, seed)


# --- optimisers and schedules ------------------------------------------------------------------------------------

def test_lars_nesterov_and_exclusion():
    "LARS against SimCLR's pseudocode with Nesterov; excluded (1-d) parameters step like SGD with lr inside momentum."
    torch.manual_seed(0); lin = nn.Linear(4, 3)
    w0 = [p.detach().clone() for p in lin.parameters()]; v = [torch.zeros_like(p) for p in w0]
    opt = make_optimizer(lin.parameters(), "lars", 0.2, weight_decay=1e-3, momentum=0.9, nesterov=True, eta=0.01)
    assert [g.get("lars_exclude", False) for g in opt.param_groups] == [False, True]
    lin(torch.randn(5, 4)).sum().backward(); gs = [p.grad.clone() for p in lin.parameters()]
    opt.step()
    g0 = gs[0] + 1e-3 * w0[0]; t = 0.01 * w0[0].norm() / g0.norm()
    v0 = 0.2 * t * g0; assert torch.allclose(lin.weight, w0[0] - (0.9 * v0 + 0.2 * t * g0), atol=1e-7)
    v1 = 0.2 * gs[1]; assert torch.allclose(lin.bias, w0[1] - (0.9 * v1 + 0.2 * gs[1]), atol=1e-7)   # no decay, no trust ratio


def test_optimizer_factory_families():
    ps = list(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).parameters())
    assert type(make_optimizer(ps, "adam", 1e-3)) is torch.optim.Adam
    o = make_optimizer(ps, "adamw", 1e-4, betas=(0.9, 0.98), exclude_bn_bias=True)
    assert o.defaults["betas"] == (0.9, 0.98) and [g["weight_decay"] for g in o.param_groups] == [1e-4, 0.0]
    assert isinstance(make_optimizer(ps, "lars", 0.1), LARS)
    with pytest.raises(ValueError, match="unknown optimizer"): make_optimizer(ps, "rmsprop", 0.1)


def test_schedules_warmup_then_shape():
    f = lr_lambda("step", 100, 10, milestones=(50, 75), gamma=0.5)
    assert [f(0), f(9), f(10), f(50), f(80)] == [0.1, 1.0, 1.0, 0.5, 0.25]
    c = lr_lambda("cosine", 100, 10); assert c(10) == 1.0 and abs(c(55) - 0.5) < 1e-12 and c(100) == 0.0
    assert lr_lambda("constant", 10, 4)(1) == 0.5
    opt = make_optimizer(nn.Linear(1, 1).parameters(), "sgd", 1.0)
    s = make_scheduler(opt, None, 10); opt.step(); s.step(); assert opt.param_groups[0]["lr"] == 1.0


# --- gradient cache and accumulation ------------------------------------------------------------------------------

def _params(m): return torch.cat([p.detach().flatten() for p in m.parameters()])

def test_grad_cache_step_equals_full_batch_simclr():
    "SimCLR, BN in eval mode: two SGD steps with accumulate=4 (gradient cache) equal two whole-batch steps."
    from medssl.methods import SimCLR
    from medssl.models import backbone
    g = torch.Generator().manual_seed(1); b = dict(x1=torch.rand(16, 1, 32, 32, generator=g), x2=torch.rand(16, 1, 32, 32, generator=g))
    def run(k):
        torch.manual_seed(0); m = SimCLR(backbone("cxrnet", width=0.25), 32, views=None).eval()
        opt = make_optimizer(m.parameters(), "sgd", 0.1); sc = torch.amp.GradScaler("cpu", enabled=False)
        outs = [train_step(m, b, opt, None, sc, CPU, accumulate=k)["loss"] for _ in range(2)]
        return m, outs
    (m1, o1), (m4, o4) = run(1), run(4)
    assert torch.allclose(torch.stack(o1), torch.stack(o4), atol=1e-6)
    assert torch.allclose(_params(m1), _params(m4), atol=1e-6)
    torch.manual_seed(0); m = SimCLR(backbone("cxrnet", width=0.25), 32, views=None).eval()   # plain accumulation: another objective
    for p in split_batch(b, 4): (m(p)["loss"] / 4).backward()
    m_full = run(1)[0]; assert not torch.allclose(_params(m), _params(m_full), atol=1e-3)


def test_grad_cache_pretraining_equals_full_batch_clip(tmp_path):
    """CLIP on a norm-free backbone (no dropout): pretraining with accumulate=4 equals the whole-batch run. (SGD: Adam
    would turn the float noise on attention's key bias, whose true gradient is 0, into full-size steps.)"""
    from medssl.pretrain import pretrain
    kw = dict(backbone=NormFree(), image_size=32, epochs=2, batch_size=8, lr=0.05, optimizer="sgd", device="cpu",
              progress=False, text_kw=dict(dropout=0.0, dim=16, heads=2, depth=1))
    a = pretrain("clip", Reports(), out_dir=tmp_path / "one", **kw)
    b = pretrain("clip", Reports(), out_dir=tmp_path / "four", accumulate=4, **kw)
    np.testing.assert_allclose(a.metrics.loss, b.metrics.loss, rtol=1e-5)
    sa, sb = (torch.load(r.checkpoint_path, weights_only=True)["method"] for r in (a, b))
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)         # every weight, the learned temperature too
    assert a.key != b.key


def test_grad_cache_replays_dropout():
    "With dropout, the cached gradient equals the gradient of the same chunked forward kept in one graph."
    from medssl.methods import CLIP
    ds = Reports(8)
    torch.manual_seed(0); m = CLIP(NormFree(), 32, ds, dim=8, views="none", text_kw=dict(dim=16, heads=2, depth=1, dropout=0.3))
    items = [m.item(ds, i) for i in range(8)]; b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    st = torch.get_rng_state()
    z = [m.embed(p) for p in split_batch(b, 2)]
    m.loss(torch.cat([u for u, _ in z]), torch.cat([v for _, v in z]))["loss"].backward()
    ref = [p.grad.clone() for p in m.parameters()]; m.zero_grad()
    torch.set_rng_state(st); grad_cache_backward(m, b, 2)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(ref, m.parameters()))


def test_plain_accumulation_in_finetune_equals_full_batch():
    from medssl.finetuning import finetune
    ds = Reports(32); full = Subset(ds, list(range(32)))
    def net():
        torch.manual_seed(0); m = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 8), nn.Tanh()); m.num_features = 8; return m
    a = finetune(net(), full, Reports(16, 1), Reports(16, 2), epochs=2, lr=1e-2, batch_size=16, progress=False)
    b = finetune(net(), full, Reports(16, 1), Reports(16, 2), epochs=2, lr=1e-2, batch_size=16, accumulate=4, progress=False)
    np.testing.assert_allclose(a.test_proba, b.test_proba, atol=1e-6)


def test_moco_refuses_to_split_its_batch():
    from medssl.methods import MoCoV2
    m = MoCoV2(NormFree(), 32, K=16, views=None)
    opt = make_optimizer(m.parameters(), "sgd", 0.1); sc = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(ValueError, match="cannot split"):
        train_step(m, dict(im_q=torch.rand(4, 1, 32, 32), im_k=torch.rand(4, 1, 32, 32)), opt, None, sc, CPU, accumulate=2)


# --- two processes: global BN, gradient averaging -----------------------------------------------------------------

def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))

def _bn_worker(rank, world, port, x, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    net = convert_global_bn(_bn_net()); n = len(x) // world
    y = net(x[rank * n:(rank + 1) * n]); y.square().mean().backward()     # this process's mean; DDP would average
    all_reduce_grads(net.parameters())
    ys = [torch.zeros_like(y) for _ in range(world)]; dist.all_gather(ys, y.detach())
    if rank == 0: out.put((torch.cat(ys).numpy(), [p.grad.numpy() for p in net.parameters()], [b.numpy() for b in net.buffers()]))
    dist.destroy_process_group()

def test_global_batchnorm_and_gradient_average_two_processes():
    "Two gloo processes with GlobalBatchNorm and averaged gradients equal one process with the whole batch."
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = mp.get_context("spawn"); q = ctx.Queue(); port = _free_port()
    procs = [ctx.Process(target=_bn_worker, args=(r, 2, port, x, q)) for r in range(2)]
    for p in procs: p.start()
    y_d, g_d, b_d = q.get(timeout=120)
    for p in procs: p.join(30)
    net = _bn_net(); y = net(x); y.square().mean().backward()
    np.testing.assert_allclose(y_d, y.detach().numpy(), atol=1e-5)
    for a, p in zip(g_d, net.parameters()): np.testing.assert_allclose(a, p.grad.numpy(), atol=1e-5)
    for a, b in zip(b_d, net.buffers()): np.testing.assert_allclose(a, b.numpy(), atol=1e-5)   # running statistics too


# --- exact resume of fine-tunes, segmentation and sweep cells -----------------------------------------------------

def test_finetune_resumes_exactly(tmp_path):
    from medssl.finetuning import finetune
    from medssl.models import backbone
    tr, va, te = Reports(32), Reports(16, 1), Reports(16, 2)
    def net(): torch.manual_seed(0); return backbone("cxrnet", width=0.25)
    kw = dict(epochs=3, lr=1e-2, batch_size=8, optimizer="sgd", optimizer_kw=dict(nesterov=True), schedule="step",
              schedule_kw=dict(milestones=(2,)), augment="moco_cxr", progress=False)
    whole = finetune(net(), tr, va, te, **kw)
    part = finetune(net(), tr, va, te, ckpt_dir=tmp_path, stop_after=2, **kw); assert part.epochs_run == 2
    done = finetune(net(), tr, va, te, ckpt_dir=tmp_path, **kw)
    np.testing.assert_array_equal(done.test_proba, whole.test_proba)
    pd.testing.assert_frame_equal(done.history.drop(columns="seconds"), whole.history.drop(columns="seconds"))
    again = finetune(net(), tr, va, te, ckpt_dir=tmp_path, **kw)          # finished: returns from the checkpoint
    np.testing.assert_array_equal(again.test_proba, whole.test_proba)


def test_sweep_resumes_inside_an_interrupted_cell(tmp_path):
    "A fine-tune cell interrupted after 1 of 3 epochs resumes from its partial checkpoint and gives the uninterrupted result."
    from medssl.finetuning import sweep, finetune, _cell_name
    from medssl.models import backbone
    tr, va, te = Reports(32), Reports(16, 1), Reports(16, 2)
    def net(): return backbone("cxrnet", width=0.25)
    kw = dict(inits={"r": net}, train_ds=tr, val_ds=va, test_ds=te, protocols=("finetune",),
              finetune_kw=dict(epochs=3, lr=1e-2, batch_size=8), progress=False, device="cpu")
    clean = sweep(out_dir=tmp_path / "clean", **kw)
    # the interrupted run: the same cell's fine-tune, stopped after one epoch, checkpointed where the sweep looks
    from medssl.core import seed_everything
    seed_everything(0); bb = net()
    finetune(bb, Subset(tr, list(range(32))), va, epochs=3, lr=1e-2, batch_size=8, seed=0, device="cpu", progress=False,
             ckpt_dir=tmp_path / "cut" / "partial" / _cell_name("r", "finetune", 1.0, 0, 0), stop_after=1)
    resumed = sweep(out_dir=tmp_path / "cut", **kw)
    pd.testing.assert_frame_equal(clean.drop(columns="seconds"), resumed.drop(columns="seconds"))
    assert not (tmp_path / "cut" / "partial" / _cell_name("r", "finetune", 1.0, 0, 0)).exists()


def test_segmentation_resumes_exactly(tmp_path):
    from medssl.segment import UNet, train_segmentation
    from medssl.models import backbone
    class Masks(Reports):
        def __getitem__(self, i): d = super().__getitem__(i); d["mask"] = (d["image"] > 0.5).float(); return d
    def net(): torch.manual_seed(0); return UNet(backbone("cxrnet", width=0.25))
    kw = dict(epochs=2, lr=3e-3, batch_size=8, progress=False)
    whole = train_segmentation(net(), Masks(16), Masks(8, 1), Masks(8, 2), **kw)
    train_segmentation(net(), Masks(16), Masks(8, 1), ckpt_dir=tmp_path, stop_after=1, **kw)
    done = train_segmentation(net(), Masks(16), Masks(8, 1), Masks(8, 2), ckpt_dir=tmp_path, **kw)
    np.testing.assert_array_equal(done.test_dice, whole.test_dice)


def test_fit_rejects_bad_arguments():
    o = Objective(nn.Linear(2, 1), F.mse_loss, y="t"); opt = torch.optim.SGD(o.parameters(), 0.1)
    with pytest.raises(ValueError, match="sched_per"): fit(o, None, opt, 1, CPU, sched_per="batch")
    with pytest.raises(ValueError, match="accumulate"): fit(o, None, opt, 1, CPU, accumulate=0)
