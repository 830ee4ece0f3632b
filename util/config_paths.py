"""Dotted paths into nested configs and run documents, and the filters that select by them.

A dotted path ``a.b.c`` names ``doc['a']['b']['c']``; a part that is a whole number also
indexes a list (``walk.sigmas.0``), as MongoDB's field paths do. :func:`value_at` reads one,
:func:`matches` says whether a value found there is a wanted one, and :func:`matches_query`
evaluates a MongoDB query on a document.

One place for both users, so that a filter means the same everywhere: the local runner's
``--filter`` (:mod:`util.local_run`) and the config check (:mod:`util.validate_configs`) on
expanded experiment configs, and :mod:`analysis.results` on the runs of a local run store, where
a query must select the same runs as MongoDB would. Three differences from MongoDB, on
purpose: numbers match within a relative 1e-9 (a σ of 0.30000000000000004 from a seml grid is
the 0.3 a user types; MongoDB compares exactly), a bool equals the number 0 or 1 as in Python
(the paper's YAMLs write ``enable_in_training: 0``), and a missing key never matches, not even
``None``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

__all__ = ["MISSING", "value_at", "matches", "matches_query", "QUERY_OPERATORS"]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: What :func:`value_at` returns for a path that leads nowhere (``None`` is a value).
MISSING: Any = _Missing()


def value_at(doc: Any, path: str) -> Any:
    """The value at dotted ``path`` of nested mappings (and lists), :data:`MISSING` if none."""
    node = doc
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return MISSING
            node = node[part]
        elif (isinstance(node, list) and part.isascii() and part.isdigit()
              and int(part) < len(node)):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _same(a: Any, b: Any) -> bool:
    """Equal values: numbers within a relative 1e-9 (a bool is the number 0 or 1, as in
    Python: the paper's YAMLs write flags as 0/1), lists and dicts element by element."""
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def matches(actual: Any, wanted: Any) -> bool:
    """Whether a value found at a path (:data:`MISSING` never matches) is ``wanted``: equal
    (numbers within a relative 1e-9, True to 1, a string never to a number, lists and dicts
    element by element), or, as in MongoDB, a list holding such an element."""
    if actual is MISSING:
        return False
    return _same(actual, wanted) or (isinstance(actual, list)
                                     and any(_same(v, wanted) for v in actual))


def _ordered(value: Any, expected: Any, op: Callable[[Any, Any], bool]) -> bool:
    if value is MISSING or value is None:
        return False
    try:
        return bool(op(value, expected))
    except TypeError:  # e.g. a string against a number: no match, as in MongoDB
        return False


#: The query operators :func:`matches_query` knows (besides ``$and`` and ``$or``).
QUERY_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": matches,
    "$ne": lambda v, x: not matches(v, x),
    "$in": lambda v, x: any(matches(v, e) for e in x),
    "$nin": lambda v, x: not any(matches(v, e) for e in x),
    "$exists": lambda v, x: (v is not MISSING) == bool(x),
    "$gt": lambda v, x: _ordered(v, x, lambda a, b: a > b),
    "$gte": lambda v, x: _ordered(v, x, lambda a, b: a >= b),
    "$lt": lambda v, x: _ordered(v, x, lambda a, b: a < b),
    "$lte": lambda v, x: _ordered(v, x, lambda a, b: a <= b),
}


def matches_query(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether ``doc`` matches a MongoDB query: ``{path: value}`` (see :func:`matches`),
    ``{path: {operator: value, ...}}`` with the operators of :data:`QUERY_OPERATORS`, and
    ``$and``/``$or`` over lists of queries. An unknown operator is a ValueError naming it."""
    for key, cond in query.items():
        if key in ("$and", "$or"):
            parts = [matches_query(doc, q) for q in cond]
            if not (all(parts) if key == "$and" else any(parts)):
                return False
            continue
        if key.startswith("$"):
            raise ValueError(f"filter operator {key!r} is not supported; supported: $and, $or, "
                             f"{sorted(QUERY_OPERATORS)}")
        value = value_at(doc, key)
        if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
            for op, expected in cond.items():
                if op not in QUERY_OPERATORS:
                    raise ValueError(f"filter operator {op!r} (at {key!r}) is not supported; "
                                     f"supported: {sorted(QUERY_OPERATORS)}")
                if not QUERY_OPERATORS[op](value, expected):
                    return False
        elif not matches(value, cond):
            return False
    return True
