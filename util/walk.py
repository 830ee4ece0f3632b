"""The walking sweep in one process: every site × σ × repeat on one trained model.

The paper runs each (site, σ, repeat) as its own job: import torch, load data, build, load the
checkpoint, evaluate once. Here the data sits on the device once, the model is built once, and
noise is reconfigured per evaluation without rebuilding. For the models of :mod:`models` (one
sequence of layers with their noise operators) the part of the network *before* the walked site
is computed once per site and its activations reused for every σ and repeat: only the part
after the site runs per evaluation. Noise draws are seeded per (seed, site, σ, repeat), so a
walk is reproducible and any single evaluation can be recomputed on its own.

``batch_evals`` > 1 batches several evaluations (σ values, repeats) of one site into one forward
pass of the suffix: each draws its noise from its own seeded generator state, so the results
are those of the one-by-one evaluations. On a CPU that is slower (a bigger batch leaves the
cache; measured in ``benchmarks/bench_walk.py``), so ``auto`` means 1 there and 8 on GPUs,
where small forwards are bound by kernel launches.

``search='grid'`` evaluates every σ of ``sigmas``; ``search='midpoint'`` finds σ_mid per site
by bracketing and bisection in log σ (at most ``max_evals`` σ values per site).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from noise.config import (NOISE_TYPES, NoiseConfig, NoNoise, check_finite_float32,
                          noise_config_to_dict, parse_noise_config)
from noise.placement import configure

from .config import DEFAULT_CONFIG, ConfigError
from .training import seed_torch

log = logging.getLogger(__name__)

WALK_DEFAULTS: dict[str, Any] = DEFAULT_CONFIG["walk"]

__all__ = ["WALK_DEFAULTS", "WalkSettings", "parse_walk", "SiteEvaluator", "walk_model"]

SEARCHES = ("grid", "midpoint")
SPLITS = ("validation", "test")


def default_sigmas() -> list[float]:
    return [float(10 ** (e / 4)) for e in range(-8, 13)]


@dataclass(frozen=True)
class WalkSettings:
    noise_type: str
    sigma_key: str
    params: dict
    sigmas: tuple[float, ...]
    repeats: int
    sites: tuple[int, ...] | None
    search: str
    sigma_range: tuple[float, float]
    max_evals: int
    tolerance_decades: float
    eval_split: str
    chunk_size: int
    batch_evals: int | str = "auto"

    def evals_per_forward(self, device) -> int:
        if self.batch_evals != "auto":
            return int(self.batch_evals)
        return 1 if torch.device(device).type == "cpu" else 8

    def noise(self, sigma: float) -> NoiseConfig:
        """The noise config of one evaluation (active in eval mode only)."""
        return parse_noise_config({"noise_type": self.noise_type, **self.params,
                                   self.sigma_key: sigma, "enable_in_training": False,
                                   "enable_in_eval": True})


def _walk_float(key: str, value: Any) -> float:
    """A finite number that fits float32 (σ values are drawn in float32); ConfigError else."""
    try:
        return check_finite_float32(f"walk.{key}", value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def parse_walk(walk: Mapping[str, Any] | None, n_sites: int, *, dataset: str | None = None,
               has_test_split: bool = True) -> WalkSettings:
    """Validated walk settings; ``ConfigError`` naming the ``walk.*`` key on bad input.

    ``dataset`` and ``has_test_split`` (whether it has a separate test split with the config's
    ``data.val_split``) decide whether ``eval_split: test`` is allowed.
    """
    if walk is not None and not isinstance(walk, Mapping):
        raise ConfigError(f"walk must be a dict of walk settings, got {walk!r}")
    w = dict(WALK_DEFAULTS)
    for key, value in (walk or {}).items():
        if key not in WALK_DEFAULTS:
            raise ConfigError(f"walk: unknown key {key!r}; allowed: {list(WALK_DEFAULTS)}")
        w[key] = value
    if not isinstance(w["noise_type"], str) or w["noise_type"] not in NOISE_TYPES \
            or w["noise_type"] == "NoNoise":
        raise ConfigError(f"walk.noise_type {w['noise_type']!r} is not a noise type with a σ "
                          f"to walk; allowed: {sorted(set(NOISE_TYPES) - {'NoNoise'})}")
    if w["sigma_key"] is not None and not isinstance(w["sigma_key"], str):
        raise ConfigError(f"walk.sigma_key must be a key of walk.noise_type or null, "
                          f"got {w['sigma_key']!r}")
    sigma_key = w["sigma_key"] or ("StdAmplitude" if w["noise_type"] == "GaussCombined"
                                   else "GaussStd")
    params = w["params"]
    if params is not None and not (isinstance(params, Mapping)
                                   and all(isinstance(k, str) for k in params)):
        raise ConfigError(f"walk.params must be a dict of {w['noise_type']}'s keys (e.g. "
                          f"{{StdRatio: 0.5}}) or null, got {params!r}")
    sigmas = default_sigmas() if w["sigmas"] is None else w["sigmas"]
    if not isinstance(sigmas, (list, tuple)) or not sigmas:
        raise ConfigError(f"walk.sigmas must be a non-empty list of σ >= 0, got {sigmas!r}")
    sigmas = tuple(_walk_float(f"sigmas[{i}]", s) for i, s in enumerate(sigmas))
    if any(not s >= 0 for s in sigmas):
        raise ConfigError(f"walk.sigmas must all be >= 0, got {list(sigmas)}")
    if w["search"] not in SEARCHES:
        raise ConfigError(f"walk.search {w['search']!r} is unknown; allowed: {list(SEARCHES)}")
    if w["eval_split"] not in SPLITS:
        raise ConfigError(f"walk.eval_split {w['eval_split']!r}; allowed: {list(SPLITS)}")
    if w["eval_split"] == "test" and not has_test_split:
        raise ConfigError(f"walk.eval_split 'test': dataset {dataset} has no separate test split "
                          "with this data.val_split (null: the official test split is the "
                          "validation split); allowed: 'validation', or 'test' with "
                          "data.val_split set")
    for key in ("repeats", "max_evals", "chunk_size"):
        v = w[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"walk.{key} must be an integer >= 1, got {v!r}")
    b = w["batch_evals"]
    if b != "auto" and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
        raise ConfigError(f"walk.batch_evals must be 'auto' or an integer >= 1, got {b!r}")
    if w["search"] == "midpoint" and w["max_evals"] < 3:
        raise ConfigError("walk.max_evals must be >= 3 for the midpoint search")
    lo_hi = w["sigma_range"]
    if not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2:
        raise ConfigError(f"walk.sigma_range must be [low, high] with 0 < low < high, "
                          f"got {lo_hi!r}")
    lo, hi = (_walk_float(f"sigma_range[{i}]", v) for i, v in enumerate(lo_hi))
    if not 0 < lo < hi:
        raise ConfigError(f"walk.sigma_range must be [low, high] with 0 < low < high, "
                          f"got {lo_hi!r}")
    tolerance = _walk_float("tolerance_decades", w["tolerance_decades"])
    if tolerance <= 0:
        raise ConfigError(f"walk.tolerance_decades must be > 0 (the bisection's stop width in "
                          f"decades of σ), got {w['tolerance_decades']!r}")
    enabled = w["enabled"]
    if not isinstance(enabled, bool) and enabled not in (0, 1):
        raise ConfigError(f"walk.enabled must be true or false, got {enabled!r}")
    sites = w["sites"]
    if sites is not None:
        if not isinstance(sites, (list, tuple)) or not sites:
            raise ConfigError(f"walk.sites must be a list of site indices or null, got {sites!r}")
        for s in sites:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < n_sites:
                raise ConfigError(f"walk.sites: site {s!r} is out of range; this model has "
                                  f"{n_sites} sites (valid: 0..{n_sites - 1})")
        if len(set(sites)) != len(sites):
            raise ConfigError(f"walk.sites lists a site twice: {list(sites)}")
        sites = tuple(sites)
    settings = WalkSettings(w["noise_type"], sigma_key, dict(params or {}), sigmas,
                            w["repeats"], sites, w["search"], (lo, hi), w["max_evals"],
                            tolerance, w["eval_split"], w["chunk_size"], b)
    try:
        for sigma in {*sigmas, lo, hi}:
            settings.noise(sigma)
    except ValueError as err:
        raise ConfigError(f"walk (noise_type, sigma_key, params): {err}") from None
    return settings


class SiteEvaluator:
    """Accuracy of a trained model with noise at one site, reusing the clean prefix.

    ``model`` is a model of :mod:`models` (its children run in sequence and its noise operators
    are children) or any model with ``noise_sites`` (then every evaluation is a full forward).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 criterion: nn.Module, chunk_size: int = 256):
        self.model = model.eval()
        self.x, self.y = x, y
        self.criterion = criterion
        self.chunk_size = chunk_size
        self.sites = model.noise_sites
        children = list(model.children()) if isinstance(model, nn.Sequential) else []
        # the prefix cache needs the operators as children (models of :mod:`models`); an
        # injected nn.Sequential keeps them outside: every evaluation is a full forward
        ops = {id(s.operator) for s in self.sites}
        self._children = children if ops <= {id(m) for m in children} else None
        self._site = None
        self._acts: list[torch.Tensor] | None = None

    def _chunks(self):
        for i in range(0, self.x.shape[0], self.chunk_size):
            yield self.x[i:i + self.chunk_size], self.y[i:i + self.chunk_size]

    def _set_site(self, site: int | None) -> None:
        if site == self._site:
            return
        configure(self.model, configs=[NoNoise()] * len(self.sites),
                  repetitions=[s.repetition for s in self.sites])
        self._site, self._acts = site, None
        if site is None or self._children is None:
            return
        op = self.sites[site].operator
        k = next(i for i, m in enumerate(self._children) if m is op)
        self._prefix = nn.Sequential(*self._children[:k])
        self._suffix = nn.Sequential(*self._children[k + 1:])
        with torch.inference_mode():
            self._acts = [self._prefix(xc) for xc, _ in self._chunks()]

    @torch.inference_mode()
    def evaluate(self, site: int | None, noise: NoiseConfig | None = None) -> tuple[float, float]:
        """(accuracy %, mean loss) with ``noise`` at ``site`` only (None: the clean model)."""
        self._set_site(site)
        if site is not None:
            self.sites[site].operator.config = noise
        loss_sum, correct, n = 0.0, 0, 0
        if self._acts is not None:
            op = self.sites[site].operator
            outs = ((self._suffix(op(a)), yc) for a, (_, yc) in zip(self._acts, self._chunks()))
        else:
            outs = ((self.model(xc), yc) for xc, yc in self._chunks())
        for out, yc in outs:
            loss_sum += self.criterion(out, yc).item() * yc.shape[0]
            correct += (out.argmax(1) == yc).sum().item()
            n += yc.shape[0]
        return 100.0 * correct / n, loss_sum / n

    @torch.inference_mode()
    def evaluate_many(self, site: int, jobs: Sequence[tuple[NoiseConfig, Sequence[Any]]]
                      ) -> list[tuple[float, float]]:
        """``evaluate(site, noise)`` for every (noise, seed parts) of ``jobs``, in one suffix
        forward per chunk. Job i draws its noise as if ``seed_torch(*parts_i)`` had been called
        before evaluating it alone, so the results equal the one-by-one evaluations (up to
        float rounding of the bigger batch)."""
        self._set_site(site)
        if self._acts is None or len(jobs) == 1:
            out = []
            for noise, parts in jobs:
                seed_torch(*parts)
                out.append(self.evaluate(site, noise))
            return out
        op = self.sites[site].operator
        cuda = self.x.device.type == "cuda"

        def rng_state():
            return (torch.random.get_rng_state(),
                    torch.cuda.get_rng_state(self.x.device) if cuda else None)

        states = []
        for _, parts in jobs:
            seed_torch(*parts)
            states.append(rng_state())
        loss_sum = [0.0] * len(jobs)
        correct = [0] * len(jobs)
        n = 0
        for a, (_, yc) in zip(self._acts, self._chunks()):
            noisy = []
            for i, (noise, _) in enumerate(jobs):
                cpu_state, cuda_state = states[i]
                torch.random.set_rng_state(cpu_state)
                if cuda:
                    torch.cuda.set_rng_state(cuda_state, self.x.device)
                op.config = noise
                noisy.append(op(a))
                states[i] = rng_state()
            outs = self._suffix(torch.cat(noisy)).split(yc.shape[0])
            for i, out in enumerate(outs):
                loss_sum[i] += self.criterion(out, yc).item() * yc.shape[0]
                correct[i] += (out.argmax(1) == yc).sum().item()
            n += yc.shape[0]
        return [(100.0 * c / n, ls / n) for c, ls in zip(correct, loss_sum)]


def _gather(loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs).to(device), torch.cat(ys).to(device)


def walk_model(model: nn.Module, loader, criterion: nn.Module, settings: WalkSettings, *,
               seed: int, num_classes: int, device, site_names: Sequence[str],
               progress: bool = True) -> dict[str, Any]:
    """Run the sweep; returns clean accuracy, one record per evaluation and σ_mid per site."""
    from analysis.midpoint import midpoint

    x, y = _gather(loader, device)
    ev = SiteEvaluator(model, x, y, criterion, settings.chunk_size)
    clean_acc, clean_loss = ev.evaluate(None)
    chance = 100.0 / num_classes
    sites = settings.sites or tuple(range(len(model.noise_sites)))
    records: list[dict[str, Any]] = []
    table: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()

    per_forward = settings.evals_per_forward(device)

    def run(site: int, sigmas: Sequence[float]) -> dict[float, float]:
        """Evaluate every (σ, repeat), ``per_forward`` of them per suffix forward, record each;
        mean accuracy per σ."""
        jobs = [(sigma, rep) for sigma in sigmas for rep in range(settings.repeats)]
        noises = {sigma: settings.noise(sigma) for sigma in sigmas}
        accs: dict[float, list[float]] = {}
        for i in range(0, len(jobs), per_forward):
            group = jobs[i:i + per_forward]
            results = ev.evaluate_many(site, [(noises[sigma], (seed, "walk", site, sigma, rep))
                                              for sigma, rep in group])
            for (sigma, rep), (acc, loss) in zip(group, results):
                accs.setdefault(sigma, []).append(acc)
                records.append({"site": site, "site_name": site_names[site],
                                "noise": noise_config_to_dict(noises[sigma]), "sigma": sigma,
                                "repeat": rep, "accuracy": acc, "loss": loss})
        return {s: float(np.mean(a)) for s, a in accs.items()}

    bar = _bar(len(sites), progress)
    for site in sites:
        if settings.search == "grid":
            curve = run(site, settings.sigmas)
        else:
            curve = _bisect(lambda s: run(site, [s])[s], settings, (clean_acc + chance) / 2)
        positive = {s: a for s, a in curve.items() if s > 0}
        entry: dict[str, Any] = {"site": site, "n_evals": len(curve)}
        if len(positive) >= 2:
            m = midpoint(list(positive), list(positive.values()), clean_acc, chance)
            entry.update(sigma_mid=m.sigma_mid, kind=m.kind, non_monotone=m.non_monotone)
        else:
            entry.update(sigma_mid=None, kind="too_few_sigmas", non_monotone=False)
        table[site_names[site]] = entry
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"clean_accuracy": clean_acc, "clean_loss": clean_loss, "chance": chance,
            "evaluations": records, "sigma_mid": table,
            "walk_seconds": round(time.perf_counter() - t0, 3),
            "n_evaluations": len(records)}


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="walk (sites)", dynamic_ncols=True, disable=None)


def _bisect(evaluate, settings: WalkSettings, level: float) -> dict[float, float]:
    """Bracket the crossing of ``level`` in [σ_lo, σ_hi] and bisect it in log10 σ.

    Assumes accuracy falls with σ (the first crossing is found for non-monotone curves only
    if the bracket's ends straddle it). At most ``max_evals`` σ values; stops early when the
    bracket is narrower than ``tolerance_decades``, and whenever the next σ would not be new
    (not finite, not strictly inside the bracket, or already evaluated: float resolution, or
    settings that bypassed :func:`parse_walk`). Returns {σ: mean accuracy}.
    """
    lo, hi = settings.sigma_range
    curve = {lo: evaluate(lo)}
    if curve[lo] <= level:  # already below the level: σ_mid <= lo (an upper bound)
        curve[hi] = evaluate(hi)
        return curve
    curve[hi] = evaluate(hi)
    if curve[hi] > level:  # never falls: σ_mid > hi (a lower bound)
        return curve
    while len(curve) < settings.max_evals:
        if not 0 < lo < hi < math.inf:  # no finite σ between them in log σ
            log.debug("bisection stops: bracket [%r, %r] cannot be bisected in log σ", lo, hi)
            break
        llo, lhi = math.log10(lo), math.log10(hi)
        if lhi - llo <= settings.tolerance_decades:
            break
        mid = 10 ** ((llo + lhi) / 2)
        if not lo < mid < hi or mid in curve:  # float resolution reached
            log.debug("bisection stops: no new σ between %r and %r", lo, hi)
            break
        curve[mid] = evaluate(mid)
        if curve[mid] > level:
            lo = mid
        else:
            hi = mid
    return curve


def run_walk(config: Mapping[str, Any], *, run_store=None, db_collection=None,
             log_metric=None, progress: bool = True) -> dict[str, Any]:
    """The ``walk`` command: obtain the trained model (reuse or train), sweep, store, report.

    Returns the eval-only result fields (training history, checkpoint used, ...) plus
    ``evaluations`` (one record per site × σ × repeat), ``clean_accuracy``, ``sigma_mid`` per
    site and the artifact paths of the evaluations table and the walking-noise plot.
    """
    from .artifacts import atomic_write_bytes, safe_path
    from .config import validate_config
    from .experiment import build_result, obtain_trained_model, prepare

    t0 = time.perf_counter()
    vc = validate_config(config, walk=True)
    p = prepare(config, vc=vc)
    outcome = obtain_trained_model(p, run_store=run_store, db_collection=db_collection,
                                   log_metric=log_metric, progress=progress)
    loader = (p.dataset.test_loader(p.device) if vc.walk.eval_split == "test"
              else p.dataset.val_loader(p.device))
    if loader is None:  # parse_walk rejects this up front; here only if has_test_split erred
        raise ConfigError(f"walk.eval_split 'test': dataset {p.dataset.name} has no separate "
                          "test split; use 'validation'")
    walked = walk_model(p.model, loader, p.criterion, vc.walk, seed=vc.seed,
                        num_classes=p.dataset.num_classes, device=p.device,
                        site_names=vc.site_names, progress=progress)
    result = build_result(p, outcome, {k: list(v) for k, v in outcome.history.items()},
                          time.perf_counter() - t0)
    result.update(walked)
    result["walk"] = {"noise_type": vc.walk.noise_type, "sigma_key": vc.walk.sigma_key,
                      "search": vc.walk.search, "repeats": vc.walk.repeats,
                      "eval_split": vc.walk.eval_split}
    from .cluster import artifact_root
    from .config import config_hash
    out_dir = safe_path(artifact_root(vc.config.get("artifact_root")),
                        f"walks/{config_hash(vc.config)}")
    import pandas as pd
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "noise"} for r in walked["evaluations"]])
    csv = atomic_write_bytes(out_dir / "evaluations.csv", df.to_csv(index=False).encode())
    result["artifacts"]["evaluations"] = str(csv)
    try:
        from analysis.plots import plot_walking_noise
        df["conf_name"] = vc.conf_name
        png, pdf = plot_walking_noise(df, out_dir / "walking_noise",
                                      chance=walked["chance"],
                                      clean_accuracy=walked["clean_accuracy"],
                                      title=f"{vc.conf_name}: {vc.walk.noise_type} walk")
        result["artifacts"].update({"walk_plot_png": str(png), "walk_plot_pdf": str(pdf)})
    except ValueError as err:  # e.g. a grid of σ = 0 only: nothing to draw on a log axis
        log.warning("no walking-noise plot: %s", err)
    log.info("σ_mid per site (%s, clean accuracy %.2f%%, chance %.2f%%):\n%s",
             vc.walk.noise_type, walked["clean_accuracy"], walked["chance"],
             format_sigma_mid_table(walked["sigma_mid"]))
    return result


def format_sigma_mid_table(table: Mapping[str, Mapping[str, Any]]) -> str:
    """The σ_mid table as aligned text (one line per site)."""
    lines = [f"{'site':<14} {'sigma_mid':>12}  {'evals':>5}  note"]
    for name, e in table.items():
        s = e.get("sigma_mid")
        value = "n/a" if s is None else f"{s:.4g}"
        note = {"crossing": "", "lower_bound": "> (never fell to the midpoint)",
                "upper_bound": "<= (below the midpoint at the smallest sigma)"}.get(
            e.get("kind"), e.get("kind", ""))
        if e.get("non_monotone"):
            note += " non-monotone: first crossing"
        lines.append(f"{name:<14} {value:>12}  {e.get('n_evals', 0):>5}  {note}".rstrip())
    return "\n".join(lines)
