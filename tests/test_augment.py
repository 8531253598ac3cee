"Tests of medssl.augment: the papers' values, seeded per-image randomness, TwoViews and MICLe pairs (Algorithm 1)."
import collections
import pytest, torch
from torchvision.transforms import v2
from medssl.augment import (PIPELINES, views, Views, apply_views, TwoViews, MICLePairs, as_generator)


def _flat(t):
    "All transforms inside a (nested) Compose / RandomApply, with RandomApply's p attached."
    out = []
    for s in getattr(t, "transforms", [t]):
        if isinstance(s, v2.RandomApply): out += [(type(u).__name__, s.p, u) for u in s.transforms]
        elif isinstance(s, v2.Compose): out += _flat(s)
        else: out.append((type(s).__name__, getattr(s, "p", 1.0), s))
    return out


def test_moco_cxr_is_rotation_10_and_flip_only():
    names = [n for n, _, _ in _flat(views("moco_cxr", 64).t)]
    assert names == ["Resize", "RandomRotation", "RandomHorizontalFlip"]
    rot = _flat(views("moco_cxr", 64).t)[1][2]
    assert list(rot.degrees) == [-10, 10]


def test_simclr_cxr_paper_002_values():
    f = {n: (p, t) for n, p, t in _flat(views("simclr_cxr", 64).t)}
    assert "GaussianBlur" not in f and list(f["RandomRotation"][1].degrees) == [-45, 45]
    p, jit = f["ColorJitter"]
    assert p == 0.8 and list(jit.brightness) == pytest.approx([0.6, 1.4]) and list(jit.contrast) == pytest.approx([0.6, 1.4])
    assert f["RandomResizedCrop"][1].scale == (0.08, 1.0)


def test_paper_003_values():
    t, t2 = views("ssl_003", 64).t, views("ssl_003", 64).t2
    f1, f2 = ({n: (p, s) for n, p, s in _flat(x)} for x in (t, t2))
    assert f1["RandomResizedCrop"][1].scale == (0.75, 1.0)
    assert (f1["GaussianBlur"][0], f2["GaussianBlur"][0]) == (1.0, 0.1)
    assert (f1["RandomSolarize"][0], f2["RandomSolarize"][0]) == (0.0, 0.2)
    assert list(f1["GaussianBlur"][1].sigma) == [0.1, 2.0]
    m = {n: (p, s) for n, p, s in _flat(views("multimodal_003", 64).t)}
    assert m["RandomResizedCrop"][1].scale == (0.6, 1.0)
    aff = m["RandomAffine"][1]
    assert list(aff.degrees) == [-20, 20] and aff.translate == (0.09, 0.10) and aff.scale == (0.95, 1.05)
    assert m["ColorJitter"][0] == 0.5 and list(m["ColorJitter"][1].brightness) == [0.6, 1.4]
    assert m["GaussianBlur"][0] == 0.5 and list(m["GaussianBlur"][1].sigma) == [0.1, 3.0]


def test_every_pipeline_shape_range_and_seed():
    x = torch.rand(3, 1, 40, 50, generator=torch.Generator().manual_seed(0))
    for name in PIPELINES:
        a1, a2 = views(name, 24)(x, 7)
        b1, b2 = views(name, 24)(x, 7)
        assert a1.shape == a2.shape == (3, 1, 24, 24) and a1.dtype == torch.float32
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
        assert a1.min() >= 0 and a1.max() <= 1


def test_independent_draws_per_image():
    x = torch.rand(1, 1, 32, 32).expand(16, 1, 32, 32)  # 16 copies of one image
    out = views("simclr_cxr", 16).one(x, 0)
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) > 12


def test_flip_probability_about_half():
    x = torch.zeros(1, 1, 8, 8); x[..., :4] = 1  # left half bright
    out = apply_views(v2.RandomHorizontalFlip(), x.expand(400, 1, 8, 8), 0)
    assert 0.4 < (out[:, 0, 0, 0] == 0).float().mean() < 0.6  # 4 standard errors


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown view pipeline"): views("blur_all")
    with pytest.raises(ValueError, match="size must be"): views("none", 2)
    with pytest.raises(ValueError, match="seed must be"): as_generator(-3)
    with pytest.raises(ValueError, match="must be"): apply_views(v2.Identity(), torch.rand(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    x = torch.rand(4, 1, 64, 64)
    for name in ("moco_cxr", "simclr_cxr", "multimodal_003"):
        c = views(name, 32).one(x, 3); g = views(name, 32).one(x.cuda(), 3)
        assert g.is_cuda and (g.cpu() - c).abs().mean() < 1e-3


class Toy(torch.utils.data.Dataset):
    "Images whose value encodes their index; patients with 1, 2 and 4 images."
    patients = ["p0", "p1", "p1", "p2", "p2", "p2", "p2"]
    def __len__(self): return len(self.patients)
    def __getitem__(self, i):
        return dict(image=torch.full((1, 12, 12), (i + 1) / 10), labels=torch.zeros(2), patient=self.patients[i],
                    study="1", view="PA", text="", index=i)


def test_two_views_collates_and_is_order_independent():
    tv = TwoViews(Toy(), "moco_cxr", size=12, seed=3)
    batch = next(iter(torch.utils.data.DataLoader(tv, batch_size=7)))
    assert batch["image1"].shape == (7, 1, 12, 12) and "image" not in batch
    again = torch.stack([tv[i]["image1"] for i in reversed(range(7))]).flip(0)
    assert torch.equal(again, batch["image1"])
    tv.set_epoch(1)
    assert not torch.equal(torch.stack([tv[i]["image1"] for i in range(7)]), batch["image1"])


def test_micle_algorithm_1():
    mp = MICLePairs(Toy(), "none", size=12)
    assert len(mp) == 3 and mp.patients == ["p0", "p1", "p2"]
    pairs = collections.Counter()
    for epoch in range(200):
        mp.set_epoch(epoch)
        s0, s1, s2 = mp[0], mp[1], mp[2]
        assert (s0["index1"], s0["index2"], s0["multi_instance"]) == (0, 0, False)  # |X| = 1: same image twice
        assert {s1["index1"], s1["index2"]} == {1, 2} and s1["multi_instance"]  # |X| = 2: both images
        assert s2["index1"] != s2["index2"] and {s2["index1"], s2["index2"]} <= {3, 4, 5, 6}
        assert s2["image1"].mean().item() == pytest.approx((s2["index1"] + 1) / 10)
        assert s2["image2"].mean().item() == pytest.approx((s2["index2"] + 1) / 10)
        pairs[(s2["index1"], s2["index2"])] += 1
    assert len(pairs) == 12 and min(pairs.values()) > 5  # all ordered pairs of distinct images, roughly uniform


def test_micle_two_views_of_single_image_differ():
    mp = MICLePairs(Toy(), "moco_cxr", size=12)
    differ = []
    for epoch in range(20):
        mp.set_epoch(epoch); s = mp[0]  # patient p0 has one image: t(x) and t'(x) are independent draws
        differ.append(not torch.equal(s["image1"], s["image2"]))
    assert any(differ)
