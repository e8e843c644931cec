"""Reference Tactus ``.tac`` files in and out of notebooks.

``tactus-kernel import FILE.tac [-o NOTEBOOK]`` splits a file into its
top-level statements (a small Lua scanner: strings, long strings, comments
and block nesting, no full parser) and lays them out as cells: a markdown
cell from the file's leading comment block, then one cell per group of
declarations in file order (set-up such as agents, tools, stages; the
procedure with its v0.3 ``parameter``/``output``/``description`` and
settings; specifications with their steps; evaluations).

``%tactus export NAME FILE.tac`` goes the other way: from the cells this
kernel has run, it takes the cell that declared procedure NAME and every
statement it uses by name (agents, tools, prompts, helper functions,
stages, settings), plus the specifications, steps and evaluations declared
for it, and writes them as one ``.tac`` file in notebook order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a top-level statement declares, by the call it starts with.
SETUP_CALLS = {
    "agent",
    "tool",
    "toolset",
    "mcp_server",
    "mcp_servers",
    "prompt",
    "default_provider",
    "default_model",
    "stages",
    "hitl",
    "return_prompt",
    "error_prompt",
    "status_prompt",
}
PROCEDURE_FIELDS = {"parameter", "output", "description"}
SETTINGS = {"max_depth", "max_turns", "async"}
SPEC_CALLS = {"specifications", "step"}
EVAL_CALLS = {"evaluation", "evaluations"}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_OPENERS = {"function", "do", "then", "repeat"}  # `if`, `while` and `for` open with their then/do


class TacError(ValueError):
    """A .tac file the scanner cannot split (an unclosed string, comment or block)."""


@dataclass
class Statement:
    """One top-level statement, with the comment lines just above it."""

    text: str
    comment: str = ""
    line: int = 1

    @property
    def call(self) -> str:
        """The declaration it makes: ``agent``, ``procedure``, ..., or ``code``."""
        m = re.match(rf"(?:local\s+)?(?:{_NAME}\s*=\s*)?({_NAME})\s*[\(\[\{{\"']", self.text)
        if m and m.group(1) in SETUP_CALLS | PROCEDURE_FIELDS | SETTINGS | SPEC_CALLS | EVAL_CALLS | {"procedure"}:
            return m.group(1)
        return "code"

    @property
    def declares(self) -> str | None:
        """The name it declares: ``agent("greeter", ...)`` -> ``greeter``,
        ``function helper(`` / ``helper = ...`` -> ``helper``."""
        m = re.match(rf"{_NAME}\s*\(\s*[\"']({_NAME})[\"']", self.text)
        if m and self.call != "code":
            return m.group(1)
        m = re.match(rf"(?:local\s+)?function\s+({_NAME})\b", self.text) or re.match(
            rf"(?:local\s+)?({_NAME})\s*=", self.text
        )
        return m.group(1) if m else None

    @property
    def procedure_name(self) -> str | None:
        """A procedure's name: ``procedure("main", ...)``, ``procedure({name = "x", ...``."""
        if self.call != "procedure":
            return None
        m = re.search(rf"procedure\s*\(\s*[\"']({_NAME})[\"']", self.text)
        if m:
            return m.group(1)
        m = re.search(rf"procedure\s*\(\s*\{{\s*name\s*=\s*[\"']({_NAME})[\"']", self.text)
        return m.group(1) if m else None

    def source(self) -> str:
        return (self.comment + "\n" if self.comment else "") + self.text


# ------------------------------------------------------------------ scanning
_TOKEN = re.compile(
    r"""
    (?P<comment>--(?:\[(?P<ceq>=*)\[)?)
  | (?P<long>\[(?P<leq>=*)\[)
  | (?P<quote>["'])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>[\(\{\[])
  | (?P<close>[\)\}\]])
  | (?P<other>\S)
""",
    re.VERBOSE,
)


def _depth_changes(code: str) -> list[tuple[int, int, str]]:
    """(offset, depth before the token, token) for every token that is not
    inside a string or comment; raises TacError for an unclosed one."""
    out: list[tuple[int, int, str]] = []
    depth, i, n = 0, 0, len(code)
    while i < n:
        if code[i].isspace():
            i += 1
            continue
        m = _TOKEN.match(code, i)
        assert m is not None
        kind = m.lastgroup if m.lastgroup not in ("ceq", "leq") else None
        if m.group("comment") is not None:
            if m.group("ceq") is not None:
                end = code.find("]" + m.group("ceq") + "]", m.end())
                if end < 0:
                    raise TacError(f"line {code.count(chr(10), 0, i) + 1}: a long comment is not closed")
                i = end + len(m.group("ceq")) + 2
            else:
                nl = code.find("\n", i)
                i = n if nl < 0 else nl
            continue
        if m.group("long") is not None:
            end = code.find("]" + m.group("leq") + "]", m.end())
            if end < 0:
                raise TacError(f"line {code.count(chr(10), 0, i) + 1}: a long string is not closed")
            out.append((i, depth, "string"))
            i = end + len(m.group("leq")) + 2
            continue
        if m.group("quote") is not None:
            q, j = m.group("quote"), m.end()
            while j < n and code[j] != q:
                if code[j] == "\n":
                    raise TacError(f"line {code.count(chr(10), 0, i) + 1}: a string is not closed")
                j += 2 if code[j] == "\\" else 1
            if j >= n:
                raise TacError(f"line {code.count(chr(10), 0, i) + 1}: a string is not closed")
            out.append((i, depth, "string"))
            i = j + 1
            continue
        token = m.group(0)
        out.append((i, depth, token))
        if kind == "open" or token in _OPENERS:
            depth += 1
        elif kind == "close" or token in ("end", "until", "elseif"):
            depth -= 1  # an elseif closes its branch; its `then` opens the next
        i = m.end()
    if depth != 0:
        raise TacError("the file ends inside a block or bracket (a missing 'end' or ')')")
    return out


_CONTINUES = re.compile(r"[\.\:\(\{\[\+\-\*/%\^=<>~,]|\.\.|and\b|or\b")
_NOT_A_START = {"end", "until", "else", "elseif", "then", "do", "string"}


def split(code: str) -> tuple[str, list[Statement]]:
    """(the leading comment block, the top-level statements)."""
    starts: list[int] = []
    for offset, depth, token in _depth_changes(code):
        line_start = code.rfind("\n", 0, offset) + 1
        if (
            depth == 0
            and not code[line_start:offset].strip()
            and token not in _NOT_A_START
            and not _CONTINUES.match(token)
            and (not starts or starts[-1] != line_start)
        ):
            starts.append(line_start)
    header, comment = _header_and_attached(code[: starts[0] if starts else len(code)].strip("\n"))
    statements: list[Statement] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(code)
        body, trailing = _split_trailing_comments(code[start:end].rstrip())
        statements.append(Statement(body, comment, code.count("\n", 0, start) + 1))
        comment = trailing  # comment lines at a statement's end belong to the next one
    return header, statements


def _split_trailing_comments(chunk: str) -> tuple[str, str]:
    """A chunk's code and the comment lines that end it (they precede the next statement)."""
    lines = chunk.split("\n")
    k = len(lines)
    while k > 1 and (lines[k - 1].strip().startswith("--") or not lines[k - 1].strip()):
        k -= 1
    body = "\n".join(lines[:k]).rstrip()
    comment = "\n".join(lines[k:]).strip("\n")
    return body, comment


def _header_and_attached(lead: str) -> tuple[str, str]:
    """The comment block before the first statement: its first paragraph is
    the file's header (a markdown cell); a later paragraph, right above the
    first statement, stays with it."""
    if not lead.strip():
        return "", ""
    paragraphs = re.split(r"\n\s*\n", lead.strip("\n"))
    if len(paragraphs) == 1:
        return paragraphs[0], ""
    return "\n\n".join(paragraphs[:-1]), paragraphs[-1]


def comment_to_markdown(comment: str) -> str:
    lines = []
    for line in comment.split("\n"):
        s = line.strip()
        s = re.sub(r"^--\[=*\[|\]=*\]$", "", s)
        s = re.sub(r"^-- ?", "", s)
        lines.append(s)
    return "\n".join(lines).strip()


# -------------------------------------------------------------------- import
def _group(call: str) -> str:
    if call in SPEC_CALLS:
        return "specifications"
    if call in EVAL_CALLS:
        return "evaluations"
    if call == "procedure" or call in PROCEDURE_FIELDS or call in SETTINGS:
        return "procedure"
    return "setup"


def cells_of(code: str) -> tuple[str, list[list[Statement]]]:
    """The markdown header and the code cells (lists of statements) of a file."""
    header, statements = split(code)
    fields = [s for s in statements if s.call in PROCEDURE_FIELDS or s.call in SETTINGS]
    procs = [s for s in statements if s.call == "procedure"]
    # v0.3's parameter/output/description belong to the file's main procedure:
    # the unnamed one, else "main", else the last
    main = next((p for p in procs if p.procedure_name is None), None) or next(
        (p for p in procs if p.procedure_name == "main"), procs[-1] if procs else None
    )
    cells: list[list[Statement]] = []
    group = None
    held: list[Statement] = []  # top-level locals: a local is seen only in its own cell
    for st in statements:
        if st in fields and main is not None:
            continue  # placed with the main procedure below
        if st.call == "code" and re.match(r"local\b", st.text):
            held.append(st)
            continue
        g = _group(st.call)
        if held or st.call == "procedure" or g != group:
            cells.append([])
        cells[-1].extend(held)
        held = []
        if st is main:
            cells[-1].extend(fields)
        cells[-1].append(st)
        group = g
    if held:
        cells.append(held)
    return header, cells


def to_notebook(code: str) -> Any:
    """A notebook for the Tactus kernel from a .tac file's text."""
    import nbformat

    header, cells = cells_of(code)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.metadata["language_info"] = {"name": "lua"}
    if header:
        nb.cells.append(nbformat.v4.new_markdown_cell(comment_to_markdown(header)))
    for stmts in cells:
        nb.cells.append(nbformat.v4.new_code_cell("\n\n".join(s.source() for s in stmts)))
    return nb


def import_file(path: Path, out: Path | None = None) -> Path:
    """``tactus-kernel import``: write the notebook; returns its path."""
    import nbformat

    try:
        code = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TacError(f"{path}: cannot read it: {exc}") from None
    try:
        nb = to_notebook(code)
    except TacError as exc:
        raise TacError(f"{path}: {exc}") from None
    target = out or path.with_suffix(".ipynb")
    nbformat.write(nb, str(target))
    return target


# -------------------------------------------------------------------- export
def _words(text: str) -> set[str]:
    """Identifiers and quoted names used by a piece of code."""
    return set(re.findall(_NAME, text))


def _agent_global(name: str) -> str:
    return name[:1].upper() + name[1:]


def select(cells: list[str], procedure: str, proc_cell: int, specs: str | None) -> list[Statement]:
    """The statements of `cells` (sources in notebook order) that procedure
    NAME, declared in cells[proc_cell], needs: that whole cell, the
    declarations it uses by name (to a fixed point), settings, and the
    specifications, steps and evaluations declared for it."""
    split_cells = [_statements(c, required=i == proc_cell) for i, c in enumerate(cells)]
    chosen: list[tuple[int, int]] = [(proc_cell, j) for j in range(len(split_cells[proc_cell]))]
    spec_cells = {proc_cell}
    if specs is not None:
        for i, stmts in enumerate(split_cells):
            if any(s.call == "specifications" and specs.strip() in s.text for s in stmts):
                spec_cells.add(i)
    for i in sorted(spec_cells - {proc_cell}):
        chosen += [(i, j) for j, s in enumerate(split_cells[i]) if s.call in SPEC_CALLS | EVAL_CALLS]
    for i, stmts in enumerate(split_cells):
        chosen += [(i, j) for j, s in enumerate(stmts) if s.call in SETTINGS and (i, j) not in chosen]
    # steps used by the specifications, wherever they were declared
    spec_text = specs or ""
    for i, stmts in enumerate(split_cells):
        for j, s in enumerate(stmts):
            if s.call == "step" and (i, j) not in chosen:
                m = re.match(r"step\s*\(\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')", s.text)
                if m and _step_used(m.group(1)[1:-1], spec_text):
                    chosen.append((i, j))
    while True:
        used = set().union(*(_words(split_cells[i][j].text) for i, j in chosen))
        more = []
        for i, stmts in enumerate(split_cells):
            for j, s in enumerate(stmts):
                if (i, j) in chosen or s.call in SPEC_CALLS | EVAL_CALLS | {"procedure"}:
                    continue
                name = s.declares
                used_by_name = bool(name) and (name in used or _agent_global(str(name)) in used)
                setting = s.call in ("default_provider", "default_model", "stages") and i <= proc_cell
                if used_by_name or setting:
                    more.append((i, j))
        if not more:
            break
        chosen += more
    return [split_cells[i][j] for i, j in sorted(set(chosen))]


def _statements(code: str, required: bool) -> list[Statement]:
    """A cell's statements; a cell the scanner cannot split is left out,
    unless it is the procedure's own."""
    try:
        return split(code)[1]
    except TacError:
        if required:
            raise
        return []


def _step_used(step_text: str, specs: str) -> bool:
    if step_text in specs:
        return True
    try:  # a step text may be a Lua pattern with captures
        lua_like = re.sub(
            r"%(.)",
            lambda m: (
                "\\" + m.group(1)
                if m.group(1) in ".%()[]*+-?^$"
                else {"d": r"\d", "s": r"\s", "w": r"\w", "a": "[A-Za-z]"}.get(m.group(1), m.group(1))
            ),
            step_text,
        )
        return re.search(lua_like, specs) is not None
    except re.error:
        return False


def warnings_for(statements: list[Statement]) -> list[str]:
    """What the reference's validator would refuse or warn about."""
    out = []
    if not any(s.call == "procedure" for s in statements):
        out.append("no procedure(...) in the file: the reference requires one")
    for s in statements:
        if s.call == "agent" and not re.search(r"\bprovider\s*=", s.text):
            out.append(f"agent '{s.declares}' has no provider = \"...\": the reference refuses an agent without one")
    if not any(s.call == "specifications" for s in statements):
        out.append("no specifications([[...]]): the reference warns about a file without them")
    return out


def render(statements: list[Statement], procedure: str) -> str:
    head = f"-- {procedure}: exported from a Tactus notebook\n\n"
    return head + "\n\n".join(s.source() for s in statements) + "\n"


def export_command(runtime: Any, args: list[str]) -> None:
    """``%tactus export NAME FILE.tac``: write the file inside the notebook's
    folder, then name what the reference would refuse (on stderr)."""
    from tactus_kernel.engine.errors import CellError
    from tactus_kernel.engine.files import FileError, confined
    from tactus_kernel.features.specs.registry import registry

    if len(args) != 2 or not args[1].endswith(".tac"):
        raise CellError.simple("UsageError", "%tactus export NAME FILE.tac")
    name, target = args
    spec = runtime.procedures.get(name)
    if spec is None:
        known = ", ".join(sorted(runtime.procedures)) or "none is declared yet"
        raise CellError.simple("UsageError", f"unknown procedure {name!r} (declared: {known})")
    labels = [label for label, _ in runtime.cell_sources.values()]
    if spec.cell not in labels:
        raise CellError.simple(
            "UsageError",
            f"the cell that declared procedure {name!r} is not known to this kernel (run it again, then export)",
        )
    cells = [code for _, code in runtime.cell_sources.values()]
    index = len(labels) - 1 - labels[::-1].index(spec.cell)
    declared = registry(runtime).specs.get(name)
    try:
        statements = select(cells, name, index, declared.text if declared else None)
        path = confined(runtime.root, target)
    except TacError as exc:
        raise CellError.simple("TacError", f"cannot export procedure {name!r}: {exc}") from None
    except FileError as exc:
        raise CellError.simple("SandboxError", str(exc).replace("File:", "%tactus export:", 1)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(statements, name), "utf-8")
    runtime.host.write("stdout", f"Wrote procedure {name!r} ({len(statements)} statements) to {target}\n")
    for warning in warnings_for(statements):
        runtime.host.write("stderr", f"{target}: {warning}\n")
