"""Google Speech Commands v0.02 as the paper's 12-class keyword-spotting task (GSC2).

Layout (the extracted official archive; torchvision's utilities download and extract it)::

    <folder>/<word>/<speaker>_nohash_<n>.wav    1 s, 16 kHz, 16-bit clips of 35 words
    <folder>/_background_noise_/*.wav           long noise recordings
    <folder>/validation_list.txt, testing_list.txt   "<word>/<file>.wav" per line

A clip belongs to the validation or test split when its path is in that list file, otherwise to
training. Classes: the ten keywords, ``_silence_`` and ``_unknown_``. In every split the silence
and unknown samples each number ``ceil(10 % ×`` the split's keyword clips``)`` (the convention of
TensorFlow's speech_commands example, which the paper's GSC2_TF followed); unknown clips are
drawn from the other 25 words with a seeded generator, silence clips are background noise.

Training clips are augmented every epoch: shifted in time by up to ±100 ms (zero fill) and, with
probability 0.8, mixed with a random 1 s stretch of background noise at a volume up to 0.1
(silence: always, at a volume up to 1), clipped to [-1, 1]. MFCC features (10 × 49) are then
computed in torch on the training device (``audio_features.MfccExtractor``). Validation and test
features have no augmentation; they are computed once with librosa and cached on disk under a
name that holds the feature settings, the split and its seeds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .audio_features import MfccExtractor, MfccSettings, librosa_mfcc
from .base import BaseDataset, BatchLoader, file_fingerprint, memory_cached
from .errors import DatasetCorruptError
from .registry import register_dataset
from .seeding import STREAM_GSC_SILENCE, STREAM_GSC_UNKNOWN, seeded_generator

__all__ = ["GSC2", "KEYWORDS", "SILENCE", "UNKNOWN", "CLASSES", "URL", "build_splits",
           "read_clip", "class_weights", "SPLITS"]

logger = logging.getLogger(__name__)

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
CLASSES = KEYWORDS + (SILENCE, UNKNOWN)
BACKGROUND_DIR = "_background_noise_"
SPLITS = ("training", "validation", "testing")
LIST_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
UNKNOWN_WEIGHT_DIVISOR = 3.6  # the paper's extra down-weighting of _unknown_ in the criterion
CACHE_FORMAT = 1  # bump when the content of cached arrays changes meaning


# --- splits ---------------------------------------------------------------------------------
def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetCorruptError(path, f"not a text list of wav files ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_splits(folder: Path, seed: int = 0, silence_percentage: float = 10.0,
                 unknown_percentage: float = 10.0) -> dict[str, tuple[list, np.ndarray]]:
    """{split: (paths, labels)}: paths are "word/file.wav" (None for a silence sample).

    Keyword clips come first (sorted), then the drawn unknown clips, then silence.
    """
    word_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("_"))
    all_clips = {f"{d.name}/{f.name}" for d in word_dirs for f in d.iterdir()
                 if f.suffix.lower() == ".wav"}
    listed = {}
    for split, name in LIST_FILES.items():
        entries = _read_list(folder / name)
        missing = [e for e in entries if e not in all_clips]
        if missing:
            raise DatasetCorruptError(folder / name, f"lists {len(missing)} clips that are not in "
                                                     f"{folder} (e.g. {missing[0]!r}); the "
                                                     f"extraction looks incomplete")
        listed[split] = set(entries)
    membership = {"validation": listed["validation"], "testing": listed["testing"],
                  "training": all_clips - listed["validation"] - listed["testing"]}

    out = {}
    for split_index, split in enumerate(SPLITS):
        clips = sorted(membership[split])
        known = [c for c in clips if c.split("/")[0] in KEYWORDS]
        others = [c for c in clips if c.split("/")[0] not in KEYWORDS]
        n_silence = math.ceil(len(known) * silence_percentage / 100)
        n_unknown = math.ceil(len(known) * unknown_percentage / 100)
        if n_unknown > len(others):
            logger.warning("GSC2 %s: only %d non-keyword clips for %d unknown samples",
                           split, len(others), n_unknown)
            n_unknown = len(others)
        draw = torch.randperm(len(others),
                              generator=seeded_generator(STREAM_GSC_UNKNOWN, seed, split_index))
        unknown = sorted(others[i] for i in draw[:n_unknown].tolist())
        paths = known + unknown + [None] * n_silence
        labels = np.array([CLASSES.index(c.split("/")[0]) for c in known]
                          + [CLASSES.index(UNKNOWN)] * n_unknown
                          + [CLASSES.index(SILENCE)] * n_silence, dtype=np.int64)
        out[split] = (paths, labels)
    return out


def class_weights(labels: np.ndarray, num_classes: int = len(CLASSES)) -> torch.Tensor:
    """Inverse class density of ``labels``, ``_unknown_`` divided by 3.6, normalised to sum 1."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        empty = [CLASSES[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"GSC2: no training samples of class(es) {empty}")
    weights = counts.sum() / counts
    weights[CLASSES.index(UNKNOWN)] /= UNKNOWN_WEIGHT_DIVISOR
    return torch.as_tensor(weights / weights.sum(), dtype=torch.float32)


# --- audio ----------------------------------------------------------------------------------
def read_clip(path: Path, settings: MfccSettings, length: Optional[int] = None) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``settings.sample_rate``, padded/trimmed to ``length``.

    ``length`` None keeps the whole file (background noise).
    """
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
        raise DatasetCorruptError(path, f"not a readable wav file ({exc})") from exc
    samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != settings.sample_rate:
        import librosa

        samples = librosa.resample(samples, orig_sr=rate, target_sr=settings.sample_rate)
    if length is not None:
        samples = samples[:length]
        if len(samples) < length:  # short clips are padded with silence at the end
            samples = np.pad(samples, (0, length - len(samples)))
    return np.ascontiguousarray(samples, dtype=np.float32)


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def _parallel_map(fn: Callable, items: Sequence, num_workers: int, what: str) -> list:
    from tqdm.auto import tqdm

    bar = dict(total=len(items), desc=what, disable=None, leave=False)
    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as pool:
            return list(tqdm(pool.map(fn, items), **bar))
    return [fn(item) for item in tqdm(items, **bar)]


def _cached_array(path: Optional[Path], build: Callable[[], np.ndarray]) -> np.ndarray:
    """``build()`` once and keep it in ``path`` (.npy, written atomically); None: no disk cache."""
    if path is not None and path.is_file():
        try:
            array = np.load(path, allow_pickle=False)
            logger.info("GSC2: loaded cached %s", path)
            return array
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("GSC2: ignoring unreadable cache file %s (%s)", path, exc)
    array = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                np.save(f, array, allow_pickle=False)
            os.replace(f.name, path)
            logger.info("GSC2: cached %s", path)
        except OSError as exc:
            logger.warning("GSC2: could not write cache file %s (%s)", path, exc)
    return array


@register_dataset("GSC2", aliases=("GSC2_TF", "GSC2_PyTorch"))
class GSC2(BaseDataset):
    """Speech Commands v0.02, 12 classes, MFCC features; see the module docstring.

    Extra keyword arguments: ``mfcc`` (:class:`MfccSettings` or a dict of its fields),
    ``silence_percentage``/``unknown_percentage`` (10), ``time_shift_ms`` (100),
    ``background_frequency`` (0.8), ``background_volume`` (0.1), ``cache_dir`` (default
    ``<root>/SpeechCommands/cache``; None disables the disk cache).
    ``split_seed`` seeds the unknown draw and the eval silence clips.
    """

    dims = MfccSettings().dims  # per instance: the dims of its ``mfcc`` settings
    num_classes = len(CLASSES)
    classes = CLASSES
    supports_val_split = False  # official validation and test lists
    how_to_get = (f"The official archive is {URL}; extract it into "
                  f"<root>/SpeechCommands/speech_commands_v0.02.")

    _DEFAULT_CACHE = object()
    _split_cache: Optional[dict] = None  # set on first use, per object

    def __init__(self, root, batch_size: int = 128, download: bool = True,
                 val_split: Optional[float] = None, num_workers: int = 0,
                 eval_batch_size: Optional[int] = None, split_seed: int = 0,
                 mfcc: MfccSettings | dict | None = None, silence_percentage: float = 10.0,
                 unknown_percentage: float = 10.0, time_shift_ms: float = 100.0,
                 background_frequency: float = 0.8, background_volume: float = 0.1,
                 cache_dir=_DEFAULT_CACHE):
        if val_split is not None:
            raise ValueError("GSC2 has official validation and test splits (validation_list.txt, "
                             "testing_list.txt); val_split is not supported")
        super().__init__(root, batch_size=batch_size, download=download, val_split=None,
                         num_workers=num_workers, eval_batch_size=eval_batch_size,
                         split_seed=split_seed)
        self.mfcc = mfcc if isinstance(mfcc, MfccSettings) else MfccSettings(**(mfcc or {}))
        self.dims = self.mfcc.dims
        for key, value in (("silence_percentage", silence_percentage),
                           ("unknown_percentage", unknown_percentage)):
            if not 0 <= value <= 100:
                raise ValueError(f"GSC2: {key} must be in [0, 100], got {value}")
        if not 0 <= background_frequency <= 1:
            raise ValueError(f"GSC2: background_frequency must be in [0, 1], "
                             f"got {background_frequency}")
        if background_volume < 0 or time_shift_ms < 0:
            raise ValueError("GSC2: background_volume and time_shift_ms must be >= 0")
        self.silence_percentage = float(silence_percentage)
        self.unknown_percentage = float(unknown_percentage)
        self.time_shift = int(round(time_shift_ms * self.mfcc.sample_rate / 1000))
        self.background_frequency = float(background_frequency)
        self.background_volume = float(background_volume)
        self.cache_dir = (self.root / "SpeechCommands" / "cache"
                          if cache_dir is GSC2._DEFAULT_CACHE
                          else None if cache_dir is None else Path(cache_dir))
        self._device_cache: dict = {}

    # --- files ------------------------------------------------------------------------------
    def _candidate_dirs(self) -> list[Path]:
        return [self.root / "SpeechCommands" / "speech_commands_v0.02",
                self.root / "speech_commands_v0.02", self.root]

    def _looked_in(self) -> list[str]:
        return [str(d) for d in self._candidate_dirs()]

    def _locate(self) -> Optional[Path]:
        for folder in self._candidate_dirs():
            if (all((folder / n).is_file() for n in LIST_FILES.values())
                    and any((folder / BACKGROUND_DIR).glob("*.wav"))):
                return folder
        return None

    def _download(self) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        target = self._candidate_dirs()[0]
        download_and_extract_archive(URL, download_root=str(target.parent),
                                     extract_root=str(target), remove_finished=True)

    # --- splits and raw audio ---------------------------------------------------------------
    def _splits(self) -> dict[str, tuple[list, np.ndarray]]:
        if self._split_cache is None:
            folder = self._require_files()
            self._folder = folder
            self._split_cache = build_splits(folder, self.split_seed, self.silence_percentage,
                                             self.unknown_percentage)
            for split, (_, labels) in self._split_cache.items():
                counts = np.bincount(labels, minlength=self.num_classes)
                logger.info("GSC2 %s: %d samples (%d silence, %d unknown)", split, len(labels),
                            counts[CLASSES.index(SILENCE)], counts[CLASSES.index(UNKNOWN)])
        return self._split_cache

    def _split_key(self, split: str) -> str:
        """Names what a cached array of ``split`` depends on (except the feature settings)."""
        paths, labels = self._splits()[split]
        background = file_fingerprint(sorted((self._folder / BACKGROUND_DIR).glob("*.wav")))
        text = json.dumps({"format": CACHE_FORMAT, "folder": str(self._folder.resolve()),
                           "paths": paths, "labels": labels.tolist(), "seed": self.split_seed,
                           "background": [(Path(p).name, size) for p, size, _ in background],
                           "rate": self.mfcc.sample_rate, "length": self.mfcc.clip_samples})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _cache_path(self, stem: str) -> Optional[Path]:
        return None if self.cache_dir is None else self.cache_dir / f"{stem}.npy"

    def _background(self) -> list[np.ndarray]:
        """The background noise recordings, each at least one clip long."""
        self._splits()
        files = sorted((self._folder / BACKGROUND_DIR).glob("*.wav"))

        def build():
            noises = []
            for path in files:
                noise = read_clip(path, self.mfcc)
                if len(noise) < self.mfcc.clip_samples:
                    noise = np.pad(noise, (0, self.mfcc.clip_samples - len(noise)))
                noises.append(noise)
            return noises

        return memory_cached(("GSC2-background", file_fingerprint(files), self.mfcc.sample_rate,
                              self.mfcc.clip_samples), build)

    def _decode(self, split: str) -> np.ndarray:
        """int16 [N, clip_samples] of a split; silence rows are zeros (noise is mixed in later)."""
        paths, _ = self._splits()[split]
        length = self.mfcc.clip_samples
        real = [p for p in paths if p is not None]
        clips = np.zeros((len(paths), length), dtype=np.int16)
        decoded = _parallel_map(
            lambda p: _to_int16(read_clip(self._folder / p, self.mfcc, length)),
            real, self.num_workers, f"GSC2 {split} audio")
        if decoded:
            clips[:len(decoded)] = np.stack(decoded)  # keyword/unknown clips come first
        return clips

    def _train_clips(self) -> np.ndarray:
        """The training split's clips, decoded once and kept on disk (int16, ~1.2 GB in full)."""
        key = self._split_key("training")
        path = self._cache_path(f"gsc2_training_audio_{key}")
        return memory_cached(("GSC2-clips", key),
                             lambda: _cached_array(path, lambda: self._decode("training")))

    def _silence_noise(self, n: int, volume_max: float, generator: torch.Generator
                       ) -> np.ndarray:
        """[n, clip_samples] of background noise stretches at a volume uniform in [0, max)."""
        noises = self._background()
        length = self.mfcc.clip_samples
        which = torch.randint(0, len(noises), (n,), generator=generator).tolist()
        where = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        volume = (torch.rand(n, generator=generator) * volume_max).numpy()
        out = np.zeros((n, length), dtype=np.float32)
        for i, (k, u) in enumerate(zip(which, where)):
            start = int(u * (len(noises[k]) - length + 1))
            out[i] = noises[k][start:start + length] * volume[i]
        return np.clip(out, -1.0, 1.0)

    # --- features -----------------------------------------------------------------------------
    def _eval_features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 [N, 1, n_mfcc, frames], labels) of an eval split, cached on disk."""
        paths, labels = self._splits()[split]
        stem = f"gsc2_{split}_mfcc_{self.mfcc.key()}_{self._split_key(split)}"

        def compute():
            clips = self._decode(split).astype(np.float32) / 32768.0
            silent = np.array([p is None for p in paths])
            generator = seeded_generator(STREAM_GSC_SILENCE, self.split_seed,
                                         SPLITS.index(split))
            clips[silent] = self._silence_noise(int(silent.sum()), 1.0, generator)
            feats = _parallel_map(lambda c: librosa_mfcc(c, self.mfcc), list(clips),
                                  self.num_workers, f"GSC2 {split} MFCC")
            return np.stack(feats)[:, None] if feats else np.zeros((0, *self.dims), np.float32)

        features = memory_cached(("GSC2-mfcc", stem),
                                 lambda: _cached_array(self._cache_path(stem), compute))
        return features, labels

    def _extractor(self, device: torch.device) -> MfccExtractor:
        key = ("extractor", str(device))
        if key not in self._device_cache:
            self._device_cache[key] = MfccExtractor(self.mfcc, device)
        return self._device_cache[key]

    def _train_tensors(self, device: torch.device):
        """Training clips (int16), labels and the concatenated noise recordings on ``device``;
        silence flags and the recordings' offsets stay on the CPU, where the draws are made."""
        key = ("train", str(device))
        if key not in self._device_cache:
            paths, labels = self._splits()["training"]
            noises = self._background()
            starts = np.cumsum([0] + [len(n) for n in noises[:-1]])
            self._device_cache[key] = dict(
                clips=torch.from_numpy(self._train_clips()).to(device),
                silent=torch.tensor([p is None for p in paths], dtype=torch.bool),  # CPU: volumes
                labels=torch.from_numpy(labels).to(device),
                noise=torch.from_numpy(np.concatenate(noises)).to(device),
                noise_start=torch.as_tensor(starts, dtype=torch.int64),
                noise_len=torch.as_tensor([len(n) for n in noises], dtype=torch.int64))
        return self._device_cache[key]

    def augment(self, clips: torch.Tensor, silent: torch.Tensor, generator: torch.Generator,
                tensors: dict) -> torch.Tensor:
        """Time shift and background mixing of a float batch [B, T] (draws from ``generator``).

        ``silent`` [B] (CPU) marks silence samples: always mixed, at a volume up to 1. Every sample takes the same number of draws, so a batch's draws depend only on the
        generator's state, not on its content.
        """
        b, length = clips.shape
        device = clips.device
        shift = torch.randint(-self.time_shift, self.time_shift + 1, (b,), generator=generator)
        which = torch.randint(0, len(tensors["noise_len"]), (b,), generator=generator)
        where = torch.rand(b, generator=generator, dtype=torch.float64)
        mix = torch.rand(b, generator=generator) < self.background_frequency
        volume = torch.rand(b, generator=generator)

        # shift: out[t] = clip[t - s], zero outside the clip
        source = torch.arange(length, device=device)[None, :] - shift.to(device)[:, None]
        inside = (source >= 0) & (source < length)
        clips = torch.gather(clips, 1, source.clamp(0, length - 1)) * inside

        room = tensors["noise_len"][which] - length + 1
        start = tensors["noise_start"][which] + (where * room).long()
        noise = tensors["noise"][start.to(device)[:, None] + torch.arange(length, device=device)]
        silent = silent.cpu()
        volume = torch.where(silent, volume, volume * self.background_volume)
        volume = volume * (mix | silent)
        return (clips + volume.to(device)[:, None] * noise).clamp_(-1.0, 1.0)

    # --- loaders ------------------------------------------------------------------------------
    def train_loader(self, device="cpu", epoch: int = 0, seed: int = 0) -> BatchLoader:
        device = torch.device(device)
        tensors = self._train_tensors(device)
        extractor = self._extractor(device)

        def make_batch(indices: torch.Tensor, generator):
            on_device = indices.to(device)
            clips = tensors["clips"][on_device].to(torch.float32).div_(32768.0)
            clips = self.augment(clips, tensors["silent"][indices], generator, tensors)
            return extractor(clips).unsqueeze(1), tensors["labels"][on_device]

        return BatchLoader(len(tensors["labels"]), self.batch_size, make_batch,
                           self._train_generator_factory(seed, epoch))

    def _eval_loader(self, split: str, device) -> BatchLoader:
        device = torch.device(device)
        key = (split, str(device))
        if key not in self._device_cache:
            features, labels = self._eval_features(split)
            self._device_cache[key] = (torch.from_numpy(features).to(device),
                                       torch.from_numpy(labels).to(device))
        features, labels = self._device_cache[key]

        def make_batch(indices: torch.Tensor, _generator):
            indices = indices.to(device)
            return features[indices], labels[indices]

        return BatchLoader(len(labels), self.eval_batch_size, make_batch)

    def val_loader(self, device="cpu") -> BatchLoader:
        return self._eval_loader("validation", device)

    def test_loader(self, device="cpu") -> BatchLoader:
        return self._eval_loader("testing", device)

    @property
    def class_weights(self) -> torch.Tensor:
        """Weights of the weighted criterion over the 12 classes (sum 1); see ``class_weights``."""
        return class_weights(self._splits()["training"][1], self.num_classes)

    @property
    def num_train(self) -> int:
        return len(self._splits()["training"][1])

    @property
    def num_val(self) -> int:
        return len(self._splits()["validation"][1])

    @property
    def num_test(self) -> int:
        return len(self._splits()["testing"][1])
