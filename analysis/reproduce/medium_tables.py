"""The tables of a convergence run, with their intervals, from its cached measurements
(:attr:`.convergence.Convergence.results`): pure functions of those records.

Intervals (95 %, seeded, so the same records give the same tables):

- a σ_mid: :func:`analysis.uncertainty.sigma_mid_interval` of the lattice rows of every seed
  (resampling seeds and draws); ratios of σ_mid: :func:`analysis.uncertainty.compare_sigma_mid`.
- a per-seed quantity (a weight ratio, a bimodality coefficient, an RMS ratio):
  :func:`seed_interval`, the bootstrap percentile interval of the mean over seeds, deviations
  stretched by sqrt(n / (n − 1)) as in :mod:`analysis.uncertainty`.
- an accuracy (or a paired accuracy difference) over seeds and draws: :func:`draws_interval`,
  the two-level bootstrap (seeds, then draws within each seed), stretched the same way.
- the share of the σ_mid gain a clamp removes, (gain − gain_clamped) / gain with gains in
  decades (log10 σ_mid noise-trained / clean, so that "no gain" is 0 and "all of it removed"
  is 1): the percentile interval over the bootstrap replicates of the three σ_mid.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..uncertainty import SigmaMidInterval, compare_sigma_mid, group_seed, sigma_mid_interval
from .measures import overflow_sigma

__all__ = ["seed_interval", "draws_interval", "curve_interval", "removed_share", "build_tables",
           "LEVEL"]

LEVEL = 0.95


def _ends(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1 - level) / 2
    v = values[~np.isnan(values)]
    if not v.size:
        return math.nan, math.nan
    return float(np.quantile(v, a, method="lower")), float(np.quantile(v, 1 - a, method="higher"))


def seed_interval(values: Iterable[float], *, n_boot: int = 1000, seed: Any = 0
                  ) -> tuple[float, float, float]:
    """(mean, low, high) of per-seed values (NaN left out; one value: its own interval)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not x.size:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2 or not np.all(np.isfinite(x)):
        return mean, float(x.min()), float(x.max())
    x = mean + math.sqrt(x.size / (x.size - 1)) * (x - mean)
    rng = np.random.default_rng(group_seed(0, seed))
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1)
    return (mean, *_ends(means))


def draws_interval(per_seed: Sequence[Sequence[float]], *, n_boot: int = 1000, seed: Any = 0
                   ) -> tuple[float, float, float]:
    """(mean, low, high) of values drawn per seed (accuracies per noise draw), by the two-level
    bootstrap of the module docstring."""
    groups = [np.asarray(g, dtype=float) for g in per_seed if len(g)]
    if not groups:
        return math.nan, math.nan, math.nan
    mean = float(np.mean([g.mean() for g in groups]))
    seed_means = np.array([g.mean() for g in groups])
    k = len(groups)
    gs = math.sqrt(k / (k - 1)) if k > 1 else 1.0
    stretched = []
    for g, sm in zip(groups, seed_means):
        n = g.size
        d = math.sqrt(n / (n - 1)) if n > 1 else 1.0
        stretched.append(mean + gs * (sm - mean) + d * (g - sm))
    if k == 1 and groups[0].size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(group_seed(0, seed))
    out = np.empty(n_boot)
    for b in range(n_boot):
        picks = rng.integers(0, k, k) if k > 1 else [0]
        out[b] = np.mean([stretched[i][rng.integers(0, stretched[i].size,
                                                    stretched[i].size)].mean() for i in picks])
    return (mean, *_ends(out))


def curve_interval(curves: Sequence[Mapping[str, Any]], chance: float, *, n_boot: int,
                   key: Any) -> SigmaMidInterval | None:
    """σ_mid of the lattice rows of several seeds' curves, with its interval (None when no
    σ_mid can be estimated, e.g. a model at chance)."""
    sig, acc, ref, seeds = [], [], [], []
    for i, c in enumerate(curves):
        for s, _, a in c["rows"]:
            sig.append(s), acc.append(a), ref.append(c["reference"]), seeds.append(i)
    if not sig:
        return None
    try:
        return sigma_mid_interval(sig, acc, ref, chance, seeds=seeds, n_boot=n_boot,
                                  seed=group_seed(0, key))
    except ValueError:
        return None


def _log_values(iv: SigmaMidInterval) -> np.ndarray:
    """One log10 σ_mid per replicate: the low-end value where finite, else the high-end one."""
    lo, hi = iv.log10_low_values, iv.log10_high_values
    return np.where(np.isfinite(lo), lo, hi)


def removed_share(noisy: SigmaMidInterval, clamped: SigmaMidInterval,
                  clean: SigmaMidInterval) -> tuple[float, float, float]:
    """(point, low, high) of the share of the σ_mid gain (decades) the clamp removes."""
    gain = math.log10(noisy.sigma_mid / clean.sigma_mid)
    point = (gain - math.log10(clamped.sigma_mid / clean.sigma_mid)) / gain if gain else math.nan
    n = min(noisy.n_boot, clamped.n_boot, clean.n_boot)
    rng = np.random.default_rng(54321)
    xn, xc, x0 = (rng.permutation(_log_values(iv)[:n]) for iv in (noisy, clamped, clean))
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (xn - xc) / (xn - x0)
    reps[~np.isfinite(reps)] = np.nan
    return (point, *_ends(reps))


def _iv(iv: SigmaMidInterval | None, prefix: str) -> dict[str, Any]:
    if iv is None:
        return {prefix: math.nan, f"{prefix}_low": math.nan, f"{prefix}_high": math.nan,
                f"{prefix}_kind": "none"}
    return {prefix: iv.sigma_mid, f"{prefix}_low": iv.low, f"{prefix}_high": iv.high,
            f"{prefix}_kind": iv.kind}


def _cmp(a, b, prefix: str) -> dict[str, Any]:
    if a is None or b is None:
        return {prefix: math.nan, f"{prefix}_low": math.nan, f"{prefix}_high": math.nan,
                f"{prefix}_verdict": "n/a"}
    c = compare_sigma_mid(a, b)
    return {prefix: c.ratio, f"{prefix}_low": c.low, f"{prefix}_high": c.high,
            f"{prefix}_verdict": c.verdict}


def _tri(t: tuple[float, float, float], prefix: str) -> dict[str, float]:
    return {prefix: t[0], f"{prefix}_low": t[1], f"{prefix}_high": t[2]}


def _layer_means(rec) -> np.ndarray:
    return np.array([r["mean_abs"] for r in rec["m"]["weights"]["layers"]], dtype=float)


def _peak(rec) -> float:
    """The largest |w| over a model's conv/linear layers (NaN for non-finite weights)."""
    return max((x["max_abs"] for x in rec["m"]["weights"]["layers"]), default=math.nan)


def _act(rec, site: int, at: str = "site") -> Mapping[str, Any] | None:
    return next((r for r in rec["m"].get("activations", [])
                 if r["site"] == site and r["at"] == at), None)


def _val(row, key) -> float:
    return math.nan if row is None or row.get(key) is None else float(row[key])


def build_tables(results: Sequence[Mapping[str, Any]], *, n_boot: int, mul_site: int
                 ) -> dict[str, pd.DataFrame]:
    """Every table of the medium document (module docstring) from the run's records."""
    by: dict[tuple, list] = {}
    for r in results:
        by.setdefault((r["model"], r["length"], r["kind"]), []).append(r)
    cells = list(dict.fromkeys((r["model"], r["length"]) for r in results))
    T: dict[str, list] = {k: [] for k in ("clean", "b", "b_sites", "a", "c", "c_max", "d", "e")}
    for m, L in cells:
        clean = sorted(by.get((m, L, "clean"), []), key=lambda r: r["repeat"])
        chance = 100.0 / clean[0]["m"]["noise_free"]["num_classes"]
        by_rep = {r["repeat"]: r for r in clean}
        key = (m, L)
        for r in clean:
            T["clean"].append({"model": m, "length": L, "repeat": r["repeat"],
                               "accuracy": r["m"]["noise_free"]["accuracy"],
                               "unit_clamp_binds": r.get("unit_clamp_binds")})
        # ---- (d) per-site σ_mid of the clean models
        n_sites = len(clean[0]["m"]["site_curves"])
        d_rows = []
        for k in range(n_sites):
            iv = curve_interval([r["m"]["site_curves"][k] for r in clean], chance,
                                n_boot=n_boot, key=(*key, "site", k))
            d_rows.append({"model": m, "length": L, "site": k, **_iv(iv, "sigma_mid")})
        order = sorted(range(n_sites), key=lambda i: d_rows[i]["sigma_mid"])
        for rank, i in enumerate(order, 1):
            d_rows[i]["rank"] = rank
        T["d"] += d_rows
        site_iv = {k: curve_interval([r["m"]["site_curves"][k] for r in clean], chance,
                                     n_boot=n_boot, key=(*key, "site", k))
                   for k in range(n_sites)}
        # ---- (e) plans, over seeds and draws
        plans: dict[tuple, list] = {}
        for r in clean:
            for p in r["m"]["plans"]:
                plans.setdefault((p["budget"], p["plan"]), []).append(p["accuracy"])
        for (b, name), accs in plans.items():
            T["e"].append({"model": m, "length": L, "budget": b, "plan": name,
                           **_tri(draws_interval(accs, n_boot=n_boot, seed=(*key, b, name)),
                                  "accuracy")})
        # ---- (b) global noisy training and the clamps
        g_clean = curve_interval([r["m"]["global_curve"] for r in clean], chance, n_boot=n_boot,
                                 key=(*key, "global", "clean"))
        row = {"model": m, "length": L, **_iv(g_clean, "sigma_clean"),
               "unit_clamp_binds": any(r.get("unit_clamp_binds") for r in clean)}
        ivs = {}
        for kind in ("global", "clamp_max", "clamp_unit"):
            recs = sorted(by.get((m, L, kind), []), key=lambda r: r["repeat"])
            if not recs:
                continue
            ivs[kind] = curve_interval([r["m"]["global_curve"] for r in recs], chance,
                                       n_boot=n_boot, key=(*key, "global", kind))
            row.update(_iv(ivs[kind], f"sigma_{kind}"))
            row.update(_cmp(ivs[kind], g_clean, f"gain_{kind}"))
            ratios = [float(np.nanmean(_layer_means(r) / _layer_means(by_rep[r["repeat"]])))
                      for r in recs]
            row.update(_tri(seed_interval(ratios, n_boot=n_boot, seed=(*key, kind, "w")),
                            f"w_ratio_{kind}"))
            rms = []
            for r in recs:
                c = by_rep[r["repeat"]]
                vals = [_val(_act(r, k), "rms") / _val(_act(c, k), "rms")
                        for k in range(1, n_sites)]
                rms.append(float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan)
            row.update(_tri(seed_interval(rms, n_boot=n_boot, seed=(*key, kind, "rms")),
                            f"rms_ratio_{kind}"))
            row[f"max_abs_{kind}"] = float(np.nanmax([_peak(r) for r in recs]))
            if kind == "clamp_max":
                # does the bound bind? the clamped model's largest weight sits at the bound
                # (the clamp acted), and the unclamped noise-trained model's exceeds it
                glob = {r["repeat"]: r for r in by.get((m, L, "global"), [])}
                reached = sum(_peak(r) >= r["clamp"] * (1 - 1e-5) for r in recs)
                exceeded = sum(r["repeat"] in glob and _peak(glob[r["repeat"]]) > r["clamp"]
                               for r in recs)
                row["clamp_max_reached"] = f"{reached} of {len(recs)}"
                row["clamp_max_exceeded"] = f"{exceeded} of {len(recs)}"
            if kind != "global" and "global" in ivs and ivs["global"] and ivs[kind] and g_clean:
                row.update(_tri(removed_share(ivs["global"], ivs[kind], g_clean),
                                f"removed_{kind}"))
        T["b"].append(row)
        # ---- (b) 4 and (a): per-site noisy training
        site_recs: dict[tuple, list] = {}
        for r in by.get((m, L, "site"), []):
            site_recs.setdefault((r["site"], r["factor"]), []).append(r)
        for (k, f), recs in sorted(site_recs.items()):
            recs.sort(key=lambda r: r["repeat"])
            gains, noisy_acc, clean_acc = [], [], []
            for r in recs:
                c = by_rep[r["repeat"]]["m"]["site_accuracy"][f"{k}:{r['sigma']!r}"]
                noisy_acc.append(r["m"]["site_accuracy"]["accuracy"])
                clean_acc.append(c["accuracy"])
                gains.append(np.subtract(noisy_acc[-1], clean_acc[-1]))
            a_row = {"model": m, "length": L, "site": k, "factor": f,
                     "sigmas": [r["sigma"] for r in recs],
                     **_tri(draws_interval(clean_acc, n_boot=n_boot, seed=(*key, k, f, "c")),
                            "acc_clean"),
                     **_tri(draws_interval(noisy_acc, n_boot=n_boot, seed=(*key, k, f, "n")),
                            "acc_noisy"),
                     **_tri(draws_interval(gains, n_boot=n_boot, seed=(*key, k, f, "g")),
                            "gain")}
            T["a"].append(a_row)
            if f != 1.0:
                continue
            noisy_iv = curve_interval([r["m"]["site_curve"] for r in recs], chance,
                                      n_boot=n_boot, key=(*key, "site", k, "noisy"))
            rms_c = np.nanmean([_val(_act(by_rep[r["repeat"]], k), "rms") for r in recs])
            rms_n = np.nanmean([_val(_act(r, k), "rms") for r in recs])
            s_row = {"model": m, "length": L, "site": k, **_iv(site_iv[k], "sigma_clean"),
                     **_iv(noisy_iv, "sigma_noisy"), **_cmp(noisy_iv, site_iv[k], "ratio"),
                     "rms_clean": rms_c, "rms_noisy": rms_n,
                     **_tri(seed_interval([_val(_act(r, k), "rms") /
                                           _val(_act(by_rep[r["repeat"]], k), "rms")
                                           for r in recs], n_boot=n_boot, seed=(*key, k, "rms")),
                            "rms_ratio")}
            s_row["w_ratio"] = float(np.mean([np.nanmean(_layer_means(r) / _layer_means(
                by_rep[r["repeat"]])) for r in recs]))
            for end in ("", "_low", "_high"):
                s_row[f"snr_clean{end}"] = s_row[f"sigma_clean{end}"] / rms_c
                s_row[f"snr_noisy{end}"] = s_row[f"sigma_noisy{end}"] / rms_n
                # SNR noise-trained / clean = σ_mid ratio × RMS clean / RMS noise-trained
                s_row[f"snr_ratio{end}"] = s_row[f"ratio{end}"] * rms_c / rms_n
            T["b_sites"].append(s_row)
        # ---- (c) GaussMul at the mul site, and MAX noise
        mul: dict[float, list] = {}
        for r in by.get((m, L, "mul"), []):
            mul.setdefault(r["sigma"], []).append(r)
        for sig, recs in sorted(mul.items()):
            recs.sort(key=lambda r: r["repeat"])
            reps = [r["repeat"] for r in recs]
            cl = [by_rep[i] for i in reps]
            acc_n = [r["m"]["mul_accuracy"]["accuracy"] for r in recs]
            acc_c = [c["m"]["mul_accuracy"][f"{mul_site}:{sig!r}"]["accuracy"] for c in cl]
            c_row = {"model": m, "length": L, "sigma": sig, "chance": chance,
                     **_tri(draws_interval(acc_n, n_boot=n_boot, seed=(*key, sig, "n")),
                            "acc_noisy"),
                     **_tri(draws_interval(acc_c, n_boot=n_boot, seed=(*key, sig, "c")),
                            "acc_clean"),
                     "non_finite": float(np.mean([np.mean(r["m"]["mul_accuracy"]["non_finite"])
                                                  for r in recs]))}
            measures = {
                "bimod_w": lambda r: r["m"]["weights"]["layers"][0].get("bimodality"),
                "near_zero_w": lambda r: r["m"]["weights"]["layers"][0].get("near_zero_share"),
                "extreme_w": lambda r: r["m"]["weights"]["layers"][0].get("binarisation_index"),
                "bimod_in": lambda r: _val(_act(r, mul_site), "bimodality"),
                "near_zero_in": lambda r: _val(_act(r, mul_site), "near_zero_share"),
                "saturated_in": lambda r: _val(_act(r, mul_site), "saturated_share"),
                "bimod_out": lambda r: _val(_act(r, mul_site + 1), "bimodality")}
            for name, get in measures.items():
                c_row.update(_tri(seed_interval([get(r) for r in recs], n_boot=n_boot,
                                                seed=(*key, sig, name)), f"{name}_noisy"))
                c_row.update(_tri(seed_interval([get(r) for r in cl], n_boot=n_boot,
                                                seed=(*key, name)), f"{name}_clean"))
            T["c"].append(c_row)
        for r in sorted(by.get((m, L, "max_noise"), []), key=lambda r: r["repeat"]):
            for who, v, w_rec in (("noise-trained", r["m"]["max_noise_accuracy"], r),
                                  ("clean", by_rep[r["repeat"]]["m"]["max_noise_accuracy"][
                                      f"None:{r['sigma']!r}"], by_rep[r["repeat"]])):
                f32, f64 = v["float32"], v["float64"]
                rms_in = _val(_act(by_rep[r["repeat"]], 0), "rms")
                T["c_max"].append({
                    "model": m, "length": L, "repeat": r["repeat"], "model_trained": who,
                    "sigma": r["sigma"],
                    # a model whose float32 training diverged keeps non-finite weights
                    "weights_finite": all(
                        math.isfinite(layer["mean_abs"])
                        for layer in w_rec["m"]["weights"]["layers"]),
                    "acc_float32": float(np.mean(f32["accuracy"])),
                    "non_finite_float32": float(np.mean(f32["non_finite"])),
                    "acc_float64": float(np.mean(f64["accuracy"])),
                    "non_finite_float64": float(np.mean(f64["non_finite"])),
                    "noise_free_agree": abs(v["noise_free_float32"] - v["noise_free_float64"])
                    <= 0.05,
                    "finite_agree": _agree(f32, f64),
                    "overflow_sigma_float32": overflow_sigma(v["n_sites"], rms_in,
                                                             torch.float32),
                    "overflow_sigma_float64": overflow_sigma(v["n_sites"], rms_in, torch.float64)})
    return {k: pd.DataFrame(v) for k, v in T.items()}


def _agree(f32: Mapping[str, list], f64: Mapping[str, list]) -> bool | None:
    """Whether float32 and float64 accuracies agree where both are finite (within three
    standard errors of their draws plus 0.5 pp); None when float32 was not finite."""
    if max(f32["non_finite"]) > 0 or max(f64["non_finite"]) > 0:
        return None
    a, b = np.asarray(f32["accuracy"]), np.asarray(f64["accuracy"])
    se = math.sqrt((a.var(ddof=1) if a.size > 1 else 0) / a.size
                   + (b.var(ddof=1) if b.size > 1 else 0) / b.size)
    return bool(abs(a.mean() - b.mean()) <= 3 * se + 0.5)
