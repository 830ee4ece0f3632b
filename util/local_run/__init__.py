"""Run a seml experiment YAML on this machine: the seml workflow without SLURM and MongoDB,
one experiment at a time or, with ``--cohorts``, compatible experiments trained together.

    python -m util.local_run experiment_configs/MNIST/LeNet_no_noise.yaml
    python -m util.local_run <yaml> --filter model.LeNet.conf_name=LeNet5-BN --max 4
    python -m util.local_run <yaml> --dry-run              # the plan, nothing runs
    python -m util.local_run <yaml> -F my_runs --set data.root=/data --set device=cpu
    python -m util.local_run <yaml> --cohorts --cohort-size 32   # train cohorts (issue 16)

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
5. With ``--cohorts``, the experiments to run (after 2, 3 and ``--max``) that may share their
   training batches form cohorts of at most ``--cohort-size`` (grouping and the choice for
   eval-only experiments: :mod:`util.local_run.cohorts`), each trained in one
   :func:`util.engine.cohort.run_cohort`. Then every member runs through the sacred
   experiment as in 4, where the engine hands it its cohort result
   (:mod:`util.engine.precomputed`): sacred stores its config, status, result (``trained``,
   the per-epoch history) and metrics exactly as for a run of its own, so skipping completed
   runs, reuse and the analysis see no difference. A cohort that raises falls back to running
   its members one by one (each resumes from the cohort's epoch checkpoints; a member that
   fails alone is FAILED with its reason). Ctrl-C or SIGTERM during a cohort leaves its
   unrecorded members without a run (not COMPLETED); a rerun resumes their training from
   their epoch checkpoints.
Several runners may share one run store (and artifact root), e.g. one per core or one per job
of an allocation: they split the work. Before an experiment runs, its runner takes a
non-blocking exclusive lock on ``<store>/.claims/<config hash>.lock`` for the run, then looks
again whether another runner has completed it meanwhile. An experiment another live runner
holds is skipped ("running elsewhere" in the summary). A cohort's runner claims all its
members before training (those claimed elsewhere are left out of it) and releases each claim
once that member is recorded. The lock goes with the process, so the
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
import copy
import gc
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence, TextIO

from ..cluster import LocationError, ensure_writable_dir
from ..config import ConfigError, config_hash, validate_config
from ..config_paths import MISSING, matches_query, value_at
from ..engine.precomputed import handing_over
from ..run_store import DEFAULT_RUN_STORE, iter_runs
from ..signals import interrupt_on_sigterm
from ..validate_configs import Experiment, ExpansionError, Problem, expand_file, group_problems
from .claims import claim, try_claim
from .cohorts import DEFAULT_COHORT_SIZE, form_cohorts, sharing_key, train_cohort

log = logging.getLogger(__name__)

__all__ = ["Plan", "Outcome", "plan", "run_plan", "parse_assignments", "main", "claim",
           "DEFAULT_COHORT_SIZE"]


@dataclass
class Outcome:
    experiment: Experiment
    # 'done' | 'failed' | 'interrupted' | 'completed elsewhere' | 'running elsewhere'
    status: str
    run_dir: str | None = None
    trained: bool | None = None
    reason: str = ""
    #: its result came from a cohort (--cohorts), not from a run of its own
    in_cohort: bool = False


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
    # per experiment index: what its cohort partners must share (None: it runs alone)
    sharing: dict[int, tuple | None] = field(default_factory=dict)
    # with --cohorts: ``to_run`` as cohorts, in the order they run (None: one by one)
    cohorts: list[list[Experiment]] | None = None

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
         max_runs: int | None = None, cohort_size: int | None = None) -> Plan:
    """Expand, validate, filter, skip completed and order; with ``cohort_size``, group what
    is left into cohorts of at most that many (:mod:`util.local_run.cohorts`). Raises
    ExpansionError/ValueError."""
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
        p.sharing[exp.index] = sharing_key(vc)
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
    if cohort_size is not None:
        p.cohorts = form_cohorts(pending, p.sharing, cohort_size)
    return p


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
    in ``p.store``; with ``p.cohorts``, cohort by cohort (:func:`_run_cohort`).

    Each experiment runs under its claim (:func:`claim`); one claimed by another runner, or
    completed by one since :func:`plan` looked, is not run (its outcome says so). Returns the
    outcomes and whether Ctrl-C or SIGTERM stopped it (sacred marks a run being recorded
    INTERRUPTED; cohort members not recorded yet have no run).
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
    bar = tqdm(total=len(p.to_run), desc=p.file.name, unit="exp", disable=not progress,
               dynamic_ncols=True)
    groups = p.cohorts if p.cohorts is not None else [[exp] for exp in p.to_run]
    group: list[Experiment] = []
    try:
        with interrupt_on_sigterm():
            for group in groups:
                n, observer.dir = len(outcomes), None  # set while a run is being recorded
                if len(group) > 1:
                    _run_cohort(ex, observer, p, group, outcomes, progress=progress)
                else:
                    _claim_and_run(ex, observer, p, group[0], outcomes)
                bar.update(len(outcomes) - n)
                bar.set_postfix(done=sum(o.status == "done" for o in outcomes),
                                failed=sum(o.status == "failed" for o in outcomes))
    except KeyboardInterrupt:
        interrupted = True
        seen = {id(o.experiment) for o in outcomes}
        where = observer.dir  # the run being recorded: the first without an outcome
        for exp in group:
            if id(exp) not in seen:
                outcomes.append(Outcome(exp, "interrupted", where))
                where = None
    finally:
        bar.close()
        ex.observers.remove(observer)
    return outcomes, interrupted


def _claim_and_run(ex, observer, p: Plan, exp: Experiment, outcomes: list[Outcome]) -> None:
    with claim(p.store, exp.config_hash) as mine:
        if not mine:
            outcomes.append(Outcome(exp, "running elsewhere"))
            log.info("running elsewhere (claimed by another runner): %s", exp.describe())
        elif exp.config_hash in _completed_hashes(p.store):
            outcomes.append(Outcome(exp, "completed elsewhere"))
        else:
            outcomes.append(_run_one(ex, observer, exp))


def _run_cohort(ex, observer, p: Plan, group: Sequence[Experiment], outcomes: list[Outcome], *,
                progress: bool) -> None:
    """Claim every experiment of ``group``, train those claimed (and not completed meanwhile)
    as one cohort, then record each as its own run (its result handed over, see
    :mod:`util.engine.precomputed`), releasing its claim once recorded.

    If the cohort raises, its members run one by one instead (each resuming from the epoch
    checkpoints the cohort wrote): a member that fails on its own is recorded FAILED with its
    own reason, and a cohort-only problem (e.g. memory for many models at once) costs no run.
    """
    held: dict[str, IO] = {}
    try:
        for exp in group:
            f = try_claim(p.store, exp.config_hash)
            if f is None:
                outcomes.append(Outcome(exp, "running elsewhere"))
                log.info("running elsewhere (claimed by another runner): %s", exp.describe())
            else:
                held[exp.config_hash] = f
        done = _completed_hashes(p.store) if held else set()
        members = []
        for exp in group:
            if exp.config_hash not in held:
                continue
            if exp.config_hash in done:
                held.pop(exp.config_hash).close()
                outcomes.append(Outcome(exp, "completed elsewhere"))
            else:
                members.append(exp)
        ready = {}
        if len(members) > 1:
            log.info("training a cohort of %d, from %s to %s", len(members),
                     members[0].describe(), members[-1].describe())
            try:
                ready = train_cohort(members, p.store, progress=progress)
            except Exception as err:  # each member then fails (or not) on its own
                log.warning("the cohort of %d failed (%s); running its members one by one",
                            len(members), _reason(err))
            finally:
                _free_memory()
        for exp in members:
            mine = {exp.config_hash: ready[exp.config_hash]} if exp.config_hash in ready else {}
            with handing_over(mine) as pending:
                outcomes.append(_run_one(ex, observer, exp))
            observer.dir = None
            outcomes[-1].in_cohort = bool(mine) and not pending
            if pending and outcomes[-1].status == "done":
                log.warning("%s: the run did not take its cohort result; it computed its own",
                            exp.describe())
            held.pop(exp.config_hash).close()
    finally:
        for f in held.values():
            f.close()


def _run_one(ex, observer, exp: Experiment) -> Outcome:
    observer.dir = None
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
    if p.cohorts is not None:
        sizes = Counter(len(c) for c in p.cohorts)
        together = ", ".join(f"{n}" + (f" x{k}" if k > 1 else "")
                             for n, k in sorted(sizes.items(), reverse=True) if n > 1)
        lines.append(f"  in {len(p.cohorts)} cohort(s): {len(p.cohorts) - sizes[1]} trained "
                     f"together (sizes {together or '-'}), {sizes[1]} alone")
    return lines


def format_would_run(p: Plan) -> list[str]:
    """The dry run's list: each experiment in run order (with its cohort, with --cohorts)."""
    if p.cohorts is None:
        return [f"  would run [{p.kind(e)}] {e.describe()}" for e in p.to_run]
    lines = []
    for i, cohort in enumerate(p.cohorts, 1):
        lines.append(f"  cohort {i}/{len(p.cohorts)}: {len(cohort)} experiment(s)"
                     + (" (alone)" if len(cohort) == 1 else ""))
        lines += [f"    would run [{p.kind(e)}] {e.describe()}" for e in cohort]
    return lines


def format_summary(p: Plan, outcomes: Sequence[Outcome], seconds: float,
                   interrupted: bool = False) -> list[str]:
    done = [o for o in outcomes if o.status == "done"]
    failed = [o for o in outcomes if o.status == "failed"]
    elsewhere = sum(o.status == "running elsewhere" for o in outcomes)
    skipped = len(p.completed) + sum(o.status == "completed elsewhere" for o in outcomes)
    trained = sum(o.trained is True for o in done)
    together = (f"; {sum(o.in_cohort for o in done)} of them trained or evaluated in "
                f"cohorts" if p.cohorts is not None else "")
    lines = [f"summary: {len(done)} done ({trained} trained a model, {len(done) - trained} "
             f"reused one{together}), {skipped} skipped (already completed), "
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
    parser.add_argument("--cohorts", action="store_true",
                        help="train compatible experiments together as cohorts (same data, "
                             "model, optimizer, lr, epochs, batch size, training seed, device); "
                             "each is still stored as its own run")
    parser.add_argument("--cohort-size", type=int, default=None, metavar="N",
                        help=f"with --cohorts: at most N experiments per cohort (default "
                             f"{DEFAULT_COHORT_SIZE}; a killed cohort resumes from its epoch "
                             "checkpoints)")
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
    if args.cohort_size is not None and not args.cohorts:
        parser.error("--cohort-size needs --cohorts")
    if args.cohort_size is not None and args.cohort_size < 1:
        parser.error(f"--cohort-size must be >= 1, got {args.cohort_size}")
    cohort_size = (args.cohort_size or DEFAULT_COHORT_SIZE) if args.cohorts else None

    t0 = time.perf_counter()
    try:
        filters = parse_assignments(args.filter, "--filter")
        overwrite = parse_assignments(args.overwrite, "--set")
        p = plan(args.yaml, store=args.file_storage, filters=filters, overwrite=overwrite,
                 max_runs=args.max, cohort_size=cohort_size)
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
        _print(format_would_run(p), out)
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

