"""Image datasets read from small files in torchvision's on-disk formats: shapes, labels, splits,
normalisation, reproducible epochs, offline use and errors on bad input."""
import math

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T

import data.images
from data.seeding import epoch_generator
from data import DatasetCorruptError, DatasetNotFoundError, get_dataset
from data_fixtures import write_cifar10, write_idx_dataset, write_svhn
from learnable_fixtures import block_network

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
ENV = "WALKING_NOISE_FASHION_MNIST_DIR"


@pytest.fixture(autouse=True)
def no_system_fashion_mnist(monkeypatch, tmp_path_factory):
    """Keep the machine's own Fashion-MNIST (Debian package, env var) out of these tests."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(data.images, "SYSTEM_FASHION_MNIST_DIR",
                        str(tmp_path_factory.mktemp("no_system_dir")))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or download fails the test."""
    block_network(monkeypatch)

    def refuse(*args, **kwargs):
        raise AssertionError("torchvision dataset class asked to download")

    for name in ("MNIST", "FashionMNIST", "CIFAR10", "SVHN"):
        monkeypatch.setattr(torchvision.datasets, name, refuse)


def make(name, tmp_path, **files_kw):
    """Write the files of ``name`` under tmp_path; returns (root, arrays)."""
    if name in ("MNIST", "FashionMNIST"):
        arrays = write_idx_dataset(tmp_path / name / "raw", **files_kw)
        arrays = {k: (v[0][:, None], v[1]) for k, v in arrays.items()}
    elif name == "CIFAR10":
        arrays = write_cifar10(tmp_path, **files_kw)
    else:
        arrays = write_svhn(tmp_path, **files_kw)
    return tmp_path, arrays


EVAL_NORM = {"MNIST": None, "FashionMNIST": ((0.5,), (0.5,)),
             "CIFAR10": (CIFAR_MEAN, CIFAR_STD), "SVHN": (CIFAR_MEAN, CIFAR_STD)}


def normalise(u8: np.ndarray, name: str) -> torch.Tensor:
    x = torch.from_numpy(u8).float() / 255
    if EVAL_NORM[name] is not None:
        mean, std = (torch.tensor(v)[:, None, None] for v in EVAL_NORM[name])
        x = (x - mean) / std
    return x


@pytest.mark.parametrize("name,dims", [("MNIST", (1, 28, 28)), ("FashionMNIST", (1, 28, 28)),
                                       ("CIFAR10", (3, 32, 32)), ("SVHN", (3, 32, 32))])
def test_loaders_yield_float_images_and_int64_labels_of_the_files(name, dims, tmp_path,
                                                                  no_network):
    root, arrays = make(name, tmp_path)
    ds = get_dataset(name, root, batch_size=32)
    assert ds.name == name and ds.dims == dims and ds.num_classes == 10
    n_train, n_test = len(arrays["train"][1]), len(arrays["test"][1])
    assert (ds.num_train, ds.num_val, ds.num_test) == (n_train, n_test, 0)
    assert ds.test_loader() is None

    train = ds.train_loader()
    assert len(train) == math.ceil(n_train / 32)
    batches = list(train)
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert xs.shape == (n_train, *dims) and xs.dtype == torch.float32
    assert ys.dtype == torch.int64 and xs.device.type == "cpu"
    assert sorted(ys.tolist()) == sorted(arrays["train"][1].tolist())  # each sample once
    assert set(ys.tolist()) == set(range(10))

    val = list(ds.val_loader())
    x_val = torch.cat([b[0] for b in val])
    y_val = torch.cat([b[1] for b in val])
    assert torch.equal(y_val, torch.from_numpy(arrays["test"][1]))  # official test, in order
    assert torch.allclose(x_val, normalise(arrays["test"][0], name), atol=1e-6)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "CIFAR10", "SVHN"])
def test_eval_batches_equal_torchvision_dataset_class_with_its_transforms(name, tmp_path,
                                                                         monkeypatch):
    root, _ = make(name, tmp_path, **({"n_test": 20} if name != "CIFAR10" else {}))
    # torchvision checks md5 sums of the real CIFAR/SVHN files; these are small stand-ins
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    steps = [T.ToTensor()] + ([T.Normalize(*EVAL_NORM[name])] if EVAL_NORM[name] else [])
    kw = {"split": "test"} if name == "SVHN" else {"train": False}
    reference = getattr(torchvision.datasets, name)(str(root), transform=T.Compose(steps), **kw)
    ours = get_dataset(name, root, batch_size=7)
    x, y = (torch.cat(t) for t in zip(*ours.val_loader()))
    assert len(reference) == len(y)
    for i in range(len(reference)):
        img, label = reference[i]
        assert label == y[i].item()
        assert torch.equal(img, x[i])


def test_mnist_training_batches_are_unaugmented_and_in_unit_interval(tmp_path):
    root, arrays = make("MNIST", tmp_path)
    ds = get_dataset("MNIST", root, batch_size=64)
    order = torch.randperm(ds.num_train, generator=epoch_generator(0, 2))
    x = torch.cat([b[0] for b in ds.train_loader(epoch=2, seed=0)])
    assert x.min() >= 0 and x.max() <= 1
    expected = torch.from_numpy(arrays["train"][0]).float() / 255
    assert torch.allclose(x, expected[order])


def test_fashion_mnist_training_values_are_normalised_pixels_or_normalised_zero_padding(tmp_path):
    root, arrays = make("FashionMNIST", tmp_path)
    arrays["train"][0][:] = np.maximum(arrays["train"][0], 1)  # no zero pixel in the images
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", train_images=arrays["train"][0][:, 0])
    ds = get_dataset("FashionMNIST", root, batch_size=50)
    x = torch.cat([b[0] for b in ds.train_loader(epoch=0, seed=1)])
    allowed = (torch.arange(256).float() / 255 - 0.5) / 0.5
    assert torch.isin(x, allowed).all()
    assert (x == -1.0).any()  # padded (zero) pixels normalise to (0 - 0.5) / 0.5
    assert x.shape[1:] == (1, 28, 28)


def test_cifar_eval_statistics_follow_the_cifar_normalisation(tmp_path):
    root, arrays = make("CIFAR10", tmp_path)
    ds = get_dataset("CIFAR10", root, batch_size=16)
    x = torch.cat([b[0] for b in ds.val_loader()])
    raw = torch.from_numpy(arrays["test"][0]).float() / 255
    for c in range(3):
        expected_mean = (raw[:, c].mean() - CIFAR_MEAN[c]) / CIFAR_STD[c]
        expected_std = raw[:, c].std() / CIFAR_STD[c]
        assert torch.isclose(x[:, c].mean(), expected_mean, atol=1e-4)
        assert torch.isclose(x[:, c].std(), expected_std, rtol=1e-4)


def test_svhn_labels_map_ten_to_digit_zero(tmp_path):
    root, arrays = make("SVHN", tmp_path)
    ds = get_dataset("SVHN", root)
    y = torch.cat([b[1] for b in ds.val_loader()])
    assert torch.equal(y, torch.from_numpy(arrays["test"][1]))
    assert 0 in y.tolist() and y.max() == 9


def test_training_epochs_are_reproducible_and_independent_of_earlier_epochs(tmp_path):
    root, _ = make("CIFAR10", tmp_path)
    ds = get_dataset("CIFAR10", root, batch_size=16)
    loader = ds.train_loader(epoch=3, seed=5)
    first = list(loader)
    again = list(loader)  # re-iterable: the same batches again
    for epoch in range(3):  # running earlier epochs does not change epoch 3
        list(ds.train_loader(epoch=epoch, seed=5))
    fresh = list(get_dataset("CIFAR10", root, batch_size=16).train_loader(epoch=3, seed=5))
    for (xa, ya), (xb, yb), (xc, yc) in zip(first, again, fresh):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa, xc) and torch.equal(ya, yc)
    other_epoch = list(ds.train_loader(epoch=4, seed=5))
    other_seed = list(ds.train_loader(epoch=3, seed=6))
    assert not torch.equal(first[0][1], other_epoch[0][1])
    assert not torch.equal(first[0][1], other_seed[0][1])


def test_eval_loader_is_unshuffled_and_deterministic(tmp_path):
    root, arrays = make("FashionMNIST", tmp_path)
    ds = get_dataset("FashionMNIST", root, batch_size=8)
    a = [y for _, y in ds.val_loader()]
    b = [y for _, y in ds.val_loader()]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert torch.equal(torch.cat(a), torch.from_numpy(arrays["test"][1]))


def test_val_split_holds_out_a_seeded_part_of_train_and_tests_on_the_official_test(tmp_path):
    root, arrays = make("FashionMNIST", tmp_path, n_train=200, n_test=50)
    ds = get_dataset("FashionMNIST", root, batch_size=32, val_split=0.25, split_seed=3)
    assert (ds.num_train, ds.num_val, ds.num_test) == (150, 50, 50)
    x_val = torch.cat([b[0] for b in ds.val_loader()])
    x_test, y_test = (torch.cat(t) for t in zip(*ds.test_loader()))
    assert torch.equal(y_test, torch.from_numpy(arrays["test"][1]))
    assert torch.allclose(x_test, normalise(arrays["test"][0], "FashionMNIST"))

    train_u8 = {img.tobytes() for img in arrays["train"][0]}  # random images are all distinct
    val_u8 = [(x * 0.5 + 0.5).mul(255).round().to(torch.uint8).numpy().tobytes() for x in x_val]
    assert set(val_u8) <= train_u8
    held_out = ds._splits()["val"][0]
    kept = ds._splits()["train"][0]
    assert not ({i.numpy().tobytes() for i in held_out} & {i.numpy().tobytes() for i in kept})
    assert len(held_out) + len(kept) == 200

    same = get_dataset("FashionMNIST", root, val_split=0.25, split_seed=3)
    other = get_dataset("FashionMNIST", root, val_split=0.25, split_seed=4)
    assert torch.equal(same._splits()["val"][0], held_out)
    assert not torch.equal(other._splits()["val"][0], held_out)


# --- offline Fashion-MNIST ---------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_the_folder_named_by_the_environment_variable(tmp_path, monkeypatch,
                                                                        no_network, gz):
    folder = tmp_path / "offline"
    arrays = write_idx_dataset(folder, n_train=30, n_test=20, gz=gz)
    monkeypatch.setenv(ENV, str(folder))
    ds = get_dataset("FashionMNIST", tmp_path / "empty_root", download=True)
    ds.prepare()
    assert (ds.num_train, ds.num_val) == (30, 20)
    y = torch.cat([b[1] for b in ds.val_loader()])
    assert torch.equal(y, torch.from_numpy(arrays["test"][1]))


def test_fashion_mnist_reads_the_system_folder_without_network(tmp_path, monkeypatch, no_network):
    folder = tmp_path / "usr_share"
    write_idx_dataset(folder, n_train=40, n_test=10, gz=True)
    monkeypatch.setattr(data.images, "SYSTEM_FASHION_MNIST_DIR", str(folder))
    ds = get_dataset("FashionMNIST", tmp_path / "root", download=True)
    ds.prepare()
    assert ds.num_train == 40 and len(list(ds.train_loader())) == 1


@pytest.mark.parametrize("name", ["MNIST", "CIFAR10", "SVHN"])
def test_prepare_does_not_touch_the_network_when_files_exist(name, tmp_path, no_network):
    root, _ = make(name, tmp_path)
    ds = get_dataset(name, root, download=True)
    ds.prepare()
    assert len(list(ds.val_loader())) >= 1


# --- download wiring ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "CIFAR10", "SVHN"])
def test_prepare_downloads_missing_files_through_torchvision(name, tmp_path, monkeypatch):
    calls = []

    def fake_torchvision_class(root, download=False, **kw):
        assert download is True
        calls.append(kw)
        make(name, tmp_path)  # what a successful download leaves on disk

    monkeypatch.setattr(torchvision.datasets, name, fake_torchvision_class)
    ds = get_dataset(name, tmp_path, download=True)
    ds.prepare()
    assert calls
    ds.prepare()  # files present now: no second download
    assert len(calls) == 1
    assert ds.num_train > 0


def test_failed_download_reports_where_it_looked(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError, match="no route to host") as info:
        get_dataset("CIFAR10", tmp_path).train_loader()
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,where", [("MNIST", "MNIST/raw"), ("CIFAR10", "cifar-10-batches-py"),
                                        ("SVHN", ""), ("FashionMNIST", "FashionMNIST/raw")])
def test_missing_files_without_download_name_the_place_and_how_to_get_them(name, where, tmp_path):
    ds = get_dataset(name, tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        ds.train_loader()
    message = str(info.value)
    assert str(tmp_path / where).rstrip("/") in message
    assert "download=True" in message and "download=False" in message
    if name == "FashionMNIST":
        assert ENV in message and "dataset-fashion-mnist" in message


def test_truncated_idx_file_is_reported_by_name(tmp_path):
    root, _ = make("MNIST", tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetCorruptError, match="train-images-idx3-ubyte.*truncated"):
        get_dataset("MNIST", root).num_train


def test_broken_gzip_idx_file_is_reported_by_name(tmp_path, monkeypatch):
    folder = tmp_path / "offline"
    write_idx_dataset(folder, n_train=20, n_test=10, gz=True)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    monkeypatch.setenv(ENV, str(folder))
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte.gz"):
        get_dataset("FashionMNIST", tmp_path).val_loader()


def test_label_and_image_counts_that_disagree_are_reported(tmp_path):
    from data_fixtures import write_idx
    root, _ = make("MNIST", tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte"):
        get_dataset("MNIST", root).num_val


def test_non_idx_file_is_reported_by_name(tmp_path):
    root, _ = make("MNIST", tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_text("<html>404</html>")
    with pytest.raises(DatasetCorruptError, match="t10k-images-idx3-ubyte"):
        get_dataset("MNIST", root).num_val


def test_truncated_cifar_batch_is_reported_by_name(tmp_path):
    root, _ = make("CIFAR10", tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError, match="data_batch_3"):
        get_dataset("CIFAR10", root).num_train


def test_corrupt_svhn_mat_is_reported_by_name(tmp_path):
    root, _ = make("SVHN", tmp_path)
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DatasetCorruptError, match="test_32x32.mat"):
        get_dataset("SVHN", root).num_val
