"""Walking sweep benchmarks (LeNet5-BN on Fashion-MNIST; prints JSON).

a. Eval-only sweep of 16 sites x 49 σ: ``python train.py walk`` (one process, timed whole,
   imports and data loading included) against the paper's way, one ``python train.py`` process
   per (site, σ) eval-only config (a sample timed and extrapolated), and against 784 clean
   in-memory evaluation passes (a sample timed and extrapolated). Goals: >= 40x faster than
   the processes, within 1.5x of the clean passes.
b. Adaptive midpoint search vs the dense grid: evaluations and wall time per site, and σ_mid
   agreement in decades.
c. Noisy training: one epoch with GaussAdd at every site vs none (goal <= 1.2x).

Usage: python benchmarks/bench_walk.py [--part a|b|c|all] [--sample N]
The trained model is reused from the artifact root (trained once, 1 epoch, if missing).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from _common import ROOT, emit, interleaved_medians, machine

DENSE = [10 ** (e / 4) for e in range(-8, 41)]  # 49 σ, 1e-2 .. 1e10
BASE = ["general.num_epochs=1", "device=cpu"]


def _python(args, store, timeout=3600):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "-F", store, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return time.perf_counter() - t0


def _last_result(store):
    from util.run_store import iter_runs
    runs = list(iter_runs(store, status="COMPLETED"))
    return runs[-1].result


def part_a(store, sample):
    import torch

    from util.config import merged_with_defaults
    from util.engine.experiment import obtain_trained_model, prepare
    from util.engine.walk import SiteEvaluator, gather

    _python(["with", *BASE], store)  # make sure the trained model exists
    sigmas = json.dumps(DENSE)
    walk_s = _python(["walk", "with", *BASE, f"walk.sigmas={sigmas}"], store)
    walked = _last_result(store)
    n_evals = walked["n_evaluations"]
    print(f"walk: {n_evals} evaluations, process {walk_s:.1f} s", file=sys.stderr, flush=True)
    # several evaluations per suffix forward (walk.batch_evals), side by side
    batched_s = _python(["walk", "with", *BASE, f"walk.sigmas={sigmas}", "walk.batch_evals=8"],
                        store)

    # the paper's way: one process per eval-only config (sample, extrapolate)
    picks = [(site, DENSE[(7 * i) % len(DENSE)]) for i, site in
             enumerate([0, 5, 9, 15, 2, 11, 7, 13][:sample])]
    per_proc = []
    for site, sigma in picks:
        lw = repr({"layer_index": site, "noise_type": "GaussAdd", "GaussStd": sigma,
                         "enable_in_training": False, "enable_in_eval": True})
        per_proc.append(_python(["with", *BASE, f"noise_settings.layer_wise={lw}"], store))
    per_proc_mean = sum(per_proc) / len(per_proc)

    # 784 clean in-memory evaluation passes (sample, extrapolate)
    p = prepare(merged_with_defaults({"device": "cpu", "general": {"num_epochs": 1}}))
    obtain_trained_model(p, progress=False)
    x, y = gather(p.dataset.val_loader(p.device), p.device)
    ev = SiteEvaluator(p.model, x, y, p.criterion)
    ev.evaluate(None)
    passes = 10
    t0 = time.perf_counter()
    for _ in range(passes):
        ev.evaluate(None)
    clean_pass = (time.perf_counter() - t0) / passes
    return {
        "evaluations": n_evals,
        "walk_process_seconds": round(walk_s, 2),
        "walk_sweep_seconds": walked["walk_seconds"],
        "walk_batch_evals_8_process_seconds": round(batched_s, 2),
        "per_config_process_seconds_mean": round(per_proc_mean, 3),
        "per_config_process_sample": len(per_proc),
        "per_config_processes_extrapolated_seconds": round(per_proc_mean * n_evals, 1),
        "speedup_vs_processes": round(per_proc_mean * n_evals / walk_s, 1),
        "clean_pass_seconds": round(clean_pass, 4),
        "clean_passes_extrapolated_seconds": round(clean_pass * n_evals, 1),
        "walk_over_clean_passes": round(walk_s / (clean_pass * n_evals), 3),
        "goals": {"speedup_vs_processes_min": 40, "walk_over_clean_passes_max": 1.5},
        "torch_threads": torch.get_num_threads(),
    }


def part_b(store):
    from util.config import merged_with_defaults
    from util.engine.walk import run_walk

    cfg = {"device": "cpu", "general": {"num_epochs": 1}}
    dense = run_walk(merged_with_defaults({**cfg, "walk": {"sigmas": DENSE}}), progress=False)
    adaptive = run_walk(merged_with_defaults({**cfg, "walk": {"search": "midpoint"}}),
                        progress=False)
    sites = {}
    for name, d in dense["sigma_mid"].items():
        a = adaptive["sigma_mid"][name]
        diff = (abs(math.log10(a["sigma_mid"]) - math.log10(d["sigma_mid"]))
                if a["sigma_mid"] and d["sigma_mid"] else None)
        sites[name] = {"dense_sigma_mid": d["sigma_mid"], "dense_kind": d["kind"],
                       "adaptive_sigma_mid": a["sigma_mid"], "adaptive_kind": a["kind"],
                       "adaptive_evals": a["n_evals"], "decades_apart": diff}
    diffs = [s["decades_apart"] for s in sites.values() if s["decades_apart"] is not None]
    return {"dense_evals_per_site": len(DENSE),
            "adaptive_evals_per_site_max": max(s["adaptive_evals"] for s in sites.values()),
            "dense_seconds": dense["walk_seconds"], "adaptive_seconds": adaptive["walk_seconds"],
            "dense_seconds_per_site": round(dense["walk_seconds"] / len(sites), 3),
            "adaptive_seconds_per_site": round(adaptive["walk_seconds"] / len(sites), 3),
            "max_decades_apart": max(diffs) if diffs else None, "sites": sites,
            "goals": {"adaptive_evals_per_site_max": 12, "max_decades_apart": 0.05}}


def part_c(batches=60, rounds=5):
    import torch

    from util.config import merged_with_defaults
    from util.engine.experiment import prepare
    from util.engine.loops import train_epoch

    from noise import fast_rng

    def make(noise, torch_generator=False):
        p = prepare(merged_with_defaults({"device": "cpu", "noise_settings": noise}))
        opt = torch.optim.Adam(p.model.parameters(), lr=1e-3)
        data = [b for _, b in zip(range(batches), p.dataset.train_loader(p.device, 0, 0))]
        if not torch_generator:
            return lambda: train_epoch(p.model, data, opt, p.criterion)

        def run():
            with fast_rng.use_torch_generator():
                train_epoch(p.model, data, opt, p.criterion)
        return run

    clean = {"default": {"noise_type": "NoNoise"}}
    noisy = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}}
    med = interleaved_medians({"no_noise": make(clean), "gauss_add_all_sites": make(noisy),
                               "gauss_add_all_sites_torch_randn": make(noisy, True)},
                              rounds=rounds)
    return {"batches_per_round": batches, "seconds": med,
            "ratio_noisy_over_clean": med["gauss_add_all_sites"] / med["no_noise"],
            "ratio_noisy_torch_randn_over_clean":
                med["gauss_add_all_sites_torch_randn"] / med["no_noise"],
            "goal_ratio_max": 1.2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="all", choices=["a", "b", "c", "all"])
    ap.add_argument("--sample", type=int, default=4, help="per-config processes to time (a)")
    args = ap.parse_args()
    out = {"benchmark": "walk", **machine()}
    with tempfile.TemporaryDirectory() as store:
        if args.part in ("a", "all"):
            out["a_sweep"] = part_a(store, args.sample)
        if args.part in ("b", "all"):
            out["b_adaptive"] = part_b(store)
        if args.part in ("c", "all"):
            out["c_noisy_training"] = part_c()
    emit(out)


if __name__ == "__main__":
    main()
