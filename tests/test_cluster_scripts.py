"""Checks of the one-machine cluster from `scripts/cluster.sh` (single-node SLURM + MongoDB-wire
server + seml's mongodb.config).

The checks that need the running cluster are skipped unless WN_CLUSTER_UP=1, which CI sets after
`bash scripts/cluster.sh start`. The others (script syntax, failing loudly, no mongoeco in the
project's code) always run and touch nothing outside pytest's tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cluster.sh"
CLUSTER_UP = os.environ.get("WN_CLUSTER_UP") == "1"
needs_cluster = pytest.mark.skipif(
    not CLUSTER_UP,
    reason="needs the one-machine cluster: run `bash scripts/cluster.sh start`, then set WN_CLUSTER_UP=1",
)


def run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------ always


def test_script_syntax():
    assert run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_usage_on_bad_command():
    res = run(["bash", str(SCRIPT), "frobnicate"])
    assert res.returncode == 2
    assert "start" in res.stdout and "stop" in res.stdout


def test_fails_loudly_without_python313(tmp_path):
    """No Python >= 3.13 anywhere: `start mongo` must stop with the reason, creating no venv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A PATH with only the tools the script needs, none of them a Python or pyenv.
    for tool in ("bash", "id", "mkdir", "flock", "sed", "cut", "tr", "cat", "sort", "head",
                 "grep", "date", "seq", "sleep", "mktemp", "dirname", "rm", "cp", "mv"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "WN_CLUSTER_DIR": str(tmp_path / "c"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "WN_MONGO_PORT": "1"}
    res = run([str(bin_dir / "bash"), str(SCRIPT), "start", "mongo"], env=env)
    assert res.returncode != 0
    assert "no Python >= 3.13 found" in res.stderr, res.stderr
    assert not (tmp_path / "c" / "mongo" / "venv").exists()
    assert not (tmp_path / "cfg" / "seml" / "mongodb.config").exists()


def test_project_code_does_not_import_mongoeco():
    allowed = {ROOT / "scripts" / "mongo_wire_server.py"}
    pattern = re.compile(r"^\s*(import|from)\s+mongoeco\b", re.M)
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or path in allowed:
            continue
        if pattern.search(path.read_text(errors="replace")):
            offenders.append(str(rel))
    assert not offenders, f"project code imports mongoeco: {offenders}"


# ------------------------------------------------------------------ with the cluster up


def slurm_env() -> dict[str, str]:
    """The environment of a seml job: no SLURM_CONF, so /etc/slurm/slurm.conf must work."""
    env = dict(os.environ)
    env.pop("SLURM_CONF", None)
    return env


@needs_cluster
def test_status_reports_everything_up():
    res = run(["bash", str(SCRIPT), "status"])
    assert res.returncode == 0, res.stdout + res.stderr


@needs_cluster
def test_node_is_idle():
    res = run(["sinfo", "-h", "-N", "-o", "%N %T %c"], env=slurm_env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert len(lines) == 3, res.stdout  # one node
    assert lines[1] in ("idle", "mixed"), res.stdout
    assert int(lines[2]) >= 2, "the node must take several 1-CPU jobs at once"


def wait_for_job(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], env=slurm_env())
        if res.returncode == 0 and not res.stdout.strip():
            return
        time.sleep(0.3)
    run(["scancel", job_id], env=slurm_env())
    pytest.fail(f"job {job_id} not finished after {timeout} s: {res.stdout}")


def job_states(job_id: str) -> list[str]:
    """JobState/ExitCode of each array task (scontrol keeps finished jobs for MinJobAge)."""
    res = run(["scontrol", "-o", "show", "job", job_id], env=slurm_env())
    assert res.returncode == 0, res.stderr
    return re.findall(r"JobState=(\S+) .*?ExitCode=(\S+)", res.stdout)


@needs_cluster
def test_job_array_runs_concurrently(tmp_path):
    """A 3-task array with seml's default requests (1 CPU, 8G each) runs at once and completes."""
    script = (
        'echo "start $(date +%s.%N)"; sleep 3; '
        'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"; echo "end $(date +%s.%N)"'
    )
    res = run(["sbatch", "--parsable", "--array=0-2", "--cpus-per-task=1", "--mem=8G",
               "--time=0-00:05", "--job-name=wn-cluster-test", "-o", str(tmp_path / "out_%a.txt"),
               "--wrap", script], env=slurm_env())
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    wait_for_job(job_id, timeout=40)
    states = job_states(job_id)
    assert len(states) == 3 and all(s == ("COMPLETED", "0:0") for s in states), states
    starts, ends = [], []
    for task in range(3):
        text = (tmp_path / f"out_{task}.txt").read_text()
        assert f"task {task} of {job_id}" in text
        starts.append(float(re.search(r"start (\S+)", text).group(1)))
        ends.append(float(re.search(r"end (\S+)", text).group(1)))
    assert max(starts) < min(ends), f"tasks did not overlap: starts {starts}, ends {ends}"


def seml_mongodb_config() -> tuple[Path, dict]:
    """The config file seml reads, and its contents as seml parses them."""
    from seml.database import get_mongodb_config
    from seml.settings import SETTINGS

    path = Path(SETTINGS.DATABASE.MONGODB_CONFIG_PATH)
    assert path.exists(), f"seml's MongoDB config {path} is missing: run scripts/cluster.sh start"
    return path, get_mongodb_config(path)


@needs_cluster
def test_crud_through_seml_config():
    from seml.database import get_collection

    path, cfg = seml_mongodb_config()
    assert cfg["host"] in ("127.0.0.1", "localhost"), (path, cfg["host"])
    name = f"wn_cluster_test_{uuid.uuid4().hex[:8]}"
    col = get_collection(name)  # seml's own client, built from that file
    try:
        col.database.client.admin.command("ping")
        ids = col.insert_many([{"i": i, "status": "QUEUED"} for i in range(5)]).inserted_ids
        assert len(ids) == 5
        col.update_one({"i": 2}, {"$set": {"status": "COMPLETED", "result": {"acc": [1.0, 2.0]}}})
        col.delete_one({"i": 4})
        assert col.count_documents({}) == 4
        assert col.find_one({"i": 2})["result"] == {"acc": [1.0, 2.0]}
        assert [d["i"] for d in col.find({"status": "QUEUED"}).sort("i", 1)] == [0, 1, 3]
    finally:
        col.drop()
    assert name not in col.database.list_collection_names()


@needs_cluster
def test_batch_job_reaches_database(tmp_path):
    """What a seml job does: a batch job's Python reads seml's config and writes to the DB."""
    from seml.database import get_collection

    name = f"wn_cluster_job_{uuid.uuid4().hex[:8]}"
    code = (
        "import os; from seml.database import get_collection; "
        f"get_collection({name!r}).insert_one({{'job': os.environ['SLURM_JOB_ID']}})"
    )
    (tmp_path / "job.py").write_text(code)
    res = run(["sbatch", "--parsable", "--cpus-per-task=1", "--mem=2G", "--time=0-00:05",
               "-o", str(tmp_path / "job.out"), "--wrap", f"{sys.executable} {tmp_path / 'job.py'}"],
              env=slurm_env())
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    wait_for_job(job_id, timeout=40)
    col = get_collection(name)
    try:
        out = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
        assert job_states(job_id) == [("COMPLETED", "0:0")], out
        assert [d["job"] for d in col.find()] == [job_id]
    finally:
        col.drop()
