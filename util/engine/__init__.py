"""The engine: what a run does, independent of sacred.

=====================  ========================================================================
``seeding``            torch's generator reseeded from named parts (epochs, evaluations, walks)
``loops``              training and evaluation loops, device choice, clamping, divergence check
``checkpoints``        per-epoch checkpoints, the training lock, finding a model trained before
``experiment``         one run: prepare, reuse or train (resuming), evaluate, the result dict;
                       :func:`~util.engine.experiment.run_epoch`, the one epoch of every run
``cohort``             many configs on the same batches: member-serial (each bit for bit its
                       single run) or vectorised; chunks, resume, the compact result document
``stacked``            K members of one architecture as one network, their Adam states stacked
``precomputed``        a result computed by a cohort, handed to the run of that config
``midpoint``           σ_mid of one walking-noise curve (pure math; :mod:`analysis` uses it too)
``walk``               the walking sweep on one trained model, and the bisection for σ_mid
``noisy_walk``         the noisy-training walk: one model per site × σ trained as a cohort
=====================  ========================================================================

Dependencies point one way: ``noise`` <- ``models`` <- the engine (with ``data``, and the config
schema of :mod:`util.config`) <- :mod:`analysis` and ``train.py``; the engine never imports
:mod:`analysis`, and no library module imports ``train.py``.
"""
