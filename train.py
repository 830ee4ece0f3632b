"""walking-noise experiment (sacred/seml): validate, train or reuse, evaluate, store.

    python train.py                                   # the embedded default, local run store
    python train.py with general.num_epochs=1 'noise_settings.layer_wise={...}'
    python train.py print_config
    python train.py -F my_runs with ...               # another local run store
    python train.py -m HOST:PORT:DB with ...           # sacred's MongoDB observer
    python train.py cohort with 'cohort.members=[{...}, {...}]'   # many members at once
    python train.py walk with walk.train=true 'walk.sigmas=[0.1, 1]'  # noisy-training walk

Under seml (``db_collection`` set) seml attaches its MongoDB observer. With no observer given,
runs go to the local run store ``runs/`` (sacred's FileStorageObserver: the option hook
:func:`run_store` sets sacred's ``-F runs/``). The work lives in the engine, :mod:`util.engine`;
this file is the sacred wiring.

Before any observer starts (nothing is written, no data loaded) a run is refused with a message
naming the setting: an invalid config, an artifact root, data root (when the dataset must be
downloaded) or run store that is a file or cannot be written. SIGTERM (what SLURM sends before
it kills a job) interrupts a run like Ctrl-C: sacred marks it INTERRUPTED, the last epoch
checkpoint stays, and a rerun resumes from it.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
import warnings

# sacred imports pkg_resources, which warns on every start; nothing for a user to act on
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred.arg_parser import get_config_updates
from sacred.observers import FileStorageObserver
from sacred.utils import SacredError
from seml import Experiment

# Import everything a run uses here, not lazily: `seml add` imports this file with the project on
# sys.path only for that import (the config hook runs later), and seml jobs run a copy of just
# the project modules imported by then (seml's code checkpoint).
import data  # noqa: F401  (datasets: validation and runs)
from analysis.plots import plot_walk
from util.cluster import LocationError, artifact_root, ensure_writable_dir
from util.config import (DEFAULT_CONFIG, ConfigError, config_hash, member_configs, parse_cohort,
                         to_plain, validate_config)
from util.engine.cohort import cohort_document, run_cohort, validate_members
from util.engine.experiment import check_locations, run_experiment
from util.engine.noisy_walk import run_noisy_training_walk
from util.engine.walk import format_sigma_mid_table, run_walk
from util.run_store import DEFAULT_RUN_STORE
from util.signals import interrupt_on_sigterm
from util.unsaved_runs import collect_seml_stats, keep_unsaved_runs

ROOT = os.path.dirname(os.path.abspath(__file__))

# seml's resource statistics come from collect_seml_stats, which does not fail a finished run
# when MongoDB is away; keep_unsaved_runs gives seml's MongoDB observer a folder to keep the
# run in if it cannot save it (see util/unsaved_runs.py).
ex = Experiment(name="walking-noise", base_dir=ROOT, collect_stats=False)
ex.add_config(copy.deepcopy(DEFAULT_CONFIG))
ex.pre_run_hook(keep_unsaved_runs)
ex.post_run_hook(collect_seml_stats)

# sacred's run logger (the root logger's child named after the experiment), which logs the result
log = logging.getLogger(ex.path)


def _short_result(record: logging.LogRecord) -> bool:
    """sacred logs the whole result dict at the end of a run (a walk's has thousands of
    evaluations) and has no setting for it: keep that line short; the result is stored in full."""
    if isinstance(record.msg, str) and record.msg.startswith("Result: ") and len(record.msg) > 300:
        record.msg, record.args = "Result: stored (%d characters)", (len(record.msg),)
    return True


log.addFilter(_short_result)


@ex.config_hook
def validate(config, command_name, logger):
    """Reject a bad config before any observer starts: nothing is written for it."""
    if command_name == "print_config":
        return {}
    try:
        plain = to_plain(dict(config))
        vc = validate_config(plain, walk=True if command_name == "walk" else None)
        if command_name == "cohort" or (command_name == "main"
                                        and parse_cohort(plain.get("cohort"))["enabled"]):
            for member in validate_members(plain):  # every member, before anything is written
                if logger is not None:
                    check_locations(member)
        # A run checks where it will write; `seml add` resolves every config through this hook
        # too (with no logger), on the submitting machine, where the locations may differ.
        if command_name in ("main", "walk", "cohort") and logger is not None:
            check_locations(vc)
    except ConfigError as err:
        raise SacredError(f"invalid config: {err}", print_traceback=False) from None
    except LocationError as err:
        raise SacredError(f"unusable location: {err}", print_traceback=False) from None
    return {}


#: sacred's observer options (``-F``, ``-m``, ``-s``, ``-t``, ``-S``)
OBSERVER_OPTIONS = ("--file_storage", "--mongo_db", "--sql", "--tiny_db", "--s3")


def _observer_chosen(options) -> bool:
    """Whether sacred's parsed command line names an observer: one of its observer options, or
    seml's ``db_collection`` (seml then attaches its MongoDB observer)."""
    updates, _ = get_config_updates(options.get("UPDATE") or [])
    return any(options.get(flag) for flag in OBSERVER_OPTIONS) \
        or updates.get("db_collection") is not None


@ex.option_hook
def run_store(options):
    """The local run store. A run from the command line (sacred's parsed options hold
    ``COMMAND``) that chooses no observer (no observer option, no seml ``db_collection``) gets
    sacred's ``-F runs/``; ``ex.run`` from Python keeps the observers its caller attached. The
    run store must be a folder this process can write into: checked here, before sacred's
    observer creates the run (which would fail half-way)."""
    command = ex.commands.get(options.get("COMMAND") or ex.default_command)
    if getattr(command, "unobserved", False) or options.get("--unobserved"):
        return
    if "COMMAND" in options and not _observer_chosen(options):
        options["--file_storage"] = str(DEFAULT_RUN_STORE)
    stores = [obs.basedir for obs in ex.observers if isinstance(obs, FileStorageObserver)]
    if options.get("--file_storage"):
        stores.append(options["--file_storage"])
    for store in stores:
        try:
            ensure_writable_dir(store, "run store (-F)")
        except LocationError as err:
            raise SacredError(f"unusable location: {err}", print_traceback=False) from None


def _stored_in(run) -> str | os.PathLike:
    """The run's local run store (where reuse looks for trained models)."""
    for obs in run.observers:
        if isinstance(obs, FileStorageObserver):
            return str(obs.basedir)
    return DEFAULT_RUN_STORE


def _summary(result: dict, run) -> None:
    final = result["final"]
    parts = [f"validation accuracy {final['validation_accuracy']:.2f}%"]
    if "test_accuracy" in final:
        parts.append(f"test accuracy {final['test_accuracy']:.2f}%")
    how = "trained" if result["trained"] else f"reused ({result['checkpoint_source']})"
    log.info("done: %s; model %s; checkpoint %s", ", ".join(parts), how,
             result["checkpoint_used"])
    for obs in run.observers:
        where = getattr(obs, "dir", None)
        if where:
            log.info("run stored in %s", where)


def _walk(config, run, db_collection) -> dict:
    """The walk of ``train.py walk`` and of a run with ``walk.enabled``: the sweep (with
    ``walk.train``, the noisy-training walk: one trained model per site and σ), its plot, the
    σ_mid table (printed here, once)."""
    config = to_plain(dict(config))
    sweep = run_noisy_training_walk if config["walk"].get("train") else run_walk
    with interrupt_on_sigterm():
        result = sweep(config, run_store=_stored_in(run), db_collection=db_collection,
                       log_metric=run.log_scalar, progress=True)
    result["artifacts"].update(plot_walk(result))
    _summary(result, run)
    w = result["walk"]
    relative = (w.get("params") or {}).get("sigma_relative_to") == "rms"
    head = (f"({w['noise_type']}"
            + (", σ relative to each site's clean RMS" if relative else "")
            + f", clean accuracy {result['clean_accuracy']:.2f}%, "
            f"chance {result['chance']:.2f}%)")
    per = "per weight layer" if w.get("target") == "weights" else "per site"
    if "noisy_training" in result:
        members = result["noisy_training"]["members"]
        trained = sum(m["trained"] for m in members)
        print(f"\nσ_mid {per}, clean training {head}:\n"
              f"{format_sigma_mid_table(result['sigma_mid_clean'])}\n"
              f"\nσ_mid {per}, noisy training ({len(members)} models, {trained} trained, "
              f"{len(members) - trained} reused):\n"
              f"{format_sigma_mid_table(result['sigma_mid'])}\n", flush=True)
    else:
        print(f"\nσ_mid {per} {head}:\n"
              f"{format_sigma_mid_table(result['sigma_mid'])}\n", flush=True)
    for key in ("evaluations", "walk_plot_png"):
        if key in result["artifacts"]:
            log.info("%s: %s", key, result["artifacts"][key])
    return result


def _cohort(config, run, db_collection) -> dict:
    """The cohort of ``train.py cohort`` and of a run with ``cohort.enabled``: train (or reuse)
    every member; one line per member. The stored result is the compact cohort document
    (per-epoch lists in its ``histories`` artifact)."""
    plain = to_plain(dict(config))
    configs = member_configs(plain)
    with interrupt_on_sigterm():
        result = run_cohort(plain, run_store=_stored_in(run), db_collection=db_collection,
                            log_metric=run.log_scalar, progress=True)
    lines = []
    for i, (member, r) in enumerate(zip(configs, result["members"])):
        how = "trained" if r["trained"] else f"reused ({r['checkpoint_source']})"
        noise = member["noise_settings"]
        noise = {"noise_settings": {k: v for k, v in noise.items()
                                    if v != plain["noise_settings"].get(k)}} \
            if noise != plain["noise_settings"] else "base noise"
        lines.append(f"  member {i}: {noise}: validation accuracy "
                     f"{r['final']['validation_accuracy']:.2f}%, {how}")
    c = result["cohort"]
    print(f"\ncohort of {c['n_members']} members ({c['strategy']}, "
          f"{len(c['members_trained'])} trained, {c['seconds']:.1f}s):\n" + "\n".join(lines)
          + "\n", flush=True)
    where = artifact_root(plain.get("artifact_root")) / "cohorts" / config_hash(plain)
    return cohort_document(result, configs, where)


@ex.main
def main(_config, _run, model, noise_settings, walk, cohort, weight_noise,
         db_collection=None):
    """Train (or reuse) and evaluate one config; with ``walk.enabled``, run the walk instead;
    with ``cohort.enabled``, the cohort of ``cohort.members``.

    ``model``, ``noise_settings``, ``walk``, ``cohort`` and ``weight_noise`` are parameters so
    that sacred (and `seml add`) accept keys beyond the embedded defaults in these sections
    (``model.MLP``, ``noise_settings.layer_wise.GaussStd``, ...); the config hook validates
    them."""
    if walk.get("enabled"):
        return _walk(_config, _run, db_collection)
    if parse_cohort(cohort)["enabled"]:
        return _cohort(_config, _run, db_collection)
    with interrupt_on_sigterm():
        result = run_experiment(to_plain(dict(_config)), run_store=_stored_in(_run),
                                db_collection=db_collection, log_metric=_run.log_scalar,
                                progress=True)
    _summary(result, _run)
    return result


@ex.command
def walk(_config, _run, db_collection=None):
    """Walking sweep in one process: every site x sigma x repeat of the ``walk`` settings on the
    trained model of this config (reused, or trained first)."""
    return _walk(_config, _run, db_collection)


@ex.command
def cohort(_config, _run, db_collection=None):
    """Cohort training in one process: every member of ``cohort.members`` (override dicts of
    this config) trained on the same batches, each bit for bit its own single run."""
    return _cohort(_config, _run, db_collection)


if __name__ == "__main__":
    try:
        ex.run_commandline()
    except KeyboardInterrupt as err:  # sacred has marked the run INTERRUPTED
        log.warning("run interrupted (%s)", err or "Ctrl-C")
        sys.exit(143 if str(err) == "SIGTERM" else 130)
