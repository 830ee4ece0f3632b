"""Noise: configs (validated dataclasses), the operator, site placement and injection.

The CPU fast paths (compiled generator, in-place noise, fused ReLU, strided max-pool) and their
one switch ``WN_FAST`` live in :mod:`noise.speed` (the generator in :mod:`noise.fast_rng`).

>>> from noise import parse_noise_config, NoiseOperator
>>> op = NoiseOperator(parse_noise_config({'noise_type': 'GaussAdd', 'GaussStd': 0.5}))
"""
from .config import (NOISE_TYPES, GaussAdd, GaussCombined, GaussCombined_direct, GaussMul,
                     NoiseConfig, NoNoise, noise_config_to_dict, parse_noise_config,
                     replace_noise, validate_repetition)
from .inject import SITE_LAYER_TYPES, inject
from .operator import NoiseOperator, apply_noise
from .placement import (NoiseSite, configure, resolve_repetitions, resolve_site_configs,
                        validate_noise_settings)

__all__ = [
    "NOISE_TYPES", "NoiseConfig", "NoNoise", "GaussAdd", "GaussMul", "GaussCombined",
    "GaussCombined_direct", "parse_noise_config", "noise_config_to_dict", "replace_noise",
    "validate_repetition", "NoiseOperator", "apply_noise", "NoiseSite", "configure",
    "resolve_site_configs", "resolve_repetitions", "validate_noise_settings", "inject",
    "SITE_LAYER_TYPES",
]
