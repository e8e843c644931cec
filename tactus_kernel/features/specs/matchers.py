"""The reference Tactus's matchers, ``contains(v)``, ``equals(v)`` and
``matches(regex)``, on the Python side.

In Lua a matcher is a plain table ``{matcher = "contains", value = "World"}``
(lua/compat.lua), so it passes through ``to_plain`` and a recorded config as
ordinary data; :func:`from_plain` turns such a dict back into a
:class:`Matcher` for Python code that checks values with it (specification
steps, evaluators). ``matches`` is Python's ``re.search``, as in the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KINDS = ("contains", "equals", "matches")


class MatcherError(ValueError):
    """A matcher that cannot be built: an unknown kind or a bad regular expression."""


@dataclass(frozen=True)
class Matcher:
    kind: str
    value: Any

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MatcherError(f"unknown matcher {self.kind!r} (known: {', '.join(KINDS)})")
        if self.kind == "matches":
            if not isinstance(self.value, str):
                raise MatcherError(f"matches: expected a regular expression (a string), got {self.value!r}")
            compile_pattern(self.value)

    def test(self, actual: Any) -> bool:
        """Does `actual` satisfy the matcher? The same rules as ``m(x)`` in Lua."""
        if self.kind == "equals":
            return bool(actual == self.value)
        if self.kind == "contains":
            if isinstance(actual, str):
                return str(self.value) in actual
            if isinstance(actual, list):
                return self.value in actual
            if isinstance(actual, dict):
                return self.value in actual.values()
            return False
        return isinstance(actual, str) and search(self.value, actual)

    def __str__(self) -> str:
        shown = f'"{self.value}"' if isinstance(self.value, str) else repr(self.value)
        return f"{self.kind}({shown})"


def compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise MatcherError(f"matches: {pattern!r} is not a valid regular expression: {exc}") from None


def search(pattern: str, text: str) -> bool:
    """``re.search``: the pattern found anywhere in the text."""
    return compile_pattern(pattern).search(text) is not None


def from_plain(value: Any) -> Matcher | None:
    """A matcher from its plain form (``{"matcher": "contains", "value": "x"}``),
    or None when `value` is not one."""
    if isinstance(value, dict) and set(value) <= {"matcher", "value"} and value.get("matcher") in KINDS:
        return Matcher(str(value["matcher"]), value.get("value"))
    return None
