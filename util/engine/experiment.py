"""What one experiment does, independent of sacred: validate, load data, build, reuse or train
(resuming from the last epoch checkpoint), evaluate, and return the result dict.

train.py wires this into sacred/seml; the walk command and the tests call it too. An epoch is
:func:`run_epoch` (train on the epoch's batches, divergence check, evaluation, history, epoch
checkpoint), between :func:`begin_training` (optimizer, resume) and :func:`finish_training`
(``final.pt``): a single run and every member of a cohort (:mod:`util.engine.cohort`) train
through this same code.

The config arrives validated and resolved (:class:`util.config.ValidatedConfig`): every step
here reads its typed fields. Checkpoints and the lookup of a trained model:
:mod:`util.engine.checkpoints`. A ``final.pt`` that fails its checksum is reported (a warning
and the result's ``replaced_corrupt_checkpoint``) and written again from the epoch
checkpoints, or by training.

Divergence: after every epoch the mean training loss and every parameter and buffer are checked;
when one is non-finite (possible at huge training noise) training stops, and that epoch's
checkpoint, ``final.pt`` and the result carry ``diverged = {"epoch": k, "what": "loss" |
"weights"}`` (None otherwise), so every later reuse of the model says so too.

One config, one answer: the evaluation after epoch ``e`` (0-based) is seeded by
``seed_torch(seed, "eval", e)``, and a run that did not measure its final metrics itself (a
reused model, or one trained by a config with other evaluation noise) evaluates with the seed of
the checkpoint's last epoch, so ``final`` is the same whether a run trained, resumed or reused.

Relative σ (``sigma_relative_to: rms``, :mod:`util.engine.calibration`): the model is
calibrated at the start of every epoch for relative training noise (each epoch's site RMS go
into the checkpoints' and the result's ``training_calibration``) and before every evaluation
for relative evaluation noise (the final one is the result's ``calibration``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from data import DatasetNotFoundError, get_dataset
from models import build_model_from
from noise.fast_rng import generator_name
from noise.weights import attach_weight_noise

from ..artifacts import load_torch, save_torch, verify
from ..cluster import artifact_root, data_root, ensure_writable_dir
from ..config import (ValidatedConfig, config_hash, eval_noise_hash, training_hash,
                      validate_config)
from .calibration import calibrate_for_eval, calibrate_for_training
from .checkpoints import (find_trained_checkpoint, latest_checkpoint, point_last_at,
                          save_epoch_checkpoint, training_lock)
from .loops import best_device, clamp_weights, evaluate, non_finite, train_epoch
from .precomputed import take_precomputed
from .seeding import derive_seed, seed_torch

log = logging.getLogger(__name__)

MetricLogger = Callable[[str, float, int], None]
HISTORY_KEYS = ("training.loss", "training.accuracy", "validation.loss", "validation.accuracy",
                "test.loss", "test.accuracy")


@dataclass
class Prepared:
    """Everything built for a config: validated config, dataset, model on its device."""

    vc: ValidatedConfig
    dataset: Any
    model: nn.Module
    device: torch.device
    criterion: nn.Module
    training_hash: str
    checkpoint_dir: Path


@dataclass
class TrainOutcome:
    history: dict[str, list[float]]
    #: at least one epoch was trained by this run
    trained: bool
    checkpoint: str
    #: 'trained' (epochs ran here) | 'epoch_checkpoint' (a complete epoch checkpoint, no epoch
    #: to run) | 'database' | 'run_store' | 'artifact_root' (reused)
    source: str
    resumed_from_epoch: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    #: the validation/test history was measured under this config's evaluation noise
    history_is_own: bool = True
    #: epochs the model has been trained for (the checkpoint's ``epoch``)
    epochs: int = 0
    #: ``{"epoch": k, "what": "loss" | "weights"}`` when training diverged, else None
    diverged: dict | None = None
    #: the generator of the training noise (None: noise-free training, or an older checkpoint)
    training_noise_generator: str | None = None
    #: the path of a corrupt ``final.pt`` this run replaced
    replaced_corrupt_checkpoint: str | None = None
    #: relative training noise: ``{"rms": [per epoch: one RMS per site], "batches": n}``
    training_calibration: dict | None = None

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **kw) -> "TrainOutcome":
        return cls(state["history"], epochs=int(state["epoch"]), diverged=state.get("diverged"),
                   training_noise_generator=state.get("noise_generator"),
                   training_calibration=state.get("training_calibration"), **kw)


def _match_slurm_cpus() -> None:
    """Under SLURM, use the CPUs the job was given, not every core of the node: ten 1-CPU
    jobs on one node would otherwise each start a thread per core and fight over them."""
    import os
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit() and int(cpus) >= 1 and torch.get_num_threads() != int(cpus):
        torch.set_num_threads(int(cpus))
        log.info("SLURM_CPUS_PER_TASK=%s: torch uses %s threads", cpus, cpus)


def load_dataset(vc: ValidatedConfig):
    """The prepared dataset of a validated config."""
    d = vc.data
    dataset = get_dataset(d.dataset, data_root(d.root), batch_size=d.batch_size,
                          download=d.download, val_split=d.val_split)
    dataset.prepare()
    return dataset


def prepare(config: Mapping[str, Any], *, vc: ValidatedConfig | None = None,
            dataset: Any = None) -> Prepared:
    """Validate ``config`` (unless its validated ``vc`` is given), load its data (unless the
    prepared ``dataset`` is given: a cohort loads it once) and build its model on its device."""
    _match_slurm_cpus()
    vc = vc or validate_config(config)
    device = best_device(vc.device)
    dataset = dataset if dataset is not None else load_dataset(vc)
    seed_torch(vc.train_seed, "init")
    model = build_model_from(vc.model_class, vc.conf_name, vc.site_configs, vc.repetitions,
                             dataset.dims, dataset.num_classes,
                             architecture=vc.model.architecture).to(device)
    if vc.weight_noise:  # programming_instance draws: one per config and repeat
        attach_weight_noise(model, vc.weight_noise, seed=derive_seed(vc.seed, "weight_noise"))
    weight = None
    if vc.model.weight_criterion and getattr(dataset, "class_weights", None) is not None:
        weight = torch.as_tensor(dataset.class_weights, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    h = training_hash(vc)
    ckpt_dir = artifact_root(vc.artifact_root) / "checkpoints" / h
    return Prepared(vc, dataset, model, device, criterion, h, ckpt_dir)


def check_locations(vc: ValidatedConfig) -> None:
    """Fail before a run starts (and before data is loaded) when it could not write where it
    must: the artifact root, and the data root when the dataset still has to be downloaded.
    Raises :class:`util.cluster.LocationError` (or ``ConfigError`` for a relative path that
    leaves the repository root)."""
    ensure_writable_dir(artifact_root(vc.artifact_root), "artifact_root")
    d = vc.data
    root = data_root(d.root)
    if not d.download:
        return
    try:
        present = get_dataset(d.dataset, root, batch_size=d.batch_size, download=False,
                              val_split=d.val_split)
        present.prepare()  # with download=False: only looks for the files
    except DatasetNotFoundError:
        ensure_writable_dir(root, "data.root")
    except ValueError:  # a setting the dataset rejects: reported where the run loads it
        pass


def _empty_history() -> dict[str, list[float]]:
    return {k: [] for k in HISTORY_KEYS}


@dataclass
class Training:
    """One model's training in progress: what :func:`run_epoch` advances by one epoch (a
    single run and every member of a cohort go through the same code)."""

    p: Prepared
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: dict[str, list[float]]
    #: epochs already in the model (resumed from an epoch checkpoint, else 0)
    start: int
    own: bool
    diverged: dict | None
    my_eval: str
    generator: str | None
    test_loader: Any
    epoch_seconds: list[float] = field(default_factory=list)
    #: relative training noise: each epoch's calibration (see :class:`TrainOutcome`)
    training_calibration: dict | None = None

    @property
    def done(self) -> bool:
        """No epoch left to run: all trained, or stopped by divergence."""
        return self.diverged is not None or \
            self.start + len(self.epoch_seconds) >= self.p.vc.general.num_epochs


def begin_training(p: Prepared, *, resume_from: Path | None = None) -> Training:
    """The optimizer and scheduler of ``p``'s model, resumed from its newest epoch checkpoint
    (or from ``resume_from``) if there is one (weights clamped first when starting from
    scratch)."""
    epochs = p.vc.general.num_epochs
    optimizer = torch.optim.Adam(p.model.parameters(), lr=p.vc.optimizer.lr)
    scheduler = None
    if p.vc.optimizer.lr_scheduler == "CosineAnnealingLR":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history, start, own, diverged, calibration = _empty_history(), 0, True, None, None
    my_eval = eval_noise_hash(p.vc)
    generator = generator_name(p.device) if p.vc.noisy_training else None
    last = resume_from or latest_checkpoint(p.checkpoint_dir)
    if last is not None:
        state = load_torch(last, map_location=p.device)
        if state.get("training_hash") == p.training_hash and state["epoch"] <= epochs:
            p.model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            if scheduler is not None and state.get("scheduler_state"):
                scheduler.load_state_dict(state["scheduler_state"])
            history, start = state["history"], int(state["epoch"])
            own = state.get("eval_noise_hash") == my_eval
            diverged = state.get("diverged")
            calibration = state.get("training_calibration")
            log.info("resuming from %s after epoch %d of %d", last, start, epochs)
            earlier = state.get("noise_generator", generator)  # (unrecorded in old files)
            if start < epochs and diverged is None and earlier != generator:
                log.warning("resuming a model trained with %s noise; the remaining epochs draw "
                            "it with %s", earlier, generator)
    clamp = p.vc.weight_clamping
    if clamp is not None and start == 0:
        clamp_weights(p.model, *clamp)
    return Training(p, optimizer, scheduler, history, start, own, diverged, my_eval, generator,
                    p.dataset.test_loader(p.device), training_calibration=calibration)


def calibrate_epoch(t: Training) -> None:
    """Relative training noise: calibrate ``t``'s model as it starts an epoch and record it
    (every epoch path calls this before its training steps)."""
    cal = calibrate_for_training(t.p)
    if cal is not None:
        t.training_calibration = {
            "rms": [*(t.training_calibration or {}).get("rms", []), cal["rms"]],
            "batches": cal["batches"]}


def run_epoch(t: Training, epoch: int, batches, *, log_metric: MetricLogger | None = None,
              progress: bool = True, t0: float | None = None) -> None:
    """Epoch ``epoch`` (0-based) of ``t`` on ``batches`` (that epoch's training batches):
    train, check for divergence, evaluate, record the history, write the epoch checkpoint.
    ``t0``: when the epoch's work began (default: now)."""
    p, epochs = t.p, t.p.vc.general.num_epochs
    t0 = time.perf_counter() if t0 is None else t0
    calibrate_epoch(t)
    seed_torch(p.vc.train_seed, "train", epoch)
    tr_loss, tr_acc = train_epoch(p.model, batches, t.optimizer, p.criterion,
                                  clamp=p.vc.weight_clamping, progress=progress,
                                  desc=f"epoch {epoch + 1}/{epochs}")
    end_epoch(t, epoch, tr_loss, tr_acc, log_metric=log_metric, t0=t0)


def end_epoch(t: Training, epoch: int, tr_loss: float, tr_acc: float, *,
              log_metric: MetricLogger | None = None, t0: float,
              drop_older: bool = True) -> None:
    """The rest of epoch ``epoch`` after its training steps (mean loss ``tr_loss``, accuracy
    ``tr_acc``): scheduler step, divergence check, evaluation, history, the epoch checkpoint
    (``drop_older=False`` keeps the previous one: a cohort drops them itself once every
    member's new one is written)."""
    p, epochs = t.p, t.p.vc.general.num_epochs
    if t.scheduler is not None:
        t.scheduler.step()
    what = non_finite(tr_loss, p.model)
    if what is not None:
        t.diverged = {"epoch": epoch + 1, "what": what}
        log.warning("training diverged in epoch %d/%d: the %s became non-finite; stopping "
                    "(the checkpoint and the result are marked 'diverged')",
                    epoch + 1, epochs, "training loss" if what == "loss" else "weights")
    calibrate_for_eval(p)
    seed_torch(p.vc.seed, "eval", epoch)
    va_loss, va_acc = evaluate(p.model, p.dataset.val_loader(p.device), p.criterion)
    values = {"training.loss": tr_loss, "training.accuracy": tr_acc,
              "validation.loss": va_loss, "validation.accuracy": va_acc}
    if t.test_loader is not None:
        te_loss, te_acc = evaluate(p.model, t.test_loader, p.criterion)
        values.update({"test.loss": te_loss, "test.accuracy": te_acc})
    for k, v in values.items():
        t.history[k].append(v)
        if log_metric is not None:
            log_metric(k, v, epoch)
    t.epoch_seconds.append(time.perf_counter() - t0)
    log.info("epoch %d/%d: train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% (%.1fs)",
             epoch + 1, epochs, tr_loss, tr_acc, va_loss, va_acc, t.epoch_seconds[-1])
    save_epoch_checkpoint(p.checkpoint_dir, epoch + 1, drop_older=drop_older, state={
        "epoch": epoch + 1, "training_hash": p.training_hash,
        "model_state": p.model.state_dict(), "optimizer_state": t.optimizer.state_dict(),
        "scheduler_state": t.scheduler.state_dict() if t.scheduler else None,
        "history": t.history, "config": p.vc.config,
        "eval_noise_hash": t.my_eval if t.own else None,
        "diverged": t.diverged, "noise_generator": t.generator,
        "training_calibration": t.training_calibration})


def finish_training(t: Training) -> TrainOutcome:
    """Write ``final.pt`` from the newest epoch checkpoint; the outcome of the training."""
    p = t.p
    latest = latest_checkpoint(p.checkpoint_dir)
    if latest.name != "last.pt" and not verify(p.checkpoint_dir / "last.pt"):
        point_last_at(p.checkpoint_dir, latest)  # a kill came between last.pt's two renames
    state = load_torch(latest, map_location="cpu")
    final = save_torch(state, p.checkpoint_dir.parent, f"{p.training_hash}/final.pt")
    ran = bool(t.epoch_seconds)
    return TrainOutcome.from_state(state, trained=ran, checkpoint=str(final),
                                   source="trained" if ran else "epoch_checkpoint",
                                   resumed_from_epoch=t.start, epoch_seconds=t.epoch_seconds,
                                   history_is_own=t.own)


def train(p: Prepared, *, log_metric: MetricLogger | None = None, progress: bool = True
          ) -> TrainOutcome:
    """Train (resuming from ``last.pt`` if present); write ``last.pt`` each epoch, ``final.pt``."""
    t = begin_training(p)
    epoch = t.start
    while not t.done:
        t0 = time.perf_counter()
        loader = p.dataset.train_loader(p.device, epoch=epoch, seed=p.vc.train_seed)
        run_epoch(t, epoch, loader, log_metric=log_metric, progress=progress, t0=t0)
        epoch += 1
    return finish_training(t)


def obtain_trained_model(p: Prepared, *, run_store=None, db_collection=None,
                         log_metric: MetricLogger | None = None, progress: bool = True
                         ) -> TrainOutcome:
    """Load the equivalent trained model if one exists; otherwise train it (one job at a time
    per trained model: others wait, then reuse it)."""
    found = find_trained_checkpoint(p.training_hash, p.checkpoint_dir, run_store=run_store,
                                    db_collection=db_collection)
    if found is None:
        with training_lock(p.checkpoint_dir):
            found = find_trained_checkpoint(p.training_hash, p.checkpoint_dir, run_store=run_store,
                                    db_collection=db_collection)
            if found is None:
                final = p.checkpoint_dir / "final.pt"
                corrupt = str(final) if final.exists() else None
                if corrupt:
                    log.warning("the trained model %s fails its checksum (corrupt); writing it "
                                "again from the epoch checkpoints, or by training", corrupt)
                outcome = train(p, log_metric=log_metric, progress=progress)
                outcome.replaced_corrupt_checkpoint = corrupt
                return outcome
    path, source = found
    state = load_torch(path, map_location=p.device)
    p.model.load_state_dict(state["model_state"])
    log.info("reusing the trained model %s (found via %s); evaluating only", path, source)
    outcome = TrainOutcome.from_state(state, trained=False, checkpoint=path, source=source,
                                      resumed_from_epoch=int(state["epoch"]))
    if outcome.diverged:
        log.warning("the trained model %s diverged in epoch %d (%s non-finite)", path,
                    outcome.diverged["epoch"], outcome.diverged["what"])
    if outcome.training_noise_generator not in (None, generator_name(p.device)):
        log.warning("the trained model %s was trained with %s noise; this run's noise uses %s "
                    "(same distribution, other values)", path,
                    outcome.training_noise_generator, generator_name(p.device))
    return outcome


def run_experiment(config: Mapping[str, Any], *, run_store=None, db_collection=None,
                   log_metric: MetricLogger | None = None, progress: bool = True,
                   vc: ValidatedConfig | None = None) -> dict[str, Any]:
    """Run one experiment end to end and return the result dict (see docs/results.md); a
    result handed over for this config (:mod:`util.engine.precomputed`) is returned as it is."""
    ready = take_precomputed(config, log_metric)
    if ready is not None:  # computed before this run started (a local runner's cohort)
        return ready
    t0 = time.perf_counter()
    p = prepare(config, vc=vc)
    outcome = obtain_trained_model(p, run_store=run_store, db_collection=db_collection,
                                   log_metric=log_metric, progress=progress)
    return result_of(p, outcome, t0, log_metric=log_metric)


def result_of(p: Prepared, outcome: TrainOutcome, t0: float, *,
              log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """The result dict of ``p`` with its trained model (``outcome``), evaluating it under
    ``p``'s evaluation noise where its history was not measured so; ``t0``: when the run
    began."""
    history = {k: list(v) for k, v in outcome.history.items()}
    calibration = calibrate_for_eval(p)  # the trained model's (what its last evaluation used)
    if not outcome.trained or not outcome.history_is_own:
        # the model was trained (at least in part) by another config or run: evaluate it under
        # this config's evaluation noise, seeded as its last epoch's evaluation would be
        seed_torch(p.vc.seed, "eval", outcome.epochs - 1)
        history["validation.loss"], history["validation.accuracy"] = \
            map(lambda v: [v], evaluate(p.model, p.dataset.val_loader(p.device), p.criterion))
        test_loader = p.dataset.test_loader(p.device)
        if test_loader is not None:
            history["test.loss"], history["test.accuracy"] = \
                map(lambda v: [v], evaluate(p.model, test_loader, p.criterion))
        if log_metric is not None:
            for k in HISTORY_KEYS[2:]:
                if history.get(k):
                    log_metric(k, history[k][-1], 0)
    result = build_result(p, outcome, history, time.perf_counter() - t0)
    result["calibration"] = calibration
    return result


def build_result(p: Prepared, outcome: TrainOutcome, history: dict[str, list[float]],
                 seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, values in history.items():
        if values:
            section, metric = key.split(".")
            result.setdefault(section, {})[metric] = [float(v) for v in values]
    result["final"] = {f"{s}_{m}": result[s][m][-1] for s in ("validation", "test")
                       for m in ("accuracy", "loss") if s in result}
    result.update({
        "artifacts": {"checkpoint": outcome.checkpoint},
        "checkpoint_used": outcome.checkpoint,
        "checkpoint_source": outcome.source,
        "trained": outcome.trained,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "epochs_run": len(outcome.epoch_seconds),
        "epoch_seconds": [round(s, 3) for s in outcome.epoch_seconds],
        "seconds": round(seconds, 3),
        "training_hash": p.training_hash,
        "config_hash": config_hash(p.vc.config),
        "sites": list(p.vc.site_names),
        "num_classes": int(p.dataset.num_classes),
        "device": str(p.device),
        "diverged": outcome.diverged,
        "noise_generator": generator_name(p.device),
        "training_noise_generator": outcome.training_noise_generator,
        "replaced_corrupt_checkpoint": outcome.replaced_corrupt_checkpoint,
        "training_calibration": outcome.training_calibration,
    })
    return result
