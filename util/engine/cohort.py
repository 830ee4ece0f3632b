"""Cohort training: many configs that share their training batches trained in one process,
each member its own single run (docs/cohort.md).

A member is the base config deep-updated with its override dict
(:func:`util.config.member_configs`); every member is validated before anything is loaded or
written. Members must share what the shared batches depend on (:data:`SHARED`); anything
else (noise, repetition, weight clamping, evaluation seeds, ...) may differ.

Epoch-major: the dataset is prepared once; each epoch's training batches are drawn once and
kept, and every member trains that epoch on them. Two strategies (``cohort.strategy``):

- ``member-serial``: each member in turn, through :func:`util.engine.experiment.run_epoch`,
  the code of a single run's epoch (seeded ``seed_torch(train_seed, "train", epoch)``), so
  every member is bit for bit its single run.
- ``vectorised``: the members as one network (:mod:`util.engine.stacked`), in chunks of at
  most ``cohort.max_members`` (``auto``: what fits in half the free memory). Each member ends
  the epoch with the weights, optimizer state, losses and accuracies of its single run up to
  float rounding (batched kernels sum in another order) and noise drawn from its own
  generator (seeded by its training hash and the epoch: independent across members, and the
  same whichever members share its chunk; other values than its single run's draws, from
  the same distribution); the rest of the epoch (scheduler, divergence check, evaluation,
  history, checkpoint) is the single run's :func:`end_epoch`.
- ``auto`` (default): vectorised on a GPU (small models leave it idle one at a time);
  on a CPU vectorised only for networks without convolutions and chunks of at least
  :data:`CPU_MIN_VECTORISED` members (oneDNN's grouped convolutions are slower than K plain
  ones at these sizes: benchmarks/bench_cohort.py), else member-serial.

Either way each member writes what its single run writes (epoch checkpoints and ``final.pt``
under its own training hash): a later single run reuses it, a member trained before (found as
single runs find theirs) is not trained again, and members with one training hash (differing
only in evaluation) are trained once. A killed cohort resumes from the last complete epoch:
member-serial per member; vectorised per chunk (a chunk's members drop their previous epoch
checkpoint only when all of them have written the new one, and a rerun rolls a chunk back to
its oldest member's epoch), so a rerun ends with the metrics of an uninterrupted cohort.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from data import resolve_name
from noise.calibration import noise_off

from ..artifacts import atomic_write_text
from ..cluster import data_root
from ..config import (ConfigError, ValidatedConfig, member_configs, parse_cohort, to_plain,
                      validate_config)
from .checkpoints import (drop_older_checkpoints, epoch_checkpoint, find_trained_checkpoint,
                          latest_checkpoint, training_lock)
from .experiment import (MetricLogger, Prepared, Training, begin_training, calibrate_epoch,
                         end_epoch, finish_training, load_dataset, obtain_trained_model, prepare,
                         result_of, run_epoch)
from .seeding import derive_seed
from .stacked import (NotStackable, StackedNetwork, stack_adam, train_epoch_stacked,
                      unstack_adam)

log = logging.getLogger(__name__)

__all__ = ["SHARED", "CPU_MIN_VECTORISED", "validate_members", "choose_strategy",
           "plan_chunks", "run_cohort", "cohort_document", "HISTORY_SECTIONS"]

#: the per-epoch lists of a member's result, kept out of a cohort's stored document
HISTORY_SECTIONS = ("training", "validation", "test", "epoch_seconds")

#: on a CPU, ``auto`` vectorises only chunks of at least this many members (below it the
#: stacked network's extra bookkeeping outweighs the batched matmuls: benchmarks/bench_cohort.py)
CPU_MIN_VECTORISED = 4

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
    ("model architecture (model.torchvision.kwargs)",
     lambda vc: json.dumps(vc.model.architecture, sort_keys=True)),
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


def _noisy_sites(p: Prepared) -> tuple[int, ...]:
    return tuple(i for i, c in enumerate(p.vc.site_configs) if c.active(True))


def _has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _check_stackable(preps: Sequence[Prepared]) -> None:
    """Raise :class:`NotStackable` unless these members can train as one network."""
    with contextlib.ExitStack() as clean:   # the layers decide, not the (uncalibrated) noise
        for p in preps:
            clean.enter_context(noise_off(p.model))
        StackedNetwork([p.model for p in preps])
    weights = [p.criterion.weight for p in preps]
    if any((w is None) != (weights[0] is None) or (w is not None and not torch.equal(
            w, weights[0])) for w in weights):
        raise NotStackable("the members' loss weights differ (model.weight_criterion)")


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _bytes_per_member(p: Prepared) -> int:
    """Memory one member takes in a stacked training step: parameters, gradients and Adam's
    two moments, and each layer's output on a batch, kept for the backward pass with its
    gradient and noise (a generous estimate)."""
    params = sum(t.numel() for t in p.model.parameters())
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel()))
             for m in p.model.children()]
    try:
        with torch.no_grad(), noise_off(p.model):   # shapes only (relative σ uncalibrated)
            p.model.eval()
            p.model(torch.zeros((2, *p.dataset.dims), device=p.device))
    finally:
        for h in hooks:
            h.remove()
    activations = sum(outputs) // 2 * p.vc.data.batch_size
    return 4 * (4 * params + 4 * activations)


def plan_chunks(preps: Sequence[Prepared], max_members: int | str, device: torch.device
                ) -> list[list[int]]:
    """The members (indices into ``preps``) of each chunk trained as one network: ordered by
    their noisy sites (so that members noisy at one site are neighbours: one noise draw per
    site), cut into chunks of at most ``max_members`` (``auto``: as many as fit in half of
    the device's free memory)."""
    order = sorted(range(len(preps)), key=lambda i: (_noisy_sites(preps[i]), i))
    if not order:
        return []
    if max_members == "auto":
        size = max(1, int(0.5 * _free_bytes(device) // _bytes_per_member(preps[order[0]])))
    else:
        size = int(max_members)
    return [order[j:j + size] for j in range(0, len(order), size)]


def choose_strategy(requested: str, preps: Sequence[Prepared], chunks: list[list[int]],
                    device: torch.device) -> tuple[str, str]:
    """(strategy, why) for training ``preps`` in ``chunks``; ``ConfigError`` when
    ``vectorised`` was asked for and the members cannot be stacked."""
    if not preps:
        return "member-serial", "nothing to train"
    if requested == "member-serial":
        return requested, "cohort.strategy"
    try:
        _check_stackable(preps)
    except NotStackable as err:
        if requested == "vectorised":
            raise ConfigError(f"cohort.strategy 'vectorised': {err}; allowed for these "
                              "members: 'member-serial' or 'auto'") from None
        return "member-serial", f"not stackable ({err})"
    if requested == "vectorised":
        return requested, "cohort.strategy"
    if device.type != "cpu":
        return "vectorised", f"auto on {device.type}"
    if _has_conv(preps[0].model):
        return "member-serial", "auto on cpu: convolutions (grouped ones are slower there)"
    if max(len(c) for c in chunks) < CPU_MIN_VECTORISED:
        return "member-serial", f"auto on cpu: fewer than {CPU_MIN_VECTORISED} members"
    return "vectorised", "auto on cpu: a network without convolutions"


def _epoch_of(path) -> int:
    match = re.fullmatch(r"epoch_(\d+)\.pt", path.name) if path is not None else None
    return int(match.group(1)) if match else 0


def _chunk_resume(preps: Sequence[Prepared], chunk: list[int]) -> dict[int, Any]:
    """Where each member of a vectorised chunk resumes: the chunk's oldest member's epoch, for
    every member that still has that epoch's checkpoint (a kill between the members' writes
    of one epoch leaves them so); None: its own newest checkpoint."""
    epochs = {i: _epoch_of(latest_checkpoint(preps[i].checkpoint_dir)) for i in chunk}
    common = min(epochs.values())
    out: dict[int, Any] = {}
    for i in chunk:
        out[i] = None
        # one epoch ahead: a kill came between the members' writes (a member further ahead
        # was trained elsewhere: it keeps its progress)
        if epochs[i] == common + 1:
            out[i] = "scratch" if common == 0 else epoch_checkpoint(preps[i].checkpoint_dir,
                                                                    common)
    return out


def _vectorised_epoch(chunk: list[tuple[int, Training]], epoch: int, batches, *,
                      log_metric: MetricLogger | None, bar) -> None:
    """Epoch ``epoch`` of a chunk's active members as one network, then each member's
    :func:`end_epoch`; their previous checkpoints go only when all new ones are written."""
    t0 = time.perf_counter()
    ts = [t for _, t in chunk]
    device = ts[0].p.device
    generators = [torch.Generator(device=device).manual_seed(
        derive_seed(t.p.vc.train_seed, "train", epoch, "member", t.p.training_hash)) for t in ts]
    for t in ts:
        calibrate_epoch(t)   # relative training σ: each member's site RMS, as run_epoch does
    net = StackedNetwork([t.p.model for t in ts], generators)
    opt = stack_adam(net, [t.optimizer for t in ts])
    results = train_epoch_stacked(net, opt, batches, ts[0].p.criterion.weight,
                                  [t.p.vc.weight_clamping for t in ts])
    net.unstack()
    unstack_adam(net, opt, [t.optimizer for t in ts])
    share = (time.perf_counter() - t0) / len(ts)
    for (i, t), (loss, acc) in zip(chunk, results):
        with warnings.catch_warnings():
            # the stacked Adam took the member's steps, not the member's own optimizer, which
            # its scheduler takes for a scheduler stepped first; the schedule is the same
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            end_epoch(t, epoch, loss, acc, log_metric=_member_logger(log_metric, i),
                      t0=time.perf_counter() - share, drop_older=False)
        bar.update(1)
    for t in ts:
        drop_older_checkpoints(t.p.checkpoint_dir, epoch + 1)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="cohort", unit="member-epoch", disable=not enabled or None,
                dynamic_ncols=True, leave=False)


def run_cohort(config: Mapping[str, Any], members: list[Mapping[str, Any]] | None = None, *,
               run_store=None, db_collection=None, log_metric: MetricLogger | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) every member of a cohort and evaluate it; ``members`` default to
    ``config['cohort']['members']``, strategy and chunk size to ``config['cohort']``. Returns
    ``{"members": [each member's result as run_experiment returns it], "cohort": {...}}``."""
    t_start = time.perf_counter()
    vcs = validate_members(config, members)
    settings = parse_cohort(config.get("cohort"))
    dataset = load_dataset(vcs[0])
    preps = [prepare(vc.config, vc=vc, dataset=dataset) for vc in vcs]
    device, seed, epochs = preps[0].device, vcs[0].train_seed, vcs[0].general.num_epochs
    trainings: dict[int, Training] = {}
    corrupt: dict[int, str | None] = {}
    hashes: set[str] = set()
    epoch_seconds: list[float] = []
    with contextlib.ExitStack() as locks:
        to_train = []
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
                to_train.append(i)
        planned = plan_chunks([preps[i] for i in to_train], settings["max_members"], device)
        chunks = [[to_train[j] for j in c] for c in planned]
        strategy, why = choose_strategy(settings["strategy"], [preps[i] for i in to_train],
                                        chunks, device)
        resume: dict[int, Any] = {}
        if strategy == "vectorised":
            for c in chunks:
                resume.update(_chunk_resume(preps, c))
        for i in to_train:
            if resume.get(i) == "scratch":
                for old in preps[i].checkpoint_dir.glob("epoch_*.pt"):
                    old.unlink()
                trainings[i] = begin_training(preps[i])
            else:
                trainings[i] = begin_training(preps[i], resume_from=resume.get(i))
        log.info("cohort of %d members: %d to train, strategy %s (%s)%s", len(preps),
                 len(trainings), strategy, why,
                 f", chunks of {[len(c) for c in chunks]}" if strategy == "vectorised" else "")
        first = min((t.start for t in trainings.values()), default=epochs)
        bar = _progress_bar(sum(epochs - t.start for t in trainings.values()), progress)
        for epoch in range(first, epochs):
            active = [(i, t) for i, t in trainings.items() if not t.done and t.start <= epoch]
            if not active:
                continue
            bar.set_description(f"cohort epoch {epoch + 1}/{epochs}")
            bar.set_postfix(members=len(active))
            t0 = time.perf_counter()
            batches = list(dataset.train_loader(device, epoch=epoch, seed=seed))
            if strategy == "vectorised":
                live = dict(active)
                for c in chunks:
                    part = [(i, live[i]) for i in c if i in live]
                    if part:
                        _vectorised_epoch(part, epoch, batches, log_metric=log_metric, bar=bar)
            else:
                for i, t in active:
                    run_epoch(t, epoch, batches, log_metric=_member_logger(log_metric, i),
                              progress=False)
                    bar.update(1)
            epoch_seconds.append(time.perf_counter() - t0)
            log.info("cohort epoch %d/%d: %d members (%.1fs)", epoch + 1, epochs, len(active),
                     epoch_seconds[-1])
        bar.close()
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
            "cohort": {"n_members": len(preps), "strategy": strategy, "strategy_reason": why,
                       "chunks": [len(c) for c in chunks] if strategy == "vectorised" else None,
                       "members_trained": sorted(trainings),
                       "epoch_seconds": [round(s, 3) for s in epoch_seconds],
                       "seconds": round(time.perf_counter() - t_start, 3),
                       "device": str(device)}}


def cohort_document(result: Mapping[str, Any], configs: Sequence[Mapping[str, Any]],
                    artifact_dir) -> dict[str, Any]:
    """The stored result of a cohort run (one sacred run / MongoDB document for the whole
    cohort): per member its config and its single-run result without the per-epoch lists
    (``final`` holds the final metrics), and ``artifacts.histories``, a JSON file under
    ``artifact_dir`` with every member's per-epoch lists. The document grows by a couple of
    kilobytes per member whatever the number of epochs, far below MongoDB's 16 MB limit for
    any cohort a shipped YAML makes (tests/test_cohort_document.py)."""
    histories, members = [], []
    for i, (member, config) in enumerate(zip(result["members"], configs)):
        histories.append({k: member[k] for k in HISTORY_SECTIONS if k in member})
        compact = {k: v for k, v in member.items() if k not in HISTORY_SECTIONS}
        compact["config"] = to_plain(dict(config))
        compact["member"] = i
        members.append(compact)
    path = Path(artifact_dir) / "histories.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(histories))
    return {"members": members, "cohort": dict(result["cohort"]),
            "artifacts": {"histories": str(path)}}
