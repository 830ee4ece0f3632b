"""Claims of a run store: which runner runs an experiment when several share one store.

A claim is a non-blocking exclusive lock (``flock``) on ``<store>/.claims/<config hash>.lock``,
held while the runner runs (or trains in a cohort and records) that experiment. The lock goes
with the open file, so a killed runner's claims are free again at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

__all__ = ["CLAIMS", "try_claim", "claim"]

CLAIMS = ".claims"


def _try_lock(f: IO) -> bool:
    """True when this process now holds ``f``'s exclusive lock, False when another holds it."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:  # a file system without locks (some network ones): run it anyway
        log.warning("cannot lock %s (%s): runners sharing this run store may repeat this "
                    "experiment", f.name, err)
    return True


def try_claim(store: Path, h: str) -> IO | None:
    """The open ``<store>/.claims/<h>.lock``, locked by this process, or None when another
    process holds it. Closing the file (or dying) releases the claim."""
    folder = store / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / f"{h}.lock", "a+")
    if _try_lock(f):
        return f
    f.close()
    return None


@contextlib.contextmanager
def claim(store: Path, h: str) -> Iterator[bool]:
    """Hold ``<store>/.claims/<h>.lock`` for the block if no other process holds it; yields
    whether this process has the claim."""
    f = try_claim(store, h)
    try:
        yield f is not None
    finally:
        if f is not None:
            f.close()
