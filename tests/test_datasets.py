"medssl.datasets: adapters on real-layout fixtures, label policies, splits, fraction draws, cache, bad input."
import gzip, logging, shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
import medssl.datasets as D
from medssl.datasets import (CHEXPERT_LABELS, COMPETITION_LABELS, apply_policy, read_label_codes,
                             resolve_labels, patient_split, label_fraction_draws, read_fraction_draws,
                             fraction_indices, safe_join, read_image, load_image, BadImageError, ImageFolder)
from medssl.layouts import (NIH_LABELS, read_nih_entries, CheXpert, MIMICCXR, NIHChestXray14, Shenzhen, Montgomery,
                            VinDrSpineXR, IUXray, SIIMACR)

FIX = Path(__file__).parent / "fixtures"
CHX = FIX / "chexpert" / "CheXpert-v1.0-small"

@pytest.fixture
def copy_fix(tmp_path):
    "A writable copy of one fixture dataset."
    def _copy(name):
        dst = tmp_path / name; shutil.copytree(FIX / name, dst); return dst
    return _copy

# ---- label policies on a table with all four label values -------------------------------------------------
CODES = np.array([[1, 0, -1, np.nan]] * 400, np.float32)

@pytest.mark.parametrize("policy,blank,expect", [
    ("U-Ones", "zeros", [1, 0, 1, 0]), ("ones", "ignore", [1, 0, 1, np.nan]),
    ("U-Zeros", "zeros", [1, 0, 0, 0]), ("zeros", "ignore", [1, 0, 0, np.nan]),
    ("U-Ignore", "zeros", [1, 0, np.nan, 0]), ("ignore", "ignore", [1, 0, np.nan, np.nan])])
def test_policies_exact(policy, blank, expect):
    y = apply_policy(CODES, policy, blank)
    assert y.dtype == np.float32 and y.shape == CODES.shape
    np.testing.assert_array_equal(y[0], np.array(expect, np.float32))

@pytest.mark.parametrize("policy,lo,hi", [("LSR-Ones", 0.55, 0.85), ("lsr-zeros", 0.0, 0.3)])
def test_policies_lsr(policy, lo, hi):
    y = apply_policy(CODES, policy, "zeros", seed=3)
    u = y[:, 2]
    assert lo <= u.min() and u.max() <= hi and u.std() > 0.05          # spread over the whole range
    np.testing.assert_array_equal(y[:, [0, 1, 3]], np.tile([1, 0, 0], (400, 1)))
    np.testing.assert_array_equal(y, apply_policy(CODES, policy, "zeros", seed=3))
    assert not np.array_equal(y, apply_policy(CODES, policy, "zeros", seed=4))

def test_policy_errors():
    with pytest.raises(ValueError, match="'sometimes'"): apply_policy(CODES, "sometimes")
    with pytest.raises(ValueError, match="blank"): apply_policy(CODES, "ones", blank="nan")

def test_read_label_codes_all_values_and_unknown():
    df = pd.read_csv(CHX / "train.csv", dtype=str, keep_default_na=False, na_values=[""])
    c = read_label_codes(df, CHEXPERT_LABELS, "train.csv")
    assert set(np.unique(c[~np.isnan(c)])) == {-1.0, 0.0, 1.0} and np.isnan(c).any()
    bad = df.copy(); bad.loc[3, "Edema"] = "2.0"
    with pytest.raises(ValueError, match=r"train.csv: unknown label value '2.0' in column 'Edema' \(row 5\)"):
        read_label_codes(bad, CHEXPERT_LABELS, "train.csv")

def test_label_subsets():
    assert resolve_labels("competition") == COMPETITION_LABELS
    assert resolve_labels("all") == CHEXPERT_LABELS
    assert resolve_labels("Pleural Effusion") == ["Pleural Effusion"]
    with pytest.raises(ValueError, match="Effusion"): resolve_labels("Effusion")
    ds = CheXpert(CHX, labels="Pleural Effusion", uncertain="ignore", blank="ignore")
    assert ds.pathologies == ["Pleural Effusion"] and ds.labels.shape == (6, 1)

# ---- adapters on the real-layout fixtures ------------------------------------------------------------------
def test_chexpert_policies_end_to_end():
    y1 = CheXpert(CHX, uncertain="ones").labels; y0 = CheXpert(CHX, uncertain="zeros").labels
    yi = CheXpert(CHX, uncertain="ignore", blank="ignore").labels
    card = CHEXPERT_LABELS.index("Cardiomegaly")        # patient00002/study2: -1.0
    assert (y1[1, card], y0[1, card]) == (1, 0) and np.isnan(yi[1, card]) and np.isnan(yi[0, card])
    s = CheXpert(CHX)[0]
    assert s["image"].shape == (1, 20, 24) and s["image"].dtype == torch.float32 and s["labels"].shape == (14,)
    assert set(s) == {"image", "labels", "text", "patient", "study", "view", "index"}

def test_chexpert_views_and_missing(tmp_path):
    assert len(CheXpert(CHX, views=("frontal", "lateral"))) == 8
    assert list(CheXpert(CHX, views="lateral").views) == ["LATERAL", "LATERAL"]
    assert len(CheXpert(CHX, ap_pa="PA")) == 2
    with pytest.raises(FileNotFoundError, match="not found"): CheXpert(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="valid.csv"): CheXpert(tmp_path, "valid")
    with pytest.raises(ValueError, match="empty after filtering"): CheXpert(CHX, "valid", views="frontal", ap_pa="LL")

def test_chexpert_missing_column(copy_fix):
    root = copy_fix("chexpert") / "CheXpert-v1.0-small"
    df = pd.read_csv(root / "train.csv", dtype=str).drop(columns=["Edema"]); df.to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"train.csv: missing column\(s\) \['Edema'\]"): CheXpert(root)

def test_path_escape_refused(copy_fix):
    root = copy_fix("chexpert") / "CheXpert-v1.0-small"
    txt = (root / "train.csv").read_text().replace(
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "CheXpert-v1.0-small/../../../../etc/passwd")
    (root / "train.csv").write_text(txt)
    with pytest.raises(ValueError, match="escapes the dataset root"): CheXpert(root)
    with pytest.raises(ValueError, match="escapes"): safe_join(root, "/etc/passwd")

def test_symlinked_image_folders_are_read(copy_fix, tmp_path):
    "Image folders staged on another disk and linked into the root: the check is lexical, links are followed."
    root = copy_fix("chexpert") / "CheXpert-v1.0-small"; disk = tmp_path / "disk"; disk.mkdir()
    shutil.move(root / "train", disk / "train"); (root / "train").symlink_to(disk / "train")
    ref = CheXpert(CHX, size=8)
    ds = CheXpert(root, size=8)
    assert [p.relative_to(ds.root) for p in ds.paths] == [p.relative_to(ref.root) for p in ref.paths]
    torch.testing.assert_close(ds.batch(range(len(ds)))["image"], ref.batch(range(len(ref)))["image"], rtol=0, atol=0)
    assert safe_join(root, "train/patient00001") == root / "train" / "patient00001"      # not resolved to the other disk

def test_mimic(copy_fix):
    ds = MIMICCXR(FIX / "mimic", "train", sections=None)
    assert len(ds) == 2 and list(ds.patients) == ["10000032", "10000032"] and list(ds.studies) == ["50414267", "53189527"]
    assert ds[0]["text"] == "" and ds.dropped == {}
    with pytest.raises(FileNotFoundError, match="s53189527.txt not found"): MIMICCXR(FIX / "mimic", "train")
    ds = MIMICCXR(FIX / "mimic", "train", missing_reports="drop")
    assert len(ds) == 1 and ds.dropped == {"no FINDINGS or IMPRESSION section": 0, "missing report file": 1}
    assert ds[0]["text"].startswith("There is no focal") and "No acute cardiopulmonary process." in ds[0]["text"]
    assert "INDICATION" not in ds[0]["text"]
    t = MIMICCXR(FIX / "mimic", "test", labels="competition", sections=None)
    assert t.pathologies == COMPETITION_LABELS and t.labels[0].tolist() == [1, 0, 0, 0, 0]   # columns read by name
    assert MIMICCXR(FIX / "mimic", "test", labels="Lung Opacity", sections=None).labels.ravel().tolist() == [1]
    neg = MIMICCXR(FIX / "mimic", "validate", labeler="negbio", sections=None); chx = MIMICCXR(FIX / "mimic", "validate", uncertain="ignore", sections=None)
    pn = CHEXPERT_LABELS.index("Pneumonia")
    assert neg.labels[0, pn] == 1 and np.isnan(chx.labels[0, pn])
    with pytest.raises(ValueError, match="labeler"): MIMICCXR(FIX / "mimic", labeler="chexbert")
    with pytest.raises(ValueError, match="missing_reports"): MIMICCXR(FIX / "mimic", missing_reports="ignore")
    root = copy_fix("mimic"); (root / "mimic-cxr-2.0.0-negbio.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="negbio"): MIMICCXR(root, labeler="negbio", sections=None)

def test_nih_quirks(copy_fix):
    e = read_nih_entries(FIX / "nih" / "Data_Entry_2017.csv")
    assert e.shape == (7, 11) and e.columns[7] == "OriginalImage_Width" and e["View Position"].tolist()[4] == "AP"
    ds = NIHChestXray14(FIX / "nih", "train_val")
    assert ds.pathologies == NIH_LABELS and ds.labels.shape == (5, 14)
    assert ds.labels[2].sum() == 0 and ds.labels[4, [2, 12]].tolist() == [1, 1]
    assert ds[1]["image"].shape == (1, 20, 24) and ds[2]["image"].max() <= 1       # RGBA and 16-bit converted
    assert list(NIHChestXray14(FIX / "nih", "test").patients) == ["4", "5"]
    # the 2020 re-release has no trailing commas: same table
    root = copy_fix("nih"); p = root / "Data_Entry_2017.csv"
    p.write_text("\n".join(l.rstrip(",") for l in p.read_text().splitlines()) + "\n")
    pd.testing.assert_frame_equal(read_nih_entries(p), e)
    p.write_text(p.read_text().replace("Hernia", "Hernia|Covid"))
    with pytest.raises(ValueError, match="unknown finding 'Covid'"): NIHChestXray14(root)

def test_nih_kaggle_folders(copy_fix):
    root = copy_fix("nih"); (root / "images_001").mkdir(); shutil.move(root / "images", root / "images_001" / "images")
    assert NIHChestXray14(root, "test", size=8)[1]["image"].shape == (1, 8, 8)

def test_tb_sets_and_masks():
    sz = Shenzhen(FIX / "shenzhen"); assert sz.labels.ravel().tolist() == [0, 0, 1, 1] and sz.pathologies == ["Tuberculosis"]
    mg = Montgomery(FIX / "montgomery", size=12)
    s = mg[0]; assert s["mask"].shape == (1, 12, 12) and s["mask"].sum() > 0
    both = Montgomery(FIX / "montgomery", masks="both", cache=False)[0]["mask"]
    assert both.shape == (2, 20, 24) and both[0, :, :12].sum() == 0 and both[1, :, 12:].sum() == 0   # left lung on image right

def test_vindr_dicom_inversion_and_windowing():
    ds = VinDrSpineXR(FIX / "vindr", "trainval")
    assert ds.labels.ravel().tolist() == [0, 1, 0, 1] and ds.pathologies == ["Abnormal"]
    m2, m1 = ds[0]["image"][0], ds[1]["image"][0]                      # same ramp, MONOCHROME2 vs MONOCHROME1
    assert m2[:, 0].max() == 0 and m1[:, 0].min() == 1 and torch.allclose(m1, 1 - m2, atol=1 / 255)
    w = ds[2]["image"][0]; assert (w[:, :3] == 0).all() and (w[:, 9:] == 1).all()   # window [512, 1536] clips both ends
    raw = ds[3]["image"][0]; assert raw.min() == 0 and raw.max() == 1                 # no window tags: min-max
    assert VinDrSpineXR(FIX / "vindr", "test", size=8)[0]["image"].shape == (1, 8, 8)

def test_siim():
    ds = SIIMACR(FIX / "siim", cache=False)
    assert ds.labels.ravel().tolist() == [1, 0, 0] and ds[0]["mask"].shape == (1, 20, 24)
    assert ds[0]["mask"].sum() == 30 and ds[1]["mask"].sum() == 0
    tr, va = SIIMACR(FIX / "siim", "train", val_frac=0.34), SIIMACR(FIX / "siim", "val", val_frac=0.34)
    assert len(tr) + len(va) == 3 and not set(tr.patients) & set(va.patients)

def test_phantom_layouts(tmp_path):
    "The phantom writers' layouts read back through the adapters (labels, reports, masks, DICOM decoding)."
    from medssl.layouts import WRITERS, write_vindr_spine
    from medssl.spine import render_spine
    for name in ("chexpert", "mimic", "nih", "montgomery"): WRITERS[name](tmp_path / name, n_patients=15, size=32, progress=False)
    chx = CheXpert(tmp_path / "chexpert" / "CheXpert-v1.0-small", views=("frontal", "lateral"), uncertain="ignore", blank="ignore")
    raw = pd.read_csv(tmp_path / "chexpert" / "CheXpert-v1.0-small" / "train.csv")
    np.testing.assert_array_equal(np.isnan(chx.labels), raw[CHEXPERT_LABELS].isin([-1.0]).to_numpy() | raw[CHEXPERT_LABELS].isna().to_numpy())
    mim = MIMICCXR(tmp_path / "mimic", "all", views=None, size=32)
    assert len(mim) > 15 and all(mim[i]["text"] for i in range(len(mim)))
    nih = NIHChestXray14(tmp_path / "nih", "all")
    assert len(nih) == len(NIHChestXray14(tmp_path / "nih", "train_val")) + len(NIHChestXray14(tmp_path / "nih", "test"))
    mg = Montgomery(tmp_path / "montgomery", masks="both", size=32)
    assert mg[0]["mask"].shape == (2, 32, 32) and 0.05 < float(mg[0]["mask"].mean()) < 0.6
    write_vindr_spine(tmp_path / "vindr", n_images=12, size=32, seed=1, progress=False)
    vs = VinDrSpineXR(tmp_path / "vindr", "all")
    ref, ref_y, _ = render_spine(12, size=32, seed=1)
    C = np.corrcoef(np.stack([vs[i]["image"].numpy().ravel() for i in range(12)]), ref.reshape(12, -1))[:12, 12:]
    assert C.max(1).min() > 0.95 and sorted(C.argmax(1)) == list(range(12))
    np.testing.assert_array_equal(vs.labels.ravel(), ref_y[C.argmax(1)])

def test_openi_xml(copy_fix):
    ds = IUXray(FIX / "openi")
    assert ds.labels.ravel().tolist() == [0, 0, 1] and ds[0]["text"].endswith("Normal chest x-XXXX.")
    root = copy_fix("openi"); (root / "ecgen-radiology" / "3.xml").write_text("<eCitation><MeSH>")
    with pytest.raises(ValueError, match="3.xml"): IUXray(root)

def test_iuxray_and_folder():
    iu = IUXray(FIX / "iuxray"); assert iu.labels.ravel().tolist() == [0, 1, 0] and "Clear lungs." in iu[1]["text"]
    f = ImageFolder(FIX / "montgomery" / "CXR_png"); assert len(f) == 3 and f.labels.shape == (3, 0)

# ---- splits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_split_disjoint_and_stratified(seed):
    r = np.random.default_rng(seed)
    pat = np.array([f"p{k}" for k in r.integers(0, 300, 1500)])
    lab = (r.random((1500, 2)) < [0.3, 0.05]).astype(np.float32)
    s = patient_split(pat, (0.6, 0.2, 0.2), seed=seed, labels=lab)
    groups = [set(pat[s == n]) for n in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(map(len, groups)) == len(set(pat))
    for g, f in zip(groups, (0.6, 0.2, 0.2)): assert abs(len(g) - f * len(set(pat))) <= 1
    for n in ("train", "val", "test"): assert lab[s == n, 1].sum() > 0                 # rare label reaches every split
    np.testing.assert_array_equal(s, patient_split(pat, (0.6, 0.2, 0.2), seed=seed, labels=lab))

def test_derived_splits_disjoint():
    parts = {k: Shenzhen(FIX / "shenzhen", k, fractions=(0.5, 0.5)) for k in ("train", "test")}
    assert not set(parts["train"].patients) & set(parts["test"].patients)
    assert sum(len(p) for p in parts.values()) == 4
    tr, va = NIHChestXray14(FIX / "nih", "train", val_frac=0.4), NIHChestXray14(FIX / "nih", "val", val_frac=0.4)
    assert not set(tr.patients) & set(va.patients) and len(tr) + len(va) == 5
    with pytest.raises(ValueError, match="unknown split"): NIHChestXray14(FIX / "nih", "validation")

# ---- label fractions ---------------------------------------------------------------------------------------
class Pool:
    pathologies = ["A", "B", "C"]
    def __init__(self, n=3000, seed=0):
        r = np.random.default_rng(seed)
        self.patients = np.array([f"p{k}" for k in r.integers(0, 1000, n)])
        self.labels = (r.random((n, 3)) < [0.5, 0.1, 0.004]).astype(np.float32)
        self.labels[r.random((n, 3)) < 0.05] = np.nan

def test_fraction_draws(tmp_path):
    pool = Pool()
    dr = label_fraction_draws(pool, (0.001, 0.01, 0.1, 1.0), draws=5, seed=7, path=tmp_path / "d.csv")
    assert dr.groupby("fraction")["draw"].nunique().to_dict() == {0.001: 5, 0.01: 5, 0.1: 5, 1.0: 1}
    for (f, k), g in dr.groupby(["fraction", "draw"]):
        idx = g["index"].to_numpy(); y = pool.labels[idx]
        assert len(idx) >= round(f * 3000) and len(set(idx)) == len(idx)
        if f < 1: assert len(idx) < round(f * 3000) + 3 * 8 + 10          # forced patients add little
        assert (np.nanmax(y, 0) == 1).all() and (np.nanmin(y, 0) == 0).all()  # a positive and a negative per label
        sel = set(pool.patients[idx]); assert np.isin(pool.patients, list(sel)).sum() == len(idx)   # whole patients
    pd.testing.assert_frame_equal(read_fraction_draws(tmp_path / "d.csv"), dr)
    pd.testing.assert_frame_equal(label_fraction_draws(pool, (0.001, 0.01, 0.1, 1.0), 5, seed=7), dr)
    other = label_fraction_draws(pool, (0.01,), 5, seed=8)
    assert not np.array_equal(fraction_indices(other, 0.01, 0), fraction_indices(dr, 0.01, 0))
    assert len(fraction_indices(dr, 1.0)) == 3000

def test_fraction_draws_errors():
    pool = Pool()
    with pytest.raises(ValueError, match="at least 2"): label_fraction_draws(pool, (0.0001,))
    with pytest.raises(ValueError, match="in \\(0, 1\\]"): label_fraction_draws(pool, (0.0,))
    pool.labels[:, 2] = np.where(np.isnan(pool.labels[:, 2]), np.nan, 0)
    with pytest.raises(ValueError, match="'C' has no positive"): label_fraction_draws(pool, (0.1,))
    assert len(label_fraction_draws(pool, (0.1,), 2, labels=["A", "B"])) > 0

def test_fraction_draws_on_dataset():
    sz = Shenzhen(FIX / "shenzhen")
    dr = label_fraction_draws(sz, (0.5, 1.0), draws={0.5: 3})
    for k in range(3): assert sorted(sz.subset(fraction_indices(dr, 0.5, k)).labels.ravel()) == [0, 1]

# ---- cache -------------------------------------------------------------------------------------------------
def test_cache_never_decodes_again(monkeypatch):
    a = CheXpert(CHX, views=("frontal", "lateral"), size=16)
    ref = torch.stack([a[i]["image"] for i in range(len(a))])
    def boom(*args, **kw): raise AssertionError("decoded after the cache was built")
    monkeypatch.setattr(D, "load_image", boom); monkeypatch.setattr(D, "read_image", boom)
    b = CheXpert(CHX, views=("frontal", "lateral"), size=16)          # opens the existing cache
    torch.testing.assert_close(torch.stack([b[i]["image"] for i in range(len(b))]), ref, rtol=0, atol=0)
    loader = torch.utils.data.DataLoader(b, batch_size=4)
    assert next(iter(loader))["image"].shape == (4, 1, 16, 16)
    monkeypatch.undo()
    c = CheXpert(CHX, views=("frontal", "lateral"), size=16, cache=False)
    torch.testing.assert_close(torch.stack([c[i]["image"] for i in range(len(c))]), ref, rtol=0, atol=0)

def test_batch_matches_samples():
    for ds in (Montgomery(FIX / "montgomery", size=12), Montgomery(FIX / "montgomery", size=12, cache=False),
               Montgomery(FIX / "montgomery", masks="both", size=12)):
        b = ds.batch([2, 0])
        for k in ("image", "labels", "mask"):
            torch.testing.assert_close(b[k], torch.stack([ds[2][k], ds[0][k]]), rtol=0, atol=0)
        dl = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))           # goes through __getitems__
        for k in ("image", "labels", "mask"):
            torch.testing.assert_close(dl[k], torch.stack([ds[i][k] for i in range(3)]), rtol=0, atol=0)
        assert dl["index"].tolist() == [0, 1, 2] and list(dl["patient"]) == list(ds.patients)
    with pytest.raises(IndexError): ds.batch([3])

def test_cache_keyed_by_split_and_size():
    from medssl.core import cache_dir
    CheXpert(CHX, size=8); CheXpert(CHX, size=12); CheXpert(CHX, "valid", size=8)
    names = sorted(p.name for p in cache_dir("decoded").iterdir() if p.name.startswith("chexpert"))
    assert any(n.startswith("chexpert-train-8px") for n in names) and any(n.startswith("chexpert-train-12px") for n in names)
    assert any(n.startswith("chexpert-valid-8px") for n in names)
    assert not any(n.startswith(".") for n in cache_dir("decoded").iterdir() for n in [n.name])   # no partial folders

def test_cache_works_in_worker_processes():
    ds = Shenzhen(FIX / "shenzhen", size=8)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    assert torch.cat([b["image"] for b in batches]).shape == (4, 1, 8, 8)

# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_images(copy_fix, caplog, cache):
    root = copy_fix("corrupt")
    with pytest.raises(BadImageError, match="not_an_image.png"):
        ds = ImageFolder(root, size=8, cache=cache); ds[1]          # cached: at build; uncached: at read
    with caplog.at_level(logging.WARNING, logger="medssl.datasets"):
        ds = ImageFolder(root, size=8, cache=cache, on_bad_image="skip")
    assert len(ds) == 1 and len(ds.skipped) == 2 and "skipped 2 unreadable" in caplog.text
    assert {Path(p).name for p, _ in ds.skipped} == {"truncated.jpg", "not_an_image.png"}
    with pytest.raises(ValueError, match="on_bad_image"): ImageFolder(root, on_bad_image="ignore")

def test_missing_image_named(copy_fix):
    root = copy_fix("shenzhen"); (root / "CXR_png" / "CHNCXR_0003_1.png").rename(root / "CHNCXR_0003_1.bak")
    ds = Montgomery(FIX / "montgomery")                       # unaffected
    (root / "CXR_png" / "CHNCXR_0002_0.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="CHNCXR_0002_0.png"): Shenzhen(root, size=8)
    assert len(Shenzhen(root, size=8, on_bad_image="skip")) == 2
    p = root / "CXR_png" / "CHNCXR_0009_x.png"; shutil.copy(FIX / "shenzhen/CXR_png/CHNCXR_0001_0.png", p)
    with pytest.raises(ValueError, match="CHNCXR_0009_x.png"): Shenzhen(root)

def test_empty_split_after_skipping(copy_fix):
    root = copy_fix("corrupt"); (root / "good.png").unlink()
    with pytest.raises(ValueError, match="empty after skipping"): ImageFolder(root, size=8, on_bad_image="skip")

def test_16bit_and_rgb_conversion(tmp_path):
    a = (np.linspace(0, 4095, 24 * 20).reshape(20, 24)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "twelve.png")
    x = read_image(tmp_path / "twelve.png"); assert x.dtype == np.float32 and abs(x.max() - 1) < 1e-6   # 12 bits in 16
    Image.fromarray((a.astype(np.uint32) * 16).astype(np.uint16)).save(tmp_path / "sixteen.png")
    assert abs(read_image(tmp_path / "sixteen.png").max() - 65520 / 65535) < 1e-6
    rgb = np.zeros((20, 24, 3), np.uint8); rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png").shape == (20, 24) and 100 < load_image(tmp_path / "rgb.png").mean() < 200
