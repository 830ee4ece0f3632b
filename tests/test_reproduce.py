"""analysis.reproduce at a toy scale: the learnable MNIST fixture, 1 epoch, two models.

Checks the tables the document is built from (shapes, the σ each experiment used, budgets,
clamping, overflow bookkeeping), the document and figures, and that a second run reuses every
trained model and reproduces the numbers exactly.
"""
import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.repetition import SCALINGS
from analysis.reproduce import (SCALES, Reproduction, Scale, markdown_table, select_sites,
                                write_document)
from analysis.reproduce.experiments import round_sig
from learnable_fixtures import write_learnable_mnist

LENET5_BN = ["input", "conv", "bn", "relu", "maxpool", "conv", "bn", "relu", "maxpool", "fc",
             "bn", "relu", "fc", "bn", "relu", "logits"]  # site kinds (models.model_site_kinds)

TOY = Scale("toy", epochs=1, models=("RL_TFC-noBN", "LeNet5-BN"), walk_repeats=1,
            eval_repeats=2, walk_max_evals=6, sigma_range=(1e-2, 1e4), global_max_evals=5,
            global_range=(1e-3, 1e3), site_factors=(1.0, 10 ** 0.5),
            site_selection={"MLP": "ends", "LeNet": "ends"},
            mul_sigmas_global=(1.0, 1e10), mul_sigmas_site=(1e10,), budgets=(2.0,))
N_SITES = {"RL_TFC-noBN": 8, "LeNet5-BN": 16}


def test_site_selection_rules():
    assert select_sites(LENET5_BN, "all") == list(range(16))
    assert select_sites(LENET5_BN, "computation") == [0, 1, 5, 9, 12, 15]
    assert select_sites(LENET5_BN, "alternate") == [0, 2, 4, 6, 8, 10, 12, 14, 15]
    assert select_sites(LENET5_BN, "ends") == [0, 8, 15]
    mlp = ["input", "fc", "relu", "fc", "relu", "fc", "relu", "logits"]
    assert select_sites(mlp, "computation") == [0, 1, 3, 5, 7]
    with pytest.raises(ValueError, match="unknown site selection"):
        select_sites(mlp, "most")


def test_site_selection_of_the_four_models_from_their_site_kinds():
    from models import model_site_kinds
    computation = {"LeNet5": [0, 1, 4, 7, 9, 11], "LeNet5-BN": [0, 1, 5, 9, 12, 15],
                   "RL_TFC-noBN": [0, 1, 3, 5, 7], "RL_TFC": [0, 1, 4, 7, 10]}
    for conf, expected in computation.items():
        family = "LeNet" if conf.startswith("LeNet") else "MLP"
        kinds = model_site_kinds({"model_class": family, family: {"conf_name": conf}})
        assert select_sites(kinds, "computation") == expected


def test_markdown_table_and_rounding():
    df = pd.DataFrame({"a": [1, 2], "b": [0.123456, float("nan")], "c": [True, False]})
    text = markdown_table(df, {"a": "A", "b": "B", "c": "C"})
    lines = text.split("\n")
    assert lines[0] == "| A | B | C |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.123 | yes |" and lines[3] == "| 2 | n/a | no |"
    assert round_sig(0.123456) == 0.123 and round_sig(123456.0) == 123000.0


def test_scales_are_ordered_by_cost():
    small, full = SCALES["small"], SCALES["full"]
    assert SCALES["smoke"].epochs <= small.epochs < full.epochs
    assert small.models == full.models == ("LeNet5", "LeNet5-BN", "RL_TFC-noBN", "RL_TFC")
    assert max(full.mul_sigmas_global) == max(small.mul_sigmas_site) == 1e10


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    write_learnable_mnist(root / "data" / "MNIST" / "raw", n_train=2000, n_test=500)
    overrides = {"data": {"dataset": "MNIST", "root": str(root / "data"), "download": False,
                          "batch_size": 64}}
    torch.set_num_threads(1)
    rep = Reproduction(TOY, artifact_root=root / "art", overrides=overrides).run()
    doc = write_document(rep, root / "docs", command="toy")
    again = Reproduction(TOY, artifact_root=root / "art", overrides=overrides).run()
    return rep, again, doc


def test_clean_models_and_per_site_profile(toy_run):
    rep, _, _ = toy_run
    clean = rep.tables["clean"]
    assert list(clean["model"]) == list(TOY.models)
    assert (clean["clean_accuracy"] > 60).all()  # the toy task is learnt in one epoch
    d = rep.tables["d_sites"]
    for m, n in N_SITES.items():
        rows = d[d["model"] == m]
        assert sorted(rows["site"]) == list(range(n))
        assert sorted(rows["rank"]) == list(range(1, n + 1))  # 1 = least robust
        least = rows.loc[rows["rank"] == 1, "sigma_mid"].iloc[0]
        assert least == rows["sigma_mid"].min()
        crossing = rows[rows["kind"] == "crossing"]
        assert ((crossing["sigma_mid"] > TOY.sigma_range[0])
                & (crossing["sigma_mid"] < TOY.sigma_range[1])).all()


def test_multi_execution_plans_spend_equal_budgets(toy_run):
    rep, _, _ = toy_run
    g = rep.tables["e_global"]
    assert (g["global_sigma_mid"] > 0).all() and set(g["model"]) == set(TOY.models)
    pl = rep.tables["e_plans"]
    for m, n in N_SITES.items():
        rows = pl[pl["model"] == m]
        assert set(rows["plan"]) == {"none (R=1)", "uniform", *SCALINGS}
        for r in rows.itertuples():
            assert len(r.repetitions) == n and min(r.repetitions) >= 1
            assert r.total == sum(r.repetitions) == (n if r.budget == 1 else 2 * n)
            assert 0 <= r.accuracy <= 100
        assert rows.loc[rows["plan"] == "uniform", "repetitions"].iloc[0] == [2] * n
        # repetition halves nothing at R=1 and only removes noise: at σ_mid the clean-free
        # accuracy with R=2 everywhere is not worse than with R=1 by more than noise allows
        none = rows.loc[rows["plan"] == "none (R=1)", "accuracy"].iloc[0]
        uniform = rows.loc[rows["plan"] == "uniform", "accuracy"].iloc[0]
        assert uniform > none - 5


def test_per_site_noisy_training_points(toy_run):
    rep, _, _ = toy_run
    ap, a, d = rep.tables["a_points"], rep.tables["a_sites"], rep.tables["d_sites"]
    for m, n in N_SITES.items():
        sites = select_sites([f"{i}:x" for i in range(n)], "ends")
        rows = ap[ap["model"] == m]
        assert len(rows) == len(sites) * len(TOY.site_factors)
        assert sorted(set(rows["site"])) == sites
        for r in rows.itertuples():
            mid = d[(d["model"] == m) & (d["site"] == r.site)]["sigma_mid"].iloc[0]
            assert r.sigma == pytest.approx(round_sig(r.factor * mid))
            assert r.gain_pp == pytest.approx(r.acc_noise_trained - r.acc_clean_trained)
            assert 0 <= r.acc_noise_trained <= 100 and r.mean_abs_w_ratio > 0
        level = (rep.clean_accuracy(m) + 10.0) / 2
        assert rows["level"].tolist() == pytest.approx([level] * len(rows))
    assert len(a) == sum(len(select_sites(list(range(n)), "ends")) for n in N_SITES.values())
    assert a["ratio"].tolist() == pytest.approx((a["noisy_sigma_mid"] / a["clean_sigma_mid"])
                                                .tolist())
    assert set(a["noisy_kind"]) <= {"crossing", "lower_bound", "upper_bound"}


def test_weight_clamping_and_additive_training_table(toy_run):
    rep, _, _ = toy_run
    bm, bw = rep.tables["b_models"], rep.tables["b_weights"]
    variants = ["clean", "clean, clamped", "GaussAdd-trained", "GaussAdd-trained, clamped"]
    for m in TOY.models:
        rows = bm[bm["model"] == m].set_index("variant")
        assert list(rows.index) == variants
        sigma = round_sig(rep.global_mid[m]["sigma_mid"])
        assert rows.loc["GaussAdd-trained", "train_sigma"] == sigma
        assert rows.loc["clean", "train_sigma"] == 0
        assert (rows.loc[["clean, clamped", "GaussAdd-trained, clamped"], "max_abs_w"]
                <= TOY.clamp[1] + 1e-6).all()
        # the clamped models' reference is the clamped clean model's noise-free accuracy
        assert rows.loc["GaussAdd-trained, clamped", "reference_acc"] == pytest.approx(
            rows.loc["clean, clamped", "noise_free_acc"])
    n_layers = {"RL_TFC-noBN": 4, "LeNet5-BN": 5}
    for m, k in n_layers.items():
        assert len(bw[bw["model"] == m]) == 4 * k


def test_multiplicative_noise_table_records_overflow(toy_run):
    rep, _, _ = toy_run
    c, cb = rep.tables["c_accuracy"], rep.tables["c_binarisation"]
    assert len(c) == len(TOY.models) * 3
    for m in TOY.models:
        rows = c[c["model"] == m]
        assert list(rows["sigma"]) == [1.0, 1e10, 1e10]
        assert rows["placement"].iloc[2].startswith("site 1 (1:")
        huge = rows[(rows["placement"] == "every site") & (rows["sigma"] == 1e10)].iloc[0]
        # σ = 1e10 at every site overflows float32 in the clean model
        assert huge["non_finite_clean_trained"] > 0.5
        assert set(cb[cb["model"] == m]["placement"]) >= {"—", "every site"}
    finite = cb["binarisation_index"].dropna()
    assert ((finite > 0) & (finite <= 1)).all()


def test_document_figures_and_json(toy_run):
    rep, _, doc = toy_run
    text = doc.read_text()
    for heading in ("## Summary", "## (a)", "## (b)", "## (c)", "## (d)", "## (e)",
                    "## Where this differs"):
        assert heading in text
    for r in rep.tables["clean"].itertuples():
        assert f"{r.clean_accuracy:.2f}" in text
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines()
              if line.startswith("![")]
    assert len(images) >= 8
    for rel in images:
        assert (doc.parent / rel).is_file() and rel.endswith(".png")
    assert not list((doc.parent / "reproduction").glob("*.pdf"))
    data = json.loads((doc.parent / "reproduction" / "results.json").read_text())
    assert data["scale"]["name"] == "toy"
    assert len(data["tables"]["e_plans"]) == len(rep.tables["e_plans"])
    # the summary quotes the measured gains of (a)
    ap = rep.tables["a_points"]
    assert f"gain {ap['gain_pp'].min():+.1f} to {ap['gain_pp'].max():+.1f} pp" in text


def test_second_run_reuses_every_model_and_reproduces_the_numbers(toy_run):
    rep, again, _ = toy_run
    assert again.facts["trainings"] == rep.facts["trainings"]
    assert again.facts["trainings_reused"] == again.facts["trainings"]
    for key in ("d_sites", "e_global", "e_plans", "a_points", "b_models", "c_accuracy"):
        pd.testing.assert_frame_equal(rep.tables[key], again.tables[key])
    assert math.isclose(rep.global_mid["LeNet5-BN"]["sigma_mid"],
                        again.global_mid["LeNet5-BN"]["sigma_mid"])


def test_scale_replace_keeps_models_subset():
    s = replace(SCALES["small"], models=("RL_TFC",))
    assert s.models == ("RL_TFC",) and s.describe()["site_selection"]["MLP"] == "all"


def test_python_dash_m_analysis_reproduce_keeps_its_options():
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "analysis.reproduce", "--help"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for option in ("--scale {full,medium,medium-smoke,small,smoke}", "--out OUT", "--cache",
                   "--artifact-root", "--threads",
                   "--device", "--models", "--verbose"):
        assert option in proc.stdout
    assert "(d) per-site profile" in proc.stdout  # the package docstring describes the claims
