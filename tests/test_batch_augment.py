"medssl.batch_augment: views drawn on the device have the loader path's distributions; device views in pretrain (one and two processes)."
import os
from pathlib import Path
import numpy as np, pytest, torch
from medssl import augment
from medssl.batch_augment import BatchPipeline, DeviceViews

FIX = Path(__file__).parent/"fixtures"
ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize("name", [p for p in augment.PIPELINES if p != "none"])
def test_same_distribution_as_the_loader_path(name):
    "Mean and spread of the views of one image (512 draws each): batched on the device vs image by image in the loader."
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 6, generator=g), size=48, mode="bilinear")[0]
    x = img.expand(512, 1, 48, 48).contiguous(); v = augment.views(name, 48)
    loader = torch.cat(v(x, 1)); device = torch.cat([BatchPipeline(t, 48)((x * 255).round().to(torch.uint8), s) for t, s in ((v.t, 2), (v.t2, 3))])
    for stat in (lambda z: z.mean((1, 2, 3)), lambda z: z.std((1, 2, 3))):
        a, b = stat(loader), stat(device)
        assert abs(a.mean() - b.mean()) < 0.02 and abs(a.std() - b.std()) < 0.25 * a.std() + 0.01, (name, a.mean(), b.mean(), a.std(), b.std())

def test_pretrain_resizes_larger_sources(tmp_path, monkeypatch):
    "A dataset at 48 px pretrained at 32 px with device views: the loader ships 32 px uint8 sources."
    monkeypatch.syspath_prepend(str(FIX/"legacy_pretrain"))
    from tiny import TinyDS
    from medssl.pretrain import pretrain
    r = pretrain("moco_v2", TinyDS(16, 48), backbone="cxrnet", image_size=32, epochs=1, batch_size=8, K=16, device="cpu",
                 augment_on="device", out_dir=tmp_path/"r", progress=False)
    assert np.isfinite(r.metrics.loss).all() and r.config["augment_on"] == "device"

def test_device_views_under_two_processes_equal_one(tmp_path, monkeypatch):
    """Each process draws the global batch's parameters and takes its rows: a 2-process job equals one process (4 steps).
    At lr 0.1 this tiny encoder amplifies float rounding past the tolerance within 4 steps; lr 0.01 keeps the comparison exact."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FIX), str(FIX/"legacy_pretrain"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path/"cache")); monkeypatch.delenv("MEDSSL_GPUS", raising=False)
    monkeypatch.syspath_prepend(str(FIX/"legacy_pretrain")); monkeypatch.syspath_prepend(str(FIX))
    import launch_case
    single = launch_case.run(tmp_path/"single", augment_on="device", lr=0.01)
    monkeypatch.setenv("MEDSSL_GPUS", "2")
    job = launch_case.run(tmp_path/"job", augment_on="device", lr=0.01)
    assert (tmp_path/"job"/"torchrun.log").exists() and job.key == single.key
    np.testing.assert_allclose(job.metrics.loss, single.metrics.loss, rtol=1e-5)
    a, b = (torch.load(r.backbone_path, weights_only=True) for r in (single, job))
    assert all((a[k] - b[k]).abs().max() <= 1e-5 + 1e-4 * a[k].abs().max() for k in a)
    loader = launch_case.run(tmp_path/"loader", lr=0.01)
    assert loader.key != single.key and not np.allclose(loader.metrics.loss, single.metrics.loss)   # another run
