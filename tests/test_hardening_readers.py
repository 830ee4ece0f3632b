"""Readers of a run store and the analysis never crash on, nor silently drop, one bad run:
unreadable runs are warned about with their path and a count; diverged runs, runs with a
non-finite σ and the noise generator are shown (issue 14, points 2, 3 and 6)."""
import copy
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import analysis_fixtures as F
from analysis.cli import main
from analysis.midpoint import midpoint
from analysis.results import CURVE_COLUMNS, load_results, sigma_mid_per_site
from util.config_paths import matches_query
from util.run_store import iter_runs

SITE = 2                                   # the curve's site (2:relu1)
LOG_MID = F.LOG_MID_CLEAN[SITE]            # its known log10 σ_mid (0.5)


def write_curve_store(store: Path, *, extra=(), generators=None) -> int:
    """A clean run (id 1) and the clean-training curve at SITE over F.SIGMAS (ids 2..6), then
    ``extra`` runs (config, result[, status]); returns the number of runs written.
    ``generators``: the ``noise_generator`` of each curve run's result (None: no such key)."""
    cfg = F.make_config(seed=100)
    F.write_run(store, 1, cfg, F.make_result(cfg, F.CLEAN[0], trained=True,
                                             checkpoint="/ckpt/clean0.pt"))
    rid = 1
    for i, s in enumerate(F.SIGMAS):
        cfg = F.make_config(site=SITE, sigma=s, seed=rid)
        result = F.make_result(cfg, F.curve_accuracy(s, LOG_MID, F.CLEAN[0]), trained=False,
                               checkpoint="/ckpt/clean0.pt")
        if generators is not None:
            result["noise_generator"] = generators[i]
        rid += 1
        F.write_run(store, rid, cfg, result)
    for run in extra:
        rid += 1
        F.write_run(store, rid, *run)
    return rid


def non_finite_sigma_run(value: float, accuracy: float = F.CHANCE):
    """A run at SITE whose stored config has GaussStd ``value`` (written by a version that
    accepted it); the result is shaped like any other run's."""
    cfg = F.make_config(site=SITE, sigma=1.0, seed=77)
    result = F.make_result(cfg, accuracy, trained=False, checkpoint="/ckpt/clean0.pt")
    cfg["noise_settings"]["layer_wise"]["GaussStd"] = value
    return cfg, result


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- iter_runs


def test_iter_runs_warns_about_a_truncated_run_json_with_its_path_and_a_count(tmp_path,
                                                                              caplog):
    store = tmp_path / "runs"
    n = write_curve_store(store)
    text = (store / "3" / "run.json").read_text()
    (store / "3" / "run.json").write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING):
        ids = [r.run_id for r in iter_runs(store)]
    assert ids == [str(i) for i in range(1, n + 1) if i != 3]
    messages = warnings_of(caplog)
    assert any(str(store / "3") in m and "run.json is not valid JSON" in m for m in messages)
    assert f"skipped 1 of {n} runs in {store}: unreadable" in messages


@pytest.mark.parametrize("file, content", [("run.json", "null"), ("run.json", "[1, 2]"),
                                           ("run.json", "3"), ("config.json", "null"),
                                           ("config.json", '{"general": ')])
def test_iter_runs_skips_a_run_file_that_is_not_a_json_object_with_a_warning(
        tmp_path, caplog, file, content):
    store = tmp_path / "runs"
    n = write_curve_store(store)
    (store / "4" / file).write_text(content)
    with caplog.at_level(logging.WARNING):
        runs = list(iter_runs(store))
    assert [r.run_id for r in runs] == [str(i) for i in range(1, n + 1) if i != 4]
    assert all(isinstance(r.config, dict) and isinstance(r.run, dict) for r in runs)
    messages = warnings_of(caplog)
    assert any(str(store / "4") in m and file in m for m in messages)
    assert f"skipped 1 of {n} runs in {store}: unreadable" in messages


def test_a_running_run_is_not_reported_as_unreadable(tmp_path, caplog):
    """sacred writes run.json (RUNNING) just before config.json: such a run is not started
    yet, not broken; a RUNNING run with both files is an ordinary run."""
    store = tmp_path / "runs"
    cfg, result = non_finite_sigma_run(1.0)
    F.write_run(store, 1, cfg, result, status="RUNNING")
    F.write_run(store, 2, cfg, result, status="RUNNING")
    (store / "2" / "config.json").unlink()
    with caplog.at_level(logging.WARNING):
        runs = list(iter_runs(store))
    assert [(r.run_id, r.status) for r in runs] == [("1", "RUNNING")]
    assert warnings_of(caplog) == []


def test_the_reuse_lookup_finds_a_model_past_a_run_json_holding_null(tmp_path, monkeypatch):
    import util.engine.checkpoints as checkpoints

    store = tmp_path / "runs"
    cfg = F.make_config()
    result = F.make_result(cfg, 90.0, trained=True, checkpoint="/ckpt/model.pt")
    F.write_run(store, 1, cfg, result)
    F.write_run(store, 2, cfg, result)
    (store / "1" / "run.json").write_text("null")
    monkeypatch.setattr(checkpoints, "verify", lambda path: path == "/ckpt/model.pt")
    assert checkpoints.find_trained_checkpoint(result["training_hash"], tmp_path / "none",
                                               run_store=store) == ("/ckpt/model.pt", "run_store")


# --------------------------------------------------------------------------- the analysis


def test_load_results_warns_about_the_unreadable_run_it_leaves_out(tmp_path, caplog):
    store = tmp_path / "runs"
    n = write_curve_store(store)
    text = (store / "5" / "config.json").read_text()
    (store / "5" / "config.json").write_text(text[:40])
    with caplog.at_level(logging.WARNING):
        df = load_results(store)
    assert sorted(df["run_id"], key=int) == [str(i) for i in range(1, n + 1) if i != 5]
    messages = warnings_of(caplog)
    assert any(str(store / "5") in m and "config.json" in m for m in messages)
    assert f"skipped 1 of {n} runs in {store}: unreadable" in messages


def test_analysis_table_goes_on_past_a_run_json_holding_null(tmp_path, capsys, caplog):
    store = tmp_path / "runs"
    n = write_curve_store(store)
    (store / "6" / "run.json").write_text("null")
    with caplog.at_level(logging.WARNING):
        code = main(["table", str(store), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"read {n - 1} rows from {n - 1} runs" in out
    assert f"skipped 1 of {n} runs in {store}: unreadable" in warnings_of(caplog)
    # four σ are left at the site (σ = 100 is gone); the crossing is still between 1 and 10
    table = pd.read_csv(tmp_path / "out" / "sigma_mid.csv")
    assert table["sigma_mid"].item() == pytest.approx(10 ** LOG_MID)


def test_bad_runs_are_left_out_with_a_warning_each_and_the_cli_goes_on(tmp_path, capsys,
                                                                       caplog):
    """A result that is a string and a config that lacks sections: named, counted, left out
    by the analysis; --strict and the library's default name the first one in an error."""
    lacking = copy.deepcopy(non_finite_sigma_run(1.0))
    del lacking[0]["model"], lacking[0]["noise_settings"]
    store = tmp_path / "runs"
    n = write_curve_store(store, extra=[(F.make_config(site=SITE, sigma=1.0), "oops"),
                                        lacking])
    with caplog.at_level(logging.WARNING):
        code = main(["table", str(store), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    messages = warnings_of(caplog)
    assert any(str(store / str(n - 1)) in m and "has no result" in m and "'oops'" in m
               for m in messages)
    assert any(str(store / str(n)) in m and "lacks the section(s) ['model', 'noise_settings']"
               in m for m in messages)
    assert any(f"left out 2 of {n} runs" in m for m in messages)
    assert pd.read_csv(tmp_path / "out" / "sigma_mid.csv")["sigma_mid"].item() == \
        pytest.approx(10 ** LOG_MID)
    code = main(["table", str(store), "--strict", "--out-dir", str(tmp_path / "out")])
    assert code == 2 and f"run {n - 1}: has no result" in capsys.readouterr().err
    with pytest.raises(ValueError, match=rf"run {n}: its config lacks the section"):
        load_results(store, {"_id": n})


def test_runs_that_are_not_finished_are_left_out_quietly(tmp_path, caplog):
    store = tmp_path / "runs"
    cfg, result = non_finite_sigma_run(1.0)
    n = write_curve_store(store, extra=[(cfg, result, "FAILED"), (cfg, None, "RUNNING")])
    with caplog.at_level(logging.INFO):
        df = load_results(store, states=None)
    assert sorted(df["run_id"], key=int) == [str(i) for i in range(1, n - 1)]
    assert warnings_of(caplog) == []
    assert "left out 2 runs without a result (not finished: {'FAILED': 1, 'RUNNING': 1})" \
        in caplog.text


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_run_with_a_non_finite_sigma_is_a_row_left_out_of_the_fit(tmp_path, caplog, value):
    store = tmp_path / "runs"
    n = write_curve_store(store, extra=[non_finite_sigma_run(value)])
    assert ("Infinity" if value == math.inf else "NaN") in \
        (store / str(n) / "config.json").read_text()   # what sacred's json writer writes
    with caplog.at_level(logging.WARNING):
        df = load_results(store)
        table = sigma_mid_per_site(df)
    row = df[df["run_id"] == str(n)].iloc[0]
    assert row["site"] == SITE and row["placement"] == "layer_wise"
    assert (row["sigma"] == math.inf) if value == math.inf else math.isnan(row["sigma"])
    assert table["sigma_mid"].item() == pytest.approx(10 ** LOG_MID)
    assert table["n_left_out"].item() == 1 and table["n_sigmas"].item() == len(F.SIGMAS)
    messages = warnings_of(caplog)
    assert any(str(store / str(n)) in m and f"σ = {value}: shown as a row, left out of σ_mid "
               "fits" in m for m in messages)          # when it is read
    assert any("σ_mid per site: left out 1 of" in m and f"run {n} (σ = {value}" in m
               for m in messages)                     # when the fit leaves it out


def test_a_walk_evaluation_with_a_non_finite_sigma_is_a_row_left_out_of_the_fit(tmp_path,
                                                                               caplog):
    store = tmp_path / "runs"
    F.build_walk_store(store, tmp_path / "art")
    run = json.loads((store / "1" / "run.json").read_text())
    evaluation = run["result"]["evaluations"][0]       # site 0, the smallest σ, repeat 0
    evaluation["noise"]["GaussStd"] = evaluation["sigma"] = math.inf
    (store / "1" / "run.json").write_text(json.dumps(run, sort_keys=True, indent=2))
    with caplog.at_level(logging.WARNING):
        df = load_results(store)
        table = sigma_mid_per_site(df).sort_values("site")
    assert len(df) == len(F.SITE_NAMES) * len(F.SIGMAS) * 2
    assert df.loc[0, "sigma"] == math.inf and df.loc[0, "site"] == 0
    assert table["n_left_out"].tolist() == [1] + [0] * (len(F.SITE_NAMES) - 1)
    np.testing.assert_allclose(np.log10(table["sigma_mid"].iloc[1:]), F.LOG_MID_WALK[1:],
                               atol=1e-9)
    messages = warnings_of(caplog)
    assert any(m.startswith(f"{store / '1'}, evaluation 0: ") and "σ = inf: shown as a row" in m
               for m in messages)
    assert not any(m.startswith(f"{store / '1'}: ") for m in messages)   # said once


def test_analysis_table_and_plot_show_a_store_with_a_sigma_inf_run(tmp_path, capsys):
    store = tmp_path / "runs"
    n = write_curve_store(store, extra=[non_finite_sigma_run(math.inf)])
    code = main(["results", str(store), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results.loc[results["run_id"] == n, "sigma"].item() == math.inf
    code = main(["table", str(store), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"1 rows are left out of the σ_mid fit (σ or accuracy not finite): run {n} " \
           f"(σ = inf" in out
    code = main(["plot", str(store), "--out-dir", str(tmp_path / "plots")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.suffix for p in (tmp_path / "plots").iterdir()) == [".pdf", ".pdf",
                                                                        ".png", ".png"]


def write_with_sacred(store: Path, config: dict, result: dict) -> None:
    """One run stored by sacred's own FileStorageObserver (its json writer, its layout)."""
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred import Experiment
    from sacred.observers import FileStorageObserver

    quiet = logging.getLogger("sacred-test")
    quiet.setLevel(logging.ERROR)
    ex = Experiment("walking-noise", save_git_info=False)
    ex.logger = quiet
    ex.observers.append(FileStorageObserver(str(store)))
    ex.add_config({k: v for k, v in config.items() if k != "seed"})
    ex.main(lambda: result)
    ex.run()


def diverged_result(config: dict, final_accuracy) -> dict:
    """A noisy-training run whose loss became NaN in epoch 2 (interface 1)."""
    result = F.make_result(config, 50.0, trained=True, checkpoint="/ckpt/diverged.pt")
    result["diverged"] = {"epoch": 2, "what": "loss"}
    result["training"]["loss"] = [1.0, math.nan]
    result["validation"] = {"loss": [math.nan, math.nan], "accuracy": [math.nan, math.nan]}
    result["final"] = {"validation_accuracy": final_accuracy, "validation_loss": math.nan}
    del result["test"]
    return result


@pytest.mark.parametrize("final_accuracy", [math.nan, None])
def test_a_diverged_run_is_shown_and_counts_as_chance_in_the_fit(tmp_path, capsys,
                                                                final_accuracy):
    """Noisy training at SITE; the run at σ = 10 diverged: its model is at chance."""
    store = tmp_path / "runs"
    cfg = F.make_config(seed=100)
    write_with_sacred(store, cfg, F.make_result(cfg, F.CLEAN[0], trained=True,
                                                checkpoint="/ckpt/clean0.pt"))
    accuracies = []
    for s in F.SIGMAS:
        cfg = F.make_config(site=SITE, sigma=s, training=True, seed=7)
        if s == 10.0:
            write_with_sacred(store, cfg, diverged_result(cfg, final_accuracy))
            accuracies.append(F.CHANCE)
        else:
            acc = F.curve_accuracy(s, LOG_MID, F.CLEAN[0])
            write_with_sacred(store, cfg, F.make_result(cfg, acc, trained=True,
                                                        checkpoint=f"/ckpt/{s}.pt"))
            accuracies.append(acc)
    assert "NaN" in (store / "5" / "run.json").read_text()   # sacred's json writer
    df = load_results(store)
    assert np.isnan(df.loc[df["run_id"] != "5", "diverged"]).all()
    diverged = df[df["run_id"] == "5"].iloc[0]
    assert diverged["diverged"] == 2 and math.isnan(diverged["accuracy"])
    assert math.isnan(diverged["loss"])
    table = sigma_mid_per_site(df)
    expected = midpoint(F.SIGMAS, accuracies, F.CLEAN[0], F.CHANCE)
    assert table["sigma_mid"].item() == pytest.approx(expected.sigma_mid)
    assert expected.sigma_mid < 10 ** LOG_MID - 0.5   # the diverged point moved it
    assert table["n_diverged"].item() == 1 and table["n_left_out"].item() == 0
    code = main(["table", str(store), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1 runs diverged in training" in out and "diverged_epoch" in out
    (line,) = [ln for ln in out.splitlines() if ln.split()[:1] == ["5"]]
    assert line.split()[-2:] == ["2", "NaN"]   # the diverged epoch, its accuracy


def test_results_without_the_new_keys_load_as_not_diverged_and_unknown_generator(tmp_path):
    store = tmp_path / "runs"
    write_curve_store(store)
    df = load_results(store)
    assert df["diverged"].isna().all() and df["diverged"].dtype == np.float64
    assert df["noise_generator"].isna().all()
    assert "noise_generator" in df.columns and "noise_generator" not in CURVE_COLUMNS


def test_a_curve_of_mixed_noise_generators_is_labelled_and_warned_about(tmp_path, caplog):
    store = tmp_path / "runs"
    gens = ["fast_rng", "fast_rng", "torch.randn", "torch.randn", "torch.randn"]
    write_curve_store(store, generators=gens)
    df = load_results(store)
    assert df["noise_generator"].tolist() == [None] + gens   # the clean run: no key
    with caplog.at_level(logging.WARNING):
        table = sigma_mid_per_site(df)
    assert table["noise_generator"].item() == "fast_rng+torch.randn"
    assert any("mixes noise generators {'fast_rng': 2, 'torch.randn': 3}" in m
               for m in warnings_of(caplog))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        split = sigma_mid_per_site(df, [*CURVE_COLUMNS, "noise_generator"])
    assert split["noise_generator"].tolist() == ["fast_rng", "torch.randn"]
    assert split["n_sigmas"].tolist() == [2, 3] and warnings_of(caplog) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pure = sigma_mid_per_site(df.assign(noise_generator="fast_rng"))
    assert pure["noise_generator"].item() == "fast_rng" and warnings_of(caplog) == []


def test_curve_points_count_a_diverged_run_without_accuracy_as_chance():
    from analysis.results import curve_points

    df = pd.DataFrame({"run_id": ["1", "2", "3", "4"], "sigma": [0.1, 1.0, math.inf, 1.0],
                       "accuracy": [80.0, math.nan, 10.0, math.nan],
                       "diverged": [math.nan, 3.0, math.nan, math.nan],
                       "chance": [10.0] * 4})
    points = curve_points(df)
    assert points["run_id"].tolist() == ["1", "2"]
    assert points["accuracy"].tolist() == [80.0, 10.0]


# --------------------------------------------------------------------------- MongoDB


class FakeCollection:
    """The part of a pymongo collection that seml.get_results and analysis use."""

    def __init__(self, docs):
        self.docs = docs
        self.database = SimpleNamespace(list_collection_names=lambda: ["wn"])

    def find(self, query, fields):
        return [{k: copy.deepcopy(d[k]) for k in ["_id", *fields] if k in d}
                for d in self.docs if matches_query(d, query)]

    def count_documents(self, query):
        return len(self.find(query, []))

    def distinct(self, key):
        return sorted({d.get(key) for d in self.docs})


def test_malformed_documents_of_a_collection_are_named_and_left_out(tmp_path, monkeypatch,
                                                                   caplog):
    import seml.database
    import seml.evaluation

    store = tmp_path / "runs"
    n = write_curve_store(store)
    runs = {int(r.run_id): (r.config, r.result) for r in iter_runs(store)}
    docs = F.mongo_documents(runs)
    docs.append({**copy.deepcopy(docs[0]), "_id": 41, "result": "oops"})
    docs.append({**copy.deepcopy(docs[0]), "_id": 42, "config": None})
    collection = FakeCollection(docs)
    get = lambda name, mongodb_config=None: collection  # noqa: E731
    monkeypatch.setattr(seml.database, "get_collection", get)
    monkeypatch.setattr(seml.evaluation, "get_collection", get)
    config = {"host": "db.example", "port": 27017, "db_name": "seml", "username": "",
              "password": ""}
    with caplog.at_level(logging.WARNING):
        df = load_results("mongodb:wn", mongodb_config=config, timeout_s=1,
                          on_bad_run="skip")
    assert sorted(df["run_id"], key=int) == [str(i) for i in range(1, n + 1)]
    messages = warnings_of(caplog)
    assert any("collection 'wn' _id=41" in m and "has no result" in m for m in messages)
    assert any("collection 'wn' _id=42" in m and "has no config" in m for m in messages)
    assert any(f"left out 2 of {n + 2} runs" in m for m in messages)
    pd.testing.assert_frame_equal(df, load_results(store))
