"""Inputs of a batch replay: parameters, procedure params, answers.

Kept apart from the replay engine so the pytest plugin can check its
options at start-up without importing nbclient, and so each parsing rule
lives in one place for the CLI and the plugin alike.

Parameters work like papermill's: the notebook's cell tagged
``parameters`` holds Lua defaults, and the replay injects a cell right
after it (tagged ``injected-parameters``) that assigns the given values as
Lua globals. Values typed on the command line are read as JSON when they
parse (numbers, booleans, null, lists, objects) and as plain strings
otherwise, so ``-p n=3`` is a number and ``-p env=prod`` a string.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"

LUA_KEYWORDS = frozenset(
    "and break do else elseif end false for function goto if in local nil not or repeat return then true "
    "until while".split()
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_INT_MAX = 2**63 - 1


class InputError(ValueError):
    """A replay input (notebook, parameter, answer) is unusable: a clear
    one-line message for the user, never a traceback."""


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_assignment(item: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (KEY, VALUE), split at the first ``=``."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{option} {item!r}: expected KEY=VALUE")
    return key.strip(), value


def parse_parameters(items: Iterable[str], option: str = "-p") -> dict[str, Any]:
    """``-p KEY=VALUE`` items -> {KEY: value}, each KEY a Lua global name."""
    out: dict[str, Any] = {}
    for item in items:
        key, value = split_assignment(item, option)
        check_global_name(key, f"{option} {item!r}")
        out[key] = parse_value(value)
    return out


def load_parameters_file(path: str | Path) -> dict[str, Any]:
    """``-f params.yaml``: a YAML (or JSON) mapping of Lua global names to values."""
    import yaml  # imported here: only this option needs it

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"-f {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"-f {path}: expected a mapping of parameter names to values, found {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise InputError(f"-f {path}: parameter name {key!r} is not a string")
        check_global_name(key, f"-f {path}")
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"-f {path}: values must be plain data (strings, numbers, booleans, lists, maps): {exc}"
        ) from None
    return dict(data)


def parse_procedure_params(items: Iterable[str], option: str = "-P") -> dict[str, dict[str, Any]]:
    """``-P PROC.KEY=VALUE`` items -> {PROC: {KEY: value}}.

    Split at the last dot before the ``=``: a param name is an identifier,
    while a procedure name may itself contain dots.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, value = split_assignment(item, option)
        proc, dot, key = target.rpartition(".")
        if not dot or not proc or not key:
            raise InputError(f"{option} {item!r}: expected PROCEDURE.PARAM=VALUE")
        out.setdefault(proc, {})[key] = parse_value(value)
    return out


def parse_answers(items: Iterable[str], files: Iterable[str | Path] = (), option: str = "--answer") -> dict[str, Any]:
    """Answers for human requests: JSON files first, then ``KEY=VALUE`` items.

    A KEY is the request's declared hitl name or its message. The split is
    at the first ``=``; a message that itself contains ``=`` goes in a file.
    """
    out: dict[str, Any] = {}
    for path in files:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"--answers {path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise InputError(f"--answers {path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"--answers {path}: expected a JSON object of request name or message to answer")
        out.update(data)
    for item in items:
        key, value = split_assignment(item, option)
        out[key] = parse_value(value)
    return out


def check_global_name(name: str, where: str) -> None:
    if not _IDENTIFIER.match(name) or name in LUA_KEYWORDS:
        raise InputError(f"{where}: {name!r} is not a Lua variable name (letters, digits and _, not a keyword)")


# --------------------------------------------------------------- Lua literals
def _lua_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def lua_literal(value: Any) -> str:
    """A Lua expression that evaluates to the given JSON-like value."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > _LUA_INT_MAX:
            return repr(float(value))
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "(0/0)"
        if math.isinf(value):
            return "math.huge" if value > 0 else "-math.huge"
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if isinstance(k, str) and _IDENTIFIER.match(k) and k not in LUA_KEYWORDS:
                parts.append(f"{k} = {lua_literal(v)}")
            else:
                parts.append(f"[{lua_literal(k if not isinstance(k, bool) else str(k).lower())}] = {lua_literal(v)}")
        return "{" + ", ".join(parts) + "}"
    # Dates and the like from YAML: their text is the most useful Lua value.
    return _lua_string(str(value))


def parameters_source(params: dict[str, Any]) -> str:
    """The source of the injected cell."""
    lines = ["-- Parameters injected by tactus-kernel replay"]
    lines += [f"{name} = {lua_literal(value)}" for name, value in params.items()]
    return "\n".join(lines)


def inject_parameters(nb: Any, params: dict[str, Any]) -> int | None:
    """Add the injected-parameters cell to `nb` (an nbformat v4 notebook).

    Goes right after the cell tagged ``parameters`` (at the top when there
    is none, as papermill does), replacing a cell injected by an earlier
    replay. Returns the new cell's index, or None when there is nothing to
    inject.
    """
    if not params:
        return None
    import nbformat

    cells = nb.cells
    old = [i for i, c in enumerate(cells) if INJECTED_TAG in c.get("metadata", {}).get("tags", [])]
    for i in reversed(old):
        del cells[i]
    at = 0
    for i, c in enumerate(cells):
        if c.get("cell_type") == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", []):
            at = i + 1
            break
    cell = nbformat.v4.new_code_cell(parameters_source(params), metadata={"tags": [INJECTED_TAG]})
    if "id" in (cells[0] if cells else {}) or nb.get("nbformat_minor", 0) >= 5:
        taken = {c.get("id") for c in cells}
        cid, n = INJECTED_TAG, 1
        while cid in taken:
            n += 1
            cid = f"{INJECTED_TAG}-{n}"
        cell["id"] = cid
    else:
        cell.pop("id", None)
    cells.insert(at, cell)
    return at


def parameters_cell_source(nb: Any) -> str | None:
    """The source of the cell tagged ``parameters``, or None."""
    for c in nb.cells:
        if c.get("cell_type") == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", []):
            return str(c.get("source", ""))
    return None
