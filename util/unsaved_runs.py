"""Runs that finished while MongoDB was unreachable: where they are kept, and how to upload them.

Under seml, sacred's MongoDB observer saves a run's final record (status, result with the
per-epoch metrics, ...) when the run ends, retrying for about ten server-selection timeouts
(pymongo's default: 30 s each). train.py gives that observer a failure folder, so that a record
it still cannot save is kept as a pickle instead of being lost:

    <artifact root>/unsaved_runs/<db_collection>/sacred_mongo_fail_<id>_*.pickle

The checkpoints are in the artifact root anyway. Once the database is back:

    python -m util.unsaved_runs list   [FOLDER ...]    # what is kept, and what the DB has now
    python -m util.unsaved_runs upload [FOLDER ...]    # put it into MongoDB

FOLDER defaults to ``<artifact root>/unsaved_runs`` (searched recursively). ``upload`` writes
each record into its collection (``config.db_collection``) with seml's MongoDB config, exactly
as the observer would have (``$set`` of the record, upsert by ``_id``), restores the per-epoch
values of its metrics in the shared ``metrics`` collection, and moves the pickle to
``<folder>/uploaded/``. It leaves a record alone when the database already holds a COMPLETED
one that is at least as new (e.g. the experiment was re-run meanwhile); ``--force`` uploads
anyway. The pickles are sacred's (mode 0600): they hold the whole experiment document, including
the environment seml stored at ``seml add``.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator

from .cluster import REPO_ROOT, artifact_root
from .engine.experiment import HISTORY_KEYS

log = logging.getLogger(__name__)

UNSAVED_DIRNAME = "unsaved_runs"
PATTERN = "sacred_mongo_fail_*.pickle"


def unsaved_dir(config: dict | None = None, db_collection: str | None = None) -> Path:
    """``<artifact root>/unsaved_runs[/<db_collection>]`` for a run's config."""
    root = artifact_root((config or {}).get("artifact_root"))
    folder = root / UNSAVED_DIRNAME
    return folder / db_collection if db_collection else folder


def _mongo_observers(run) -> list:
    from sacred.observers import MongoObserver
    return [obs for obs in getattr(run, "observers", []) if isinstance(obs, MongoObserver)]


# ------------------------------------------------------------------ hooks used by train.py

def keep_unsaved_runs(_run, _config) -> None:
    """Pre-run hook: give seml's MongoDB observer a failure folder (sacred's own mechanism)."""
    observers = _mongo_observers(_run)
    if not observers:
        return
    folder = unsaved_dir(dict(_config), _config.get("db_collection"))
    for obs in observers:
        if obs.failure_dir is None:
            obs.failure_dir = str(folder)


def collect_seml_stats(_run) -> None:
    """Post-run hook: seml's resource statistics (CPU time, peak memory), written to the run's
    document, as seml does by default; but a database that is away no longer fails a run whose
    result exists. It says where the run will be kept instead."""
    try:
        from seml.experiment.experiment import _collect_exp_stats
    except ImportError:  # another seml version: no stats, nothing else changes
        return
    import pymongo.errors

    try:
        _collect_exp_stats(_run)
    except pymongo.errors.PyMongoError as err:
        folders = sorted({str(o.failure_dir) for o in _mongo_observers(_run) if o.failure_dir})
        folder = folders[0] if folders else str(unsaved_dir())
        log.warning("MongoDB is unreachable at the end of this run (%s: %s); the result is "
                    "complete and sacred retries saving it",
                    type(err).__name__, str(err).splitlines()[0][:200])
        # plain lines (not wrapped by the log handler), to copy from the job's output
        print(f"walking-noise: if MongoDB stays unreachable, this run (status, result, per-epoch "
              f"metrics) is kept in {folder}; its checkpoint is in the artifact root.\n"
              f"walking-noise: once the database is back, upload it with: "
              f"cd {REPO_ROOT} && python -m util.unsaved_runs upload {folder}",
              file=sys.stderr, flush=True)


# ------------------------------------------------------------------ reading kept runs

def find_pickles(folders: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Kept run records under ``folders`` (recursive), skipping the ``uploaded/`` folders."""
    seen = set()
    for folder in map(Path, folders):
        if folder.is_file():
            candidates = [folder]
        else:
            candidates = [p for p in sorted(folder.rglob(PATTERN))
                          if "uploaded" not in p.relative_to(folder).parts[:-1]]
        for path in candidates:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def load_entry(path: str | os.PathLike) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f)
    if not isinstance(entry, dict) or "_id" not in entry:
        raise ValueError(f"{path} is not a sacred run record")
    return entry


def collection_of(entry: dict, path: Path) -> str:
    """The collection a record belongs to: ``config.db_collection`` (seml sets it), else the
    name of the folder it was kept in."""
    name = (entry.get("config") or {}).get("db_collection")
    return str(name) if name else path.parent.name


def _stop_time(doc: dict | None) -> datetime.datetime | None:
    value = (doc or {}).get("stop_time")
    return value if isinstance(value, datetime.datetime) else None


def _strip_tz(t: datetime.datetime | None) -> datetime.datetime | None:
    return t.replace(tzinfo=None) if t is not None and t.tzinfo else t


def decide(entry: dict, existing: dict | None, force: bool = False) -> tuple[bool, str]:
    """(upload?, why) for a kept record against what the database holds now."""
    if existing is None:
        return True, "not in the database"
    if force:
        return True, f"--force (database has {existing.get('status')})"
    if existing.get("status") == "COMPLETED":
        kept, db = _strip_tz(_stop_time(entry)), _strip_tz(_stop_time(existing))
        if entry.get("status") != "COMPLETED" or kept is None or (db is not None and db >= kept):
            return False, ("the database already has a COMPLETED record that is at least as "
                           "new (use --force to replace it)")
    return True, f"database has {existing.get('status')}"


# ------------------------------------------------------------------ database side

def _database(mongodb_config: str | None):
    from seml.database import get_mongo_client, get_mongodb_config

    cfg = get_mongodb_config(mongodb_config) if mongodb_config else get_mongodb_config()
    cfg = dict(cfg)
    db_name = cfg.pop("db_name")
    return get_mongo_client(db_name=db_name, **cfg)[db_name]


def _restore_metrics(db, entry: dict) -> int:
    """Per-epoch values of the run's metrics from its result, in sacred's ``metrics``
    collection (addressed by the ids the record lists, so no other run is touched)."""
    from bson import ObjectId

    result = entry.get("result") if isinstance(entry.get("result"), dict) else {}
    info = entry.setdefault("info", {}) or {}
    entry["info"] = info
    listed = {m.get("name"): m.get("id") for m in info.get("metrics", []) if isinstance(m, dict)}
    stop = _stop_time(entry) or datetime.datetime.utcnow()
    restored = 0
    for name in HISTORY_KEYS:  # the per-epoch result lists, also logged as sacred metrics
        section, metric = name.split(".")
        values = (result.get(section) or {}).get(metric) if isinstance(result, dict) else None
        if not isinstance(values, list) or not values:
            continue
        if listed.get(name):
            oid = ObjectId(listed[name])
        elif db.metrics.find_one({"run_id": entry["_id"], "name": name}, {"_id": 1}) is None:
            oid = ObjectId()
        else:  # a document of that run id and name that the record does not list: not ours
            continue
        existing = db.metrics.find_one({"_id": oid}) or {}
        have = list(existing.get("values") or [])
        values = [float(v) for v in values]
        # sacred keys metrics by run id alone, shared by all collections: touch a document only
        # if it is this run's and holds a prefix of its values (the epochs before the outage)
        if existing and (existing.get("run_id") != entry["_id"] or have != values[:len(have)]):
            continue
        if len(have) >= len(values):
            continue
        stamps = list(existing.get("timestamps") or [])[:len(values)]
        stamps += [stop] * (len(values) - len(stamps))
        db.metrics.update_one({"_id": oid}, {"$set": {
            "run_id": entry["_id"], "name": name, "steps": list(range(len(values))),
            "values": [float(v) for v in values], "timestamps": stamps}}, upsert=True)
        if name not in listed:
            info.setdefault("metrics", []).append({"name": name, "id": str(oid)})
        restored += 1
    return restored


def upload(paths: Iterable[Path], mongodb_config: str | None = None, force: bool = False,
           dry_run: bool = False, out=None) -> dict[str, int]:
    """Upload kept records; returns counts of 'uploaded', 'skipped', 'failed'."""
    out = out or sys.stdout
    counts = {"uploaded": 0, "skipped": 0, "failed": 0}
    db = None
    for path in paths:
        try:
            entry = load_entry(path)
        except Exception as err:  # a half-written or foreign file: report, keep going
            print(f"FAILED   {path}: unreadable ({err})", file=out)
            counts["failed"] += 1
            continue
        col = collection_of(entry, path)
        if db is None:
            db = _database(mongodb_config)
        existing = db[col].find_one({"_id": entry["_id"]})
        ok, why = decide(entry, existing, force)
        label = f"{col} _id={entry['_id']} ({entry.get('status')})"
        if not ok:
            print(f"SKIPPED  {label} from {path}: {why}", file=out)
            counts["skipped"] += 1
            continue
        if dry_run:
            print(f"WOULD    upload {label} from {path}: {why}", file=out)
            continue
        try:
            n_metrics = _restore_metrics(db, entry)
            fields = {k: v for k, v in entry.items() if k != "_id"}
            db[col].update_one({"_id": entry["_id"]}, {"$set": fields}, upsert=True)
            stored = db[col].find_one({"_id": entry["_id"]}, {"status": 1})
            if not stored or stored.get("status") != entry.get("status"):
                raise RuntimeError(f"read back status {stored and stored.get('status')!r}")
        except Exception as err:
            print(f"FAILED   {label} from {path}: {type(err).__name__}: {err}", file=out)
            counts["failed"] += 1
            continue
        done = path.parent / "uploaded"
        done.mkdir(exist_ok=True)
        shutil.move(str(path), str(done / path.name))
        print(f"UPLOADED {label} from {path} ({why}; {n_metrics} metric(s) restored); "
              f"moved to {done}/", file=out)
        counts["uploaded"] += 1
    return counts


def describe(paths: Iterable[Path], mongodb_config: str | None = None, out=None) -> int:
    out = out or sys.stdout
    n, db = 0, None
    for path in paths:
        n += 1
        try:
            entry = load_entry(path)
        except Exception as err:
            print(f"{path}: unreadable ({err})", file=out)
            continue
        col = collection_of(entry, path)
        now = "database not asked"
        try:
            db = db if db is not None else _database(mongodb_config)
            existing = db[col].find_one({"_id": entry["_id"]}, {"status": 1, "stop_time": 1})
            now = "not in the database" if existing is None else f"database: {existing['status']}"
        except Exception as err:
            now = f"database unreachable ({type(err).__name__})"
        print(f"{path}: {col} _id={entry['_id']} {entry.get('status')} "
              f"stopped {entry.get('stop_time')}; {now}", file=out)
    if n == 0:
        print("no kept runs found", file=out)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m util.unsaved_runs",
        description="List or upload runs kept locally while MongoDB was unreachable.")
    parser.add_argument("action", choices=("list", "upload"))
    parser.add_argument("folders", nargs="*",
                        help=f"folders or pickle files (default: <artifact root>/{UNSAVED_DIRNAME})")
    parser.add_argument("--mongodb-config", help="seml's mongodb.config to use "
                        "(default: the one `seml` uses)")
    parser.add_argument("--force", action="store_true",
                        help="upload even over a COMPLETED record in the database")
    parser.add_argument("--dry-run", action="store_true", help="say what upload would do")
    args = parser.parse_intermixed_args(argv)
    folders = args.folders or [str(unsaved_dir())]
    paths = list(find_pickles(folders))
    if args.action == "list":
        describe(paths, args.mongodb_config)
        return 0
    if not paths:
        print(f"no kept runs under {', '.join(folders)}")
        return 0
    counts = upload(paths, args.mongodb_config, force=args.force, dry_run=args.dry_run)
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
