"""The stored result of a cohort (one document for the whole cohort): per member its config
and final metrics, the per-epoch lists in an artifact; far below MongoDB's 16 MB for the
largest cohort a shipped YAML can make; the analysis reads its members as rows like separate
runs (same columns, same values)."""
import json
import subprocess
import sys
from pathlib import Path

import bson

from analysis.results import load_results
from data_fixtures import write_idx_dataset
from util.config import member_configs, merged_with_defaults, validate_config
from util.engine.cohort import HISTORY_SECTIONS, cohort_document
from util.validate_configs import expand_file

ROOT = Path(__file__).resolve().parent.parent
MONGODB_LIMIT = 16 * 1024 * 1024


def shipped_cohort_sizes():
    """(file, members) of every experiment a shipped YAML makes that trains a cohort: a
    cohort run (cohort.enabled) or a noisy-training walk (walk.train: sites x σ members)."""
    sizes = []
    for path in sorted((ROOT / "experiment_configs").rglob("*.yaml")):
        text = path.read_text()
        if "cohort." not in text and "walk.train" not in text:
            continue
        for exp in expand_file(path).experiments:
            config = exp.config
            if (config.get("cohort") or {}).get("enabled"):
                sizes.append((path.name, len(member_configs(config))))
            walk = config.get("walk") or {}
            if walk.get("enabled") and walk.get("train"):
                vc = validate_config(config, walk=True)
                n_sites = len(walk.get("sites") or vc.site_names)
                n_sigmas = len(walk.get("sigmas") or walk.get("sigma_factors") or [])
                sizes.append((path.name, n_sites * n_sigmas))
    return sizes


def fake_member_result(config, epochs):
    """A member's result as run_cohort returns it: the single run's keys, per-epoch lists of
    ``epochs`` floats with all their digits."""
    history = [1.0 / 3 + i * 1e-7 for i in range(epochs)]
    result = {s: {"loss": list(history), "accuracy": list(history)}
              for s in ("training", "validation", "test")}
    result["final"] = {"validation_accuracy": 88.123456789, "validation_loss": 0.3123456789,
                       "test_accuracy": 87.0, "test_loss": 0.33}
    result.update({"artifacts": {"checkpoint": "/a/long/path/" + "c" * 40 + "/final.pt"},
                   "checkpoint_used": "/a/long/path/" + "c" * 40 + "/final.pt",
                   "checkpoint_source": "trained", "trained": True, "resumed_from_epoch": 0,
                   "epochs_run": epochs, "epoch_seconds": [3.123] * epochs,
                   "seconds": 1234.5, "training_hash": "t" * 20, "config_hash": "c" * 20,
                   "sites": [f"{i}:site{i}" for i in range(16)], "num_classes": 10,
                   "device": "cuda:0", "diverged": None, "noise_generator": "torch.randn",
                   "training_noise_generator": "torch.randn",
                   "replaced_corrupt_checkpoint": None})
    return result


def test_the_largest_shipped_cohort_document_stays_far_below_mongodbs_limit(tmp_path):
    sizes = shipped_cohort_sizes()
    assert sizes, "no shipped YAML makes a cohort"
    name, largest = max(sizes, key=lambda s: s[1])
    assert largest >= 16   # the layer-wise grids: many sites x σ
    base = merged_with_defaults({"model": {"model_class": "LeNet",
                                           "LeNet": {"conf_name": "LeNet5-BN"}}})
    configs = [json.loads(json.dumps(base)) for _ in range(largest)]
    for i, c in enumerate(configs):
        c["noise_settings"]["layer_wise"] = {"layer_index": i % 16, "noise_type": "GaussAdd",
                                             "GaussStd": 0.123456789 * i}
    result = {"members": [fake_member_result(c, 300) for c in configs],
              "cohort": {"n_members": largest, "strategy": "vectorised",
                         "members_trained": list(range(largest)),
                         "epoch_seconds": [12.345] * 300, "seconds": 1e5, "device": "cuda:0"}}
    full = len(bson.encode(result))
    doc = cohort_document(result, configs, tmp_path / "art")
    size = len(bson.encode(doc))
    assert size < MONGODB_LIMIT / 4, (name, largest, size)
    assert size < full / 3   # the per-epoch lists went to the artifact
    histories = json.loads(Path(doc["artifacts"]["histories"]).read_text())
    assert len(histories) == largest
    assert histories[7]["validation"]["loss"] == result["members"][7]["validation"]["loss"]
    assert all(not (set(HISTORY_SECTIONS) & set(m)) for m in doc["members"])
    assert doc["members"][5]["config"] == configs[5]


def test_the_analysis_reads_a_cohort_runs_members_as_rows_like_separate_runs(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=128, n_test=64)
    common = ["data.dataset=MNIST", f"data.root={data}", "data.download=false",
              "data.batch_size=64", "general.num_epochs=1", f"artifact_root={tmp_path / 'art'}",
              "device=cpu", "model.model_class=MLP", "model.MLP.conf_name=RL_TFC"]
    members = [{}, {"noise_settings": {"layer_wise": {"layer_index": 3, "noise_type":
                                                      "GaussAdd", "GaussStd": 0.2}}}]
    env = {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    cohort_store, single_store = tmp_path / "cohort_runs", tmp_path / "single_runs"
    proc = subprocess.run([sys.executable, "train.py", "cohort", "-F", str(cohort_store),
                           "with", *common, f"cohort.members={json.dumps(members)}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = json.loads((cohort_store / "1" / "run.json").read_text())["result"]
    assert Path(stored["artifacts"]["histories"]).exists()
    assert all("validation" not in m for m in stored["members"])
    for member in members:   # the same configs as single runs: they reuse the cohort's models
        extra = [f"noise_settings.layer_wise={json.dumps(member['noise_settings']['layer_wise'])}"
                 ] if member else []
        proc = subprocess.run([sys.executable, "train.py", "-F", str(single_store), "with",
                               *common, *extra], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_results(str(cohort_store)).drop(columns=["run_id", "trained"])
    b = load_results(str(single_store)).drop(columns=["run_id", "trained"])
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 2
    assert a.sort_values("site").reset_index(drop=True).equals(
        b.sort_values("site").reset_index(drop=True))
