"""papermill support: parameters injected as Lua, so papermill pipelines run Tactus notebooks.

papermill 2.x finds a parameter translator by kernel name or language in
its ``papermill_translators`` registry, which it fills only with its own
languages: it loads no translator entry points. It does load engine entry
points (group ``papermill.engine``) when it is imported, so this package
declares one, ``tactus``, whose module is this one; importing it registers
:class:`LuaTranslator` for the kernel name ``tactus`` and the language
``lua``. The engine itself is papermill's own nbclient engine, unchanged
(``papermill --engine tactus`` works, but nobody needs to ask for it).

Values are written by :func:`tactus_kernel.replay.params.lua_literal`, the
same rule ``tactus-kernel replay -p`` uses, so both paths give the cell the
same Lua values.
"""

from __future__ import annotations

import re
from typing import Any

from papermill.engines import NBClientEngine
from papermill.models import Parameter
from papermill.translators import Translator, papermill_translators

from tactus_kernel.replay.params import check_global_name, lua_literal

# name = value   -- help      (a parameters cell written the usual way)
_ASSIGNMENT = re.compile(
    r"^\s*(?:local\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*(?:--\s*(?P<help>.*))?$"
)


class LuaTranslator(Translator):
    """papermill's parameter translator for Lua (the Tactus kernel)."""

    @classmethod
    def translate(cls, val: Any) -> str:
        return lua_literal(val)

    @classmethod
    def comment(cls, cmt_str: str) -> str:
        return f"-- {cmt_str}".strip()

    @classmethod
    def assign(cls, name: str, str_val: str) -> str:
        # A name papermill cannot turn into a Lua global is refused here,
        # naming it, rather than injected as a cell that fails to parse.
        check_global_name(name, "papermill parameter")
        return f"{name} = {str_val}"

    @classmethod
    def inspect(cls, parameters_cell: Any) -> list[Parameter]:
        """The parameters of a cell tagged ``parameters`` (``papermill
        --help-notebook``): one ``name = value -- help`` per line; lines
        that are not such an assignment are skipped, as papermill asks."""
        found = []
        for line in str(parameters_cell["source"]).splitlines():
            match = _ASSIGNMENT.match(line)
            if match is None or line.lstrip().startswith("--"):
                continue
            value = match["value"]
            found.append(
                Parameter(
                    name=match["name"],
                    inferred_type_name=_lua_type(value),
                    default=value,
                    help=(match["help"] or "").strip(),
                )
            )
        return found


def _lua_type(value: str) -> str:
    """A type name for ``--help-notebook``, from the default's Lua text."""
    if value in ("true", "false"):
        return "boolean"
    if value == "nil":
        return "None"
    if value[:1] in ('"', "'") or value.startswith("[["):
        return "string"
    if value.startswith("{"):
        return "table"
    if re.fullmatch(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|0[xX][0-9a-fA-F]+)", value):
        return "number"
    return "None"


class TactusEngine(NBClientEngine):
    """papermill's nbclient engine under the name ``tactus`` (see the module docstring)."""


for _name in ("tactus", "lua"):
    papermill_translators.register(_name, LuaTranslator)
