"""Tab completion and Shift-Tab help for Lua cells.

Completion walks the live Lua globals (so user functions and tables
complete too); help comes from the short docs of the primitives below,
falling back to the value's type for anything else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime

KEYWORDS = [
    "and",
    "break",
    "do",
    "else",
    "elseif",
    "end",
    "false",
    "for",
    "function",
    "goto",
    "if",
    "in",
    "local",
    "nil",
    "not",
    "or",
    "repeat",
    "return",
    "then",
    "true",
    "until",
    "while",
]

DOCS: dict[str, str] = {
    "procedure": "procedure([name,] [config,] fn): declare a procedure; it runs when the cell runs.\n"
    "config: name, params, outputs, guards, dependencies, hitl, max_depth, max_turns.",
    "Procedure.run": "Procedure.run(name, params) -> output: run a declared procedure (params validated).",
    "parameter": "parameter(name, {type, required, default, ...}): a param of this cell's procedure (v0.3).",
    "output": "output(name, {type, required, ...}): an output of this cell's procedure (v0.3).",
    "description": "description(text): the description of this cell's procedure (v0.3).",
    "max_depth": "max_depth(n): how deep Procedure.run may nest, for this cell's and later procedures.",
    "max_turns": "max_turns(n): agent turns allowed in one run, for this cell's and later procedures.",
    "async": "async(true|false): the reference's spawnable flag, kept in the procedure's config.",
    "contains": "contains(v) -> matcher: m(x) is true when the string x contains v, or the list x holds v.",
    "equals": "equals(v) -> matcher: m(x) is true when x equals v (tables by content).",
    "matches": "matches(regex) -> matcher: m(x) is true when Python's re.search finds regex in x.",
    "Step.run": "Step.run(name, fn) -> value: run fn once and record its (JSON) result; on replay return "
    "the recorded result without calling fn. Names are unique per run (use 'item_' .. i in loops).",
    "Checkpoint.exists": "Checkpoint.exists(name) -> boolean: is there a record named name in this run?",
    "Checkpoint.get": "Checkpoint.get(name) -> value: the recorded value (nil if none).",
    "Checkpoint.clear_after": "Checkpoint.clear_after(name): forget this record and every later one.",
    "Checkpoint.clear_all": "Checkpoint.clear_all(): forget every record of this procedure.",
    "State.get": "State.get(key[, default]) -> value of the running procedure's state.",
    "State.set": "State.set(key, value): set a state value.",
    "State.increment": "State.increment(key[, n]) -> new value (n defaults to 1).",
    "State.append": "State.append(key, value): append to a list held in state.",
    "State.all": "State.all() -> a copy of the whole state table.",
    "State.clear": "State.clear(): forget all state.",
    "stages": "stages({'a', 'b', ...}): declare the stage names Stage.* accepts.",
    "Stage.set": "Stage.set(name): enter a stage (checked against stages({...}) when declared).",
    "Stage.current": "Stage.current() -> the current stage name or nil.",
    "Stage.advance": "Stage.advance([name]): go to name, or to the next declared stage.",
    "Stage.is": "Stage.is(name) -> boolean.",
    "Stage.history": "Stage.history() -> list of stages entered, in order.",
    "Iterations.current": "Iterations.current() -> number of agent turns in this run.",
    "Iterations.exceeded": "Iterations.exceeded(n) -> true once n agent turns have run.",
    "Stop.requested": "Stop.requested() -> true once the done tool was called.",
    "Stop.reason": "Stop.reason() -> the reason given to done.",
    "Stop.success": "Stop.success() -> the success flag given to done.",
    "Tool.called": "Tool.called(name) -> has an agent called this tool in this run?",
    "Tool.last_call": "Tool.last_call(name) -> {name, args, result} of the last call, or nil.",
    "Tool.last_result": "Tool.last_result(name) -> result of the last call, or nil.",
    "Tool.reset": "Tool.reset(): forget this run's tool calls (Tool.called is false until the next call).",
    "toolset": 'toolset(name, {type = "lua", tools = {...}}): a named group of tools an agent lists in toolsets.',
    "Toolset.get": "Toolset.get(name) -> {name, type, tools}: a declared toolset.",
    "mcp_server": 'mcp_server(name, {command = "python", args = {...}} or {url = ...}): an MCP tool server; '
    "its tools are NAME_TOOL, offered with toolsets = {NAME}.",
    "mcp_servers": "mcp_servers({name = {command = ...}, ...}): several MCP tool servers at once.",
    "default_provider": 'default_provider("openai"): the provider of every agent that names none.',
    "prompt": "prompt(name, text): a named prompt template, read back as prompts.NAME.",
    "return_prompt": "return_prompt(text): after a procedure's body, its last agent summarises with this prompt.",
    "error_prompt": "error_prompt(text): when a procedure fails, its last agent explains the error with this prompt.",
    "Log.debug": "Log.debug(message[, context]): a debug line on stdout.",
    "Log.info": "Log.info(message[, context]): an info line on stdout.",
    "Log.warn": "Log.warn(message[, context]): a warning on stderr, with its context table.",
    "Log.error": "Log.error(message[, context]): an error line on stderr, with its context table.",
    "Json.encode": "Json.encode(value) -> JSON text.",
    "Json.decode": "Json.decode(text) -> Lua value.",
    "File.read": "File.read(path) -> text of a file inside the notebook's folder.",
    "File.write": "File.write(path, text): write a file inside the notebook's folder.",
    "File.exists": "File.exists(path) -> boolean.",
    "File.size": "File.size(path) -> size in bytes.",
    "Retry.with_backoff": "Retry.with_backoff(fn, {max_attempts, initial_delay, max_delay, backoff_factor}): "
    "call fn until it succeeds, sleeping between attempts.",
    "Sleep": "Sleep(seconds): wait without blocking the kernel; recorded, so replay does not wait.",
    "print": "print(...): write to the cell's stdout.",
    "params": "params: the running procedure's validated params (read-only).",
    "Human.approve": "Human.approve({message, context, timeout, default, on_timeout}) -> boolean, timed_out: "
    "Approve / Reject buttons in the cell.",
    "Human.input": "Human.input({message, placeholder, default, timeout, on_timeout, options}) -> string: "
    "a text box (or a choice with options) and Submit.",
    "Human.review": "Human.review({message, artifact, artifact_type, options, timeout}) -> "
    "{decision, feedback, edited_artifact, responded_at}.",
    "Human.escalate": "Human.escalate({message, context, severity}): a card with Resolve; waits, no timeout.",
    "Human.notify": "Human.notify({message, level, context}): a non-blocking notice (info, warning, error).",
    "System.alert": "System.alert({message, level, source, context}): a non-blocking alert "
    "(info, warning, error, critical).",
}

_KEYWORD_SET = frozenset(KEYWORDS)
_TOKEN = re.compile(r"([A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)\.?([A-Za-z_][A-Za-z_0-9]*)?$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*")


def _token_before(code: str, cursor_pos: int) -> tuple[str, str, int]:
    """(path, prefix, start): for ``Human.app|`` -> ("Human", "app", start of "app")."""
    left = code[:cursor_pos]
    m = re.search(r"[A-Za-z_0-9.]*$", left)
    text = m.group(0) if m else ""
    start = cursor_pos - len(text)
    if "." in text:
        path, _, prefix = text.rpartition(".")
        return path, prefix, cursor_pos - len(prefix)
    return "", text, start


def complete(runtime: Runtime, code: str, cursor_pos: int) -> dict[str, Any]:
    path, prefix, start = _token_before(code, cursor_pos)
    names = runtime.fields(path)
    if not path:
        names = sorted(set(names) | set(KEYWORDS))
    matches = [n for n in names if n.startswith(prefix) and not n.startswith("_")] if prefix or path else names
    return {
        "status": "ok",
        "matches": matches,
        "cursor_start": start,
        "cursor_end": cursor_pos,
        "metadata": {},
    }


def _word_at(code: str, cursor_pos: int) -> str:
    for m in _WORD.finditer(code):
        if m.start() <= cursor_pos <= m.end():
            return m.group(0).strip(".")
    return ""


_LONG_OPEN = re.compile(r"\[(=*)\[")
_NAME_BEFORE = re.compile(r"([A-Za-z_][A-Za-z_0-9]*(?:\s*[.:]\s*[A-Za-z_][A-Za-z_0-9]*)*)\s*$")


def call_at(code: str, cursor_pos: int) -> str | None:
    """The function of the innermost call still open at the cursor:
    ``Human.approve({message = |`` -> ``Human.approve``. Strings and
    comments are skipped; a table constructor is not a call, except in
    Lua's ``f{...}`` form (and ``f"..."`` calls are closed at once)."""
    text = code[:cursor_pos]
    stack: list[tuple[str, str | None]] = []  # (bracket, callee when it opens a call)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            m = _LONG_OPEN.match(text, i + 2)
            if m:
                end = text.find("]" + m.group(1) + "]", m.end())
                i = n if end < 0 else end + len(m.group(0))
            else:
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
            continue
        if c in "\"'":
            i += 1
            while i < n and text[i] != c and text[i] != "\n":
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "[":
            m = _LONG_OPEN.match(text, i)
            if m:
                end = text.find("]" + m.group(1) + "]", m.end())
                i = n if end < 0 else end + len(m.group(0))
                continue
        if c in "({[":
            callee = None
            if c != "[":
                name = _NAME_BEFORE.search(text, max(0, i - 200), i)
                if name and not (c == "{" and name.group(1) in _KEYWORD_SET):
                    callee = re.sub(r"\s+", "", name.group(1)).replace(":", ".")
                    if callee in _KEYWORD_SET:
                        callee = None
            stack.append((c, callee))
        elif c in ")}]" and stack:
            stack.pop()
        i += 1
    for _, callee in reversed(stack):
        if callee is not None:
            return callee
    return None


def _describe(runtime: Runtime, word: str) -> str | None:
    """What a global (or a field of one) is, for names with no doc."""
    parent, _, name = word.rpartition(".")
    if name not in runtime.fields(parent):
        return None
    doc = f"{word}: {runtime.describe(word)}"
    members = runtime.fields(word)
    if members:
        doc += "\nfields: " + ", ".join(members)
    return doc


def inspect(runtime: Runtime, code: str, cursor_pos: int, detail_level: int = 0) -> dict[str, Any]:
    """Shift-Tab: the doc of the name at the cursor, else of the call the
    cursor is in (``Human.approve({message = |``), as Python kernels do."""
    word = _word_at(code, cursor_pos)
    callee = call_at(code, cursor_pos)
    doc = DOCS.get(word) or (_describe(runtime, word) if word else None)
    if doc is None and callee:
        doc = DOCS.get(callee) or _describe(runtime, callee)
    if doc is None:
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}
    return {"status": "ok", "found": True, "data": {"text/plain": doc}, "metadata": {}}
