"""GSC2 (Speech Commands v0.02) read from a small folder tree in the official layout."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import data.base
import data.speech_commands as sc
from data import DatasetCorruptError, DatasetNotFoundError, get_dataset
from data.audio_features import librosa_mfcc
from data.seeding import epoch_generator
from data_fixtures import KEYWORDS, OTHER_WORDS, write_speech_commands
from learnable_fixtures import block_network


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(root, folder) of a Speech Commands tree shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("gsc")
    return root, write_speech_commands(root)


@pytest.fixture
def fresh_tree(tmp_path):
    return tmp_path, write_speech_commands(tmp_path)


@pytest.fixture
def no_network(monkeypatch):
    block_network(monkeypatch)


def read_lists(folder):
    return {split: set((folder / f"{split}_list.txt").read_text().split())
            for split in ("validation", "testing")}


def test_aliases_give_the_same_dataset_with_paper_dims(tree):
    root, _ = tree
    for name in ("GSC2", "GSC2_TF", "GSC2_PyTorch"):
        ds = get_dataset(name, root, download=False)
        assert ds.name == "GSC2" and ds.dims == (1, 10, 49) and ds.num_classes == 12
    assert ds.classes == KEYWORDS + ("_silence_", "_unknown_")


def test_split_membership_follows_the_list_files(tree):
    _, folder = tree
    splits = sc.build_splits(folder)
    lists = read_lists(folder)
    for split in ("validation", "testing"):
        paths = {p for p in splits[split][0] if p is not None}
        assert paths <= lists[split]
        keyword_listed = {p for p in lists[split] if p.split("/")[0] in KEYWORDS}
        assert keyword_listed <= paths  # every listed keyword clip is used
    train = {p for p in splits["training"][0] if p is not None}
    assert not train & (lists["validation"] | lists["testing"])
    assert len([p for p in train if p.split("/")[0] in KEYWORDS]) == 6 * len(KEYWORDS)


def test_silence_and_unknown_are_each_ten_percent_of_the_keyword_clips_per_split(tree):
    _, folder = tree
    for split, (paths, labels) in sc.build_splits(folder).items():
        counts = np.bincount(labels, minlength=12)
        n_keywords = counts[:10].sum()
        assert counts[10] == counts[11] == math.ceil(0.1 * n_keywords)
        silence = [p for p, y in zip(paths, labels) if y == 10]
        assert silence == [None] * counts[10]
        unknown = [p for p, y in zip(paths, labels) if y == 11]
        assert all(p.split("/")[0] in OTHER_WORDS for p in unknown)
        known = [(p, y) for p, y in zip(paths, labels) if y < 10]
        assert all(KEYWORDS[y] == p.split("/")[0] for p, y in known)


def test_unknown_draw_is_reproducible_and_changes_with_the_seed(tree):
    _, folder = tree

    def unknown(seed):
        paths, labels = sc.build_splits(folder, seed=seed)["training"]
        return [p for p, y in zip(paths, labels) if y == 11]

    assert unknown(0) == unknown(0)
    assert any(unknown(0) != unknown(s) for s in (1, 2, 3))


def test_percentages_are_configurable(tree):
    _, folder = tree
    labels = sc.build_splits(folder, silence_percentage=20, unknown_percentage=0)["training"][1]
    counts = np.bincount(labels, minlength=12)
    assert counts[10] == 12 and counts[11] == 0


def test_class_weights_are_inverse_density_with_unknown_divided_by_3_6():
    labels = np.array([0] * 10 + [1] * 30 + list(range(2, 12)) * 5)
    w = sc.class_weights(labels).double()
    counts = np.bincount(labels, minlength=12)
    expected = 1 / counts
    expected[11] /= 3.6
    expected /= expected.sum()
    assert torch.allclose(w, torch.from_numpy(expected), atol=1e-7)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(w[0] / w[1], torch.tensor(3.0, dtype=torch.float64))


def test_class_weights_of_the_dataset_sum_to_one(tree):
    root, _ = tree
    w = get_dataset("GSC2", root, download=False).class_weights
    assert w.shape == (12,) and w.dtype == torch.float32
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert torch.isclose(w[11], w[0] / 3.6)  # same counts for yes and _unknown_ here


def test_missing_class_in_training_is_an_error():
    with pytest.raises(ValueError, match="_unknown_"):
        sc.class_weights(np.arange(11))


def test_loaders_yield_mfcc_batches_with_int64_labels(tree, no_network):
    root, _ = tree
    ds = get_dataset("GSC2", root, batch_size=16, download=True)
    ds.prepare()
    assert (ds.num_train, ds.num_val, ds.num_test) == (72, 24, 24)
    for loader, n in ((ds.train_loader(epoch=0, seed=0), 72), (ds.val_loader(), 24),
                      (ds.test_loader(), 24)):
        assert len(loader) == math.ceil(n / 16)
        batches = list(loader)
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        assert x.shape == (n, 1, 10, 49) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and torch.isfinite(x).all()
        assert set(y.tolist()) == set(range(12))


def test_eval_features_are_librosa_mfcc_of_the_clean_clips(tree):
    root, folder = tree
    ds = get_dataset("GSC2", root, batch_size=8, download=False)
    paths, labels = sc.build_splits(folder)["validation"]
    x, y = (torch.cat(t) for t in zip(*ds.val_loader()))
    assert torch.equal(y, torch.from_numpy(labels))  # unshuffled
    for i in (0, 5, len(labels) - 3):  # keyword and unknown clips
        clip = sc.read_clip(folder / paths[i], ds.mfcc, 16000)
        assert np.allclose(x[i, 0].numpy(), librosa_mfcc(clip, ds.mfcc), atol=1e-4)


def test_short_clips_are_padded_with_silence_to_one_second(tree):
    _, folder = tree
    short = sorted((folder / "yes").glob("*_nohash_0.wav"))[0]
    clip = sc.read_clip(short, sc.MfccSettings(), 16000)
    assert clip.shape == (16000,) and not clip[8000:].any() and clip[:8000].any()


def test_eval_features_are_cached_on_disk_and_reused_without_recomputing(fresh_tree, monkeypatch):
    root, _ = fresh_tree
    first = torch.cat([b[0] for b in get_dataset("GSC2", root, download=False).test_loader()])
    cache = root / "SpeechCommands" / "cache"
    names = sorted(p.name for p in cache.glob("*mfcc*.npy"))
    assert len(names) == 1 and names[0].startswith("gsc2_testing_mfcc_")

    def refuse(*a, **k):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(data.base, "_MEMORY_CACHE", {})  # as in a new process
    monkeypatch.setattr(sc, "librosa_mfcc", refuse)
    monkeypatch.setattr(sc, "read_clip", refuse)
    again = torch.cat([b[0] for b in get_dataset("GSC2", root, download=False).test_loader()])
    assert torch.equal(first, again)


def test_other_feature_settings_use_another_cache_file(fresh_tree):
    root, _ = fresh_tree
    ds = get_dataset("GSC2", root, download=False, mfcc={"n_mfcc": 13})
    assert ds.dims == (1, 13, 49)
    x = next(iter(ds.val_loader()))[0]
    assert x.shape[1:] == (1, 13, 49)
    get_dataset("GSC2", root, download=False).val_loader()
    assert len(list((root / "SpeechCommands" / "cache").glob("gsc2_validation_mfcc_*"))) == 2


def test_cache_can_be_disabled(fresh_tree):
    root, _ = fresh_tree
    ds = get_dataset("GSC2", root, download=False, cache_dir=None)
    list(ds.val_loader())
    assert not (root / "SpeechCommands" / "cache").exists()


def test_training_epochs_are_reproducible_per_seed_and_epoch(tree):
    root, _ = tree
    ds = get_dataset("GSC2", root, batch_size=32, download=False)
    a = list(ds.train_loader(epoch=2, seed=1))
    list(ds.train_loader(epoch=0, seed=1))
    b = list(get_dataset("GSC2", root, batch_size=32, download=False).train_loader(epoch=2,
                                                                                      seed=1))
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = list(ds.train_loader(epoch=3, seed=1))
    assert not torch.equal(a[0][0], c[0][0])


def test_training_features_without_augmentation_equal_librosa_of_the_clip(tree):
    root, folder = tree
    ds = get_dataset("GSC2", root, batch_size=72, download=False, time_shift_ms=0,
                     background_frequency=0.0)
    paths, labels = sc.build_splits(folder)["training"]
    x, y = next(iter(ds.train_loader(epoch=1, seed=0)))
    order = torch.randperm(72, generator=epoch_generator(0, 1))
    assert torch.equal(y, torch.from_numpy(labels)[order])
    for row, i in enumerate(order.tolist()):
        if paths[i] is not None:
            clip = sc.read_clip(folder / paths[i], ds.mfcc, 16000)
            assert np.allclose(x[row, 0].numpy(), librosa_mfcc(clip, ds.mfcc), atol=1e-2)


# --- augmentation statistics ------------------------------------------------------------------
@pytest.fixture(scope="module")
def augmenting(tree):
    root, _ = tree
    ds = get_dataset("GSC2", root, download=False)
    return ds, ds._train_tensors(torch.device("cpu"))


def constant_noise(tensors, length=20000):
    """The augmentation tensors with one background recording of constant 1: out = volume."""
    return dict(tensors, noise=torch.ones(length), noise_start=torch.tensor([0]),
                noise_len=torch.tensor([length]))


def test_background_noise_is_mixed_into_eighty_percent_of_clips_at_volume_up_to_a_tenth(
        augmenting):
    ds, tensors = augmenting
    n = 1600
    out = ds.augment(torch.zeros(n, 16000), torch.zeros(n, dtype=torch.bool),
                     torch.Generator().manual_seed(0), constant_noise(tensors))
    volume = out[:, 0]
    assert torch.equal(out, volume[:, None].expand_as(out))
    mixed = volume > 0
    assert abs(mixed.float().mean().item() - 0.8) < 4 * math.sqrt(0.16 / n)
    assert stats.kstest(volume[mixed].numpy(), stats.uniform(0, 0.1).cdf).pvalue > 1e-3


def test_background_stretches_come_from_the_noise_recordings(augmenting):
    ds, tensors = augmenting
    out = ds.augment(torch.zeros(300, 16000), torch.zeros(300, dtype=torch.bool),
                     torch.Generator().manual_seed(4), tensors)
    assert out.abs().max() <= 0.1 * tensors["noise"].abs().max() + 1e-6
    mixed = out[out.abs().amax(dim=1) > 0]
    # each mixed clip is a scaled, contiguous stretch of one recording: correlation 1 with it
    from scipy.signal import correlate
    noise = tensors["noise"].double().numpy()
    energy = np.concatenate([[0.0], np.cumsum(noise ** 2)])
    window_norm = np.sqrt(energy[16000:] - energy[:-16000])
    for clip in mixed[:3].double().numpy():
        similarity = correlate(noise, clip, mode="valid", method="fft") / (
            window_norm * np.linalg.norm(clip) + 1e-12)
        assert similarity.max() > 0.999


def test_silence_is_always_background_noise_at_volume_up_to_one(augmenting):
    ds, tensors = augmenting
    n = 800
    out = ds.augment(torch.zeros(n, 16000), torch.ones(n, dtype=torch.bool),
                     torch.Generator().manual_seed(1), constant_noise(tensors))
    volume = out[:, 0]
    assert (volume > 0).all()
    assert stats.kstest(volume.numpy(), stats.uniform(0, 1).cdf).pvalue > 1e-3


def test_time_shift_is_uniform_within_plus_minus_100_ms(tree):
    root, _ = tree
    ds = get_dataset("GSC2", root, download=False, background_frequency=0.0)
    tensors = ds._train_tensors(torch.device("cpu"))
    n = 1600
    clips = torch.zeros(n, 16000)
    clips[:, 8000] = 1.0
    out = ds.augment(clips, torch.zeros(n, dtype=torch.bool), torch.Generator().manual_seed(2),
                     tensors)
    assert torch.equal(out.sum(dim=1), torch.ones(n))  # nothing lost: the impulse stays inside
    shift = out.argmax(dim=1) - 8000
    assert shift.min() >= -1600 and shift.max() <= 1600
    assert shift.min() < -1400 and shift.max() > 1400
    counts = np.histogram(shift.numpy(), bins=8, range=(-1600.5, 1600.5))[0]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_shifted_clip_is_zero_filled(augmenting):
    ds, tensors = augmenting
    no_noise = get_dataset("GSC2", ds.root, download=False, background_frequency=0.0)
    out = no_noise.augment(torch.ones(200, 16000), torch.zeros(200, dtype=torch.bool),
                           torch.Generator().manual_seed(3), tensors)
    zeros = (out == 0).sum(dim=1)
    assert zeros.max() <= 1600 and zeros.max() > 1000
    assert set(out.unique().tolist()) <= {0.0, 1.0}


# --- download, missing and broken files -------------------------------------------------------
def test_prepare_downloads_the_official_archive_when_missing(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu
    calls = []

    def fake_download(url, download_root, extract_root=None, **kw):
        calls.append((url, download_root, extract_root))
        write_speech_commands(tmp_path)

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    ds = get_dataset("GSC2", tmp_path, download=True)
    assert ds.num_val == 24
    assert calls == [(sc.URL, str(tmp_path / "SpeechCommands"),
                      str(tmp_path / "SpeechCommands" / "speech_commands_v0.02"))]
    assert sc.URL == "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"


def test_missing_dataset_without_download_lists_the_folders_and_the_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset("GSC2", tmp_path, download=False).val_loader()
    message = str(info.value)
    assert str(tmp_path / "SpeechCommands" / "speech_commands_v0.02") in message
    assert sc.URL in message and "download=False" in message


def test_corrupt_wav_is_reported_by_name(fresh_tree):
    root, folder = fresh_tree
    victim = sorted(p for p in read_lists(folder)["validation"] if p.split("/")[0] == "yes")[0]
    (folder / victim).write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DatasetCorruptError, match=victim.split("/")[1]):
        list(get_dataset("GSC2", root, download=False).val_loader())


def test_list_file_naming_absent_clips_is_reported(fresh_tree):
    root, folder = fresh_tree
    with open(folder / "testing_list.txt", "a") as f:
        f.write("yes/gone_nohash_0.wav\n")
    with pytest.raises(DatasetCorruptError, match="testing_list.txt.*gone_nohash_0"):
        get_dataset("GSC2", root, download=False).num_test


def test_resampled_and_stereo_clips_are_read_as_mono_16k(tmp_path):
    t = np.arange(8000) / 8000
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    import soundfile
    soundfile.write(str(tmp_path / "stereo8k.wav"), np.stack([mono, mono], 1), 8000)
    clip = sc.read_clip(tmp_path / "stereo8k.wav", sc.MfccSettings(), 16000)
    assert clip.shape == (16000,) and abs(np.abs(clip).max() - 0.5) < 0.05


def test_val_split_is_refused_for_gsc2(tree):
    with pytest.raises(ValueError, match="val_split"):
        get_dataset("GSC2", tree[0], val_split=0.1)
