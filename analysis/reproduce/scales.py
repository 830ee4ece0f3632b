"""Scale presets of the reproduction (how much to compute), its four models, and the rule that
picks the sites of the per-site noisy training (a)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["MODELS", "BN_MODELS", "PAIRS", "Scale", "SCALES", "select_sites"]

#: conf_name → model_class of the four models of the issue.
MODELS: dict[str, str] = {"LeNet5": "LeNet", "LeNet5-BN": "LeNet",
                          "RL_TFC-noBN": "MLP", "RL_TFC": "MLP"}
BN_MODELS = {"LeNet5-BN", "RL_TFC"}
PAIRS = (("LeNet5", "LeNet5-BN"), ("RL_TFC-noBN", "RL_TFC"))  # (without BN, with BN)


@dataclass(frozen=True)
class Scale:
    """How much to compute. Every field is reported in the document."""

    name: str
    epochs: int                              # training epochs of every model (clean and noisy)
    models: tuple[str, ...] = tuple(MODELS)
    walk_repeats: int = 1                    # noise draws per σ in walks and global sweeps
    eval_repeats: int = 3                    # noise draws per accuracy point in (a)-(c), (e)
    walk_max_evals: int = 12                 # σ per site in the midpoint search of the walk
    sigma_range: tuple[float, float] = (1e-2, 1e10)   # bracket of the per-site search
    global_max_evals: int = 10               # σ per global sweep
    global_range: tuple[float, float] = (1e-3, 1e3)   # bracket of the global search
    site_factors: tuple[float, ...] = (1.0, 10 ** 0.5)  # (a): σ = f · σ_mid_clean(site)
    site_selection: Mapping[str, str] = field(
        default_factory=lambda: {"LeNet": "all", "MLP": "all"})  # (a): which sites, per family
    mul_sigmas_global: tuple[float, ...] = (0.1, 10.0, 1e10)    # (c): GaussMul at every site
    mul_sigmas_site: tuple[float, ...] = (10.0, 1e10)           # (c): GaussMul at one site
    mul_site: int = 1                        # (c): that site (1 = first conv/linear output)
    budgets: tuple[float, ...] = (2.0,)      # (e): mean repetitions per site
    clamp: tuple[float, float] = (-1.0, 1.0)  # (b): weight clamping bounds

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["site_selection"] = dict(self.site_selection)
        return d


SCALES: dict[str, Scale] = {
    # A few minutes: every code path once on the real data (not for conclusions).
    "smoke": Scale("smoke", epochs=1, walk_repeats=1, eval_repeats=1, walk_max_evals=8,
                   global_max_evals=6, site_factors=(1.0,),
                   site_selection={"LeNet": "ends", "MLP": "ends"},
                   mul_sigmas_global=(1.0, 1e10), mul_sigmas_site=(1e10,)),
    # ≤ 40 min on two shared CPU cores: what docs/REPRODUCTION.md is built from.
    "small": Scale("small", epochs=3, walk_repeats=1, eval_repeats=3,
                   global_max_evals=8, global_range=(1e-2, 1e2), site_factors=(1.0, 10.0),
                   site_selection={"LeNet": "computation", "MLP": "all"},
                   mul_sigmas_global=(0.1, 1.0, 1e10), mul_sigmas_site=(10.0, 1e10)),
    # Hours (an estimated 3-5 h on two shared cores, not yet run): every site, more σ, more
    # repeats, more epochs.
    "full": Scale("full", epochs=10, walk_repeats=3, eval_repeats=5,
                  site_factors=(1.0, 10 ** 0.5, 10.0),
                  mul_sigmas_global=(0.1, 1.0, 10.0, 1e3, 1e10),
                  mul_sigmas_site=(1.0, 10.0, 1e3, 1e6, 1e10),
                  budgets=(2.0, 3.0, 5.0)),
}


def select_sites(site_kinds: Sequence[str], rule: str) -> list[int]:
    """Site indices for the per-site noisy training of (a), from the sites' kinds
    (:func:`models.model_site_kinds`: "input", "conv", "fc", "bn", "relu", "maxpool", "logits").

    ``all``: every site; ``computation``: the input, every conv/linear output and the logits
    (where an analog accelerator computes); ``alternate``: every second site and the last;
    ``ends``: first, middle, last.
    """
    n = len(site_kinds)
    if rule == "all":
        return list(range(n))
    if rule == "computation":
        return [i for i, kind in enumerate(site_kinds)
                if i == 0 or i == n - 1 or kind in ("conv", "fc")]
    if rule == "alternate":
        return sorted(set(range(0, n, 2)) | {n - 1})
    if rule == "ends":
        return sorted({0, n // 2, n - 1})
    raise ValueError(f"unknown site selection {rule!r}; known: all, computation, alternate, ends")
