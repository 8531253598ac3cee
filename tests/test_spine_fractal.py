"Tests of the spine phantom, its VinDr-SpineXR writer, and the fractal natural-image proxy."
import os
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from medssl.spine import SPINE_LESIONS, render_spine, sample_spine, draw_spine, spine_boxes
from medssl.layouts.vindr_spine import VINDR_COLUMNS, write_vindr_spine, spine_root
from medssl.fractal import FractalDataset, fractal_classes, render_fractals, KINDS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache"); old = os.environ.get("MEDSSL_CACHE"); os.environ["MEDSSL_CACHE"] = str(d)
    yield d
    if old is None: del os.environ["MEDSSL_CACHE"]
    else: os.environ["MEDSSL_CACHE"] = old


@pytest.fixture(scope="module")
def vindr(cache):
    return spine_root(n_images=150, size=64, seed=3, progress=False)


# ---------------------------------------------------------------- spine renderer
def test_render_shapes_and_determinism():
    x, y, b = render_spine(20, size=64, seed=1)
    assert x.shape == (20, 64, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    x2, y2, b2 = render_spine(20, size=64, seed=1)
    np.testing.assert_array_equal(x, x2); np.testing.assert_array_equal(y, y2); pd.testing.assert_frame_equal(b, b2)
    x3, _, _ = render_spine(20, size=64, seed=2)
    assert np.abs(x - x3).mean() > 0.01
    xs, ys, _ = render_spine(5, size=64, seed=1, start=10)          # image i does not depend on how it was asked for
    np.testing.assert_array_equal(xs, x[10:15]); np.testing.assert_array_equal(ys, y[10:15])


def test_labels_and_boxes_agree():
    x, y, b = render_spine(128, size=128, seed=0)
    assert 0.3 < y.mean() < 0.7
    assert set(b["index"]) <= set(np.flatnonzero(y))
    assert set(b.lesion_type) <= set(SPINE_LESIONS)
    assert ((b.xmax - b.xmin) >= 1).all() and (b.xmax <= 127).all() and (b.ymin >= 0).all()
    _, y0, b0 = render_spine(64, size=64, seed=0, prevalence=0.0)
    assert y0.sum() == 0 and len(b0) == 0


def test_sizes():
    for s in (32, 200, 1024):
        assert draw_spine(sample_spine(1, seed=0), s).shape == (1, s, s)


@pytest.mark.parametrize("call, msg", [
    (lambda: render_spine(4, size=31), "31"),
    (lambda: render_spine(-2), "-2"),
    (lambda: render_spine(4, view="oblique"), "oblique"),
    (lambda: render_spine(4, weights={"tumour": 1}), "tumour"),
    (lambda: render_spine(4, prevalence=1.5), "1.5"),
])
def test_spine_bad_arguments(call, msg):
    with pytest.raises(ValueError, match=msg): call()


# ---------------------------------------------------------------- VinDr-SpineXR layout
def test_vindr_layout(vindr):
    assert sorted(os.listdir(vindr)) == ["annotations", "test_images", "train_images"]
    assert sorted(os.listdir(vindr / "annotations")) == ["test.csv", "train.csv"]
    tr, te = (pd.read_csv(vindr / "annotations" / f"{s}.csv") for s in ("train", "test"))
    for df, folder in ((tr, "train_images"), (te, "test_images")):
        assert list(df.columns) == VINDR_COLUMNS
        files = set(os.listdir(vindr / folder))
        assert all(f.endswith(".dicom") and len(f) == len("0" * 32 + ".dicom") for f in files)
        assert set(df.image_id + ".dicom") == files                    # every image annotated, every row has an image
        assert set(df.lesion_type) <= set(SPINE_LESIONS) | {"No finding"}
        nf = df[df.lesion_type == "No finding"]
        assert nf[["xmin", "ymin", "xmax", "ymax"]].isna().all().all()
        assert nf.image_id.is_unique and not set(nf.image_id) & set(df[df.lesion_type != "No finding"].image_id)
        les = df[df.lesion_type != "No finding"]
        assert (les.xmin < les.xmax).all() and (les.ymin < les.ymax).all() and (les.xmax <= 63).all()
        assert df.rad_id.str.fullmatch(r"rad\d").all()
    assert len(tr.image_id.unique()) + len(te.image_id.unique()) == 150
    assert 0.05 < len(te.image_id.unique()) / 150 < 0.4
    assert not set(tr.study_id) & set(te.study_id)                     # split by study
    assert (tr.lesion_type == "No finding").any() and (tr.lesion_type != "No finding").any()


def test_vindr_dicom(vindr):
    seen = {}
    for f in sorted((vindr / "train_images").iterdir())[:60]:
        d = pydicom.dcmread(f)
        a = d.pixel_array
        assert a.shape == (64, 64) and a.dtype == np.uint16 and d.Modality == "DX"
        assert d.BitsAllocated == 16 and d.BitsStored in (12, 14, 16) and a.max() < 2 ** d.BitsStored
        assert float(d.WindowWidth) > 0 and 0 < float(d.WindowCenter) < 2 ** d.BitsStored
        seen[d.PhotometricInterpretation] = seen.get(d.PhotometricInterpretation, 0) + 1
    assert set(seen) == {"MONOCHROME1", "MONOCHROME2"}, seen


def test_vindr_monochrome1_is_inverted(vindr):
    "Windowing a MONOCHROME1 image without inverting it gives the negative: bone (spine centre) dark."
    df = pd.read_csv(vindr / "annotations" / "train.csv")
    means = {"MONOCHROME1": [], "MONOCHROME2": []}
    for iid in df.image_id.unique()[:60]:
        d = pydicom.dcmread(vindr / "train_images" / f"{iid}.dicom")
        a = d.pixel_array.astype(float); c, w = float(d.WindowCenter), float(d.WindowWidth)
        a = np.clip((a - c + w / 2) / w, 0, 1)
        means[d.PhotometricInterpretation].append(a.mean())
    assert np.mean(means["MONOCHROME1"]) > np.mean(means["MONOCHROME2"])    # inverted storage is mostly bright


def test_vindr_deterministic_and_atomic(vindr, cache, tmp_path):
    assert spine_root(n_images=150, size=64, seed=3) == vindr
    a = tmp_path / "a"; b = tmp_path / "b"
    write_vindr_spine(a, 20, 64, seed=5, progress=False); write_vindr_spine(b, 20, 64, seed=5, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(a / "annotations" / "train.csv"), pd.read_csv(b / "annotations" / "train.csv"))
    f = sorted((a / "train_images").iterdir())[0]
    np.testing.assert_array_equal(pydicom.dcmread(f).pixel_array, pydicom.dcmread(b / "train_images" / f.name).pixel_array)
    with pytest.raises(FileExistsError): write_vindr_spine(a, 20, 64, seed=5)
    with pytest.raises(ValueError, match="-3"): write_vindr_spine(tmp_path / "c", -3)
    with pytest.raises(ValueError, match="16"): write_vindr_spine(tmp_path / "c", 3, size=16)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- fractals
def test_fractal_dataset(cache):
    ds = FractalDataset("coarse", n_per_class=6, size=32, seed=0, progress=False)
    assert len(ds) == 60 and ds.n_classes == 10 and ds.labels.shape == (60, 10) and len(ds.patients) == 60
    s = ds[7]
    assert s["image"].shape == (1, 32, 32) and s["image"].dtype == torch.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["labels"].argmax().item() == ds.class_index(7) and s["text"] == "" and s["view"] == "" and s["index"] == 7
    ds2 = FractalDataset("coarse", n_per_class=6, size=32, seed=0, cache=False, progress=False)
    np.testing.assert_array_equal(ds.images, ds2.images)
    fine = FractalDataset("fine", n_per_class=1, size=32, seed=0, progress=False)
    assert fine.n_classes == 100 and len(fine.pathologies) == 100


@pytest.mark.parametrize("call, msg", [
    (lambda: FractalDataset("medium"), "medium"),
    (lambda: FractalDataset("coarse", n_per_class=-4), "-4"),
    (lambda: FractalDataset("coarse", size=20), "20"),
])
def test_fractal_bad_arguments(call, msg):
    with pytest.raises(ValueError, match=msg): call()


def test_fractal_classes_are_separable():
    "Nearest class centroid on raw pixels beats chance clearly on the coarse set."
    cl = fractal_classes("coarse"); C = len(cl)
    ytr, yte = np.arange(C * 30) % C, np.arange(C * 10) % C
    Xtr = render_fractals(cl, ytr, 32, np.random.default_rng(0), KINDS["coarse"]["jitter"]).reshape(len(ytr), -1)
    Xte = render_fractals(cl, yte, 32, np.random.default_rng(1), KINDS["coarse"]["jitter"]).reshape(len(yte), -1)
    cen = np.stack([Xtr[ytr == c].mean(0) for c in range(C)])
    acc = ((((Xte[:, None] - cen[None]) ** 2).sum(-1)).argmin(1) == yte).mean()
    assert acc > 0.3, acc        # chance is 0.1


def test_fine_siblings_share_a_parent():
    f = fractal_classes("fine")
    d = lambda a, b: np.abs(f[a] - f[b]).mean()
    within = np.mean([d(p * 10, p * 10 + 1) for p in range(10)])
    across = np.mean([d(p * 10, ((p + 1) % 10) * 10) for p in range(10)])
    assert within < across / 2


def test_moved_writer_names_still_resolve():
    "The VinDr-SpineXR writer moved to medssl.layouts.vindr_spine; medssl.spine's old names forward to it with a warning."
    import medssl.spine as sp
    with pytest.warns(DeprecationWarning, match="medssl.spine.spine_root moved to medssl.layouts.vindr_spine"):
        assert sp.spine_root is spine_root
    with pytest.warns(DeprecationWarning): assert sp.write_vindr_spine is write_vindr_spine and sp.VINDR_COLUMNS is VINDR_COLUMNS
    with pytest.raises(AttributeError): sp.not_a_name


def test_fractal_subset_and_identity(cache):
    ds = FractalDataset("coarse", n_per_class=4, size=32, progress=False)
    sub = ds.subset([5, 1, 30])
    assert len(sub) == 3 and sub[0]["patient"] == "5" and sub.class_index(2) == ds.class_index(30)
    torch.testing.assert_close(sub[1]["image"], ds[1]["image"], rtol=0, atol=0)
    assert sub.identity != ds.identity and ds.identity == FractalDataset("coarse", n_per_class=4, size=32, progress=False).identity
    with pytest.raises(ValueError, match="0..39"): ds.subset([40])
