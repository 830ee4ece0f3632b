"""MFCC features of 1 s keyword clips: librosa's definition, and a batched torch equivalent.

``librosa_mfcc`` is the reference (``librosa.feature.mfcc`` clip by clip). ``MfccExtractor``
computes the same numbers for a whole batch on any device: a batched ``torch.stft`` with
librosa's window, librosa's own mel filterbank matrix (``librosa.filters.mel``), the power-to-dB
conversion with librosa's ``amin``/``top_db`` applied per clip, and scipy's orthonormal DCT-II
as a matrix. It is what keeps the per-epoch features of augmented training clips cheap.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["MfccSettings", "librosa_mfcc", "MfccExtractor"]

# librosa.feature.mfcc converts mel power to dB with power_to_db's defaults (ref=1): every value
# below AMIN is clipped to it, and every value more than TOP_DB below the clip's peak is raised
# to peak - TOP_DB. The clip-wise peak is why librosa must be called one clip at a time.
AMIN = 1e-10
TOP_DB = 80.0


@dataclass(frozen=True)
class MfccSettings:
    """Feature settings (defaults: the paper's 10 × 49 MFCC of 1 s at 16 kHz).

    Windows of ``win_length`` samples (30 ms) every ``hop_length`` samples (20 ms), no centring
    padding (librosa's ``center=False``; with centring one gets 51 frames, not 49).
    """
    sample_rate: int = 16000
    clip_samples: int = 16000
    n_mfcc: int = 10
    n_fft: int = 480
    win_length: int = 480
    hop_length: int = 320
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 4000.0

    def __post_init__(self):
        if self.clip_samples < self.n_fft:
            raise ValueError(f"clip_samples ({self.clip_samples}) must be >= n_fft ({self.n_fft})")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, "
                             f"fmax={self.fmax}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must be <= n_mels ({self.n_mels})")

    @property
    def num_frames(self) -> int:
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length

    @property
    def dims(self) -> tuple[int, int, int]:
        return (1, self.n_mfcc, self.num_frames)

    def librosa_kwargs(self) -> dict:
        """Keyword arguments of ``librosa.feature.mfcc`` for these settings."""
        return dict(sr=self.sample_rate, n_mfcc=self.n_mfcc, n_fft=self.n_fft,
                    win_length=self.win_length, hop_length=self.hop_length, n_mels=self.n_mels,
                    fmin=self.fmin, fmax=self.fmax, center=False)

    def key(self) -> str:
        """A short hash of the settings and the librosa version, for feature cache names."""
        import librosa

        text = json.dumps({**asdict(self), "librosa": librosa.__version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def librosa_mfcc(clip: np.ndarray, settings: MfccSettings) -> np.ndarray:
    """[n_mfcc, num_frames] float32 MFCC of one clip of ``settings.clip_samples`` samples."""
    import librosa

    clip = np.asarray(clip, dtype=np.float32)
    if clip.shape != (settings.clip_samples,):
        raise ValueError(f"expected a clip of {settings.clip_samples} samples, got {clip.shape}")
    return librosa.feature.mfcc(y=clip, **settings.librosa_kwargs()).astype(np.float32)


class MfccExtractor:
    """Batched MFCC on ``device``: [B, clip_samples] float32 → [B, n_mfcc, num_frames]."""

    def __init__(self, settings: MfccSettings = MfccSettings(), device="cpu"):
        import librosa
        import scipy.fft

        self.settings = s = settings
        self.device = torch.device(device)
        window = torch.hann_window(s.win_length, periodic=True, dtype=torch.float32)
        left = (s.n_fft - s.win_length) // 2  # librosa centres a shorter window in n_fft
        self.window = torch.nn.functional.pad(window, (left, s.n_fft - s.win_length - left)
                                              ).to(self.device)
        mel = librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.fmin,
                                  fmax=s.fmax)
        self.mel_basis = torch.as_tensor(mel, dtype=torch.float32, device=self.device)
        dct = scipy.fft.dct(np.eye(s.n_mels), type=2, norm="ortho", axis=0)[:s.n_mfcc]
        self.dct = torch.as_tensor(dct, dtype=torch.float32, device=self.device)

    def log_mel(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, num_frames] mel power in dB (librosa's ``power_to_db`` per clip)."""
        s = self.settings
        clips = clips.to(self.device, torch.float32)
        spec = torch.stft(clips, n_fft=s.n_fft, hop_length=s.hop_length, window=self.window,
                          center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # |X|² without complex abs (slow)
        mel = torch.matmul(self.mel_basis, power)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN))
        floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB
        return torch.maximum(db, floor)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, self.log_mel(clips))
