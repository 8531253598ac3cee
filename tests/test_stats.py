"Correctness tests for medssl.stats against sklearn, scipy and slow reference implementations."
import numpy as np, pandas as pd, pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from medssl.stats import (auc, mean_auc, placements, bootstrap_indices, bootstrap_aucs, jackknife_aucs,
                          bootstrap_ci, paired_bootstrap_diff, delong_cov, delong_test, percentile_ci, bca_ci,
                          bench_paired_bootstrap, bench_delong)
from medssl.runstats import mean_ci, ttest, welch_ttest, versus_table


def _data(n=600, L=4, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, L)) < 0.3).astype(float)
    hard = rng.normal(size=(n, L))
    a, b = y + hard + rng.normal(size=(n, L)), 1.3 * y + hard + rng.normal(size=(n, L))
    if ties: a, b = np.round(a, 0), np.round(b, 1)                  # heavy ties
    return y, a, b


def test_auc_matches_sklearn_with_heavy_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 1000); s = rng.integers(0, 4, 1000) + 0.5 * y * rng.integers(0, 2, 1000)
        assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-9
    y, a, _ = _data()
    np.testing.assert_allclose(auc(y, a), roc_auc_score(y, a, average=None), atol=1e-9)


def test_auc_masks_nan_labels_and_placements_mean():
    y, a, _ = _data(); ym = y.copy(); ym[::3, 1] = np.nan
    keep = ~np.isnan(ym[:, 1])
    assert abs(auc(ym, a)[1] - roc_auc_score(y[keep, 1], a[keep, 1])) < 1e-12
    v10, v01 = placements(y[:, 0], a[:, 0])
    assert abs(v10.mean() - v01.mean()) < 1e-12


def test_mean_and_weighted_auc():
    y, a, _ = _data(); y[:400, 3] = 0
    assert abs(mean_auc(y, a) - roc_auc_score(y, a, average="macro")) < 1e-12
    assert abs(mean_auc(y, a, weighted=True) - roc_auc_score(y, a, average="weighted")) < 1e-12


def test_errors_name_label_or_argument():
    y, a, b = _data(n=50, L=2)
    y1 = y.copy(); y1[:, 1] = 0
    with pytest.raises(ValueError, match="'Edema'"): auc(y1, a, labels=["Cardiomegaly", "Edema"])
    a1 = a.copy(); a1[3, 0] = np.nan; y[3, 0] = 1
    with pytest.raises(ValueError, match="s_b has NaN scores for label 'Cardiomegaly'"): delong_test(y, b, a1, labels=["Cardiomegaly", "Edema"])
    with pytest.raises(ValueError, match="length mismatch"): paired_bootstrap_diff(y, a, b[:-1])
    with pytest.raises(ValueError, match="B must be"): paired_bootstrap_diff(y, a, b, B=0)
    with pytest.raises(ValueError, match="B must be"): bootstrap_ci(y, a, B=-3)


def test_bootstrap_replicates_equal_naive_loop():
    y, a, b = _data(n=300, L=3)
    B = 25
    reps, w1, full = bootstrap_aucs(y, {"a": a, "b": b}, B=B, seed=11, chunk=7)
    ix = np.concatenate(list(bootstrap_indices(len(y), B, seed=11)))
    naive = np.array([[roc_auc_score(y[i], s[i], average=None) for s in (a, b)] for i in ix])
    np.testing.assert_allclose(reps, naive, atol=1e-12, rtol=0)
    np.testing.assert_allclose(full, [roc_auc_score(y, s, average=None) for s in (a, b)], atol=1e-12)
    pb = paired_bootstrap_diff(y, a, b, B=B, seed=11, average="weighted", chunk=4)
    naive_w = [roc_auc_score(y[i], a[i], average="weighted") - roc_auc_score(y[i], b[i], average="weighted") for i in ix]
    np.testing.assert_allclose(pb.replicates[:, -1], naive_w, atol=1e-12, rtol=0)


def test_bootstrap_indices_chunk_independent_and_seeded():
    a = np.concatenate(list(bootstrap_indices(50, 9, seed=1, chunk=2)))
    np.testing.assert_array_equal(a, np.concatenate(list(bootstrap_indices(50, 9, seed=1, chunk=100))))
    assert not np.array_equal(a, np.concatenate(list(bootstrap_indices(50, 9, seed=2))))
    y, s, _ = _data(n=200, L=2)
    r1, r2 = bootstrap_ci(y, s, B=30, seed=5, chunk=3), bootstrap_ci(y, s, B=30, seed=5, chunk=64)
    np.testing.assert_array_equal(r1.replicates, r2.replicates)


def _auc_fast(y, s):                                              # scipy calls the statistic once per resample
    return auc(y, s) if 0 < np.sum(y) < len(y) else np.nan


def test_percentile_and_bca_agree_with_scipy():
    y, a, _ = _data(n=500, L=1, ties=False); y, a = y[:, 0], a[:, 0]
    for method in ("percentile", "BCa"):
        ours = bootstrap_ci(y, a, B=2000, seed=0, method=method.lower()).ci[0]
        ref = sps.bootstrap((y, a), _auc_fast, n_resamples=2000, paired=True, vectorized=False, method=method,
                            random_state=np.random.default_rng(1)).confidence_interval
        np.testing.assert_allclose(ours, [ref.low, ref.high], atol=0.01)


def test_jackknife_closed_form_equals_loop():
    y, a, _ = _data(n=80, L=2)
    ym = y.copy(); ym[5, 1] = np.nan
    jk = jackknife_aucs(ym, a)
    for j in range(2):
        for k in range(80):
            keep = np.delete(np.arange(80), k); keep = keep[~np.isnan(ym[keep, j])]
            assert abs(jk[k, j] - roc_auc_score(ym[keep, j], a[keep, j])) < 1e-12


def _delong_slow(y, a, b):
    y = np.asarray(y) == 1
    psi = lambda s: (s[y][:, None] > s[~y][None]) + 0.5 * (s[y][:, None] == s[~y][None])
    V10 = np.array([psi(s).mean(1) for s in (a, b)]); V01 = np.array([psi(s).mean(0) for s in (a, b)])
    S = np.cov(V10) / y.sum() + np.cov(V01) / (~y).sum()
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]; z = (V10[0].mean() - V10[1].mean()) / np.sqrt(var)
    return S, var, 2 * sps.norm.sf(abs(z))


def test_delong_equals_quadratic_definition():
    for seed in range(3):
        y, a, b = _data(n=250, L=1, seed=seed)
        S, var, p = _delong_slow(y[:, 0], a[:, 0], b[:, 0])
        aucs, cov = delong_cov(y[:, 0], a[:, 0], b[:, 0])
        np.testing.assert_allclose(cov, S, atol=1e-12)
        r = delong_test(y, a, b).iloc[0]
        assert abs(r.se ** 2 - var) < 1e-9 and abs(r.p - p) < 1e-9
        assert abs(r.auc_diff - (roc_auc_score(y, a) - roc_auc_score(y, b))) < 1e-12


def test_paired_interval_narrower_than_separate():
    y, a, b = _data(n=1500, L=1, ties=False)
    pb = paired_bootstrap_diff(y, b, a, B=400, seed=0, average=None)
    sa = bootstrap_ci(y, a, B=400, seed=0)
    assert pb.replicates.std() < sa.replicates.std()
    df = pb.to_frame(); assert list(df.columns) == ["label", "auc_a", "auc_b", "estimate", "ci_low", "ci_high", "p"]


def test_run_level_statistics_match_scipy():
    x = np.array([0.81, 0.83, 0.80, 0.84, 0.82])
    m = mean_ci(x); lo, hi = sps.t.interval(0.95, 4, loc=x.mean(), scale=sps.sem(x))
    assert abs(m.low - lo) < 1e-12 and abs(m.high - hi) < 1e-12
    b = x - np.array([0.01, 0.05, -0.02, 0.03, 0.04])
    assert abs(ttest(x, b)["p"] - sps.ttest_ind(x, b).pvalue) < 1e-12
    assert abs(welch_ttest(x, b)["p"] - sps.ttest_ind(x, b, equal_var=False).pvalue) < 1e-12
    vt = versus_table({"a": x, "b": b, "c": b - 0.1}, welch=True)
    assert list(vt.B) == ["b", "c"] and vt.test.eq("welch").all()
    with pytest.raises(ValueError, match="at least 2"): mean_ci([0.5])


def test_ci_helpers():
    r = np.random.default_rng(0).normal(size=(20000, 2))
    np.testing.assert_allclose(percentile_ci(r), [[-1.96, 1.96]] * 2, atol=0.05)
    np.testing.assert_allclose(bca_ci(r, np.zeros(2), np.random.default_rng(1).normal(size=(300, 2))), [[-1.96, 1.96]] * 2, atol=0.1)


def test_benchmarks_quick_run():
    r = bench_paired_bootstrap(quick=True)
    assert r["speedup"] > 5 and r["fast_s"] > 0
    assert bench_delong(quick=True)["seconds"] > 0


def test_bootstrap_with_nan_labels_equals_naive_loop():
    y, a, b = _data(n=200, L=2)
    y[::4, 1] = np.nan
    reps, _, _ = bootstrap_aucs(y, {"a": a}, B=10, seed=2)
    ix = np.concatenate(list(bootstrap_indices(len(y), 10, seed=2)))
    for r, i in enumerate(ix):
        v = ~np.isnan(y[i, 1])
        assert abs(reps[r, 0, 1] - roc_auc_score(y[i, 1][v], a[i, 1][v])) < 1e-12
        assert abs(reps[r, 0, 0] - roc_auc_score(y[i, 0], a[i, 0])) < 1e-12


def test_auc_one_class_nan_and_moved_runstats():
    y = np.array([[1, 0], [0, 0], [1, 1.], [0, np.nan]]); s = np.array([[.9, .2], [.1, .3], [.8, .9], [.2, .4]])
    a = auc(y, s, one_class="nan"); assert a[0] == 1.0 and a[1] == 1.0
    y[:, 1] = 0; a = auc(y, s, one_class="nan"); assert a[0] == 1.0 and np.isnan(a[1])
    with pytest.raises(ValueError, match="only one class"): auc(y, s)
    with pytest.raises(ValueError, match="one_class"): auc(y, s, one_class="drop")
    import medssl.stats as ms, medssl.runstats as mr
    with pytest.warns(DeprecationWarning, match="medssl.runstats"): assert ms.versus_table is mr.versus_table
