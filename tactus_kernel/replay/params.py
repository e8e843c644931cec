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
# Deeper input is refused: a recorded value may nest 100 levels (convert.MAX_DEPTH),
# its place in metadata.tactus (and child procedures' records) adds a few more,
# and past a few hundred levels Python's own readers and copiers overflow.
MAX_INPUT_DEPTH = 200
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


class InputError(ValueError):
    """A replay input (notebook, parameter, answer) is unusable: a clear
    one-line message for the user, never a traceback."""


def too_deep(value: Any, limit: int = MAX_INPUT_DEPTH) -> list[str | int] | None:
    """The path to the first place where `value` nests deeper than `limit`
    levels (None if it does not); iterative, so any depth can be checked."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        if len(path) >= limit:
            return path
        stack.extend((v, [*path, k]) for k, v in items if isinstance(v, (dict, list)))
    return None


def json_path(path: list[str | int], root: str = "") -> str:
    """``root.a.0.b``: where a value is, as the other errors name fields
    (a long path shows its start and end: ``root.a.0.b.…(195 more).0.0``)."""
    parts = [str(p) for p in path]
    if len(parts) > 14:
        parts = [*parts[:10], f"…({len(parts) - 12} more)", *parts[-2:]]
    return ".".join([root, *parts] if root else parts) or "(the top)"


def deep_path_in_text(text: str, limit: int = MAX_INPUT_DEPTH) -> list[str | int] | None:
    """:func:`too_deep` for JSON text that ``json.loads`` cannot read because
    it nests too deep (RecursionError): a scan of its tokens, no parsing."""
    path: list[str | int] = []
    kinds: list[str] = []
    last_string = ""
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            last_string = tok
        elif tok in "[{":
            if len(kinds) >= limit:
                return path
            kinds.append(tok)
            path.append(0 if tok == "[" else "")
        elif tok in "]}":
            if kinds:
                kinds.pop()
                path.pop()
        elif tok == ":" and kinds and kinds[-1] == "{":
            try:
                path[-1] = json.loads(last_string)
            except ValueError:
                path[-1] = last_string
        elif tok == "," and kinds and kinds[-1] == "[":
            path[-1] = int(path[-1]) + 1
    return None


def unencodable(value: Any) -> list[str | int] | None:
    """The path to the first string (or key) that cannot be written as UTF-8
    (a lone surrogate such as a ``"\\ud800"`` JSON escape), or None."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(node, dict):
            for k, v in node.items():
                stack.append((k, [*path, k]) if isinstance(k, str) else (None, path))
                stack.append((v, [*path, k]))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(node))
    return None


def check_depth(value: Any, where: str) -> Any:
    """`value`, or InputError naming `where` and the path if it nests too deep."""
    path = too_deep(value)
    if path is not None:
        raise InputError(
            f"{where}: the value is nested more than {MAX_INPUT_DEPTH} levels deep (at {json_path(path, 'value')})"
        )
    return value


def _load_checked(text: str, where: str) -> Any:
    """JSON text, or InputError naming `where` when it nests too deep."""
    try:
        return check_depth(json.loads(text), where)
    except RecursionError:
        raise InputError(f"{where}: the value is nested more than {MAX_INPUT_DEPTH} levels deep") from None


def parse_value(text: str, where: str = "value") -> Any:
    """A command-line value: JSON when it parses, else the string itself.
    JSON nested too deep is an InputError naming `where`."""
    from tactus_kernel.engine.values import parse_value as parse  # here: `replay --help` need not load lupa

    return parse(text, where, _load_checked)


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
        out[key] = parse_value(value, f"{option} {key}")
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
    except RecursionError:
        raise InputError(f"-f {path}: nested more than {MAX_INPUT_DEPTH} levels deep") from None
    check_depth(data, f"-f {path}")
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
        out.setdefault(proc, {})[key] = parse_value(value, f"{option} {target}")
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
        except RecursionError:
            raise InputError(f"--answers {path}: nested more than {MAX_INPUT_DEPTH} levels deep") from None
        check_depth(data, f"--answers {path}")
        if not isinstance(data, dict):
            raise InputError(f"--answers {path}: expected a JSON object of request name or message to answer")
        out.update(data)
    for item in items:
        key, value = split_assignment(item, option)
        out[key] = parse_value(value, f"{option} {key}")
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
