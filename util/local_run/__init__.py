"""Run a seml experiment YAML on this machine: the seml workflow without SLURM and MongoDB.

    python -m util.local_run experiment_configs/MNIST/LeNet_no_noise.yaml
    python -m util.local_run <yaml> --filter model.LeNet.conf_name=LeNet5-BN --max 4
    python -m util.local_run <yaml> --dry-run              # the plan, nothing runs
    python -m util.local_run <yaml> -F my_runs --set data.root=/data --set device=cpu

1. Expands the file like ``seml add`` (seml's own functions; duplicates dropped by config
   hash; ``--set key=value`` is seml add's ``-o``) and validates EVERY experiment with
   train.py's checks before anything runs (see :mod:`util.validate_configs`).
2. Keeps the experiments that match all ``--filter`` keys (a key given twice matches either
   value; numbers match within 1e-9, a list matches one of its elements: the matching of
   :mod:`util.config_paths`, which the analysis's run-store filter uses too) and drops those
   already COMPLETED in the run store (same :func:`util.config.config_hash` of the stored
   config).
3. Runs noise-free-training experiments first (fully noise-free ones before eval-only ones),
   so that eval-only experiments find the trained model and only evaluate; then noisy training.
4. Runs each through train.py's sacred experiment in this process (handed in by the command line,
   :mod:`util.local_run.__main__`: this library never imports train.py), with sacred's
   FileStorageObserver on the run store (``runs/`` by default, the store train.py uses), so
   each run is stored exactly as ``python train.py -F <store> with ...`` would store it.
   In-process because a fresh interpreter per experiment costs seconds of imports, and values
   reach sacred as Python objects: no command line, so no numpy-2 ``np.float64(...)`` strings.
   A failing experiment is recorded (FAILED in the store, reason in the summary) and the
   others go on. SIGTERM (what SLURM sends before it kills a job) stops it like Ctrl-C: the
   current run is marked INTERRUPTED, its last epoch checkpoint stays, a rerun resumes it.

Several runners may share one run store (and artifact root), e.g. one per core or one per job
of an allocation: they split the work. Before an experiment runs, its runner takes a
non-blocking exclusive lock on ``<store>/.claims/<config hash>.lock`` for the run, then looks
again whether another runner has completed it meanwhile. An experiment another live runner
holds is skipped ("running elsewhere" in the summary). The lock goes with the process, so the
experiment of a killed runner is claimable again: run the file again until nothing is left.
Eval-only experiments whose model another runner is training wait for it (the training lock
of :mod:`util.engine.checkpoints`) and then only evaluate.

The run store must be a folder this process can write (or create): a file or a read-only
folder is reported before anything runs.

Exit status: 0 all ran (or nothing to do, or the rest is running elsewhere), 1 some failed,
2 invalid file, experiments or run store (nothing ran), 130 interrupted (Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import warnings

# sacred (imported by seml) imports pkg_resources, which warns on every start
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import argparse
import ast
import contextlib
import copy
import fcntl
import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence, TextIO

from ..cluster import LocationError, ensure_writable_dir
from ..config import ConfigError, config_hash, validate_config
from ..config_paths import MISSING, matches_query, value_at
from ..run_store import DEFAULT_RUN_STORE, iter_runs
from ..signals import interrupt_on_sigterm
from ..validate_configs import Experiment, ExpansionError, Problem, expand_file, group_problems

log = logging.getLogger(__name__)

__all__ = ["Plan", "Outcome", "plan", "run_plan", "parse_assignments", "main"]


@dataclass
class Outcome:
    experiment: Experiment
    # 'done' | 'failed' | 'interrupted' | 'completed elsewhere' | 'running elsewhere'
    status: str
    run_dir: str | None = None
    trained: bool | None = None
    reason: str = ""


@dataclass
class Plan:
    """What a local run of one YAML will do; ``to_run`` in the order it runs."""

    file: Path
    store: Path
    n_expanded: int = 0
    n_unique: int = 0
    n_filtered_out: int = 0
    completed: list[Experiment] = field(default_factory=list)
    to_run: list[Experiment] = field(default_factory=list)
    n_over_max: int = 0
    errors: list[Problem] = field(default_factory=list)
    # per experiment index: (trains with noise, evaluates with noise)
    noise: dict[int, tuple[bool, bool]] = field(default_factory=dict)

    def kind(self, exp: Experiment) -> str:
        noisy_training, eval_noise = self.noise.get(exp.index, (False, False))
        if noisy_training:
            return "noisy training"
        return "eval-only noise" if eval_noise else "noise-free"


def parse_value(text: str) -> Any:
    """A command-line value as seml/sacred read it: a Python literal, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(items: Iterable[str], what: str) -> list[tuple[str, Any]]:
    """``['a.b=1', ...]`` -> ``[('a.b', 1), ...]``; ValueError naming ``what`` if malformed."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} must look like dotted.key=value, got {item!r}")
        out.append((key.strip(), parse_value(value.strip())))
    return out


def _select(experiments: Sequence[Experiment], filters: Sequence[tuple[str, Any]]
            ) -> list[Experiment]:
    wanted: dict[str, list[Any]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)
    for key in wanted:
        if experiments and all(value_at(e.config, key) is MISSING for e in experiments):
            raise ValueError(f"--filter {key}: no experiment of this file has that key")
    # a key given twice matches either value: the query of the run-store reader, $in
    query = {key: {"$in": values} for key, values in wanted.items()}
    return [e for e in experiments if matches_query(e.config, query)]


def _completed_hashes(store: Path) -> set[str]:
    return {config_hash(run.config) for run in iter_runs(store, status="COMPLETED")}


def plan(path: str | Path, *, store: str | Path = DEFAULT_RUN_STORE,
         filters: Sequence[tuple[str, Any]] = (), overwrite: Sequence[tuple[str, Any]] = (),
         max_runs: int | None = None) -> Plan:
    """Expand, validate, filter, skip completed and order; raises ExpansionError/ValueError."""
    p = Plan(Path(path), Path(store))
    expansion = expand_file(path, dict(overwrite) or None)
    p.n_expanded, p.n_unique = expansion.n_expanded, len(expansion.experiments)
    failures = []
    for exp in expansion.experiments:  # everything, before anything runs
        try:
            vc = validate_config(exp.config)
        except ConfigError as err:
            failures.append((exp, str(err)))
            continue
        eval_noise = any(c.active(training=False) for c in vc.site_configs)
        p.noise[exp.index] = (vc.noisy_training, eval_noise)
    p.errors = group_problems(p.file, failures)
    if p.errors:
        return p
    selected = _select(expansion.experiments, filters)
    p.n_filtered_out = p.n_unique - len(selected)
    done = _completed_hashes(p.store)
    p.completed = [e for e in selected if e.config_hash in done]
    pending = [e for e in selected if e.config_hash not in done]
    # noise-free training first (fully noise-free before eval-only), then noisy training;
    # sorted() is stable, so the file's order holds within each group
    pending = sorted(pending, key=lambda e: p.noise[e.index])
    if max_runs is not None and len(pending) > max_runs:
        p.n_over_max = len(pending) - max_runs
        pending = pending[:max_runs]
    p.to_run = pending
    return p


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


@contextlib.contextmanager
def claim(store: Path, h: str) -> Iterator[bool]:
    """Hold ``<store>/.claims/<h>.lock`` for the block if no other process holds it; yields
    whether this process has the claim. Closing the file (or dying) releases it."""
    folder = store / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{h}.lock", "a+") as f:
        yield _try_lock(f)


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a requirement
        pass


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}"[:400]


def run_plan(p: Plan, experiment, *, progress: bool = True) -> tuple[list[Outcome], bool]:
    """Run ``p.to_run`` in order, each in the sacred ``experiment`` (train.py's ``ex``), stored
    in ``p.store``.

    Each experiment runs under its claim (:func:`claim`); one claimed by another runner, or
    completed by one since :func:`plan` looked, is not run (its outcome says so). Returns the
    outcomes and whether Ctrl-C or SIGTERM stopped it (sacred marks that run INTERRUPTED).
    """
    from sacred.observers import FileStorageObserver
    from tqdm import tqdm

    if not p.to_run:
        return [], False
    ex = experiment
    observer = FileStorageObserver(str(p.store))
    ex.observers.append(observer)
    outcomes: list[Outcome] = []
    interrupted = False
    bar = tqdm(p.to_run, desc=p.file.name, unit="exp", disable=not progress, dynamic_ncols=True)
    current = None
    try:
        with interrupt_on_sigterm():
            for exp in bar:
                current, observer.dir = exp, None
                with claim(p.store, exp.config_hash) as mine:
                    if not mine:
                        outcomes.append(Outcome(exp, "running elsewhere"))
                        log.info("running elsewhere (claimed by another runner): %s",
                                 exp.describe())
                    elif exp.config_hash in _completed_hashes(p.store):
                        outcomes.append(Outcome(exp, "completed elsewhere"))
                    else:
                        outcomes.append(_run_one(ex, observer, exp))
                bar.set_postfix(done=sum(o.status == "done" for o in outcomes),
                                failed=sum(o.status == "failed" for o in outcomes))
    except KeyboardInterrupt:
        interrupted = True
        if current is not None and not (outcomes and outcomes[-1].experiment is current):
            outcomes.append(Outcome(current, "interrupted", observer.dir))
    finally:
        bar.close()
        ex.observers.remove(observer)
    return outcomes, interrupted


def _run_one(ex, observer, exp: Experiment) -> Outcome:
    try:
        run = ex.run(config_updates=copy.deepcopy(exp.updates))
    except Exception as err:  # one experiment failing must not stop the others
        log.error("FAILED %s: %s (run %s)", exp.describe(), _reason(err),
                  observer.dir or "not stored")
        return Outcome(exp, "failed", observer.dir, reason=_reason(err))
    finally:
        _free_memory()
    result = run.result if isinstance(run.result, dict) else {}
    return Outcome(exp, "done", observer.dir, result.get("trained"))


def format_plan(p: Plan) -> list[str]:
    lines = [f"{p.file}: {p.n_unique} experiments"
             + (f" ({p.n_expanded - p.n_unique} duplicates dropped)"
                if p.n_expanded != p.n_unique else "")
             + f"; run store {p.store}"]
    if p.n_filtered_out:
        lines.append(f"  {p.n_filtered_out} filtered out")
    if p.completed:
        lines.append(f"  {len(p.completed)} already completed (skipped)")
    if p.n_over_max:
        lines.append(f"  {p.n_over_max} left for later (--max)")
    lines.append(f"  {len(p.to_run)} to run")
    return lines


def format_summary(p: Plan, outcomes: Sequence[Outcome], seconds: float,
                   interrupted: bool = False) -> list[str]:
    done = [o for o in outcomes if o.status == "done"]
    failed = [o for o in outcomes if o.status == "failed"]
    elsewhere = sum(o.status == "running elsewhere" for o in outcomes)
    skipped = len(p.completed) + sum(o.status == "completed elsewhere" for o in outcomes)
    trained = sum(o.trained is True for o in done)
    lines = [f"summary: {len(done)} done ({trained} trained a model, {len(done) - trained} "
             f"reused one), {skipped} skipped (already completed), "
             + (f"{elsewhere} running elsewhere (another runner has them), " if elsewhere
                else "") + f"{len(failed)} failed"
             + (f", {sum(o.status == 'interrupted' for o in outcomes)} interrupted, "
                f"{len(p.to_run) - len(outcomes)} not run" if interrupted else "")
             + f"  [{seconds:.1f}s]"]
    for o in outcomes:
        where = f" -> {o.run_dir}" if o.run_dir else ""
        if o.status == "failed":
            lines.append(f"  FAILED {o.experiment.describe()}: {o.reason}{where}")
        elif o.status == "interrupted":
            lines.append(f"  INTERRUPTED {o.experiment.describe()}{where} (a rerun resumes it)")
    return lines


def _print(lines: Iterable[str], out: TextIO) -> None:
    for line in lines:
        print(line, file=out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, *,
         experiment: Callable[[], Any]) -> int:
    """The command line (``python -m util.local_run``, :mod:`util.local_run.__main__`);
    ``experiment()`` gives the sacred experiment to run in (train.py's ``ex``), asked for only
    when something runs."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m util.local_run",
        description="Run the experiments of a seml YAML on this machine (no SLURM, no "
                    "MongoDB), skipping those already completed in the run store.")
    parser.add_argument("yaml", help="seml experiment file")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="only experiments whose config has this value (dotted key; "
                             "repeatable: different keys must all match, a repeated key "
                             "matches any of its values)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overwrite", help="override a value in every experiment, like "
                                               "`seml add -o` (e.g. data.root=/data)")
    parser.add_argument("--max", type=int, default=None, metavar="N",
                        help="run at most N experiments (in run order)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would run and exit")
    parser.add_argument("-F", "--file-storage", default=str(DEFAULT_RUN_STORE),
                        metavar="RUNS_DIR", help="run store (default: runs/ in the repository)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors from the runs (no per-epoch logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.max is not None and args.max < 0:
        parser.error("--max must be >= 0")

    t0 = time.perf_counter()
    try:
        filters = parse_assignments(args.filter, "--filter")
        overwrite = parse_assignments(args.overwrite, "--set")
        p = plan(args.yaml, store=args.file_storage, filters=filters, overwrite=overwrite,
                 max_runs=args.max)
    except (ExpansionError, ValueError) as err:
        print(f"{args.yaml}: {err}", file=sys.stderr)
        return 2
    if p.errors:
        n = sum(problem.count for problem in p.errors)
        print(f"{args.yaml}: {n} invalid experiment(s); nothing was run:", file=sys.stderr)
        _print((f"  {e}" for e in p.errors), sys.stderr)
        return 2
    if not args.dry_run:
        try:
            ensure_writable_dir(p.store, "run store (-F)")
        except LocationError as err:
            print(f"{err}; nothing was run", file=sys.stderr)
            return 2
    _print(format_plan(p), out)
    if args.dry_run:
        _print((f"  would run [{p.kind(e)}] {e.describe()}" for e in p.to_run), out)
        return 0
    if args.quiet:
        ex = experiment()  # its import sets up seml's logging, which would undo this
        logging.getLogger().setLevel(logging.WARNING)
    else:
        ex = experiment()
    outcomes, interrupted = run_plan(p, ex, progress=not args.no_progress)
    _print(format_summary(p, outcomes, time.perf_counter() - t0, interrupted), out)
    if interrupted:
        return 130
    return 1 if any(o.status == "failed" for o in outcomes) else 0

