"""Results computed before their run started, handed to
:func:`util.engine.experiment.run_experiment` so that it returns them instead of training and
evaluating again.

The local runner's cohorts (``python -m util.local_run <yaml> --cohorts``) train many configs
at once (:func:`util.engine.cohort.run_cohort`), then record each member as its own run through
train.py's sacred experiment, so that the run store holds exactly what the member's single run
stores (its config, status, host, result and metrics). Inside :func:`handing_over`, a run whose
config hash has a :class:`Precomputed` takes it (once), replays its metrics into the run's
metric logger in the order they were logged, and returns a copy of its result.
"""
from __future__ import annotations

import contextlib
import copy
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from ..config import config_hash

__all__ = ["Precomputed", "handing_over", "take_precomputed"]


@dataclass(frozen=True)
class Precomputed:
    """One config's result and the metrics its computation logged: ``(name, value, step)``."""

    result: dict
    metrics: tuple[tuple[str, float, int], ...] = ()


_READY: ContextVar[dict[str, Precomputed] | None] = ContextVar("precomputed", default=None)


@contextlib.contextmanager
def handing_over(results: Mapping[str, Precomputed]) -> Iterator[dict[str, Precomputed]]:
    """Within the block, a run of a config whose :func:`util.config.config_hash` is a key of
    ``results`` returns that result. Yields the results not taken yet (a caller can tell that
    a run computed its result itself)."""
    pending = dict(results)
    token = _READY.set(pending)
    try:
        yield pending
    finally:
        _READY.reset(token)


def take_precomputed(config: Mapping[str, Any],
                     log_metric: Callable[[str, float, int], None] | None = None
                     ) -> dict[str, Any] | None:
    """The result handed over for ``config`` (removed from those pending, its metrics replayed
    into ``log_metric``), or None: nothing was handed over for it."""
    pending = _READY.get()
    if not pending:
        return None
    ready = pending.pop(config_hash(config), None)
    if ready is None:
        return None
    if log_metric is not None:
        for name, value, step in ready.metrics:
            log_metric(name, value, step)
    return copy.deepcopy(ready.result)
