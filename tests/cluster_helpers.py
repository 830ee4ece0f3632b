"""Helpers of the cluster-path integration tests (tests/test_cluster_path.py): seml's command
line in a subprocess with the environment a user would have, tiny YAMLs, MongoDB access with
seml's own config file, bounded waits.

Everything here talks to the one-machine cluster of `scripts/cluster.sh` (or any SLURM + MongoDB
that seml is configured for); nothing imports mongoeco.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "seml").exists() else Path(sys.executable).parent
SEML = str(BIN / "seml")
PYTHON = str(BIN / "python")
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"

TERMINAL = ("COMPLETED", "FAILED", "KILLED", "INTERRUPTED")


def unique_collection(tag: str) -> str:
    return f"wn_it_{tag}_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ environment and seml's CLI

def seml_config_path(env: dict | None = None) -> Path:
    """The mongodb.config seml reads in ``env`` (XDG_CONFIG_HOME, else ~/.config)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "seml" / "mongodb.config"


def job_env(**extra: str) -> dict[str, str]:
    """The environment of `seml add`/`start`: seml stores it and the jobs run with it, so the
    venv's python must come first on PATH. No SLURM_CONF: /etc/slurm/slurm.conf must do."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # seml prints with rich: no wrapped lines in what we parse
    for key in ("SLURM_CONF", "WALKING_NOISE_ARTIFACT_ROOT", "WALKING_NOISE_CLUSTER_MAP",
                "WALKING_NOISE_DATA_ROOT"):
        env.pop(key, None)
    env.update(extra)
    return env


def private_seml_config(folder: Path, *, uri_options: dict | None = None,
                        password: str | None = None, extra_fields: dict | None = None) -> str:
    """A private XDG_CONFIG_HOME whose seml/mongodb.config points at the same server as the
    current one, with changes; returns the folder to use as XDG_CONFIG_HOME. seml's settings.py
    comes along if there is one."""
    src = seml_config_path()
    cfg = yaml.safe_load(src.read_text())
    if uri_options:
        query = "&".join(f"{k}={v}" for k, v in uri_options.items())
        cfg["host"] = f"mongodb://{cfg['host']}:{cfg['port']}/?{query}"
    if password is not None:
        cfg["password"] = password
    cfg.update(extra_fields or {})
    dst = Path(folder) / "seml"
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "mongodb.config").write_text(yaml.safe_dump(cfg))
    (dst / "mongodb.config").chmod(0o600)
    if (src.parent / "settings.py").exists():
        shutil.copy(src.parent / "settings.py", dst / "settings.py")
    return str(folder)


def run(cmd: list[str], env: dict, timeout: float = 120, cwd: str | Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
                    f"\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def seml(collection: str, *args: str, env: dict, timeout: float = 120, check: bool = True,
         cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    return run([SEML, collection, *args], env=env, timeout=timeout, cwd=cwd, check=check)


# ------------------------------------------------------------------ data and YAMLs

def tiny_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """MNIST in its raw IDX format under ``root/MNIST/raw``; returns ``root``."""
    from data_fixtures import write_idx_dataset
    write_idx_dataset(Path(root) / "MNIST" / "raw", n_train, n_test, seed=seed)
    return Path(root)


def base_fixed(data_root: Path, *, epochs: int, batch_size: int = 64,
               model: str = "MLP", conf: str = "RL_TFC_8") -> dict[str, Any]:
    return {
        "general.num_epochs": epochs,
        "general.experiment_name": "cluster_path_test",
        "data.dataset": "MNIST",
        "data.root": str(data_root),
        "data.download": False,
        "data.batch_size": batch_size,
        "model.model_class": model,
        f"model.{model}.conf_name": conf,
        f"model.{model}.repetition_config.global": 1,
        "noise_settings.default.noise_type": "NoNoise",
        "device": "cpu",
    }


def write_yaml(path: Path, *, name: str, output_dir: Path, fixed: dict, grid: dict | None = None,
               description: str = "walking-noise cluster-path test",
               slurm: dict | None = None) -> Path:
    """A seml YAML: every required seml key, one slurm entry (1 CPU, no GPU, short time)."""
    doc: dict[str, Any] = {
        "seml": {"executable": "train.py", "name": name, "description": description,
                 "output_dir": str(output_dir), "project_root_dir": str(ROOT)},
        "slurm": [slurm or {"experiments_per_job": 1,
                            "sbatch_options": {"mem": "2G", "cpus-per-task": 1,
                                               "time": "0-00:15"}}],
        "fixed": fixed,
    }
    if grid:
        doc["grid"] = grid
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(path)


def config_of(fixed: dict) -> dict:
    """The full experiment config (embedded defaults + the YAML's dotted keys), as plain dicts."""
    from util.config import merged_with_defaults
    nested: dict = {}
    for key, value in fixed.items():
        d = nested
        *parents, leaf = key.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return merged_with_defaults(nested)


def checkpoint_dir(artifact_root: Path, fixed: dict) -> Path:
    from util.config import training_hash, validate_config
    return Path(artifact_root) / "checkpoints" / training_hash(validate_config(config_of(fixed)))


# ------------------------------------------------------------------ database

def mongo_db(config_path: Path | None = None):
    """pymongo Database from a seml mongodb.config (default: the one seml uses now)."""
    from seml.database import get_mongo_client, get_mongodb_config
    cfg = dict(get_mongodb_config(config_path or seml_config_path()))
    db_name = cfg.pop("db_name")
    return get_mongo_client(db_name=db_name, serverSelectionTimeoutMS=10000, **cfg)[db_name]


def statuses(col) -> dict[int, str]:
    return {d["_id"]: d.get("status") for d in col.find({}, {"status": 1})}


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.3,
               on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")
        time.sleep(interval)


def output_tails(output_dir: Path, n: int = 40) -> str:
    parts = []
    for f in sorted(Path(output_dir).glob("*.out")):
        lines = f.read_text(errors="replace").splitlines()
        parts.append(f"==> {f.name} <==\n" + "\n".join(lines[-n:]))
    return "\n".join(parts) or f"(no output files in {output_dir})"


def wait_for_terminal(col, n: int, timeout: float, output_dir: Path) -> list[dict]:
    """All ``n`` experiments of ``col`` in a terminal state; their documents."""
    def done():
        st = statuses(col)
        return len(st) == n and all(s in TERMINAL for s in st.values())
    wait_until(done, timeout, f"{n} experiments of {col.name} to finish",
               on_timeout=lambda: f"statuses: {statuses(col)}\n{output_tails(output_dir)}")
    return list(col.find().sort("_id", 1))


def add_start_wait(col_name: str, yaml_path: Path, *, env: dict, cwd: Path, output_dir: Path,
                   timeout: float) -> list[dict]:
    """`seml add` + `seml start` one YAML, wait until the whole collection is terminal; the
    documents of the experiments this YAML added."""
    col = mongo_db()[col_name]
    before = {d["_id"] for d in col.find({}, {"_id": 1})}
    seml(col_name, "add", str(yaml_path), env=env, cwd=cwd)
    added = col.count_documents({}) - len(before)
    seml(col_name, "start", env=env, cwd=cwd)
    docs = wait_for_terminal(col, len(before) + added, timeout, output_dir)
    return [d for d in docs if d["_id"] not in before]


def slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SLURM_CONF", None)
    return env


def squeue_tasks(job_id: int | str, states: str = "PD,R,CG") -> list[str]:
    """'<job>_<task> <state>' lines of an array job still in the queue."""
    proc = subprocess.run(["squeue", "-h", "-r", "-j", str(job_id), "-t", states, "-o", "%i %T"],
                          env=slurm_env(), capture_output=True, text=True, timeout=30)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def wait_job_gone(job_id: int | str, timeout: float) -> None:
    wait_until(lambda: not squeue_tasks(job_id), timeout, f"SLURM job {job_id} to leave the queue",
               on_timeout=lambda: "\n".join(squeue_tasks(job_id)))


def cleanup_collection(collection: str, env: dict) -> None:
    """`seml <col> delete` of every experiment in any state (it cancels their SLURM jobs and
    deletes their uploaded sources), then drop the collection."""
    try:
        db = mongo_db()
        db.client.admin.command("ping")
    except Exception:  # the server being away is reported by the test itself
        return
    from bson import ObjectId
    metric_ids = [ObjectId(m["id"]) for d in db[collection].find({}, {"info.metrics": 1})
                  for m in ((d.get("info") or {}).get("metrics") or []) if m.get("id")]
    seml(collection, "delete", "-y", "-s", "", env=env, check=False, timeout=60)
    db.drop_collection(collection)
    if metric_ids:  # sacred's metrics of these runs (by their exact ids: shared collection)
        db.metrics.delete_many({"_id": {"$in": metric_ids}})


def find_secret(secret: str, files: Iterable[Path]) -> list[str]:
    needle = secret.encode()
    return [str(f) for f in files if f.is_file() and needle in f.read_bytes()]


def json_text(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
