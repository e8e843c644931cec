"""Where a kernel this package starts listens: local sockets, not TCP ports.

Used by the replay client and by the public test driver (tactus_kernel.testing).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any


def local_sockets() -> tuple[tempfile.TemporaryDirectory[str] | None, dict[str, Any]]:
    """A new directory, and the kernel manager arguments that make its
    kernel talk over local sockets in it (no directory, no arguments on
    Windows: TCP there). The caller removes the directory after shutdown.

    Why not TCP ports: a port is picked free and bound by the kernel a
    moment later, so two kernels started side by side (replays run in
    parallel in CI, tests under pytest-xdist) could pick the same one, and
    one died with "Address already in use". Socket names in a directory of
    the kernel's own cannot collide.
    """
    if os.name == "nt":
        return None, {}
    sockets = tempfile.TemporaryDirectory(prefix="tactus-kernel-")
    return sockets, {"transport": "ipc", "ip": os.path.join(sockets.name, "kernel")}
