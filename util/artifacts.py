"""Artifacts under the artifact root: atomic, checksummed, and unable to escape the root.

Every file is written to a temporary name in its final folder, fsynced and renamed, so a reader
(or a job killed mid-write) never sees half a file. A ``<file>.sha256`` sidecar holds its
checksum; :func:`verify` checks it. Files get the usual mode for new files under the process's
umask (0644 with umask 022, 0664 with 002), so a shared artifact root stays readable.

Temporaries are named ``.<final name>.<hostname>.<pid>.<random>.tmp``. A job killed mid-write
leaves its temporary behind; every writer first removes the stale ones of the folder it writes
into (:func:`remove_stale_temporaries`): those of a dead process on this host, and those of any
host older than a day. A live writer's temporary is never touched.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["safe_path", "atomic_write_bytes", "atomic_write_text", "atomic_copy", "save_torch",
           "load_torch", "verify", "sha256_file", "new_temporary", "remove_stale_temporaries",
           "ArtifactError"]

log = logging.getLogger(__name__)

#: a temporary of another host is taken as abandoned after this long
STALE_AFTER_S = 24 * 3600
_HOST = socket.gethostname().replace("/", "_") or "localhost"
_TEMPORARY = re.compile(r"\.(?P<rest>.+)\.(?P<pid>\d+)\.(?P<random>[0-9a-f]+)\.tmp")


class ArtifactError(ValueError):
    """A bad artifact name, or a file whose checksum does not match."""


def safe_path(root: str | os.PathLike, name: str) -> Path:
    """``root/name``; rejects absolute names and any ``..`` that would leave the root."""
    if not name or os.path.isabs(name) or name.startswith("~"):
        raise ArtifactError(f"artifact name {name!r} must be a relative path inside the root")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise ArtifactError(f"artifact name {name!r} may not contain '..'")
    root = Path(root).resolve()
    path = (root / Path(*parts)).resolve()
    if root != path and root not in path.parents:
        raise ArtifactError(f"artifact name {name!r} escapes the artifact root {root}")
    return path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host can still write: it exists and is not a zombie
    (a killed writer stays a zombie until its parent reaps it, its files already closed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, under another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (macOS): trust kill(0)
        return True
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporaries (see the module docstring) that no live writer owns: same host
    and the pid is not alive, or any host and older than :data:`STALE_AFTER_S`. Returns how
    many were removed; a folder that cannot be listed removes nothing."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed, now = 0, time.time()
    for entry in entries:
        m = _TEMPORARY.fullmatch(entry.name)
        if m is None:
            continue
        pid = int(m["pid"])
        mine = m["rest"].endswith(f".{_HOST}")
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if old or (mine and pid != os.getpid() and not _pid_alive(pid)):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as err:
                log.debug("cannot remove stale temporary %s: %s", entry.path, err)
                continue
            removed += 1
            log.info("removed a stale temporary file of a killed write: %s", entry.path)
    return removed


def new_temporary(target: Path) -> Path:
    """A fresh temporary name beside ``target`` (not created), after removing the folder's
    stale temporaries."""
    remove_stale_temporaries(target.parent)
    return target.parent / f".{target.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _open_temporary(target: Path) -> tuple[int, Path]:
    """Create a new temporary beside ``target``; its mode follows the umask like any new file
    (``tempfile.mkstemp`` would make it 0600 whatever the umask)."""
    while True:
        tmp = new_temporary(target)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a random suffix taken twice: draw again
            continue


def _replace_atomically(target: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``target``, fsync it, rename it over."""
    fd, tmp = _open_temporary(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace a small text file (a checksum sidecar)."""
    _replace_atomically(Path(path), text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with its ``.sha256`` sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The sidecar first: once ``path`` is visible it verifies (a job killed between the two
    # leaves only a sidecar, which verifies nothing).
    _replace_atomically(Path(f"{path}.sha256"), hashlib.sha256(data).hexdigest().encode())
    _replace_atomically(path, data)
    _fsync_dir(path.parent)
    return path


def atomic_copy(src: str | os.PathLike, root: str | os.PathLike, name: str) -> Path:
    """Copy ``src`` to ``root/name`` atomically and verify the copy's checksum."""
    dst = safe_path(root, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256_file(src)
    fd, tmp = _open_temporary(dst)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_file(tmp) != expected:
            raise ArtifactError(f"copy of {src} to {dst} does not match its checksum")
        atomic_write_text(Path(f"{dst}.sha256"), expected)  # before the file, as above
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(dst.parent)
    return dst


def verify(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and matches its ``.sha256`` sidecar."""
    path = Path(path)
    side = Path(f"{path}.sha256")
    if not path.is_file() or not side.is_file():
        return False
    return sha256_file(path) == side.read_text().strip()


def save_torch(obj: Any, root: str | os.PathLike, name: str) -> Path:
    """``torch.save`` to ``root/name`` atomically, with a checksum."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(safe_path(root, name), buf.getvalue())


def load_torch(path: str | os.PathLike, map_location="cpu") -> Any:
    """Load a checkpoint written by :func:`save_torch`, refusing one that fails its checksum."""
    import torch
    if not verify(path):
        raise ArtifactError(f"checkpoint {path} is missing or fails its checksum")
    return torch.load(path, map_location=map_location, weights_only=True)
