"""Checkpoints of trained models: per-epoch files that survive a kill, the training lock, and
the lookup of a model trained before.

Checkpoints live under ``<artifact root>/checkpoints/<training hash>/``: ``epoch_<k>.pt`` (and
``last.pt``, the same file) after every epoch (resume), ``final.pt`` when training is complete
(reuse). Every file is atomic and checksummed (:mod:`util.artifacts`). The training hash
(:func:`util.config.training_hash`) leaves out evaluation-only noise, so every eval-only config
finds the noise-free model trained for it. Lookup order for a trained model: the MongoDB
collection (when running under seml), the local run store, then the artifact root itself.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from ..artifacts import atomic_copy, atomic_write_text, save_torch, new_temporary, verify
from ..run_store import iter_runs

log = logging.getLogger(__name__)

__all__ = ["save_epoch_checkpoint", "drop_older_checkpoints", "epoch_checkpoint",
           "latest_checkpoint", "point_last_at", "training_lock",
           "find_trained_checkpoint"]


def save_epoch_checkpoint(checkpoint_dir: Path, epoch: int, state: dict, *,
                          drop_older: bool = True) -> Path:
    """Write ``epoch_<k>.pt`` (atomic, checksummed), point ``last.pt`` at it, then drop older
    epochs (unless ``drop_older`` is False: :func:`drop_older_checkpoints` later). A kill at
    any moment leaves at least one complete, verified checkpoint: the previous epoch's file is
    removed only after the new one is in place."""
    new = save_torch(state, checkpoint_dir.parent, f"{checkpoint_dir.name}/epoch_{epoch:04d}.pt")
    point_last_at(checkpoint_dir, new)
    if drop_older:
        drop_older_checkpoints(checkpoint_dir, epoch)
    return new


def drop_older_checkpoints(checkpoint_dir: Path, epoch: int) -> None:
    """Remove the epoch checkpoints before epoch ``epoch``."""
    keep = f"epoch_{epoch:04d}.pt"
    for old in checkpoint_dir.glob("epoch_*.pt"):
        if old.name < keep:
            for path in (old, Path(f"{old}.sha256")):
                path.unlink(missing_ok=True)


def epoch_checkpoint(checkpoint_dir: Path, epoch: int) -> Path | None:
    """The verified checkpoint of epoch ``epoch``, or None."""
    path = checkpoint_dir / f"epoch_{epoch:04d}.pt"
    return path if path.exists() and verify(path) else None


def point_last_at(checkpoint_dir: Path, epoch_file: Path) -> None:
    """Make ``last.pt`` (with its sidecar) the same file as ``epoch_file``: a hard link where
    the file system has them, else a verified copy. A kill between the sidecar's rename and the
    link's leaves a ``last.pt`` that fails to verify; resuming reads ``epoch_*.pt`` first, and
    :func:`train` points ``last.pt`` again before it writes ``final.pt``."""
    last = checkpoint_dir / "last.pt"
    tmp = new_temporary(last)
    try:
        os.link(epoch_file, tmp)  # no second copy of a large checkpoint
        atomic_write_text(Path(f"{last}.sha256"), Path(f"{epoch_file}.sha256").read_text())
        os.replace(tmp, last)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_copy(epoch_file, checkpoint_dir.parent, f"{checkpoint_dir.name}/last.pt")


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest epoch checkpoint that verifies (``last.pt`` for older layouts), or None."""
    for path in sorted(checkpoint_dir.glob("epoch_*.pt"), reverse=True):
        if verify(path):
            return path
        log.warning("epoch checkpoint %s fails its checksum (corrupt); not resuming from it",
                    path)
    last = checkpoint_dir / "last.pt"
    return last if verify(last) else None


@contextlib.contextmanager
def training_lock(checkpoint_dir: Path):
    """Hold ``<checkpoint dir>/.lock`` while training, so that a second job that needs the same
    model (an eval-only array next to its noise-free run) waits and then reuses it instead of
    training it again. A lock the file system cannot take (some network file systems) is
    skipped: concurrent training is wasteful, never wrong (writes are atomic and training
    deterministic)."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with open(checkpoint_dir / ".lock", "a+") as f:
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another job is training this model (%s); waiting for it",
                         checkpoint_dir)
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as err:
            log.warning("cannot lock %s (%s); training without a lock", checkpoint_dir, err)
        try:
            yield
        finally:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                pass


def _find_in_database(h: str, db_collection: str) -> str | None:
    try:
        from seml.database import get_collection  # only under seml: a MongoDB client
        collection = get_collection(db_collection)
        doc = collection.find_one({"status": "COMPLETED", "result.training_hash": h,
                                   "result.artifacts.checkpoint": {"$exists": True}},
                                  {"result.artifacts.checkpoint": 1},
                                  sort=[("_id", 1)])
    except Exception as err:  # the database being away must not stop a run that can train
        log.warning("could not query MongoDB collection %r for a trained model: %s",
                    db_collection, err)
        return None
    path = _stored_checkpoint(doc.get("result") if isinstance(doc, Mapping) else None)
    return path if path and verify(path) else None


def _find_in_run_store(h: str, run_store: str | Path) -> str | None:
    for run in iter_runs(run_store, status="COMPLETED"):
        if isinstance(run.result, Mapping) and run.result.get("training_hash") == h:
            path = _stored_checkpoint(run.result)
            if path and verify(path):
                return path
    return None


def _stored_checkpoint(result: Any) -> str | None:
    """``result['artifacts']['checkpoint']`` of a stored result, None where it is malformed."""
    artifacts = result.get("artifacts") if isinstance(result, Mapping) else None
    path = artifacts.get("checkpoint") if isinstance(artifacts, Mapping) else None
    return path if isinstance(path, str) else None


def find_trained_checkpoint(training_hash: str, checkpoint_dir: Path, *, run_store=None,
                            db_collection=None) -> tuple[str, str] | None:
    """(path, source) of a complete, verified checkpoint for ``training_hash``, or None:
    looked up in the MongoDB collection (under seml), the local run store, then
    ``checkpoint_dir/final.pt``."""
    if db_collection:
        path = _find_in_database(training_hash, db_collection)
        if path:
            return path, "database"
    if run_store:
        path = _find_in_run_store(training_hash, run_store)
        if path:
            return path, "run_store"
    final = checkpoint_dir / "final.pt"
    if verify(final):
        return str(final), "artifact_root"
    return None
