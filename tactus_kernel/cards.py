"""The cards a cell shows when a procedure asks a person (ipywidgets 8).

A waiting card holds the buttons; one click resolves the future the
procedure's effect is awaiting (ipykernel delivers the click while the cell
runs), then the card turns into a record of the answer with its controls
disabled, so a second click changes nothing. ipywidgets is imported on the
first card, so a kernel that never asks anyone starts faster.

Every card also has a text/plain form for frontends without widgets,
saying what is asked and how to answer without them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .primitives.human import HumanRequest

COLORS = {"info": "#2f6fb3", "warning": "#b7791f", "error": "#c53030", "critical": "#822727",
          "ask": "#4a5568", "done": "#2f855a", "low": "#2f6fb3", "medium": "#b7791f", "high": "#c53030"}
TITLES = {"approve": "Approval needed", "input": "Input needed", "review": "Review needed",
          "escalate": "Escalation"}


def _w() -> Any:
    import ipywidgets

    return ipywidgets


def _clock() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def _context_html(context: Any) -> str:
    if context in (None, {}, []):
        return ""
    if isinstance(context, dict):
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
            f"<td>{html.escape(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))}</td></tr>"
            for k, v in context.items()
        )
        return f"<table class='tactus-context'>{rows}</table>"
    return f"<pre>{html.escape(json.dumps(context, indent=2, ensure_ascii=False))}</pre>"


def header_html(title: str, message: str, context: Any, color: str, sub: str = "") -> str:
    return (
        f"<div style='border-left:4px solid {color};padding:4px 10px'>"
        f"<div style='font-size:0.85em;color:{color};font-weight:600'>{html.escape(title)}"
        f"{(' · ' + html.escape(sub)) if sub else ''}</div>"
        f"<div style='font-size:1.05em;margin:2px 0 4px'>{html.escape(message)}</div>"
        f"{_context_html(context)}</div>"
    )


def answer_text(req: HumanRequest, value: Any, timed_out: bool = False) -> str:
    """``Approved`` / ``Answered "Ada"`` ...: what a finished card says."""
    if timed_out:
        return f"Timed out; used the default ({json.dumps(value, ensure_ascii=False)})"
    if req.request == "approve":
        return "Approved" if value else "Rejected"
    if req.request == "input":
        return f"Answered {json.dumps(value, ensure_ascii=False)}"
    if req.request == "review":
        decision = value.get("decision") if isinstance(value, dict) else value
        return f"Reviewed: {decision}"
    return "Resolved"


def plain_text(req: HumanRequest) -> str:
    """What a frontend without widgets shows instead of the card."""
    lines = [f"[Tactus] {TITLES.get(req.request, 'Request')} (procedure {req.procedure!r}): {req.message}"]
    if req.context not in (None, {}, []):
        lines.append("  context: " + json.dumps(req.context, ensure_ascii=False))
    lines.append(
        "  This frontend cannot show widgets. To answer: interrupt the kernel, run a cell with\n"
        f"  %tactus answer {json.dumps(req.name, ensure_ascii=False)} {_answer_hint(req)}\n"
        "  and run this cell again."
    )
    return "\n".join(lines)


def no_widgets_message(req: HumanRequest) -> str:
    """The error of a request nobody can answer: no frontend here shows widgets."""
    answer = f"{json.dumps(req.name, ensure_ascii=False)} {_answer_hint(req)}"
    return (
        f"NoRecordedAnswer: procedure {json.dumps(req.procedure, ensure_ascii=False)}: {req.describe()} has no "
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


class Card:
    """One waiting request: its widgets, its future, its ticking status line."""

    def __init__(self, req: HumanRequest, display: Callable[[dict[str, Any]], None]) -> None:
        self.req = req
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.started = time.monotonic()
        w = _w()
        self.header = w.HTML(header_html(TITLES[req.request], req.message, req.context,
                                         COLORS.get(req.severity, COLORS["ask"]) if req.request == "escalate"
                                         else COLORS["ask"], sub=f"procedure {req.procedure}"))
        self.status = w.HTML(self._status_text())
        self.controls: list[Any] = []
        self.value_widgets: dict[str, Any] = {}
        body = self._build(w)
        self.box = w.VBox([self.header, *body, self.status],
                          layout=w.Layout(border="1px solid #d0d7de", padding="6px", margin="4px 0"))
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = plain_text(req)
        display(bundle)

    # -------------------------------------------------------------- layout
    def _button(self, w: Any, label: str, style: str, on_click: Callable[[], Any]) -> Any:
        b = w.Button(description=label, button_style=style)
        b.on_click(lambda _btn: self._answer(on_click))
        self.controls.append(b)
        return b

    def _build(self, w: Any) -> list[Any]:
        req = self.req
        if req.request == "approve":
            return [w.HBox([self._button(w, "Approve", "success", lambda: True),
                            self._button(w, "Reject", "danger", lambda: False)])]
        if req.request == "input":
            if req.options:
                labels = [str(o.get("label", o.get("value")) if isinstance(o, dict) else o) for o in req.options]
                values = [o.get("value", o.get("label")) if isinstance(o, dict) else o for o in req.options]
                choice = w.Dropdown(options=list(zip(labels, values, strict=True)),
                                    value=req.default if req.default in values else values[0])
                self.controls.append(choice)
                return [w.HBox([choice, self._button(w, "Submit", "primary", lambda: choice.value)])]
            cls = w.Textarea if req.multiline or len(req.placeholder) > 60 else w.Text
            box = cls(placeholder=req.placeholder, value="" if req.default is None else str(req.default),
                      layout=w.Layout(width="60%"))
            self.controls.append(box)
            self.value_widgets["text"] = box
            return [w.HBox([box, self._button(w, "Submit", "primary", lambda: box.value)])]
        if req.request == "review":
            parts: list[Any] = []
            artifact = req.artifact
            edit = None
            if artifact is not None:
                text = artifact if isinstance(artifact, str) else json.dumps(artifact, indent=2, ensure_ascii=False)
                edit = w.Textarea(value=text, layout=w.Layout(width="95%", height="8em"),
                                  description="Artifact" + (f" ({req.artifact_type})" if req.artifact_type else ""))
                self.controls.append(edit)
                parts.append(edit)
            feedback = w.Textarea(placeholder="Feedback (optional)", layout=w.Layout(width="95%"))
            self.controls.append(feedback)
            parts.append(feedback)

            def decide(label: str) -> Callable[[], Any]:
                return lambda: {"decision": label, "feedback": feedback.value,
                                "edited_artifact": edit.value if edit is not None else None,
                                "responded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace(
                                    "+00:00", "Z")}

            styles = ["success", "danger", "warning", "info", ""]
            buttons = [self._button(w, label, styles[i] if i < len(styles) else "", decide(label))
                       for i, label in enumerate(req.review_options())]
            parts.append(w.HBox(buttons))
            return parts
        return [w.HBox([self._button(w, "Resolve", "warning", lambda: True)])]

    # ------------------------------------------------------------ answering
    def _answer(self, make_value: Callable[[], Any]) -> None:
        if self.future.done():
            return  # a second click changes nothing
        self.future.set_result(make_value())

    def _status_text(self, extra: str = "") -> str:
        waited = int(time.monotonic() - self.started)
        text = f"Waiting for an answer · {waited}s"
        if self.req.timeout is not None:
            left = max(0, int(self.req.timeout - (time.monotonic() - self.started)))
            text += f" · times out in {left}s"
        return f"<span style='color:#57606a;font-size:0.85em'>{text}{extra}</span>"

    def finish(self, text: str, color: str) -> None:
        for c in self.controls:
            c.disabled = True
        self.status.value = f"<span style='color:{color};font-weight:600'>{html.escape(text)}</span>"

    async def wait(self) -> Any:
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(self.future), 1.0)
                except TimeoutError:
                    self.status.value = self._status_text()
        finally:
            if self.future.done() and not self.future.cancelled():
                self.finish(f"{answer_text(self.req, self.future.result())} at {_clock()}", COLORS["done"])
            else:
                self.future.cancel()
                timeout = self.req.timeout
                if timeout is not None and time.monotonic() - self.started >= timeout - 0.5:
                    self.finish(f"Timed out at {_clock()}", COLORS["warning"])
                else:
                    self.finish(f"No longer waiting (stopped at {_clock()})", COLORS["warning"])


async def ask(req: HumanRequest, display: Callable[[dict[str, Any]], None]) -> Any:
    """Show a card for `req` and return the answer once someone clicks."""
    return await Card(req, display).wait()


def answered(req: HumanRequest, entry: dict[str, Any], display: Callable[[dict[str, Any]], None],
             forget: Callable[[], bool], widgets: bool) -> None:
    """A replayed request: the recorded answer, and a way to ask again."""
    when = str(entry.get("at", ""))[11:19]
    text = f"{answer_text(req, entry.get('value'), bool(entry.get('timed_out')))} at {when} UTC (recorded)"
    head = header_html(TITLES[req.request], req.message, req.context, COLORS["done"],
                       sub=f"procedure {req.procedure} · replayed")
    plain = f"[Tactus] {req.message} -> {text}"
    if not widgets:
        display({"text/html": head + f"<div style='color:{COLORS['done']};padding-left:14px'>"
                 f"{html.escape(text)}</div>", "text/plain": plain})
        return
    w = _w()
    status = w.HTML(f"<span style='color:{COLORS['done']};font-weight:600'>{html.escape(text)}</span>")
    again = w.Button(description="Ask again", tooltip="Forget this answer and every later record of the procedure")

    def on_again(_b: Any) -> None:
        again.disabled = True
        if forget():
            status.value = ("<span style='color:#b7791f'>Forgotten: run the cell again to be asked anew.</span>")
        else:
            status.value = "<span style='color:#57606a'>Already forgotten.</span>"

    again.on_click(on_again)
    box = w.VBox([w.HTML(head), w.HBox([status, again])],
                 layout=w.Layout(border="1px solid #d0d7de", padding="6px", margin="4px 0"))
    bundle = box._repr_mimebundle_()
    bundle["text/plain"] = plain
    display(bundle)


def notice(n: dict[str, Any], display: Callable[[dict[str, Any]], None]) -> None:
    """A non-blocking Human.notify / System.alert card (plain HTML, no widgets)."""
    title = ("Notice" if n["kind"] == "notify" else "Alert") + f" · {n['level']}"
    if n.get("source"):
        title += f" · from {n['source']}"
    color = COLORS.get(n["level"], COLORS["info"])
    display({"text/html": header_html(title, n["message"], n.get("context"), color, sub=str(n.get("at", ""))),
             "text/plain": f"[{title}] {n['message']}"
             + (f" {json.dumps(n['context'], ensure_ascii=False)}" if n.get("context") else "")})
