"medssl.image_cache: the decoded-image cache built in parallel, resumed after a kill, built once by concurrent processes, checked by hash."
import json, os, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from medssl.image_cache import build_cache, verify
from medssl.files import load_image

ROOT = Path(__file__).resolve().parents[1]

def _pngs(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True); rng = np.random.default_rng(seed)
    for k in range(n): Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(folder/f"{k:04d}.png")
    return sorted(str(p) for p in folder.glob("*.png"))

def _images(d): return np.load(Path(d)/"images.npy")

def test_parallel_equals_serial(tmp_path):
    files = _pngs(tmp_path/"img", 40)
    a = build_cache(tmp_path/"serial", files, 12, chunk=7, workers=1, progress=False)
    b = build_cache(tmp_path/"parallel", files, 12, chunk=7, workers=2, progress=False)
    assert a["sha256"] == b["sha256"] and np.array_equal(_images(tmp_path/"serial"), _images(tmp_path/"parallel"))
    assert np.array_equal(_images(tmp_path/"parallel")[17], load_image(files[17], 12))
    assert verify(tmp_path/"parallel")

SLOW_BUILD = textwrap.dedent('''
    import sys, time, medssl.image_cache as ic
    from pathlib import Path
    decode = ic.load_image
    def slow(p, s): time.sleep(0.02); return decode(p, s)
    ic.load_image = slow
    files = sorted(str(p) for p in Path(sys.argv[1]).glob("*.png"))
    ic.build_cache(sys.argv[2], files, 12, chunk=10, workers=1, progress=False)
''')

def test_killed_build_resumes_to_the_same_cache(tmp_path):
    "A build killed mid-way keeps its finished chunks; the next build decodes only the rest and equals an uninterrupted one."
    files = _pngs(tmp_path/"img", 120)
    (tmp_path/"slow.py").write_text(SLOW_BUILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, str(tmp_path/"slow.py"), str(tmp_path/"img"), str(tmp_path/"cache")], env=env)
    chunks, t0 = tmp_path/"cache.partial"/"chunks", time.time()
    while time.time() - t0 < 120 and not (chunks.exists() and len(list(chunks.glob("*.json"))) >= 3): time.sleep(0.05)
    p.kill(); p.wait()
    kept = len(list(chunks.glob("*.json")))
    assert 3 <= kept < 12 and not (tmp_path/"cache"/"meta.json").exists()
    import medssl.image_cache as ic
    calls, decode = [], ic._decode_chunk
    def counting(*a): calls.append(a[1]); return decode(*a)
    ic._decode_chunk = counting
    try: meta = build_cache(tmp_path/"cache", files, 12, chunk=10, workers=1, progress=False)
    finally: ic._decode_chunk = decode
    assert len(calls) == 12 - kept                                            # only the unfinished chunks
    ref = build_cache(tmp_path/"ref", files, 12, chunk=10, workers=1, progress=False)
    assert meta["sha256"] == ref["sha256"] and np.array_equal(_images(tmp_path/"cache"), _images(tmp_path/"ref"))
    assert not (tmp_path/"cache.partial").exists() and verify(tmp_path/"cache")

def test_concurrent_builders_build_once(tmp_path):
    files = _pngs(tmp_path/"img", 30)
    code = ("import sys; from medssl.image_cache import build_cache; from pathlib import Path; "
            "files = sorted(str(p) for p in Path(sys.argv[1]).glob('*.png')); "
            "print(build_cache(sys.argv[2], files, 12, chunk=5, workers=1, progress=False)['sha256'])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ps = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path/"img"), str(tmp_path/"cache")], env=env, stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in ps]
    assert all(p.returncode == 0 for p in ps) and outs[0] == outs[1] and verify(tmp_path/"cache")

def test_dataset_cache_is_hashed_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path/"c"))
    from medssl.datasets import ImageFolder
    _pngs(tmp_path/"img", 12)
    ds = ImageFolder(tmp_path/"img", size=16)
    meta = json.loads((ds._cache_path/"meta.json").read_text())
    assert len(meta["sha256"]) == 64 and verify(ds._cache_path)
    assert np.array_equal((ds[3]["image"][0].numpy() * 255).round().astype(np.uint8), load_image(ds.paths[3], 16))
    mm = np.load(ds._cache_path/"images.npy", mmap_mode="r+"); mm[0, 0, 0] ^= 7; mm.flush()
    assert not verify(ds._cache_path)
