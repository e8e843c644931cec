"""``%tactus`` magics: one handler per command, reached through a table,
and a narrow view of the kernel (no import of jupyter/kernel.py, whose
module imports this one)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tactus_kernel.jupyter import magics


def test_every_command_in_the_help_has_a_handler_and_no_other():
    listed = set(re.findall(r"^ {4}%tactus (\w+)", magics.HELP, re.MULTILINE))
    assert listed == set(magics.COMMANDS) - {"status"}  # `status`: an alias of `records`
    assert magics.COMMANDS["status"] is magics.COMMANDS["records"]


def test_magics_import_nothing_of_the_kernel_module_nor_its_private_names():
    source = Path(magics.__file__).read_text(encoding="utf-8")
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert "tactus_kernel.jupyter.kernel" not in imported
    assert "_interruptible" not in source and "kernel.channel" not in source
