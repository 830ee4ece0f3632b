"""The local run store: the folder of sacred's FileStorageObserver (``runs/`` by default).

Each run is ``<store>/<id>/`` with ``config.json``, ``run.json`` (status, result, ...) and
``metrics.json``. Reuse of trained models, the local runner and the analysis read it here.

A run whose ``run.json`` or ``config.json`` cannot be read (truncated, not a JSON object,
unreadable) is skipped with a WARNING naming its path and the reason, and a summary count per
store; nothing raises. sacred rewrites ``run.json`` in place (not atomically) on every
heartbeat and writes ``config.json`` just after the first ``run.json``, so a reader may catch
a running run mid-write: a file that fails to parse is read once more after a short pause,
and a RUNNING run whose ``config.json`` does not exist yet is skipped quietly (it is simply
not started yet), not reported as unreadable.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .cluster import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_RUN_STORE = REPO_ROOT / "runs"
#: Pause before the second read of a file that failed to parse (a write in progress).
REREAD_DELAY_S = 0.05


@dataclass
class StoredRun:
    run_id: str
    path: Path
    status: str
    config: dict
    result: object
    run: dict


class _Unreadable(Exception):
    """A run file that is missing, unreadable or not a JSON object; the message says why."""


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _Unreadable(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _Unreadable(f"{path.name} cannot be read: {err}") from None


def _read_object(path: Path) -> dict:
    """The JSON object in ``path``; read once more after a short pause if it does not parse."""
    try:
        value = _load_json(path)
    except ValueError:  # json.JSONDecodeError: truncated, or being written right now
        time.sleep(REREAD_DELAY_S)
        try:
            value = _load_json(path)
        except ValueError as err:
            raise _Unreadable(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise _Unreadable(f"{path.name} holds {type(value).__name__} {str(value)[:40]}, "
                          "not a JSON object")
    return value


def iter_runs(store: str | Path, status: str | None = None) -> Iterator[StoredRun]:
    """Every readable run in ``store`` (optionally only those with ``status``), by id order.

    Unreadable runs are skipped with a warning each (path and reason) and a summary count
    once the store has been read through (see the module docstring)."""
    store = Path(store)
    if not store.is_dir():
        return
    dirs = [d for d in store.iterdir() if d.is_dir() and (d / "run.json").is_file()]
    dirs.sort(key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0,
                             d.name))
    unreadable = 0
    for d in dirs:
        run = None
        try:
            run = _read_object(d / "run.json")
            config = _read_object(d / "config.json")
        except _Unreadable as err:
            if run is not None and run.get("status") == "RUNNING" \
                    and not (d / "config.json").exists():
                log.debug("skipping run %s: RUNNING and its config.json is not written yet", d)
                continue
            unreadable += 1
            log.warning("skipping unreadable run %s: %s", d, err)
            continue
        run_status = run.get("status")
        run_status = run_status if isinstance(run_status, str) else ""
        if status is not None and run_status != status:
            continue
        yield StoredRun(d.name, d, run_status, config, run.get("result"), run)
    if unreadable:
        log.warning("skipped %d of %d runs in %s: unreadable", unreadable, len(dirs), store)
