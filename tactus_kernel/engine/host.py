"""What the runtime needs from whoever runs it (a Jupyter kernel, a test).

The runtime knows nothing of Jupyter: it writes text, shows rich bundles,
asks humans and says when records changed, all through this interface.
Every capability is a method the runtime calls as it is; one a host lacks
keeps :class:`BaseHost`'s default, which says what happens without it (no
one to ask, no display to replace). Hosts subclass :class:`BaseHost`.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol


class NoAnswerer(Exception):
    """Raised by :meth:`Host.ask_human` of a host where nobody can answer."""


class Host(Protocol):
    #: Draw the live timeline with ipywidgets (a notebook frontend).
    timeline_widgets: bool
    #: :meth:`update_display` replaces an earlier display (else it does nothing).
    updates_displays: bool

    def write(self, stream: str, text: str) -> None:
        """Append text to the running cell's ``stdout`` or ``stderr``."""

    def flush(self) -> None:
        """Send text a host buffered (streamed agent output, before a pause)."""

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None:
        """Show a mime bundle in the running cell (under `display_id`, if given)."""

    def update_display(self, data: dict[str, Any], display_id: str, metadata: dict[str, Any] | None = None) -> None:
        """Replace what ``display(..., display_id=...)`` showed."""

    def records_changed(self) -> None:
        """Checkpoints changed; a frontend may want an (batched) update."""

    async def ask_human(self, req: Any) -> Any:
        """Ask a person (`req`: features.human's HumanRequest) and return the
        answer; raise :class:`NoAnswerer` when nobody can answer here."""

    def show_answered(self, req: Any, entry: dict[str, Any], index: int | None = None) -> None:
        """A request answered from the record: show it as answered."""

    def human_recorded(self, req: Any, entry: dict[str, Any], index: int | None) -> None:
        """The answer :meth:`ask_human` returned is now recorded (`entry`,
        at position `index` of its record)."""

    def notice(self, notice: dict[str, Any]) -> None:
        """Show ``Human.notify`` / ``System.alert`` (a dict: kind, level,
        message, context, source, procedure, at)."""


class BaseHost:
    """The defaults of every optional capability of :class:`Host`."""

    timeline_widgets = False
    updates_displays = False

    def write(self, stream: str, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None:
        pass

    def update_display(self, data: dict[str, Any], display_id: str, metadata: dict[str, Any] | None = None) -> None:
        pass

    def records_changed(self) -> None:
        pass

    async def ask_human(self, req: Any) -> Any:
        raise NoAnswerer("nobody can answer here (no notebook frontend)")

    def show_answered(self, req: Any, entry: dict[str, Any], index: int | None = None) -> None:
        pass

    def human_recorded(self, req: Any, entry: dict[str, Any], index: int | None) -> None:
        pass

    def notice(self, notice: dict[str, Any]) -> None:
        """Without cards: one line of text, on stderr for errors."""
        stream = "stderr" if notice["level"] in ("error", "critical") else "stdout"
        self.write(stream, f"[{notice['kind']} {notice['level']}] {notice['message']}\n")


class NullHost(BaseHost):
    """A host that discards everything (benchmarks, tests about other things)."""


class ConsoleHost(BaseHost):
    """A host for plain Python use (tests, scripts): prints to the console."""

    def __init__(self) -> None:
        self.displayed: list[dict[str, Any]] = []

    def write(self, stream: str, text: str) -> None:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None:
        self.displayed.append(data)
        print(data.get("text/plain", ""))
