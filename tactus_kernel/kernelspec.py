"""Installing the ``tactus`` kernel spec.

``pip install .`` already ships it as shared data; this is for other
prefixes (``--user``, ``--sys-prefix``, ``--prefix P``) and for pointing the
spec at the exact interpreter that has this package installed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

KERNEL_NAME = "tactus"
DISPLAY_NAME = "Tactus (Lua)"


def spec(executable: str | None = None) -> dict[str, object]:
    return {
        "argv": [executable or sys.executable, "-m", "tactus_kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "lua",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }


def install(user: bool = False, prefix: str | None = None) -> str:
    """Install the spec; returns the folder it went to."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / KERNEL_NAME
        folder.mkdir()
        (folder / "kernel.json").write_text(json.dumps(spec(), indent=2))
        return KernelSpecManager().install_kernel_spec(str(folder), KERNEL_NAME, user=user, prefix=prefix)
