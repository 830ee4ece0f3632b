"""Cohorts of a local run (``python -m util.local_run <yaml> --cohorts``): which pending
experiments train together, and their training.

Grouping: experiments whose validated configs agree on every value a cohort's members must
share (:data:`util.engine.cohort.SHARED`: dataset, batch size, val_split, data root, training
seed, epochs, model, optimizer, lr, scheduler, device) and on the cohort settings
(``cohort.strategy``, ``cohort.max_members``) form a group, in the order of the plan (the group
stands where its first experiment stood); a group is cut into cohorts of at most ``size``
members. Walk experiments and those that run a cohort themselves (``cohort.enabled`` or
``cohort.members``) never join one.

Eval-only experiments (noise-free training, noise in evaluation) join the cohort of their
noise-free model's configs: they train nothing, since run_cohort trains one model per training
hash and every other member with that hash reuses it, but in a cohort they share its one data
loading. Because the plan runs noise-free experiments first, the fully noise-free member of a
group is the one that trains the model, as it is when running one by one.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from ..config import ValidatedConfig, parse_cohort
from ..config_paths import value_at
from ..engine.cohort import SHARED, run_cohort
from ..engine.precomputed import Precomputed
from ..validate_configs import Experiment

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_COHORT_SIZE", "sharing_key", "form_cohorts", "train_cohort"]

#: members per cohort unless ``--cohort-size`` says otherwise: large enough to share the data
#: loading and batches widely, small enough that a kill loses little and memory stays modest
DEFAULT_COHORT_SIZE = 64


def sharing_key(vc: ValidatedConfig) -> tuple | None:
    """What ``vc``'s cohort partners must share (the :data:`SHARED` values, then the cohort
    strategy and member limit), or None: it runs alone (a walk, or a cohort of its own)."""
    if value_at(vc.config, "walk.enabled") is True:
        return None
    cohort = parse_cohort(vc.config.get("cohort"))
    if cohort["enabled"] or cohort["members"] is not None:
        return None
    return tuple(value(vc) for _, value in SHARED) + (cohort["strategy"],
                                                      cohort["max_members"])


def form_cohorts(experiments: Sequence[Experiment], keys: Mapping[int, Hashable | None],
                 size: int) -> list[list[Experiment]]:
    """``experiments`` (in run order) as cohorts: those with one sharing key (``keys`` by
    experiment index; None: alone) together, in run order, cut into cohorts of at most
    ``size``; the cohorts ordered by their first experiment."""
    if size < 1:
        raise ValueError(f"a cohort holds at least 1 experiment, got size {size}")
    groups: dict[Any, list[Experiment]] = {}
    for exp in experiments:
        key = keys.get(exp.index)
        groups.setdefault(("shared", key) if key is not None else ("alone", exp.index),
                          []).append(exp)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def train_cohort(members: Sequence[Experiment], store: str | Path, *, progress: bool = True
                 ) -> dict[str, Precomputed]:
    """Train (or reuse) and evaluate ``members`` as one cohort; each member's result and the
    metrics it logged, by its config hash, for its run to record
    (:func:`util.engine.precomputed.handing_over`). Exceptions of the cohort propagate."""
    cohort = parse_cohort(members[0].config.get("cohort"))
    base = {"cohort": {"strategy": cohort["strategy"], "max_members": cohort["max_members"]}}
    # each member is its full config (its cohort section, the same for all, is the base's)
    overrides = [{k: copy.deepcopy(v) for k, v in exp.config.items() if k != "cohort"}
                 for exp in members]
    metrics: list[list[tuple[str, float, int]]] = [[] for _ in members]

    def log_metric(name: str, value: float, step: int) -> None:
        _, i, metric = name.split(".", 2)  # members.<i>.<metric>
        metrics[int(i)].append((metric, value, step))
    out = run_cohort(base, overrides, run_store=store, log_metric=log_metric, progress=progress)
    ready = {}
    for exp, result, logged in zip(members, out["members"], metrics):
        # a member's config lacks the cohort section; its single run hashes the section in
        # when it is not at its defaults, so the result says the hash the run store compares
        result["config_hash"] = exp.config_hash
        ready[exp.config_hash] = Precomputed(result, tuple(logged))
    c = out["cohort"]
    log.info("cohort of %d trained %d model(s) in %.1fs (%s)", c["n_members"],
             len(c["members_trained"]), c["seconds"], c["strategy"])
    return ready
