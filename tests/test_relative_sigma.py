"""Noise relative to the signal (``sigma_relative_to: rms``): configs, calibration of the clean
site RMS, the operator's realised noise at every site, the cohort's stacked noise, and the
engine (result, checkpoints, walk)."""
import math

import pytest
import torch

from learnable_fixtures import write_learnable_mnist
from models import build_model_from
from noise import (GaussAdd, GaussCombined, GaussCombined_direct, GaussMul, NoiseOperator,
                   NoNoise, noise_config_to_dict, parse_noise_config, resolve_site_configs)
from noise.calibration import calibrate, site_rms
from util.artifacts import load_torch
from util.config import ConfigError, merged_with_defaults, validate_config
from util.engine.experiment import run_experiment
from util.engine.stacked import StackedNoise
from util.engine.walk import run_walk

REL = {"sigma_relative_to": "rms"}


# ---- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["RMS", "std", None, 1, True])
def test_a_bad_sigma_relative_to_is_refused_naming_the_key_and_the_allowed_values(bad):
    with pytest.raises(ValueError, match=r"sigma_relative_to.*\['none', 'rms'\]"):
        parse_noise_config({"noise_type": "GaussAdd", "GaussStd": 0.1, "sigma_relative_to": bad})
    with pytest.raises(ValueError, match=r"noise_settings.layer_wise.*sigma_relative_to"):
        resolve_site_configs({"layer_wise": {"layer_index": 2, "noise_type": "GaussMul",
                                             "GaussStd": 0.1, "sigma_relative_to": bad}}, 8)


def test_a_bad_sigma_relative_to_in_the_walk_params_is_refused_before_anything_runs(tmp_path):
    config = merged_with_defaults({
        "data": {"dataset": "MNIST", "root": str(tmp_path), "download": False},
        "model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
        "artifact_root": str(tmp_path), "walk": {"params": {"sigma_relative_to": "signal"}}})
    with pytest.raises(ConfigError, match=r"walk.*sigma_relative_to.*\['none', 'rms'\]"):
        validate_config(config, walk=True)


def test_the_default_is_left_out_of_the_noise_dict_so_hashes_stay():
    absolute = parse_noise_config({"noise_type": "GaussAdd", "GaussStd": 0.5})
    assert absolute.sigma_relative_to == "none" and not absolute.is_relative
    assert "sigma_relative_to" not in noise_config_to_dict(absolute)
    assert absolute == parse_noise_config({"noise_type": "GaussAdd", "GaussStd": 0.5,
                                           "sigma_relative_to": "none"})
    relative = parse_noise_config({"noise_type": "GaussAdd", "GaussStd": 0.5, **REL})
    assert noise_config_to_dict(relative)["sigma_relative_to"] == "rms"
    assert parse_noise_config(noise_config_to_dict(relative)) == relative != absolute


def test_absolute_scales_additive_sigmas_only_and_never_the_means():
    rms = 3.0
    add = GaussAdd(GaussStd=0.5, GaussMean=0.2, sigma_relative_to="rms").absolute(rms)
    assert add == GaussAdd(GaussStd=1.5, GaussMean=0.2)
    # a multiplicative σ is relative to the signal already: x·σz has std σ·RMS over the site
    assert GaussMul(GaussStd=0.5, GaussMean=1.1, sigma_relative_to="rms").absolute(rms) == \
        GaussMul(GaussStd=0.5, GaussMean=1.1)
    combined = GaussCombined(StdAmplitude=0.8, StdRatio=0.25, GaussMeanAdd=0.1,
                             FirstMulThenAdd=False, sigma_relative_to="rms").absolute(rms)
    assert type(combined) is GaussCombined_direct and not combined.is_relative
    assert combined.std_pair() == pytest.approx((0.2 * rms, 0.6))
    assert (combined.GaussMeanAdd, combined.GaussMeanMul, combined.FirstMulThenAdd) == \
        (0.1, 1.0, False)
    direct = GaussCombined_direct(GaussStdAdd=0.2, GaussStdMul=0.4, sigma_relative_to="rms")
    assert direct.absolute(rms).std_pair() == pytest.approx((0.6, 0.4))
    absolute = GaussAdd(GaussStd=0.5)
    assert absolute.absolute(rms) is absolute and absolute.absolute(None) is absolute


def test_a_relative_config_on_an_uncalibrated_site_fails_loudly():
    op = NoiseOperator({"noise_type": "GaussAdd", "GaussStd": 0.5, **REL})
    with pytest.raises(RuntimeError, match="calibrat"):
        op(torch.ones(3))
    op.rms = 2.0
    assert op.effective_config == GaussAdd(GaussStd=1.0)
    op.config = GaussMul(GaussStd=0.1)   # the site keeps its calibration across configs
    assert op.rms == 2.0


# ---- calibration -------------------------------------------------------------------------------

MODELS = {"LeNet5-BN": ("LeNet", (1, 28, 28), 16), "RL_TFC": ("MLP", (1, 28, 28), 11)}


def random_model(conf):
    family, shape, n_sites = MODELS[conf]
    torch.manual_seed(0)
    model = build_model_from(family, conf, [NoNoise()] * n_sites, [1] * n_sites, shape, 10)
    # BN running statistics away from (0, 1), so eval-mode BN sites have their own scale
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.05, 4)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(128, *shape, generator=g) * 3, torch.zeros(128, dtype=torch.long))
               for _ in range(4)]
    return model, batches


@pytest.mark.parametrize("conf", list(MODELS))
def test_calibration_is_each_sites_clean_rms_the_same_every_time_and_changes_nothing(conf):
    model, batches = random_model(conf)
    model.train()
    model.noise_sites[3].operator.config = GaussAdd(GaussStd=5.0)   # noise off while measuring
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    rms = site_rms(model, batches)
    assert len(rms) == MODELS[conf][2]
    x = torch.cat([b[0] for b in batches])
    assert rms[0] == pytest.approx(x.double().square().mean().sqrt().item(), rel=1e-9)
    # site 1 (the first conv or linear layer) by hand
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    with torch.no_grad():
        h = first(x if isinstance(first, torch.nn.Conv2d) else x.flatten(1))
    assert rms[1] == pytest.approx(h.double().square().mean().sqrt().item(), rel=1e-5)
    assert len({round(r, 6) for r in rms}) > len(rms) // 2     # sites have their own scales
    assert max(rms) / min(rms) > 2
    assert site_rms(model, batches) == rms                     # deterministic
    assert model.training                                      # mode, noise, weights, BN stats
    assert model.noise_sites[3].operator.config == GaussAdd(GaussStd=5.0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)


def realised_noise(model, site, batches):
    """(noise std, RMS of the input) of site ``site``'s operator over ``batches``, eval mode."""
    op = model.noise_sites[site].operator
    seen = {}

    def pre(_m, inputs):
        seen["x"] = inputs[0].clone()

    def post(_m, _inputs, out):
        d = (out - seen["x"]).double()
        seen["ss"] = seen.get("ss", 0.0) + d.square().sum().item()
        seen["n"] = seen.get("n", 0) + d.numel()

    handles = [op.register_forward_pre_hook(pre), op.register_forward_hook(post)]
    model.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for h in handles:
        h.remove()
    return math.sqrt(seen["ss"] / seen["n"])


# (config, the realised noise std in units of the site RMS that the formula promises)
NOISES = [
    ({"noise_type": "GaussAdd", "GaussStd": 0.3}, 0.3),
    ({"noise_type": "GaussMul", "GaussStd": 0.3}, 0.3),
    # mul-then-add, σa = A·r = 0.12, σm = A(1-r) = 0.28 (each relative): √(σm² + σa²)
    ({"noise_type": "GaussCombined", "StdAmplitude": 0.4, "StdRatio": 0.3},
     math.sqrt(0.28 ** 2 + 0.12 ** 2)),
]


@pytest.mark.parametrize("conf", list(MODELS))
@pytest.mark.parametrize("noise, promised", NOISES, ids=["GaussAdd", "GaussMul", "GaussCombined"])
def test_at_every_site_the_realised_noise_std_over_the_calibrated_rms_is_the_configured_sigma(
        conf, noise, promised):
    model, batches = random_model(conf)
    rms = site_rms(model, batches)
    calibrate(model, rms)
    n_sites = len(model.noise_sites)
    for site in range(n_sites):
        configs = [NoNoise()] * n_sites
        configs[site] = parse_noise_config({**noise, **REL})
        for s, c in zip(model.noise_sites, configs):
            s.operator.config = c
        ratio = realised_noise(model, site, batches) / rms[site]
        # ≥ 5120 elements per site: a few % of sampling error (ReLU sites are half zeros)
        assert ratio == pytest.approx(promised, rel=0.08), model.noise_sites[site].name
    # the same σ given absolutely is not relative: additive noise keeps its own scale
    if noise["noise_type"] == "GaussAdd":
        far = max(range(n_sites), key=lambda s: abs(math.log(rms[s])))
        configs = [NoNoise()] * n_sites
        configs[far] = parse_noise_config(noise)
        for s, c in zip(model.noise_sites, configs):
            s.operator.config = c
        assert realised_noise(model, far, batches) == pytest.approx(0.3, rel=0.08)
        assert abs(math.log(rms[far])) > math.log(1.5)


def test_relative_noise_is_the_absolute_noise_of_sigma_times_rms_on_every_path():
    """Training mode (in-place noise, the fused ReLU + noise of the fast paths) and the plain
    reference: a relative σ draws exactly what the absolute σ·RMS draws."""
    from noise import speed
    model, batches = random_model("RL_TFC")
    rms = site_rms(model, batches)
    calibrate(model, rms)
    x = batches[0][0]
    for fast in (True, False):
        with speed.fast_paths(fast):
            outs = []
            for relative in (True, False):
                for s, r in zip(model.noise_sites, rms):
                    s.operator.config = (GaussAdd(GaussStd=0.2, sigma_relative_to="rms")
                                         if relative else GaussAdd(GaussStd=0.2 * r))
                model.train()
                torch.manual_seed(5)
                outs.append(model(x))
            assert torch.equal(outs[0], outs[1])


def test_the_cohorts_stacked_noise_applies_each_members_calibrated_sigma():
    ops = [NoiseOperator(GaussAdd(GaussStd=0.5, sigma_relative_to="rms")),
           NoiseOperator(GaussAdd(GaussStd=0.5)),
           NoiseOperator(GaussCombined_direct(GaussStdAdd=0.1, GaussStdMul=0.2,
                                              sigma_relative_to="rms"))]
    ops[0].rms, ops[1].rms, ops[2].rms = 4.0, 4.0, 10.0
    noise = StackedNoise(ops).train()
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 16)
    y, _ = noise(x, False)
    d = y - x
    assert d[:, 0].std().item() == pytest.approx(2.0, rel=0.02)   # 0.5 × RMS 4
    assert d[:, 1].std().item() == pytest.approx(0.5, rel=0.02)   # absolute: RMS unused
    # x = 1: σm·x and σa·RMS = 1.0 add up in variance
    assert d[:, 2].std().item() == pytest.approx(math.sqrt(0.2 ** 2 + 1.0 ** 2), rel=0.02)
    uncalibrated = NoiseOperator(GaussAdd(GaussStd=0.5, sigma_relative_to="rms"))
    with pytest.raises(RuntimeError, match="calibrat"):
        StackedNoise([uncalibrated])


# ---- the engine --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable")
    write_learnable_mnist(root / "MNIST" / "raw", n_train=1024, n_test=400)
    return root


def engine_config(root, art, noise_settings=None, epochs=1, **walk):
    return merged_with_defaults({
        "data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 64},
        "model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
        "general": {"num_epochs": epochs}, "artifact_root": str(art), "device": "cpu",
        "noise_settings": noise_settings or {}, "walk": walk})


def layer_wise(site, sigma, relative, training=False):
    return {"layer_wise": {"layer_index": site, "noise_type": "GaussAdd", "GaussStd": sigma,
                           "enable_in_training": training, "enable_in_eval": True,
                           **(REL if relative else {})}}


def test_an_eval_only_run_with_relative_sigma_stores_its_calibration_and_evaluates_under_it(
        learnable, tmp_path):
    site = 4   # fc2: an RMS far from 1 (about 0.2)
    absolute = run_experiment(engine_config(learnable, tmp_path, layer_wise(site, 1.0, False)),
                              progress=False)
    relative = run_experiment(engine_config(learnable, tmp_path, layer_wise(site, 1.0, True)),
                              progress=False)
    assert absolute["calibration"] is None and absolute["training_calibration"] is None
    assert relative["training_hash"] == absolute["training_hash"]   # one trained model
    cal = relative["calibration"]
    assert cal["batches"] == 8 and len(cal["rms"]) == 11 and all(r > 0 for r in cal["rms"])
    assert relative["training_calibration"] is None                 # no relative training noise
    assert cal["rms"][site] < 0.5
    # σ·RMS is much less noise than σ there: the accuracy falls less
    assert relative["final"]["validation_accuracy"] > absolute["final"]["validation_accuracy"] + 5
    again = run_experiment(engine_config(learnable, tmp_path, layer_wise(site, 1.0, True)),
                           progress=False)
    assert again["calibration"] == cal                              # same batches, same model
    assert again["final"] == relative["final"]
    # a relative σ of 1/RMS is the absolute σ 1: the same noise, so nearly the same accuracy
    matched = run_experiment(engine_config(learnable, tmp_path,
                                           layer_wise(site, 1.0 / cal["rms"][site], True)),
                             progress=False)
    assert matched["final"]["validation_accuracy"] == pytest.approx(
        absolute["final"]["validation_accuracy"], abs=4.0)


def test_relative_training_noise_is_recalibrated_every_epoch_and_kept_in_the_checkpoint(
        learnable, tmp_path):
    config = engine_config(learnable, tmp_path, layer_wise(4, 0.5, True, training=True), epochs=2)
    res = run_experiment(config, progress=False)
    tc = res["training_calibration"]
    assert tc["batches"] == 8 and len(tc["rms"]) == 2 and all(len(r) == 11 for r in tc["rms"])
    assert tc["rms"][0] != tc["rms"][1]                 # the model moved between the epochs
    assert tc["rms"][0][0] == tc["rms"][1][0]           # the input site: the same batches
    state = load_torch(res["checkpoint_used"], map_location="cpu")
    assert state["training_calibration"] == tc
    assert res["calibration"]["rms"] != tc["rms"][0]    # evaluation: on the trained model
    absolute = run_experiment(engine_config(learnable, tmp_path,
                                            layer_wise(4, 0.5, False, training=True), epochs=2),
                              progress=False)
    assert absolute["training_hash"] != res["training_hash"]


def test_a_relative_walks_sigma_mid_is_the_absolute_sigma_mid_over_the_sites_rms(
        learnable, tmp_path):
    grid = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    sites = [2, 7]   # bn1 and fc3: their RMS differ by a factor of about 3
    absolute = run_walk(engine_config(learnable, tmp_path, sites=sites, sigmas=grid, repeats=3),
                        progress=False)
    assert absolute["calibration"] is None
    rms = run_walk(engine_config(learnable, tmp_path, sites=[0], sigmas=[1.0],
                                 params=REL), progress=False)["calibration"]["rms"]
    assert max(rms[s] for s in sites) / min(rms[s] for s in sites) > 2
    for site in sites:
        relative = run_walk(engine_config(learnable, tmp_path, sites=[site],
                                          sigmas=[g / rms[site] for g in grid], repeats=3,
                                          params=REL), progress=False)
        assert relative["calibration"]["rms"] == rms
        name = relative["sites"][site]
        abs_mid = absolute["sigma_mid"][name]["sigma_mid"]
        rel_mid = relative["sigma_mid"][name]["sigma_mid"]
        assert absolute["sigma_mid"][name]["kind"] == "crossing"
        assert rel_mid == pytest.approx(abs_mid / rms[site], rel=0.1)
        assert relative["evaluations"][0]["noise"]["sigma_relative_to"] == "rms"


def test_a_vectorised_cohort_calibrates_each_members_relative_training_noise_every_epoch(
        learnable, tmp_path):
    from util.engine.cohort import run_cohort
    members = [layer_wise(4, 0.5, True, training=True), layer_wise(7, 2.0, True, training=True),
               layer_wise(4, 0.5, False, training=True)]
    config = engine_config(learnable, tmp_path / "cohort", epochs=2)
    config["cohort"] = {"strategy": "vectorised"}
    result = run_cohort(config, [{"noise_settings": m} for m in members], progress=False)
    assert result["cohort"]["strategy"] == "vectorised"
    got = [r["training_calibration"] for r in result["members"]]
    assert got[2] is None                                   # absolute σ: nothing calibrated
    single = run_experiment(engine_config(learnable, tmp_path / "single", members[0], epochs=2),
                            progress=False)["training_calibration"]
    assert got[0]["rms"][0] == single["rms"][0]             # epoch 1: the same initial model
    # epoch 2: the model after one vectorised epoch (its own noise draws: close, not equal)
    assert got[0]["rms"][1] == pytest.approx(single["rms"][1], rel=0.1)
    assert got[0]["rms"][1][1:] != got[0]["rms"][0][1:]
    assert got[1]["rms"][1] != got[0]["rms"][1]             # each member its own model
