"""walking-noise experiment (sacred/seml): validate, train or reuse, evaluate, store.

    python train.py                                   # the embedded default, local run store
    python train.py with general.num_epochs=1 'noise_settings.layer_wise={...}'
    python train.py print_config
    python train.py -F my_runs with ...               # another local run store
    python train.py -m HOST:PORT:DB with ...           # sacred's MongoDB observer

Under seml (``db_collection`` set) seml attaches its MongoDB observer. With no observer given,
runs go to the local run store ``runs/`` (sacred's FileStorageObserver). The work lives in
the engine, :mod:`util.engine`; this file is the sacred wiring.

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

from sacred.observers import FileStorageObserver
from sacred.utils import SacredError
from seml import Experiment

# Import everything a run uses here, not lazily: `seml add` imports this file with the project on
# sys.path only for that import (the config hook runs later), and seml jobs run a copy of just
# the project modules imported by then (seml's code checkpoint).
import data  # noqa: F401  (datasets: validation and runs)
from analysis.plots import plot_walk
from util.cluster import LocationError, ensure_writable_dir
from util.config import DEFAULT_CONFIG, ConfigError, to_plain, validate_config
from util.engine.experiment import check_locations, run_experiment
from util.engine.walk import format_sigma_mid_table, run_walk
from util.run_store import DEFAULT_RUN_STORE
from util.signals import interrupt_on_sigterm
from util.unsaved_runs import collect_seml_stats, keep_unsaved_runs

ROOT = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger("walking-noise")

# seml's resource statistics come from collect_seml_stats, which does not fail a finished run
# when MongoDB is away; keep_unsaved_runs gives seml's MongoDB observer a folder to keep the
# run in if it cannot save it (see util/unsaved_runs.py).
ex = Experiment(name="walking-noise", base_dir=ROOT, collect_stats=False)
ex.add_config(copy.deepcopy(DEFAULT_CONFIG))
ex.pre_run_hook(keep_unsaved_runs)
ex.post_run_hook(collect_seml_stats)


def _clean_config(config) -> dict:
    return to_plain({k: v for k, v in dict(config).items()})


@ex.capture
def _open_sections(model, noise_settings, walk):
    """Never called. These sections take keys beyond the embedded defaults (``model.MLP``,
    ``noise_settings.default.GaussStd``, ``noise_settings.layer_wise.layer_index``, ...), which
    sacred's and `seml add`'s "added new config entry" check rejects unless a captured function
    takes the section; the config hook below validates them instead (unknown keys included)."""


@ex.config_hook
def validate(config, command_name, logger):
    """Reject a bad config before any observer starts: nothing is written for it."""
    if command_name == "print_config":
        return {}
    try:
        vc = validate_config(_clean_config(config), walk=True if command_name == "walk" else None)
        # A run checks where it will write; `seml add` resolves every config through this hook
        # too (with no logger), on the submitting machine, where the locations may differ.
        if command_name in ("main", "walk") and logger is not None:
            check_locations(vc)
    except ConfigError as err:
        raise SacredError(f"invalid config: {err}", print_traceback=False) from None
    except LocationError as err:
        raise SacredError(f"unusable location: {err}", print_traceback=False) from None
    return {}


_NO_RUN_COMMANDS = ("print_config", "print_dependencies", "save_config", "help")


@ex.option_hook
def check_run_store(options):
    """The run store (``-F`` or the default ``runs/``) must be a folder this process can write
    into; checked before sacred's observer creates the run (which would fail half-way)."""
    if options.get("COMMAND") in _NO_RUN_COMMANDS or options.get("--unobserved"):
        return
    stores = [obs.basedir for obs in ex.observers if isinstance(obs, FileStorageObserver)]
    if options.get("--file_storage"):
        stores.append(options["--file_storage"])
    for store in stores:
        try:
            ensure_writable_dir(store, "run store (-F)")
        except LocationError as err:
            raise SacredError(f"unusable location: {err}", print_traceback=False) from None


class _ShortResult(logging.Filter):
    """sacred logs the whole result dict at the end of a run; a walk's has thousands of
    evaluations. Keep that line short: the result itself is stored in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Result: ") \
                and len(record.msg) > 300:
            record.msg, record.args = "Result: stored (%d characters)", (len(record.msg),)
        return True


def _quiet_result_logging() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ShortResult) for f in handler.filters):
            handler.addFilter(_ShortResult())


def _run_store(run) -> str | None:
    for obs in run.observers:
        if isinstance(obs, FileStorageObserver):
            return str(obs.basedir)
    return None


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


@ex.main
def main(_config, _run, db_collection=None):
    """Train (or reuse) and evaluate one config; with ``walk.enabled``, run the walk instead."""
    _quiet_result_logging()
    config = _clean_config(_config)
    if config["walk"].get("enabled"):
        return walk(_config, _run, db_collection)
    with interrupt_on_sigterm():
        result = run_experiment(config, run_store=_run_store(_run) or DEFAULT_RUN_STORE,
                                db_collection=db_collection, log_metric=_run.log_scalar,
                                progress=True)
    _summary(result, _run)
    return result


@ex.command
def walk(_config, _run, db_collection=None):
    """Walking sweep in one process: every site x sigma x repeat of the ``walk`` settings on the
    trained model of this config (reused, or trained first)."""
    _quiet_result_logging()
    with interrupt_on_sigterm():
        result = run_walk(_clean_config(_config), run_store=_run_store(_run) or DEFAULT_RUN_STORE,
                          db_collection=db_collection, log_metric=_run.log_scalar,
                          progress=True)
    result["artifacts"].update(plot_walk(result))
    _summary(result, _run)
    print(f"\nσ_mid per site ({result['walk']['noise_type']}, clean accuracy "
          f"{result['clean_accuracy']:.2f}%, chance {result['chance']:.2f}%):\n"
          f"{format_sigma_mid_table(result['sigma_mid'])}\n", flush=True)
    for key in ("evaluations", "walk_plot_png"):
        if key in result["artifacts"]:
            log.info("%s: %s", key, result["artifacts"][key])
    return result


_OBSERVER_FLAGS = ("-F", "--file_storage", "-m", "--mongo_db", "-u", "--unobserved",
                   "-s", "--sql", "-t", "--tiny_db", "-S", "--s3")


def _wants_default_store(argv: list[str]) -> bool:
    """True unless the command line chose an observer (or seml passes db_collection)."""
    for arg in argv[1:]:
        if arg.startswith("db_collection=") or any(
                arg == f or arg.startswith(f + "=") or (f.startswith("-") and len(f) == 2
                                                          and arg.startswith(f) and len(arg) > 2)
                for f in _OBSERVER_FLAGS):
            return False
    return True


if __name__ == "__main__":
    if _wants_default_store(sys.argv) and (len(sys.argv) < 2 or sys.argv[1] not in
                                           _NO_RUN_COMMANDS):
        ex.observers.append(FileStorageObserver(str(DEFAULT_RUN_STORE)))
    try:
        ex.run_commandline()
    except KeyboardInterrupt as err:  # sacred has marked the run INTERRUPTED
        log.warning("run interrupted (%s)", err or "Ctrl-C")
        sys.exit(143 if str(err) == "SIGTERM" else 130)
