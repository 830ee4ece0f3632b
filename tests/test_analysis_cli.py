"""python -m analysis: results, table, plot, weights and plan on a synthetic run store with
known midpoints; every subcommand says what it wrote, bad input ends in one error line."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

import analysis_fixtures as F
from analysis.cli import main
from analysis.tables import apply_where
from analysis.repetition import SCALINGS, repetition_plan
from analysis.results import COLUMNS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    runs = F.build_sweep_store(root / "runs", root / "art")
    return SimpleNamespace(store=root / "runs", runs=runs)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def wrote(out: str) -> list[Path]:
    return [Path(line[len("wrote "):]) for line in out.splitlines() if line.startswith("wrote ")]


def test_results_writes_the_tidy_table_as_csv(sweep, tmp_path, capsys):
    code, out, _ = run(capsys, "results", sweep.store, "--out-dir", tmp_path)
    assert code == 0
    (csv,) = wrote(out)
    assert csv == tmp_path / "results.csv"
    df = pd.read_csv(csv)
    assert list(df.columns) == COLUMNS and len(df) == len(sweep.runs)
    assert f"read {len(sweep.runs)} rows from {len(sweep.runs)} runs" in out


def test_table_writes_and_prints_sigma_mid_per_site(sweep, tmp_path, capsys):
    code, out, _ = run(capsys, "table", sweep.store, "--out-dir", tmp_path,
                       "--where", "enable_in_training=false", "--where", "placement=layer_wise")
    assert code == 0
    (csv,) = wrote(out)
    table = pd.read_csv(csv).sort_values("site")
    np.testing.assert_allclose(np.log10(table["sigma_mid"]), F.LOG_MID_CLEAN, atol=1e-9)
    for name in F.SITE_NAMES:
        assert name in out
    assert "crossing" in out


def test_where_keeps_rows_by_column_values(sweep):
    from analysis.results import load_results
    df = load_results(sweep.store)
    kept = apply_where(df, ["site=1,5", "enable_in_training=true"])
    assert set(kept["site"]) == {1, 5} and kept["enable_in_training"].all()
    assert set(apply_where(df, ["placement!=layer_wise"])["placement"]) == {"none", "default"}
    with pytest.raises(ValueError, match="unknown column 'sites'"):
        apply_where(df, ["sites=1"])
    with pytest.raises(ValueError, match="expected a number"):
        apply_where(df, ["sigma=big"])
    with pytest.raises(ValueError, match="no rows left"):
        apply_where(df, ["conf_name=LeNet5"])


def test_plot_writes_curves_per_condition_and_the_sigma_mid_figure(sweep, tmp_path, capsys):
    code, out, _ = run(capsys, "plot", sweep.store, "--out-dir", tmp_path)
    assert code == 0
    paths = wrote(out)
    names = sorted(p.name for p in paths)
    assert names == sorted([
        "walking_noise_FashionMNIST_RL_TFC-noBN_GaussAdd_clean_training.png",
        "walking_noise_FashionMNIST_RL_TFC-noBN_GaussAdd_clean_training.pdf",
        "walking_noise_FashionMNIST_RL_TFC-noBN_GaussAdd_noisy_training.png",
        "walking_noise_FashionMNIST_RL_TFC-noBN_GaussAdd_noisy_training.pdf",
        "sigma_mid_FashionMNIST_GaussAdd.png", "sigma_mid_FashionMNIST_GaussAdd.pdf"])
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        assert p.read_bytes()[:4] in (b"\x89PNG", b"%PDF")


def test_weights_compares_clean_and_noise_trained_checkpoints(sweep, tmp_path, capsys):
    code, out, _ = run(capsys, "weights", sweep.store, "--out-dir", tmp_path,
                       "--max-models", "3")
    assert code == 0
    paths = wrote(out)
    assert [p.name for p in paths] == ["weights.csv", "weights_FashionMNIST_RL_TFC-noBN.png",
                                       "weights_FashionMNIST_RL_TFC-noBN.pdf"]
    table = pd.read_csv(paths[0])
    # 2 clean models + one per noisy-training run, 4 conv/linear layers each
    n_models = len(F.CLEAN) + len(F.NOISY_SITES) * len(F.SIGMAS)
    assert table["model"].nunique() == n_models and len(table) == 4 * n_models
    clean, noisy = table[table["training"] == "clean"], table[table["training"] == "noisy"]
    assert (noisy["binarisation_index"] == 1.0).all() and (noisy["mean_abs"] == 0.5).all()
    assert (clean["binarisation_index"] < 0.3).all()
    assert "clean training, repeat 0" in out and "GaussAdd σ=10 at 5:fc3, repeat 0" in out


def test_plan_writes_a_multi_run_layers_yaml_from_the_measured_sigma_mid(sweep, tmp_path,
                                                                         capsys):
    out_file = tmp_path / "experiment_configs" / "multi_run_layers" / "plan.yaml"
    code, out, _ = run(capsys, "plan", sweep.store, "--where", "enable_in_training=false",
                       "--budget", "2", "--budget", "1.5", "--repeats", "3",
                       "--scaling", "inverse_sqrt", "--scaling", "layer_sort", "--out", out_file)
    assert code == 0 and wrote(out) == [out_file]
    doc = yaml.safe_load(out_file.read_text())
    assert doc["seml"]["executable"] == "train.py" and doc["seml"]["description"]
    assert (out_file.parent / doc["seml"]["project_root_dir"]).resolve() == ROOT
    fixed = doc["fixed"]
    assert fixed["model.model_class"] == "MLP" and fixed["model.MLP.conf_name"] == "RL_TFC-noBN"
    assert fixed["data.dataset"] == "FashionMNIST" and fixed["general.num_epochs"] == 2
    assert fixed["noise_settings.default.noise_type"] == "GaussAdd"
    assert fixed["noise_settings.default.GaussStd"] == pytest.approx(10 ** F.LOG_MID_GLOBAL,
                                                                     rel=1e-5)
    assert fixed["noise_settings.default.enable_in_training"] == 0
    assert doc["grid"]["general.repeat_number"] == {"type": "range", "min": 0, "max": 3,
                                                    "step": 1}
    sigma_mid = [10 ** m for m in F.LOG_MID_CLEAN]
    expected = {f"{s}_b{b}": repetition_plan(sigma_mid, float(b.replace("p", ".")), s)
                for s in ("inverse_sqrt", "layer_sort") for b in ("2", "1p5")}
    expected["uniform_b2"] = [2] * 8
    subs = {k: v for k, v in doc.items() if k not in ("seml", "slurm", "fixed", "grid")}
    assert set(subs) == set(expected)
    for name, plan in expected.items():
        mapped = subs[name]["fixed"]["model.MLP.repetition_config.layer_wise_mapped"]
        assert mapped == plan
        budget = 1.5 if name.endswith("1p5") else 2
        assert sum(mapped) == round(budget * 8) and min(mapped) >= 1
    # the least robust site (0:input, smallest σ_mid) gets the most under inverse_sqrt
    assert np.argmax(subs["inverse_sqrt_b2"]["fixed"]
                     ["model.MLP.repetition_config.layer_wise_mapped"]) == 0


def test_the_plan_yaml_expands_with_seml_and_every_experiment_validates(sweep, tmp_path,
                                                                         capsys):
    validate_configs = pytest.importorskip("util.validate_configs")
    out_file = tmp_path / "plan.yaml"
    code, _, _ = run(capsys, "plan", sweep.store, "--where", "enable_in_training=false",
                     "--repeats", "2", "--sigma", "0.1", "--sigma", "0.3", "--out", out_file)
    assert code == 0
    report = validate_configs.validate_file(out_file)
    assert report.problems == []
    n_plans = len(SCALINGS) * 2 + 2          # budgets 2 and 3, plus the uniform baselines
    assert report.n_experiments == n_plans * 2 * 2   # x 2 σ x 2 repeats
    expansion = validate_configs.expand_file(out_file)
    configs = [e.config for e in expansion.experiments]
    assert {c["noise_settings"]["default"]["GaussStd"] for c in configs} == {0.1, 0.3}
    assert all(len(c["model"]["MLP"]["repetition_config"]["layer_wise_mapped"]) == 8
               for c in configs)


def test_plan_sigmas_reach_the_seml_experiments_unrounded(sweep, tmp_path, capsys):
    validate_configs = pytest.importorskip("util.validate_configs")
    out_file = tmp_path / "plan.yaml"
    code, _, _ = run(capsys, "plan", sweep.store, "--where", "enable_in_training=false",
                     "--repeats", "1", "--scaling", "inverse_sqrt", "--budget", "2",
                     "--sigma", "0.123456789", "--sigma", "1e-10", "--out", out_file)
    assert code == 0
    configs = [e.config for e in validate_configs.expand_file(out_file).experiments]
    assert {c["noise_settings"]["default"]["GaussStd"] for c in configs} == {0.123456789,
                                                                              1e-10}


def test_plan_refuses_several_conditions_and_lists_them(sweep, tmp_path, capsys):
    code, out, err = run(capsys, "plan", sweep.store, "--out-dir", tmp_path)
    assert code == 2 and out.count("wrote") == 0
    assert err.startswith("error: the results hold 2 conditions")
    assert "clean training" in err and "noisy training" in err and "Traceback" not in err


def test_plan_needs_every_site(sweep, tmp_path, capsys):
    code, _, err = run(capsys, "plan", sweep.store, "--where", "enable_in_training=true",
                       "--sigma", "1", "--out-dir", tmp_path)
    assert code == 2
    assert "σ_mid is missing at site(s) ['0:input', '2:relu1'" in err


def test_plan_without_a_global_curve_asks_for_sigma(tmp_path, capsys):
    store = tmp_path / "runs"
    F.build_sweep_store(store, tmp_path / "art", repeats=(0,), noisy=False, global_curve=False)
    code, _, err = run(capsys, "plan", store, "--out-dir", tmp_path)
    assert code == 2 and "pass --sigma" in err
    code, _, err = run(capsys, "plan", store, "--out-dir", tmp_path, "--scaling", "sqrtt")
    assert code == 2 and "unknown scaling(s) ['sqrtt']" in err


def test_bad_sources_end_in_one_error_line(tmp_path, capsys):
    code, out, err = run(capsys, "table", tmp_path / "missing")
    assert code == 2 and err.startswith("error: run store") and "does not exist" in err
    code, _, err = run(capsys, "table", tmp_path, "--filter", "{not json")
    assert code == 2 and "--filter is not valid JSON" in err
    code, _, err = run(capsys, "table", "mongodb:")
    assert code == 2 and "names no collection" in err and "Traceback" not in err


def test_default_output_folder_is_named_after_the_source(sweep, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "table", sweep.store)
    assert code == 0
    assert wrote(out) == [Path("analysis_output") / "runs" / "sigma_mid.csv"]
    assert (tmp_path / "analysis_output" / "runs" / "sigma_mid.csv").is_file()


def test_python_dash_m_analysis_runs(sweep, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", "table", str(sweep.store),
                           "--out-dir", str(tmp_path), "--where", "site=5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "sigma_mid.csv")
    assert sorted(np.log10(table["sigma_mid"]).round(9)) == \
        sorted([F.LOG_MID_CLEAN[5], F.NOISY_SITES[5]])
    assert "pkg_resources" not in proc.stderr
