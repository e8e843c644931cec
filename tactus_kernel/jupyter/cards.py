"""The cards a cell shows when a procedure asks a person (ipywidgets 8).

Only a card that still waits is a live widget. It is shown under a
display id; once it is answered (or times out, or the run stops) that
display is replaced by a static card (``text/html``, ``text/plain`` and
``application/vnd.tactus.card+json``) and every widget of the live card is
closed. So a saved notebook, a restarted kernel, GitHub and nbviewer all
show what was asked and answered, and the kernel keeps no dead widgets.

A replayed (recorded) answer and a non-blocking notice are static from the
start. Every colour is a JupyterLab theme variable with a fallback for
pages without JupyterLab's stylesheet (GitHub, nbviewer). ipywidgets is
imported on the first waiting card, so a kernel that never asks anyone
starts faster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tactus_kernel.features.human.effects import HumanRequest

MIME = "application/vnd.tactus.card+json"
VERSION = 1

BRAND = "var(--jp-brand-color1, #1976d2)"
SUCCESS = "var(--jp-success-color1, #2f855a)"
ERROR = "var(--jp-error-color1, #c53030)"
WARN = "var(--jp-warn-color1, #b7791f)"
INFO = "var(--jp-info-color1, #2f6fb3)"
CRITICAL = "var(--jp-error-color0, #822727)"
BORDER = "var(--jp-border-color2, #d0d7de)"
FONT1 = "var(--jp-ui-font-color1, #1f2328)"
FONT2 = "var(--jp-ui-font-color2, #57606a)"
INVERSE = "var(--jp-ui-inverse-font-color1, #ffffff)"
LAYOUT = "var(--jp-layout-color1, #ffffff)"
LAYOUT2 = "var(--jp-layout-color2, #f6f8fa)"

COLORS = {
    "info": INFO,
    "warning": WARN,
    "error": ERROR,
    "critical": CRITICAL,
    "low": INFO,
    "medium": WARN,
    "high": ERROR,
}
TITLES = {"approve": "Approval needed", "input": "Input needed", "review": "Review needed", "escalate": "Escalation"}
TYPING_GRACE = 0.3  # seconds a card's text boxes must be quiet before a click answers (Card._answer)
BUTTON_STYLES = ["success", "danger", "warning", "info"]
STYLE_COLORS = {"success": SUCCESS, "danger": ERROR, "warning": WARN, "info": INFO, "": BRAND}


class Screen(Protocol):
    """Where cards go: a cell's outputs (NotebookHost)."""

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None: ...

    def update_display(self, data: dict[str, Any], display_id: str) -> None: ...


def _w() -> Any:
    import ipywidgets

    return ipywidgets


# ------------------------------------------------------------------ time
def _utc(at: str | dt.datetime | None = None) -> dt.datetime:
    if isinstance(at, dt.datetime):
        return at.astimezone(dt.UTC)
    if at:
        try:
            return dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).astimezone(dt.UTC)
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC)


def clock(at: str | dt.datetime | None = None, date: bool = False) -> str:
    """The one time format of every card: ``03:13:26 UTC`` or, with the
    date, ``2026-05-12 03:13:26 UTC``."""
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S UTC")


def iso(at: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with a ``Z``, as the records write it."""
    return _utc(at).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------- pieces
def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _context_html(context: Any) -> str:
    if context in (None, {}, []):
        return ""
    if isinstance(context, dict):
        rows = "".join(
            f"<tr style='background:transparent'><th style='text-align:left;padding:0 1em 0 0;color:{FONT2};"
            "font-weight:600;background:transparent'>"
            f"{html.escape(str(k))}</th>"
            f"<td style='text-align:left;color:{FONT1};background:transparent'>"
            f"{html.escape(v if isinstance(v, str) else _json(v))}</td></tr>"
            for k, v in context.items()
        )
        return f"<table class='tactus-context' style='margin:0 0 4px;border-collapse:collapse'>{rows}</table>"
    return (
        f"<pre style='margin:0 0 4px;color:{FONT1};background:{LAYOUT2}'>"
        f"{html.escape(json.dumps(context, indent=2, ensure_ascii=False))}</pre>"
    )


def _label(text: str) -> str:
    return f"<span style='color:{FONT2};font-size:0.85em'>{html.escape(text)}</span>"


def where(req: HumanRequest, cell_id: str | None) -> str:
    """``procedure ship``; a request outside a named procedure is keyed by
    its cell's id, which means nothing to a person: its title (``cell 3:
    Human.input(...``) instead."""
    return req.procedure if cell_id and req.key == cell_id else f"procedure {req.procedure}"


def header_html(title: str, message: str, context: Any, color: str, sub: str = "") -> str:
    """Title line, question and context: the top of every card."""
    return (
        f"<div style='font-size:0.85em;color:{color};font-weight:700'>{html.escape(title)}"
        f"<span style='color:{FONT2};font-weight:400'>{(' · ' + html.escape(sub)) if sub else ''}</span></div>"
        f"<div style='font-size:1.05em;margin:2px 0 4px;color:{FONT1}'>{html.escape(message)}</div>"
        f"{_context_html(context)}"
    )


def frame_html(inner: str, color: str, state: str) -> str:
    return (
        f"<div class='tactus-card tactus-card-{state}' style='border:1px solid {BORDER};"
        f"border-left:4px solid {color};border-radius:3px;padding:6px 10px;margin:4px 0;"
        f"background:{LAYOUT};color:{FONT1}'>{inner}</div>"
    )


def answer_text(req: HumanRequest, value: Any, timed_out: bool = False) -> str:
    """``Approved`` / ``Answered "Ada"`` ...: what a finished card says."""
    if timed_out:
        return f"Timed out; returned the default {_json(value)}"
    if req.request == "approve":
        return "Approved" if value else "Rejected"
    if req.request == "input":
        return f"Answered {_json(value)}"
    if req.request == "review":
        decision = value.get("decision") if isinstance(value, dict) else value
        return f"Reviewed: {decision}"
    return "Resolved"


def _options(req: HumanRequest) -> list[tuple[str, str]]:
    """The buttons of a card: (label, ipywidgets button style)."""
    if req.request == "approve":
        return [("Approve", "success"), ("Reject", "danger")]
    if req.request == "review":
        return [
            (label, BUTTON_STYLES[i] if i < len(BUTTON_STYLES) else "") for i, label in enumerate(req.review_options())
        ]
    if req.request == "escalate":
        return [("Resolve", "warning")]
    return []


def _chosen(req: HumanRequest, value: Any) -> str | None:
    if req.request == "approve":
        return "Approve" if value else "Reject"
    if req.request == "review":
        return str(value.get("decision")) if isinstance(value, dict) else str(value)
    if req.request == "escalate":
        return "Resolve"
    return None


def answer_color(req: HumanRequest, value: Any, state: str) -> str:
    """Approved green, Rejected red, a timeout or a stop amber."""
    if state in ("timed_out", "stopped"):
        return WARN
    chosen = _chosen(req, value)
    for label, style in _options(req):
        if label == chosen:
            return STYLE_COLORS[style]
    return SUCCESS


def _choice_row(req: HumanRequest, value: Any) -> str:
    """The card's buttons as they were clicked: the chosen one filled and
    ticked, the others faded, so one sees at a glance what was chosen."""
    chosen = _chosen(req, value)
    pills = []
    for label, style in _options(req):
        color = STYLE_COLORS[style]
        if label == chosen:
            pills.append(
                f"<span class='tactus-chosen' style='display:inline-block;padding:2px 10px;margin-right:6px;"
                f"border:1px solid {color};border-radius:2px;background:{color};color:{INVERSE};"
                f"font-weight:600'>✓ {html.escape(label)}</span>"
            )
        else:
            pills.append(
                f"<span style='display:inline-block;padding:2px 10px;margin-right:6px;"
                f"border:1px dashed {BORDER};border-radius:2px;color:{FONT2};opacity:0.7'>"
                f"{html.escape(label)}</span>"
            )
    return f"<div style='margin:2px 0 4px'>{''.join(pills)}</div>" if pills else ""


def _details_html(req: HumanRequest, value: Any) -> str:
    """What was typed: an input's answer, a review's feedback and edits."""
    box = f"margin:2px 0 4px;padding:4px 8px;background:{LAYOUT2};color:{FONT1};border-radius:2px;white-space:pre-wrap"
    if req.request == "input":
        text = value if isinstance(value, str) else _json(value)
        return f"<div class='tactus-answer' style='{box}'>{html.escape(text)}</div>"
    if req.request != "review" or not isinstance(value, dict):
        return ""
    parts = []
    if value.get("feedback"):
        parts.append(
            f"<div style='color:{FONT2};font-size:0.85em'>Feedback</div>"
            f"<div class='tactus-feedback' style='{box}'>{html.escape(str(value['feedback']))}</div>"
        )
    edited = value.get("edited_artifact")
    original = (
        req.artifact
        if isinstance(req.artifact, str)
        else (None if req.artifact is None else json.dumps(req.artifact, indent=2, ensure_ascii=False))
    )
    if edited is not None and edited != original:
        parts.append(
            f"<div style='color:{FONT2};font-size:0.85em'>Edited artifact</div>"
            f"<pre class='tactus-artifact' style='{box};max-height:16em;overflow:auto;font-size:0.9em'>"
            f"{html.escape(str(edited))}</pre>"
        )
    return "".join(parts)


# --------------------------------------------------------- static cards
def status_line(req: HumanRequest, state: str, value: Any, at: str | None) -> str:
    """``Approved at 2026-05-12 03:13:26 UTC``; a timeout names the default
    it returned."""
    when = clock(at, date=True)
    if state == "timed_out":
        if req.on_timeout == "default":
            return f"Timed out at {when}; returned the default {_json(value)}"
        if req.on_timeout == "retry":
            return f"Timed out at {when}; asked again below"
        return f"Timed out at {when}; the procedure stopped with HumanTimeout"
    if state == "stopped":
        return f"No longer waiting (stopped at {when})"
    return f"{answer_text(req, value)} at {when}"


def static_card(
    req: HumanRequest, state: str, value: Any, at: str | None, index: int | None, cell_id: str | None
) -> dict[str, Any]:
    """The saved form of a card: what was asked, the answer and its time.

    ``state`` is ``answered``, ``recorded`` (replayed from the notebook),
    ``timed_out`` or ``stopped``. The JSON part is read by the lab
    extension's card renderer (which adds "Ask again"); keep its shape.
    """
    at = at or iso()
    line = status_line(req, state, value, at)
    if state == "recorded":
        line += " (recorded)"
    color = answer_color(req, value, state)
    answered = state in ("answered", "recorded") or (state == "timed_out" and req.on_timeout == "default")
    title = TITLES.get(req.request, "Request")
    body = header_html(title, req.message, req.context, color, sub=where(req, cell_id))
    if state in ("answered", "recorded"):
        body += _choice_row(req, value) + _details_html(req, value)
    body += (
        f"<div class='tactus-status tactus-status-{state}' style='color:{color};font-weight:700'>"
        f"{html.escape(line)}</div>"
    )
    plain = f"[Tactus] {req.message} -> {line}"
    if state == "recorded":
        body += (
            f"<div style='color:{FONT2};font-size:0.85em'>recorded · to ask again use Ask again in "
            f"JupyterLab, or <code>%tactus reset {html.escape(req.key or req.procedure)}</code> and run the cell</div>"
        )
        plain += f"\n  to ask again: %tactus reset {req.key or req.procedure}, then run the cell"
    card = {
        "version": VERSION,
        "state": state,
        "request": req.request,
        "procedure": req.key or req.procedure,  # the record's key: Ask again resets it
        "name": req.name,
        "message": req.message,
        "context": req.context,
        "answer": value if answered else None,
        "answer_text": answer_text(req, value, timed_out=state == "timed_out") if answered else line,
        "at": at,
        "index": index,
        "cell_id": cell_id,
    }
    return {"text/html": frame_html(body, color, state), "text/plain": plain, MIME: card}


def waiting_text(req: HumanRequest, since: str) -> str:
    """What a frontend without widgets shows for a waiting card: what is
    asked, that it waits, and how to answer without widgets."""
    lines = [f"[Tactus] {TITLES.get(req.request, 'Request')} ({req.procedure}): {req.message}"]
    if req.context not in (None, {}, []):
        lines.append("  context: " + _json(req.context))
    if req.request in ("approve", "escalate"):
        value = "true"
    elif req.request == "review":
        value = (req.review_options() or ["Approve"])[0]
    else:
        value = "your answer"
    hint = value if value == "true" else _json(value)
    waits = f"  Waiting for an answer since {clock(since)}"
    if req.timeout is not None:
        waits += f" (times out after {req.timeout:g}s)"
    name = _json(req.name)
    lines += [
        waits + ". Answer it on the card in JupyterLab or Notebook 7. Without widgets:",
        f"  - in a terminal frontend (jupyter console): run %tactus answer {name} {hint}, then run this cell again",
        f"  - CI: tactus-kernel replay NOTEBOOK --answer {_json(req.name + '=' + value)}",
    ]
    return "\n".join(lines)


def no_widgets_message(req: HumanRequest) -> str:
    """The error of a request nobody can answer: no frontend here shows widgets."""
    answer = f"{json.dumps(req.name, ensure_ascii=False)} {_answer_hint(req)}"
    procedure = json.dumps(req.key or req.procedure, ensure_ascii=False)
    return (
        f"procedure {procedure}: {req.describe()} has no "
        "recorded answer, and no frontend that shows cards is connected (nbconvert, papermill and nbclient "
        "cannot show widgets). Answer it in JupyterLab and save the notebook, or replay with "
        f"`tactus-kernel replay NOTEBOOK --answer {json.dumps(req.name + '=VALUE', ensure_ascii=False)}`; "
        f"in a terminal frontend, run `%tactus answer {answer}` and run this cell again"
    )


def _answer_hint(req: HumanRequest) -> str:
    """An example answer for ``%tactus answer`` of this kind of request."""
    if req.request == "approve":
        return "true"
    if req.request == "review":
        return json.dumps((req.review_options() or ["Approve"])[0])
    if req.request == "escalate":
        return "resolved"
    return '"your answer"'


# ---------------------------------------------------------- live cards
def _close_tree(root: Any) -> int:
    """Close a widget and every widget it holds (children, layouts, styles),
    so their comms go and the kernel forgets them; returns how many."""
    from ipywidgets import Widget

    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        for name in widget.keys:
            value = getattr(widget, name, None)
            if isinstance(value, Widget):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(v for v in value if isinstance(v, Widget))
        widget.close()
    return len(seen)


class Card:
    """One waiting request: its widgets, its future, its ticking status line."""

    def __init__(self, req: HumanRequest, screen: Screen, cell_id: str | None = None) -> None:
        self.req = req
        self.screen = screen
        self.cell_id = cell_id
        self.display_id = f"tactus-card-{uuid.uuid4().hex}"
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.started = time.monotonic()
        self.since = iso()
        self.settled = False
        self.texts: list[Any] = []  # text boxes, whose last keys may still be on their way
        self._answering: Callable[[], Any] | None = None
        self._quiet: asyncio.TimerHandle | None = None
        w = _w()
        color = COLORS.get(req.severity, WARN) if req.request == "escalate" else BRAND
        self.header = w.HTML(header_html(TITLES[req.request], req.message, req.context, color, sub=where(req, cell_id)))
        self.status = w.HTML(self._status_text())
        self.controls: list[Any] = []
        body = self._build(w)
        for text in self.texts:
            text.observe(self._typed, "value")
        self.box = w.VBox(
            [self.header, *body, self.status],
            layout=w.Layout(
                border=f"1px solid {BORDER}", border_left=f"4px solid {color}", padding="6px 10px", margin="4px 0"
            ),
        )
        self.box.add_class("tactus-card")
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = waiting_text(req, self.since)
        screen.display(bundle, display_id=self.display_id)

    # -------------------------------------------------------------- layout
    def _button(self, w: Any, label: str, style: str, make_value: Callable[[], Any]) -> Any:
        b = w.Button(description=label, button_style=style)
        b.on_click(lambda button: self._answer(make_value, button))
        self.controls.append(b)
        return b

    def _build(self, w: Any) -> list[Any]:
        req = self.req
        if req.request == "approve":
            return [
                w.HBox(
                    [
                        self._button(w, "Approve", "success", lambda: True),
                        self._button(w, "Reject", "danger", lambda: False),
                    ]
                )
            ]
        if req.request == "input":
            if req.options:
                labels = [str(o.get("label", o.get("value")) if isinstance(o, dict) else o) for o in req.options]
                values = [o.get("value", o.get("label")) if isinstance(o, dict) else o for o in req.options]
                choice = w.Dropdown(
                    options=list(zip(labels, values, strict=True)),
                    value=req.default if req.default in values else values[0],
                )
                self.controls.append(choice)
                return [w.HBox([choice, self._button(w, "Submit", "primary", lambda: choice.value)])]
            one_line = not (req.multiline or len(req.placeholder) > 60)
            cls = w.Text if one_line else w.Textarea
            box = cls(
                placeholder=req.placeholder,
                value="" if req.default is None else str(req.default),
                layout=w.Layout(width="60%"),
            )
            self.controls.append(box)
            self.texts.append(box)
            if one_line:
                # Enter sends a "submit" event (ipywidgets 8, where on_submit is deprecated)
                def on_msg(_widget: Any, content: dict[str, Any], _buffers: Any) -> None:
                    if content.get("event") == "submit":
                        self._answer(lambda: box.value, None)

                box.on_msg(on_msg)
            return [w.HBox([box, self._button(w, "Submit", "primary", lambda: box.value)])]
        if req.request == "review":
            parts: list[Any] = []
            artifact = req.artifact
            edit = None
            if artifact is not None:
                text = artifact if isinstance(artifact, str) else json.dumps(artifact, indent=2, ensure_ascii=False)
                kind = f" ({req.artifact_type})" if req.artifact_type else ""
                edit = w.Textarea(value=text, layout=w.Layout(width="95%", height="8em"))
                self.controls.append(edit)
                self.texts.append(edit)
                parts += [w.HTML(_label(f"Artifact{kind}: edit it here if needed")), edit]
            feedback = w.Textarea(placeholder="Feedback (optional)", layout=w.Layout(width="95%"))
            self.controls.append(feedback)
            self.texts.append(feedback)
            parts += [w.HTML(_label("Feedback")), feedback]

            def decide(label: str) -> Callable[[], Any]:
                return lambda: {
                    "decision": label,
                    "feedback": feedback.value,
                    "edited_artifact": edit.value if edit is not None else None,
                    "responded_at": _utc().strftime("%Y-%m-%dT%H:%M:%SZ"),
                }

            parts.append(w.HBox([self._button(w, label, style, decide(label)) for label, style in _options(req)]))
            return parts
        return [w.HBox([self._button(w, label, style, lambda: True) for label, style in _options(req)])]

    # ------------------------------------------------------------ answering
    def _answer(self, make_value: Callable[[], Any], button: Any) -> None:
        """A click (or Enter): the answer, once the typed text has arrived.

        The ipywidgets frontend sends a click or an Enter at once, but holds
        a text box's latest change until the kernel has said idle for the
        one before: a quick typist's last keys can arrive just after the
        Enter. So a card with text boxes answers once they have been quiet
        for TYPING_GRACE seconds; a change meanwhile restarts the wait.
        """
        if threading.get_ident() != self.thread:
            # a comm handled in another thread (a kernel subshell): futures belong to their loop
            self.loop.call_soon_threadsafe(self._answer, make_value, button)
            return
        if self.future.done() or self._answering is not None:
            return  # a second click changes nothing
        # Until the static card replaces it: the chosen button ticked, the rest disabled.
        if button is not None:
            button.icon = "check"
        for c in self.controls:
            c.disabled = True
        if not self.texts:
            self.future.set_result(make_value())
            return
        self._answering = make_value
        self._quiet = self.loop.call_later(TYPING_GRACE, self._commit)

    def _typed(self, _change: Any) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = self.loop.call_later(TYPING_GRACE, self._commit)

    def _commit(self) -> None:
        self._quiet = None
        if self._answering is not None and not self.future.done():
            self.future.set_result(self._answering())

    def _status_text(self) -> str:
        waited = int(time.monotonic() - self.started)
        text = f"Waiting for an answer since {clock(self.since)} · {waited}s"
        if self.req.timeout is not None:
            left = max(0, int(self.req.timeout - (time.monotonic() - self.started)))
            text += f" · times out in {left}s"
        return f"<span style='color:{FONT2};font-size:0.85em'>{text}</span>"

    def timed_out(self) -> bool:
        timeout = self.req.timeout
        return timeout is not None and time.monotonic() - self.started >= timeout - 0.5

    async def wait(self) -> Any:
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(self.future), 1.0)
                except TimeoutError:
                    self.status.value = self._status_text()
        finally:
            if self._quiet is not None:
                self._quiet.cancel()
            if not self.future.done():
                self.future.cancel()
            for c in self.controls:
                c.disabled = True

    def settle(self, state: str, value: Any = None, at: str | None = None, index: int | None = None) -> None:
        """Replace the live card by its static form, then close its widgets."""
        if self.settled:
            return
        self.settled = True
        self.screen.update_display(static_card(self.req, state, value, at, index, self.cell_id), self.display_id)
        _close_tree(self.box)


def answered(req: HumanRequest, entry: dict[str, Any], screen: Screen, index: int | None, cell_id: str | None) -> None:
    """A replayed request: the recorded answer, shown static (the lab
    extension's card renderer adds "Ask again")."""
    screen.display(static_card(req, "recorded", entry.get("value"), str(entry.get("at") or "") or None, index, cell_id))


def notice(n: dict[str, Any], screen: Screen) -> None:
    """A non-blocking Human.notify / System.alert card (plain HTML, no widgets)."""
    title = ("Notice" if n["kind"] == "notify" else "Alert") + f" · {n['level']}"
    if n.get("source"):
        title += f" · from {n['source']}"
    color = COLORS.get(n["level"], INFO)
    at = str(n.get("at", ""))
    when = at if not at or at.endswith("UTC") else f"{at} UTC"
    screen.display(
        {
            "text/html": frame_html(
                header_html(title, n["message"], n.get("context"), color, sub=when), color, "notice"
            ),
            "text/plain": f"[{title}] {n['message']}" + (f" {_json(n['context'])}" if n.get("context") else ""),
        }
    )
