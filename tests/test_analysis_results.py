"""analysis.results: run store and MongoDB results → one tidy DataFrame, σ_mid per site, walk
results, the clean reference, filters, and clear errors for bad input."""
import copy
import math
import os
import uuid
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import analysis_fixtures as F
from analysis.results import (ALL_SITES, COLUMNS, CURVE_COLUMNS, load_results, parse_source,
                              sigma_mid_per_site)
from util.config_paths import matches_query

cluster_up = pytest.mark.skipif(
    os.environ.get("WN_CLUSTER_UP") != "1",
    reason="needs the MongoDB-wire server: set WN_CLUSTER_UP=1 after `bash scripts/cluster.sh "
           "start` (seml reads the connection from ~/.config/seml/mongodb.config)")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    runs = F.build_sweep_store(root / "runs", root / "art")
    return SimpleNamespace(store=root / "runs", runs=runs)


@pytest.fixture(scope="module")
def sweep_df(sweep):
    return load_results(sweep.store)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    root = tmp_path_factory.mktemp("walk")
    runs = F.build_walk_store(root / "runs", root / "art")
    return SimpleNamespace(store=root / "runs", runs=runs)


def write_store(tmp_path, runs, name="runs"):
    """runs: list of (config, result[, status]) written as runs 1..n."""
    store = tmp_path / name
    for i, run in enumerate(runs, start=1):
        F.write_run(store, i, *run)
    return store


def clean_run(repeat=0, acc=90.0, **kw):
    cfg = F.make_config(repeat=repeat, seed=repeat, **kw)
    return cfg, F.make_result(cfg, acc, trained=True, checkpoint=f"/ckpt/clean{repeat}.pt")


def noisy_run(config_updates, acc=50.0, repeat=0):
    cfg = F.make_config(repeat=repeat)
    cfg["noise_settings"] = config_updates
    return cfg, F.make_result(cfg, acc, trained=False, checkpoint="/ckpt/clean0.pt")


# --------------------------------------------------------------------------- the table


def test_the_table_has_the_documented_columns_and_one_row_per_run(sweep, sweep_df):
    assert list(sweep_df.columns) == COLUMNS
    assert len(sweep_df) == len(sweep.runs)
    assert list(sweep_df["run_id"]) == [str(i) for i in sorted(sweep.runs)]
    assert sweep_df["site"].dtype == np.int64 and sweep_df["sigma"].dtype == np.float64
    assert sweep_df["enable_in_training"].dtype == bool


def test_a_layer_wise_run_is_described_by_its_site_and_noise(sweep_df):
    row = sweep_df[(sweep_df["site"] == 3) & (sweep_df["sigma"] == 0.1)
                   & (sweep_df["repeat_number"] == 1)].iloc[0]
    assert row["placement"] == "layer_wise" and row["site_name"] == "3:fc2"
    assert row["noise_type"] == "GaussAdd"
    assert (row["sigma_add"], row["sigma_mul"]) == (0.1, 0.0)
    assert math.isnan(row["std_ratio"]) and row["order"] is None
    assert row["enable_in_training"] == False and row["enable_in_eval"] == True  # noqa: E712
    assert row["accuracy"] == F.curve_accuracy(0.1, F.LOG_MID_CLEAN[3], F.CLEAN[1])
    assert row["test_accuracy"] == row["accuracy"] - 1.0
    assert (row["dataset"], row["model_class"], row["conf_name"]) == \
        ("FashionMNIST", "MLP", "RL_TFC-noBN")
    assert row["chance"] == 10.0 and row["weight_clamping"] == "none"
    assert row["repetition"] == 1.0 and row["trained"] == False  # noqa: E712
    assert row["checkpoint"].endswith("clean1/final.pt")


def test_noise_free_and_global_runs_have_site_minus_one(sweep_df):
    none = sweep_df[sweep_df["placement"] == "none"]
    assert len(none) == 2 and set(none["site"]) == {ALL_SITES}
    assert set(none["noise_type"]) == {"NoNoise"} and set(none["sigma"]) == {0.0}
    assert not none["enable_in_training"].any() and not none["enable_in_eval"].any()
    glob = sweep_df[sweep_df["placement"] == "default"]
    assert len(glob) == len(F.SIGMAS) and set(glob["site_name"]) == {"all"}


def test_clean_accuracy_is_the_noise_free_run_of_the_same_repeat(sweep_df):
    layer = sweep_df[sweep_df["placement"] == "layer_wise"]
    clean_training = layer[~layer["enable_in_training"]]
    for repeat, acc in F.CLEAN.items():
        assert set(clean_training[clean_training["repeat_number"] == repeat]
                   ["clean_accuracy"]) == {acc}
    # noise-trained models compare with the noise-free model of their repeat, too
    assert set(layer[layer["enable_in_training"]]["clean_accuracy"]) == {F.CLEAN[0]}


def test_clean_accuracy_falls_back_to_another_repeat_when_the_own_one_is_missing(tmp_path):
    store = write_store(tmp_path, [clean_run(0, 90.0), clean_run(1, 80.0),
                                   noisy_run({"layer_wise": {"layer_index": 2,
                                              "noise_type": "GaussAdd", "GaussStd": 1.0}},
                                             repeat=5)])
    df = load_results(store)
    assert df.loc[df["placement"] == "layer_wise", "clean_accuracy"].item() == 85.0


def test_sigma_mid_per_site_recovers_the_known_midpoints(sweep_df):
    table = sigma_mid_per_site(sweep_df)
    clean = table[(table["site"] >= 0) & ~table["enable_in_training"]].sort_values("site")
    np.testing.assert_allclose(np.log10(clean["sigma_mid"]), F.LOG_MID_CLEAN, atol=1e-9)
    assert list(clean["site_name"]) == F.SITE_NAMES
    assert set(clean["kind"]) == {"crossing"} and set(clean["n_repeats"]) == {2}
    np.testing.assert_allclose(clean["log10_sigma_mid_std"], 0.0, atol=1e-9)
    noisy = table[table["enable_in_training"]].sort_values("site")
    assert list(noisy["site"]) == list(F.NOISY_SITES)
    np.testing.assert_allclose(np.log10(noisy["sigma_mid"]), list(F.NOISY_SITES.values()),
                               atol=1e-9)
    glob = table[table["placement"] == "default"]
    assert math.log10(glob["sigma_mid"].item()) == pytest.approx(F.LOG_MID_GLOBAL)


def test_sigma_mid_uses_the_given_clean_accuracy_when_asked(sweep_df):
    rows = sweep_df[(sweep_df["site"] == 1) & ~sweep_df["enable_in_training"]
                    & (sweep_df["repeat_number"] == 0)]
    # level (70 + 10) / 2 = 40 instead of 50: 10 points lower, 10/15 decade further right
    table = sigma_mid_per_site(rows, clean_accuracy=70.0)
    assert math.log10(table["sigma_mid"].item()) == pytest.approx(F.LOG_MID_CLEAN[1] + 10 / 15)


def test_a_run_written_by_sacred_itself_reads_like_the_fixture_writer(tmp_path):
    import logging
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred import Experiment
    from sacred.observers import FileStorageObserver

    cfg, result = noisy_run({"layer_wise": {"layer_index": 4, "noise_type": "GaussMul",
                                            "GaussStd": 0.3, "enable_in_training": False}})
    clean_cfg, clean_result = clean_run()
    quiet = logging.getLogger("sacred-test")
    quiet.setLevel(logging.ERROR)
    for c, r in ((clean_cfg, clean_result), (cfg, result)):
        ex = Experiment("walking-noise", save_git_info=False)
        ex.logger = quiet
        ex.observers.append(FileStorageObserver(str(tmp_path / "sacred")))
        ex.add_config({k: v for k, v in c.items() if k != "seed"})
        ex.main(lambda r=r: r)
        ex.run()
    ours = write_store(tmp_path, [(clean_cfg, clean_result), (cfg, result)], "ours")
    by_sacred = load_results(tmp_path / "sacred")
    pd.testing.assert_frame_equal(by_sacred, load_results(ours))
    assert by_sacred.loc[1, "noise_type"] == "GaussMul" and by_sacred.loc[1, "sigma_mul"] == 0.3


# --------------------------------------------------------------------------- noise types


@pytest.mark.parametrize("settings, expected", [
    ({"layer_wise": {"layer_index": 5, "noise_type": "GaussCombined", "StdAmplitude": 2.0,
                     "StdRatio": 0.25, "FirstMulThenAdd": False}},
     dict(placement="layer_wise", site=5, noise_type="GaussCombined", sigma=2.0,
          std_ratio=0.25, order="add_mul", sigma_add=0.5, sigma_mul=1.5)),
    ({"layer_wise": {"layer_index": 1, "noise_type": "GaussCombined_direct",
                     "GaussStdAdd": 0.3, "GaussStdMul": 0.1}},
     dict(placement="layer_wise", site=1, noise_type="GaussCombined_direct", sigma=0.4,
          std_ratio=0.75, order="mul_add", sigma_add=0.3, sigma_mul=0.1)),
    ({"default": {"noise_type": "GaussMul", "GaussStd": 0.2, "enable_in_training": False}},
     dict(placement="default", site=-1, site_name="all", noise_type="GaussMul", sigma=0.2,
          sigma_add=0.0, sigma_mul=0.2, enable_in_training=False)),
    ({"layer_mapped": {"noise_type": "GaussAdd", "std_map": {"3": 0.5},
                       "std_multiplication_factor": 2.0}},
     dict(placement="layer_mapped", site=3, site_name="3:fc2", sigma=1.0, sigma_add=1.0)),
    ({"layer_mapped": {"noise_type": "GaussAdd", "std_map": {"1": 0.5, "5": 0.25},
                       "std_multiplication_factor": 3.0}},
     dict(placement="layer_mapped", site=-1, site_name="mapped", sigma=3.0)),
])
def test_noise_columns_for_each_noise_type_and_placement(tmp_path, settings, expected):
    store = write_store(tmp_path, [noisy_run(settings)])
    row = load_results(store).iloc[0]
    for col, value in expected.items():
        assert row[col] == pytest.approx(value) if isinstance(value, float) \
            else row[col] == value, col
    if expected.get("site_name") == "mapped":
        assert math.isnan(row["sigma_add"]) and math.isnan(row["sigma_mul"])


def test_sigma_relative_to_the_rms_is_a_column_and_keeps_its_curves_apart(tmp_path):
    absolute = {"layer_wise": {"layer_index": 3, "noise_type": "GaussAdd", "GaussStd": 0.5,
                               "enable_in_training": False}}
    relative = copy.deepcopy(absolute)
    relative["layer_wise"]["sigma_relative_to"] = "rms"
    df = load_results(write_store(tmp_path, [noisy_run(absolute), noisy_run(relative)]))
    assert list(df["sigma_relative_to"]) == ["none", "rms"]
    assert "sigma_relative_to" in CURVE_COLUMNS
    assert df.groupby([c for c in CURVE_COLUMNS if c in df], dropna=False).ngroups == 2


def test_repetition_is_the_site_value_or_the_mean_over_sites(tmp_path):
    plan = [1, 2, 3, 2, 1, 1, 4, 2]
    model = copy.deepcopy(F.MODEL)
    model["MLP"]["repetition_config"] = {"global": 1, "layer_wise_mapped": plan}
    site = F.make_config(site=6, sigma=1.0, model=model)
    glob = F.make_config(sigma=1.0, everywhere=True, model=model)
    store = write_store(tmp_path, [
        (c, F.make_result(c, 50.0, trained=False, checkpoint="/c.pt")) for c in (site, glob)])
    df = load_results(store)
    assert list(df["repetition"]) == [4.0, 2.0]


def test_weight_clamping_is_labelled(tmp_path):
    cfg = F.make_config(site=0, sigma=1.0)
    cfg["general"]["weight_clamping"] = {"min": -1.0, "max": 1.0}
    store = write_store(tmp_path, [(cfg, F.make_result(cfg, 50.0, trained=True,
                                                       checkpoint="/c.pt"))])
    assert load_results(store)["weight_clamping"].item() == "[-1, 1]"


# --------------------------------------------------------------------------- walk results


def test_walk_results_expand_into_one_row_per_evaluation(walk):
    df = load_results(walk.store)
    (cfg, result), = walk.runs.values()
    assert len(df) == len(result["evaluations"]) == len(F.SITE_NAMES) * len(F.SIGMAS) * 2
    assert list(df.columns) == COLUMNS
    assert set(df["placement"]) == {"layer_wise"} and set(df["run_id"]) == {"1"}
    assert set(df["eval_repeat"]) == {0, 1} and set(df["clean_accuracy"]) == {F.WALK_CLEAN}
    assert not df["enable_in_training"].any() and df["enable_in_eval"].all()
    first = df.iloc[0]
    assert (first["site"], first["site_name"], first["sigma"], first["eval_repeat"]) == \
        (0, "0:input", F.SIGMAS[0], 0)
    assert first["accuracy"] == F.curve_accuracy(F.SIGMAS[0], F.LOG_MID_WALK[0],
                                                 F.WALK_CLEAN) + 1.0
    table = sigma_mid_per_site(df).sort_values("site")
    np.testing.assert_allclose(np.log10(table["sigma_mid"]), F.LOG_MID_WALK, atol=1e-9)


def test_a_walk_over_a_noise_trained_model_counts_as_noisy_training(tmp_path, walk):
    (cfg, result), = copy.deepcopy(list(walk.runs.values()))
    cfg["noise_settings"]["default"] = {"noise_type": "GaussAdd", "GaussStd": 0.1,
                                        "enable_in_training": True, "enable_in_eval": False}
    store = write_store(tmp_path, [(cfg, result)])
    assert load_results(store)["enable_in_training"].all()


def test_a_walk_evaluation_without_accuracy_is_named(tmp_path, walk):
    (cfg, result), = copy.deepcopy(list(walk.runs.values()))
    del result["evaluations"][3]["accuracy"]
    store = write_store(tmp_path, [(cfg, result)])
    with pytest.raises(ValueError, match=r"run 1: evaluation 3 lacks \['accuracy'\]"):
        load_results(store)


# --------------------------------------------------------------------------- filters & states


def test_a_filter_selects_runs_in_a_run_store_like_mongodb(sweep):
    df = load_results(sweep.store, {"config.general.repeat_number": 1,
                                    "config.noise_settings.layer_wise.layer_index":
                                        {"$in": [2, 3]}})
    assert set(df["repeat_number"]) == {1} and set(df["site"]) == {2, 3}
    assert len(df) == 2 * len(F.SIGMAS)
    df = load_results(sweep.store, {"$or": [{"config.noise_settings.layer_wise":
                                             {"$exists": False}},
                                            {"config.noise_settings.layer_wise": None}],
                                    "result.final.validation_accuracy": {"$gte": 60}})
    assert set(df["placement"]) == {"none", "default"} and (df["accuracy"] >= 60).all()


def test_only_completed_runs_are_read_unless_states_say_otherwise(tmp_path):
    store = write_store(tmp_path, [clean_run(), (*clean_run(1), "FAILED"),
                                   (*clean_run(2), "RUNNING")])
    assert list(load_results(store)["run_id"]) == ["1"]
    assert list(load_results(store, states=["COMPLETED", "RUNNING"])["run_id"]) == ["1", "3"]


# --------------------------------------------------------------------------- bad input


def test_sources_are_told_apart():
    assert parse_source("mongodb:my.coll") == ("mongodb", "my.coll")
    assert parse_source("wn_MNIST_layer_wise") == ("mongodb", "wn_MNIST_layer_wise")
    assert parse_source("runs/") == ("run_store", "runs/")
    assert parse_source("./old_runs") == ("run_store", "./old_runs")
    with pytest.raises(ValueError, match="names no collection"):
        parse_source("mongodb:")


def test_a_missing_or_empty_run_store_says_so(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no runs"):
        load_results(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_results(tmp_path / "file")


def test_a_store_without_completed_runs_lists_the_statuses(tmp_path):
    store = write_store(tmp_path, [(*clean_run(), "FAILED")])
    with pytest.raises(ValueError, match=r"statuses present: \{'FAILED': 1\}"):
        load_results(store)


def test_a_filter_that_matches_nothing_says_so(sweep):
    with pytest.raises(ValueError, match="matching filter"):
        load_results(sweep.store, {"config.data.dataset": "MNIST"})
    with pytest.raises(ValueError, match="filter must be a dict"):
        load_results(sweep.store, "config.data.dataset=MNIST")


def test_a_run_without_its_accuracy_is_named_and_can_be_skipped(tmp_path, caplog):
    cfg, result = clean_run()
    broken = copy.deepcopy(result)
    del broken["final"]
    del broken["validation"]
    store = write_store(tmp_path, [(cfg, result), (cfg, broken)])
    with pytest.raises(ValueError, match=r"run 2: result lacks the final validation accuracy"):
        load_results(store)
    df = load_results(store, on_bad_run="skip")
    assert list(df["run_id"]) == ["1"]
    assert "left out 1 of 2 runs" in caplog.text


def test_a_completed_run_without_result_or_with_a_bad_config_is_named(tmp_path):
    cfg, result = clean_run()
    store = write_store(tmp_path, [(cfg, None)], "noresult")
    with pytest.raises(ValueError, match=r"run 1: has no result"):
        load_results(store)
    bad = copy.deepcopy(cfg)
    bad["model"]["model_class"] = "ResNet"
    store = write_store(tmp_path, [(bad, result)], "badconfig")
    with pytest.raises(ValueError, match=r"run 1: its config .*'ResNet'"):
        load_results(store)


def test_a_curve_with_a_single_sigma_is_a_clear_error(tmp_path):
    store = write_store(tmp_path, [clean_run(), noisy_run(
        {"layer_wise": {"layer_index": 2, "noise_type": "GaussAdd", "GaussStd": 1.0}})])
    with pytest.raises(ValueError, match=r"2:relu1.*at least two distinct σ"):
        sigma_mid_per_site(load_results(store))


def test_curves_without_a_noise_free_run_say_how_to_fix_it(tmp_path):
    runs = [noisy_run({"layer_wise": {"layer_index": 2, "noise_type": "GaussAdd",
                                      "GaussStd": s}}, acc=a) for s, a in ((0.1, 80), (1, 20))]
    df = load_results(write_store(tmp_path, runs))
    assert df["clean_accuracy"].isna().all()
    with pytest.raises(ValueError, match=r"no clean accuracy.*--clean-accuracy"):
        sigma_mid_per_site(df)
    assert sigma_mid_per_site(df, clean_accuracy=90.0)["sigma_mid"].item() == \
        pytest.approx(10 ** -0.5)   # level 50: halfway from σ 0.1 (80) to σ 1 (20)
    with pytest.raises(ValueError, match="every run is noise-free"):
        sigma_mid_per_site(df.assign(placement="none"))


# --------------------------------------------------------------------------- MongoDB


class FakeCollection:
    """The part of a pymongo collection that seml.get_results and analysis use."""

    def __init__(self, docs, names):
        self.docs = docs
        self.database = SimpleNamespace(list_collection_names=lambda: list(names))

    def find(self, query, fields):
        return [{k: copy.deepcopy(d[k]) for k in ["_id", *fields] if k in d}
                for d in self.docs if matches_query(d, query)]

    def count_documents(self, query):
        return len(self.find(query, []))

    def distinct(self, key):
        return sorted({d.get(key) for d in self.docs})


@pytest.fixture()
def fake_mongo(monkeypatch, sweep):
    import seml.database
    import seml.evaluation
    docs = F.mongo_documents(sweep.runs)
    docs.append({**copy.deepcopy(docs[0]), "_id": 999, "status": "FAILED", "result": None})
    collections = {"wn_sweep": FakeCollection(docs, ["wn_sweep", "other"])}

    def get_collection(name, mongodb_config=None):
        assert mongodb_config["serverSelectionTimeoutMS"] == 2000
        return collections.get(name, FakeCollection([], ["wn_sweep", "other"]))

    monkeypatch.setattr(seml.database, "get_collection", get_collection)
    monkeypatch.setattr(seml.evaluation, "get_collection", get_collection)
    return {"host": "db.example", "port": 27017, "db_name": "seml", "username": "",
            "password": ""}


def test_a_seml_collection_gives_the_same_table_as_the_run_store(fake_mongo, sweep, sweep_df):
    df = load_results("wn_sweep", mongodb_config=fake_mongo, timeout_s=2)
    pd.testing.assert_frame_equal(df, sweep_df)
    filtered = load_results("mongodb:wn_sweep", {"config.general.repeat_number": 1},
                            mongodb_config=fake_mongo, timeout_s=2)
    pd.testing.assert_frame_equal(
        filtered, load_results(sweep.store, {"config.general.repeat_number": 1}))


def test_a_missing_collection_lists_the_existing_ones(fake_mongo):
    with pytest.raises(ValueError, match=r"'nope' does not exist.*\['other', 'wn_sweep'\]"):
        load_results("nope", mongodb_config=fake_mongo, timeout_s=2)


def test_an_empty_selection_from_a_collection_lists_the_statuses(fake_mongo):
    with pytest.raises(ValueError, match=r"no run with status in \['COMPLETED'\] and matching"
                                         r".*'COMPLETED': 97, 'FAILED': 1"):
        load_results("wn_sweep", {"config.data.dataset": "CIFAR10"},
                     mongodb_config=fake_mongo, timeout_s=2)


def test_an_unreachable_server_is_a_clear_error_not_a_hang():
    cfg = {"host": "127.0.0.1", "port": 9, "db_name": "seml", "username": "", "password": ""}
    with pytest.raises(ValueError, match=r"cannot reach MongoDB at 127.0.0.1:9/seml"):
        load_results("mongodb:wn_anything", mongodb_config=cfg, timeout_s=0.3)


@pytest.fixture()
def live_collection():
    """A fresh collection on the test server, dropped afterwards."""
    import pymongo
    from seml.database import get_mongodb_config
    cfg = get_mongodb_config()
    client = pymongo.MongoClient(cfg["host"], int(cfg["port"]), serverSelectionTimeoutMS=5000)
    client.admin.command("ping")
    name = f"wn_test_analysis_{uuid.uuid4().hex[:8]}"
    db = client[cfg["db_name"]]
    yield db, name
    db.drop_collection(name)
    client.close()


@cluster_up
def test_live_mongodb_collection_gives_the_same_table_as_the_run_store(live_collection, sweep,
                                                                       sweep_df):
    db, name = live_collection
    db[name].insert_many(F.mongo_documents(sweep.runs))
    pd.testing.assert_frame_equal(load_results(name), sweep_df)
    pd.testing.assert_frame_equal(
        load_results(f"mongodb:{name}", {"config.noise_settings.layer_wise.layer_index": 5}),
        load_results(sweep.store, {"config.noise_settings.layer_wise.layer_index": 5}))


@cluster_up
def test_live_mongodb_missing_collection_is_a_clear_error(live_collection):
    _, name = live_collection
    with pytest.raises(ValueError, match=f"collection '{name}' does not exist"):
        load_results(f"mongodb:{name}")


# --------------------------------------------------------------------------- end to end


def test_runs_of_the_real_experiment_and_walk_load_into_the_table(tmp_path):
    """train.py's own result dicts (a plain run and a walk), stored by sacred, in one table."""
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred.observers import FileStorageObserver

    import train
    from learnable_fixtures import write_learnable_mnist

    write_learnable_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=256, n_test=128)
    base = {"data": {"dataset": "MNIST", "root": str(tmp_path / "data"), "download": False,
                     "batch_size": 64},
            "model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}},
            "general": {"num_epochs": 1}, "artifact_root": str(tmp_path / "art"),
            "device": "cpu"}
    observer = FileStorageObserver(str(tmp_path / "runs"))
    train.ex.observers.append(observer)
    try:
        opts = {"--loglevel": "ERROR"}
        train.ex.run(config_updates=base, options=opts)
        train.ex.run("walk", config_updates={**base, "walk": {"sigmas": [0.1, 1.0, 10.0],
                                                              "sites": [1, 3]}}, options=opts)
    finally:
        train.ex.observers.remove(observer)
    df = load_results(tmp_path / "runs")
    assert list(df["run_id"]) == ["1"] + ["2"] * 6
    clean, walked = df.iloc[0], df.iloc[1:]
    assert clean["placement"] == "none" and clean["trained"] == True  # noqa: E712
    assert list(walked["site_name"]) == ["1:fc1"] * 3 + ["3:fc2"] * 3
    assert list(walked["sigma"]) == [0.1, 1.0, 10.0] * 2
    assert (walked["trained"] == False).all()  # noqa: E712 - the walk reused run 1's model
    assert (walked["checkpoint"] == clean["checkpoint"]).all()
    assert (walked["clean_accuracy"] == clean["accuracy"]).all()
    assert set(df["chance"]) == {10.0} and set(df["dataset"]) == {"MNIST"}
