"Every dataset adapter satisfies medssl.datasets.DatasetProtocol, and its identity is the one pretraining caches key on."
from pathlib import Path
import numpy as np
import pytest
import torch
from medssl.datasets import DatasetProtocol, ImageFolder, dataset_identity
from medssl.fractal import FractalDataset
from medssl.layouts import CheXpert, MIMICCXR, NIHChestXray14, Shenzhen, Montgomery, VinDrSpineXR, SIIMACR, IUXray

FIX = Path(__file__).parent / "fixtures"
ADAPTERS = {
    "CheXpert": lambda: CheXpert(FIX / "chexpert", views=("frontal", "lateral")),
    "MIMICCXR": lambda: MIMICCXR(FIX / "mimic", "all", views=None, sections=None),
    "MIMICCXR+reports": lambda: MIMICCXR(FIX / "mimic", "all", views=None, missing_reports="drop"),
    "NIHChestXray14": lambda: NIHChestXray14(FIX / "nih", "all", size=16),
    "Shenzhen": lambda: Shenzhen(FIX / "shenzhen"),
    "Montgomery": lambda: Montgomery(FIX / "montgomery", size=12),
    "VinDrSpineXR": lambda: VinDrSpineXR(FIX / "vindr", "all"),
    "SIIMACR": lambda: SIIMACR(FIX / "siim", "all", cache=False),
    "IUXray": lambda: IUXray(FIX / "iuxray"),
    "IUXray (Open-i XML)": lambda: IUXray(FIX / "openi"),
    "ImageFolder": lambda: ImageFolder(FIX / "shenzhen" / "CXR_png", size=8),
    "FractalDataset": lambda: FractalDataset("coarse", n_per_class=2, size=32, progress=False),
}
SAMPLE_KEYS = {"image", "labels", "text", "patient", "study", "view", "index"}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_adapter_satisfies_the_protocol(name):
    ds = ADAPTERS[name]()
    assert isinstance(ds, DatasetProtocol), name
    n, L = len(ds), len(ds.pathologies)
    assert n > 0 and ds.labels.shape == (n, L) and ds.labels.dtype == np.float32 and len(ds.patients) == n
    assert all(isinstance(p, str) for p in ds.patients) and isinstance(ds.identity, str) and len(ds.identity) > 8
    s = ds[n - 1]
    assert SAMPLE_KEYS <= set(s) and s["image"].ndim == 3 and s["image"].shape[0] == 1 and s["image"].dtype == torch.float32
    assert s["labels"].shape == (L,) and isinstance(s["text"], str) and s["patient"] == ds.patients[n - 1] and s["index"] == n - 1
    idx = [n - 1, 0] if n > 1 else [0]
    sub = ds.subset(idx)
    assert isinstance(sub, type(ds)) and isinstance(sub, DatasetProtocol) and len(sub) == len(idx)
    assert np.array_equal(sub.labels, ds.labels[idx]) and list(sub.patients) == [ds.patients[i] for i in idx]
    torch.testing.assert_close(sub[0]["image"], ds[idx[0]]["image"], rtol=0, atol=0)
    assert ds.identity == ADAPTERS[name]().identity                                     # stable: the same rows, the same name
    if n > 1: assert ds.subset([0]).identity != ds.identity                             # other rows, another name


def test_not_a_dataset():
    assert not isinstance([1, 2, 3], DatasetProtocol) and not isinstance(torch.utils.data.TensorDataset(torch.zeros(2)), DatasetProtocol)


def test_identity_keeps_the_pretraining_cache_keys():
    "`identity` is the hash `pretrain.data_identity` computed before datasets had one, so cached runs stay valid."
    from medssl.pretrain import data_identity
    for ds in (Shenzhen(FIX / "shenzhen"),):
        attrs = {k: getattr(ds, k) for k in ("labels", "patients", "root") if hasattr(ds, k)}
        plain = type(type(ds).__name__, (), {"__len__": lambda self: len(ds), **attrs})()   # same name and data, no identity
        assert data_identity(plain) == ds.identity == data_identity(ds)
    assert dataset_identity("X", np.zeros((2, 1)), ["a", "b"]) != dataset_identity("X", np.ones((2, 1)), ["a", "b"])

def test_fractal_identity_names_the_images():
    "Two fractal kinds with the same number of classes share labels and patients, not images: their identities differ (the old hash collided)."
    a, b = (FractalDataset(k, n_per_class=1, size=32, progress=False) for k in ("coarse-100", "fine"))
    assert np.array_equal(a.labels, b.labels) and a.identity != b.identity
