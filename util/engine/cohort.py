"""Cohort training: many configs that share their training batches trained in one process,
each member bit for bit its own single run (docs/cohort.md).

A member is the base config deep-updated with its override dict
(:func:`util.config.member_configs`); every member is validated before anything is loaded or
written. Members must share what the shared batches depend on (:data:`SHARED`); anything
else (noise, repetition, weight clamping, evaluation seeds, ...) may differ.

Strategy ``member-serial`` (exact by construction; vectorised strategies measured faster per
member-step in benchmarks/bench_cohort_strategies.py and are not built yet): epoch-major. The
dataset is prepared once; each epoch's training batches are drawn once and kept, and every member trains that epoch on them
through :func:`util.engine.experiment.run_epoch`, the code of a single run's epoch (seeded
``seed_torch(train_seed, "train", epoch)``, divergence check, evaluation, history, epoch
checkpoint). So each member writes what its single run writes (epoch checkpoints and
``final.pt`` under its own training hash), a later single run reuses it, a killed cohort
resumes each member from its own last complete epoch, and a member trained before (found as
single runs find theirs) is not trained again. Members with one training hash (differing only
in evaluation) are trained once.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Mapping

from data import resolve_name

from ..cluster import data_root
from ..config import ConfigError, ValidatedConfig, member_configs, validate_config
from .checkpoints import find_trained_checkpoint, training_lock
from .experiment import (MetricLogger, begin_training, finish_training, load_dataset,
                         obtain_trained_model, prepare, result_of, run_epoch)

log = logging.getLogger(__name__)

__all__ = ["SHARED", "STRATEGY", "validate_members", "run_cohort"]

STRATEGY = "member-serial"

#: What every member must share (the shared batches and the epoch loop depend on it):
#: (key named in the error, its resolved value)
SHARED: tuple[tuple[str, Callable[[ValidatedConfig], Any]], ...] = (
    ("data.dataset", lambda vc: resolve_name(vc.data.dataset)),
    ("data.batch_size", lambda vc: vc.data.batch_size),
    ("data.val_split", lambda vc: vc.data.val_split),
    ("data.root", lambda vc: str(data_root(vc.data.root))),
    ("training seed", lambda vc: vc.train_seed),
    ("general.num_epochs", lambda vc: vc.general.num_epochs),
    ("model.model_class", lambda vc: vc.model_class),
    ("model conf_name", lambda vc: vc.conf_name),
    ("optimizer.optimizer_type", lambda vc: vc.optimizer.optimizer_type),
    ("optimizer.lr", lambda vc: vc.optimizer.lr),
    ("optimizer.lr_scheduler", lambda vc: str(vc.optimizer.lr_scheduler)),
    ("device", lambda vc: vc.device),
)


def validate_members(config: Mapping[str, Any], members: list[Mapping[str, Any]] | None = None
                     ) -> list[ValidatedConfig]:
    """Every member's validated config; ``ConfigError("cohort.members[i]: ...")`` for a member
    that is invalid or cannot share the batches of member 0. Reads and writes nothing."""
    configs = member_configs(config, members)
    vcs = []
    for i, member in enumerate(configs):
        try:
            vcs.append(validate_config(member, walk=False))
        except ConfigError as err:
            raise ConfigError(f"cohort.members[{i}]: {err}") from None
    for i, vc in enumerate(vcs[1:], 1):
        for key, value in SHARED:
            mine, first = value(vc), value(vcs[0])
            if mine != first:
                raise ConfigError(f"cohort.members[{i}] cannot share training batches with "
                                  f"cohort.members[0]: {key} is {mine!r} there, {first!r} in "
                                  "cohort.members[0] (members must share dataset, batch size, "
                                  "val_split, data root, training seed, epochs, model, "
                                  "optimizer and device)")
    return vcs


def _member_logger(log_metric: MetricLogger | None, i: int) -> MetricLogger | None:
    if log_metric is None:
        return None
    return lambda name, value, step: log_metric(f"members.{i}.{name}", value, step)


def run_cohort(config: Mapping[str, Any], members: list[Mapping[str, Any]] | None = None, *,
               run_store=None, db_collection=None, log_metric: MetricLogger | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) every member of a cohort and evaluate it; ``members`` default to
    ``config['cohort']['members']``. Returns ``{"members": [each member's result as
    run_experiment returns it], "cohort": {...}}``."""
    t_start = time.perf_counter()
    vcs = validate_members(config, members)
    dataset = load_dataset(vcs[0])
    preps = [prepare(vc.config, vc=vc, dataset=dataset) for vc in vcs]
    device, seed, epochs = preps[0].device, vcs[0].train_seed, vcs[0].general.num_epochs
    trainings, corrupt, hashes = {}, {}, set()
    epoch_seconds: list[float] = []
    with contextlib.ExitStack() as locks:
        for i, p in enumerate(preps):
            if p.training_hash in hashes:  # trained once, reused by the later members
                continue
            hashes.add(p.training_hash)

            def found():
                return find_trained_checkpoint(p.training_hash, p.checkpoint_dir,
                                               run_store=run_store, db_collection=db_collection)
            if found() is not None:
                continue
            locks.enter_context(training_lock(p.checkpoint_dir))
            if found() is None:
                final = p.checkpoint_dir / "final.pt"
                corrupt[i] = str(final) if final.exists() else None
                if corrupt[i]:
                    log.warning("the trained model %s fails its checksum (corrupt); writing it "
                                "again from the epoch checkpoints, or by training", corrupt[i])
                trainings[i] = begin_training(p)
        log.info("cohort of %d members: %d to train, strategy %s", len(preps), len(trainings),
                 STRATEGY)
        first = min((t.start for t in trainings.values()), default=epochs)
        for epoch in range(first, epochs):
            active = [(i, t) for i, t in trainings.items() if not t.done and t.start <= epoch]
            if not active:
                continue
            t0 = time.perf_counter()
            batches = list(dataset.train_loader(device, epoch=epoch, seed=seed))
            for i, t in active:
                run_epoch(t, epoch, batches, log_metric=_member_logger(log_metric, i),
                          progress=progress)
            epoch_seconds.append(time.perf_counter() - t0)
            log.info("cohort epoch %d/%d: %d members (%.1fs)", epoch + 1, epochs, len(active),
                     epoch_seconds[-1])
        outcomes = {}
        for i, t in trainings.items():
            outcomes[i] = finish_training(t)
            outcomes[i].replaced_corrupt_checkpoint = corrupt[i]
    results = []
    for i, p in enumerate(preps):
        # a member's seconds: its own epochs, then its evaluation or reuse
        t0 = time.perf_counter() - sum(outcomes[i].epoch_seconds if i in outcomes else ())
        outcome = outcomes.get(i) or obtain_trained_model(
            p, run_store=run_store, db_collection=db_collection, progress=progress)
        results.append(result_of(p, outcome, t0, log_metric=_member_logger(log_metric, i)))
    return {"members": results,
            "cohort": {"n_members": len(preps), "strategy": STRATEGY,
                       "members_trained": sorted(trainings),
                       "epoch_seconds": [round(s, 3) for s in epoch_seconds],
                       "seconds": round(time.perf_counter() - t_start, 3),
                       "device": str(device)}}
