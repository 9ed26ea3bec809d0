"""Batch augmentation: crops are real windows of the padded image, flips mirror, cutout size."""

import torch

from samkit.data import CropFlip, cutout, random_crop, random_hflip


def test_random_crop_is_a_window_of_the_padded_image():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    out = random_crop(images, 2, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_crop_covers_all_offsets_and_uses_fill():
    images = torch.ones(400, 1, 4, 4)
    out = random_crop(images, 1, torch.Generator().manual_seed(0), fill=torch.tensor([-5.0]))
    assert set(out.unique().tolist()) == {-5.0, 1.0}
    # 9 offsets; each places the fill in a distinct pattern, so count distinct crops.
    assert len({tuple(o.flatten().tolist()) for o in out}) == 9


def test_hflip_mirrors_about_half():
    images = torch.randn(1000, 1, 2, 3)
    out = random_hflip(images, torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 430 < int(mirrored.sum()) < 570


def test_cutout_zeroes_at_most_a_square():
    images = torch.ones(50, 3, 16, 16)
    out = cutout(images, 4, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4  # clipped at borders, never empty


def test_generator_state_advances_so_resume_matches():
    aug = CropFlip(padding=4)
    x = torch.randn(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    first = aug(x, g)
    state = g.get_state()
    second = aug(x, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(aug(x, resumed), second) and not torch.equal(first, second)
