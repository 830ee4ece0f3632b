"""The batched torch MFCC equals librosa.feature.mfcc with the paper's settings."""
import librosa
import numpy as np
import pytest
import torch

from data.audio_features import MfccExtractor, MfccSettings, librosa_mfcc

SETTINGS = MfccSettings()
RATE = SETTINGS.sample_rate


def tone(freq, amplitude=0.5, length=16000):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(length) / RATE)).astype(np.float32)


def test_paper_settings_give_ten_by_fortynine_features():
    assert SETTINGS.dims == (1, 10, 49)
    assert librosa_mfcc(tone(1000), SETTINGS).shape == (10, 49)
    out = MfccExtractor(SETTINGS)(torch.zeros(3, 16000))
    assert out.shape == (3, 10, 49) and out.dtype == torch.float32


def test_librosa_kwargs_match_the_issue_settings():
    kw = SETTINGS.librosa_kwargs()
    assert kw == dict(sr=16000, n_mfcc=10, n_fft=480, win_length=480, hop_length=320, n_mels=40,
                      fmin=20.0, fmax=4000.0, center=False)


def test_torch_mfcc_matches_librosa_on_varied_clips():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / RATE
    clips = [rng.standard_normal(16000) * 0.1,                       # white noise
             tone(1000),                                              # pure tone
             np.zeros(16000),                                         # digital silence
             rng.standard_normal(16000) * np.linspace(0, 1, 16000) * 1e-3,  # quiet ramp
             0.3 * np.sin(2 * np.pi * (200 + 1800 * t) * t),          # chirp
             np.clip(rng.standard_normal(16000), -1, 1)]              # loud, clipped
    clips = np.stack(clips).astype(np.float32)
    reference = np.stack([librosa_mfcc(c, SETTINGS) for c in clips])
    ours = MfccExtractor(SETTINGS)(torch.from_numpy(clips)).numpy()
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() < 1e-5 * scale + 1e-3


def test_a_clip_in_a_batch_gets_the_same_features_as_alone():
    """librosa clips dB values at 80 dB below each clip's own peak, not the batch's."""
    extractor = MfccExtractor(SETTINGS)
    quiet, loud = tone(500, 1e-4), tone(2000, 0.9)
    together = extractor(torch.from_numpy(np.stack([quiet, loud])))
    alone = extractor(torch.from_numpy(quiet[None]))
    assert torch.allclose(together[0], alone[0], atol=1e-3)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_pure_tone_energy_lands_in_the_mel_band_centred_nearest_its_frequency(freq):
    log_mel = MfccExtractor(SETTINGS).log_mel(torch.from_numpy(tone(freq)[None]))[0]
    centres = librosa.mel_frequencies(SETTINGS.n_mels + 2, fmin=SETTINGS.fmin,
                                      fmax=SETTINGS.fmax)[1:-1]
    loudest = log_mel.mean(dim=1).argmax().item()
    assert abs(loudest - np.abs(centres - freq).argmin()) <= 1
    assert abs(centres[loudest] - freq) < 0.15 * freq


def test_silence_gives_the_floor_in_every_coefficient_but_the_first():
    """All mel bands at librosa's amin floor (-100 dB): only the DCT's constant term is non-zero."""
    out = MfccExtractor(SETTINGS)(torch.zeros(1, 16000))[0]
    assert torch.allclose(out[0], torch.full((49,), -100.0 * np.sqrt(SETTINGS.n_mels)), rtol=1e-5)
    assert out[1:].abs().max() < 1e-3


def test_louder_clip_raises_only_the_first_coefficient():
    extractor = MfccExtractor(SETTINGS)
    noise = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.01
    out = extractor(torch.from_numpy(np.stack([noise, 10 * noise])))
    # ×10 amplitude = +20 dB in every mel band = +20·√40 in c0 under the orthonormal DCT
    assert torch.allclose(out[1, 0] - out[0, 0], torch.full((49,), 20 * np.sqrt(40.0)), atol=1e-2)
    assert torch.allclose(out[1, 1:], out[0, 1:], atol=1e-2)


def test_settings_reject_impossible_values_and_key_changes_with_settings():
    with pytest.raises(ValueError, match="fmax"):
        MfccSettings(fmax=9000.0)
    with pytest.raises(ValueError, match="n_mfcc"):
        MfccSettings(n_mfcc=50)
    assert MfccSettings().key() == MfccSettings().key()
    assert MfccSettings(n_mfcc=13).key() != MfccSettings().key()
