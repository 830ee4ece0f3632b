"""How a config key is declared: :class:`Key` (where it lives, its default, its check, whether it
shapes the trained model), the checks keys use, and the plain-value helpers beneath the schema.

A check takes ``(path, value)`` and returns the value a run uses, or raises :class:`ConfigError`
naming the key and what is allowed. A key without a check is a sub-section read by its own typed
parser (named in the key's doc).
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from noise.config import check_finite_float32

from ..config_paths import MISSING, value_at

__all__ = ["ConfigError", "Key", "Check", "integer", "count", "real", "one_of", "boolean",
           "optional", "defaults_of", "check_unknown", "resolve_keys", "to_plain", "deep_update"]


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and the allowed values."""


#: ``check(path, value) -> value to use``; raises :class:`ConfigError`
Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Key:
    """One key of the config schema (docs/config.md lists them, a test keeps the two equal)."""

    #: dotted path in the config, e.g. ``general.num_epochs``
    path: str
    default: Any
    #: None: a sub-section parsed by its own typed parser, named in ``doc``
    check: Check | None
    #: whether the key shapes the trained model (part of :func:`util.config.training_hash`)
    training_hash: bool
    doc: str

    @property
    def section(self) -> str:
        """The section holding the key ('' for a top-level key)."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


# ---- checks -----------------------------------------------------------------------------------

def integer(*, minimum: int | None = None, positive: bool = False) -> Check:
    """An int (an integral float such as YAML's ``2.0`` becomes ``2``)."""
    def check(path: str, value: Any) -> int:
        ok = isinstance(value, numbers.Integral) or (isinstance(value, float)
                                                      and value.is_integer())
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        value = int(value)
        if positive and value <= 0:
            raise ConfigError(f"{path} must be > 0, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{path} must be >= {minimum}, got {value!r}")
        return value
    return check


def count(path: str, value: Any) -> int:
    """An int >= 1, given as an int (the walk's counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path} must be an integer >= 1, got {value!r}")
    return value


def real(*, positive: bool = False) -> Check:
    """A float that is finite and fits float32 (the precision it is used in)."""
    def check(path: str, value: Any) -> float:
        try:
            value = check_finite_float32(path, value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if positive and value <= 0:
            raise ConfigError(f"{path} must be > 0, got {value!r}")
        return value
    return check


def one_of(allowed: Sequence[Any], verb: str = "is not supported") -> Check:
    def check(path: str, value: Any) -> Any:
        if not isinstance(value, (str, type(None))) or value not in allowed:
            raise ConfigError(f"{path} {value!r} {verb}; allowed: {list(allowed)}")
        return value
    return check


def boolean(path: str, value: Any) -> bool:
    """true or false; also 0 and 1 (seml grids) and the strings 'true' and 'false' (sacred's
    command line reads ``with data.download=false`` as a string, which was truthy before)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool) and value not in (0, 1):
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    return bool(value)


def optional(check: Check) -> Check:
    """``check``, or null."""
    return lambda path, value: None if value is None else check(path, value)


# ---- sections ---------------------------------------------------------------------------------

def defaults_of(keys: Iterable[Key], prefix: str = "") -> dict[str, Any]:
    """The nested dict of the keys' defaults (paths relative to ``prefix``), in declaration
    order."""
    out: dict[str, Any] = {}
    for key in keys:
        path = key.path[len(prefix):] if prefix else key.path
        *sections, name = path.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[name] = copy.deepcopy(key.default)
    return out


def check_unknown(section: str, given: Mapping, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{section}: unknown key {key!r}; allowed: {allowed}")


def resolve_keys(config: dict[str, Any], keys: Iterable[Key]) -> dict[str, Any]:
    """``{path: value}`` for every key: the config's value (checked), else the default.

    Integral floats of integer keys are written back into ``config`` as ints (what a run
    records)."""
    values = {}
    for key in keys:
        given = value_at(config, key.path)
        value = key.default if given is MISSING else given
        if key.check is not None:
            value = key.check(key.path, value)
        if given is not MISSING and type(value) is int and type(given) is float:
            section = value_at(config, key.section) if key.section else config
            section[key.name] = value
        values[key.path] = value
    return values


def to_plain(value: Any) -> Any:
    """Plain Python types all the way down (numpy scalars from seml grids, sacred containers)."""
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item"):  # 0-d numpy / torch
        return to_plain(value.item())
    return value


def deep_update(dst: dict, src: Mapping[str, Any]) -> dict:
    """``dst`` updated in place with ``src``, section by section (copies of ``src``'s values)."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst
