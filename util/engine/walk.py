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

With ``walk.params: {sigma_relative_to: rms}`` every σ is relative to its site's clean RMS,
calibrated on the trained model before the sweep (:mod:`util.engine.calibration`; the result's
``calibration``): σ_mid is then a noise-to-signal ratio.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from noise.config import NoiseConfig, NoNoise, noise_config_to_dict
from noise.placement import configure
from noise.weights import WeightNoise, weight_noise_to_dict

from ..artifacts import atomic_write_bytes, safe_path
from ..cluster import artifact_root
from ..config import ConfigError, WalkSettings, config_hash, validate_config
from .calibration import calibrate_for_walk
from .experiment import build_result, obtain_trained_model, prepare
from .loops import correct_predictions
from .midpoint import midpoint
from .seeding import seed_torch
from .weight_walk import WeightLayerEvaluator

log = logging.getLogger(__name__)

__all__ = ["SiteEvaluator", "walk_model", "bisect_midpoint", "gather", "run_walk",
           "format_sigma_mid_table", "sigma_mid_entry", "eval_loader", "write_evaluations"]

_NOT_SET = object()


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
        self._site: int | None | object = _NOT_SET  # evaluate(None) resets the noise too
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
            correct += correct_predictions(out, yc).item()
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
                correct[i] += correct_predictions(out, yc).item()
            n += yc.shape[0]
        return [(100.0 * c / n, ls / n) for c, ls in zip(correct, loss_sum)]


def gather(loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs).to(device), torch.cat(ys).to(device)


def walk_model(model: nn.Module, loader, criterion: nn.Module, settings: WalkSettings, *,
               seed: int, num_classes: int, device, site_names: Sequence[str],
               progress: bool = True) -> dict[str, Any]:
    """Run the sweep; returns clean accuracy, one record per evaluation and σ_mid per site."""
    x, y = gather(loader, device)
    # walk.target 'weights': the sites are the conv/linear layers (site_names: their names)
    evaluator = WeightLayerEvaluator if settings.target == "weights" else SiteEvaluator
    ev = evaluator(model, x, y, criterion, settings.chunk_size)
    clean_acc, clean_loss = ev.evaluate(None)
    chance = 100.0 / num_classes
    sites = settings.sites or tuple(range(len(ev.sites)))
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
                                "noise": _noise_dict(noises[sigma]), "sigma": sigma,
                                "repeat": rep, "accuracy": acc, "loss": loss})
        return {s: float(np.mean(a)) for s, a in accs.items()}

    bar = _bar(len(sites), progress)
    for site in sites:
        if settings.search == "grid":
            curve = run(site, settings.sigmas)
        else:
            curve = bisect_midpoint(lambda s: run(site, [s])[s], settings, (clean_acc + chance) / 2)
        table[site_names[site]] = sigma_mid_entry(site, list(curve), list(curve.values()),
                                                  clean_acc, chance)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"clean_accuracy": clean_acc, "clean_loss": clean_loss, "chance": chance,
            "evaluations": records, "sigma_mid": table,
            "walk_seconds": round(time.perf_counter() - t0, 3),
            "n_evaluations": len(records)}


def _noise_dict(noise) -> dict[str, Any]:
    if isinstance(noise, WeightNoise):
        return weight_noise_to_dict(noise)
    return noise_config_to_dict(noise)


def sigma_mid_entry(site: int, sigmas: Sequence[float], accuracies: Sequence[float],
                    clean_accuracy: float, chance: float) -> dict[str, Any]:
    """One line of the σ_mid table: :func:`~util.engine.midpoint.midpoint` of one site's
    curve (σ = 0 left out; ``kind`` says why there is no σ_mid when there is none)."""
    points = [(s, a) for s, a in zip(sigmas, accuracies) if s > 0]
    entry: dict[str, Any] = {"site": site, "n_evals": len(set(sigmas))}
    if len({s for s, _ in points}) < 2:
        return {**entry, "sigma_mid": None, "kind": "too_few_sigmas", "non_monotone": False}
    try:
        m = midpoint([s for s, _ in points], [a for _, a in points], clean_accuracy, chance)
    except ValueError as err:  # e.g. a clean accuracy at chance: no level to fall to
        log.warning("site %d: no σ_mid: %s", site, err)
        return {**entry, "sigma_mid": None, "kind": "no_midpoint", "non_monotone": False}
    return {**entry, "sigma_mid": m.sigma_mid, "kind": m.kind, "non_monotone": m.non_monotone}


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="walk (sites)", dynamic_ncols=True, disable=None)


def bisect_midpoint(evaluate, settings: WalkSettings, level: float) -> dict[float, float]:
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
    site and the artifact path of the evaluations table (``artifacts['evaluations']``, in
    ``<artifact root>/walks/<config hash>/``; the walking-noise plot beside it is drawn by
    :func:`analysis.plots.plot_walk`).
    """
    t0 = time.perf_counter()
    vc = validate_config(config, walk=True)
    if vc.walk.train:
        raise ConfigError("walk.train: true is the noisy-training walk "
                          "(util.engine.noisy_walk.run_noisy_training_walk); run_walk walks "
                          "one trained model")
    p = prepare(config, vc=vc)
    outcome = obtain_trained_model(p, run_store=run_store, db_collection=db_collection,
                                   log_metric=log_metric, progress=progress)
    loader = eval_loader(p)
    calibration = calibrate_for_walk(p, vc.walk)
    weights = vc.walk.target == "weights"
    walked = walk_model(p.model, loader, p.criterion, vc.walk, seed=vc.seed,
                        num_classes=p.dataset.num_classes, device=p.device,
                        site_names=vc.model.weight_layer_names if weights else vc.site_names,
                        progress=progress)
    result = build_result(p, outcome, {k: list(v) for k, v in outcome.history.items()},
                          time.perf_counter() - t0)
    result.update(walked)
    result["calibration"] = calibration
    result["walk"] = {"noise_type": vc.walk.noise_type, "sigma_key": vc.walk.sigma_key,
                      "search": vc.walk.search, "repeats": vc.walk.repeats,
                      "eval_split": vc.walk.eval_split, "target": vc.walk.target,
                      "params": dict(vc.walk.params)}
    result["artifacts"]["evaluations"] = write_evaluations(vc, walked["evaluations"])
    result["conf_name"] = vc.conf_name
    return result


def eval_loader(p):
    """The loader of the split a walk evaluates (``walk.eval_split``)."""
    loader = (p.dataset.test_loader(p.device) if p.vc.walk.eval_split == "test"
              else p.dataset.val_loader(p.device))
    if loader is None:  # parse_walk rejects this up front; here only if has_test_split erred
        raise ConfigError(f"walk.eval_split 'test': dataset {p.dataset.name} has no separate "
                          "test split; use 'validation'")
    return loader


def write_evaluations(vc, evaluations: Sequence[Mapping[str, Any]]) -> str:
    """The evaluations table (one row per evaluation, the noise dict left out) written to
    ``<artifact root>/walks/<config hash>/evaluations.csv``; its path."""
    out_dir = safe_path(artifact_root(vc.artifact_root), f"walks/{config_hash(vc.config)}")
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "noise"} for r in evaluations])
    return str(atomic_write_bytes(out_dir / "evaluations.csv", df.to_csv(index=False).encode()))


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
