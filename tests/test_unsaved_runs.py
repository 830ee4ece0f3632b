"""util/unsaved_runs.py without a cluster: sacred keeps a record it cannot save in the folder
train.py gives it, and the upload command decides correctly what to put into the database.
(The whole story with SLURM and a database that goes away: test_cluster_path.py::test_h.)"""
from __future__ import annotations

import datetime
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from util import unsaved_runs as U


def unreachable_observer():
    """seml's kind of observer, on a port nothing listens on (fails in ~0.2 s)."""
    from sacred.observers import MongoObserver
    return MongoObserver(url="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"
                         "&connectTimeoutMS=200", db_name="seml", collection="wn_col")


def test_keep_unsaved_runs_gives_the_mongo_observer_a_folder_under_the_artifact_root(tmp_path):
    obs = unreachable_observer()
    other = SimpleNamespace(failure_dir=None)  # not a MongoObserver: left alone
    run = SimpleNamespace(observers=[obs, other])
    U.keep_unsaved_runs(run, {"artifact_root": str(tmp_path), "db_collection": "wn_col"})
    assert obs.failure_dir == str(tmp_path.resolve() / "unsaved_runs" / "wn_col")
    assert other.failure_dir is None
    # a folder set explicitly by someone else wins
    obs.failure_dir = "/elsewhere"
    U.keep_unsaved_runs(run, {"artifact_root": str(tmp_path), "db_collection": "wn_col"})
    assert obs.failure_dir == "/elsewhere"


def test_sacred_keeps_a_record_it_cannot_save_and_the_folder_finds_it(tmp_path, capsys,
                                                                      monkeypatch):
    import sacred.observers.mongo
    monkeypatch.setattr(sacred.observers.mongo.time, "sleep", lambda s: None)  # 10 retries
    obs = unreachable_observer()
    U.keep_unsaved_runs(SimpleNamespace(observers=[obs]),
                        {"artifact_root": str(tmp_path), "db_collection": "wn_col"})
    stop = datetime.datetime(2024, 1, 2, 3, 4, 5)
    obs.run_entry = {"_id": 7, "status": "RUNNING", "config": {"db_collection": "wn_col"},
                     "result": None, "info": {}}
    obs.completed_event(stop, {"validation": {"accuracy": [10.0, 20.0]}})  # sacred's own path
    (kept,) = U.find_pickles([tmp_path / "unsaved_runs"])
    assert f"Stored experiment entry in '{kept}'" in capsys.readouterr().err
    entry = U.load_entry(kept)
    assert entry["status"] == "COMPLETED" and entry["result"]["validation"]["accuracy"][-1] == 20.0
    assert U.collection_of(entry, kept) == "wn_col"
    # an uploaded record is not found again
    (kept.parent / "uploaded").mkdir()
    kept.rename(kept.parent / "uploaded" / kept.name)
    assert list(U.find_pickles([tmp_path / "unsaved_runs"])) == []


def test_collect_seml_stats_does_not_fail_a_finished_run_when_the_database_is_away(
        tmp_path, monkeypatch, capsys):
    import pymongo.errors
    import seml.experiment.experiment as seml_experiment

    def unreachable(run):
        raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
    monkeypatch.setattr(seml_experiment, "_collect_exp_stats", unreachable)
    obs = unreachable_observer()
    obs.failure_dir = str(tmp_path / "kept")
    U.collect_seml_stats(SimpleNamespace(observers=[obs]))
    err = capsys.readouterr().err
    assert f"kept in {tmp_path / 'kept'}" in err
    assert f"python -m util.unsaved_runs upload {tmp_path / 'kept'}" in err

    def a_bug(run):
        raise KeyError("not a database problem")
    monkeypatch.setattr(seml_experiment, "_collect_exp_stats", a_bug)
    with pytest.raises(KeyError):
        U.collect_seml_stats(SimpleNamespace(observers=[obs]))


T0 = datetime.datetime(2024, 1, 1, 12, 0, 0)
T1 = T0 + datetime.timedelta(minutes=5)


@pytest.mark.parametrize("kept, existing, force, upload", [
    ({"status": "COMPLETED", "stop_time": T1}, None, False, True),
    ({"status": "COMPLETED", "stop_time": T1}, {"status": "RUNNING"}, False, True),
    ({"status": "COMPLETED", "stop_time": T1}, {"status": "KILLED"}, False, True),
    ({"status": "FAILED", "stop_time": T1}, {"status": "RUNNING"}, False, True),
    # re-run meanwhile: a newer COMPLETED record stays
    ({"status": "COMPLETED", "stop_time": T0}, {"status": "COMPLETED", "stop_time": T1}, False,
     False),
    ({"status": "FAILED", "stop_time": T1}, {"status": "COMPLETED", "stop_time": T0}, False,
     False),
    ({"status": "COMPLETED", "stop_time": T1}, {"status": "COMPLETED", "stop_time": T0}, False,
     True),
    ({"status": "COMPLETED", "stop_time": T0}, {"status": "COMPLETED", "stop_time": T1}, True,
     True),
])
def test_upload_decision(kept, existing, force, upload):
    assert U.decide(dict(kept, _id=1), existing, force)[0] is upload


def test_upload_reports_unreadable_files_and_fails(tmp_path, capsys):
    bad = tmp_path / "sacred_mongo_fail_1_x.pickle"
    bad.write_bytes(pickle.dumps(["not", "a", "record"]))
    counts = U.upload(U.find_pickles([tmp_path]))
    assert counts == {"uploaded": 0, "skipped": 0, "failed": 1}
    assert "unreadable" in capsys.readouterr().out
    assert U.main(["upload", str(tmp_path)]) == 1
    assert U.main(["upload", str(tmp_path / "nothing")]) == 0
    assert Path(bad).exists()  # never moved or deleted


class FakeCollection:
    """The part of a pymongo collection upload() uses: equality filters, $set, upsert."""

    def __init__(self):
        self.docs: list[dict] = []

    def _match(self, flt):
        return [d for d in self.docs if all(d.get(k) == v for k, v in flt.items())]

    def find_one(self, flt, projection=None):
        found = self._match(flt)
        return dict(found[0]) if found else None

    def update_one(self, flt, update, upsert=False):
        found = self._match(flt)
        if found:
            found[0].update(update["$set"])
        elif upsert:
            self.docs.append({**flt, **update["$set"]})


class FakeDatabase(dict):
    def __missing__(self, name):
        self[name] = FakeCollection()
        return self[name]

    @property
    def metrics(self):
        return self["metrics"]


def kept_record(folder: Path, run_id=3, status="COMPLETED", info=None) -> Path:
    entry = {"_id": run_id, "status": status, "stop_time": T1,
             "config": {"db_collection": "wn_col"}, "info": info or {},
             "seml": {"executable": "train.py"},
             "result": {"training": {"loss": [3.0, 2.0, 1.0], "accuracy": [1.0, 2.0, 3.0]},
                        "validation": {"loss": [3.5, 2.5, 1.5], "accuracy": [4.0, 5.0, 6.0]}}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sacred_mongo_fail_{run_id}_abc.pickle"
    path.write_bytes(pickle.dumps(entry))
    return path


def test_upload_writes_the_record_restores_metrics_and_moves_the_file(tmp_path, monkeypatch):
    from bson import ObjectId

    db = FakeDatabase()
    monkeypatch.setattr(U, "_database", lambda cfg: db)
    own, merged = ObjectId(), ObjectId()
    # before the outage: one epoch of training.loss in the run's own document; another run of
    # the same id (other collection) owns a merged validation.loss document
    db.metrics.docs += [
        {"_id": own, "run_id": 3, "name": "training.loss", "steps": [0], "values": [3.0],
         "timestamps": [T0]},
        {"_id": merged, "run_id": 3, "name": "validation.loss", "steps": [0, 0],
         "values": [9.0, 3.5], "timestamps": [T0, T0]}]
    db["wn_col"].docs.append({"_id": 3, "status": "RUNNING", "seml": {"env": {"A": "1"}}})
    path = kept_record(tmp_path / "unsaved_runs" / "wn_col",
                       info={"metrics": [{"name": "training.loss", "id": str(own)}]})

    assert U.main(["upload", str(tmp_path / "unsaved_runs")]) == 0
    doc = db["wn_col"].find_one({"_id": 3})
    assert doc["status"] == "COMPLETED" and doc["result"]["training"]["loss"] == [3.0, 2.0, 1.0]
    by_name = {d["name"]: d for d in db.metrics.docs if d["_id"] != merged}
    assert by_name["training.loss"]["_id"] == own
    assert by_name["training.loss"]["values"] == [3.0, 2.0, 1.0]
    assert by_name["training.loss"]["timestamps"][0] == T0  # kept where known
    # no document yet: created and listed in the run's info
    assert by_name["validation.accuracy"]["values"] == [4.0, 5.0, 6.0]
    assert {m["name"] for m in doc["info"]["metrics"]} >= {"training.loss",
                                                          "validation.accuracy"}
    # another run's merged document: untouched, and no second one made
    assert [d for d in db.metrics.docs if d["name"] == "validation.loss"] == [
        {"_id": merged, "run_id": 3, "name": "validation.loss", "steps": [0, 0],
         "values": [9.0, 3.5], "timestamps": [T0, T0]}]
    assert not path.exists() and (path.parent / "uploaded" / path.name).exists()
    assert U.main(["upload", str(tmp_path / "unsaved_runs")]) == 0  # nothing left to do


def test_upload_leaves_a_newer_completed_record_alone(tmp_path, monkeypatch, capsys):
    db = FakeDatabase()
    monkeypatch.setattr(U, "_database", lambda cfg: db)
    newer = {"_id": 3, "status": "COMPLETED", "stop_time": T1 + datetime.timedelta(hours=1),
             "result": {"rerun": True}}
    db["wn_col"].docs.append(dict(newer))
    path = kept_record(tmp_path / "kept")
    assert U.main(["upload", str(tmp_path / "kept")]) == 0
    assert "SKIPPED" in capsys.readouterr().out
    assert db["wn_col"].find_one({"_id": 3}) == newer and path.exists()
    assert U.main(["upload", "--force", str(tmp_path / "kept")]) == 0
    assert db["wn_col"].find_one({"_id": 3})["result"]["training"]["loss"] == [3.0, 2.0, 1.0]
