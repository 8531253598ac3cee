"Correctness tests for medssl.similarity."
import numpy as np, pytest, torch
import matplotlib; matplotlib.use("Agg")
from medssl.similarity import (svd_reduce, cca_correlations, svcca, linear_cka, permutation_null, cov_similarity,
                               stage_activations, collect_activations, pairwise_similarity, plot_pairwise_similarity, bench_cka)

rng = np.random.default_rng(0)


def test_identical_inputs_give_one():
    X = rng.normal(size=(400, 12))
    assert abs(svcca(X, X) - 1) < 1e-9 and abs(linear_cka(X, X) - 1) < 1e-12
    np.testing.assert_allclose(cca_correlations(X, X), np.ones(12), atol=1e-9)


def test_cka_invariances():
    X, Y = rng.normal(size=(500, 10)), rng.normal(size=(500, 10)) + 0.5 * rng.normal(size=(500, 1))
    Q = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    assert abs(linear_cka(X, 2.5 * X @ Q) - 1) < 1e-12
    assert abs(linear_cka(X, Y) - linear_cka(X @ Q, 0.1 * Y @ Q.T + 3)) < 1e-12
    A = rng.normal(size=(10, 10)); A[0] *= 20
    assert linear_cka(X, X @ A) < 0.95                             # not invariant to general linear maps
    assert abs(svcca(X, X @ A) - 1) < 1e-9                         # SVCCA (full rank kept) is
    Xs = rng.normal(size=(15, 40))                                 # n < d: Gram form
    assert abs(linear_cka(Xs, Xs @ np.linalg.qr(rng.normal(size=(40, 40)))[0]) - 1) < 1e-12


def test_independent_inputs_near_null():
    X, Y = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    for fn in (svcca, linear_cka):
        null = permutation_null(X, Y, fn, n_perm=30, seed=1)
        assert abs(fn(X, Y) - null.mean()) < 4 * null.std() + 1e-9
    assert linear_cka(X, Y) < 0.05 and svcca(X, Y) < 0.2


def test_svd_reduce_and_errors():
    X = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 9)) + 1e-4 * rng.normal(size=(300, 9))
    assert svd_reduce(X).shape == (300, 2)
    with pytest.raises(ValueError, match="keep"): svd_reduce(X, keep=0)
    with pytest.raises(ValueError, match="same inputs"): linear_cka(X, X[:5])
    with pytest.raises(ValueError, match="same channels"): cov_similarity(X, X[:, :3])
    assert abs(cov_similarity(X, X[::-1]) - 1) < 1e-12


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__(); self.a = torch.nn.Conv2d(1, 4, 3, 2, 1); self.b = torch.nn.Conv2d(4, 8, 3, 2, 1)
    def forward_stages(self, x):
        h = torch.relu(self.a(x)); return [h, torch.relu(self.b(h))]


def test_activations_pairwise_and_plot():
    torch.manual_seed(0); net = _Net()
    g = torch.Generator().manual_seed(0)
    data = {"u": torch.rand(120, 1, 16, 16, generator=g), "v": torch.rand(120, 1, 16, 16, generator=g) ** 3}
    acts = collect_activations(net, data, n=100, seed=0, batch_size=32)
    assert [a.shape for a in acts["u"]] == [(100, 4), (100, 8)]
    again = collect_activations(net, data, n=100, seed=0)
    np.testing.assert_array_equal(acts["v"][1], again["v"][1])
    direct = stage_activations(net, data["u"][:10])
    assert direct[1].shape == (10, 8)
    df = pairwise_similarity(acts, "cka", layer_names=["s1", "s2"])
    assert list(df.columns) == ["layer", "a", "b", "similarity", "self_ref", "null"] and len(df) == 2
    fig = plot_pairwise_similarity(df); assert fig is not None
    with pytest.raises(ValueError, match="fewer than n"): collect_activations(net, data, n=500)


def test_bench_cka_quick():
    assert bench_cka(quick=True)["seconds_float32"] > 0

def test_two_sample_measures_ignore_row_order_and_separate_distributions():
    from medssl.similarity import frechet_distance, mmd_test, pairwise_distance
    rng = np.random.default_rng(0)
    A, B, C = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 1.0
    assert abs(frechet_distance(A, C) - frechet_distance(A[::-1], C[rng.permutation(300)])) < 1e-9
    assert frechet_distance(A, B) < 0.2 < frechet_distance(A, C)
    (m_ab, p_ab), (m_ac, p_ac) = mmd_test(A, B, 100), mmd_test(A, C, 100)
    assert p_ab > 0.01 and p_ac < 0.02 and m_ac > m_ab
    t = pairwise_distance({"a": [A], "b": [B], "c": [C]})
    assert t.set_index(["a", "b"]).relative.loc[("a", "c")] > 5 * t.set_index(["a", "b"]).relative.loc[("a", "b")]
