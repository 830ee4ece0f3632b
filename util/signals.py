"""SIGTERM as an interrupt: what SLURM sends before it kills a preempted or timed-out job.

Under :func:`interrupt_on_sigterm` a SIGTERM raises ``KeyboardInterrupt`` in the main thread,
exactly like Ctrl-C: sacred then marks the run INTERRUPTED, ``finally`` blocks run and the last
epoch checkpoint stays on disk for a rerun to resume from.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)

__all__ = ["interrupt_on_sigterm"]


def _raise_interrupt(signum, frame):
    log.warning("received SIGTERM: interrupting the run (the last checkpoint is kept)")
    raise KeyboardInterrupt("SIGTERM")


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt``; the previous handler is restored
    on exit. Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
