"""Fast Gaussian noise for CPU float32 tensors, with ``torch.randn`` as the fallback.

On the CPU, noise injection is bound by the random number generator: torch draws normals from
one serial Mersenne Twister (~3 ns per value here), which made noisy training ~2x slower than
clean training. The kernel (C source in ``noise/_fastgauss_c.py``) is a counter-based generator (xoshiro256++ lanes
seeded by SplitMix64 counters, into a vectorised Box-Muller transform, split across torch's
threads): ~0.6 ns per value on one core and ~0.3 ns on two here.

Properties the tests check:
- exact N(mean, std²) marginals (moments, Kolmogorov-Smirnov), independent values;
- reproducible: the stream's seed is drawn from torch's CPU generator, so ``torch.manual_seed``
  makes noisy runs repeatable exactly as before (the values differ from ``torch.randn``'s);
- the same values for every thread count.

The kernel is compiled on first use with the machine's C compiler (``$CC``, ``cc`` or
``gcc``) into ``$WN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/walking-noise`` or
``~/.cache/walking-noise``), keyed by source, flags and CPU, so that nodes with different CPUs
sharing one home directory each get their own build. Without a compiler, on other devices and
dtypes, with ``WN_FAST=0`` (all fast paths off, :mod:`noise.speed`) or with ``WN_FAST_RNG=0``
(this generator only, read on first use), ``torch.randn_like`` is used: same distribution,
slower, and other values; nothing is compiled then. When the kernel cannot be built or loaded
(no compiler, an unwritable cache folder, a failing self-check) a warning says so, once per
process. :func:`generator_name` names the generator that runs (results and checkpoints
record it).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import secrets
import shutil
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from . import speed
from ._fastgauss_c import C_SOURCE

__all__ = ["available", "normal_like", "add_noise", "add_noise_", "library_path",
           "use_torch_generator", "generator_name", "MIN_NUMEL"]

log = logging.getLogger(__name__)

MIN_NUMEL = 2048          # below this the ctypes call costs more than torch's generator
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_state = "unloaded"       # unloaded | ok | off | failed
_path: Path | None = None
_suspended = 0            # > 0 inside use_torch_generator()
_problems: list[str] = []  # why builds failed, for the one warning


def _enabled() -> bool:
    return speed._from_env("WN_FAST_RNG")


def _cache_dir() -> Path:
    if os.environ.get("WN_CACHE_DIR"):
        return Path(os.environ["WN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "walking-noise"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("flags", "model name", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _flag_sets(cpu: str) -> list[list[str]]:
    """Compiler flag sets to try, fastest first."""
    base = ["-O3", "-ffast-math", "-fPIC", "-shared", "-std=gnu99"]
    omp = ["-fopenmp"]   # torch's OpenMP threads
    native = ["-march=native"]
    if " avx512f" in cpu:
        native.append("-mprefer-vector-width=512")
    libs = ["-lm", "-lpthread"]
    return [base + omp + native + libs,
            base + native + libs,
            base + libs]


def _compile(cc: str, flags: list[str], target: Path) -> bool:
    """Build the kernel into ``target`` (atomically: concurrent builds, e.g. of array jobs,
    are harmless); False when the compiler refuses the flags or the folder is unwritable."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # created with the umask's mode (mkstemp's 0600 would keep the build from others
        # sharing the cache folder)
        tmp = str(target.parent / f"{target.stem}.{os.getpid()}.{secrets.token_hex(4)}.so.tmp")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:  # a read-only or full cache directory: fall back to torch
        _problems.append(f"cannot write to {target.parent}: {e.strerror or e}")
        return False
    src = tmp[:-len(".so.tmp")] + ".c"
    try:
        with open(src, "w") as f:
            f.write(C_SOURCE)
        cmd = [cc, *[f for f in flags if not f.startswith("-l")], src, "-o", tmp,
               *[f for f in flags if f.startswith("-l")]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log.debug("fast_rng: %s failed: %s", " ".join(cmd), r.stderr[-500:])
            _problems.append(f"{cc} {' '.join(flags)} failed")
            return False
        os.replace(tmp, target)
        return True
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("fast_rng: build failed: %s", e)
        _problems.append(f"build failed: {e}")
        return False
    finally:
        for path in (tmp, src):
            if os.path.exists(path):
                os.unlink(path)


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        log.debug("fast_rng: cannot load %s: %s", path, e)
        _problems.append(f"cannot load {path}")
        return None
    lib.wn_fastgauss_version.restype = ctypes.c_int
    lib.wn_normal_f32.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64,
                                  ctypes.c_float, ctypes.c_float, ctypes.c_int]
    lib.wn_normal_f32.restype = None
    lib.wn_add_normal_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                      ctypes.c_uint64, ctypes.c_float, ctypes.c_float,
                                      ctypes.c_int]
    lib.wn_add_normal_f32.restype = None
    if lib.wn_fastgauss_version() != 2:
        _problems.append(f"{path} is another version")
        return None
    # A build that runs but computes nonsense (a miscompilation, say) must not be used.
    z = torch.empty(1 << 16)
    lib.wn_normal_f32(z.data_ptr(), z.numel(), 12345, 0.0, 1.0, 1)
    if not (torch.isfinite(z).all() and abs(float(z.mean())) < 0.02
            and abs(float(z.var()) - 1.0) < 0.03):
        _problems.append(f"{path} fails its self-check")
        return None
    return lib


def _init() -> None:
    global _state
    with _lock:
        if _state != "unloaded":
            return
        if not _enabled():
            _state = "off"
            return
        try:
            _find_or_build()
        except Exception as e:  # never let the fast path break an experiment
            log.warning("fast_rng: %s: %s; noise uses torch.randn", type(e).__name__, e)
            _state = "failed"


def _find_or_build() -> None:
    global _lib, _state, _path
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    cpu = _cpu_signature()
    for flags in _flag_sets(cpu) if cc else []:
        key = hashlib.sha256(b"\0".join([C_SOURCE.encode(), " ".join(flags).encode(),
                                         cc.encode(), cpu.encode(),
                                         platform.machine().encode()]))
        target = _cache_dir() / f"fastgauss-{key.hexdigest()[:16]}.so"
        if not target.exists() and not _compile(cc, flags, target):
            continue
        lib = _load(target)
        if lib is not None:
            _lib, _path, _state = lib, target, "ok"
            log.debug("fast_rng: using %s", target)
            return
    _state = "failed"
    why = "; ".join(dict.fromkeys(_problems)) if cc else "no C compiler found ($CC, cc, gcc)"
    log.warning("fast_rng: no compiled Gaussian kernel (%s); noise on the CPU uses torch.randn "
                "(same distribution, other values, slower)", why)


def available() -> bool:
    """True when the compiled kernel is in use (compiling it on the first call): the fast
    paths are on (:mod:`noise.speed`), ``WN_FAST_RNG`` is not ``0`` and the kernel built."""
    if not speed.enabled():
        return False
    if _state == "unloaded":
        _init()
    return _state == "ok"


def library_path() -> Path | None:
    return _path if available() else None


def generator_name(device: torch.device | str = "cpu") -> str:
    """The Gaussian generator noise on ``device`` is drawn with: ``"fast_rng"`` (the compiled
    kernel, for CPU float32 tensors of at least :data:`MIN_NUMEL` elements; smaller ones use
    torch's) or ``"torch.randn"``. The two give the same distribution but other values."""
    if torch.device(device).type == "cpu" and available():
        return "fast_rng"
    return "torch.randn"


@contextmanager
def use_torch_generator():
    """Within this block, noise is drawn with ``torch.randn_like`` (for comparisons)."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def _applies(x: torch.Tensor) -> bool:
    return (not _suspended and x.device.type == "cpu" and x.dtype == torch.float32
            and x.numel() >= MIN_NUMEL and available())


_local = threading.local()


def _seed() -> int:
    # From torch's CPU generator: torch.manual_seed governs the noise, as with torch.randn.
    # Drawn into a per-thread scalar that is reused (a fresh one costs 3x the time).
    buf = getattr(_local, "seed", None)
    if buf is None:
        with torch.inference_mode(False):   # a normal tensor: usable in and out of that mode
            buf = _local.seed = torch.empty((), dtype=torch.int64)
    return buf.random_().item()


def normal_like(x: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``mean + std·z``, z ~ N(0, 1), shaped like ``x`` (a new tensor, no autograd history),
    in one pass where the kernel applies."""
    if not _applies(x):
        z = torch.randn_like(x)
        if std != 1.0:
            z.mul_(std)
        return z.add_(mean) if mean != 0.0 else z
    out = torch.empty(x.shape, dtype=x.dtype)
    _lib.wn_normal_f32(out.data_ptr(), out.numel(), _seed(), float(mean), float(std),
                       torch.get_num_threads())
    return out


def _kernel_add(out: torch.Tensor, x: torch.Tensor, std: float, mean: float) -> torch.Tensor:
    """out = x + mean + std·z (contiguous float32 CPU tensors of one size; out may be x)."""
    _lib.wn_add_normal_f32(out.data_ptr(), x.data_ptr(), x.numel(), _seed(), float(mean),
                           float(std), torch.get_num_threads())
    return out


class _AddNoise(torch.autograd.Function):
    """y = x + mean + std·z; dy/dx = 1 (the noise does not depend on x)."""

    @staticmethod
    def forward(ctx, x, mean, std):
        xc = x.contiguous()
        return _kernel_add(torch.empty(xc.shape, dtype=xc.dtype), xc, std, mean)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def add_noise(x: torch.Tensor, std: float, mean: float = 0.0, *,
              overwrite: bool = False) -> torch.Tensor:
    """``x + mean + std·z`` with z ~ N(0, 1), in one pass where the kernel applies.

    ``overwrite=True`` lets the kernel write the result into ``x`` itself (and return ``x``)
    when autograd provably never reads ``x``'s values: during training, a fresh output of a
    convolution, linear layer, batch norm or max-pool (:func:`noise.speed.overwritable`). It
    saves a tensor and a pass over memory; the values are the same either way. Anything else
    still holding ``x`` (a forward hook that kept it, say) then sees the noisy values.
    """
    if not _applies(x):
        y = torch.add(x, torch.randn_like(x), alpha=std)
        return y.add_(mean) if mean != 0.0 else y
    if overwrite and speed.overwritable(x):
        # d(x + noise)/dx = 1: the node that made x passes the gradient on as it is
        return _kernel_add(x, x, std, mean)
    if x.requires_grad and torch.is_grad_enabled():
        return _AddNoise.apply(x, float(mean), float(std))
    xc = x.contiguous()   # no autograd, no node
    return _kernel_add(torch.empty(xc.shape, dtype=xc.dtype), xc, std, mean)


def add_noise_(x: torch.Tensor, std: float, mean: float = 0.0) -> torch.Tensor:
    """``x += mean + std·z`` in place (the values :func:`add_noise` gives); returns ``x``.

    For a tensor the caller has just made, that nothing else reads and whose autograd node
    (if any) does not keep it, e.g. the output of ``F.threshold(x, 0, 0)``: relu's twin,
    whose backward reads its input rather than its output."""
    if not _applies(x):
        x.add_(torch.randn_like(x), alpha=std)
        return x.add_(mean) if mean != 0.0 else x
    if not x.is_contiguous():   # e.g. channels_last: the draw of add_noise, in logical order
        return x.add_(normal_like(x, mean, std))
    return _kernel_add(x, x, std, mean)
