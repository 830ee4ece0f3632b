"""Reproduce the paper's findings on Fashion-MNIST, end to end, and write docs/REPRODUCTION.md.

``python -m analysis.reproduce [--scale smoke|small|full|medium|medium-smoke] [--out docs/]``

Scales ``medium`` and ``medium-smoke`` run the convergence study of
docs/reproduction/PROTOCOL_medium.md instead (:mod:`.convergence`: several training lengths
and seeds, intervals, verdicts per the protocol's rules in :mod:`.verdicts`; every measurement
cached under docs/reproduction/medium/cache so a run resumes across checkouts) and write
docs/REPRODUCTION_medium.md; the small document stays docs/REPRODUCTION.md.

The paper's claims (issue 9) and how each is checked with this project's own tools, on the
four models LeNet5, LeNet5-BN, RL_TFC-noBN and RL_TFC:

(d) per-site profile: walk additive noise (GaussAdd, eval-only) through every site of the
    clean-trained model (``util.engine.walk.run_walk``, midpoint search) → σ_mid per site.
(e) multi-execution: a global sweep (GaussAdd at every site) finds the global σ_mid; at that σ,
    uniform repetition R = b at every site is compared with the tailored plans of
    ``analysis.repetition_plan`` (every scaling) built from the per-site σ_mid, at the same
    total budget b × n_sites.
(a) per-site noisy training: for selected sites k and factors f, train with GaussAdd at site k
    at σ = f · σ_mid_clean(k) and evaluate at site k at the same σ; the clean-trained model is
    evaluated at the same points. σ_mid of the noise-trained "curve" uses the clean model's
    noise-free accuracy as reference (the project's convention for noisy-trained curves).
(b) weights: clean vs GaussAdd-trained (every site, σ = the clean global σ_mid), each with and
    without weight clamping to [-1, 1]; mean |w| per layer and the global σ_mid of all four.
(c) multiplicative noise: GaussMul training (and evaluation at the same σ) at every site and at
    one site, σ up to 1e10; accuracy vs σ and the binarisation index vs clean training.

Modules: ``scales`` (presets, the four models, site selection), ``experiments`` (the five parts,
class :class:`Reproduction`), ``evaluation`` (accuracy under noise through the engine's loops),
``claims`` (the computed verdicts), ``report`` (the document), ``figures``, ``markdown``
(tables and number formats), ``__main__`` (the command line); for the convergence scales
``convergence`` (training and measuring), ``measures``, ``cache``, ``medium_tables``,
``verdicts`` and ``medium_report``.

Everything is trained under a fixed artifact root (default ``artifacts/reproduction``) and found
again by its training hash, so a second run (or one resumed after a kill) only evaluates.
Evaluation noise is seeded per (experiment, site, σ, repeat): rerunning the script reproduces
the document's numbers.
"""
from .experiments import Reproduction, Trained
from .markdown import markdown_table
from .report import write_document
from .scales import MODELS, SCALES, Scale, select_sites

__all__ = ["MODELS", "SCALES", "Scale", "Reproduction", "Trained", "select_sites",
           "markdown_table", "write_document"]
