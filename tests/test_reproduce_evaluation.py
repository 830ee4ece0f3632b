"""analysis.reproduce.evaluation: accuracy under noise through the engine's loops, seeded, with
non-finite logits counted as wrong."""
import statistics

import pytest
import torch

from analysis.reproduce.evaluation import accuracy_over_draws, site_accuracy_over_draws
from models import build_model
from noise.config import NoNoise, parse_noise_config
from util.engine.loops import evaluate
from util.engine.seeding import seed_torch
from util.engine.walk import SiteEvaluator


def _model_and_data(n=700):
    torch.manual_seed(0)
    model = build_model({"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}, None,
                        (1, 28, 28), 10).eval()
    x = torch.randn(n, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)  # the noise-free model is right everywhere
    return model, (x, y)


def _gauss(noise_type, sigma):
    return parse_noise_config({"noise_type": noise_type, "GaussStd": sigma})


def _reference(model, data, configs, repetitions, parts, repeats, chunk=512):
    """The reproduction's accuracy as it was computed before it used the engine's loop."""
    from noise.placement import configure
    x, y = data
    configure(model, configs=configs, repetitions=repetitions)
    accs, bad = [], 0
    with torch.inference_mode():
        for rep in range(repeats):
            seed_torch(*parts, rep)
            correct = 0
            for i in range(0, x.shape[0], chunk):
                out = model(x[i:i + chunk])
                finite = torch.isfinite(out).all(dim=1)
                bad += int((~finite).sum())
                correct += int(((out.argmax(1) == y[i:i + chunk]) & finite).sum())
            accs.append(100.0 * correct / x.shape[0])
    n = len(model.noise_sites)
    configure(model, configs=[NoNoise()] * n, repetitions=[1] * n)
    return accs, bad / (x.shape[0] * repeats)


def test_noise_everywhere_with_repetitions_gives_the_seeded_numbers_of_the_old_loop():
    model, data = _model_and_data()
    n = len(model.noise_sites)
    configs, reps = [_gauss("GaussAdd", 0.3)] * n, [1, 2, 1, 3, 1, 1, 2, 1]
    got = accuracy_over_draws(model, data, configs, reps, seed_parts=(0, "t", "x"), repeats=3)
    accs, _ = _reference(model, data, configs, reps, (0, "t", "x"), 3)
    assert got["mean"] == pytest.approx(sum(accs) / 3, abs=1e-12)
    assert got["std"] == pytest.approx(statistics.stdev(accs), abs=1e-9)
    assert 5 < got["mean"] < 99 and got["std"] > 0 and got["non_finite"] == 0
    again = accuracy_over_draws(model, data, configs, reps, seed_parts=(0, "t", "x"), repeats=3)
    other = accuracy_over_draws(model, data, configs, reps, seed_parts=(0, "t", "y"), repeats=3)
    assert again == got and other["mean"] != got["mean"]
    # the noise is off afterwards: the noise-free accuracy is 100 % again
    assert accuracy_over_draws(model, data)["mean"] == 100.0


def test_non_finite_logits_count_as_wrong_and_are_reported():
    model, (x, _) = _model_and_data()
    n = len(model.noise_sites)
    y = torch.zeros(x.shape[0], dtype=torch.long)  # argmax of an all-NaN row is class 0
    configs = [_gauss("GaussMul", 1e30)] * n           # overflows float32 after a few sites
    got = accuracy_over_draws(model, (x, y), configs, seed_parts=(1,), repeats=2)
    accs, share = _reference(model, (x, y), configs, [1] * n, (1,), 2)
    assert share > 0.5 and got["non_finite"] == share
    assert got["mean"] == pytest.approx(sum(accs) / 2)
    # the engine's loop itself counts the NaN rows (whose argmax is class 0, the label) as wrong
    from noise.placement import configure
    configure(model, configs=configs, repetitions=[1] * n)
    seed_torch(1, 0)
    plain = evaluate(model, [(x[:512], y[:512]), (x[512:], y[512:])], torch.nn.CrossEntropyLoss())
    assert plain[1] == pytest.approx(accs[0])


def test_noise_at_one_site_uses_the_walks_evaluator_with_one_seed_per_draw():
    model, data = _model_and_data()
    ev = SiteEvaluator(model, *data, torch.nn.CrossEntropyLoss())
    noise = _gauss("GaussAdd", 1.0)
    got = site_accuracy_over_draws(ev, 1, noise, seed_parts=(0, "a"), repeats=2)
    expected = []
    for rep in range(2):
        seed_torch(0, "a", rep)
        expected.append(ev.evaluate(1, noise)[0])
    assert got["mean"] == pytest.approx(sum(expected) / 2)
    assert got["std"] == pytest.approx(statistics.stdev(expected))
    assert got["mean"] < 100
