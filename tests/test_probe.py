"Tests of medssl.probe and medssl.finetuning: masked labels, frozen backbone, resumable sweeps, determinism, bad input, moved names."
import numpy as np, pandas as pd, pytest, torch
from torch.utils.data import Dataset, Subset
from medssl.models import backbone
from medssl.probe import features, linear_probe, weights_hash, ds_labels, auc_per_label, _fit_logreg
from medssl.finetuning import finetune, lpft, sweep, load_predictions, evaluate, shift_eval, finetune_rule


class Tiny(Dataset):
    "Contract-shaped 24 px dataset: label 0 = bright square, label 1 = dark stripe, some NaN labels."
    pathologies = ["square", "stripe"]
    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed); self.n = n
        self.labels = (torch.rand(n, 2, generator=g) < 0.5).float().numpy(); self.labels[::7, 1] = np.nan
        img = 0.5 + 0.1 * torch.randn(n, 1, 24, 24, generator=g)
        lab = torch.from_numpy(np.nan_to_num(self.labels))
        img[:, :, 6:14, 6:14] += 0.3 * lab[:, 0, None, None, None]; img[:, :, 18:20, :] -= 0.3 * lab[:, 1, None, None, None]
        self.images = img.clamp(0, 1); self.patients = np.array([f"p{i}" for i in range(n)])
    def __len__(self): return self.n
    def __getitem__(self, i):
        return dict(image=self.images[i], labels=torch.from_numpy(self.labels[i]), text="", patient=self.patients[i],
                    study=str(i), view="PA", index=i)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch): monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))

@pytest.fixture(scope="module")
def data(): return Tiny(96, 0), Tiny(64, 1), Tiny(64, 2)

def _net(seed=0):
    torch.manual_seed(seed); return backbone("cxrnet", init="random")


def test_masked_labels_ignore_nan():
    rng = np.random.default_rng(0); X = torch.tensor(rng.normal(size=(120, 6)))
    Y = (rng.random((120, 2)) < (1 / (1 + np.exp(-X[:, :2].numpy())))).astype(float); Y[:30, 1] = np.nan
    W, _ = _fit_logreg(X, torch.tensor(Y), 1e-2)
    W1, _ = _fit_logreg(X[30:], torch.tensor(Y[30:, 1:]), 1e-2)
    assert torch.allclose(W[:, 1], W1[:, 0], atol=1e-4)
    Wz, _ = _fit_logreg(X, torch.tensor(np.nan_to_num(Y)), 1e-2)
    assert (Wz[:, 1] - W[:, 1]).abs().max() > 1e-2
    a = auc_per_label(np.array([[1, np.nan], [0, 1], [1, 0]]), np.array([[.9, .9], [.1, .8], [.8, .1]]))
    assert a[0] == 1 and a[1] == 1


def test_frozen_backbone_unchanged(data):
    tr, va, te = data; net = _net(); net.train(); h = weights_hash(net)
    Xtr, Xva, Xte = (features(net, d, progress=False) for d in data)
    pr = linear_probe(Xtr, ds_labels(tr), Xva, ds_labels(va), Xte, ds_labels(te))
    assert weights_hash(net) == h and net.training  # no BN statistic moved, mode restored
    assert pr.test_proba.shape == (len(te), 2) and pr.l2 in pr.val_aucs
    ft = finetune(net, tr, va, epochs=1, lr=1e-3, batch_size=32, progress=False)
    assert weights_hash(net) == h and weights_hash(ft.model.backbone) != h


def test_feature_cache(data):
    tr = data[0]; net = _net()
    a = features(net, tr, progress=False); b = features(net, tr, progress=False)
    np.testing.assert_array_equal(a, b)
    with torch.no_grad(): next(net.parameters()).mul_(2)
    assert not np.allclose(features(net, tr, progress=False), a)  # a new weights hash misses the cache
    L = features(net, tr, layers=[1, 3], progress=False)
    assert set(L) == {"features", "stage1", "stage3"} and L["stage3"].shape == (len(tr), 128)


def test_determinism(data):
    tr, va, te = data
    r = [finetune(_net(), tr, va, te, epochs=2, lr=1e-3, batch_size=32, seed=3, progress=False) for _ in range(2)]
    np.testing.assert_array_equal(r[0].test_proba, r[1].test_proba)
    X = features(_net(), tr, progress=False); Xv = features(_net(), va, progress=False)
    p = [linear_probe(X, ds_labels(tr), Xv, ds_labels(va)) for _ in range(2)]
    assert torch.equal(p[0].W, p[1].W)


def test_lpft_starts_from_probe(data):
    tr, va, te = data
    r = lpft(_net(), tr, va, te, epochs=1, lr=1e-3, batch_size=32, progress=False)
    assert r.probe is not None and r.test_auc.index.tolist() == ["square", "stripe"] and 1 <= r.best_epoch <= r.epochs_run


def test_shift_eval(data):
    tr, va, te = data
    r = finetune(_net(), tr, va, epochs=1, lr=1e-3, batch_size=32, progress=False)
    df = shift_eval(r.model, {"a": te, "b": Tiny(48, 9)})
    assert df.shape == (4, 3) and df.auc.between(0, 1).all()


def test_sweep_resumes(data, tmp_path):
    tr, va, te = data
    kw = dict(inits={"random": _net}, train_ds=tr, val_ds=va, test_ds=te, out_dir=tmp_path / "sw",
              protocols=("linear", "finetune"), fractions=(0.5, 1.0), draws=2, seeds=(0, 1),
              finetune_kw=dict(epochs=1, lr=1e-3, batch_size=32), progress=False)
    a = sweep(**kw)
    assert a.attrs == dict(computed=12, skipped=0)
    assert set(a.columns) >= {"init", "protocol", "fraction", "draw", "seed", "label", "auc", "n_train", "test_set"}
    assert len(a) == 12 * 2 and (tmp_path / "sw" / "results.csv").exists()
    b = sweep(**kw)
    assert b.attrs == dict(computed=0, skipped=12)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    preds = load_predictions(tmp_path / "sw")
    assert len(preds) == 12 and preds[("random", "finetune", 0.5, 1, 1)].shape == (len(te), 2)


def test_bad_input(data):
    tr, va, _ = data; X = np.random.rand(len(tr), 8); Y = ds_labels(tr); Xv = np.random.rand(len(va), 8)
    with pytest.raises(ValueError, match="rows but Y_train"): linear_probe(X[:-1], Y, Xv, ds_labels(va))
    Y0 = Y.copy(); Y0[:, 0] = 0
    with pytest.raises(ValueError, match="single class"): linear_probe(X, Y0, Xv, ds_labels(va))
    neg = Subset(tr, np.flatnonzero(tr.labels[:, 0] == 0).tolist())
    with pytest.raises(ValueError, match="single class"): finetune(_net(), neg, va, epochs=1, progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        sweep({"r": _net}, tr, va, va, out_dir="/tmp/never", fractions=(0.001,), progress=False)
    with pytest.raises(ValueError, match="protocol"):
        sweep({"r": _net}, tr, va, va, out_dir="/tmp/never", protocols=("knn",), progress=False)
    with pytest.raises(ValueError, match="fractions"): finetune_rule("moco_cxr", 0.3)
    with pytest.raises(ValueError, match="layers"): features(_net(), tr, layers="last")


def test_auc_per_label_is_stats_auc():
    "One AUC: the probe's per-label AUC is `medssl.stats.auc` (ties 1/2), NaN for one-class labels, close to sklearn's."
    from sklearn.metrics import roc_auc_score
    from medssl import stats
    rng = np.random.default_rng(0); y = (rng.random((200, 3)) < 0.3).astype(float); s = rng.random((200, 3)).round(1)
    y[:, 2] = 0; y[:5, 1] = np.nan
    a = auc_per_label(y, s)
    assert np.isnan(a[2]) and a[0] == stats.auc(y[:, 0], s[:, 0]) and a[1] == stats.auc(y[5:, 1], s[5:, 1])
    assert abs(a[0] - roc_auc_score(y[:, 0], s[:, 0])) < 1e-12


def test_moved_names_still_work_with_a_warning():
    import medssl.probe as mp, medssl.finetuning as mf
    for name in ("finetune", "lpft", "sweep", "load_predictions", "finetune_rule", "FINETUNE_RULES", "bench_linear_probe", "evaluate"):
        with pytest.warns(DeprecationWarning, match="medssl.finetuning"): assert getattr(mp, name) is getattr(mf, name)
    with pytest.raises(AttributeError): mp.no_such_name


def test_sgd_linear_classifier_keeps_the_backbone_frozen(data):
    "main_lincls's baseline trains the head only: the backbone's weights and BN statistics never move (they did before the engine)."
    from medssl.finetuning import _sgd_lincls
    tr, va, te = data; net = _net(); h = weights_hash(net)
    p = _sgd_lincls(net, tr, va, te, epochs=3, lr=1.0, batch_size=32, device=torch.device("cpu"), seed=0)
    assert weights_hash(net) == h and p.shape == (len(te), 2)


def test_finetune_freeze_backbone_freezes_bn_statistics(data):
    "`freeze_backbone=True` trains the head only: the backbone's weights and BN running statistics stay as they were."
    tr, va, _ = data; net = _net(); h = weights_hash(net)
    r = finetune(net, tr, va, epochs=1, lr=1e-2, batch_size=32, freeze_backbone=True, progress=False)
    assert weights_hash(r.model.backbone) == h
    assert not torch.equal(r.model.head.fc.weight, finetune(net, tr, va, epochs=1, lr=1e-2, batch_size=32, freeze_backbone=True,
                                                            seed=1, progress=False).model.head.fc.weight)
