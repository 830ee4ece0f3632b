"""Expand seml experiment YAMLs offline and check every experiment with train.py's own checks.

    python -m util.validate_configs                       # every YAML under experiment_configs/
    python -m util.validate_configs experiment_configs/MNIST my_sweep.yaml

No database and no SLURM: each file is read and expanded with seml's own functions
(``read_config``, ``generate_configs``; duplicates dropped by config hash like ``seml add``),
every experiment's values become plain Python types, are merged into train.py's embedded
defaults the way sacred does it (:func:`util.config.merged_with_defaults`) and go through
:func:`util.config.validate_config`, the check train.py's config hook runs, including site
indices against the real model. Each distinct config is validated once.

For each file it prints the number of experiments and every distinct error with the file, the
sub-experiment (the YAML block below the top level, e.g. ``gauss_add``), the key and how many
experiments share it. A file whose check fails unexpectedly (a bug) gets that error in its report;
the other files' reports are unaffected. Exit status 1 when any file has an error.

The local runner (:mod:`util.local_run`) expands files with :func:`expand_file` too.
"""
from __future__ import annotations

import warnings

# sacred (imported by seml) imports pkg_resources, which warns on every start
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import argparse
import copy
import functools
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .cluster import REPO_ROOT
from .config import (ConfigError, config_hash, merged_with_defaults, strip_bookkeeping, to_plain,
                     validate_config)
from .config_paths import MISSING, value_at

log = logging.getLogger(__name__)

CONFIG_DIR = REPO_ROOT / "experiment_configs"
#: Keys of the ``seml:`` block every YAML of this project sets (``seml status`` needs a
#: description; the others say what runs where).
REQUIRED_SEML_KEYS = ("executable", "name", "description", "output_dir", "project_root_dir")

__all__ = ["Experiment", "Expansion", "ExpansionError", "Problem", "FileReport", "expand_file",
           "check", "group_problems", "validate_file", "validate_files", "find_yaml_files",
           "main"]


@dataclass
class Experiment:
    """One experiment of a YAML file, as ``seml add`` would queue it.

    ``updates`` are the YAML's values for it (plain Python, nested): what seml hands to
    train.py. ``config`` is the full config sacred runs (the updates merged into train.py's
    defaults); experiments of one sub-experiment share its unchanged parts, so treat it as
    read-only.
    """

    file: Path
    sub_experiment: str   # dotted path of the YAML block ('' for a file without blocks)
    index: int            # position in the file's expansion, before duplicates are dropped
    updates: dict
    config: dict
    grid_values: tuple    # ((key, value), ...) of the grid/random parameters: names it

    @functools.cached_property
    def config_hash(self) -> str:
        """:func:`util.config.config_hash` of the full config (what the run store compares)."""
        return config_hash(self.config)

    def describe(self) -> str:
        where = self.sub_experiment or "(top level)"
        values = ", ".join(f"{k}={v!r}" for k, v in self.grid_values)
        return f"{where} #{self.index}" + (f" ({values})" if values else "")


@dataclass
class Expansion:
    """A YAML file expanded: its unique experiments in seml's order and its seml blocks."""

    file: Path
    seml: dict
    slurm: list
    experiments: list[Experiment]
    n_expanded: int       # before duplicates were dropped


@dataclass
class Problem:
    """One distinct error in a file; ``count`` experiments share it (0: the file itself)."""

    file: Path
    sub_experiment: str | None
    message: str
    count: int = 0
    example: str = ""

    def __str__(self) -> str:
        where = f"[{self.sub_experiment or '(top level)'}] " if self.sub_experiment is not None \
            else ""
        text = f"{_rel(self.file)}: {where}{self.message}"
        if self.count:
            s = "s" if self.count != 1 else ""
            text += f"  ({self.count} experiment{s}, e.g. {self.example})"
        return text


@dataclass
class FileReport:
    file: Path
    n_experiments: int = 0
    n_expanded: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class ExpansionError(Exception):
    """A YAML file that seml cannot read or expand, or that lacks a required block."""


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- expansion with seml's functions --------------------------------------------------------

def _children(node: Mapping[str, Any]) -> dict[str, Any]:
    from seml.experiment.config import unpack_config
    return unpack_config(dict(node))[1]


def _leaf_paths(tree: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Paths to the sub-experiments seml expands, in seml's (breadth-first) order."""
    leaves, queue = [], [((), tree)]
    while queue:
        path, node = queue.pop(0)
        children = _children(node)
        if not children:
            leaves.append(path)
        queue += [(path + (name,), child) for name, child in children.items()]
    return leaves


def _pruned(tree: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """``tree`` with only the blocks on ``path``: seml expands exactly that sub-experiment."""
    children = _children(tree)
    out = {k: v for k, v in tree.items() if k not in children}
    if path:
        out[path[0]] = _pruned(children[path[0]], path[1:])
    return out


def _varying_keys(tree: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    """Dotted names of the grid and random parameters on ``path``: all that differs between
    the experiments of one sub-experiment (they also name an experiment in messages)."""
    from seml.experiment.config import standardize_config, unpack_config
    keys, node = [], dict(tree)
    for step in (None,) + path:
        if step is not None:
            node = _children(node)[step]
        reserved = standardize_config(unpack_config(node)[0])
        names = list(reserved.get("grid", {})) + [
            k for k in reserved.get("random", {}) if k not in ("samples", "seed")]
        keys += [k for k in names if k not in keys]
    return keys


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """:func:`util.config.to_plain` with fast paths for what seml's expansion yields."""
    kind = type(value)
    if kind is dict:
        return {k if isinstance(k, (int, str)) else str(k): _plain(v) for k, v in value.items()}
    if kind in (str, int, float, bool) or value is None:
        return value
    if kind in (list, tuple):
        return [_plain(v) for v in value]
    return to_plain(value)  # numpy scalars from seml's grids, anything else


def _with_values(template: dict, values: Sequence[tuple[str, Any]]) -> dict:
    """``template`` with the dotted ``values`` set, copying only the dicts on their paths."""
    out = dict(template)
    for key, value in values:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node[leaf] = value if isinstance(value, _SCALARS) else copy.deepcopy(value)
    return out


def _expand_leaf(raw: list[dict], keys: list[str], overwrite: Mapping[str, Any] | None
                 ) -> Iterator[tuple[tuple, dict, dict]]:
    """(varying values, updates, full config) per experiment of one sub-experiment.

    The same as :func:`util.config.to_plain` and :func:`util.config.merged_with_defaults` on
    every experiment, but fast: those run on the first one only, and the others, which differ
    from it only in the values of ``keys``, are copies with those values set. A dict value
    (merged, not set, by sacred) or an overwrite inside a varying key gets the full treatment.
    """
    overlap = any(o == k or o.startswith(k + ".") or k.startswith(o + ".")
                  for o in (overwrite or {}) for k in keys)
    first_updates = first_config = None
    for updates in raw:
        values = tuple((k, _plain(value_at(updates, k))) for k in keys)
        if (first_updates is None or overlap
                or any(isinstance(v, dict) or v is MISSING for _, v in values)):
            updates = _plain(updates)
            config = merged_with_defaults(updates)
            if first_updates is None:
                first_updates, first_config = updates, config
        else:
            updates = _with_values(first_updates, values)
            config = _with_values(first_config, values)
        yield values, updates, config


def _canonical(value: Any) -> Any:
    """Equal for two values exactly when their JSON is equal (seml add's duplicate check;
    :func:`util.config.config_hash` also equates 1 and 1.0)."""
    if value is MISSING:
        return "<missing>"
    if isinstance(value, _SCALARS):
        return type(value), value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _flat_items(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _flat_items(v, key + ".")
        else:
            yield key, v


class _DedupeKeys:
    """Keys equal exactly when two experiments' configs have the same JSON.

    seml add drops an experiment whose resolved config hashes (as JSON) like an earlier one. Hashing
    every full config is slow, so each key is two parts: the config outside the file's varying
    keys (the same for a whole sub-experiment, serialised once) and the values at the varying
    keys. An explicitly given sacred ``seed`` counts too, as in seml's hash.
    """

    def __init__(self, varying: Sequence[str]):
        self.varying = tuple(dict.fromkeys(varying))
        if "seed" not in self.varying:
            self.varying += ("seed",)

    def _varied(self, key: str) -> bool:
        return any(key == v or key.startswith(v + ".") for v in self.varying)

    def outside(self, config: Mapping[str, Any]) -> str:
        body = strip_bookkeeping(config)
        items = sorted((k, v) for k, v in _flat_items(body) if not self._varied(k))
        return json.dumps(items, separators=(",", ":"), default=str)

    def key(self, outside: str, config: Mapping[str, Any]) -> tuple:
        return (outside,) + tuple(_canonical(value_at(config, k)) for k in self.varying)


def _uses_named_configs(tree: Mapping[str, Any]) -> bool:
    from seml.settings import SETTINGS
    from seml.utils import flatten
    prefix = SETTINGS.NAMED_CONFIG.PREFIX
    return any(part.startswith(prefix) for key in flatten(dict(tree)) for part in key.split("."))


def _read(path: Path) -> tuple[dict, list, dict]:
    """seml's read_config plus this project's required blocks; raises ExpansionError."""
    import yaml
    from seml.experiment.config import read_config
    from seml.utils.yaml import YamlUniqueLoader  # seml's loader: no duplicate keys, !remove

    try:
        raw = yaml.load(path.read_text(), Loader=YamlUniqueLoader) or {}
    except (OSError, yaml.YAMLError, SystemExit) as err:  # seml's errors are SystemExits
        raise ExpansionError(f"cannot read YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ExpansionError("not a seml experiment file (top level is not a mapping)")
    seml_block = raw.get("seml") if isinstance(raw.get("seml"), dict) else {}
    missing = [k for k in REQUIRED_SEML_KEYS if not seml_block.get(k)]
    if missing:
        raise ExpansionError(f"seml block lacks {', '.join('seml.' + k for k in missing)} "
                             f"(required: {list(REQUIRED_SEML_KEYS)})")
    if not raw.get("slurm"):
        raise ExpansionError("no `slurm:` entry; add one (e.g. `slurm: [{sbatch_options: {}}]`) "
                             "or seml ignores experiments_per_job from its settings")
    try:
        return read_config(str(path))
    except SystemExit as err:  # seml's ConfigError/ExecutableError are SystemExit subclasses
        raise ExpansionError(str(err)) from None


def expand_file(path: str | os.PathLike, overwrite: Mapping[str, Any] | None = None
                ) -> Expansion:
    """Expand one seml YAML like ``seml add`` does, offline, with duplicates dropped.

    ``overwrite`` is a flat ``{dotted.key: value}`` dict applied to every experiment (seml
    add's ``-o``). Raises :class:`ExpansionError` for a file seml cannot read or expand.
    """
    from seml.experiment.config import generate_configs

    path = Path(path)
    seml_config, slurm, tree = _read(path)
    if _uses_named_configs(tree):
        raise ExpansionError("named configs ($...) are not supported offline")
    leaves = _leaf_paths(tree)
    varying = {leaf: _varying_keys(tree, leaf) for leaf in leaves}
    keys = _DedupeKeys([k for leaf in leaves for k in varying[leaf]])
    unique: dict[tuple, Experiment] = {}
    index = 0
    for leaf in leaves:
        try:
            raw = generate_configs(_pruned(tree, leaf),
                                   overwrite_params=dict(overwrite) if overwrite else None)
        except SystemExit as err:  # seml's ConfigError
            raise ExpansionError(str(err)) from None
        except (KeyError, TypeError, ValueError) as err:
            raise ExpansionError(f"sub-experiment {'.'.join(leaf) or '(top level)'}: seml "
                                 f"cannot expand it: {type(err).__name__}: {err}") from None
        outside = None
        for values, updates, config in _expand_leaf(raw, varying[leaf], overwrite):
            outside = outside or keys.outside(config)
            key = keys.key(outside, config)
            if key not in unique:
                unique[key] = Experiment(path, ".".join(leaf), index, updates, config, values)
            index += 1
    return Expansion(path, dict(seml_config), list(slurm), list(unique.values()), index)


# ---- validation -----------------------------------------------------------------------------

def check(experiment: Experiment) -> str | None:
    """The ConfigError message of an experiment, None when it is valid."""
    try:
        validate_config(experiment.config)
    except ConfigError as err:
        return str(err)
    return None


def group_problems(path: Path, failures: Iterable[tuple[Experiment, str]]) -> list[Problem]:
    """One :class:`Problem` per sub-experiment and message, counting the experiments."""
    grouped: dict[tuple[str, str], Problem] = {}
    for exp, message in failures:
        key = (exp.sub_experiment, message)
        if key not in grouped:
            grouped[key] = Problem(path, exp.sub_experiment, message, 0, exp.describe())
        grouped[key].count += 1
    return list(grouped.values())


def _unexpected(path: Path, err: BaseException) -> Problem:
    """A file-level problem for an exception the checks did not foresee (a bug to report)."""
    return Problem(path, None, f"unexpected error while validating this file: "
                               f"{type(err).__name__}: {err}")


def validate_file(path: str | os.PathLike,
                  overwrite: Mapping[str, Any] | None = None) -> FileReport:
    """Expand and validate one file; every distinct error becomes one :class:`Problem`.

    Never raises for a broken file: an exception the checks did not foresee becomes a
    problem of the file, naming the exception.
    """
    t0 = time.perf_counter()
    path = Path(path)
    report = FileReport(path)
    try:
        expansion = expand_file(path, overwrite)
        report.n_experiments = len(expansion.experiments)
        report.n_expanded = expansion.n_expanded
        if not expansion.experiments:
            report.problems.append(Problem(path, None, "expands to no experiments"))
        failures = ((exp, check(exp)) for exp in expansion.experiments)
        report.problems += group_problems(path, ((e, m) for e, m in failures if m is not None))
    except ExpansionError as err:
        report.problems.append(Problem(path, None, str(err)))
    except Exception as err:  # noqa: BLE001 - one file's bug must not hide the other reports
        log.debug("validating %s", path, exc_info=True)
        report.problems.append(_unexpected(path, err))
    report.seconds = time.perf_counter() - t0
    return report


def find_yaml_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """YAML files named, or found below the folders named, sorted; default experiment_configs/."""
    found: list[Path] = []
    for p in (paths or [CONFIG_DIR]):
        p = Path(p)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml"))
        else:
            found.append(p)
    return found


def _format_report(report: FileReport) -> Iterator[str]:
    dup = report.n_expanded - report.n_experiments
    extra = f" ({report.n_expanded} expanded, {dup} duplicates dropped)" if dup else ""
    status = "OK" if report.ok else f"{len(report.problems)} error(s)"
    yield (f"{_rel(report.file)}: {report.n_experiments} experiments{extra}  {status}  "
           f"[{report.seconds:.1f}s]")
    for problem in report.problems:
        yield f"  ERROR {problem}"


def _worker_init() -> None:
    logging.getLogger().setLevel(logging.WARNING)


def validate_files(files: Sequence[Path], jobs: int = 1) -> list[FileReport]:
    """Reports for ``files`` in order; ``jobs`` > 1 validates files in parallel processes."""
    if jobs <= 1 or len(files) <= 1:
        return [validate_file(f) for f in files]
    import models  # noqa: F401  (import torch & the model registry once, before forking)
    # the big files first, so that no single worker is left with them at the end
    order = sorted(range(len(files)), key=lambda i: -Path(files[i]).stat().st_size
                   if Path(files[i]).is_file() else 0)
    results: dict[int, FileReport] = {}
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init) as pool:
        futures = {i: pool.submit(validate_file, files[i]) for i in order}
        for i, future in futures.items():
            try:
                results[i] = future.result()
            except Exception as err:  # noqa: BLE001 - e.g. a worker that died (BrokenProcessPool)
                results[i] = FileReport(Path(files[i]), problems=[_unexpected(Path(files[i]),
                                                                              err)])
    return [results[i] for i in range(len(files))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m util.validate_configs",
        description="Expand seml YAMLs offline and validate every experiment with train.py's "
                    "checks. Exit status 1 on any error.")
    parser.add_argument("paths", nargs="*", help="YAML files or folders (default: "
                        "experiment_configs/)")
    parser.add_argument("-j", "--jobs", type=int, default=min(8, os.cpu_count() or 1),
                        help="files validated in parallel (default: CPUs, at most 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    files = find_yaml_files(args.paths)
    if not files:
        print("no YAML files found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    reports = validate_files(files, jobs=args.jobs)
    for report in reports:
        for line in _format_report(report):
            print(line)
    bad = [r for r in reports if not r.ok]
    total = sum(r.n_experiments for r in reports)
    print(f"{len(files)} files, {total} experiments, "
          f"{sum(len(r.problems) for r in bad)} error(s) in {len(bad)} file(s) "
          f"[{time.perf_counter() - t0:.1f}s]")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
