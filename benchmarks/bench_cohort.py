"""Cohort training vs the same configs trained one by one (prints JSON).

K members, each with GaussAdd (σ 0.1, in training and evaluation) at one site (the layer-wise
case, sites taken in turn), for LeNet5-BN and RL_TFC, 1 epoch, trained side by side:

- ``member-serial``: one :func:`util.engine.cohort.run_cohort` with that strategy (the dataset
  prepared once, each epoch's batches drawn once, the members trained in turn: bit for bit
  their single runs);
- ``vectorised``: the same cohort as one stacked network per step (:mod:`util.engine.stacked`);
- ``in_process``: K :func:`util.engine.experiment.run_experiment` calls in this process;
- ``processes`` (estimated): one ``python train.py`` process timed, times K (each process pays
  imports and data loading, as the paper's one-job-per-config runs do).

Every run starts from an empty artifact root (nothing is reused); after one warm-up run, the
ways are timed in alternation (medians of ``--rounds``). Figures are model-epochs per second
and each way's time relative to member-serial, and which strategy ``auto`` picks here. Run
time is dominated by the largest K (LeNet5-BN K = 16 on the real Fashion-MNIST: minutes).

    python benchmarks/bench_cohort.py [--lenet-members 1 4 16] [--mlp-members 1 8 32]
                                       [--data synthetic|fashion] [--n-train 4096] [--rounds 1]
                                       [--device cpu|cuda]

``synthetic`` (default) writes a small MNIST-format dataset (random images) to a temporary
folder; ``fashion`` reads the real Fashion-MNIST (Debian's ``/usr/share/datasets/fashion-mnist``,
see docs/datasets.md).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, emit, interleaved_medians, machine

MODELS = {"LeNet5-BN": {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}},
          "RL_TFC": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}}


def write_synthetic(root: Path, n_train: int, n_test: int) -> None:
    """Random 28x28 images with random labels in MNIST's IDX files under root/MNIST/raw."""
    rng = np.random.default_rng(0)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            (folder / f"{stem}-{kind}-ubyte").write_bytes(header + array.tobytes())


def base_updates(model: str, data: str, data_root: str | None, device: str) -> dict:
    upd = {"general": {"num_epochs": 1}, "device": device, "model": MODELS[model]}
    if data == "synthetic":
        upd["data"] = {"dataset": "MNIST", "root": data_root, "download": False}
    else:
        upd["data"] = {"dataset": "FashionMNIST", "download": False}
    return upd


def members_of(model: str, k: int) -> list[dict]:
    from util.config import merged_with_defaults, validate_config
    n_sites = len(validate_config(merged_with_defaults({"model": MODELS[model]})).site_names)
    # sites in turn; past the last site, the next round at another σ (K distinct configs)
    return [{"noise_settings": {"layer_wise": {"layer_index": i % n_sites,
                                               "noise_type": "GaussAdd",
                                               "GaussStd": 0.1 * (1 + i // n_sites)}}}
            for i in range(k)]


def flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict):
            out += flat(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def bench_model(model: str, k: int, data: str, data_root: str | None, tmp: Path,
                rounds: int, device: str, processes: bool) -> dict:
    from util.config import deep_update, merged_with_defaults, validate_config
    from util.engine.cohort import choose_strategy, plan_chunks, validate_members
    from util.engine.cohort import run_cohort
    from util.engine.experiment import prepare, run_experiment
    upd, members = base_updates(model, data, data_root, device), members_of(model, k)
    fresh = iter(range(10 ** 6))  # every timed run starts from an empty artifact root

    def root() -> str:
        return str(tmp / f"{model}-{k}-{next(fresh)}")

    def cohort(strategy):
        def run() -> None:
            config = merged_with_defaults({**upd, "artifact_root": root(),
                                           "cohort": {"strategy": strategy}})
            result = run_cohort(config, members, progress=False)
            assert result["cohort"]["members_trained"] == list(range(k)), result["cohort"]
            assert result["cohort"]["strategy"] == strategy
        return run

    def in_process() -> None:
        for m in members:
            single = deep_update(merged_with_defaults({**upd, "artifact_root": root()}), m)
            assert run_experiment(single, progress=False)["trained"]

    config = merged_with_defaults({**upd, "artifact_root": root()})
    preps = [prepare(vc.config, vc=vc) for vc in validate_members(config, members)]
    auto = choose_strategy("auto", preps, plan_chunks(preps, "auto", preps[0].device),
                           preps[0].device)
    run_experiment(deep_update(merged_with_defaults({**upd, "artifact_root": root()}),
                               members[0]), progress=False)  # warm-up: first-call costs
    ways = {"member-serial": cohort("member-serial"), "vectorised": cohort("vectorised")}
    if k <= 16:  # K single runs in this process: what member-serial must not be slower than
        ways["in_process"] = in_process
    times = interleaved_medians(ways, rounds=rounds, warmup=0)
    if processes:
        one = deep_update({**upd, "artifact_root": root()}, members[0])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "-u", "with", *flat(one)], cwd=ROOT,
                       check=True, capture_output=True)
        times["processes (estimated)"] = (time.perf_counter() - t0) * k
    return {"members": k, "auto_picks": auto[0], "auto_reason": auto[1],
            "seconds": {w: round(s, 2) for w, s in times.items()},
            "model_epochs_per_s": {w: round(k / s, 3) for w, s in times.items()},
            "time_relative_to_member_serial": {w: round(s / times["member-serial"], 2)
                                               for w, s in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenet-members", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--mlp-members", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--data", choices=("synthetic", "fashion"), default="synthetic")
    parser.add_argument("--n-train", type=int, default=4096)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of the ways (medians)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-processes", action="store_true",
                        help="skip the one-process-per-config estimate")
    args = parser.parse_args()
    ks = {"LeNet5-BN": args.lenet_members, "RL_TFC": args.mlp_members}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_root = None
        if args.data == "synthetic":
            data_root = str(tmp / "data")
            write_synthetic(Path(data_root), args.n_train, max(args.n_train // 8, 64))
        out = {"machine": machine(), "data": args.data, "device": args.device,
               "n_train": args.n_train if args.data == "synthetic" else 60000, "epochs": 1,
               "rounds": args.rounds,
               "results": {m: [bench_model(m, k, args.data, data_root, tmp, args.rounds,
                                           args.device, not args.no_processes)
                               for k in ks[m]]
                           for m in args.models}}
    emit(out)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
