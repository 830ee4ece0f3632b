"""The cohort section (``train.py cohort``, or ``cohort.enabled`` under seml): its keys, and
the member configs a cohort trains (:func:`member_configs`).

A member is the base config deep-updated with its override dict; the section is left out of
the members (each is a plain single-run config) and, at its defaults, out of
:func:`util.config.config_hash`, so configs without it keep their hashes.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from .keys import (ConfigError, Key, boolean, check_unknown, deep_update, defaults_of,
                   one_of, resolve_keys, to_plain)

__all__ = ["COHORT_KEYS", "COHORT_DEFAULTS", "STRATEGIES", "parse_cohort", "member_configs"]

#: How a cohort trains its members (util.engine.cohort): ``auto`` picks per device and model
STRATEGIES = ("auto", "member-serial", "vectorised")


def _max_members(path: str, value: Any) -> int | str:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{path} must be 'auto' or an integer >= 1, got {value!r}")
    return value


def _members(path: str, value: Any) -> list[dict] | None:
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


#: The cohort section, key by key (none of them shapes the trained model).
COHORT_KEYS = (
    Key("cohort.enabled", False, boolean, False,
        "under seml: train the cohort of cohort.members instead of a plain run"),
    Key("cohort.members", None, _members, False,
        "the members: a list of override dicts, each deep-merged into this config"),
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


def member_configs(config: Mapping[str, Any], members: list[Mapping[str, Any]] | None = None
                   ) -> list[dict]:
    """The config of every member: ``config`` (without its cohort section) deep-updated with
    the member's overrides. ``members`` default to ``config['cohort']['members']``."""
    if members is None:
        members = parse_cohort(config.get("cohort"))["members"]
    members = _members("cohort.members", members)
    if not members:
        raise ConfigError("cohort.members is null: a cohort needs a list of override dicts, "
                          "one per member")
    base = {k: v for k, v in to_plain(dict(config)).items() if k != "cohort"}
    return [deep_update(copy.deepcopy(base), m) for m in members]
