"""Installing the ``tactus`` kernel spec.

``pip install .`` already ships it as shared data; this is for other
prefixes (``--user``, ``--sys-prefix``, ``--prefix P``) and for pointing the
spec at the exact interpreter that has this package installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from tactus_kernel.engine.atomic import atomic_write

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
    """Install the spec; returns the folder it went to.

    ``kernel.json`` is replaced atomically in place (see atomic.py) rather
    than through ``KernelSpecManager.install_kernel_spec``, which deletes
    the installed folder before copying the new one: a kill in between
    would leave no kernel at all."""
    manager = KernelSpecManager()
    folder = Path(manager._get_destination_dir(KERNEL_NAME, user=user, prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "kernel.json", json.dumps(spec(), indent=2).encode("utf-8"), check=_check_spec)
    return str(folder)


def _check_spec(data: bytes) -> None:
    """The written kernel.json must read back as the spec."""
    if json.loads(data) != spec():
        raise ValueError("kernel.json did not read back as written")
