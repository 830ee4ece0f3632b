"""The verdicts of the convergence run: pure functions of its tables (:mod:`.medium_tables`),
each returning a :class:`Verdict` (``reproduced`` / ``not reproduced`` / ``inconclusive`` and
the reason).

(b) and (c) are the rules of docs/reproduction/PROTOCOL_medium.md, word for word where it is
explicit; "3 of 4 models" counts as ⌈¾ n⌉ of the n models present. Readings of the protocol
made here (before any medium run):

- "the binding clamp removes a part of the gain whose interval excludes 0": its interval lies
  above 0 (a negative part adds robustness, it removes nothing); "the gain survives the clamp
  while weights grow" needs a gain (σ_mid ratio interval above 1) and weight growth for that
  model.
- "still moves between the two longest lengths by more than its interval": the change of the
  point estimate between them exceeds the width of the interval at the longest length (ratios
  of σ_mid in decades).
- (c) "models that train above chance": accuracy under their own noise more than 5 pp above
  chance; "activations entering the site": the clean activation at the site (what the noise
  is applied to).

(a), (d), (e) have no rule of their own in the protocol ("kept as in scale small, now with
intervals"); the rules below were fixed with this code, before the run, in the same form:
(a) reproduced if the noise-trained model's accuracy gain at its own noise has an interval
above 0 at ≥ ¾ of the (model, site, factor) points and the σ_mid ratio at the trained site is
'higher' at ≥ ¾ of the sites, not reproduced if each holds at ≤ ¼; (d) reproduced if in ≥ ¾ of
the models the least robust site's σ_mid interval lies below the most robust one's, not
reproduced if in ≤ ¼; (e) reproduced if in ≥ ¾ of the models at some budget the best tailored
plan's accuracy interval lies above the uniform plan's, not reproduced if in ≤ ¼; each
inconclusive otherwise, or while its measure moves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ..distribution import BIMODALITY_THRESHOLD

__all__ = ["Verdict", "verdict_a", "verdict_b", "verdict_c", "verdict_d", "verdict_e",
           "moves", "majority", "mechanism_b"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


@dataclass(frozen=True)
class Verdict:
    word: str      # reproduced | not reproduced | inconclusive
    reason: str

    def line(self) -> str:
        return f"**{self.word}**: {self.reason}"


def majority(n: int) -> int:
    """How many of n models make "3 of 4": ⌈¾ n⌉."""
    return math.ceil(0.75 * n)


def moves(last: Sequence[float], prev: Sequence[float], *, log: bool = False) -> bool:
    """Whether a measure (point, low, high) at the longest length moved from the one before by
    more than the width of its interval (False where that cannot be told: NaN, infinite)."""
    f = (lambda v: math.log10(v) if v > 0 else math.nan) if log else float
    try:
        change = abs(f(last[0]) - f(prev[0]))
        width = f(last[2]) - f(last[1])
    except (TypeError, ValueError):
        return False
    return math.isfinite(change) and math.isfinite(width) and change > width


def _tri(row, col: str) -> tuple[float, float, float]:
    return float(row[col]), float(row[f"{col}_low"]), float(row[f"{col}_high"])


def _last_two(df: pd.DataFrame, m: str):
    rows = df[df["model"] == m].sort_values("length")
    return rows.iloc[-1], (rows.iloc[-2] if len(rows) > 1 else None)


def _moving(df: pd.DataFrame, models, measures: Sequence[tuple[str, bool]]) -> list[str]:
    out = []
    for m in models:
        last, prev = _last_two(df, m)
        if prev is None:
            continue
        for col, log in measures:
            if moves(_tri(last, col), _tri(prev, col), log=log):
                out.append(f"{m} {col} ({int(prev['length'])}→{int(last['length'])} epochs)")
    return out


def verdict_b(b: pd.DataFrame) -> Verdict:
    """(b) weight growth as the mechanism, at each model's longest length."""
    models = list(dict.fromkeys(b["model"]))
    last = {m: _last_two(b, m)[0] for m in models}
    grow = [m for m in models if last[m]["w_ratio_global_low"] > 1]
    removes = [m for m in grow if last[m]["removed_clamp_max_low"] > 0]
    survives = [m for m in grow if last[m]["gain_global_low"] > 1
                and last[m]["removed_clamp_max_low"] <= 0 <= last[m]["removed_clamp_max_high"]]
    moving = _moving(b, models, [("w_ratio_global", False), ("removed_clamp_max", False),
                                 ("gain_global", True)])
    k = majority(len(models))
    desc = "; ".join(f"{m}: mean|w| ×{last[m]['w_ratio_global']:.2f} "
                     f"[{last[m]['w_ratio_global_low']:.2f}, {last[m]['w_ratio_global_high']:.2f}]"
                     f", ±max|w| clamp removes {last[m]['removed_clamp_max']:.2f} "
                     f"[{last[m]['removed_clamp_max_low']:.2f}, "
                     f"{last[m]['removed_clamp_max_high']:.2f}] of the gain" for m in models)
    if moving:
        return Verdict(INCONCLUSIVE, "still moving between the two longest lengths: "
                       + ", ".join(moving) + f" ({desc})")
    if len(grow) >= k and len(removes) == len(grow):
        return Verdict(REPRODUCED, f"weights grow in {len(grow)} of {len(models)} models and "
                       f"the binding clamp removes part of the gain in each ({desc})")
    if len(models) - len(grow) >= k:
        return Verdict(NOT_REPRODUCED, f"weights do not grow (interval not above 1) in "
                       f"{len(models) - len(grow)} of {len(models)} models ({desc})")
    if survives:
        return Verdict(NOT_REPRODUCED, "the gain survives the binding clamp while the weights "
                       f"grow in {', '.join(survives)} ({desc})")
    return Verdict(INCONCLUSIVE, f"neither rule holds ({desc})")


def mechanism_b(sites: pd.DataFrame) -> str:
    """Beside (b): does RMS at the noisy site rise, and does the SNR at the midpoint stay
    equal while σ_mid grows (per-site noisy training, each model's longest length)?"""
    if sites is None or not len(sites):
        return "no per-site noisy training in this run"
    rows = sites.loc[sites.groupby("model")["length"].transform("max") == sites["length"]]
    rises = int((rows["rms_ratio_low"] > 1).sum())
    grows = rows[rows["ratio_verdict"] == "higher"]
    same = int(((grows["snr_ratio_low"] <= 1) & (grows["snr_ratio_high"] >= 1)).sum())
    return (f"RMS at the noisy site rises (interval above 1) at {rises} of {len(rows)} sites; "
            f"where σ_mid grows ({len(grows)} sites) the SNR at the midpoint equals the clean "
            f"one within its interval at {same}")


def verdict_c(c: pd.DataFrame) -> Verdict:
    """(c) self-binarisation under GaussMul, at each model's longest GaussMul length."""
    if c is None or not len(c):
        return Verdict(INCONCLUSIVE, "no GaussMul training in this run")
    models = list(dict.fromkeys(c["model"]))
    longest = c.groupby("model")["length"].transform("max") == c["length"]
    top = c[longest]
    above = top[top["acc_noisy"] > top["chance"] + 5]

    def exceeds(r, name, threshold=True):
        low = r[f"{name}_noisy_low"]
        return low > r[f"{name}_clean_high"] and (not threshold or low > BIMODALITY_THRESHOLD)

    hits = {}
    for sig, g in above[above["sigma"] >= 1].groupby("sigma"):
        hits[sig] = [r["model"] for _, r in g.iterrows()
                     if exceeds(r, "bimod_w") or exceeds(r, "bimod_in")]
    best = max(hits.items(), key=lambda kv: len(kv[1]), default=(None, []))
    any_beyond = [f"{r['model']} σ={r['sigma']:g}" for _, r in above.iterrows()
                  if exceeds(r, "bimod_w", False) or exceeds(r, "bimod_in", False)]
    deciding = best[1] if len(best[1]) >= majority(len(models)) else [
        r["model"] for _, r in above.iterrows()]
    moving = []
    for m in dict.fromkeys(deciding):
        rows = c[c["model"] == m]
        for sig, g in rows.groupby("sigma"):
            g = g.sort_values("length")
            if len(g) > 1:
                for col in ("bimod_w_noisy", "bimod_in_noisy"):
                    if moves(_tri(g.iloc[-1], col), _tri(g.iloc[-2], col)):
                        moving.append(f"{m} σ={sig:g} {col}")
    if moving:
        return Verdict(INCONCLUSIVE, "the bimodality coefficient still moves between the two "
                       "longest lengths: " + ", ".join(moving) + "; " + _c_direction(above))
    if len(best[1]) >= majority(len(models)):
        return Verdict(REPRODUCED, f"at σ = {best[0]:g}, {len(best[1])} of {len(models)} "
                       f"models above chance ({', '.join(best[1])}) have a bimodality "
                       "coefficient (weights before the site or activations entering it) above "
                       "5/9 and above the clean model's, intervals apart")
    if not any_beyond:
        return Verdict(NOT_REPRODUCED, f"no GaussMul-trained model above chance ({len(above)} "
                       "of the longest-length rows) exceeds the clean model's bimodality beyond "
                       "its interval")
    return Verdict(INCONCLUSIVE, "some models exceed the clean bimodality ("
                   + ", ".join(any_beyond) + f") but fewer than {majority(len(models))} at one "
                   "σ ≥ 1 above 5/9")


def _c_direction(rows: pd.DataFrame) -> str:
    """Where the GaussMul-trained bimodality lies against the clean model's (intervals apart
    or not), over the longest-length rows above chance: a description, not a rule."""
    parts = []
    for col, what in (("bimod_w", "weights"), ("bimod_in", "activations")):
        below = int((rows[f"{col}_noisy_high"] < rows[f"{col}_clean_low"]).sum())
        above = int((rows[f"{col}_noisy_low"] > rows[f"{col}_clean_high"]).sum())
        parts.append(f"{what} below the clean model's at {below}, above at {above}, "
                     f"overlapping at {len(rows) - below - above}")
    return (f"at the longest length, of {len(rows)} (model, σ) rows above chance, the "
            "GaussMul-trained bimodality coefficient lies: " + "; ".join(parts))


def verdict_a(a: pd.DataFrame, sites: pd.DataFrame) -> Verdict:
    """(a) per-site noisy training increases robustness (one length: not checked for
    movement)."""
    if a is None or not len(a):
        return Verdict(INCONCLUSIVE, "no per-site noisy training in this run")
    gain = float((a["gain_low"] > 0).mean())
    higher = float((sites["ratio_verdict"] == "higher").mean()) if len(sites) else math.nan
    text = (f"accuracy gain at the trained σ with its interval above 0 at "
            f"{int((a['gain_low'] > 0).sum())} of {len(a)} (model, site, factor) points; σ_mid "
            f"ratio higher at {int((sites['ratio_verdict'] == 'higher').sum())} of "
            f"{len(sites)} sites (one training length: convergence not checked)")
    if gain >= 0.75 and higher >= 0.75:
        return Verdict(REPRODUCED, text)
    if gain <= 0.25 and higher <= 0.25:
        return Verdict(NOT_REPRODUCED, text)
    return Verdict(INCONCLUSIVE, text)


def verdict_d(d: pd.DataFrame) -> Verdict:
    """(d) per-site robustness differs, at each model's longest length."""
    models = list(dict.fromkeys(d["model"]))
    differ, moving = [], []
    for m in models:
        rows = d[d["model"] == m]
        lengths = sorted(set(rows["length"]))
        last = rows[rows["length"] == lengths[-1]]
        lo, hi = last.loc[last["sigma_mid"].idxmin()], last.loc[last["sigma_mid"].idxmax()]
        if lo["sigma_mid_high"] < hi["sigma_mid_low"]:
            differ.append(m)
        if len(lengths) > 1:
            prev = rows[(rows["length"] == lengths[-2]) & (rows["site"] == lo["site"])].iloc[0]
            if moves(_tri(lo, "sigma_mid"), _tri(prev, "sigma_mid"), log=True):
                moving.append(f"{m} site {int(lo['site'])}")
    text = (f"the least robust site's σ_mid interval lies below the most robust one's in "
            f"{len(differ)} of {len(models)} models")
    if moving:
        return Verdict(INCONCLUSIVE, "the least robust site's σ_mid still moves: "
                       + ", ".join(moving) + f"; {text}")
    if len(differ) >= majority(len(models)):
        return Verdict(REPRODUCED, text)
    if len(differ) <= len(models) // 4:
        return Verdict(NOT_REPRODUCED, text)
    return Verdict(INCONCLUSIVE, text)


def _e_best(rows: pd.DataFrame):
    out = {}
    for b, g in rows[rows["budget"] > 1].groupby("budget"):
        uni = g[g["plan"] == "uniform"]
        tailored = g[~g["plan"].isin(["uniform", "none (R=1)"])]
        if len(uni) and len(tailored):
            best = tailored.loc[tailored["accuracy"].idxmax()]
            u = uni.iloc[0]
            out[b] = (best, u)
    return out


def verdict_e(e: pd.DataFrame) -> Verdict:
    """(e) tailored vs uniform repetition at equal budget, at each model's longest length."""
    models = list(dict.fromkeys(e["model"]))
    beats, moving = [], []
    for m in models:
        rows = e[e["model"] == m]
        lengths = sorted(set(rows["length"]))
        last = _e_best(rows[rows["length"] == lengths[-1]])
        if any(best["accuracy_low"] > u["accuracy_high"] for best, u in last.values()):
            beats.append(m)
        if len(lengths) > 1:
            prev = _e_best(rows[rows["length"] == lengths[-2]])
            for b, (best, u) in last.items():
                if b in prev:
                    pb, pu = prev[b]
                    change = abs((best["accuracy"] - u["accuracy"])
                                 - (pb["accuracy"] - pu["accuracy"]))
                    if change > best["accuracy_high"] - best["accuracy_low"]:
                        moving.append(f"{m} b={b:g}")
    text = (f"the best tailored plan's accuracy interval lies above the uniform plan's in "
            f"{len(beats)} of {len(models)} models")
    if moving:
        return Verdict(INCONCLUSIVE, "tailored − uniform still moves: " + ", ".join(moving)
                       + f"; {text}")
    if len(beats) >= majority(len(models)):
        return Verdict(REPRODUCED, text)
    if len(beats) <= len(models) // 4:
        return Verdict(NOT_REPRODUCED, text)
    return Verdict(INCONCLUSIVE, text)
