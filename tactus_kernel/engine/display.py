"""Showing Lua values in a notebook: text a person can read, HTML, JSON.

A list of records shows as a column table, other tables as Lua
constructors (``{env = "prod", ok = true}``), strings as themselves at the
top level (as the Lua REPL prints them) and quoted inside tables.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

from tactus_kernel.engine.values import MAX_DEPTH, lua_type

WIDE = 78


class LuaOpaque(str):
    """A Lua value with no data to show (function, coroutine): its tostring."""


def displayable(value: Any, tostring: Callable[[Any], str], depth: int = 0) -> Any:
    """Lua value -> Python value for display (never fails)."""
    kind = lua_type(value)
    if kind == "table":
        if depth >= MAX_DEPTH:
            return LuaOpaque("{...}")
        items = list(value.items())  # UnicodeDecodeError for text that is not UTF-8: see Runtime.show
        keys = [k for k, _ in items]
        if (
            items
            and all(isinstance(k, int) and not isinstance(k, bool) for k in keys)
            and sorted(keys) == list(range(1, len(keys) + 1))
        ):
            return [displayable(v, tostring, depth + 1) for _, v in sorted(items, key=lambda kv: kv[0])]
        # sorted: Lua's own order changes from run to run
        # a key's __tostring runs once, through the safe `tostring`; sorted
        # as the keys read (Lua's own order changes from run to run)
        keyed = sorted(((_key(k, tostring), v) for k, v in items), key=_unbracketed)
        return {k: displayable(v, tostring, depth + 1) for k, v in keyed}
    if kind is not None:
        return LuaOpaque(tostring(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _unbracketed(kv: tuple[str, Any]) -> str:
    k = kv[0]
    return k[1:-1] if k.startswith("[") and k.endswith("]") else k


def _key(k: Any, tostring: Callable[[Any], str]) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bytes):
        return k.decode("utf-8", "replace")
    if lua_type(k) is not None:  # a table or function key: its tostring, never str() (a cell's __tostring)
        return f"[{tostring(k)}]"
    return f"[{_scalar(k, quote=True)}]"


def _scalar(v: Any, quote: bool) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:.1f}"
    if isinstance(v, LuaOpaque):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False) if quote else v
    return str(v)


def _ident(k: str) -> str:
    if k.isidentifier() and k.isascii():
        return k
    return f"[{json.dumps(k, ensure_ascii=False)}]"


def lua_repr(v: Any, indent: int = 0) -> str:
    """A Lua-constructor rendering, one line when it fits."""
    if isinstance(v, list):
        parts = [lua_repr(x, indent + 2) for x in v]
    elif isinstance(v, dict):
        parts = [f"{k if k.startswith('[') else _ident(k)} = {lua_repr(x, indent + 2)}" for k, x in v.items()]
    else:
        return _scalar(v, quote=True)
    if not parts:
        return "{}"
    one = "{" + ", ".join(parts) + "}"
    if len(one) + indent <= WIDE and "\n" not in one:
        return one
    pad = " " * (indent + 2)
    return "{\n" + ",\n".join(pad + p for p in parts) + "\n" + " " * indent + "}"


def _is_records(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(r, dict) for r in v)
        and all(not isinstance(x, (dict, list)) for r in v for x in r.values())
    )


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def text_table(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    cells = [[_scalar(r.get(c), quote=False) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line.rstrip(), rule, *(b.rstrip() for b in body)])


def to_text(v: Any) -> str:
    if _is_records(v):
        return text_table(v)
    if isinstance(v, (dict, list)):
        return lua_repr(v)
    return _scalar(v, quote=False)


def to_html(v: Any) -> str:
    if _is_records(v):
        cols = _columns(v)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_scalar(r.get(c), quote=False))}</td>" for c in cols) + "</tr>"
            for r in v
        )
        return f'<table class="tactus-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    if isinstance(v, dict):
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{to_html(x)}</td></tr>" for k, x in v.items())
        return f'<table class="tactus-table">{rows}</table>'
    if isinstance(v, list):
        return "<ol>" + "".join(f"<li>{to_html(x)}</li>" for x in v) + "</ol>"
    return html.escape(_scalar(v, quote=isinstance(v, str) and not isinstance(v, LuaOpaque)))


def bundle(values: list[Any]) -> dict[str, Any]:
    """The mime bundle for a cell's result values (several like the REPL: tab-separated)."""
    if len(values) == 1:
        v = values[0]
        data: dict[str, Any] = {"text/plain": to_text(v)}
        if isinstance(v, (dict, list)):
            # No application/json: JupyterLab would prefer it over the HTML
            # table and show a collapsible JSON tree instead.
            data["text/html"] = to_html(v)
        return data
    return {"text/plain": "\t".join(to_text(v) for v in values)}
