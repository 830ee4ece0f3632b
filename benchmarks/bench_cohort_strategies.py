"""Cohort training on this machine: K members trained one after the other vs as one network.

Measures the strategies the cohort issue names before any of them is built into the engine:

- ``sequential``: K independent models, each with its own Adam; per batch, each member in turn
  (forward, backward, step). What K single runs compute, without K process starts.
- ``grouped``: the K members as one network: convolutions with ``groups=K``, batch norm over
  K x C channels, linear layers as one batched matmul, one Adam over the stacked tensors
  (Adam is elementwise, so this is K Adams). The summed loss gives each member its own gradient.
- ``vmap``: ``torch.func.functional_call`` under ``torch.func.vmap`` over stacked parameters
  and buffers (batch-norm statistics included), one Adam over the stacked tensors.

LeNet5-BN (the paper's main model) on 1x28x28 inputs and RL_TFC (the MLP: three hidden
layers of 64 with BN), batch 128, one training step per call. No noise: each member draws the
same amount of noise under every strategy. Figures are time per member-step relative to
``sequential`` at the same K, measured side by side (interleaved medians).

    python benchmarks/bench_cohort_strategies.py [--members 1 4 16] [--rounds 7]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from _common import emit, interleaved_medians, machine

BATCH = 128


def lenet5_bn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.ReLU(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(), nn.Linear(84, 10))


def rl_tfc() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


class GroupedLinear(nn.Module):
    """K linear layers as one batched matmul: (B, K, F) -> (B, K, O)."""

    def __init__(self, k: int, fin: int, fout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, fin, fout) * fin ** -0.5)
        self.bias = nn.Parameter(torch.zeros(k, 1, fout))

    def forward(self, x):
        return torch.baddbmm(self.bias, x.transpose(0, 1), self.weight).transpose(0, 1)


class GroupedBN1d(nn.Module):
    """Batch norm over (B, K, F) with K x F channels."""

    def __init__(self, k: int, f: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(k * f)

    def forward(self, x):
        b, k, f = x.shape
        return self.bn(x.reshape(b, k * f)).reshape(b, k, f)


class GroupedLeNet5BN(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.features = nn.Sequential(
            nn.Conv2d(k, 6 * k, 5, groups=k), nn.BatchNorm2d(6 * k), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6 * k, 16 * k, 5, groups=k), nn.BatchNorm2d(16 * k), nn.ReLU(),
            nn.MaxPool2d(2))
        self.head = nn.Sequential(
            GroupedLinear(k, 256, 120), GroupedBN1d(k, 120), nn.ReLU(),
            GroupedLinear(k, 120, 84), GroupedBN1d(k, 84), nn.ReLU(), GroupedLinear(k, 84, 10))

    def forward(self, x):  # x: (B, 1, 28, 28), the same batch for every member
        h = self.features(x.expand(-1, self.k, -1, -1))
        return self.head(h.reshape(x.shape[0], self.k, 256))


class GroupedRLTFC(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k
        layers, fin = [], 784
        for _ in range(3):
            layers += [GroupedLinear(k, fin, 64), GroupedBN1d(k, 64), nn.ReLU()]
            fin = 64
        self.net = nn.Sequential(*layers, GroupedLinear(k, 64, 10))

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], 1, -1).expand(-1, self.k, -1))


def sequential_step(models, optims, x, y):
    for model, opt in zip(models, optims):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def make_grouped_step(model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    k = model.k

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)  # (B, K, 10)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 10), y.repeat_interleave(k),
                                           reduction="sum") / x.shape[0]
        loss.backward()
        opt.step()
    return step


def make_vmap_step(models, x, y):
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.Adam(params.values(), lr=1e-3)

    def one(p, b, xb, yb):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    batched = vmap(one, in_dims=(0, 0, None, None))

    def step():
        opt.zero_grad(set_to_none=True)
        batched(params, buffers, x, y).sum().backward()
        opt.step()
    return step


def bench(name, single, grouped_cls, ks, rounds):
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    rows = []
    for k in ks:
        models = [single() for _ in range(k)]
        optims = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
        fns = {"sequential": lambda: sequential_step(models, optims, x, y),
               "grouped": make_grouped_step(grouped_cls(k), x, y)}
        try:
            fns["vmap"] = make_vmap_step([single() for _ in range(k)], x, y)
            fns["vmap"]()
        except Exception as err:  # report why a strategy cannot run, measure the others
            fns.pop("vmap")
            rows.append({"model": name, "members": k, "vmap_error": repr(err)[:200]})
        t = interleaved_medians(fns, rounds=rounds)
        row = {"model": name, "members": k,
               "sequential_ms_per_member_step": round(1e3 * t["sequential"] / k, 3)}
        for s in ("grouped", "vmap"):
            if s in t:
                row[f"{s}_vs_sequential"] = round(t[s] / t["sequential"], 3)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rows = bench("LeNet5-BN", lenet5_bn, GroupedLeNet5BN, args.members, args.rounds)
    rows += bench("RL_TFC", rl_tfc, GroupedRLTFC, args.members, args.rounds)
    emit({"benchmark": "cohort_strategies", "machine": machine(), "batch": BATCH,
          "rows": rows})


if __name__ == "__main__":
    main()
