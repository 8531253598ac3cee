"Tests of medssl.queue: ring buffer against a deque, state round trips, EMA, split BN and shuffled forward."
import collections, io, socket
import pytest, torch
import torch.nn as nn
import torch.multiprocessing as mp
from medssl.queue import (MemoryQueue, MomentumEncoder, SplitBatchNorm, convert_split_bn, shuffled_forward,
                          concat_all_gather)


def test_ring_buffer_matches_deque():
    g = torch.Generator().manual_seed(0)
    K, dim = 7, 3
    mq, ref = MemoryQueue(dim, K, generator=g), collections.deque(maxlen=K)
    counter = 0
    for B in [3, 3, 2, 5, 1, 9, 4, 7, 7, 2]:  # sizes that do not divide K, and larger than K
        keys = torch.arange(counter, counter + B, dtype=torch.float).repeat(dim, 1).T
        counter += B
        mq.enqueue(keys); ref.extend(keys[:, 0].tolist())
        assert int(mq.ptr) == counter % K
        newest_first = [mq.queue[(int(mq.ptr) - 1 - i) % K, 0].item() for i in range(K)]
        n = min(len(ref), K)  # slots not yet written still hold the random initial keys
        assert newest_first[:n] == list(reversed(ref))[:n]


def test_queue_state_dict_round_trip_through_file():
    mq = MemoryQueue(4, 10, generator=torch.Generator().manual_seed(1))
    mq.enqueue(torch.randn(6, 4)); mq.enqueue(torch.randn(6, 4))
    buf = io.BytesIO(); torch.save(mq.state_dict(), buf); buf.seek(0)
    mq2 = MemoryQueue(4, 10); mq2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(mq2.queue, mq.queue) and int(mq2.ptr) == int(mq.ptr) == 2


def test_queue_initial_keys_are_unit_and_seeded():
    a = MemoryQueue(8, 16, generator=torch.Generator().manual_seed(3))
    b = MemoryQueue(8, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a(), b()) and torch.allclose(a().norm(dim=1), torch.ones(16))
    with pytest.raises(ValueError, match="K must be"): MemoryQueue(8, 0)


def test_momentum_encoder_ema_closed_form():
    torch.manual_seed(0)
    q_enc = nn.Linear(4, 2)
    k_enc = MomentumEncoder(q_enc, m=0.5)
    w_k0 = k_enc.encoder.weight.clone(); w_q = q_enc.weight.detach().clone()
    with torch.no_grad(): q_enc.weight.add_(2.0)
    for _ in range(3): k_enc.update(q_enc)
    # after n updates with fixed theta_q: theta_k = m^n theta_k0 + (1 - m^n) theta_q
    assert torch.allclose(k_enc.encoder.weight, 0.125 * w_k0 + 0.875 * (w_q + 2.0))
    assert len([p for p in k_enc.parameters() if p.requires_grad]) == 0
    assert all(p.requires_grad for p in q_enc.parameters())  # the query encoder is untouched


def test_momentum_encoder_m1_is_frozen_and_m0_copies():
    q_enc = nn.Linear(3, 3)
    frozen, copy_ = MomentumEncoder(q_enc, m=1.0), MomentumEncoder(q_enc, m=0.0)
    w0 = frozen.encoder.weight.clone()
    with torch.no_grad(): q_enc.weight.mul_(-1)
    frozen.update(q_enc); copy_.update(q_enc)
    assert torch.equal(frozen.encoder.weight, w0) and torch.equal(copy_.encoder.weight, q_enc.weight)


def test_split_bn_equals_bn_on_each_group():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 5, 5)
    sbn = SplitBatchNorm(3, num_splits=3).train()
    bn = nn.BatchNorm2d(3).train()
    y = sbn(x)
    for i in range(3):
        assert torch.allclose(y[4 * i:4 * i + 4], nn.BatchNorm2d(3).train()(x[4 * i:4 * i + 4]), atol=1e-5)
    bn(x)
    assert torch.allclose(sbn.running_mean, bn.running_mean) and torch.allclose(sbn.running_var, bn.running_var)


def test_convert_split_bn_keeps_state_and_eval_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net.train(); net(torch.randn(8, 1, 6, 6)); net.eval()
    x = torch.randn(2, 1, 6, 6)
    before = net(x)
    convert_split_bn(net, 4).eval()
    assert isinstance(net[1], SplitBatchNorm) and torch.allclose(net(x), before)


def test_shuffled_forward_single_process():
    torch.manual_seed(0)
    lin = nn.Linear(5, 2)
    x = torch.randn(6, 5)
    assert torch.allclose(shuffled_forward(lin, x, torch.Generator().manual_seed(0)), lin(x))  # order restored
    assert concat_all_gather(x) is x


def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _ddp_worker(rank, world, port, x, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    n = len(x) // world
    local = x[rank * n:(rank + 1) * n]
    ident = shuffled_forward(nn.Identity(), local, torch.Generator().manual_seed(rank))  # rank 0's permutation wins
    bn = nn.Sequential(nn.BatchNorm1d(x.shape[1], affine=False)).train()
    seen = []
    class Spy(nn.Module):
        def forward(self, z): seen.append(z.clone()); return bn(z)
    keys = shuffled_forward(Spy(), local, torch.Generator().manual_seed(0))
    mq = MemoryQueue(x.shape[1], K=10, generator=torch.Generator().manual_seed(0))
    mq.enqueue(local, gather=True)  # gathers the keys of both ranks, in rank order
    out.put((rank, torch.equal(ident, local), seen[0].tolist(), keys.tolist(), bn(local).tolist(),
             torch.equal(mq.queue[:len(x)], x) and int(mq.ptr) == len(x)))
    dist.destroy_process_group()


def test_shuffled_forward_two_processes():
    "Across 2 gloo processes keys come back in order, and each rank normalises a mixed subset of the global batch."
    x = torch.arange(16.).view(8, 2) ** 1.5
    ctx = mp.get_context("spawn"); q = ctx.Queue(); port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, x, q)) for r in range(2)]
    for p in procs: p.start()
    res = sorted([q.get(timeout=60) for _ in range(2)])
    for p in procs: p.join(30)
    assert all(r[5] for r in res)  # every rank's queue holds the keys of all ranks
    assert all(r[1] for r in res)  # identity encoder: every rank gets its own rows back, in order
    shuffled = torch.tensor(res[0][2] + res[1][2])
    assert sorted(shuffled[:, 0].tolist()) == sorted(x[:, 0].tolist())  # a permutation of the global batch
    # every key equals batch norm over the subset its sample was shuffled into (on whichever rank)
    expect = {}
    for _, _, seen, _, _, _ in res:
        seen = torch.tensor(seen)
        normed = (seen - seen.mean(0)) / torch.sqrt(seen.var(0, unbiased=False) + 1e-5)
        for row, k in zip(seen, normed): expect[tuple(row.tolist())] = k
    mixed = False
    for rank, _, _, keys, plain, _ in res:
        local = x[rank * 4:(rank + 1) * 4]
        for row, key in zip(local, torch.tensor(keys)): assert torch.allclose(key, expect[tuple(row.tolist())], atol=1e-5)
        mixed |= not torch.allclose(torch.tensor(keys), torch.tensor(plain), atol=1e-5)
    assert mixed  # the statistics differ from those of the rank's own batch
