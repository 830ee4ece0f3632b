"""Builders of small datasets in the exact on-disk formats the real ones come in (tests only).

Each writer returns the arrays it wrote, so a test can compare what a loader yields with what
is on disk.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array as an IDX file: 00 00 08 <ndim>, big-endian uint32 sizes, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels covering every class (when n >= num_classes), in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_idx_dataset(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0,
                      gz: bool = False, train_images: np.ndarray | None = None) -> dict:
    """MNIST-style IDX files (28×28 images, 10 classes) in ``folder``; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
                        if train_images is None else train_images,
                        balanced_labels(n_train, 10, rng)),
              "test": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                       balanced_labels(n_test, 10, rng))}
    for split, (image_name, label_name) in IDX_NAMES.items():
        images, labels = arrays[split]
        write_idx(Path(folder) / image_name, images, gz)
        write_idx(Path(folder) / label_name, labels.astype(np.uint8), gz)
    return arrays


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0,
                  learnable: bool = False) -> dict:
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} as python pickles.
    ``learnable``: each image a grey level of its class (25 per class) with a little noise,
    so that a network learns the classes in a few steps."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], []), "test": ([], [])}
    names = [("train", f"data_batch_{i}", per_batch) for i in range(1, 6)]
    for split, name, n in names + [("test", "test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = balanced_labels(n, 10, rng)
        if learnable:
            data = (labels[:, None] * 25 + rng.integers(0, 8, (n, 3072))).astype(np.uint8)
        entry = {"batch_label": name, "labels": labels.tolist(), "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        out[split][0].append(data.reshape(-1, 3, 32, 32))
        out[split][1].append(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"],
                     "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


def write_svhn(root: Path, n_train: int = 60, n_test: int = 30, seed: int = 0) -> dict:
    """{train,test}_32x32.mat with X uint8 [32, 32, 3, N] and y [N, 1] in 1..10 (10 = digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = balanced_labels(n, 10, rng)
        stored = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(Path(root) / f"{split}_32x32.mat",
                         {"X": images.transpose(2, 3, 1, 0), "y": stored})
        out[split] = (images, digits)
    return out


KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
OTHER_WORDS = ("bed", "cat", "dog", "happy")


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype="PCM_16")
    return path


def word_tone(word: str, length: int = 16000, rate: int = 16000) -> np.ndarray:
    """A clip per word: a tone whose frequency depends on the word, under a smooth envelope."""
    words = KEYWORDS + OTHER_WORDS
    freq = 300.0 + 150.0 * words.index(word) if word in words else 440.0
    t = np.arange(length) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(length)).astype(np.float32)


def write_speech_commands(root: Path, per_word: tuple[int, int, int] = (6, 2, 2),
                          per_other: tuple[int, int, int] = (5, 2, 2), seed: int = 0,
                          short_clip: bool = True) -> Path:
    """A Speech Commands v0.02 tree under ``root/SpeechCommands/speech_commands_v0.02``.

    ``per_word``/``per_other``: clips per (training, validation, testing) for each keyword and
    each of four other words. The first training clip of "yes" is 0.5 s long when
    ``short_clip`` (real clips may be shorter than 1 s). Returns the folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "SpeechCommands" / "speech_commands_v0.02"
    lists = {"validation": [], "testing": []}
    for words, counts in ((KEYWORDS, per_word), (OTHER_WORDS, per_other)):
        for word in words:
            k = 0
            for split, n in zip(("training", "validation", "testing"), counts):
                for _ in range(n):
                    name = f"{word}/{rng.integers(0, 2**32):08x}_nohash_{k}.wav"
                    k += 1
                    length = 8000 if short_clip and word == "yes" and k == 1 else 16000
                    clip = word_tone(word, length) + 0.01 * rng.standard_normal(length)
                    write_wav(folder / name, clip)
                    if split in lists:
                        lists[split].append(name)
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        (folder / name).write_text("\n".join(lists[split]) + "\n")
    noise = folder / "_background_noise_"
    write_wav(noise / "white_noise.wav", 0.3 * rng.uniform(-1, 1, 24000))
    brown = np.cumsum(rng.standard_normal(48000))
    write_wav(noise / "brown_noise.wav", 0.5 * brown / np.abs(brown).max())
    (noise / "README.md").write_text("background noise\n")
    return folder

