"""util.local_run with several runners on one run store and one artifact root: claims split the
work, SIGKILLed runners leave nothing a rerun cannot finish, SIGTERM interrupts cleanly, and a
run store that cannot be written is refused before anything runs.

The bounded stress test (issue 14, "What must hold" 7) is
:func:`test_eight_runners_with_random_sigkills_finish_every_experiment_like_a_serial_run`.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from data_fixtures import write_idx_dataset
from util import local_run
from util.local_run.__main__ import train_experiment
from util.artifacts import load_torch, verify
from util.config import config_hash
from util.run_store import iter_runs

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# one thread everywhere, so that float results cannot depend on how many threads a process had
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

EPOCHS = 2
REPEATS = (0, 1, 2, 3)                  # four trained models (training hashes)
SIGMAS = (0.1, 0.3, 1.0, 3.0, 10.0)     # eval-only noise on each of them
N_EXPERIMENTS = len(REPEATS) * (1 + len(SIGMAS))  # 24

N_RUNNERS = 8
SEED = 14
KILLS_PER_ROUND = (4, 3, 1)             # at most 8 SIGKILLs, then rounds without kills
MAX_ROUNDS = 5
ROUND_TIMEOUT_S = 300


def write_yaml(path: Path, data_root: Path, art: Path, body: str, epochs: int = EPOCHS) -> Path:
    path.write_text(f"""seml:
  executable: train.py
  name: test_stress_local_run
  description: several local runners on one store
  output_dir: logs
  project_root_dir: {ROOT}
slurm:
  - sbatch_options: {{}}
fixed:
  general.num_epochs: {epochs}
  data.dataset: MNIST
  data.root: {data_root}
  data.download: false
  data.batch_size: 32
  artifact_root: {art}
  device: cpu
  model.model_class: MLP
  model.MLP.conf_name: RL_TFC
  noise_settings.default.noise_type: NoNoise
{body}""")
    return path


SWEEP = f"""grid:
  general.repeat_number:
    type: choice
    options: {list(REPEATS)}
noise_free:
  fixed:
    noise_settings.layer_wise: null
eval_noise:
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.enable_in_training: 0
    noise_settings.layer_wise.enable_in_eval: 1
    noise_settings.layer_wise.layer_index: 3
  grid:
    noise_settings.layer_wise.GaussStd:
      type: choice
      options: {list(SIGMAS)}
"""


def runner(yaml_file: Path, store: Path, log_file: Path) -> subprocess.Popen:
    """``python -m util.local_run`` as a user starts it, in its own process group (so that a
    SIGKILL reaches everything it might have started), output into ``log_file``."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            [PY, "-m", "util.local_run", str(yaml_file), "-F", str(store), "--no-progress"],
            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class FinalWatcher:
    """Every version of every ``checkpoints/<hash>/final.pt`` seen to verify while runners run.

    A training that reaches its end writes ``final.pt`` once (a new file renamed into place),
    so a second training to the end of the same hash would show up as a second version."""

    def __init__(self, art: Path):
        self.art = art
        self.versions: dict[str, set[tuple[int, int]]] = defaultdict(set)

    def look(self) -> None:
        for path in self.art.glob("checkpoints/*/final.pt"):
            try:
                before = path.stat()
                key = (before.st_ino, before.st_mtime_ns)
                if key in self.versions[path.parent.name]:
                    continue
                after = path.stat() if verify(path) else None
            except FileNotFoundError:
                continue
            if after is not None and (after.st_ino, after.st_mtime_ns) == key:
                self.versions[path.parent.name].add(key)


# a kill waits for the n-th such line (n random up to the bound) in any runner's log, then
# kills that runner after a random delay up to the bound: "in training" lands mid-epoch,
# mid-checkpoint or just after one; "in a run" in data loading, evaluation or store writes
TRIGGERS = {"in training": (re.compile(r"epoch \d+/\d+:"), 6, 0.15),  # util.engine.experiment's
            "in a run": (re.compile(r'Started run with ID "\d+"'), 20, 0.3)}  # sacred's


def plan_kills(n_kills: int, rng: random.Random) -> list[tuple[str, int, float]]:
    """``n_kills`` of (kind, n, delay s); kind "at a moment": n is the runner, delay after
    its start (imports, planning or any run)."""
    kills = []
    for _ in range(n_kills):
        x = rng.random()
        if x < 0.2:
            kills.append(("at a moment", rng.randrange(N_RUNNERS), rng.uniform(0.3, 10.0)))
        else:
            kind = "in training" if x < 0.65 else "in a run"
            _, most, delay = TRIGGERS[kind]
            kills.append((kind, rng.randint(1, most), rng.uniform(0, delay)))
    return kills


def run_round(yaml_file, store, logs, kills, watcher) -> list[str]:
    """Start N_RUNNERS runners, SIGKILL them as ``kills`` (:func:`plan_kills`) say, wait for
    the others; returns the kinds of the kills that hit a live runner."""
    procs = [runner(yaml_file, store, logs / f"runner{i}.log") for i in range(N_RUNNERS)]
    t0 = time.monotonic()
    due = [(t0 + delay, i, kind) for kind, i, delay in kills if kind == "at a moment"]
    waiting = [k for k in kills if k[0] != "at a moment"]
    lines = {kind: [0] * N_RUNNERS for kind in TRIGGERS}
    total = dict.fromkeys(TRIGGERS, 0)
    targeted: set[int] = set()
    killed: dict[int, str] = {}
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            assert now - t0 < ROUND_TIMEOUT_S, "a round of runners did not end"
            for i, p in enumerate(procs):
                if not waiting or p.poll() is not None or i in targeted:
                    continue
                text = (logs / f"runner{i}.log").read_text(errors="replace")
                for kind, (pattern, _, _) in TRIGGERS.items():
                    seen = len(pattern.findall(text))
                    new, lines[kind][i] = seen - lines[kind][i], seen
                    total[kind] += new
                    hit = next((k for k in waiting if k[0] == kind and k[1] <= total[kind]), None)
                    if new and hit is not None and i not in targeted:
                        waiting.remove(hit)
                        due.append((now + hit[2], i, kind))
                        targeted.add(i)
            for entry in [d for d in due if d[0] <= now]:
                due.remove(entry)
                _, i, kind = entry
                if procs[i].poll() is None and i not in killed:
                    os.killpg(procs[i].pid, signal.SIGKILL)
                    killed[i] = kind
            watcher.look()
            time.sleep(0.03)
    finally:  # a failing round leaves no runner behind
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    watcher.look()
    for i, p in enumerate(procs):
        if i not in killed:  # a runner nobody killed ends cleanly, whatever the others did
            assert p.returncode == 0, (logs / f"runner{i}.log").read_text()[-3000:]
    return list(killed.values())


def completed_runs(store: Path) -> dict[str, list]:
    by_hash = defaultdict(list)
    for run in iter_runs(store, status="COMPLETED"):
        by_hash[config_hash(run.config)].append(run)
    return by_hash


def without_artifact_root(config: dict) -> str:
    return config_hash({k: v for k, v in config.items() if k != "artifact_root"})


def test_eight_runners_with_random_sigkills_finish_every_experiment_like_a_serial_run(
        tmp_path):
    """8 runners on one store and one artifact root, 24 experiments (4 trained models, each
    also evaluated under 5 eval-only σ). Rounds of 8 runners until every experiment is
    COMPLETED (at most MAX_ROUNDS); the first rounds SIGKILL KILLS_PER_ROUND runners, chosen
    and timed by a seeded ``random.Random`` (:func:`plan_kills`: in training, in a run, or at
    a random moment), the later ones none. At least one kill must land in training. Then:

    (a) every experiment of the file has exactly one COMPLETED run (claims: no experiment ran
        twice, none was lost to a killed runner);
    (b) each training hash was trained exactly once to the end. Proof: (1) its ``final.pt``
        verifies and holds all EPOCHS epochs; (2) while the runners ran, only one version of
        that ``final.pt`` was ever seen to verify (a training that reaches its end writes a new
        ``final.pt``; a second one would be seen as a second file); (3) of its COMPLETED runs
        at most one says ``trained``, and that one finished the training:
        ``resumed_from_epoch + epochs_run == EPOCHS`` (a killed runner's partial training
        resumed is fine); every other one reused exactly that ``final.pt``. None may say
        ``trained`` when the run that finished the training was killed after writing
        ``final.pt`` but before sacred stored it COMPLETED; (2) still holds then.
    (c) every checkpoint under the artifact root verifies;
    (d) no temporary file (``*.tmp``) is left under the artifact root or the run store;
    (e) every final metric (and the training history) equals that of one serial runner of the
        same file, into a fresh artifact root and store.
    """
    t_start = time.monotonic()
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=4000, n_test=200)
    art, store = tmp_path / "art", tmp_path / "runs"
    yaml_file = write_yaml(tmp_path / "sweep.yaml", data, art, SWEEP)
    wanted = {e.config_hash for e in local_run.plan(yaml_file, store=tmp_path / "none").to_run}
    assert len(wanted) == N_EXPERIMENTS

    rng = random.Random(SEED)
    watcher = FinalWatcher(art)
    kills: list[str] = []
    rounds = 0
    while set(completed_runs(store)) != wanted:
        assert rounds < MAX_ROUNDS, f"not done after {MAX_ROUNDS} rounds"
        logs = tmp_path / f"logs{rounds}"
        logs.mkdir()
        n_kills = KILLS_PER_ROUND[rounds] if rounds < len(KILLS_PER_ROUND) else 0
        kills += run_round(yaml_file, store, logs, plan_kills(n_kills, rng), watcher)
        rounds += 1
    assert kills.count("in training") >= 1, kills  # the test did kill runners mid-training

    # (a)
    runs = completed_runs(store)
    assert set(runs) == wanted
    assert all(len(r) == 1 for r in runs.values()), \
        {h: [x.run_id for x in r] for h, r in runs.items() if len(r) > 1}
    results = [r[0].result for r in runs.values()]

    # (b)
    by_training = defaultdict(list)
    for result in results:
        by_training[result["training_hash"]].append(result)
    assert len(by_training) == len(REPEATS)
    for h, group in by_training.items():
        final = art / "checkpoints" / h / "final.pt"
        assert verify(final)
        state = load_torch(final)
        assert state["epoch"] == EPOCHS and len(state["history"]["training.loss"]) == EPOCHS
        assert len(watcher.versions[h]) == 1, f"{h}: final.pt written {watcher.versions[h]}"
        trained = [r for r in group if r["trained"]]
        assert len(trained) <= 1, f"{h} trained to the end by {len(trained)} runs"
        for r in trained:
            assert r["resumed_from_epoch"] + r["epochs_run"] == EPOCHS
        for r in group:
            if not r["trained"]:
                assert r["epochs_run"] == 0
                assert Path(r["checkpoint_used"]).resolve() == final.resolve()

    # (c), (d)
    checkpoints = list(art.rglob("*.pt"))
    assert len(checkpoints) >= len(REPEATS) and all(verify(p) for p in checkpoints), \
        [p for p in checkpoints if not verify(p)]
    assert not list(art.rglob("*.tmp")) and not list(store.rglob("*.tmp")), \
        list(art.rglob("*.tmp")) + list(store.rglob("*.tmp"))

    # (e)
    serial_art, serial_store = tmp_path / "serial_art", tmp_path / "serial_runs"
    serial_yaml = write_yaml(tmp_path / "serial.yaml", data, serial_art, SWEEP)
    serial = subprocess.run(
        [PY, "-m", "util.local_run", str(serial_yaml), "-F", str(serial_store), "--no-progress",
         "-q"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert serial.returncode == 0, serial.stdout[-2000:] + serial.stderr[-3000:]
    reference = {without_artifact_root(r.config): r.result
                 for r in iter_runs(serial_store, status="COMPLETED")}
    assert len(reference) == N_EXPERIMENTS
    differ = []
    for (run,) in runs.values():
        ref = reference[without_artifact_root(run.config)]
        if run.result["final"] != ref["final"] or run.result["training"] != ref["training"]:
            differ.append((run.run_id, run.result["final"], ref["final"]))
    assert not differ, differ
    print(f"\nstress: {rounds} rounds, {len(kills)} SIGKILLs ({kills.count('in training')} in "
          f"training), {time.monotonic() - t_start:.0f} s")


# --- claims, SIGTERM and the run store, one at a time -------------------------------------------

TWO_RUNS = """grid:
  general.repeat_number:
    type: choice
    options: [0, 1]
"""


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=256, n_test=64)
    return root


def run_main(args):
    out = io.StringIO()
    code = local_run.main(["--no-progress", "-q", *args], out=out, experiment=train_experiment)
    return code, out.getvalue()


def test_an_experiment_claimed_by_another_runner_is_left_to_it(mnist_root, tmp_path):
    yaml_file = write_yaml(tmp_path / "two.yaml", mnist_root, tmp_path / "art", TWO_RUNS,
                           epochs=1)
    store = tmp_path / "runs"
    first, second = local_run.plan(yaml_file, store=store).to_run
    claims = store / ".claims"
    claims.mkdir(parents=True)
    with open(claims / f"{second.config_hash}.lock", "a+") as f:  # another runner's claim
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out = run_main([str(yaml_file), "-F", str(store)])
        assert code == 0, out
        assert "1 done" in out and "1 running elsewhere" in out
        assert set(completed_runs(store)) == {first.config_hash}
    # that runner died without completing it: the next invocation runs it
    code, out = run_main([str(yaml_file), "-F", str(store)])
    assert code == 0 and "1 done" in out and "1 skipped (already completed)" in out
    assert set(completed_runs(store)) == {first.config_hash, second.config_hash}


def test_an_experiment_completed_by_another_runner_since_planning_is_not_run_again(
        mnist_root, tmp_path):
    yaml_file = write_yaml(tmp_path / "two.yaml", mnist_root, tmp_path / "art", TWO_RUNS,
                           epochs=1)
    store = tmp_path / "runs"
    stale = local_run.plan(yaml_file, store=store)  # this runner looked before the other ran
    code, _ = run_main([str(yaml_file), "-F", str(store), "--max", "1"])
    assert code == 0 and len(completed_runs(store)) == 1
    outcomes, interrupted = local_run.run_plan(stale, train_experiment(), progress=False)
    assert not interrupted
    assert [o.status for o in outcomes] == ["completed elsewhere", "done"]
    runs = completed_runs(store)
    assert len(runs) == 2 and all(len(r) == 1 for r in runs.values())


def test_sigterm_interrupts_the_current_run_and_a_rerun_resumes_it(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=4000, n_test=200)
    art, store = tmp_path / "art", tmp_path / "runs"
    yaml_file = write_yaml(tmp_path / "two.yaml", data, art, TWO_RUNS, epochs=6)
    proc = runner(yaml_file, store, tmp_path / "log.txt")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None \
            and not list(art.glob("checkpoints/*/epoch_*.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # mid-training of the first run
    assert proc.wait(timeout=120) == 130
    log = (tmp_path / "log.txt").read_text()
    (run,) = list(iter_runs(store))
    assert run.status == "INTERRUPTED"
    assert "1 interrupted, 1 not run" in log
    assert f" -> {run.path} (a rerun resumes it)" in log
    assert json.loads((run.path / "run.json").read_text())["stop_time"]

    rerun = runner(yaml_file, store, tmp_path / "rerun.txt")
    assert rerun.wait(timeout=300) == 0
    assert "2 done" in (tmp_path / "rerun.txt").read_text()
    resumed = next(r for r in iter_runs(store, status="COMPLETED")
                   if config_hash(r.config) == config_hash(run.config))
    assert resumed.result["trained"] and resumed.result["resumed_from_epoch"] >= 1


def test_a_run_store_that_is_a_file_is_refused_before_anything_runs(mnist_root, tmp_path,
                                                                     capsys):
    art = tmp_path / "art"
    yaml_file = write_yaml(tmp_path / "two.yaml", mnist_root, art, TWO_RUNS, epochs=1)
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder\n")
    for store in (a_file, a_file / "inside"):
        code, out = run_main([str(yaml_file), "-F", str(store)])
        err = capsys.readouterr().err
        assert code == 2 and out == ""
        assert "run store (-F)" in err and str(store) in err and "nothing was run" in err
    assert a_file.read_text() == "not a folder\n" and not art.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_store_is_refused_before_anything_runs(mnist_root, tmp_path, capsys):
    art = tmp_path / "art"
    yaml_file = write_yaml(tmp_path / "two.yaml", mnist_root, art, TWO_RUNS, epochs=1)
    store = tmp_path / "runs"
    store.mkdir()
    store.chmod(0o500)
    try:
        code, out = run_main([str(yaml_file), "-F", str(store)])
    finally:
        store.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and "run store (-F)" in err and str(store) in err
    assert not list(store.iterdir()) and not art.exists()
