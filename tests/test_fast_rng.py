"""The compiled Gaussian kernel (noise.fast_rng): distribution, independence, determinism,
thread invariance, gradients, and the fallback to torch.randn."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from noise import GaussAdd, GaussMul, apply_noise, fast_rng, speed

ROOT = Path(__file__).resolve().parents[1]
HAVE_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))

needs_kernel = pytest.mark.skipif(
    not HAVE_CC or not speed.enabled() or not fast_rng._enabled(),
    reason="no C compiler on this machine" if not HAVE_CC
    else "the kernel is switched off (WN_FAST=0 or WN_FAST_RNG=0)")


def _raw(n, seed, threads):
    out = torch.empty(n)
    fast_rng._lib.wn_normal_f32(out.data_ptr(), n, seed, 0.0, 1.0, threads)
    return out


@needs_kernel
def test_kernel_builds_and_is_used_where_a_compiler_exists():
    assert fast_rng.available()
    assert fast_rng.library_path().exists()
    assert fast_rng._applies(torch.zeros(fast_rng.MIN_NUMEL))
    assert not fast_rng._applies(torch.zeros(fast_rng.MIN_NUMEL, dtype=torch.float64))
    assert not fast_rng._applies(torch.zeros(8))


@needs_kernel
def test_standard_normal_moments_and_ks():
    torch.manual_seed(0)
    z = fast_rng.normal_like(torch.empty(2_000_000)).double()
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 4 * math.sqrt(2 / n)
    assert abs(stats.skew(z.numpy())) < 4 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z.numpy())) < 4 * math.sqrt(24 / n)
    # Tails: P(|z| > 3) = 0.0027; a float32 Box-Muller still reaches beyond 5σ.
    p3 = (z.abs() > 3).double().mean().item()
    assert abs(p3 - 2 * stats.norm.sf(3)) < 4 * math.sqrt(0.0027 / n)
    assert z.abs().max().item() > 4.5
    assert stats.kstest(z[:200_000].numpy(), "norm").pvalue > 1e-3


@needs_kernel
def test_values_are_independent():
    z = _raw(1 << 21, 2024, 1).double()
    def corr(a, b):
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    lim = 5 / math.sqrt(1 << 20)
    assert abs(corr(z[:-1], z[1:])) < lim                      # neighbours
    blocks = z.view(-1, 2048)
    cos_half, sin_half = blocks[:, :1024].reshape(-1), blocks[:, 1024:].reshape(-1)
    assert abs(corr(cos_half, sin_half)) < lim                  # the two Box-Muller outputs
    assert abs(corr(cos_half ** 2, sin_half ** 2)) < lim        # ...also in magnitude
    # Independent pairs: the squared radius of two normals is Exp(1/2) (chi-square, 2 dof).
    r2 = (cos_half ** 2 + sin_half ** 2).numpy()
    assert stats.kstest(r2[:200_000], "chi2", args=(2,)).pvalue > 1e-3
    # Successive seeds give unrelated streams.
    assert abs(corr(_raw(1 << 20, 7, 1).double(), _raw(1 << 20, 8, 1).double())) < lim


@needs_kernel
def _reference(seed, n_blocks):
    """The kernel's documented algorithm in float64 numpy (xoshiro256++ lanes seeded by
    SplitMix64, Box-Muller with quadrant bits), for comparing values one by one."""
    import numpy as np
    M = np.uint64(0xFFFFFFFFFFFFFFFF)
    GAMMA = np.uint64(0x9E3779B97F4A7C15)

    def splitmix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    def rotl(x, k):
        return ((x << np.uint64(k)) | (x >> np.uint64(64 - k))) & M

    lanes, half = 16, 1024
    out = []
    with np.errstate(over="ignore"):
        for b in range(n_blocks):
            base = np.uint64(seed) + np.uint64(b * 4 * lanes) * GAMMA
            idx = np.arange(lanes, dtype=np.uint64) * np.uint64(4)
            s0, s1, s2, s3 = (splitmix(base + (idx + np.uint64(j)) * GAMMA) for j in (1, 2, 3, 4))
            words = np.empty((half // lanes, lanes), dtype=np.uint64)
            for t in range(half // lanes):
                words[t] = rotl(s0 + s3, 23) + s0
                tt = s1 << np.uint64(17)
                s2 = s2 ^ s0; s3 = s3 ^ s1; s1 = s1 ^ s2; s0 = s0 ^ s3; s2 = s2 ^ tt
                s3 = rotl(s3, 45)
            w = words.reshape(-1)
            hi = (w >> np.uint64(32)).astype(np.float64)
            lo = (w & np.uint64(0xFFFFFFFF)).astype(np.uint64)
            r = np.sqrt(-2 * np.log((hi + 1) * 2.0 ** -32))
            quadrant = (lo >> np.uint64(30)).astype(np.float64)
            phi = (lo & np.uint64(0x3FFFFFFF)).astype(np.float64) * (np.pi / 2) / 2 ** 30
            theta = quadrant * np.pi / 2 + phi
            out.append(np.concatenate([r * np.cos(theta), r * np.sin(theta)]))
    return np.concatenate(out)


@needs_kernel
def test_values_match_the_documented_algorithm():
    """Catches a wrong polynomial, quadrant or bit use that moments alone could miss."""
    ref = _reference(0xC0FFEE, 3)
    got = _raw(3 * 2048, 0xC0FFEE, 1).double().numpy()
    err = abs(got - ref) / (1 + abs(ref))
    assert err.max() < 2e-6, err.max()


@needs_kernel
@pytest.mark.parametrize("n", [1, 2047, 2048, 2049, 300_001])
def test_same_values_for_every_thread_count(n):
    one = _raw(n, 99, 1)
    for t in (2, 3, 8):
        assert torch.equal(one, _raw(n, 99, t))
    assert torch.equal(one[: min(n, 200)], _raw(min(n, 200), 99, 1))  # a prefix is a prefix


@needs_kernel
def test_seeded_by_torch_generator():
    x = torch.empty(10_000)
    torch.manual_seed(5)
    a, b = fast_rng.normal_like(x), fast_rng.normal_like(x)
    torch.manual_seed(5)
    assert torch.equal(a, fast_rng.normal_like(x))
    assert not torch.equal(a, b)
    torch.manual_seed(5)  # mean and std applied in the same pass
    assert torch.allclose(fast_rng.normal_like(x, 2.0, 0.5), 2.0 + 0.5 * a, atol=1e-6)


@needs_kernel
def test_add_noise_values_and_gradient():
    x = torch.linspace(-3, 3, 400_000).requires_grad_()
    y = fast_rng.add_noise(x, std=0.5, mean=0.25)
    d = (y - x).detach().double()
    assert abs(d.mean().item() - 0.25) < 4 * 0.5 / math.sqrt(d.numel())
    assert abs(d.std().item() - 0.5) < 0.005
    (y * torch.arange(400_000.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(400_000.0))  # dy/dx = 1
    # Non-contiguous input: the same formula on the values.
    xt = torch.zeros(300, 200).t()
    d2 = fast_rng.add_noise(xt, std=2.0)
    assert d2.shape == (200, 300) and abs(d2.std().item() - 2.0) < 0.03


@needs_kernel
def test_operator_uses_kernel_and_keeps_the_formulas():
    x = torch.full((256, 1000), 3.0)
    torch.manual_seed(1)
    y = apply_noise(x, GaussAdd(GaussStd=0.2))
    torch.manual_seed(1)
    z = fast_rng.normal_like(x)
    assert torch.allclose(y, 3.0 + 0.2 * z, atol=1e-6)   # the kernel's draw, the GaussAdd formula
    m = apply_noise(x, GaussMul(GaussStd=0.1, GaussMean=1.0))
    assert abs(m.mean().item() - 3.0) < 0.01 and abs(m.std().item() - 0.3) < 0.005


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


FALLBACK_PROBE = """
import torch
from noise import GaussAdd, apply_noise, fast_rng
torch.manual_seed(3)
y = apply_noise(torch.zeros(100_000), GaussAdd(GaussStd=2.0))
torch.manual_seed(3)
ref = 2.0 * torch.randn(100_000)
print(fast_rng.available(), bool(torch.allclose(y, ref)), round(y.std().item(), 2))
"""


@pytest.mark.parametrize("env", [{"WN_FAST_RNG": "0"}, {"CC": "/nonexistent/cc"},
                                 {"WN_CACHE_DIR": "/proc/no-such-dir/cache"}])
def test_fallback_is_torch_randn(tmp_path, env):
    out = _python(FALLBACK_PROBE, **{"WN_CACHE_DIR": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "2.0"]
    assert not list(tmp_path.glob("*.so"))


@needs_kernel
def test_fresh_cache_builds_once_and_is_reused(tmp_path):
    code = "from noise import fast_rng; print(fast_rng.available(), fast_rng.library_path())"
    first = _python(code, WN_CACHE_DIR=str(tmp_path))
    assert first.returncode == 0, first.stderr
    ok, path = first.stdout.split()
    assert ok == "True" and Path(path).parent == tmp_path
    mtime = Path(path).stat().st_mtime_ns
    second = _python(code, WN_CACHE_DIR=str(tmp_path))
    assert second.stdout.split()[1] == path and Path(path).stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no temporaries left


@needs_kernel
def test_works_from_a_copy_of_the_python_sources_only(tmp_path):
    """seml runs jobs from its stored copy of the .py sources: the kernel must build there."""
    (tmp_path / "src" / "noise").mkdir(parents=True)
    for f in (ROOT / "noise").glob("*.py"):
        (tmp_path / "src" / "noise" / f.name).write_text(f.read_text())
    code = ("import noise, torch; from noise import fast_rng; "
            "print(fast_rng.available(), noise.__file__.startswith(%r))" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "src", capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "WN_CACHE_DIR": str(tmp_path / "cache"),
                              "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
