"""The experiment config: its keys, declared once, validated and resolved in one pass into a
typed object, and the hashes that find checkpoints (docs/config.md lists every key).

=====================  ========================================================================
``keys``               :class:`Key` (path, default, check, training hash, doc), the checks
``schema``             the config's keys, ``DEFAULT_CONFIG``, :func:`validate_config` and the
                       typed :class:`ValidatedConfig` every later step takes
``walk``               the walk section's keys and :class:`WalkSettings`
``cohort``             the cohort section's keys and the members of a noise grid
``members``            the configs of a cohort's members (members, then the grid's)
``hashing``            ``config_hash``, ``training_hash``, ``eval_noise_hash``
=====================  ========================================================================

:func:`validate_config` is the one check that train.py's config hook, the offline YAML
validator and the local runner all use: it raises :class:`ConfigError` naming the key and the
allowed values, before anything runs or is written.
"""
from .cohort import COHORT_DEFAULTS, COHORT_KEYS, grid_members, parse_cohort
from .hashing import config_hash, eval_noise_hash, training_hash
from .keys import ConfigError, Key, to_plain
from .members import member_configs
from .schema import (BOOKKEEPING_KEYS, DEFAULT_CONFIG, KEYS, ValidatedConfig, deep_update,
                     merged_with_defaults, strip_bookkeeping, validate_config)
from .walk import WALK_DEFAULTS, WALK_KEYS, WalkSettings, parse_walk

__all__ = ["ConfigError", "DEFAULT_CONFIG", "validate_config", "config_hash", "training_hash",
           "eval_noise_hash", "WALK_DEFAULTS", "WalkSettings", "parse_walk",
           "strip_bookkeeping", "to_plain", "ValidatedConfig", "BOOKKEEPING_KEYS",
           "merged_with_defaults", "deep_update", "KEYS", "WALK_KEYS", "Key",
           "COHORT_KEYS", "COHORT_DEFAULTS", "parse_cohort", "member_configs", "grid_members"]
