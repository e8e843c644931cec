"""What the runtime needs from whoever runs it (a Jupyter kernel, a test).

The runtime knows nothing of Jupyter: it writes text, shows rich bundles,
asks humans and says when records changed, all through this interface.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Host(Protocol):
    def write(self, stream: str, text: str) -> None:
        """Append text to the running cell's ``stdout`` or ``stderr``."""

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """Show a mime bundle in the running cell."""

    def records_changed(self) -> None:
        """Checkpoints changed; a frontend may want an (batched) update."""


class NullHost:
    """A host that discards everything (benchmarks, tests about other things)."""

    def write(self, stream: str, text: str) -> None:
        pass

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        pass

    def records_changed(self) -> None:
        pass


class ConsoleHost:
    """A host for plain Python use (tests, scripts): prints to the console."""

    def __init__(self) -> None:
        self.displayed: list[dict[str, Any]] = []

    def write(self, stream: str, text: str) -> None:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.displayed.append(data)
        print(data.get("text/plain", ""))

    def records_changed(self) -> None:
        pass
