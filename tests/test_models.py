"Tests for medssl.models: backbone contract, init sources, checkpoint import/export, heads."
import os
import pytest
import torch
from torch import nn
import torchvision
from medssl.core import seed_everything
from medssl.models import (BACKBONES, backbone, load_backbone_weights, export_backbone, projection_head,
                           ClassificationHead, Classifier, freeze_backbone, CheckpointMismatchError,
                           adapt_input_conv, resolve_init, fractal_path, imagenet_path)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name", ["cxrnet", "resnet18"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_contract(name, in_chans):
    m = backbone(name, in_chans=in_chans).eval()
    x = torch.rand(2, in_chans, 64, 64)
    with torch.no_grad():
        f, st = m(x), m.forward_stages(x)
        assert torch.equal(f, m.forward_features(x))
    assert f.shape == (2, m.num_features)
    assert len(st) == 4 and [s.shape[1] for s in st] == m.stage_channels
    assert all(a.shape[-1] > b.shape[-1] for a, b in zip(st, st[1:]))  # highest resolution first
    assert m.input_mean.shape == (1, in_chans, 1, 1)
    assert not any(k.startswith(("fc.", "input_")) for k in m.state_dict())


def test_normalization_inside_forward():
    m = backbone("cxrnet").eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        a = m(x)
        m.input_mean.fill_(0.0); m.input_std.fill_(1.0)
        b = m(x)
    assert not torch.allclose(a, b)


def test_cxrnet_width_and_channels_last():
    m = backbone("cxrnet", width=2).eval()
    assert m.stage_channels == [32, 64, 128, 256] and m.num_features == 256
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        a = m(x)
        b = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"): backbone("vgg")
    with pytest.raises(ValueError, match="in_chans"): backbone("cxrnet", in_chans=0)
    with pytest.raises(ValueError, match="width"): backbone("cxrnet", width=-1)


def test_grayscale_conv_adaptation_is_exact():
    w = torch.randn(4, 3, 5, 5); g = torch.rand(1, 1, 9, 9)
    torch.testing.assert_close(nn.functional.conv2d(g.repeat(1, 3, 1, 1), w), nn.functional.conv2d(g, adapt_input_conv(w, 1)))


def test_rgb_checkpoint_into_grayscale_model(tmp_path):
    seed_everything(0)
    rgb = backbone("resnet18", in_chans=3).eval()
    export_backbone(rgb, tmp_path / "rgb.pt")
    gray = backbone("resnet18", in_chans=1, init=tmp_path / "rgb.pt").eval()
    torch.testing.assert_close(gray.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    # with equal normalization statistics, a gray image gives the RGB network's features of (g, g, g)
    rgb.input_mean.fill_(0.449); rgb.input_std.fill_(0.226)
    g = torch.rand(2, 1, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(gray(g), rgb(g.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def _fake(fmt, sd):
    if fmt == "moco":
        return {"epoch": 1, "arch": "resnet18", "state_dict": {
            **{f"module.encoder_q.{k}": v for k, v in sd.items()},
            "module.encoder_q.fc.0.weight": torch.randn(8, 512), "module.encoder_q.fc.2.weight": torch.randn(4, 8),
            **{f"module.encoder_k.{k}": v.clone().zero_() if v.is_floating_point() else v for k, v in sd.items()},
            "module.queue": torch.randn(4, 16)}}
    if fmt == "lightly": return {**{f"backbone.{k}": v for k, v in sd.items()}, "projection_head.layers.0.weight": torch.randn(3, 3)}
    if fmt == "solo": return {"state_dict": {**{f"backbone.{k}": v for k, v in sd.items()},
                                             **{f"momentum_backbone.{k}": v for k, v in sd.items()},
                                             "projector.0.weight": torch.randn(3, 3)}, "epoch": 3}
    if fmt == "torchvision": return {**sd, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    raise ValueError(fmt)


@pytest.mark.parametrize("fmt", ["moco", "lightly", "solo", "torchvision"])
def test_import_formats(fmt, tmp_path):
    seed_everything(0)
    src = backbone("resnet18")
    torch.save(_fake(fmt, src.state_dict()), tmp_path / f"{fmt}.pt")
    dst = backbone("resnet18")
    assert not _same(src, dst)
    rep = load_backbone_weights(dst, tmp_path / f"{fmt}.pt")
    assert _same(src, dst)
    assert rep.missing == [] and rep.unexpected == []
    if fmt == "moco": assert rep.prefix == "module.encoder_q." and "fc.0.weight" in rep.dropped


def test_export_loads_into_torchvision(tmp_path):
    seed_everything(0)
    m = backbone("resnet18", in_chans=3).eval()
    p = export_backbone(m, tmp_path / "out" / "r18.pt")
    tv = torchvision.models.resnet18(num_classes=3)
    res = tv.load_state_dict(torch.load(p, weights_only=True), strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and res.unexpected_keys == []
    tv.fc = nn.Identity(); tv.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(tv(m.normalize(x)), m(x), atol=1e-5, rtol=1e-4)
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic write left nothing behind


def test_export_roundtrip_densenet_and_cxrnet(tmp_path):
    for name in ("densenet121", "cxrnet"):
        seed_everything(1)
        a = backbone(name)
        export_backbone(a, tmp_path / f"{name}.pt")
        assert _same(a, backbone(name, init=tmp_path / f"{name}.pt"))
    tv = torchvision.models.densenet121(num_classes=2)
    sd = torch.load(tmp_path / "densenet121.pt", weights_only=True)
    sd["features.conv0.weight"] = adapt_input_conv(sd["features.conv0.weight"], 3)
    res = tv.load_state_dict(sd, strict=False)
    assert sorted(res.missing_keys) == ["classifier.bias", "classifier.weight"] and res.unexpected_keys == []


def test_mismatches_are_errors(tmp_path):
    sd = backbone("resnet18").state_dict()
    cut = {k: v for k, v in sd.items() if not k.startswith("layer3.")}
    with pytest.raises(CheckpointMismatchError, match="missing keys .*layer3.0.bn1.bias"):
        load_backbone_weights(backbone("resnet18"), cut)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \['head.w'\]"):
        load_backbone_weights(backbone("resnet18"), {**sd, "head.w": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_backbone_weights(backbone("cxrnet", width=2), backbone("cxrnet").state_dict())
    rep = load_backbone_weights(backbone("resnet18"), cut, strict=False)
    assert "layer3.0.bn1.bias" in rep.missing
    torch.save("not a checkpoint", tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a state_dict"): load_backbone_weights(backbone("cxrnet"), tmp_path / "bad.pt")


def test_weights_only_loading_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ("echo pwned",))
    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_backbone_weights(backbone("cxrnet"), tmp_path / "evil.pt")


def test_init_sources(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="medssl pretrain --method supervised"): backbone("cxrnet", init="fractal")
    with pytest.raises(FileNotFoundError, match="neither one of"): backbone("cxrnet", init=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="no ImageNet weights"): backbone("cxrnet", init="imagenet")
    seed_everything(2)
    a = backbone("cxrnet")
    p = fractal_path("cxrnet", "fractal-fine")
    assert str(p).startswith(str(cache))
    export_backbone(a, p)
    assert _same(a, backbone("cxrnet", init="fractal-fine"))


def test_imagenet_from_hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")):
        backbone("resnet18", init="imagenet")
    seed_everything(3)
    tv = torchvision.models.resnet18()  # a torchvision-format file with the name torchvision uses
    p = imagenet_path("resnet18"); p.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), p)
    m = backbone("resnet18", init="imagenet")
    torch.testing.assert_close(m.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(m.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)
    v2 = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"  # torchvision's V2 file is used when V1 is absent
    torch.save(torchvision.models.resnet50().state_dict(), v2)
    assert imagenet_path("resnet50") == v2


def test_heads():
    assert projection_head("moco_v2", 2048)(torch.randn(2, 2048)).shape == (2, 128)
    assert projection_head("simclr", 512, out_dim=64)(torch.randn(4, 512)).shape == (4, 64)
    v = projection_head("vicreg", 128)
    assert v(torch.randn(4, 128)).shape == (4, 512)
    assert sum(isinstance(l, nn.Linear) for l in v) == 3 and sum(isinstance(l, nn.BatchNorm1d) for l in v) == 2
    with pytest.raises(ValueError, match="unknown head"): projection_head("nope", 8)
    clf = freeze_backbone(Classifier(backbone("cxrnet"), 14))
    assert clf(torch.rand(2, 1, 48, 48)).shape == (2, 14)
    assert [n for n, p in clf.named_parameters() if p.requires_grad] == ["head.fc.weight", "head.fc.bias"]
    clf.train()
    assert clf.head.training and not clf.backbone.training
    assert ClassificationHead(8, 2, dropout=0.5)(torch.randn(3, 8)).shape == (3, 2)


@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_real_torchvision_files_by_path(name, tmp_path):
    "`--weights imagenet_<name>=PATH`: a torchvision state-dict file (as torchvision saves it) loads by path; errors name the file."
    from medssl.models import read_checkpoint, guess_architecture
    seed_everything(4)
    tv = getattr(torchvision.models, name)(); p = tmp_path / f"{name}-imagenet.pth"
    torch.save(tv.state_dict(), p)
    m = backbone(name, init=p)
    first = "conv1.weight" if name == "resnet50" else "features.conv0.weight"
    torch.testing.assert_close(m.state_dict()[first], tv.state_dict()[first].sum(1, keepdim=True))   # RGB filters summed
    assert guess_architecture(read_checkpoint(p)) == name
    other = "densenet121" if name == "resnet50" else "resnet50"
    with pytest.raises(CheckpointMismatchError, match=f"{p} does not fit .* \\(it holds a {name}\\)"): backbone(other, init=p)
    cut = {k: v for k, v in tv.state_dict().items() if k != first}
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(CheckpointMismatchError, match=f"{tmp_path / 'cut.pth'} does not fit .*missing keys \\['{first}'\\]"):
        backbone(name, init=tmp_path / "cut.pth")
    (tmp_path / "half.pth").write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{tmp_path / 'half.pth'} cannot be read"): backbone(name, init=tmp_path / "half.pth")
