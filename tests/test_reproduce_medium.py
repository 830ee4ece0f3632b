"""The medium-scale reproduction (docs/reproduction/PROTOCOL_medium.md): the convergence run's
plumbing end to end at a toy scale on the learnable MNIST fixture, its measurement cache (a
second run in a fresh artifact root trains nothing and gives the same tables), the protocol's
verdict rules on hand-made tables, and the scale presets."""
import json
import os
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.reproduce import SCALES
from analysis.reproduce.cache import MeasurementCache
from analysis.reproduce.convergence import Convergence, seed_sigma_mid
from analysis.reproduce.measures import lattice
from analysis.reproduce.medium_report import write_medium_document
from analysis.reproduce.medium_tables import (build_tables, draws_interval, removed_share,
                                              seed_interval)
from analysis.reproduce.scales import BN_MODELS, MODELS, FamilyCuts, Scale, select_sites
from analysis.reproduce.verdicts import (majority, moves, verdict_b, verdict_c, verdict_d,
                                         verdict_e)
from analysis.uncertainty import sigma_mid_interval
from learnable_fixtures import write_learnable_mnist

TOY = Scale("toy-medium", epochs=2, models=("RL_TFC", "LeNet5-BN"), walk_repeats=2,
            eval_repeats=2, walk_max_evals=4, sigma_range=(1e-2, 1e4), global_max_evals=4,
            global_range=(1e-3, 1e3), site_factors=(1.0, 10 ** 0.5), budgets=(2.0,),
            repeats=(0, 1), lattice_per_decade=2, refine_decades=0.5, n_boot=100,
            activation_samples=200,
            cuts={"MLP": FamilyCuts(lengths=(1, 2), per_site_lengths=(2,),
                                    mul_sigmas=(1.0, 1e10), mul_lengths=(2,)),
                  "LeNet": FamilyCuts(lengths=(1, 2), unit_clamp="if_binding",
                                      per_site_lengths=(1,), mul_sigmas=(1e10,),
                                      mul_lengths=(2,), max_noise_lengths=(2,))})


# ---------------------------------------------------------------- scales and pure helpers

def test_medium_scale_follows_the_protocol():
    s = SCALES["medium"]
    assert s.convergence and s.repeats == (0, 1, 2) and s.eval_repeats == 5
    mlp, lenet = s.cuts["MLP"], s.cuts["LeNet"]
    assert mlp.lengths == (3, 10, 30, 100) and lenet.lengths == (3, 10, 30)
    assert mlp.per_site_lengths == (30,) and lenet.per_site_lengths == (10,)
    assert mlp.mul_sigmas == (0.5, 1.0, 2.0, 1e2, 1e10) and mlp.mul_lengths == (30, 100)
    assert lenet.mul_sigmas == (1.0, 1e10) and lenet.mul_lengths == (3, 10, 30)
    assert mlp.unit_clamp == "always" and lenet.unit_clamp == "if_binding"
    assert lenet.max_noise_lengths == (3, 10, 30) and s.budgets == (2.0, 3.0)
    # planned model-epochs per (model, repeat): 4 variants × 143 + 6 per-site × 30 + 5 × 130
    assert mlp.model_epochs(3, 2, bn=False) == 4 * 143 + 6 * 30 + 5 * 130
    assert lenet.model_epochs(3, 2, bn=True) == 3 * 43 + 6 * 10 + 2 * 43 + 43
    smoke = SCALES["medium-smoke"]
    assert smoke.convergence and smoke.data_subset and all(
        c.lengths == (1, 2) for c in smoke.cuts.values())
    assert not SCALES["small"].convergence


def test_per_site_rule_picks_first_conv_middle_computation_site_and_logits():
    from models import model_site_kinds
    expected = {"LeNet5": [1, 7, 11], "LeNet5-BN": [1, 9, 15], "RL_TFC-noBN": [1, 5, 7],
                "RL_TFC": [1, 7, 10]}
    for conf, sites in expected.items():
        fam = MODELS[conf]
        kinds = model_site_kinds({"model_class": fam, fam: {"conf_name": conf}})
        assert select_sites(kinds, "first_middle_logits") == sites


def test_lattice_is_shared_between_centres_and_clipped():
    a = lattice(1.0, 0.75, 4, (1e-2, 1e4))
    assert a == [10 ** (k / 4) for k in range(-3, 4)]
    b = lattice(1.3, 0.75, 4, (1e-2, 1e4))
    assert set(a) & set(b) == {10 ** (k / 4) for k in range(-2, 4)}  # equal floats
    assert lattice(1e4, 0.5, 2, (1e-2, 1e4)) == [10 ** 3.5, 10 ** 4.0]


def test_seed_interval_and_draws_interval():
    mean, lo, hi = seed_interval([1.0, 2.0, 3.0], n_boot=2000, seed="x")
    assert mean == 2.0 and lo < 2.0 < hi
    # the stretch sqrt(3/2) widens the span of the resampled means beyond the plain values
    assert lo < 1.2 and hi > 2.8 and lo >= 2 - math.sqrt(1.5) - 1e-9
    assert seed_interval([5.0]) == (5.0, 5.0, 5.0)
    assert seed_interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    m, lo, hi = draws_interval([[10, 12], [20, 22], [30, 32]], n_boot=2000, seed="y")
    assert m == 21.0 and lo < 21 < hi and hi - lo > 10
    m, lo, hi = draws_interval([[50.0, 50.0]], n_boot=100)
    assert (m, lo, hi) == (50.0, 50.0, 50.0)


def test_removed_share_is_the_decades_of_gain_the_clamp_takes_away():
    def curve(mid, seed):  # accuracy 90 → 10 linear in log σ around mid, two draws per σ
        s = np.repeat(10 ** np.linspace(np.log10(mid) - 1, np.log10(mid) + 1, 9), 2)
        rng = np.random.default_rng(seed)
        a = np.clip(50 - 40 * (np.log10(s) - np.log10(mid)), 10, 90) + rng.normal(0, 0.5, s.size)
        return sigma_mid_interval(s, a, 90.0, 10.0, n_boot=300, seed=seed)

    clean, noisy, clamped = curve(1.0, 1), curve(100.0, 2), curve(10.0, 3)
    point, lo, hi = removed_share(noisy, clamped, clean)
    assert point == pytest.approx(0.5, abs=0.02) and lo < 0.5 < hi and lo > 0.3 and hi < 0.7
    assert removed_share(noisy, noisy, clean)[0] == pytest.approx(0.0)


def test_measurement_cache_reads_back_only_its_own_key(tmp_path):
    cache = MeasurementCache(tmp_path)
    calls = []
    v = cache.get_or_compute("abc", "curve", {"sigma": 1.0, "draws": 2},
                             lambda: calls.append(1) or {"x": np.float64(1.5), "y": (1, 2)})
    assert v == {"x": 1.5, "y": [1, 2]} and calls == [1]
    # 1 and 1.0 are the same parameter; the value is read back without computing
    assert cache.get_or_compute("abc", "curve", {"draws": 2, "sigma": 1}, lambda: 1 / 0) == v
    assert cache.get("abc", "curve", {"sigma": 2.0, "draws": 2}) is None
    assert cache.get("abd", "curve", {"sigma": 1.0, "draws": 2}) is None
    path = cache.path("abc", "curve", {"sigma": 1.0, "draws": 2})
    entry = json.loads(path.read_text())
    entry["params"]["sigma"] = 3.0  # a file that holds another key counts as missing
    path.write_text(json.dumps(entry))
    assert cache.get("abc", "curve", {"sigma": 1.0, "draws": 2}) is None
    assert cache.hits == 1 and cache.writes == 1


# ---------------------------------------------------------------- verdict rules

def _b_row(model, length, w, removed, gain=(3.0, 2.0, 4.0)):
    return {"model": model, "length": length,
            "w_ratio_global": w[0], "w_ratio_global_low": w[1], "w_ratio_global_high": w[2],
            "removed_clamp_max": removed[0], "removed_clamp_max_low": removed[1],
            "removed_clamp_max_high": removed[2],
            "gain_global": gain[0], "gain_global_low": gain[1], "gain_global_high": gain[2]}


MODELS4 = ("LeNet5", "LeNet5-BN", "RL_TFC-noBN", "RL_TFC")


def _b_table(w_by_model, removed_by_model, lengths=(10, 30)):
    rows = []
    for m in MODELS4:
        for L in lengths:  # the same values at both lengths: converged
            rows.append(_b_row(m, L, w_by_model[m], removed_by_model[m]))
    return pd.DataFrame(rows)


GROW, FLAT = (1.3, 1.2, 1.4), (1.0, 0.95, 1.05)
REMOVES, KEEPS = (0.6, 0.4, 0.8), (0.05, -0.1, 0.2)


def test_b_reproduced_when_weights_grow_and_the_binding_clamp_removes_gain():
    t = _b_table({m: GROW for m in MODELS4}, {m: REMOVES for m in MODELS4})
    assert verdict_b(t).word == "reproduced"
    # 3 of 4 with growth (each removing) is enough
    t = _b_table({**{m: GROW for m in MODELS4}, "RL_TFC": FLAT},
                 {m: REMOVES for m in MODELS4})
    assert verdict_b(t).word == "reproduced"


def test_b_not_reproduced_when_weights_do_not_grow_or_the_gain_survives_the_clamp():
    t = _b_table({**{m: FLAT for m in MODELS4}, "LeNet5": GROW},
                 {m: REMOVES for m in MODELS4})
    v = verdict_b(t)
    assert v.word == "not reproduced" and "do not grow" in v.reason
    t = _b_table({m: GROW for m in MODELS4}, {**{m: REMOVES for m in MODELS4},
                                              "RL_TFC": KEEPS})
    v = verdict_b(t)
    assert v.word == "not reproduced" and "survives" in v.reason and "RL_TFC" in v.reason


def test_b_inconclusive_otherwise_and_while_still_moving():
    # growth in 2, no growth in 2, clamp removes where it grows: neither rule
    t = _b_table({"LeNet5": GROW, "LeNet5-BN": GROW, "RL_TFC-noBN": FLAT, "RL_TFC": FLAT},
                 {m: REMOVES for m in MODELS4})
    assert verdict_b(t).word == "inconclusive"
    # a reproduced table, but one model's weight ratio moved by more than its interval
    t = _b_table({m: GROW for m in MODELS4}, {m: REMOVES for m in MODELS4})
    t.loc[(t["model"] == "RL_TFC") & (t["length"] == 10), "w_ratio_global"] = 1.0
    v = verdict_b(t)
    assert v.word == "inconclusive" and "still moving" in v.reason
    assert "RL_TFC w_ratio_global (10→30 epochs)" in v.reason


def test_moves_compares_the_change_with_the_interval_width():
    assert moves((1.5, 1.4, 1.6), (1.2, 1.1, 1.3))          # change 0.3 > width 0.2
    assert not moves((1.5, 1.3, 1.7), (1.2, 1.1, 1.3))      # change 0.3 < width 0.4
    assert moves((100, 80, 120), (10, 9, 11), log=True)     # 1 decade > 0.18 decade
    assert not moves((1.5, 1.0, math.inf), (1.0, 0.5, 2.0))  # unbounded: cannot tell
    assert majority(4) == 3 and majority(2) == 2 and majority(3) == 3


def _c_row(model, length, sigma, bw_noisy, bw_clean, acc=80.0, bin_noisy=(0.3, 0.2, 0.4)):
    row = {"model": model, "length": length, "sigma": sigma, "chance": 10.0,
           "acc_noisy": acc}
    for name, (v, lo, hi) in (("bimod_w_noisy", bw_noisy), ("bimod_w_clean", bw_clean),
                              ("bimod_in_noisy", bin_noisy), ("bimod_in_clean", (0.3, 0.2, 0.4))):
        row.update({name: v, f"{name}_low": lo, f"{name}_high": hi})
    return row


def test_c_verdict_outcomes():
    high, clean = (0.8, 0.7, 0.9), (0.35, 0.3, 0.4)
    rows = [_c_row(m, L, 1.0, high, clean) for m in MODELS4 for L in (10, 30)]
    assert verdict_c(pd.DataFrame(rows)).word == "reproduced"
    # above the clean one but not above 5/9 in any model: exceeds, but not the threshold
    mid = (0.5, 0.45, 0.55)
    rows = [_c_row(m, L, 1.0, mid, clean) for m in MODELS4 for L in (10, 30)]
    assert verdict_c(pd.DataFrame(rows)).word == "inconclusive"
    # no model above the clean bimodality beyond its interval
    rows = [_c_row(m, L, 1.0, (0.36, 0.3, 0.42), clean) for m in MODELS4 for L in (10, 30)]
    assert verdict_c(pd.DataFrame(rows)).word == "not reproduced"
    # bimodal, but only in models at chance: those do not count
    rows = [_c_row(m, L, 1.0, high, clean, acc=12.0) for m in MODELS4 for L in (10, 30)]
    assert verdict_c(pd.DataFrame(rows)).word == "not reproduced"
    # σ < 1 does not count for "reproduced"
    rows = [_c_row(m, L, 0.5, high, clean) for m in MODELS4 for L in (10, 30)]
    assert verdict_c(pd.DataFrame(rows)).word == "inconclusive"
    # reproduced at 30 epochs, but the coefficient still moves from 10 epochs
    rows = [_c_row(m, L, 1.0, high if L == 30 else (0.4, 0.35, 0.45), clean)
            for m in MODELS4 for L in (10, 30)]
    v = verdict_c(pd.DataFrame(rows))
    assert v.word == "inconclusive" and "still moves" in v.reason
    # ...and says where the noise-trained coefficient lies against the clean one
    assert "of 4 (model, σ) rows above chance" in v.reason
    assert "weights below the clean model's at 0, above at 4, overlapping at 0" in v.reason
    rows = [_c_row(m, L, 1.0, (0.1, 0.05, 0.15) if L == 30 else (0.4, 0.35, 0.45), clean)
            for m in MODELS4 for L in (10, 30)]
    v = verdict_c(pd.DataFrame(rows))
    assert v.word == "inconclusive" and "weights below the clean model's at 4, above at 0" \
        in v.reason


def test_d_and_e_verdict_outcomes():
    def d_rows(apart: bool, moved: bool = False):
        rows = []
        for m in MODELS4:
            for L in (10, 30):
                low = 0.1 if not (moved and L == 10) else 1.0
                rows.append({"model": m, "length": L, "site": 0, "sigma_mid": low,
                             "sigma_mid_low": low * 0.9, "sigma_mid_high": low * 1.1})
                hi = (1.0, 0.9, 1.1) if apart else (0.12, 0.05, 0.2)
                rows.append({"model": m, "length": L, "site": 1, "sigma_mid": hi[0],
                             "sigma_mid_low": hi[1], "sigma_mid_high": hi[2]})
        return pd.DataFrame(rows)

    assert verdict_d(d_rows(True)).word == "reproduced"
    assert verdict_d(d_rows(False)).word == "not reproduced"
    assert verdict_d(d_rows(True, moved=True)).word == "inconclusive"

    def e_rows(tailored):
        rows = []
        for m in MODELS4:
            for L in (10, 30):
                rows += [{"model": m, "length": L, "budget": 2.0, "plan": "uniform",
                          "accuracy": 50.0, "accuracy_low": 48.0, "accuracy_high": 52.0},
                         {"model": m, "length": L, "budget": 2.0, "plan": "inverse_lin",
                          "accuracy": tailored, "accuracy_low": tailored - 2,
                          "accuracy_high": tailored + 2}]
        return pd.DataFrame(rows)

    assert verdict_e(e_rows(60.0)).word == "reproduced"
    assert verdict_e(e_rows(51.0)).word == "not reproduced"
    moved = e_rows(60.0)
    moved.loc[(moved["length"] == 10) & (moved["plan"] == "inverse_lin"), "accuracy"] = 50.0
    assert verdict_e(moved).word == "inconclusive"


# ---------------------------------------------------------------- the plumbing end to end

@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium")
    write_learnable_mnist(root / "data" / "MNIST" / "raw", n_train=1000, n_test=300)
    overrides = {"data": {"dataset": "MNIST", "root": str(root / "data"), "download": False,
                          "batch_size": 64}}
    torch.set_num_threads(1)
    first = Convergence(TOY, artifact_root=root / "art", cache_root=root / "cache",
                        overrides=overrides).run(budget=True)
    doc = write_medium_document(first, root / "docs", command="toy")
    # a fresh checkout: the cache, but no artifact root (no checkpoints)
    second = Convergence(TOY, artifact_root=root / "fresh", cache_root=root / "cache",
                         overrides=overrides).run(budget=False)
    return first, second, doc, root


def test_every_cell_has_its_variants_and_measurements(toy_runs):
    first, _, _, _ = toy_runs
    res = first.results
    cells = {(r["model"], r["length"], r["repeat"]) for r in res}
    assert cells == {(m, L, r) for m in TOY.models for L in (1, 2) for r in (0, 1)}
    kinds = lambda m, L: sorted(r["kind"] for r in res  # noqa: E731
                                if r["model"] == m and r["length"] == L and r["repeat"] == 0)
    # MLP, length 2: clean, global, both clamps, 3 sites × 2 factors, GaussMul 2 σ
    assert kinds("RL_TFC", 2) == sorted(["clean", "global", "clamp_max", "clamp_unit"]
                                        + ["site"] * 6 + ["mul"] * 2)
    assert kinds("RL_TFC", 1) == sorted(["clean", "global", "clamp_max", "clamp_unit"])
    lenet2 = kinds("LeNet5-BN", 2)
    assert {"mul", "max_noise"} <= set(lenet2) and "site" not in lenet2
    for r in res:
        if r["kind"] == "clean":
            m = r["m"]
            assert len(m["site_curves"]) == {"RL_TFC": 11, "LeNet5-BN": 16}[r["model"]]
            assert m["noise_free"]["accuracy"] > (60 if r["length"] == 2 else 10)
            sig, kind = seed_sigma_mid(m["global_curve"], 10.0)
            assert sig > 0 and kind in ("crossing", "lower_bound", "upper_bound")
            # every lattice row was evaluated eval_repeats times
            sigmas = [row[0] for row in m["global_curve"]["rows"]]
            assert all(sigmas.count(s) == TOY.eval_repeats for s in set(sigmas))
        if r["kind"] == "global":
            clean = next(c for c in res if c["kind"] == "clean" and c["model"] == r["model"]
                         and c["length"] == r["length"] and c["repeat"] == r["repeat"])
            from analysis.reproduce.experiments import round_sig
            assert r["sigma"] == round_sig(seed_sigma_mid(clean["m"]["global_curve"], 10.0)[0])
        if r["kind"] == "clamp_max":
            clean = next(c for c in res if c["kind"] == "clean" and c["model"] == r["model"]
                         and c["length"] == r["length"] and c["repeat"] == r["repeat"])
            bound = max(x["max_abs"] for x in clean["m"]["weights"]["layers"])
            assert r["clamp"] == pytest.approx(bound, rel=1e-5)
            assert max(x["max_abs"] for x in r["m"]["weights"]["layers"]) <= r["clamp"] + 1e-6
        if r["kind"] == "max_noise":
            v = r["m"]["max_noise_accuracy"]
            assert v["noise_free_float32"] == pytest.approx(v["noise_free_float64"], abs=0.5)


def test_float64_rescues_what_overflows_float32(toy_runs):
    first, _, _, _ = toy_runs
    T = build_tables(first.results, n_boot=50, mul_site=1)
    cm = T["c_max"]
    clean = cm[cm["model_trained"] == "clean"]
    assert len(clean) == 2 and (clean["non_finite_float32"] > 0.5).all()
    assert (clean["non_finite_float64"] < clean["non_finite_float32"]).all()
    assert clean["noise_free_agree"].all()
    assert (cm["overflow_sigma_float64"] > cm["overflow_sigma_float32"]).all()


def test_tables_intervals_and_document(toy_runs):
    first, _, doc, _ = toy_runs
    T = build_tables(first.results, n_boot=TOY.n_boot, mul_site=1)
    b = T["b"]
    assert len(b) == 4 and (b["w_ratio_global_low"] <= b["w_ratio_global"]).all()
    # whether the ±max|w| clamp bound: counted from the trained weights, per seed
    for _, row in b.iterrows():
        recs = [r for r in first.results if r["model"] == row["model"]
                and r["length"] == row["length"]]
        peak = lambda r: max(x["max_abs"] for x in r["m"]["weights"]["layers"])  # noqa: E731
        cm = [r for r in recs if r["kind"] == "clamp_max"]
        gl = {r["repeat"]: r for r in recs if r["kind"] == "global"}
        assert all(peak(r) <= r["clamp"] * (1 + 1e-6) for r in cm)   # the clamp holds
        assert row["clamp_max_reached"] == \
            f"{sum(peak(r) >= r['clamp'] * (1 - 1e-5) for r in cm)} of {len(cm)}"
        assert row["clamp_max_exceeded"] == \
            f"{sum(peak(gl[r['repeat']]) > r['clamp'] for r in cm)} of {len(cm)}"
    assert "±max|w| reached" in doc.read_text()
    assert (b["w_ratio_global"] <= b["w_ratio_global_high"]).all()
    a = T["a"]
    assert len(a) == 6 + 6  # RL_TFC at 2 epochs and LeNet5-BN at 1 epoch, 3 sites × 2 factors
    assert np.allclose(a["gain"], a["acc_noisy"] - a["acc_clean"])
    d = T["d"]
    assert sorted(d[(d["model"] == "RL_TFC") & (d["length"] == 2)]["rank"]) == list(range(1, 12))
    text = doc.read_text()
    assert "# Reproduction at scale `toy-medium`" in text
    assert "Run time over all its starts: " in text and "in 1 start(s)" in text
    # MAX noise: the sentence counts what the table shows
    cm = T["c_max"]
    assert len(cm) and "weights finite" in text and "Measured: noise-trained: trained weights " \
        f"finite in {int(cm[cm['model_trained'] == 'noise-trained']['weights_finite'].sum())} " \
        f"of {int((cm['model_trained'] == 'noise-trained').sum())}" in text
    # (e): every tailored plan beside the uniform one at the longest length
    every = text.split("every plan beside the uniform plan")[1].split("</details>")[0]
    e_last = T["e"][(T["e"]["length"] == 2) | ((T["e"]["model"] == "LeNet5-BN")
                                               & (T["e"]["length"] == 2))]
    n_plans = int((~e_last["plan"].isin(["uniform", "none (R=1)"])).sum())
    assert n_plans > 0 and every.count("\n| ") == n_plans + 1   # header + one row per plan
    for k in "abcde":
        assert f"- ({k}) *" in text and f"## ({k})" in text
    for line in text.splitlines():
        if line.startswith("- (") and "*: **" in line:
            assert any(w in line for w in ("**reproduced**", "**not reproduced**",
                                           "**inconclusive**"))
    images = [x.split("](")[1].rstrip(")") for x in text.splitlines() if x.startswith("![")]
    assert len(images) == 5 and all((doc.parent / i).is_file() for i in images)
    data = json.loads((doc.parent / "reproduction" / "toy-medium" / "results.json").read_text())
    assert set(data["verdicts"]) == set("abcde")
    assert data["facts"]["budget"]["model_epochs"]["RL_TFC"] > 0


def test_second_run_from_the_cache_trains_nothing_and_gives_the_same_tables(toy_runs):
    first, second, _, root = toy_runs
    assert first.facts["trainings"] > 0 and first.facts["cache"]["writes"] > 0
    assert second.facts["trainings"] == 0 and second.facts["models_loaded"] == 0
    assert second.facts["cache"]["writes"] == 0
    assert not (root / "fresh" / "checkpoints").exists()
    # the run time of a resumed run: the first start's record (it trained), not the second's
    starts = second.facts["starts"]
    assert len(starts) == 1 and starts[0]["pid"] == os.getpid()
    # the second run only read the cache: it leaves no record of its own
    assert len(list((root / "cache" / "starts").glob("*.json"))) == 1
    cells = {(m, L, r) for m, L, r, _ in starts[0]["cells"]}
    assert cells == {(m, L, r) for m in TOY.models for L in (1, 2) for r in (0, 1)}
    assert 0 < sum(c[3] for c in starts[0]["cells"]) <= starts[0]["wall_seconds"]
    t1 = build_tables(first.results, n_boot=TOY.n_boot, mul_site=1)
    t2 = build_tables(second.results, n_boot=TOY.n_boot, mul_site=1)
    for key in t1:
        pd.testing.assert_frame_equal(t1[key], t2[key])


def test_a_missing_measurement_loads_only_its_model(toy_runs, tmp_path):
    first, _, _, root = toy_runs
    import shutil
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    clean = next(r for r in first.results if r["kind"] == "clean" and r["model"] == "RL_TFC"
                 and r["length"] == 1 and r["repeat"] == 0)
    removed = list((cache / clean["hash"]).glob("weights-*.json"))
    assert len(removed) == 1
    removed[0].unlink()
    small = Scale(**{**TOY.__dict__, "models": ("RL_TFC",)})
    overrides = {"data": {"dataset": "MNIST", "root": str(root / "data"), "download": False,
                          "batch_size": 64}}
    again = Convergence(small, artifact_root=root / "art", cache_root=cache,
                        overrides=overrides).run(budget=False)
    # the one model is found by its checkpoint (not trained), measured, written back
    assert again.facts["models_loaded"] == 1 and again.facts["trainings"] == 0
    assert again.facts["cache"]["writes"] == 1
    mine = next(r for r in again.results if r["hash"] == clean["hash"] and r["kind"] == "clean")
    assert mine["m"]["weights"] == clean["m"]["weights"]


def test_the_budget_cut_of_the_protocol_drops_the_lenets_gaussmul_sigma_1_when_over(tmp_path,
                                                                                    monkeypatch):
    from analysis.reproduce import convergence as conv
    run = conv.Convergence(SCALES["medium"], artifact_root=tmp_path / "art",
                           cache_root=tmp_path / "cache")
    slow = {"LeNet5": 6.0, "LeNet5-BN": 6.0, "RL_TFC-noBN": 0.3, "RL_TFC": 0.3}
    monkeypatch.setattr(run, "measure_epoch_seconds", lambda: slow)
    b = run.budget()
    assert "cut" in b and b["with_evaluations_hours"] < float(b["cut"].split()[1])
    assert run.scale.cuts["LeNet"].mul_sigmas == (1e10,)
    assert run.scale.cuts["MLP"].mul_sigmas == SCALES["medium"].cuts["MLP"].mul_sigmas
    fast = conv.Convergence(SCALES["medium"], artifact_root=tmp_path / "art2",
                            cache_root=tmp_path / "cache2")
    monkeypatch.setattr(fast, "measure_epoch_seconds", lambda: {m: 0.1 for m in slow})
    assert "cut" not in fast.budget()
    assert fast.scale.cuts["LeNet"].mul_sigmas == (1.0, 1e10)


def test_the_budget_decision_is_taken_once_and_reused_by_a_resumed_run(tmp_path, monkeypatch):
    """A restart that times the machine differently keeps the first start's decision (both
    ways), so the plan of a run does not change half-way."""
    from analysis.reproduce import convergence as conv
    slow = {"LeNet5": 6.0, "LeNet5-BN": 6.0, "RL_TFC-noBN": 0.3, "RL_TFC": 0.3}
    fast = {m: 0.1 for m in slow}

    def start(cache, timing):
        run = conv.Convergence(SCALES["medium"], artifact_root=tmp_path / "art",
                               cache_root=tmp_path / cache)
        monkeypatch.setattr(run, "measure_epoch_seconds", lambda: timing)
        return run, run.budget()

    first, b = start("no-cut", fast)
    assert "cut" not in b and (tmp_path / "no-cut" / "budget.json").exists()
    again, b2 = start("no-cut", slow)          # slower now: would cut if it decided again
    assert "cut" not in b2 and again.scale.cuts["LeNet"].mul_sigmas == (1.0, 1e10)
    assert b2["with_evaluations_hours"] == b["with_evaluations_hours"]

    cut, c = start("cut", slow)
    assert "cut" in c and cut.scale.cuts["LeNet"].mul_sigmas == (1e10,)
    resumed, c2 = start("cut", fast)          # faster now: the cut stays
    assert c2["cut"] == c["cut"] and resumed.scale.cuts["LeNet"].mul_sigmas == (1e10,)
    assert resumed.scale.cuts["MLP"].mul_sigmas == SCALES["medium"].cuts["MLP"].mul_sigmas


def test_the_small_document_gets_the_medium_verdicts_as_one_block(toy_runs, tmp_path):
    from analysis.reproduce.medium_summary import BEGIN, END, medium_block, update_block
    _, _, doc, _ = toy_runs
    results = json.loads((doc.parent / "reproduction" / "toy-medium" / "results.json")
                         .read_text())
    small = tmp_path / "REPRODUCTION.md"
    small.write_text("# Title\n\nProduced by `x`.\n\n## Setup\n\n- a line\n")
    assert update_block(small, medium_block(results, "REPRODUCTION_medium.md"))
    once = small.read_text()
    lines = once.splitlines()
    # after the "Produced by" paragraph, before the setup; one line per claim with its word
    assert lines.index(BEGIN) > lines.index("Produced by `x`.") and \
        lines.index(END) < lines.index("## Setup")
    for k, v in results["verdicts"].items():
        assert f"- ({k}) *" in once and f"**{v['word']}**: {v['reason']}" in once
    assert "training repeats [0, 1]" in once and "MLP [1, 2]" in once
    assert "process time over 1 start(s)" in once
    # a second writing replaces the block (no second copy)
    results["verdicts"]["a"]["word"] = "not reproduced"
    update_block(small, medium_block(results, "REPRODUCTION_medium.md"))
    twice = small.read_text()
    assert twice.count(BEGIN) == 1 and twice.count(END) == 1
    assert "- (a) *noisy training increases robustness*: **not reproduced**" in twice
    assert twice.endswith("- a line\n")
    assert not update_block(tmp_path / "missing.md", ["x"])


def test_repeats_option_is_checked_before_anything_runs(capsys, tmp_path):
    from analysis.reproduce.__main__ import main
    for argv, expected in (
            (["--scale", "small", "--repeats", "1"], "--repeats: only for a convergence scale"),
            (["--scale", "medium", "--repeats", "0", "7"],
             "--repeats: [7] not among scale 'medium''s repeats [0, 1, 2]")):
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
        assert e.value.code == 2 and expected in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
