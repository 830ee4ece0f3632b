"""Vectorised cohorts (issue 16): K members trained as one stacked network end each epoch with
the losses, accuracies, weights and batch-norm statistics of their single runs up to float
rounding; each member's noise has its own type, σ and repetition at its own sites, drawn
independently of the other members'; clamping is per member; a killed cohort resumes to the
metrics of an uninterrupted one; chunks bound memory.

The stated tolerance. Batched kernels (grouped convolutions, batched matmuls) sum in another
order than the single run's, so values agree to float rounding: losses to 1e-5 (relative),
weights to 1e-4, except the bias of a conv/linear layer directly followed by batch norm. Its
gradient is zero in exact arithmetic (BN subtracts the mean) and a few 1e-9 of rounding in
float; Adam divides by the gradient's own scale, so each step moves it by up to lr in either
direction, in a single run as much as in a cohort. Those biases are held to steps x lr, and
the trained networks to the same predictions on clean inputs.
"""
import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from data_fixtures import write_idx_dataset
from models import build_model_from, build_network
from models.registry import get_conf
from noise.config import GaussAdd, GaussCombined, GaussCombined_direct, GaussMul, NoNoise
from noise.operator import NoiseOperator
from util.artifacts import load_torch
from util.config import ConfigError, merged_with_defaults
from util.engine import cohort as cohort_module
from util.engine.cohort import choose_strategy, plan_chunks, run_cohort, validate_members
from util.engine.experiment import prepare, run_experiment
from util.engine.stacked import (NotStackable, StackedNetwork, StackedNoise, stack_adam,
                                 train_epoch_stacked, unstack_adam)

LR = 1e-3
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}


def layer_wise(site, noise_type="GaussAdd", **params):
    return {"noise_settings": {"layer_wise": {"layer_index": site, "noise_type": noise_type,
                                              **params}}}


# ---- the stacked network on its own ---------------------------------------------------------

def pre_bn_biases(net):
    """Names of the biases of layers directly followed by a batch norm."""
    names, children = [], list(net.named_children())
    layers = [(n, m) for n, m in children if not isinstance(m, NoiseOperator)]
    for (name, m), (_, nxt) in zip(layers, layers[1:]):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(nxt, (nn.BatchNorm1d,
                                                                      nn.BatchNorm2d)):
            names.append(f"{name}.bias")
    return names


def train_singles(nets, batches):
    losses = []
    for net in nets:
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        net.train()
        total = 0.0
        for x, y in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / len(batches))
    return losses


FAMILIES = [("MLP", "RL_TFC", (1, 28, 28)), ("MLP", "RL_TFC-noBN", (1, 28, 28)),
            ("LeNet", "LeNet5", (1, 28, 28)), ("LeNet", "LeNet5-BN", (1, 28, 28)),
            ("CNN_HE", "CNN-S-BN", (1, 10, 49)), ("VGG", "VGG11_mnist-noBN", (1, 28, 28))]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family,conf,shape", FAMILIES, ids=[f[1] for f in FAMILIES])
def test_a_stacked_step_is_each_members_own_step_without_noise(family, conf, shape, device):
    torch.manual_seed(0)
    n_sites = len(build_network(get_conf(family, conf), shape, 10).noise_sites)
    members = [build_model_from(family, conf, [NoNoise()] * n_sites, [1] * n_sites, shape,
                                10).to(device) for _ in range(3)]
    singles = copy.deepcopy(members)
    batches = [(torch.randn(16, *shape, device=device),
                torch.randint(0, 10, (16,), device=device)) for _ in range(2)]
    single_losses = train_singles(singles, batches)

    optimizers = [torch.optim.Adam(m.parameters(), lr=LR) for m in members]
    net = StackedNetwork(members)
    opt = stack_adam(net, optimizers)
    results = train_epoch_stacked(net, opt, batches, None, [None] * 3)
    net.unstack()
    unstack_adam(net, opt, optimizers)

    exempt = set(pre_bn_biases(members[0]))
    for member, single, (loss, _), single_loss in zip(members, singles, results,
                                                      single_losses):
        assert loss == pytest.approx(single_loss, rel=1e-5)
        for (name, a), b in zip(member.state_dict().items(), single.state_dict().values()):
            if not a.is_floating_point():
                assert torch.equal(a, b), name   # num_batches_tracked
            elif name in exempt:
                assert (a - b).abs().max() <= 2 * LR * len(batches) + 1e-6, name
            elif name.endswith("running_mean"):  # follows the exempt biases by momentum
                assert (a - b).abs().max() <= 2 * LR * len(batches), name
            else:
                assert (a - b).abs().max() <= 1e-4, name
        # the members' Adam states are theirs again: a second single step agrees too
        x, y = batches[0]
        member.eval(), single.eval()
        with torch.no_grad():
            assert torch.equal(member(x).argmax(1), single(x).argmax(1))


def test_members_at_another_adam_step_or_layer_kind_are_not_stackable():
    a = build_model_from("MLP", "RL_TFC", [NoNoise()] * 11, [1] * 11, (1, 28, 28), 10)
    b = copy.deepcopy(a)
    oa, ob = (torch.optim.Adam(m.parameters(), lr=LR) for m in (a, b))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(a(x), y).backward()
    oa.step()
    with pytest.raises(NotStackable, match="different steps"):
        stack_adam(StackedNetwork([a, b]), [oa, ob])
    odd = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(784, 10))
    odd.noise_sites = []
    with pytest.raises(NotStackable, match="Dropout"):
        StackedNetwork([odd, copy.deepcopy(odd)])


# ---- noise per member -----------------------------------------------------------------------

def moments(y, x, k, block):
    """(mean, std) of y - x (and of y / x) per member block of dim 1."""
    out = []
    for i in range(k):
        d = (y - x).narrow(1, i * block, block).flatten().double()
        r = (y / x).narrow(1, i * block, block).flatten().double()
        out.append((d.mean().item(), d.std().item(), r.mean().item(), r.std().item()))
    return out


def test_each_member_gets_its_own_noise_type_sigma_and_repetition():
    configs = [(GaussAdd(GaussStd=0.5), 1), (NoNoise(), 1), (GaussAdd(GaussStd=0.5), 4),
               (GaussMul(GaussStd=0.2), 1), (GaussAdd(GaussStd=0.3, GaussMean=0.1), 1),
               (GaussCombined_direct(GaussStdAdd=0.2, GaussStdMul=0.0), 1),
               (GaussAdd(GaussStd=0.5, enable_in_training=False), 1),
               (GaussCombined(StdAmplitude=0.4, StdRatio=0.5, FirstMulThenAdd=False), 3)]
    ops = [NoiseOperator(c, r) for c, r in configs]
    noise = StackedNoise(ops).train()
    k, c = len(ops), 4
    torch.manual_seed(1)
    x = torch.full((4096, k * c, 2, 2), 2.0)   # images: blocks of 4 channels per member
    y, shared = noise(x, False)
    assert not shared and y.shape == x.shape
    m = moments(y, x, k, c)
    assert m[0][1] == pytest.approx(0.5, rel=0.02) and abs(m[0][0]) < 0.01
    assert m[1][:2] == (0.0, 0.0)                                 # NoNoise: untouched
    assert m[2][1] == pytest.approx(0.25, rel=0.02)               # σ/√R with R = 4
    assert m[3][3] == pytest.approx(0.2, rel=0.02) and m[3][2] == pytest.approx(1.0, abs=0.01)
    assert m[4][0] == pytest.approx(0.1, abs=0.01) and m[4][1] == pytest.approx(0.3, rel=0.02)
    assert m[5][1] == pytest.approx(0.2, rel=0.02)
    assert m[6][:2] == (0.0, 0.0)                                 # off in training
    # add-then-multiply with R = 3: (x + a)·m averaged over 3 draws; σa = σm = 0.2:
    # var = (x²σm² + σa² + σa²σm²) / R (the product's terms are independent)
    expected = math.sqrt((4 * 0.04 + 0.04 + 0.04 * 0.04) / 3)
    assert m[7][1] == pytest.approx(expected, rel=0.03)
    # independent across members: the two members with GaussAdd σ = 0.5 do not share draws
    d0 = (y - x).narrow(1, 0, c).flatten()
    d2 = (y - x).narrow(1, 2 * c, c).flatten() * 2
    assert abs(torch.corrcoef(torch.stack([d0, d2]))[0, 1]) < 0.02


def test_noise_on_features_and_normalized_to_the_members_sample_size():
    ops = [NoiseOperator(GaussAdd(GaussStd=64.0, normalize_to_input_size=True)),
           NoiseOperator(GaussMul(GaussStd=0.3))]
    noise = StackedNoise(ops).train()
    x = torch.ones(20000, 2, 64)   # features (B, K, F)
    y, _ = noise(x, False)
    assert (y - x)[:, 0].std().item() == pytest.approx(1.0, rel=0.02)   # 64 / 64 elements
    assert y[:, 1].std().item() == pytest.approx(0.3, rel=0.02)
    # a shared tensor (the network input) is given a member dimension first
    y, shared = noise(torch.ones(20000, 64), True)
    assert not shared and y.shape == (20000, 2, 64)


# ---- the engine ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=192, n_test=64)
    return root


def base(root, art, epochs=2, strategy="vectorised", model=MLP, **cohort):
    return merged_with_defaults({
        "data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 64},
        "general": {"num_epochs": epochs}, "artifact_root": str(art), "device": "cpu",
        "model": model, "cohort": {"strategy": strategy, **cohort}})


def single(config, member, art):
    config = json.loads(json.dumps(config))
    del config["cohort"]
    config["artifact_root"] = str(art)
    for section, values in member.items():
        config[section] = {**config.get(section, {}), **values}
    return run_experiment(config, progress=False)


def state_of(result):
    return load_torch(result["checkpoint_used"], map_location="cpu")["model_state"]


def assert_close_to_single(cohort_result, single_result, model_state_names_exempt=()):
    for key in ("training", "validation"):
        for metric in ("loss", "accuracy"):
            got, want = cohort_result[key][metric], single_result[key][metric]
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4 if metric == "loss" else 2.0)
    a, b = state_of(cohort_result), state_of(single_result)
    for name in a:
        if not a[name].is_floating_point():
            assert torch.equal(a[name], b[name]), name
        elif name in model_state_names_exempt or name.endswith("running_mean"):
            assert (a[name] - b[name]).abs().max() <= 0.05, name
        else:
            assert (a[name] - b[name]).abs().max() <= 1e-3, name


def test_a_vectorised_cohort_without_training_noise_is_each_members_single_run(mnist_root,
                                                                               tmp_path):
    members = [{}, {"noise_settings": {"default": {"noise_type": "GaussAdd", "GaussStd": 0.3,
                                                   "enable_in_training": False}}},
               {"general": {"weight_clamping": {"min": -0.01, "max": 0.01}}},
               {"general": {"weight_clamping": {"min": -0.02, "max": None}}}]
    config = base(mnist_root, tmp_path / "cohort")
    result = run_cohort(config, members, progress=False)
    assert result["cohort"]["strategy"] == "vectorised"
    net = prepare(validate_members(config, members)[0].config).model
    exempt = pre_bn_biases(net)
    # member 1 differs from member 0 in evaluation only: one model, trained once
    assert [r["trained"] for r in result["members"]] == [True, False, True, True]
    assert result["members"][1]["training_hash"] == result["members"][0]["training_hash"]
    for member, r in zip(members, result["members"]):
        assert_close_to_single(r, single(config, member, tmp_path / "single"), exempt)
    clamped = state_of(result["members"][2])
    assert clamped["fc1.weight"].abs().max() <= 0.01 + 1e-7
    assert state_of(result["members"][0])["fc1.weight"].abs().max() > 0.02
    assert clamped["bn1.weight"].abs().max() > 0.5   # batch norm is not clamped
    low = state_of(result["members"][3])["fc1.weight"]
    assert low.min() >= -0.02 - 1e-7 and low.max() > 0.02   # one side bounded


def test_a_noise_free_member_beside_noisy_ones_trains_as_its_single_run(mnist_root, tmp_path):
    members = [layer_wise(1, GaussStd=0.5), {}, layer_wise(3, "GaussMul", GaussStd=0.5),
               layer_wise(0, GaussStd=1.0), layer_wise(1, GaussStd=0.5)]
    config = base(mnist_root, tmp_path / "cohort", epochs=1)
    result = run_cohort(config, members, progress=False)
    net = prepare(validate_members(config, members)[0].config).model
    assert_close_to_single(result["members"][1],
                           single(config, {}, tmp_path / "single"), pre_bn_biases(net))
    noisy = [state_of(r)["fc1.weight"] for r in result["members"]]
    # members 0 and 4 have one config (one training hash): one model
    assert result["members"][0]["training_hash"] == result["members"][4]["training_hash"]
    assert torch.equal(noisy[0], noisy[4])
    for i in (0, 2, 3):   # noise changed what they learned
        assert not torch.allclose(noisy[i], noisy[1], atol=1e-3)


def test_lenet5_bn_batch_norm_statistics_are_per_member_in_train_and_eval(mnist_root,
                                                                           tmp_path):
    lenet = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}}
    members = [{}, {"general": {"weight_clamping": {"min": -0.02, "max": 0.02}}}]
    config = base(mnist_root, tmp_path / "cohort", epochs=1, model=lenet)
    result = run_cohort(config, members, progress=False)
    net = prepare(validate_members(config, members)[0].config).model
    a, b = (state_of(r) for r in result["members"])
    assert not torch.allclose(a["bn1.running_var"], b["bn1.running_var"])
    for member, r in zip(members, result["members"]):
        assert_close_to_single(r, single(config, member, tmp_path / "single"),
                               pre_bn_biases(net))


def test_chunks_bound_the_members_per_network_and_give_the_same_models(mnist_root, tmp_path,
                                                                       monkeypatch):
    members = [layer_wise(s, GaussStd=0.2) for s in (5, 1, 3)] + [{}]
    whole = run_cohort(base(mnist_root, tmp_path / "a", epochs=1), members, progress=False)
    chunked = run_cohort(base(mnist_root, tmp_path / "b", epochs=1, max_members=2), members,
                         progress=False)
    assert whole["cohort"]["chunks"] == [4] and chunked["cohort"]["chunks"] == [2, 2]
    # the noise-free member is its single run either way
    a, b = (state_of(r["members"][3]) for r in (whole, chunked))
    assert all((a[k] - b[k]).abs().max() <= 0.05 for k in a if a[k].is_floating_point())
    # automatic chunks from free memory: a machine with room for one member at a time
    monkeypatch.setattr(cohort_module, "_free_bytes", lambda device: 1)
    tiny = run_cohort(base(mnist_root, tmp_path / "c", epochs=1, max_members="auto"), members,
                      progress=False)
    assert tiny["cohort"]["chunks"] == [1, 1, 1, 1]
    assert all(r["trained"] for r in tiny["members"])


def test_members_noisy_at_one_site_are_neighbours_in_a_chunk(mnist_root, tmp_path):
    members = [layer_wise(s, GaussStd=0.2) for s in (5, 1, 5, 3, 1)]
    config = base(mnist_root, tmp_path, epochs=1)
    preps = [prepare(vc.config, vc=vc) for vc in validate_members(config, members)]
    assert plan_chunks(preps, 10, torch.device("cpu")) == [[1, 4, 3, 0, 2]]
    assert plan_chunks(preps, 2, torch.device("cpu")) == [[1, 4], [3, 0], [2]]


def test_auto_picks_vectorised_for_mlps_and_member_serial_for_convolutions_on_cpu(mnist_root,
                                                                                  tmp_path):
    cpu = torch.device("cpu")
    for model, n, expected in ((MLP, 4, "vectorised"), (MLP, 2, "member-serial"),
                               ({"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5"}}, 8,
                                "member-serial")):
        config = base(mnist_root, tmp_path, epochs=1, strategy="auto", model=model)
        preps = [prepare(vc.config, vc=vc)
                 for vc in validate_members(config, [layer_wise(1, GaussStd=s)
                                                     for s in range(1, n + 1)])]
        assert choose_strategy("auto", preps, [list(range(n))], cpu)[0] == expected
        assert choose_strategy("auto", preps, [list(range(n))],
                               torch.device("cuda"))[0] == "vectorised"


def test_vectorised_is_refused_for_members_that_cannot_share_a_network(mnist_root, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(cohort_module, "_check_stackable",
                        lambda preps: (_ for _ in ()).throw(NotStackable("layer x (Foo)")))
    art = tmp_path / "art"
    with pytest.raises(ConfigError, match=r"cohort.strategy 'vectorised': layer x \(Foo\); "
                                          r"allowed for these members: 'member-serial'"):
        run_cohort(base(mnist_root, art, epochs=1), [{}, layer_wise(1, GaussStd=0.1)],
                   progress=False)
    assert not list(art.glob("checkpoints/*/*.pt"))


# ---- resume ----------------------------------------------------------------------------------

MEMBERS = [layer_wise(1, GaussStd=0.3), layer_wise(3, GaussStd=0.2), {},
           layer_wise(1, "GaussMul", GaussStd=0.3)]


def finals(result):
    return [(r["training"], r["validation"], r["training_hash"]) for r in result["members"]]


def test_a_cohort_killed_between_its_members_checkpoints_resumes_to_the_uninterrupted_metrics(
        mnist_root, tmp_path, monkeypatch):
    uninterrupted = run_cohort(base(mnist_root, tmp_path / "a", epochs=3), MEMBERS,
                               progress=False)
    config = base(mnist_root, tmp_path / "b", epochs=3)
    calls = []
    real = cohort_module.end_epoch

    def dying(t, epoch, *args, **kw):
        calls.append(epoch)
        if epoch == 1 and calls.count(1) == 3:   # two members wrote epoch 2, two did not
            raise KeyboardInterrupt("killed")
        return real(t, epoch, *args, **kw)
    monkeypatch.setattr(cohort_module, "end_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cohort(config, MEMBERS, progress=False)
    monkeypatch.setattr(cohort_module, "end_epoch", real)
    ahead = [p for p in (tmp_path / "b" / "checkpoints").glob("*/epoch_0002.pt")]
    assert len(ahead) == 2   # the members stand at different epochs
    resumed = run_cohort(config, MEMBERS, progress=False)
    assert finals(resumed) == finals(uninterrupted)
    assert [r["resumed_from_epoch"] for r in resumed["members"]] == [1, 1, 1, 1]


def test_a_noisy_members_training_does_not_depend_on_its_chunk_mates(mnist_root, tmp_path):
    me = layer_wise(1, GaussStd=0.3)
    a = run_cohort(base(mnist_root, tmp_path / "a", epochs=2),
                   [layer_wise(1, GaussStd=0.1), me, layer_wise(3, GaussStd=0.3), {}],
                   progress=False)
    b = run_cohort(base(mnist_root, tmp_path / "b", epochs=2),
                   [me, layer_wise(1, "GaussMul", GaussStd=0.5), layer_wise(0, GaussStd=0.3),
                    layer_wise(1, GaussStd=0.2), layer_wise(5, GaussStd=0.3)], progress=False)
    mine_a, mine_b = a["members"][1], b["members"][0]
    assert mine_a["training_hash"] == mine_b["training_hash"]
    net = prepare(validate_members(base(mnist_root, tmp_path, epochs=2), [me])[0].config).model
    # its own generator: the same draws, so the same model up to float rounding
    assert_close_to_single(mine_a, mine_b, pre_bn_biases(net))
    # while another σ at the same site trained another model
    other = state_of(a["members"][0])["fc2.weight"]
    assert not torch.allclose(other, state_of(mine_a)["fc2.weight"], atol=1e-3)


def test_a_vectorised_cohort_sigkilled_mid_run_resumes_to_the_uninterrupted_metrics(mnist_root,
                                                                                   tmp_path):
    root = Path(__file__).resolve().parent.parent
    members = json.dumps(MEMBERS)

    def command(art, store):
        return [sys.executable, "train.py", "cohort", "-F", str(store), "with",
                "data.dataset=MNIST", f"data.root={mnist_root}", "data.download=false",
                "data.batch_size=64", "general.num_epochs=3", f"artifact_root={art}",
                "device=cpu", "model.model_class=MLP", "model.MLP.conf_name=RL_TFC",
                "cohort.strategy=vectorised", f"cohort.members={members}"]

    def histories(store):
        """The per-epoch metrics of every member of the one COMPLETED cohort run in store."""
        runs = [json.loads(p.read_text()) for p in store.glob("*/run.json")]
        done = [r for r in runs if r["status"] == "COMPLETED"]
        assert len(done) == 1
        members = json.loads(Path(done[0]["result"]["artifacts"]["histories"]).read_text())
        return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in members]

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run(command(tmp_path / "a", tmp_path / "runs_a"), cwd=root, check=True,
                   capture_output=True, env=env, timeout=600)
    art = tmp_path / "b"
    proc = subprocess.Popen(command(art, tmp_path / "runs_b"), cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(art.glob("checkpoints/*/epoch_0002.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the cohort ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)   # while the members write their epoch-2 checkpoints
    proc.wait()
    subprocess.run(command(art, tmp_path / "runs_b"), cwd=root, check=True,
                   capture_output=True, env=env, timeout=600)
    # every member's every epoch to the float, as if nothing had happened
    assert histories(tmp_path / "runs_b") == histories(tmp_path / "runs_a")
