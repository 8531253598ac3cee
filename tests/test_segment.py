"Tests of medssl.segment: U-Net shapes, encoder initialization, Dice, training."
import numpy as np, pytest, torch
from torch.utils.data import Dataset
from medssl.models import backbone
from medssl.probe import weights_hash
from medssl.segment import UNet, dice_score, dice_bce_loss, soft_dice, train_segmentation, stage_channels


class Ellipses(Dataset):
    "Noisy 32 px images of a bright ellipse; the mask is the ellipse."
    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed); yy, xx = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
        c = torch.randint(10, 22, (n, 2), generator=g).float(); r = torch.randint(4, 9, (n, 2), generator=g).float()
        m = (((yy - c[:, :1, None]) / r[:, :1, None])**2 + ((xx - c[:, 1:, None]) / r[:, 1:, None])**2 < 1).float()
        self.masks = m[:, None]; self.images = (0.3 + 0.4 * self.masks + 0.1 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    def __len__(self): return len(self.images)
    def __getitem__(self, i):
        return dict(image=self.images[i], mask=self.masks[i], labels=torch.zeros(0), text="", patient=str(i), study=str(i), view="PA", index=i)


def test_unet_shapes_and_encoder_init():
    enc = backbone("cxrnet", init="random"); h = weights_hash(enc)
    net = UNet(enc, out_channels=3)
    assert weights_hash(net.encoder) == h and stage_channels(enc) == [16, 32, 64, 128]  # probing moved no BN statistic
    assert net(torch.rand(2, 1, 40, 56)).shape == (2, 3, 40, 56)
    with pytest.raises(ValueError, match="out_channels"): UNet(enc, out_channels=0)


def test_dice():
    t = torch.zeros(3, 1, 6, 6); t[0, :, :3] = 1; t[1, :, :, :2] = 1
    z = (t * 2 - 1) * 30
    assert torch.allclose(dice_score(z, t), torch.ones(3))
    assert dice_score(-z, t)[0] == 0
    p = torch.full_like(t, 0.5)
    assert torch.allclose(soft_dice(p, t, smooth=0)[0], torch.tensor([2 * 9 / (18 + 18)]))
    assert dice_bce_loss(z, t) < 0.01 and dice_bce_loss(-z, t) > 1


def test_train_segmentation_learns_and_is_deterministic():
    tr, va = Ellipses(64, 0), Ellipses(24, 1)
    def run():
        torch.manual_seed(0); return train_segmentation(UNet(backbone("cxrnet", init="random")), tr, va, Ellipses(24, 2),
                                                        epochs=12, lr=3e-3, batch_size=16, seed=0, progress=False)
    a, b = run(), run()   # 12 epochs on 64 toy images: learning, not convergence (the notebook checks Dice > 0.75 on lungs)
    assert a.history.train_loss.tolist() == b.history.train_loss.tolist()
    assert a.test_dice.mean() > 0.25 and 1 <= a.best_epoch <= a.epochs_run == 12, a.test_dice.mean()
    with pytest.raises(ValueError, match="no 'mask'"): train_segmentation(UNet(backbone("cxrnet")), [dict(image=torch.zeros(1, 8, 8))], va)
