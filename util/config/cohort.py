"""The cohort section (``train.py cohort``, or ``cohort.enabled`` under seml): its keys, and
:func:`grid_members`, the members of a noise grid (``cohort.grid``: sites × σ of one noise
type; the noisy-training walk makes its members with it too).

A member is the base config deep-updated with its override dict; the section is left out of
the members (each is a plain single-run config) and, at its defaults, out of
:func:`util.config.config_hash`, so configs without it keep their hashes. The member configs
themselves: :func:`util.config.members.member_configs` (it needs the model's site count).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from noise.config import parse_noise_config

from .keys import (ConfigError, Key, boolean, check_unknown, defaults_of, one_of,
                   resolve_keys, to_plain)
from .walk import (default_sigma_key, noise_params, sigma_key_name, sigma_list, site_list,
                   walkable_noise_type)

__all__ = ["COHORT_KEYS", "COHORT_DEFAULTS", "STRATEGIES", "GRID_KEYS", "parse_cohort",
           "parse_grid", "grid_members", "is_default", "member_overrides"]

#: How a cohort trains its members (util.engine.cohort): ``auto`` picks per device and model
STRATEGIES = ("auto", "member-serial", "vectorised")


def _max_members(path: str, value: Any) -> int | str:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{path} must be 'auto' or an integer >= 1, got {value!r}")
    return value


def member_overrides(path: str, value: Any) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{path} must be a non-empty list of override dicts or null, "
                          f"got {value!r}")
    for i, member in enumerate(value):
        if not isinstance(member, Mapping):
            raise ConfigError(f"{path}[{i}] must be a dict of config overrides, got {member!r}")
        if "cohort" in member:
            raise ConfigError(f"{path}[{i}]: a member cannot hold a cohort section")
    return [to_plain(dict(m)) for m in value]


#: The keys of ``cohort.grid`` (``sigmas`` has no default: a grid needs it).
GRID_KEYS = (
    Key("noise_type", "GaussAdd", walkable_noise_type, False, "the noise type of every member"),
    Key("sigma_key", None, sigma_key_name, False,
        "the noise type's key σ sets; null: GaussStd, or StdAmplitude for GaussCombined"),
    Key("params", {}, noise_params, False, "the noise type's other keys"),
    Key("sites", None, lambda p, v: None if v is None else list(site_list(p, v)), False,
        "the sites; null: every site of the model"),
    Key("sigmas", None, lambda p, v: list(sigma_list(p, v)), False, "the σ values"),
    Key("enable_in_training", True, boolean, False, "the noise is on while training"),
    Key("enable_in_eval", True, boolean, False, "the noise is on while evaluating"),
)


def parse_grid(path: str, value: Any, n_sites: int | None = None) -> dict[str, Any] | None:
    """The checked grid (every key filled in, ``sigma_key`` resolved), or None for null.
    ``ConfigError`` names the key (``cohort.grid.sigmas[2] must be ...``); sites are checked
    against ``n_sites`` when it is given."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a dict {{noise_type, sigma_key, params, sites, "
                          f"sigmas, enable_in_training, enable_in_eval}} or null, got {value!r}")
    given = to_plain(dict(value))
    check_unknown(path, given, [k.path for k in GRID_KEYS])
    if given.get("sigmas") is None:
        raise ConfigError(f"{path}.sigmas is required: a non-empty list of σ >= 0")
    grid = {k.path: k.check(f"{path}.{k.path}", given.get(k.path, copy.deepcopy(k.default)))
            for k in GRID_KEYS}
    grid["sigma_key"] = grid["sigma_key"] or default_sigma_key(grid["noise_type"])
    if len(set(grid["sigmas"])) != len(grid["sigmas"]):
        raise ConfigError(f"{path}.sigmas lists a σ twice: {grid['sigmas']}")
    try:
        for sigma in grid["sigmas"]:
            parse_noise_config(_noise(grid, sigma))
    except ValueError as err:
        raise ConfigError(f"{path} (noise_type, sigma_key, params): {err}") from None
    if n_sites is not None:
        for s in grid["sites"] or ():
            if not 0 <= s < n_sites:
                raise ConfigError(f"{path}.sites: site {s!r} is out of range; this model has "
                                  f"{n_sites} sites (valid: 0..{n_sites - 1})")
    return grid


def _noise(grid: Mapping[str, Any], sigma: float) -> dict[str, Any]:
    return {"noise_type": grid["noise_type"], **grid["params"], grid["sigma_key"]: sigma,
            "enable_in_training": grid["enable_in_training"],
            "enable_in_eval": grid["enable_in_eval"]}


def grid_members(grid: Mapping[str, Any], n_sites: int, path: str = "cohort.grid"
                 ) -> list[dict]:
    """The members of a noise grid, site by site, σ by σ: ``{"noise_settings": {"layer_wise":
    {"layer_index": site, "noise_type", <sigma_key>: σ, **params, "enable_in_training",
    "enable_in_eval"}}}``. ``grid`` as ``cohort.grid`` takes it (checked here; ``sites``
    null: every site of a model with ``n_sites`` sites)."""
    grid = parse_grid(path, grid, n_sites)
    sites = grid["sites"] if grid["sites"] is not None else range(n_sites)
    return [{"noise_settings": {"layer_wise": {"layer_index": site, **_noise(grid, sigma)}}}
            for site in sites for sigma in grid["sigmas"]]


#: The cohort section, key by key (none of them shapes the trained model).
COHORT_KEYS = (
    Key("cohort.enabled", False, boolean, False,
        "under seml: train the cohort of cohort.members instead of a plain run"),
    Key("cohort.members", None, member_overrides, False,
        "the members: a list of override dicts, each deep-merged into this config"),
    Key("cohort.grid", None, parse_grid, False,
        "more members: sites x σ of one noise type ({noise_type, sigma_key, params, sites, "
        "sigmas, enable_in_training, enable_in_eval}), after cohort.members"),
    Key("cohort.strategy", "auto", one_of(STRATEGIES, "is not a cohort strategy"), False,
        "member-serial (each member in turn on the shared batches), vectorised (all members "
        "as one network per step), or auto (the faster one measured for this device and model)"),
    Key("cohort.max_members", "auto", _max_members, False,
        "members trained as one vectorised network at a time; auto: as many as fit in free "
        "memory"),
)

COHORT_DEFAULTS: dict[str, Any] = defaults_of(COHORT_KEYS, "cohort.")


def parse_cohort(section: Any) -> dict[str, Any]:
    """The checked cohort section ``{enabled, members}`` (defaults filled in)."""
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"cohort must be a dict of cohort settings or null, got {section!r}")
    section = to_plain(dict(section or {}))
    check_unknown("cohort", section, COHORT_DEFAULTS)
    return {path.rpartition(".")[2]: v
            for path, v in resolve_keys({"cohort": section}, COHORT_KEYS).items()}


def is_default(section: Any) -> bool:
    """Whether a config's cohort section (None: absent) is at its defaults."""
    if section is None:
        return True
    section = to_plain(section)
    # a key left out is at its default (sections written before a key was added keep hashes)
    return isinstance(section, dict) and {**COHORT_DEFAULTS, **section} == COHORT_DEFAULTS
