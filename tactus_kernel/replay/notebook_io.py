"""A replay's notebook files: read one (or say in one line why not), make it
ready to run, mark where it failed, and write it atomically."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any, cast

import nbformat
from nbformat import NotebookNode

from tactus_kernel.engine.atomic import atomic_write
from tactus_kernel.engine.records import describe_entry
from tactus_kernel.protocol import MetadataError, parse_metadata
from tactus_kernel.replay.outcome import ReplayFailure, ReplayOptions
from tactus_kernel.replay.params import (
    MAX_INPUT_DEPTH,
    InputError,
    deep_path_in_text,
    inject_parameters,
    json_path,
    parameters_cell_source,
    too_deep,
    unencodable,
)

ERROR_TAG = "tactus-replay-error"


def read_notebook(path: str | Path) -> NotebookNode:
    """Read a v4 notebook, or raise InputError with a one-line reason."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such notebook") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a notebook") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    try:
        nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    except RecursionError:
        deep = deep_path_in_text(text)
        where = json_path(deep) if deep is not None else "somewhere"
        raise InputError(f"{path}: nested more than {MAX_INPUT_DEPTH} levels deep at {where}") from None
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds; each means "not a notebook"
        reason = "not JSON" if type(exc).__name__ == "NotJSONError" else " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: not a Jupyter notebook ({reason})") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        found = nb.get("nbformat") if isinstance(nb, dict) else type(nb).__name__
        raise InputError(f"{path}: not a Jupyter notebook in format 4 (found {found!r})")
    deep = too_deep(nb)
    if deep is not None:
        raise InputError(f"{path}: nested more than {MAX_INPUT_DEPTH} levels deep at {json_path(deep)}")
    unicode_problem = lone_surrogate(nb)
    if unicode_problem is not None:
        raise InputError(f"{path}: {unicode_problem}")
    return cast(NotebookNode, nb)


def describe_place(path: list[str | int], nb: Any) -> str:
    """A place in a notebook for an error: a recorded checkpoint as
    "procedure 'p', checkpoint #3 (step 'fetch')", anything else as its JSON path."""
    if len(path) >= 6 and path[:3] == ["metadata", "tactus", "procedures"]:
        node: Any = nb["metadata"]["tactus"]["procedures"]
        key = [str(path[3])]
        node = node[path[3]]
        rest = path[4:]
        while len(rest) >= 2 and rest[0] == "children":
            key.append(str(rest[1]))
            node = node["children"][rest[1]]
            rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "checkpoints" and isinstance(rest[1], int):
            where = describe_entry("/".join(key), rest[1], node["checkpoints"][rest[1]])
            return f"{where}, at {json_path(path)}"
    return json_path(path)


def lone_surrogate(nb: Any) -> str | None:
    """Why `nb` cannot be written as UTF-8, naming the place, or None."""
    path = unencodable(nb)
    if path is None:
        return None
    return (
        f"{describe_place(path, nb)} holds text that is not valid Unicode (a lone surrogate such as "
        "\\ud800), which cannot be written to a notebook file; fix or remove it"
    )


def unwritable_metadata(meta: dict[str, Any] | None) -> str | None:
    """Why the records a kernel sent cannot go into the notebook (nested too
    deep, or text that is not Unicode), naming the place; None when they can."""
    if meta is None:
        return None
    wrapped = {"metadata": {"tactus": meta}}
    deep = too_deep(wrapped, MAX_INPUT_DEPTH)
    if deep is not None:
        return (
            f"the kernel's records are nested more than {MAX_INPUT_DEPTH} levels deep at {json_path(deep)} "
            "(a recursion too deep?); they cannot be written to the notebook, so nothing was written"
        )
    return lone_surrogate(wrapped)


def serialise_notebook(nb: NotebookNode) -> bytes:
    """The notebook as the bytes of its file. Raises InputError naming the place of a value that
    cannot be written (then nothing is written)."""
    where = lone_surrogate(nb)
    if where is not None:
        raise InputError(where)
    return nbformat.writes(nb).encode("utf-8")


def check_notebook_bytes(data: bytes, nb: NotebookNode) -> None:
    """Raise InputError unless `data` reads back as `nb` (the check before a file is replaced)."""
    back = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    if back != nb:
        raise InputError("the notebook did not read back as written; nothing was written")


def write_notebook(nb: NotebookNode, target: str | Path) -> None:
    """Write `nb` to `target` atomically (see atomic.py): old file or new file, never a part."""
    atomic_write(target, serialise_notebook(nb), check=lambda data: check_notebook_bytes(data, nb))


def prepare(nb: NotebookNode, options: ReplayOptions) -> list[str]:
    """Make `nb` ready to run: clear old outputs and error markers, inject
    parameters, check the recorded metadata. Returns warnings."""
    warnings: list[str] = []
    try:
        parse_metadata(nb.metadata.get("tactus"))
    except MetadataError as exc:
        raise InputError(f"the notebook's checkpoint metadata cannot be replayed: {exc}") from None
    nb.cells = [c for c in nb.cells if ERROR_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None
    if options.parameters:
        declared = parameters_cell_source(nb)
        if declared is None:
            warnings.append("no cell is tagged `parameters`: the given parameters are set in a new cell at the top")
        else:
            unknown = [k for k in options.parameters if not re.search(rf"(?<![\w.]){re.escape(k)}\b", declared)]
            if unknown:
                warnings.append(f"not in the cell tagged `parameters` (set anyway): {', '.join(unknown)}")
        inject_parameters(nb, options.parameters)
    return warnings


def mark_failure(nb: NotebookNode, failure: ReplayFailure, message: str) -> None:
    """Papermill-like: a banner at the top with the whole message and a
    marker above the failing cell, both tagged so the next replay removes
    them."""
    if failure.cell is not None:
        nb.cells.insert(
            failure.cell.index,
            _marker_cell(nb, '<span style="color:red">**Replay stopped at this cell.**</span>'),
        )
    fence = "~~~~"
    banner = f'<span style="color:red">**Replay failed.**</span>\n\n{fence}\n{message}\n{fence}'
    nb.cells.insert(0, _marker_cell(nb, banner))


def _marker_cell(nb: NotebookNode, text: str) -> NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [ERROR_TAG]})
    if nb.get("nbformat_minor", 0) < 5:
        cell.pop("id", None)
    else:
        cell["id"] = f"{ERROR_TAG}-{uuid.uuid4().hex[:8]}"
    return cell
