"Tests of medssl.xrv: torchxrayvision's shipped real data (CheXpert labels, lung masks, IU reports) driving the phantom."
import gzip, io, tarfile, zipfile
import xml.etree.ElementTree as ET
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medssl.xrv as xrv
from medssl.phantom import CHEXPERT_LABELS, FINDINGS, render, sample_cohort, truth
from medssl.xrv import (CHEXPERT_FILE, LUNG_CLIP, MASKS_FILE, REPORTS_FILE, chexpert_to_patients, iu_patients,
                        label_presence, lung_patients, lung_shape, lung_table, parse_mesh, read_chexpert, read_iu_reports,
                        read_lung_masks, render_lungs, report_findings, sample_chexpert, shape_to_anatomy, write_xrv_fixture,
                        xrv_data_dir, xrv_patients)

HAS_XRV = find_spec("torchxrayvision") is not None


@pytest.fixture(scope="module")
def fix(tmp_path_factory):
    return write_xrv_fixture(tmp_path_factory.mktemp("xrv_data"), n_patients=50, seed=1)


# ---------------------------------------------------------------- locating the data
def test_data_dir(tmp_path, monkeypatch):
    assert xrv_data_dir(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="nope"): xrv_data_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=CHEXPERT_FILE): read_chexpert(tmp_path)          # folder without the file
    monkeypatch.setattr(xrv, "find_spec", lambda name: None)                                      # package not installed
    with pytest.raises(FileNotFoundError, match="pip install --no-deps torchxrayvision"): xrv_data_dir()
    assert not xrv.has_xrv()


def test_fixture_files_are_in_the_real_formats(fix):
    with gzip.open(fix / CHEXPERT_FILE, "rt") as f: header = f.readline().strip().split(",")
    assert header == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    with zipfile.ZipFile(fix / MASKS_FILE) as z:
        files = [n for n in z.namelist() if not n.endswith("/")]
        assert all(n.startswith("semantic_masks_v7labs_lungs/") for n in z.namelist())
        ims = [Image.open(io.BytesIO(z.read(n))) for n in files]
    assert {i.format for i in ims} == {"PNG"} and {i.mode for i in ims} == {"L"}
    assert {n.rsplit(".", 1)[1] for n in files} >= {"jpg", "png", "jpeg"}                      # suffixes lie, as in the real zip
    with tarfile.open(fix / REPORTS_FILE, "r:gz") as t:
        names = t.getnames(); root = ET.fromstring(t.extractfile("ecgen-radiology/2.xml").read())
    assert names[0] == "ecgen-radiology" and all(n.startswith("ecgen-radiology") for n in names)
    assert root.tag == "eCitation" and root.find("uId").get("id") == "CXR2"
    assert [a.get("Label") for a in root.iter("AbstractText")] == ["COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION"]


# ---------------------------------------------------------------- CheXpert labels
def test_chexpert_sampling(fix):
    t = read_chexpert(fix)
    assert t["patient"].str.fullmatch(r"patient\d{5}").all()
    rows = sample_chexpert(30, seed=4, data_dir=fix)
    assert len(rows) == 30 and rows["patient"].is_unique and (rows["Frontal/Lateral"] == "Frontal").all()
    pd.testing.assert_frame_equal(sample_chexpert(30, seed=4, table=t), rows)
    assert sample_chexpert(30, seed=5, table=t)["patient"].tolist() != rows["patient"].tolist()
    for bad in (0, 10_000, 2.5):
        with pytest.raises(ValueError, match="n must be"): sample_chexpert(bad, table=t)


def test_chexpert_bad_tables(tmp_path):
    pd.DataFrame({"Path": ["x"], "Sex": ["Male"]}).to_csv(tmp_path / CHEXPERT_FILE, index=False, compression="gzip")
    with pytest.raises(ValueError, match="lacks CheXpert column"): read_chexpert(tmp_path)
    row = {"Path": "CheXpert-v1.0-small/train/nobody/study1/view1_frontal.jpg", "Sex": "Male", "Age": 50,
           "Frontal/Lateral": "Frontal", "AP/PA": "AP", **{c: np.nan for c in CHEXPERT_LABELS}}
    (tmp_path / "b").mkdir(); pd.DataFrame([row]).to_csv(tmp_path / "b" / CHEXPERT_FILE, index=False, compression="gzip")
    with pytest.raises(ValueError, match="patientNNNNN"): read_chexpert(tmp_path / "b")


def _rows(**labels):
    "One real-format row per entry of `labels` lists (other labels blank)."
    n = len(next(iter(labels.values())))
    df = pd.DataFrame({"Path": [f"p/patient{i:05d}/study1/view1_frontal.jpg" for i in range(n)], "Sex": ["Female"] * n,
                       "Age": [70] * n, "Frontal/Lateral": ["Frontal"] * n, "AP/PA": ["AP"] * n})
    for c in CHEXPERT_LABELS: df[c] = labels.get(c, [np.nan] * n)
    return df


def test_chexpert_mapping_rules():
    n = 4000
    p = chexpert_to_patients(_rows(**{"Edema": [1.] * n, "Atelectasis": [-1.] * n, "Pneumonia": [0.] * n}), seed=0)
    np.testing.assert_allclose(np.bincount(p["Edema"], minlength=4)[1:] / n, [.4, .35, .25], atol=.03)   # positive: drawn severity
    assert (p["Atelectasis"] == 1).all() and (p["Pneumonia"] == 0).all() and (p["Consolidation"] == 0).all()
    assert (p["Tuberculosis"] == 0).all()
    r = _rows(**{"Enlarged Cardiomediastinum": [1., 1., -1., np.nan], "Cardiomegaly": [np.nan, 1., np.nan, np.nan],
                 "Lung Opacity": [np.nan, np.nan, np.nan, 1.]})
    r.loc[0, "Sex"], r.loc[1, "Age"] = "Unknown", 0
    q = chexpert_to_patients(r, seed=3)
    assert (q["Wide Mediastinum"].to_numpy() > 0).tolist() == [True, False, True, False] and q.loc[2, "Wide Mediastinum"] == 1
    assert q.loc[3, list(FINDINGS)].sum() == 0                                                  # Lung Opacity alone: nothing
    assert q.loc[0, "sex"] in ("Male", "Female") and q.loc[1, "age"] >= 18 and q.loc[2, "age"] == 70
    pd.testing.assert_frame_equal(chexpert_to_patients(r, seed=3), q)
    r.loc[0, "Edema"] = .5
    with pytest.raises(ValueError, match="labels must be"): chexpert_to_patients(r)


def test_chexpert_drives_the_cohort(fix):
    rows = sample_chexpert(25, seed=0, data_dir=fix)
    c = sample_cohort(25, seed=0, max_studies=1, lateral=False, patients=chexpert_to_patients(rows))
    same = [l for l in CHEXPERT_LABELS if l in FINDINGS]
    np.testing.assert_array_equal(truth(c, same), label_presence(rows)[same].to_numpy())


# ---------------------------------------------------------------- lung masks
def test_lung_shape_and_round_trip():
    g = pd.DataFrame({"lw": [.9, 1.1, 1., 1.], "dome": [.36, .36, .3, .42], "ddiff": [0., .06, -.04, .12]})
    s = pd.DataFrame([lung_shape(m) for m in render_lungs(g, 192)])
    np.testing.assert_allclose(s["asym"], g["ddiff"] / (g["dome"] + .72), atol=.012)
    assert s["aspect"][1] > s["aspect"][0] and s["aspect"][2] > s["aspect"][3]      # wider or shorter lungs, larger aspect
    est = shape_to_anatomy(s["aspect"], s["asym"])
    np.testing.assert_allclose(est["ddiff"], g["ddiff"], atol=.015)
    back = pd.DataFrame([lung_shape(m) for m in render_lungs(est, 192)])
    np.testing.assert_allclose(back["aspect"], s["aspect"], rtol=.03)
    np.testing.assert_allclose(back["asym"], s["asym"], atol=.012)


def test_lung_shape_rejects_and_errors():
    yy, xx = np.mgrid[:80, :100]
    ell = lambda cx, cy=40: ((xx - cx) / 15) ** 2 + ((yy - cy) / 30) ** 2 < 1
    assert lung_shape(np.zeros((40, 40), bool)) is None
    assert lung_shape(ell(30)) is None                                             # one lung
    top_bottom = (((xx - 50) / 30) ** 2 + ((yy - 18) / 12) ** 2 < 1) | (((xx - 50) / 30) ** 2 + ((yy - 60) / 12) ** 2 < 1)
    assert lung_shape(top_bottom) is None                                          # two regions, not side by side
    assert lung_shape(ell(25) | ell(75)) is not None
    with pytest.raises(ValueError, match="2-D"): lung_shape(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="aspect > 0"): shape_to_anatomy([-1.], [0.])
    with pytest.raises(ValueError, match="one shape"): shape_to_anatomy([1., 1.2], [0.])
    with pytest.raises(ValueError, match="anatomy columns"): render_lungs(pd.DataFrame({"age": [50]}))


def test_lung_table_and_patients(fix):
    t = lung_table(fix)
    assert t["ok"].sum() == 5 and set(t.loc[~t["ok"], "name"].str.rsplit("/", n=1).str[1]) == {"empty.png", "lateral.jpg"}
    for c, (lo, hi) in LUNG_CLIP.items(): assert t.loc[t["ok"], c].between(lo, hi).all()
    np.testing.assert_allclose(t["ddiff"].iloc[:5], [d for _, _, d in xrv._FIXTURE_LUNGS], atol=.015)
    m = read_lung_masks(fix, names=[t["name"].iloc[0]], max_side=64)
    assert list(m) == [t["name"].iloc[0]] and max(m[t["name"].iloc[0]].shape) <= 64
    full = read_lung_masks(fix)[t["name"].iloc[0]]
    assert full.dtype == bool and 0 < full.mean() < 1
    lp = lung_patients(12, seed=2, data_dir=fix)                                   # more than there are: with replacement
    assert list(lp.columns) == ["lw", "dome", "ddiff"] and len(lp) == 12 and len(lp.attrs["source"]) == 12
    pd.testing.assert_frame_equal(lung_patients(12, seed=2, table=t), lp)
    assert len(set(lung_patients(5, seed=0, table=t).attrs["source"])) == 5       # without replacement while enough
    with pytest.raises(ValueError, match="positive int"): lung_patients(-1, table=t)
    with pytest.raises(ValueError, match="no usable"): lung_patients(2, table=t[~t["ok"]])
    c = sample_cohort(12, seed=0, max_studies=1, lateral=False, patients=lp)
    np.testing.assert_allclose(c["dome"], lp["dome"])


def test_annotation_marks_are_not_lung(tmp_path):
    m = render_lungs(pd.DataFrame({"lw": [1.]}), 128).astype(np.uint8)[0] * 255
    marked = m.copy(); marked[5:30, 5:30] = 127
    with zipfile.ZipFile(tmp_path / MASKS_FILE, "w") as z:
        for name, a in (("a.jpg", m), ("b.png", marked)):
            b = io.BytesIO(); Image.fromarray(a, "L").save(b, format="PNG"); z.writestr("semantic_masks_v7labs_lungs/" + name, b.getvalue())
    t = lung_table(tmp_path)
    np.testing.assert_allclose(t[["aspect", "asym"]].iloc[0], t[["aspect", "asym"]].iloc[1])


# ---------------------------------------------------------------- IU reports
def test_read_reports(fix):
    r = read_iu_reports(fix).set_index("id")
    assert len(r) == len(xrv._FIXTURE_REPORTS) and list(r.columns) == ["comparison", "indication", "findings", "impression", "mesh", "n_images"]
    assert r.loc["CXR4", "mesh"] == ["Pneumothorax/right/large"] and r.loc["CXR4", "findings"] == "Large right pneumothorax."
    assert pd.isna(r.loc["CXR7", "findings"]) and pd.isna(r.loc["CXR11", "impression"]) and r.loc["CXR12", "mesh"] == []


def test_mesh_mapping():
    assert parse_mesh("Pulmonary Atelectasis/base/bilateral/mild") == (("Atelectasis",), 1, 0)
    assert parse_mesh("Fractures, Bone/ribs/right") == (("Fracture",), 0, -1)
    assert parse_mesh("Hydropneumothorax/left")[0] == ("Pneumothorax", "Pleural Effusion")
    assert parse_mesh("Mediastinum/prominent")[0] == () and parse_mesh("Mediastinum/widened")[0] == ("Wide Mediastinum",)
    assert parse_mesh("Catheters, Indwelling")[0] == ("Support Devices",)
    assert parse_mesh("Opacity/lung/right/left")[2] == 0
    sev, side, un = report_findings(["normal", "Scoliosis/mild", "Pleural Effusion/left/moderate", "Pleural Effusion/right"])
    assert sev == {"Pleural Effusion": 2} and side == {"Pleural Effusion": 0} and un == ["Scoliosis/mild"]


def test_iu_patients_pairs_text_and_findings(fix):
    r = read_iu_reports(fix); by = r.set_index("id")
    pt, texts = iu_patients(9, seed=1, reports=r)
    assert sorted(pt.attrs["report_id"]) == sorted(f"CXR{i}" for i in (1, 2, 3, 4, 5, 8, 9, 10, 11))
    for i, rid in enumerate(pt.attrs["report_id"]):
        f, imp = by.loc[rid, "findings"], by.loc[rid, "impression"]
        assert (isinstance(f, str) and f in texts[i]) or (isinstance(imp, str) and imp in texts[i])
        sev = pt[list(FINDINGS)].iloc[i]
        assert set(sev.index[sev.to_numpy() > 0]) == set(report_findings(by.loc[rid, "mesh"])[0])
    i4 = pt.attrs["report_id"].index("CXR4")
    assert pt.iloc[i4]["Pneumothorax"] == 3 and pt.iloc[i4]["Pneumothorax side"] == -1
    pt2, texts2 = iu_patients(9, seed=1, data_dir=fix)
    pd.testing.assert_frame_equal(pt2, pt); assert texts2 == texts
    assert "CXR6" in iu_patients(11, seed=0, reports=r, mapped_only=False)[0].attrs["report_id"]
    with pytest.raises(ValueError, match="1..9"): iu_patients(10, reports=r)


def test_report_sides_render_on_the_stated_side(fix):
    pt, _ = iu_patients(9, seed=1, data_dir=fix)
    c = sample_cohort(9, seed=0, max_studies=1, lateral=False, patients=pt)        # sides go in through the patients table
    i4 = pt.attrs["report_id"].index("CXR4")                                      # large right pneumothorax
    assert c.loc[c["patient"] == i4, "ptx_side"].tolist() == [-1]
    i5 = pt.attrs["report_id"].index("CXR5")                                      # right upper lobe nodule
    assert (c.loc[c["patient"] == i5, "nod_u"] < 0).all()
    x, m = render(c[c["patient"] == i4], 96, masks=True)
    ptx = m[0, 3]
    assert ptx.any() and ptx[:, :48].sum() > 10 * ptx[:, 48:].sum()              # patient right = image left
    assert not any(c.endswith(" side") and FINDINGS[c[:-5]] in ("ede", "cmg") for c in pt.columns)   # only findings the phantom sides


def test_xrv_patients(fix):
    p = xrv_patients(10, seed=3, data_dir=fix)
    assert list(p.columns) == list(FINDINGS) + ["age", "sex", "lw", "dome", "ddiff"]
    pd.testing.assert_frame_equal(xrv_patients(10, seed=3, data_dir=fix), p)
    assert list(xrv_patients(10, seed=3, data_dir=fix, lungs=False).columns) == list(FINDINGS) + ["age", "sex"]
    x = render(sample_cohort(10, seed=0, max_studies=1, lateral=False, patients=p), 64)
    assert x.shape == (10, 64, 64) and np.isfinite(x).all()


# ---------------------------------------------------------------- the real files (only where torchxrayvision is installed)
@pytest.mark.skipif(not HAS_XRV, reason="torchxrayvision is not installed (optional extra)")
def test_real_files():
    t = read_chexpert()
    assert all(c in t.columns for c in CHEXPERT_LABELS) and len(t) > 100_000 and t["patient"].nunique() > 50_000
    assert set(t["Frontal/Lateral"]) == {"Frontal", "Lateral"}
    assert set(np.unique(t[CHEXPERT_LABELS].to_numpy(float)[~np.isnan(t[CHEXPERT_LABELS].to_numpy(float))])) == {-1., 0., 1.}
    rows = sample_chexpert(3000, seed=0)
    gap = (label_presence(rows).mean() - label_presence(sample_chexpert(None)).mean()).abs().max()
    assert gap < .04                                                               # a fair sample of patients
    lt = lung_table()
    assert len(lt) > 400 and lt["ok"].sum() > 300
    assert 1.2 < lt.loc[lt["ok"], "aspect"].median() < 1.8
    r = read_iu_reports()
    assert len(r) > 3000 and r["impression"].notna().mean() > .9 and (r["mesh"].map(len) > 0).mean() > .9
    pt, texts = iu_patients(500, seed=0)
    assert len(texts) == 500 and all(texts) and (pt[list(FINDINGS)].to_numpy().sum(1) > 0).mean() > .1
