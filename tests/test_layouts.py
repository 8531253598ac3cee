"medssl.layouts: the layouts people really have (built from phantom files), the registry's check/count, compressed DICOMs, reports as paper 003 used them, bad input, and no per-row file-system calls."
import gzip, os, shutil, subprocess, sys, textwrap
from importlib.util import find_spec
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from medssl.datasets import BadImageError, read_image
from medssl.layouts import (LAYOUTS, WRITERS, CheXpert, MIMICCXR, NIHChestXray14, VinDrSpineXR, write_chexpert, write_mimic,
                            write_nih, write_vindr_spine, write_tables)
from medssl.text import report_sections

FIX = Path(__file__).parent / "fixtures"
HAS_DICOM_PLUGINS = all(find_spec(m) for m in ("pylibjpeg", "openjpeg", "jpeg_ls"))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    "Small phantom roots of CheXpert, MIMIC-CXR and NIH, written once for the module."
    d = tmp_path_factory.mktemp("phantoms")
    return dict(chexpert=write_chexpert(d / "chexpert", n_patients=14, size=32, valid_frac=.3, progress=False),
                mimic=write_mimic(d / "mimic", n_patients=14, size=32, progress=False),
                nih=write_nih(d / "nih", n_patients=14, size=32, progress=False))


def _pixels(ds):
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


# ---- the registry -------------------------------------------------------------------------------------------
def test_registry_names_and_fields():
    assert list(LAYOUTS) == ["chexpert", "mimic", "mimic_reports", "nih", "shenzhen", "montgomery", "vindr_spine", "siim", "iuxray"]
    for name, l in LAYOUTS.items():
        assert l.name == name and l.title and l.contents and "(" in l.title and callable(l.check) and callable(l.count)
    assert LAYOUTS["mimic_reports"].reader is MIMICCXR and LAYOUTS["iuxray"].writer is None
    assert LAYOUTS["vindr_spine"].writer is write_vindr_spine and LAYOUTS["chexpert"].writer is write_chexpert


@pytest.mark.parametrize("name,fixture,expect", [
    ("chexpert", "chexpert", dict(patients=7, images=11)), ("mimic", "mimic", dict(patients=3, images=5)),
    ("nih", "nih", dict(patients=5, images=7)), ("shenzhen", "shenzhen", dict(patients=4, images=4)),
    ("montgomery", "montgomery", dict(patients=3, images=3)), ("vindr_spine", "vindr", dict(patients=6, images=6)),
    ("siim", "siim", dict(patients=4, images=4)), ("iuxray", "iuxray", dict(patients=3, images=5)),
    ("iuxray", "openi", dict(patients=2, images=3)), ("mimic_reports", "mimic", dict(patients=3, images=0))])
def test_check_and_count_on_real_layout_fixtures(name, fixture, expect):
    assert LAYOUTS[name].check(FIX / fixture) == []
    assert LAYOUTS[name].count(FIX / fixture) == expect


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_check_an_empty_root_names_every_expected_file(name, tmp_path):
    problems = LAYOUTS[name].check(tmp_path)
    assert problems and all(str(tmp_path) in p and ("not found" in p or "no " in p) for p in problems)
    with pytest.raises(ValueError, match="is not usable"): LAYOUTS[name].count(tmp_path)
    assert LAYOUTS[name].check(tmp_path / "missing") == [f"{tmp_path / 'missing'}: folder not found (a {name} root holds {LAYOUTS[name].contents})"]


def test_check_reports_all_problems_at_once(tmp_path):
    root = shutil.copytree(FIX / "nih", tmp_path / "nih")
    (root / "test_list.txt").unlink(); (root / "train_val_list.txt").unlink(); shutil.rmtree(root / "images")
    problems = LAYOUTS["nih"].check(root)
    assert len(problems) == 6, problems                      # 3 images of the first rows, 2 split lists, the image folder
    assert sum("train_val_list.txt" in p or "test_list.txt" in p for p in problems) == 2


def test_every_phantom_writer_writes_a_root_its_check_accepts(tmp_path):
    for name, w in WRITERS.items():
        root = w(tmp_path / name, n_patients=6, size=32, progress=False)
        assert LAYOUTS[name].check(root) == [], name
        assert LAYOUTS[name].count(root)["images"] >= 6
    assert LAYOUTS["mimic_reports"].check(tmp_path / "mimic") == []                     # a phantom MIMIC root holds its reports
    v = write_vindr_spine(tmp_path / "vindr", n_images=8, size=32, progress=False)
    assert LAYOUTS["vindr_spine"].check(v) == [] and LAYOUTS["vindr_spine"].count(v)["images"] == 8


# ---- CheXpert as people have it -----------------------------------------------------------------------------
def test_chexpert_layouts_read_the_same_images(phantom, tmp_path):
    src = phantom["chexpert"]
    ref = CheXpert(src / "CheXpert-v1.0-small", "train", views=("frontal", "lateral"))
    rel = lambda ds: [p.relative_to(ds.root) for p in ds.paths]
    kaggle = shutil.copytree(src / "CheXpert-v1.0-small", tmp_path / "archive")               # train.csv, train/ at the top
    full = tmp_path / "stanford"; shutil.copytree(src / "CheXpert-v1.0-small", full / "CheXpert-v1.0")
    for k in ("train", "valid"):
        f = full / "CheXpert-v1.0" / f"{k}.csv"; f.write_text(f.read_text().replace("CheXpert-v1.0-small/", "CheXpert-v1.0/"))
    for root in (src, kaggle, full, full / "CheXpert-v1.0"):
        ds = CheXpert(root, "train", views=("frontal", "lateral"))
        assert rel(ds) == rel(ref) and np.array_equal(ds.labels, ref.labels) and list(ds.patients) == list(ref.patients)
        torch.testing.assert_close(_pixels(ds), _pixels(ref), rtol=0, atol=0)
        assert LAYOUTS["chexpert"].check(root) == []


def test_chexpert_image_folders_linked_from_another_disk(phantom, tmp_path):
    root = shutil.copytree(phantom["chexpert"], tmp_path / "root"); disk = tmp_path / "disk"; disk.mkdir()
    for k in ("train", "valid"):
        d = root / "CheXpert-v1.0-small" / k
        if d.exists(): shutil.move(d, disk / k); d.symlink_to(disk / k)
    ds = CheXpert(root, "train", size=32)
    assert all(str(p).startswith(str(root)) for p in ds.paths)                     # not resolved onto the other disk
    ref = CheXpert(phantom["chexpert"], "train", size=32)
    torch.testing.assert_close(ds.batch(range(len(ds)))["image"], ref.batch(range(len(ref)))["image"], rtol=0, atol=0)
    assert LAYOUTS["chexpert"].check(root) == []


def test_chexpert_path_escapes_are_still_refused(phantom, tmp_path):
    root = shutil.copytree(phantom["chexpert"] / "CheXpert-v1.0-small", tmp_path / "cx")
    df = pd.read_csv(root / "train.csv")
    for bad in ("CheXpert-v1.0-small/../../secret.jpg", "/etc/passwd", "CheXpert-v1.0-small/train/../../../x.jpg"):
        df.loc[3, "Path"] = bad; df.to_csv(root / "train.csv", index=False)
        with pytest.raises(ValueError, match="escapes the dataset root"): CheXpert(root, views=("frontal", "lateral"))
        assert any("escapes the dataset root" in p for p in LAYOUTS["chexpert"].check(root))          # the check reads the first rows


# ---- NIH ---------------------------------------------------------------------------------------------------------
def test_nih_v2020_name_and_download_batches(phantom, tmp_path):
    src = phantom["nih"]; ref = NIHChestXray14(src, "all", size=32)
    root = shutil.copytree(src, tmp_path / "nih")
    (root / "Data_Entry_2017.csv").rename(root / "Data_Entry_2017_v2020.csv")
    files = sorted((root / "images").iterdir())
    for k, chunk in enumerate(np.array_split(np.array(files, object), 3)):               # images_001/images ... images_003/images
        (root / f"images_{k + 1:03d}" / "images").mkdir(parents=True)
        for f in chunk: shutil.move(f, root / f"images_{k + 1:03d}" / "images" / f.name)
    (root / "images").rmdir()
    ds = NIHChestXray14(root, "all", size=32)
    assert {p.parent.parent.name for p in ds.paths} == {"images_001", "images_002", "images_003"}
    assert np.array_equal(ds.labels, ref.labels)
    torch.testing.assert_close(ds.batch(range(len(ds)))["image"], ref.batch(range(len(ref)))["image"], rtol=0, atol=0)
    assert LAYOUTS["nih"].check(root) == [] and LAYOUTS["nih"].count(root) == LAYOUTS["nih"].count(src)


# ---- MIMIC-CXR and its reports ---------------------------------------------------------------------------------------
def _split_reports(src, dst, prefix="mimic-cxr-reports"):
    for f in sorted((src / "files").rglob("s*.txt")):
        q = dst / prefix / f.relative_to(src); q.parent.mkdir(parents=True, exist_ok=True); shutil.move(f, q)
    return dst


@pytest.mark.parametrize("prefix", ["mimic-cxr-reports", ""])
def test_mimic_reports_from_their_own_root(phantom, tmp_path, prefix):
    ref = MIMICCXR(phantom["mimic"], "all", views=None, sections=("IMPRESSION",))
    jpg = shutil.copytree(phantom["mimic"], tmp_path / "jpg"); rep = _split_reports(jpg, tmp_path / "reports", prefix)
    assert LAYOUTS["mimic_reports"].check(rep) == [] and LAYOUTS["mimic_reports"].check(jpg) != []
    ds = MIMICCXR(jpg, "all", views=None, sections=("IMPRESSION",), reports_root=rep)
    assert [ds.text(i) for i in range(len(ds))] == [ref.text(i) for i in range(len(ref))]
    with pytest.raises(FileNotFoundError, match="reports_root="): MIMICCXR(jpg, "all", views=None)
    assert len(MIMICCXR(jpg, "all", views=None, sections=None)) == len(MIMICCXR(phantom["mimic"], "all", views=None, sections=None))


def test_mimic_studies_without_the_section_are_dropped_and_counted(phantom, tmp_path):
    root = shutil.copytree(phantom["mimic"], tmp_path / "m")
    reports = sorted((root / "files").rglob("s*.txt"))
    reports[0].write_text(reports[0].read_text().split("IMPRESSION")[0])                   # no impression
    reports[1].write_text("just a line without any section header\n")                     # no section at all
    reports[2].unlink()                                                                      # no report file
    with pytest.raises(FileNotFoundError, match=reports[2].name): MIMICCXR(root, "all", views=None, sections=("IMPRESSION",))
    ds = MIMICCXR(root, "all", views=None, sections=("IMPRESSION",), missing_reports="drop")
    assert ds.dropped == {"no IMPRESSION section": 2, "missing report file": 1}
    n_all = len(MIMICCXR(root, "all", views=None, sections=None))
    lost = {r.stem[1:] for r in reports[:3]}
    assert len(ds) == n_all - sum(s in lost for s in MIMICCXR(root, "all", views=None, sections=None).studies)
    assert not set(ds.studies) & lost and all(ds.text(i) for i in range(len(ds)))
    both = MIMICCXR(root, "all", views=None, missing_reports="drop")                        # FINDINGS or IMPRESSION: one study lacks both
    assert both.dropped == {"no FINDINGS or IMPRESSION section": 1, "missing report file": 1}


def test_report_sections_missing_modes():
    r = " FINDINGS: Clear.\n INDICATION: cough\n"
    assert report_sections(r, ("IMPRESSION",)) == "FINDINGS: Clear. INDICATION: cough"    # the old default: the whole text
    assert report_sections(r, ("IMPRESSION",), missing="none") is None
    with pytest.raises(ValueError, match="no IMPRESSION section"): report_sections(r, ("IMPRESSION",), missing="error")
    assert report_sections(r, ("FINDINGS", "IMPRESSION"), missing="none") == "Clear."
    with pytest.raises(ValueError, match="missing must be"): report_sections(r, missing="drop")
    import medssl.datasets as D
    with pytest.warns(DeprecationWarning, match="medssl.text"): assert D.report_sections is report_sections


# ---- VinDr-SpineXR: compressed DICOMs --------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_DICOM_PLUGINS, reason="the dicom extra (pylibjpeg, pylibjpeg-openjpeg, pyjpegls) is not installed")
@pytest.mark.parametrize("compression,uid", [("jpeg2000", "1.2.840.10008.1.2.4.90"), ("jpeg-ls", "1.2.840.10008.1.2.4.80")])
def test_vindr_compressed_dicoms_decode_like_uncompressed(tmp_path, compression, uid):
    import pydicom
    raw = VinDrSpineXR(write_vindr_spine(tmp_path / "raw", 10, size=40, seed=4, progress=False), "all")
    root = write_vindr_spine(tmp_path / compression, 10, size=40, seed=4, compression=compression, progress=False)
    ds = VinDrSpineXR(root, "all")
    assert all(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == uid for p in ds.paths)
    torch.testing.assert_close(_pixels(ds), _pixels(raw), rtol=0, atol=0)                  # lossless
    assert LAYOUTS["vindr_spine"].check(root) == []


@pytest.mark.skipif(not HAS_DICOM_PLUGINS, reason="the dicom extra is needed to write the compressed file")
def test_without_the_plugin_the_error_names_the_file_and_the_package(tmp_path):
    root = write_vindr_spine(tmp_path / "ls", 3, size=32, compression="jpeg-ls", progress=False)
    f = sorted((root / "train_images").glob("*.dicom") or (root / "test_images").glob("*.dicom"))[0]
    code = textwrap.dedent(f'''
        import sys
        for m in ("jpeg_ls", "libjpeg", "openjpeg", "pylibjpeg", "gdcm"): sys.modules[m] = None    # no decoder plugin
        from medssl.datasets import read_image, BadImageError
        from medssl.layouts import LAYOUTS
        try: read_image({str(f)!r}); print("decoded")
        except BadImageError as e: print("ERROR", e)
        print("CHECK", LAYOUTS["vindr_spine"].check({str(root)!r}))
    ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stdout.splitlines()[0]
    assert err.startswith("ERROR") and f.name in err and "JPEG-LS" in err and "pyjpegls" in err and 'medssl[dicom]' in err, r.stdout
    assert "pyjpegls" in r.stdout.splitlines()[1], r.stdout                                   # the check reports it too


def test_bad_dicom_is_named(tmp_path):
    root = shutil.copytree(FIX / "vindr", tmp_path / "v")
    bad = root / "train_images" / "0a1b2c3d4e5f60718293a4b5c6d7e8f9.dicom"; bad.write_bytes(b"\x00" * 200)
    with pytest.raises(BadImageError, match=bad.name): read_image(bad)
    assert any(bad.name in p and "not a readable DICOM" in p for p in LAYOUTS["vindr_spine"].check(root))
    with pytest.raises(BadImageError, match=bad.name): VinDrSpineXR(root, "trainval", size=8)


# ---- bad tables ------------------------------------------------------------------------------------------------------
def test_malformed_tables_name_their_file(tmp_path):
    root = shutil.copytree(FIX / "mimic", tmp_path / "m")
    (root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="mimic-cxr-2.0.0-split.csv.gz"): MIMICCXR(root, sections=None)
    assert any("mimic-cxr-2.0.0-split.csv.gz: cannot be read" in p for p in LAYOUTS["mimic"].check(root))
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as f: f.write("dicom_id,study\nx,1\n")
    with pytest.raises(ValueError, match=r"mimic-cxr-2.0.0-split.csv.gz: missing column\(s\) \['split'\]"): MIMICCXR(root, sections=None)
    cx = shutil.copytree(FIX / "chexpert", tmp_path / "cx") / "CheXpert-v1.0-small"
    (cx / "train.csv").write_text((cx / "train.csv").read_text().replace(",1.0\n", ",yes\n", 1))
    with pytest.raises(ValueError, match="train.csv: unknown label value 'yes'"): CheXpert(cx)
    assert any("unknown label value 'yes'" in p for p in LAYOUTS["chexpert"].check(cx))


# ---- speed: no per-row file-system call --------------------------------------------------------------------------------
def test_readers_make_no_per_row_file_system_calls(tmp_path, monkeypatch):
    "Building a reader over 4,000 rows stats a handful of files, not one per row (the lexical path check never resolves)."
    roots = {k: write_tables(k, 4000, tmp_path)[0] for k in ("chexpert", "nih", "mimic")}
    calls = []
    real_stat, real_lstat = os.stat, os.lstat
    monkeypatch.setattr(os, "stat", lambda *a, **k: (calls.append(a[0]), real_stat(*a, **k))[1])
    monkeypatch.setattr(os, "lstat", lambda *a, **k: (calls.append(a[0]), real_lstat(*a, **k))[1])
    for build in (lambda: CheXpert(roots["chexpert"], views=("frontal", "lateral")), lambda: NIHChestXray14(roots["nih"], "all"),
                  lambda: MIMICCXR(roots["mimic"], "all", views=None, sections=None)):
        calls.clear(); assert len(build()) == 4000
        assert len(calls) < 40, (len(calls), calls[:10])
