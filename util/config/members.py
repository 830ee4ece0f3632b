"""The configs of a cohort's members (:func:`member_configs`): ``cohort.members``, then the
members of ``cohort.grid`` (:func:`util.config.cohort.grid_members`), each deep-merged into the
base config.

A module of its own because expanding a grid over every site needs the model's site count,
which :func:`util.config.validate_config` resolves (and the schema imports the cohort
section's keys).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from .cohort import grid_members, member_overrides, parse_cohort
from .keys import ConfigError, deep_update, to_plain
from .schema import validate_config

__all__ = ["member_configs"]


def member_configs(config: Mapping[str, Any], members: list[Mapping[str, Any]] | None = None
                   ) -> list[dict]:
    """The config of every member: ``config`` (without its cohort section) deep-updated with
    the member's overrides. ``members`` default to the config's ``cohort.members`` followed by
    the members of its ``cohort.grid`` (sites null: every site of the base config's model;
    a site out of range is a ``ConfigError`` naming ``cohort.grid.sites`` and the model's
    site count). Reads and writes nothing."""
    base = {k: v for k, v in to_plain(dict(config)).items() if k != "cohort"}
    if members is None:
        section = parse_cohort(config.get("cohort"))
        members = list(section["members"] or [])
        if section["grid"] is not None:
            n_sites = len(validate_config(base, walk=False).site_names)
            members += grid_members(section["grid"], n_sites)
        if not members:
            raise ConfigError("cohort.members and cohort.grid are null: a cohort needs a list "
                              "of override dicts (cohort.members) or a noise grid "
                              "(cohort.grid), one member each")
    members = member_overrides("cohort.members", members)
    if not members:
        raise ConfigError("cohort.members is null: a cohort needs a list of override dicts, "
                          "one per member")
    return [deep_update(copy.deepcopy(base), m) for m in members]
