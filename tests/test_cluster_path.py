"""The cluster path end to end: `seml <col> add` + `seml <col> start` on a real SLURM (sbatch job
arrays, not `start --local`) into MongoDB, with train.py doing the work.

Needs the one-machine cluster (`bash scripts/cluster.sh start`; CI's `.ci/run` starts it and sets
WN_CLUSTER_UP=1) or any SLURM + MongoDB seml is configured for. Every test uses its own
collection(s) and tmp folders and deletes its collection afterwards.

  a  add + start a tiny YAML: COMPLETED, per-epoch lists from seml.get_results
  b  the checkpoint: under the configured artifact root, verified, its path in the result
  c  an eval-only experiment in the same collection reuses it through the database; a walk
     (`walk.enabled: true`) does too and stores every evaluation, which the analysis expands
  d  a config that fails at run time ends FAILED; `print-fail-trace` shows the traceback
  e  scancel mid-training (SIGTERM: the run ends INTERRUPTED), reset, start: resumes, same metrics as uninterrupted
  f  a dummy secret in seml's MongoDB config and in the environment at `add`: in no result,
     artifact or log the project writes (seml itself stores the environment: documented)
  g  ten experiments of one job array at once: ten distinct results, each exactly once
  h  MongoDB goes away mid-run: the run is kept locally, said where, uploaded once it is back
  (plus: with no artifact root configured, checkpoints outlive seml's temporary source copy)

h stops and restarts the database server with `scripts/cluster.sh`, in whatever storage mode
the cluster runs (CI: memory, which forgets everything on stop); it runs last.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import cluster_helpers as H

CLUSTER_UP = os.environ.get("WN_CLUSTER_UP") == "1"
pytestmark = [
    pytest.mark.skipif(not CLUSTER_UP, reason=(
        "needs SLURM + MongoDB: run `bash scripts/cluster.sh start`, then set WN_CLUSTER_UP=1 "
        "(CI's .ci/run does both)")),
    pytest.mark.timeout(300),
]

# MNIST's validation split is its test set: no separate test lists in these results
HISTORY = [("training", "loss"), ("training", "accuracy"), ("validation", "loss"),
           ("validation", "accuracy")]
JOB_WAIT = 150  # s: the longest any set of jobs here may take to finish


@pytest.fixture(scope="module", autouse=True)
def cluster_up():
    """SLURM answers and has a usable node; seml's MongoDB answers ping."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=H.slurm_env(), capture_output=True,
                          text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not set(states) & {"idle", "mixed", "allocated", "completing"}:
        pytest.fail(f"WN_CLUSTER_UP=1 but SLURM is not usable: sinfo says {proc.stdout!r} "
                    f"{proc.stderr!r} (bash scripts/cluster.sh start)")
    try:
        H.mongo_db().client.admin.command("ping")
    except Exception as err:
        pytest.fail(f"WN_CLUSTER_UP=1 but seml's MongoDB ({H.seml_config_path()}) does not "
                    f"answer: {err}")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return H.tiny_mnist(tmp_path_factory.mktemp("data"), n_train=256, n_test=64)


def assert_history(result: dict, epochs: int) -> None:
    for section, metric in HISTORY:
        values = result[section][metric]
        assert isinstance(values, list) and len(values) == epochs, (section, metric, values)
        for v in values:
            assert isinstance(v, float) and v == v  # no NaN
            if metric == "accuracy":
                assert 0.0 <= v <= 100.0


# ------------------------------------------------------------------ a, b, c: one collection

class Trained:
    """The collection of tests a-c after its two training experiments finished."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data):
    t = Trained()
    t.tmp = tmp_path_factory.mktemp("abc")
    t.col_name = H.unique_collection("abc")
    t.art = t.tmp / "artifacts"
    # the artifact root the way a cluster user sets it: an environment variable at `seml add`
    t.env = H.job_env(WALKING_NOISE_ARTIFACT_ROOT=str(t.art))
    t.out = t.tmp / "logs"
    t.fixed = H.base_fixed(small_data, epochs=2)
    yaml_path = H.write_yaml(t.tmp / "tiny.yaml", name=t.col_name, output_dir=t.out,
                             fixed=t.fixed, grid={"general.repeat_number": {
                                 "type": "choice", "options": [0, 1]}})
    t.col = H.mongo_db()[t.col_name]
    try:
        H.seml(t.col_name, "add", str(yaml_path), env=t.env, cwd=t.tmp)
        assert sorted(H.statuses(t.col).values()) == ["STAGED", "STAGED"]
        t0 = time.monotonic()
        t.start_out = H.seml(t.col_name, "start", env=t.env, cwd=t.tmp).stdout
        t.docs = H.wait_for_terminal(t.col, 2, JOB_WAIT, t.out)
        t.seconds_to_completed = time.monotonic() - t0
        print(f"\n[a] seml start -> 2 experiments COMPLETED: {t.seconds_to_completed:.1f} s")
        yield t
    finally:
        H.cleanup_collection(t.col_name, t.env)


def test_a_add_and_start_run_to_completed_with_per_epoch_results(trained):
    assert [d["status"] for d in trained.docs] == ["COMPLETED", "COMPLETED"], \
        H.output_tails(trained.out)
    assert re.search(r"Started 2 experiments in 1 Slurm job array", trained.start_out), \
        trained.start_out
    # every experiment ran as a SLURM array task of one array
    arrays = {d["execution"]["array_id"] for d in trained.docs}
    assert len(arrays) == 1 and {d["execution"]["task_id"] for d in trained.docs} == {0, 1}
    assert all(d["execution"].get("cluster") != "local" for d in trained.docs)

    import seml
    results = seml.get_results(trained.col_name, fields=["config", "result"], progress=False)
    assert len(results) == 2
    assert sorted(r["config"]["general"]["repeat_number"] for r in results) == [0, 1]
    for r in results:
        res = r["result"]
        assert_history(res, epochs=2)
        assert "test" not in res  # MNIST: validation is the test set
        assert res["trained"] is True and res["checkpoint_source"] == "trained"
        assert res["epochs_run"] == 2 and res["resumed_from_epoch"] == 0
        assert res["final"]["validation_accuracy"] == res["validation"]["accuracy"][-1]
        assert res["device"] == "cpu"
    assert len({r["result"]["training_hash"] for r in results}) == 2


def test_b_checkpoint_is_a_verified_artifact_under_the_configured_root(trained):
    from util.artifacts import load_torch, verify

    for doc in trained.docs:
        res = doc["result"]
        ckpt = Path(res["artifacts"]["checkpoint"])
        assert res["checkpoint_used"] == str(ckpt)
        assert trained.art.resolve() in ckpt.parents, (ckpt, trained.art)
        assert ckpt == trained.art.resolve() / "checkpoints" / res["training_hash"] / "final.pt"
        assert verify(ckpt), f"{ckpt} missing or fails its checksum after the job ended"
        state = load_torch(ckpt)
        assert state["epoch"] == 2 and state["training_hash"] == res["training_hash"]
        assert state["history"]["validation.accuracy"] == res["validation"]["accuracy"]


def test_c_eval_only_experiment_reuses_the_checkpoint_through_the_database(trained):
    fixed = dict(trained.fixed)
    fixed.update({"general.repeat_number": 0,
                  "noise_settings.default.noise_type": "GaussAdd",
                  "noise_settings.default.GaussStd": 0.5,
                  "noise_settings.default.enable_in_training": False,
                  "noise_settings.default.enable_in_eval": True})
    yaml_path = H.write_yaml(trained.tmp / "eval_only.yaml", name=trained.col_name,
                             output_dir=trained.out, fixed=fixed,
                             description="eval-only reuse of repeat 0")
    (new,) = H.add_start_wait(trained.col_name, yaml_path, env=trained.env, cwd=trained.tmp,
                              output_dir=trained.out, timeout=JOB_WAIT)
    assert new["status"] == "COMPLETED", new.get("fail_trace")
    (source,) = [d for d in trained.docs if d["config"]["general"]["repeat_number"] == 0]
    res, src = new["result"], source["result"]
    assert res["trained"] is False
    assert res["checkpoint_source"] == "database"
    assert res["checkpoint_used"] == src["artifacts"]["checkpoint"]
    assert res["training_hash"] == src["training_hash"]
    assert res["epochs_run"] == 0
    # the training history is the reused model's; evaluation ran once, under this config's noise
    assert res["training"] == src["training"]
    assert len(res["validation"]["accuracy"]) == 1 and "test" not in res
    # nothing was trained for it: no other checkpoint folder appeared
    assert sorted(p.name for p in (trained.art / "checkpoints").iterdir()) == \
        sorted(d["result"]["training_hash"] for d in trained.docs)


def test_c2_walk_under_seml_reuses_the_model_and_stores_every_evaluation(trained):
    """`walk.enabled: true` in a YAML: the walk is the experiment, run by a SLURM job."""
    fixed = dict(trained.fixed)
    fixed.update({"general.repeat_number": 0, "walk.enabled": True,
                  "walk.sigmas": [0.1, 1.0, 10.0, 1000.0], "walk.repeats": 2})
    yaml_path = H.write_yaml(trained.tmp / "walk.yaml", name=trained.col_name,
                             output_dir=trained.out, fixed=fixed, description="walk of repeat 0")
    (new,) = H.add_start_wait(trained.col_name, yaml_path, env=trained.env, cwd=trained.tmp,
                              output_dir=trained.out, timeout=JOB_WAIT)
    assert new["status"] == "COMPLETED", new.get("fail_trace")
    (source,) = [d for d in trained.docs if d["config"]["general"]["repeat_number"] == 0]
    res = new["result"]
    assert res["trained"] is False and res["checkpoint_source"] == "database"
    assert res["checkpoint_used"] == source["result"]["artifacts"]["checkpoint"]
    n_sites = len(res["sites"])
    assert n_sites > 3 and res["n_evaluations"] == n_sites * 4 * 2
    assert len(res["evaluations"]) == res["n_evaluations"]
    assert set(res["sigma_mid"]) == set(res["sites"])
    assert {e["sigma"] for e in res["evaluations"]} == {0.1, 1.0, 10.0, 1000.0}
    # the analysis reads the walk from the database like individual eval-only runs
    from analysis import load_results
    df = load_results(f"mongodb:{trained.col_name}", {"_id": new["_id"]})
    assert len(df) == res["n_evaluations"]
    assert set(df["sigma"]) == {0.1, 1.0, 10.0, 1000.0}
    assert df["site"].nunique() == n_sites


# ------------------------------------------------------------------ d: failure at run time

def test_d_runtime_failure_ends_failed_with_its_traceback(tmp_path, small_data):
    col_name = H.unique_collection("fail")
    env = H.job_env()
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    fixed = H.base_fixed(empty, epochs=1)
    fixed["artifact_root"] = str(tmp_path / "artifacts")
    out = tmp_path / "logs"
    yaml_path = H.write_yaml(tmp_path / "fail.yaml", name=col_name, output_dir=out, fixed=fixed,
                             description="fails at run time: no dataset files")
    try:
        # validation passes (the config is fine), so `seml add` accepts it, and the run fails
        (doc,) = H.add_start_wait(col_name, yaml_path, env=env, cwd=tmp_path, output_dir=out,
                                  timeout=JOB_WAIT)
        assert doc["status"] == "FAILED", doc["status"]
        trace = "".join(doc.get("fail_trace") or [])
        assert "DatasetNotFoundError" in trace and str(empty) in trace, trace
        printed = H.seml(col_name, "print-fail-trace", env=env).stdout
        assert "Traceback" in printed and "DatasetNotFoundError" in printed, printed
        assert "MNIST files not found" in printed, printed
        assert not (tmp_path / "artifacts" / "checkpoints").exists()
    finally:
        H.cleanup_collection(col_name, env)


# ------------------------------------------------------------------ e: kill and resume

REFERENCE_RUN = r"""
import json, sys
import torch
torch.set_num_threads(1)  # as the SLURM job (SLURM_CPUS_PER_TASK=1)
sys.path.insert(0, sys.argv[3])
from util.engine.experiment import run_experiment
result = run_experiment(json.loads(sys.argv[1]), progress=False)
open(sys.argv[2], "w").write(json.dumps(result))
"""


def test_e_scancel_then_reset_and_start_resumes_from_the_last_checkpoint(tmp_path):
    from util.artifacts import load_torch
    from util.engine.checkpoints import latest_checkpoint

    epochs = 5
    data = H.tiny_mnist(tmp_path / "data", n_train=4000, n_test=100)  # ~1-2 s per epoch
    col_name = H.unique_collection("resume")
    env = H.job_env()
    art = tmp_path / "artifacts"
    fixed = H.base_fixed(data, epochs=epochs, batch_size=8, model="LeNet", conf="LeNet5")
    fixed["artifact_root"] = str(art)  # the artifact root as a config key this time
    out = tmp_path / "logs"
    yaml_path = H.write_yaml(tmp_path / "resume.yaml", name=col_name, output_dir=out,
                             fixed=fixed, description="killed and resumed")
    last = H.checkpoint_dir(art, fixed) / "last.pt"
    col = H.mongo_db()[col_name]
    orphans: list = []

    # the uninterrupted reference: the same config, another artifact root, no database
    ref_cfg = H.config_of(fixed)
    ref_cfg["artifact_root"] = str(tmp_path / "reference_artifacts")
    ref_out = tmp_path / "reference.json"
    reference = subprocess.Popen(
        [H.PYTHON, "-c", REFERENCE_RUN, json.dumps(ref_cfg), str(ref_out), str(H.ROOT)],
        cwd=H.ROOT, env=H.job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        H.seml(col_name, "add", str(yaml_path), env=env, cwd=tmp_path)
        H.seml(col_name, "start", env=env, cwd=tmp_path)

        def one_epoch_saved():
            latest = latest_checkpoint(last.parent)
            return latest is not None and load_torch(latest)["epoch"] >= 1
        H.wait_until(one_epoch_saved, JOB_WAIT, "the first epoch checkpoint",
                     on_timeout=lambda: H.output_tails(out))
        doc = col.find_one()
        assert doc["status"] == "RUNNING", doc["status"]
        job = doc["execution"]["array_id"]
        subprocess.run(["scancel", str(job)], env=H.slurm_env(), check=True, timeout=30)
        H.wait_job_gone(job, 60)
        killed_at = load_torch(latest_checkpoint(last.parent))["epoch"]
        assert 1 <= killed_at < epochs, f"the job finished ({killed_at} epochs) before scancel"
        assert not (last.parent / "final.pt").exists()

        # scancel sends SIGTERM first: the run handles it like Ctrl-C, so sacred marks it
        # INTERRUPTED itself (detect-killed, for runs that died without a word, leaves it)
        H.wait_until(lambda: col.find_one()["status"] == "INTERRUPTED", 60,
                     "the run marked INTERRUPTED", on_timeout=lambda: H.output_tails(out))
        H.seml(col_name, "detect-killed", env=env)
        killed = col.find_one()
        assert killed["status"] == "INTERRUPTED"
        # `seml reset` forgets the killed run's source copy in GridFS without deleting it (and
        # `seml clean-db` does not see sacred's sources): remove it at the end
        orphans += [src[1] for src in (killed.get("experiment") or {}).get("sources", [])]
        H.seml(col_name, "reset", "-y", env=env)
        assert col.find_one()["status"] == "STAGED"
        H.seml(col_name, "start", env=env, cwd=tmp_path)
        (doc,) = H.wait_for_terminal(col, 1, JOB_WAIT, out)
        assert doc["status"] == "COMPLETED", doc.get("fail_trace")
        res = doc["result"]
        assert res["resumed_from_epoch"] == killed_at
        assert res["epochs_run"] == epochs - killed_at  # no epoch repeated
        assert res["trained"] is True
        assert_history(res, epochs)

        ref_log, _ = reference.communicate(timeout=JOB_WAIT)
        assert reference.returncode == 0, ref_log[-3000:]
        ref = json.loads(ref_out.read_text())
        assert ref["resumed_from_epoch"] == 0 and ref["epochs_run"] == epochs
        for section, metric in HISTORY:
            assert res[section][metric] == ref[section][metric], (section, metric)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
        H.cleanup_collection(col_name, env)
        if orphans:
            col.database["fs.files"].delete_many({"_id": {"$in": orphans}})
            col.database["fs.chunks"].delete_many({"files_id": {"$in": orphans}})


# ------------------------------------------------------------------ f: secrets

def test_f_secrets_stay_out_of_results_artifacts_and_logs(tmp_path, small_data):
    db_secret = f"wn-db-secret-{uuid.uuid4().hex}"
    env_secret = f"wn-env-secret-{uuid.uuid4().hex}"
    xdg = H.private_seml_config(tmp_path / "xdg", password=db_secret,
                                extra_fields={"api_token": db_secret})
    col_name = H.unique_collection("secret")
    env = H.job_env(XDG_CONFIG_HOME=xdg, WN_DUMMY_API_TOKEN=env_secret)
    art = tmp_path / "artifacts"
    out = tmp_path / "logs"
    fixed = H.base_fixed(small_data, epochs=1)
    fixed["artifact_root"] = str(art)
    yaml_path = H.write_yaml(tmp_path / "secret.yaml", name=col_name, output_dir=out,
                             fixed=fixed, description="secrets test")
    try:
        (doc,) = H.add_start_wait(col_name, yaml_path, env=env, cwd=tmp_path, output_dir=out,
                                  timeout=JOB_WAIT)
        assert doc["status"] == "COMPLETED", doc.get("fail_trace")
        # the job really used the config holding the dummy password (and the server took it)
        assert doc["seml"]["env"]["XDG_CONFIG_HOME"] == xdg

        for secret in (db_secret, env_secret):
            assert secret not in H.json_text(doc["result"]), "secret in the result"
            files = [p for p in art.rglob("*")] + [p for p in out.rglob("*")]
            assert files and not H.find_secret(secret, files), H.find_secret(secret, files)
            # nothing sacred or the project wrote into the document holds it either ...
            rest = {k: v for k, v in doc.items() if k != "seml"}
            rest["seml"] = {k: v for k, v in doc["seml"].items() if k != "env"}
            assert secret not in H.json_text(rest)
        # ... but seml itself stores the whole environment of `seml add` (docs/experiments.md: On a SLURM cluster)
        assert doc["seml"]["env"].get("WN_DUMMY_API_TOKEN") == env_secret
        assert db_secret not in H.json_text(doc["seml"]["env"])
    finally:
        H.cleanup_collection(col_name, env)


# ------------------------------------------------------------------ g: ten at once

def test_g_ten_experiments_of_one_array_run_concurrently_each_result_once(tmp_path, small_data):
    col_name = H.unique_collection("array")
    env = H.job_env()
    art = tmp_path / "artifacts"
    out = tmp_path / "logs"
    fixed = H.base_fixed(small_data, epochs=1)
    fixed["artifact_root"] = str(art)
    yaml_path = H.write_yaml(tmp_path / "ten.yaml", name=col_name, output_dir=out, fixed=fixed,
                             grid={"general.repeat_number": {"type": "range", "min": 0,
                                                             "max": 10, "step": 1}},
                             description="ten at once")
    col = H.mongo_db()[col_name]
    try:
        H.seml(col_name, "add", str(yaml_path), env=env, cwd=tmp_path)
        assert col.count_documents({"status": "STAGED"}) == 10
        started = H.seml(col_name, "start", env=env, cwd=tmp_path).stdout
        assert "Started 10 experiments in 1 Slurm job array" in started, started
        (job,) = {s["array_id"] for d in col.find() for s in d["slurm"] if "array_id" in s}
        most_running = 0
        deadline = time.monotonic() + JOB_WAIT
        while time.monotonic() < deadline:
            running = H.squeue_tasks(job, states="R")
            most_running = max(most_running, len(running))
            if not H.squeue_tasks(job):
                break
            time.sleep(0.2)
        docs = H.wait_for_terminal(col, 10, 30, out)
        assert most_running == 10, f"at most {most_running} of 10 array tasks ran at once"

        assert col.count_documents({}) == 10  # nothing duplicated ...
        assert [d["status"] for d in docs] == ["COMPLETED"] * 10, H.output_tails(out)
        assert sorted(d["execution"]["task_id"] for d in docs) == list(range(10))
        assert {d["execution"]["array_id"] for d in docs} == {job}
        assert sorted(d["config"]["general"]["repeat_number"] for d in docs) == list(range(10))
        hashes = [d["result"]["training_hash"] for d in docs]
        assert len(set(hashes)) == 10  # ... nothing lost: ten distinct results
        from util.artifacts import load_torch, verify
        for d in docs:
            res = d["result"]
            assert_history(res, epochs=1)
            assert res["trained"] is True and res["epochs_run"] == 1
            assert res["resumed_from_epoch"] == 0
            assert verify(res["artifacts"]["checkpoint"])
            assert load_torch(res["artifacts"]["checkpoint"])["history"]["validation.loss"] == \
                res["validation"]["loss"]
        # each experiment ran exactly once: one output file per experiment, one start each
        for d in docs:
            (log,) = out.glob(f"{col_name}_{job}_*_{d['_id']}.out")
            assert log.read_text().count("Started run with ID") == 1, log
    finally:
        H.cleanup_collection(col_name, env)


# ------------------------------------------------------------------ default artifact root

def test_default_artifact_root_is_the_project_not_seml_temporary_source_copy(tmp_path,
                                                                            small_data):
    """seml jobs run a temporary copy of the sources (deleted at the end of the job); with no
    artifact root configured, the checkpoint must still land in the project's artifacts/."""
    from util.artifacts import verify
    from util.cluster import REPO_ROOT

    col_name = H.unique_collection("defroot")
    env = H.job_env()
    out = tmp_path / "logs"
    fixed = H.base_fixed(small_data, epochs=1)
    fixed["general.seed"] = int(uuid.uuid4().int % 10**9)  # a training hash of its own
    ckpt_dir = H.checkpoint_dir(REPO_ROOT / "artifacts", fixed)
    yaml_path = H.write_yaml(tmp_path / "defroot.yaml", name=col_name, output_dir=out,
                             fixed=fixed, description="default artifact root")
    try:
        (doc,) = H.add_start_wait(col_name, yaml_path, env=env, cwd=tmp_path, output_dir=out,
                                  timeout=JOB_WAIT)
        assert doc["status"] == "COMPLETED", doc.get("fail_trace")
        ckpt = Path(doc["result"]["artifacts"]["checkpoint"])
        assert ckpt == ckpt_dir / "final.pt"
        assert verify(ckpt)
    finally:
        H.cleanup_collection(col_name, env)
        shutil.rmtree(ckpt_dir, ignore_errors=True)


# ------------------------------------------------------------------ h: the database goes away

def cluster_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(H.CLUSTER_SH), *args], capture_output=True, text=True,
                          timeout=120)


def test_h_database_away_mid_run_run_is_kept_locally_and_uploaded_later(tmp_path):
    from util.artifacts import load_torch, verify
    from util.engine.checkpoints import latest_checkpoint
    from util.unsaved_runs import load_entry

    epochs = 5
    data = H.tiny_mnist(tmp_path / "data", n_train=3000, n_test=100)
    # seml's config as a user would tune it: pymongo gives up on an unreachable server after
    # 1.5 s instead of 30 s, so sacred's ten final save attempts take ~25 s, not ~5 min
    xdg = H.private_seml_config(tmp_path / "xdg", uri_options={
        "serverSelectionTimeoutMS": 1500, "connectTimeoutMS": 1500})
    env = H.job_env(XDG_CONFIG_HOME=xdg)
    col_name = H.unique_collection("dbaway")
    art = tmp_path / "artifacts"
    out = tmp_path / "logs"
    fixed = H.base_fixed(data, epochs=epochs, batch_size=8, model="LeNet", conf="LeNet5")
    fixed["artifact_root"] = str(art)
    yaml_path = H.write_yaml(tmp_path / "dbaway.yaml", name=col_name, output_dir=out,
                             fixed=fixed, description="database away mid-run")
    ckpt_dir = H.checkpoint_dir(art, fixed)
    kept_dir = art / "unsaved_runs" / col_name
    mongo_stopped = False
    try:
        H.seml(col_name, "add", str(yaml_path), env=env, cwd=tmp_path)
        H.seml(col_name, "start", env=env, cwd=tmp_path)
        col = H.mongo_db()[col_name]
        H.wait_until(lambda: latest_checkpoint(ckpt_dir) is not None
                     and load_torch(latest_checkpoint(ckpt_dir))["epoch"] >= 1,
                     JOB_WAIT, "the first epoch checkpoint", on_timeout=lambda: H.output_tails(out))
        doc = col.find_one()
        assert doc["status"] == "RUNNING"
        job, exp_id = doc["execution"]["array_id"], doc["_id"]

        stop = cluster_sh("stop", "mongo")
        mongo_stopped = True
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert load_torch(latest_checkpoint(ckpt_dir))["epoch"] < epochs, \
            "training ended too early"

        # training goes on; at the end sacred cannot save, keeps the run, and the job ends
        H.wait_job_gone(job, JOB_WAIT)
        logs = "\n".join(p.read_text(errors="replace") for p in out.glob("*.out"))
        kept = sorted(kept_dir.glob("sacred_mongo_fail_*.pickle"))
        assert len(kept) == 1, f"nothing kept in {kept_dir}\n{H.output_tails(out)}"
        # it says where, and how to upload it
        flat = re.sub(r"\s+", " ", logs)  # rich wraps long log lines
        assert f"Stored experiment entry in '{kept[0]}'" in flat, H.output_tails(out)
        assert "python -m util.unsaved_runs upload" in flat and str(kept_dir) in flat
        assert "Traceback" not in logs, H.output_tails(out)

        entry = load_entry(kept[0])
        assert entry["_id"] == exp_id and entry["status"] == "COMPLETED"
        res = entry["result"]
        assert_history(res, epochs)
        assert res["epochs_run"] == epochs and res["trained"] is True
        assert verify(res["artifacts"]["checkpoint"])
        assert load_torch(res["artifacts"]["checkpoint"])["history"]["training.loss"] == \
            res["training"]["loss"]
        assert oct(kept[0].stat().st_mode & 0o777) == oct(0o600)

        start = cluster_sh("start", "mongo")
        assert start.returncode == 0, start.stdout + start.stderr
        mongo_stopped = False
        col = H.mongo_db()[col_name]
        before = col.find_one({"_id": exp_id})
        print(f"\n[h] after the restart the database has: "
              f"{before['status'] if before else 'nothing (memory storage)'} for it")
        assert before is None or before["status"] == "RUNNING"

        up = H.run([H.PYTHON, "-m", "util.unsaved_runs", "upload", str(art / "unsaved_runs")],
                   env=env, cwd=H.ROOT)
        assert "UPLOADED" in up.stdout and "1 uploaded" in up.stdout, up.stdout
        after = col.find_one({"_id": exp_id})
        assert after["status"] == "COMPLETED"
        assert after["result"] == res
        assert after["config"]["db_collection"] == col_name
        assert after["seml"]["executable"] == "train.py" and after["slurm"]
        # sacred's shared `metrics` collection: every metric document the run owns (listed in
        # its info) holds all epochs again. (sacred keys metrics by run id alone; where an
        # earlier run of another collection had the same id, sacred merged into that one's
        # documents and lists none: seml's known limitation, left alone by the upload.)
        from bson import ObjectId
        owned = (after.get("info") or {}).get("metrics") or []
        for m in owned:
            metric = H.mongo_db().metrics.find_one({"_id": ObjectId(m["id"])})
            section, key = m["name"].split(".")
            assert metric["run_id"] == exp_id and metric["values"] == res[section][key], m
        print(f"[h] metric documents of the run restored: {[m['name'] for m in owned]}")
        assert not list(kept_dir.glob("*.pickle"))
        assert len(list((kept_dir / "uploaded").iterdir())) == 1
        # seml works with the uploaded record, and a second upload has nothing to do
        assert "COMPLETED" in H.seml(col_name, "status", env=env).stdout
        again = H.run([H.PYTHON, "-m", "util.unsaved_runs", "upload", str(art / "unsaved_runs")],
                      env=env, cwd=H.ROOT)
        assert "no kept runs" in again.stdout
    finally:
        if mongo_stopped:
            cluster_sh("start", "mongo")
        H.cleanup_collection(col_name, env)
