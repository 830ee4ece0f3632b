"""Scale presets of the reproduction (how much to compute), its four models, and the rule that
picks the sites of the per-site noisy training (a).

A scale with ``cuts`` (``medium``, ``medium-smoke``) is a convergence study
(docs/reproduction/PROTOCOL_medium.md, run by :mod:`.convergence`): every model at several
training lengths and seeds, the variants each family trains at which length given by its
:class:`FamilyCuts`; the other scales train every model once, for ``epochs``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["MODELS", "BN_MODELS", "PAIRS", "FamilyCuts", "Scale", "SCALES", "select_sites"]

#: conf_name → model_class of the four models of the issue.
MODELS: dict[str, str] = {"LeNet5": "LeNet", "LeNet5-BN": "LeNet",
                          "RL_TFC-noBN": "MLP", "RL_TFC": "MLP"}
BN_MODELS = {"LeNet5-BN", "RL_TFC"}
PAIRS = (("LeNet5", "LeNet5-BN"), ("RL_TFC-noBN", "RL_TFC"))  # (without BN, with BN)


@dataclass(frozen=True)
class FamilyCuts:
    """Which variants one model family trains at which training length (the protocol's
    budget cuts). Every length trains the clean model, global GaussAdd training and the
    ±max|w| clamp; the rest only where listed."""

    lengths: tuple[int, ...]                 # training lengths (epochs), each its own training
    unit_clamp: str = "always"               # [-1, 1] clamp: 'always' | 'if_binding' (only where
                                             # the unclamped noise-trained model leaves [-1, 1])
    per_site_lengths: tuple[int, ...] = ()   # lengths of the per-site noisy training (a), (b) 4
    mul_sigmas: tuple[float, ...] = ()       # GaussMul σ at the mul site, trained = evaluated
    mul_lengths: tuple[int, ...] = ()        # lengths of the GaussMul training
    max_noise_lengths: tuple[int, ...] = ()  # lengths of the MAX-noise training (BN models)

    def model_epochs(self, n_sites: int, n_factors: int, bn: bool, unit_clamps: int | None = None
                     ) -> int:
        """Planned model-epochs of one (model, repeat); ``unit_clamps``: how many lengths train
        the [-1, 1] clamp (default: every length when 'always', none when 'if_binding')."""
        every = sum(self.lengths)
        unit = (every if self.unit_clamp == "always" else 0) if unit_clamps is None else unit_clamps
        return (3 * every + unit + n_sites * n_factors * sum(self.per_site_lengths)
                + len(self.mul_sigmas) * sum(self.mul_lengths)
                + (sum(self.max_noise_lengths) if bn else 0))


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
    # ---- convergence scales only (cuts set): see FamilyCuts and PROTOCOL_medium.md
    cuts: Mapping[str, FamilyCuts] | None = None   # per family (LeNet, MLP)
    repeats: tuple[int, ...] = (0,)          # training seeds (general.repeat_number)
    per_site_rule: str = "first_middle_logits"  # sites of the per-site noisy training
    max_noise_sigma: float = 1e10            # (c): GaussMul σ at every site (MAX noise)
    lattice_per_decade: int = 4              # σ_mid curves: the shared σ lattice 10^(k/4) ...
    refine_decades: float = 0.75             # ... within this many decades of each seed's σ_mid
    n_boot: int = 1000                       # bootstrap replicates of every interval
    activation_samples: int = 2000           # validation images of the activation statistics
    data_subset: tuple[int, int] | None = None  # (train, validation) images; None: all

    @property
    def convergence(self) -> bool:
        """Whether this scale is a convergence study (several lengths and seeds)."""
        return self.cuts is not None

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["site_selection"] = dict(self.site_selection)
        if self.cuts is not None:
            d["cuts"] = {k: asdict(v) for k, v in self.cuts.items()}
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
    # The convergence study of docs/reproduction/PROTOCOL_medium.md (issue 17): ≈ 3 h on two
    # idle cores, resumable across sessions (docs/reproduction/medium/cache).
    "medium": Scale("medium", epochs=100, walk_repeats=5, eval_repeats=5, walk_max_evals=10,
                    sigma_range=(1e-2, 1e4), global_max_evals=8, global_range=(1e-3, 1e3),
                    site_factors=(1.0, 10 ** 0.5), budgets=(2.0, 3.0),
                    mul_sigmas_global=(), mul_sigmas_site=(0.5, 1.0, 2.0, 1e2, 1e10),
                    repeats=(0, 1, 2),
                    cuts={"MLP": FamilyCuts(lengths=(3, 10, 30, 100), unit_clamp="always",
                                            per_site_lengths=(30,),
                                            mul_sigmas=(0.5, 1.0, 2.0, 1e2, 1e10),
                                            mul_lengths=(30, 100)),
                          "LeNet": FamilyCuts(lengths=(3, 10, 30), unit_clamp="if_binding",
                                              per_site_lengths=(10,), mul_sigmas=(1.0, 1e10),
                                              mul_lengths=(3, 10, 30),
                                              max_noise_lengths=(3, 10, 30))}),
    # The code paths of "medium" in a few minutes: two lengths, two seeds, few σ, a subset
    # of the data (not for conclusions).
    "medium-smoke": Scale("medium-smoke", epochs=2, walk_repeats=2, eval_repeats=2,
                          walk_max_evals=5, sigma_range=(1e-2, 1e4), global_max_evals=5,
                          global_range=(1e-3, 1e3), site_factors=(1.0, 10 ** 0.5),
                          budgets=(2.0,), mul_sigmas_global=(), mul_sigmas_site=(1.0, 1e10),
                          repeats=(0, 1), lattice_per_decade=2, refine_decades=0.5,
                          n_boot=200, activation_samples=500, data_subset=(3000, 1000),
                          cuts={"MLP": FamilyCuts(lengths=(1, 2), per_site_lengths=(2,),
                                                  mul_sigmas=(1.0, 1e10), mul_lengths=(1, 2)),
                                "LeNet": FamilyCuts(lengths=(1, 2), unit_clamp="if_binding",
                                                    per_site_lengths=(1,), mul_sigmas=(1e10,),
                                                    mul_lengths=(1, 2),
                                                    max_noise_lengths=(1, 2))}),
}


def select_sites(site_kinds: Sequence[str], rule: str) -> list[int]:
    """Site indices for the per-site noisy training of (a), from the sites' kinds
    (:func:`models.model_site_kinds`: "input", "conv", "fc", "bn", "relu", "maxpool", "logits").

    ``all``: every site; ``computation``: the input, every conv/linear output and the logits
    (where an analog accelerator computes); ``alternate``: every second site and the last;
    ``ends``: first, middle, last; ``first_middle_logits``: the first conv/linear output, the
    middle one of the computation sites after the input, and the logits (the medium protocol).
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
    if rule == "first_middle_logits":
        comp = [i for i, kind in enumerate(site_kinds) if i > 0 and (
            i == n - 1 or kind in ("conv", "fc"))]
        return sorted({comp[0], comp[len(comp) // 2], n - 1})
    raise ValueError(f"unknown site selection {rule!r}; known: all, computation, alternate, "
                     "ends, first_middle_logits")
