"""The local run store: the folder of sacred's FileStorageObserver (``runs/`` by default).

Each run is ``<store>/<id>/`` with ``config.json``, ``run.json`` (status, result, ...) and
``metrics.json``. Reuse of trained models, the local runner and the analysis read it here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .cluster import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_RUN_STORE = REPO_ROOT / "runs"


@dataclass
class StoredRun:
    run_id: str
    path: Path
    status: str
    config: dict
    result: object
    run: dict


def iter_runs(store: str | Path, status: str | None = None) -> Iterator[StoredRun]:
    """Every readable run in ``store`` (optionally only those with ``status``), by id order."""
    store = Path(store)
    if not store.is_dir():
        return
    dirs = [d for d in store.iterdir() if d.is_dir() and (d / "run.json").is_file()]
    dirs.sort(key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0,
                             d.name))
    for d in dirs:
        try:
            run = json.loads((d / "run.json").read_text())
            config = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as err:  # a run being written right now, or a broken one
            log.debug("skipping unreadable run %s: %s", d, err)
            continue
        if status is not None and run.get("status") != status:
            continue
        yield StoredRun(d.name, d, run.get("status", ""), config, run.get("result"), run)
