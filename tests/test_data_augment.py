"""The batched image pipeline equals torchvision's per-sample transforms, value for value and in
the distribution of its random draws."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

from data.augment import (ImageTransform, crop_with_padding, horizontal_flip,
                          to_float)
from data.seeding import derive_seed, epoch_generator

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def random_batch(n=16, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def to_pil(image: torch.Tensor) -> Image.Image:
    array = image.numpy()
    return Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else \
        Image.fromarray(array.transpose(1, 2, 0))


def test_crop_at_centre_offset_returns_the_image_unchanged():
    x = random_batch()
    offsets = torch.full((len(x), 2), 4)
    assert torch.equal(crop_with_padding(x, 4, offsets), x)


def test_crop_at_corner_offset_shifts_image_and_fills_zero_padding():
    x = random_batch(n=2)
    out = crop_with_padding(x, 4, torch.zeros(2, 2, dtype=torch.long))
    assert out.shape == x.shape
    assert (out[:, :, :4, :] == 0).all() and (out[:, :, :, :4] == 0).all()
    assert torch.equal(out[:, :, 4:, 4:], x[:, :, :-4, :-4])


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_crop_equals_torchvision_pad_then_crop_for_every_offset(channels, size):
    x = random_batch(n=81, c=channels, h=size, w=size, seed=1)
    offsets = torch.tensor([(i, j) for i in range(9) for j in range(9)])
    out = crop_with_padding(x, 4, offsets)
    for b, (i, j) in enumerate(offsets.tolist()):
        expected = TF.crop(TF.pad(to_pil(x[b]), 4, fill=0), i, j, size, size)
        assert np.array_equal(np.array(to_pil(out[b])), np.array(expected))


def test_flip_mirrors_flagged_images_and_keeps_the_others():
    x = random_batch(n=4)
    flags = torch.tensor([True, False, True, False])
    out = horizontal_flip(x, flags)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[2], x[2].flip(-1))
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    assert torch.equal(out[0][:, :, 0], x[0][:, :, -1])


def test_to_float_equals_torchvision_totensor_and_normalize_bit_for_bit():
    x = random_batch(n=8)
    ours = to_float(x, CIFAR_MEAN, CIFAR_STD)
    pipeline = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    theirs = torch.stack([pipeline(to_pil(img)) for img in x])
    assert ours.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_to_float_without_normalisation_maps_uint8_to_unit_interval():
    x = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8)
    assert torch.allclose(to_float(x), torch.tensor([[[[0.0, 1.0, 0.2]]]]))


def test_full_train_transform_equals_torchvision_pipeline_with_the_same_draws():
    transform = ImageTransform(crop_padding=4, flip_p=0.5, mean=CIFAR_MEAN, std=CIFAR_STD)
    x = random_batch(n=32, seed=3)
    params = transform.draw(len(x), torch.Generator().manual_seed(5))
    ours = transform(x, params)
    normalize = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    for b in range(len(x)):
        i, j = params.offsets[b].tolist()
        img = TF.crop(TF.pad(to_pil(x[b]), 4, fill=0), i, j, 32, 32)
        if params.flips[b]:
            img = TF.hflip(img)
        assert torch.equal(ours[b], normalize(img))


def test_eval_transform_does_not_draw_or_augment():
    transform = ImageTransform(crop_padding=4, flip_p=0.5, mean=(0.5,), std=(0.5,))
    x = random_batch(n=4, c=1, h=28, w=28)
    assert torch.equal(transform(x), to_float(x, (0.5,), (0.5,)))


def test_transform_rejects_invalid_settings():
    with pytest.raises(ValueError, match="flip_p"):
        ImageTransform(flip_p=1.5)
    with pytest.raises(ValueError, match="crop_padding"):
        ImageTransform(crop_padding=-1)
    with pytest.raises(ValueError, match="together"):
        ImageTransform(mean=(0.5,))


def test_draws_depend_only_on_seed_and_epoch():
    t = ImageTransform(crop_padding=4, flip_p=0.5)
    a = t.draw(100, epoch_generator(7, 3))
    b = t.draw(100, epoch_generator(7, 3))
    c = t.draw(100, epoch_generator(7, 4))
    assert torch.equal(a.offsets, b.offsets) and torch.equal(a.flips, b.flips)
    assert not torch.equal(a.offsets, c.offsets)


def test_derived_seeds_differ_across_keys_and_reject_negative_keys():
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(3, 4) == derive_seed(3, 4)
    with pytest.raises(ValueError):
        derive_seed(-1)


# --- distribution of the draws, against torchvision's own transforms -------------------------
def marker_image(size=28) -> np.ndarray:
    """Background 1, a 255 pixel at (14, 14) and a 128 pixel right of it: shows crop and flip."""
    img = np.ones((size, size), dtype=np.uint8)
    img[14, 14], img[14, 15] = 255, 128
    return img


def recover_offset_and_flip(out: np.ndarray, size=28) -> tuple[int, int, bool]:
    r, c = np.argwhere(out == 255)[0]
    flipped = bool(c > 0 and out[r, c - 1] == 128)  # the 128 pixel is left of 255 once mirrored
    if flipped:
        c = size - 1 - c
    # the marker at (14, 14) lands at (14 + 4 - i, 14 + 4 - j)
    return 18 - r, 18 - c, flipped


def test_crop_offsets_and_flips_have_torchvision_distribution(tmp_path, monkeypatch):
    from data import get_dataset
    from data_fixtures import write_idx_dataset

    n = 8100  # 100 expected per (i, j) cell
    images = np.broadcast_to(marker_image(), (n, 28, 28)).copy()
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=n, n_test=10,
                      train_images=images)
    monkeypatch.delenv("WALKING_NOISE_FASHION_MNIST_DIR", raising=False)
    ds = get_dataset("FashionMNIST", tmp_path, batch_size=512, download=False)
    ours = np.zeros((9, 9), dtype=int)
    our_flips = 0
    for x, _ in ds.train_loader(epoch=0, seed=0):
        u8 = torch.round((x[:, 0] * 0.5 + 0.5) * 255).to(torch.uint8).numpy()
        for img in u8:
            i, j, f = recover_offset_and_flip(img)
            ours[i, j] += 1
            our_flips += f

    torch.manual_seed(0)
    reference = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip()])
    pil = Image.fromarray(marker_image(), mode="L")
    theirs = np.zeros((9, 9), dtype=int)
    their_flips = 0
    for _ in range(n):
        i, j, f = recover_offset_and_flip(np.array(reference(pil)))
        theirs[i, j] += 1
        their_flips += f

    assert ours.sum() == theirs.sum() == n
    assert stats.chisquare(ours.ravel()).pvalue > 1e-3  # uniform over the 81 offsets
    assert stats.chi2_contingency(np.stack([ours.ravel(), theirs.ravel()])).pvalue > 1e-3
    sd = np.sqrt(n * 0.25)
    assert abs(our_flips - n / 2) < 4 * sd and abs(their_flips - n / 2) < 4 * sd
    assert stats.chi2_contingency([[our_flips, n - our_flips],
                                   [their_flips, n - their_flips]]).pvalue > 1e-3
