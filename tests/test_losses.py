"Tests of medssl.losses against slow loops written from the papers' pseudocode, closed forms and lightly."
import math, os, socket
import pytest, torch
import torch.nn.functional as F
import torch.multiprocessing as mp
from medssl.losses import (info_nce, info_nce_logits, nt_xent, multi_positive_nt_xent, pair_mask, patient_mask,
                           clip_loss, convirt_loss, CLIPLoss, vicreg_loss, barlow_twins_loss, joint_loss, gather_with_grad)


def _cos(a, b): return float(a @ b / (a.norm() * b.norm()))


def loop_nt_xent(z1, z2, T):
    "Algorithm 1 of Azizi et al. (2021): interleave views as z_{2k-1}, z_{2k}; L = 1/2N sum_k [l(2k-1,2k) + l(2k,2k-1)]."
    z = [v for pair in zip(z1, z2) for v in pair]
    M = len(z)
    s = [[_cos(z[i], z[j]) for j in range(M)] for i in range(M)]
    def l(i, j): return -math.log(math.exp(s[i][j] / T) / sum(math.exp(s[i][k] / T) for k in range(M) if k != i))
    return sum(l(2 * k, 2 * k + 1) + l(2 * k + 1, 2 * k) for k in range(M // 2)) / M


def loop_info_nce(q, k, queue, T):
    "MoCo Eq. 1 for each query, averaged."
    out = 0.0
    for qi, ki in zip(q, k):
        pos = math.exp(_cos(qi, ki) / T)
        out += -math.log(pos / (pos + sum(math.exp(_cos(qi, kn) / T) for kn in queue)))
    return out / len(q)


def loop_multi_positive(z, pos, T):
    "Mean over anchors with positives of the mean -log p(p | i), p over positives, denominator over k != i."
    M, losses = len(z), []
    for i in range(M):
        P = [j for j in range(M) if pos[i][j] and j != i]
        if not P: continue
        den = sum(math.exp(_cos(z[i], z[k]) / T) for k in range(M) if k != i)
        losses.append(sum(-math.log(math.exp(_cos(z[i], z[p]) / T) / den) for p in P) / len(P))
    return sum(losses) / len(losses)


def loop_image_text(u, v, s, lam):
    "ConVIRT Eq. 3 with CLIP's symmetric case at lam=1/2: row-wise softmaxes over the batch, written out."
    N, li2t, lt2i = len(u), 0.0, 0.0
    for i in range(N):
        li2t += -math.log(math.exp(s * _cos(u[i], v[i])) / sum(math.exp(s * _cos(u[i], v[j])) for j in range(N)))
        lt2i += -math.log(math.exp(s * _cos(v[i], u[i])) / sum(math.exp(s * _cos(v[i], u[j])) for j in range(N)))
    return (lam * li2t + (1 - lam) * lt2i) / N


@pytest.fixture
def g(): return torch.Generator().manual_seed(0)


def test_nt_xent_matches_algorithm_1(g):
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for T in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, T).item() == pytest.approx(loop_nt_xent(z1, z2, T), rel=1e-5)


def test_nt_xent_closed_forms():
    for N in (1, 2, 7):
        assert nt_xent(torch.ones(N, 3), torch.ones(N, 3), 0.3).item() == pytest.approx(math.log(2 * N - 1), abs=1e-5)
    z = torch.eye(6)[:4]
    assert nt_xent(z, z, 0.25).item() == pytest.approx(math.log(1 + 6 * math.exp(-4)), rel=1e-5)


def test_multi_positive_matches_loop(g):
    z = torch.randn(8, 4, generator=g)
    pos = patient_mask(["a", "a", "b", "c", "a", "d", "b", "e"])  # e and d and c have no positives
    assert multi_positive_nt_xent(z, pos, 0.2).item() == pytest.approx(loop_multi_positive(z, pos.tolist(), 0.2), rel=1e-5)
    with pytest.raises(ValueError, match="no positive"): multi_positive_nt_xent(z, torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="pos_mask must be"): multi_positive_nt_xent(z, torch.zeros(7, 7))


def test_info_nce_matches_loop_and_closed_forms(g):
    q, k, queue = (torch.randn(n, 6, generator=g) for n in (4, 4, 9))
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(loop_info_nce(q, k, queue, 0.2), rel=1e-5)
    e = torch.eye(12, dtype=torch.double)
    for K, T in ((1, 1.0), (8, 0.07), (8, 0.5)):
        assert info_nce(e[:3], e[:3], e[3:3 + K], T).item() == pytest.approx(math.log1p(K * math.exp(-1 / T)), rel=1e-5)
    assert info_nce(torch.ones(3, 4), torch.ones(3, 4), torch.ones(16, 4), 0.07).item() == pytest.approx(math.log(17), rel=1e-5)
    logits, labels = info_nce_logits(q, k, queue)
    assert logits.shape == (4, 10) and labels.tolist() == [0] * 4


def test_info_nce_no_grad_through_keys(g):
    q = torch.randn(3, 4, generator=g, requires_grad=True); k = torch.randn(3, 4, generator=g, requires_grad=True)
    info_nce(q, k, torch.randn(5, 4, generator=g)).backward()
    assert q.grad is not None and k.grad is None


def test_image_text_losses_match_loop(g):
    u, v = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert clip_loss(u, v, 2.0).item() == pytest.approx(loop_image_text(u, v, 2.0, 0.5), rel=1e-5)
    assert convirt_loss(u, v, 0.1, 0.75).item() == pytest.approx(loop_image_text(u, v, 10.0, 0.75), rel=1e-5)
    assert clip_loss(u, v, torch.tensor(2.0)).item() == pytest.approx(clip_loss(v, u, 2.0).item(), rel=1e-6)


def loop_vicreg(z1, z2, lam=25., mu=25., nu=1., gamma=1., eps=1e-4):
    "VICReg written element by element (Bardes et al. 2022, official normalisation)."
    n, d = z1.shape
    inv = sum(float((z1[i, j] - z2[i, j]) ** 2) for i in range(n) for j in range(d)) / (n * d)
    def var(z): return sum(max(0.0, gamma - math.sqrt(float(z[:, j].var()) + eps)) for j in range(d)) / d
    def cov(z):
        m = z.mean(0)
        return sum(float(sum((z[i, a] - m[a]) * (z[i, b] - m[b]) for i in range(n)) / (n - 1)) ** 2
                   for a in range(d) for b in range(d) if a != b) / d
    return lam * inv + mu * (var(z1) + var(z2)) / 2 + nu * (cov(z1) + cov(z2))


def loop_barlow(z1, z2, lam=5e-3, eps=1e-5):
    "Barlow Twins Algorithm 1 with explicit sums."
    n, d = z1.shape
    def std(z): return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)
    a, b = std(z1), std(z2)
    c = [[float(sum(a[i, p] * b[i, q] for i in range(n))) / n for q in range(d)] for p in range(d)]
    return sum((1 - c[p][p]) ** 2 for p in range(d)) + lam * sum(c[p][q] ** 2 for p in range(d) for q in range(d) if p != q)


def test_vicreg_barlow_match_loops(g):
    z1, z2 = torch.randn(6, 4, generator=g) * 0.5, torch.randn(6, 4, generator=g)
    assert vicreg_loss(z1, z2).item() == pytest.approx(loop_vicreg(z1, z2), rel=1e-5)
    assert barlow_twins_loss(z1, z2).item() == pytest.approx(loop_barlow(z1, z2), rel=1e-5)
    assert barlow_twins_loss(z1, z2).item() == pytest.approx(barlow_twins_loss(z2, z1).item(), rel=1e-5)


def test_bad_arguments():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    for f in (lambda: nt_xent(a, b, 0), lambda: info_nce(a, b, a, -1.0), lambda: convirt_loss(a, b, T=0),
              lambda: CLIPLoss(T=0)):
        with pytest.raises(ValueError, match="must be > 0"): f()
    for f in (nt_xent, clip_loss, convirt_loss, vicreg_loss, barlow_twins_loss):
        with pytest.raises(ValueError, match="same shape"): f(a, b[:3])
    with pytest.raises(ValueError, match="c must be"): joint_loss(a.sum(), b.sum(), c=-0.1)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randn(3, 4, dtype=torch.double, generator=g, requires_grad=True) for _ in range(2))
    mask = patient_mask(["x", "x", "y", "y", "x", "z"])
    assert torch.autograd.gradcheck(lambda z: multi_positive_nt_xent(z, mask, 0.3), (torch.cat([a, b]).detach().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda s: clip_loss(a, b, s), (torch.tensor(3.0, dtype=torch.double, requires_grad=True),))


def test_against_lightly(g):
    lightly_loss = pytest.importorskip("lightly.loss")
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(lightly_loss.NTXentLoss(temperature=0.2)(z1, z2).item(), rel=1e-5)
    assert vicreg_loss(z1, z2).item() == pytest.approx(lightly_loss.VICRegLoss()(z1, z2).item(), rel=1e-5)
    assert barlow_twins_loss(z1, z2).item() == pytest.approx(lightly_loss.BarlowTwinsLoss()(z1, z2).item(), rel=1e-4)


def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _clip_worker(rank, world, port, img, txt, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    n = len(img) // world
    u = img[rank * n:(rank + 1) * n].clone().requires_grad_()
    v = txt[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = clip_loss(u, v, 3.0)
    (loss / world).backward()  # all_gather's backward sums every rank's gradient into the local rows
    grads = [torch.zeros_like(u) for _ in range(world)]
    dist.all_gather(grads, u.grad)
    l = loss.detach().clone(); dist.all_reduce(l)
    if rank == 0: out.put((float(l) / world, torch.cat(grads).tolist()))
    dist.destroy_process_group()


def test_clip_loss_distributed_matches_single_process(g):
    "Two gloo processes with gathered embeddings give the loss and image gradients of one full-batch process."
    img, txt = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    ctx = mp.get_context("spawn"); q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_clip_worker, args=(r, 2, port, img, txt, q)) for r in range(2)]
    for p in procs: p.start()
    loss_d, grad_d = q.get(timeout=60)
    for p in procs: p.join(30)
    u = img.clone().requires_grad_()
    loss = clip_loss(u, txt, 3.0); loss.backward()
    assert loss_d == pytest.approx(loss.item(), rel=1e-5)
    # each rank's loss is the mean over its own rows, so the mean over ranks is the full-batch loss
    assert torch.allclose(torch.tensor(grad_d), u.grad, atol=1e-6)


def _global_loss_worker(rank, world, port, z1, z2, name, out):
    "Every process computes the *global* loss on gathered embeddings (SimCLR, VICReg, Barlow Twins do)."
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    fn = dict(nt_xent=lambda a, b: nt_xent(a, b, T=0.5), vicreg=vicreg_loss, barlow=barlow_twins_loss)[name]
    n = len(z1) // world
    a, b = (z[rank * n:(rank + 1) * n].clone().requires_grad_() for z in (z1, z2))
    loss = fn(gather_with_grad(a), gather_with_grad(b)); loss.backward()
    g = a.grad / world                                        # DDP's gradient averaging
    gs = [torch.zeros_like(g) for _ in range(world)]; dist.all_gather(gs, g)
    if rank == 0: out.put((float(loss), torch.cat(gs).tolist()))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["nt_xent", "vicreg", "barlow"])
def test_gather_with_grad_global_losses_match_single_process(g, name):
    """gather_with_grad's backward sums every process's gradient into its rows: with DDP's averaging, two processes that
    each compute the global loss get the one-process gradient of the whole batch."""
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    ctx = mp.get_context("spawn"); q = ctx.Queue(); port = _free_port()
    procs = [ctx.Process(target=_global_loss_worker, args=(r, 2, port, z1, z2, name, q)) for r in range(2)]
    for p in procs: p.start()
    loss_d, grad_d = q.get(timeout=60)
    for p in procs: p.join(30)
    fn = dict(nt_xent=lambda a, b: nt_xent(a, b, T=0.5), vicreg=vicreg_loss, barlow=barlow_twins_loss)[name]
    a = z1.clone().requires_grad_(); loss = fn(a, z2); loss.backward()
    assert loss_d == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(torch.tensor(grad_d), a.grad, atol=1e-6)
