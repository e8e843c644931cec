"""The Python half of lua/compat.lua: the regular expression of a
``matches(...)`` matcher, run with Python's ``re`` as the reference does.

It is a plain synchronous call (``K.regex_search``), not an effect: a
matcher may be tried anywhere, a custom step run after its procedure
finished included. Like every bridge function it never raises into Lua: it
returns ``ok, found`` or ``false, message``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.feature import Feature, Prelude
from tactus_kernel.features.specs.matchers import MatcherError, search

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


def regex_search(pattern: Any, text: Any) -> tuple[bool, Any]:
    try:
        return True, search(str(pattern), str(text))
    except MatcherError as exc:
        return False, f"MatcherError: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the cell, never raised into Lua
        return False, f"internal error in matches: {type(exc).__name__}: {exc}"


class CompatFeature(Feature[None]):
    """The reference Tactus's language forms (compat.lua) and its ``matches``."""

    name = "compat"
    preludes = (Prelude("tactus_kernel.features.compat", "compat.lua"),)

    def install(self, runtime: Runtime, state: None) -> None:
        runtime.K.regex_search = regex_search
