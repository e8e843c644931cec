"""papermill runs Tactus notebooks: its parameters arrive as Lua values.

Real papermill, real kernel: the command line a pipeline would use, and
papermill's Python API with values that need escaping.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

from tactus_kernel.replay.papermill import LuaTranslator

SHOW = "Json.encode(values)"


def notebook(path: Path, *sources: str) -> Path:
    """A Tactus notebook; the first cell is tagged ``parameters``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.metadata["language_info"] = {"name": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


def result_of(path: Path, index: int) -> Any:
    """A cell's result, a JSON text (``Json.encode``), decoded."""
    cell = nbformat.read(path, as_version=4).cells[index]
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert results, f"cell {index} has no result: {cell.outputs}"
    return json.loads(results[0].data["text/plain"])


def test_the_papermill_command_line_injects_lua_parameters(tmp_path: Path) -> None:
    src = notebook(
        tmp_path / "in.ipynb",
        'env = "staging"\nretries = 1  -- how often to try',
        'procedure({name = "deploy"}, function() return {env = env, retries = retries} end)',
        "Json.encode({env = env, retries = retries, n = retries * 2})",
    )
    out = tmp_path / "out.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(out), "-p", "env", "prod", "-p", "retries", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cells = nbformat.read(out, as_version=4).cells
    assert cells[1].metadata.tags == ["injected-parameters"]
    assert cells[1].source == '-- Parameters\nenv = "prod"\nretries = 5\n'
    deploy = [o for o in cells[2].outputs if o.output_type == "execute_result"]
    assert deploy[0].data["text/plain"] == '{env = "prod", retries = 5}'
    assert result_of(out, 3) == {"env": "prod", "n": 10, "retries": 5}


def test_every_json_value_reaches_the_cell_as_it_was_given(tmp_path: Path) -> None:
    values = {
        "quote": 'he said "hi"\\ and left\n\ttab',
        "unicode": "Grüße, 世界 ✓",
        "control": "bell\x07 and nul-free",
        "number": 3.25,
        "big": 2**53,
        "negative": -7,
        "yes": True,
        "no": False,
        "list": [1, "two", [3.5, {"k": "v"}]],
        "nested": {"with space": 1, "end": "keyword key", "ok": {"deep": [True]}},
    }
    src = notebook(tmp_path / "in.ipynb", "values = {}", SHOW)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(src), str(out), parameters={"values": values}, kernel_name="tactus")
    assert result_of(out, 2) == values


def test_nil_parameters_and_bad_names(tmp_path: Path) -> None:
    assert LuaTranslator.codify({"gone": None}) == "-- Parameters\ngone = nil\n"
    with pytest.raises(ValueError, match="papermill parameter: 'not a name' is not a Lua variable name"):
        LuaTranslator.codify({"not a name": 1})
    with pytest.raises(ValueError, match="papermill parameter: 'end' is not a Lua variable name"):
        LuaTranslator.codify({"end": 1})


def test_help_notebook_lists_the_parameters_cell(tmp_path: Path) -> None:
    src = notebook(
        tmp_path / "in.ipynb",
        '-- defaults\nenv = "staging"  -- where to deploy\nretries = 3\nverbose = false\nlabels = {"a"}\n',
        SHOW,
    )
    params = papermill.inspect_notebook(str(src))
    assert params == {
        "env": {"name": "env", "inferred_type_name": "string", "default": '"staging"', "help": "where to deploy"},
        "retries": {"name": "retries", "inferred_type_name": "number", "default": "3", "help": ""},
        "verbose": {"name": "verbose", "inferred_type_name": "boolean", "default": "false", "help": ""},
        "labels": {"name": "labels", "inferred_type_name": "table", "default": '{"a"}', "help": ""},
    }
