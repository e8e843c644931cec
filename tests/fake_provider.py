"""A fake model provider on 127.0.0.1, speaking the providers' own HTTP APIs.

The kernel's agents reach it through pydantic-ai's real OpenAI and
Anthropic models and the real provider SDKs (no ``TestModel``), so the
whole HTTP path is tested offline: request building, streaming (SSE),
tool calls, structured output, and the errors a provider sends.

Three APIs, each streamed (server-sent events) and not:

- OpenAI Chat Completions: ``POST /v1/chat/completions``
- OpenAI Responses: ``POST /v1/responses`` (pydantic-ai's ``OpenAIResponsesModel``)
- Anthropic Messages: ``POST /v1/messages``

A test scripts the replies, one per request, in order (:meth:`FakeProvider.script`):
:func:`text`, :func:`tool_call`, :func:`output` (the output tool pydantic-ai
offers), :func:`error` (the provider's own error JSON for that status) and
:func:`hang` (no answer: for timeouts). Every request is kept
(:attr:`FakeProvider.requests`), so a test can count them. A request with
nothing left in the script gets a 500 that says so.

The wire formats are those the SDKs parse (``openai.types.chat``,
``openai.types.responses``, ``anthropic.types``), written here from their
documented shapes: only the fields a client reads, plus the required ones.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
CREATED = 1_700_000_000
USAGE = {"input": 11, "output": 7}


# ------------------------------------------------------------------ replies
@dataclass(frozen=True)
class Reply:
    """One scripted answer to one request."""

    kind: str  # text, tool, output, error, hang
    text: str = ""
    chunks: tuple[str, ...] = ()  # how a streamed text is cut (default: word by word)
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    seconds: float = 0.0


def text(content: str, chunks: list[str] | None = None) -> Reply:
    """A plain text answer; streamed word by word unless ``chunks`` says how."""
    if chunks is None:
        words = content.split(" ")
        chunks = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
    assert "".join(chunks) == content, "the chunks must make up the text"
    return Reply("text", text=content, chunks=tuple(chunks))


def tool_call(name: str, args: dict[str, Any] | None = None) -> Reply:
    """The model calls tool ``name`` with ``args``."""
    return Reply("tool", name=name, args=dict(args or {}))


def output(data: dict[str, Any]) -> Reply:
    """Structured output: a call of the output tool the request offers
    (pydantic-ai's ``final_result``), with ``data`` as its arguments."""
    return Reply("output", args=dict(data))


def error(status: int, message: str) -> Reply:
    """An HTTP error with the provider's own error body for ``status``."""
    return Reply("error", status=status, text=message)


def hang(seconds: float = 30.0) -> Reply:
    """Read the request and answer nothing for ``seconds`` (or until the server stops)."""
    return Reply("hang", seconds=seconds)


# The provider's error type (and OpenAI's code) for a status.
OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Seen:
    """A request the server received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def tool_names(self) -> list[str]:
        """The tools the request offers, whatever the API's shape."""
        names = []
        for tool in self.body.get("tools") or []:
            names.append(tool["function"]["name"] if "function" in tool else tool["name"])
        return names


# ------------------------------------------------------------------ server
class FakeProvider:
    """The server. ``with FakeProvider() as fake:`` or :meth:`start` / :meth:`stop`."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.replies: deque[Reply] = deque()
        self.chunk_delay = 0.0  # seconds between streamed text chunks
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -------------------------------------------------------------- life
    def start(self) -> FakeProvider:
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-provider", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: hanging requests are dropped, the port is closed."""
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self.server is not None, "the fake provider is not running"
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The server's root (Anthropic's base URL: its SDK adds ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """OpenAI's base URL (its SDK adds ``/chat/completions``, ``/responses``)."""
        return self.url + "/v1"

    # ------------------------------------------------------------ script
    def script(self, *replies: Reply) -> None:
        """Replace the replies still to give, and forget the requests seen."""
        with self.lock:
            self.replies = deque(replies)
            self.requests.clear()

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def _next(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            if self.replies:
                return self.replies.popleft()
        return error(500, f"fake provider: no scripted reply left for request {len(self.requests)} ({seen.path})")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------- handler
class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    protocol_version = "HTTP/1.0"  # one request per connection: a stream ends when the connection closes

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        path = self.path.split("?", 1)[0]
        seen = Seen(path, json.loads(raw or b"{}"), {k.lower(): v for k, v in self.headers.items()})
        if path not in (CHAT, RESPONSES, MESSAGES):
            self._json(404, {"error": {"message": f"fake provider: no route {path}", "type": "invalid_request_error"}})
            return
        reply = self.fake._next(seen)
        if reply.kind == "hang":
            self.fake.stopping.wait(reply.seconds)
            return  # the connection closes without an answer
        if reply.kind == "error":
            self._error(path, reply)
            return
        api = {CHAT: ChatAPI, RESPONSES: ResponsesAPI, MESSAGES: MessagesAPI}[path]
        reply = _resolve(reply, seen)
        model = str(seen.body.get("model", "fake-model"))
        if seen.stream:
            self._sse(api.stream(reply, model), api.NAMED_EVENTS)
        else:
            self._json(200, api.complete(reply, model))

    # ------------------------------------------------------------ writing
    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[dict[str, Any] | str, bool]], named: bool) -> None:
        """Write server-sent events; ``(event, paced)``: paced ones wait ``chunk_delay`` first."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for event, paced in events:
            if paced and self.fake.chunk_delay:
                time.sleep(self.fake.chunk_delay)
            if isinstance(event, str):  # OpenAI's closing "[DONE]"
                line = f"data: {event}\n\n"
            elif named:  # the Responses and Messages APIs name each event
                line = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            else:
                line = f"data: {json.dumps(event)}\n\n"
            self.wfile.write(line.encode())
            self.wfile.flush()

    def _error(self, path: str, reply: Reply) -> None:
        # retry-after-ms: the SDKs' retries wait 10 ms instead of their backoff, so tests stay fast
        headers = {"retry-after-ms": "10"} if reply.status in (408, 409, 429) or reply.status >= 500 else {}
        if path == MESSAGES:
            kind = ANTHROPIC_ERRORS.get(reply.status, "api_error")
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": reply.text}}
            headers["request-id"] = "req_fake"
        else:
            kind, code = OPENAI_ERRORS.get(reply.status, ("server_error", None))
            body = {"error": {"message": reply.text, "type": kind, "param": None, "code": code}}
        self._json(reply.status, body, headers)


def _resolve(reply: Reply, seen: Seen) -> Reply:
    """An ``output`` reply becomes a call of the output tool the request offers."""
    if reply.kind != "output":
        return reply
    names = [n for n in seen.tool_names() if n.startswith("final_result")]
    if not names:
        raise AssertionError(f"output() scripted, but the request offers no output tool: {seen.tool_names()}")
    return tool_call(names[0], reply.args)


def _args(reply: Reply) -> str:
    return json.dumps(reply.args)


# ---------------------------------------------------- OpenAI Chat Completions
class ChatAPI:
    NAMED_EVENTS = False

    @staticmethod
    def complete(reply: Reply, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if reply.kind == "text":
            message["content"] = reply.text
            finish = "stop"
        else:
            message["tool_calls"] = [
                {"id": "call_1", "type": "function", "function": {"name": reply.name, "arguments": _args(reply)}}
            ]
            finish = "tool_calls"
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _chat_usage(),
        }

    @staticmethod
    def stream(reply: Reply, model: str) -> list[tuple[dict[str, Any] | str, bool]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }

        events: list[tuple[dict[str, Any] | str, bool]] = [(chunk({"role": "assistant", "content": ""}), False)]
        if reply.kind == "text":
            events += [(chunk({"content": piece}), True) for piece in reply.chunks]
            finish = "stop"
        else:
            start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": reply.name, "arguments": ""}}
            events.append((chunk({"tool_calls": [start]}), False))
            events.append((chunk({"tool_calls": [{"index": 0, "function": {"arguments": _args(reply)}}]}), False))
            finish = "tool_calls"
        events.append((chunk({}, finish), False))
        usage = {**chunk({}), "choices": [], "usage": _chat_usage()}  # stream_options.include_usage
        events += [(usage, False), ("[DONE]", False)]
        return events


def _chat_usage() -> dict[str, int]:
    return {
        "prompt_tokens": USAGE["input"],
        "completion_tokens": USAGE["output"],
        "total_tokens": USAGE["input"] + USAGE["output"],
    }


# ------------------------------------------------------- OpenAI Responses
class ResponsesAPI:
    NAMED_EVENTS = True

    @staticmethod
    def _item(reply: Reply) -> dict[str, Any]:
        if reply.kind == "text":
            return {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
            }
        return {
            "type": "function_call",
            "id": "fc_fake",
            "call_id": "call_1",
            "name": reply.name,
            "arguments": _args(reply),
            "status": "completed",
        }

    @staticmethod
    def _response(model: str, output: list[dict[str, Any]], status: str) -> dict[str, Any]:
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": None,
            "error": None,
            "usage": {
                "input_tokens": USAGE["input"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": USAGE["output"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": USAGE["input"] + USAGE["output"],
            }
            if status == "completed"
            else None,
        }

    @classmethod
    def complete(cls, reply: Reply, model: str) -> dict[str, Any]:
        return cls._response(model, [cls._item(reply)], "completed")

    @classmethod
    def stream(cls, reply: Reply, model: str) -> list[tuple[dict[str, Any] | str, bool]]:
        seq = iter(range(1000))
        item = cls._item(reply)

        def ev(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "sequence_number": next(seq), **fields}

        events: list[tuple[dict[str, Any] | str, bool]] = [
            (ev("response.created", response=cls._response(model, [], "in_progress")), False)
        ]
        if reply.kind == "text":
            empty = {**item, "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            events += [
                (ev("response.output_item.added", output_index=0, item=empty), False),
                (ev("response.content_part.added", part=part, **where), False),
            ]
            events += [(ev("response.output_text.delta", delta=p, logprobs=[], **where), True) for p in reply.chunks]
            events += [
                (ev("response.output_text.done", text=reply.text, logprobs=[], **where), False),
                (ev("response.content_part.done", part=item["content"][0], **where), False),
            ]
        else:
            where = {"item_id": item["id"], "output_index": 0}
            events += [
                (ev("response.output_item.added", output_index=0, item={**item, "arguments": ""}), False),
                (ev("response.function_call_arguments.delta", delta=item["arguments"], **where), False),
                (ev("response.function_call_arguments.done", arguments=item["arguments"], **where), False),
            ]
        events += [
            (ev("response.output_item.done", output_index=0, item=item), False),
            (ev("response.completed", response=cls._response(model, [item], "completed")), False),
        ]
        return events


# ------------------------------------------------------ Anthropic Messages
class MessagesAPI:
    NAMED_EVENTS = True

    @staticmethod
    def _block(reply: Reply) -> dict[str, Any]:
        if reply.kind == "text":
            return {"type": "text", "text": reply.text}
        return {"type": "tool_use", "id": "toolu_fake", "name": reply.name, "input": reply.args}

    @classmethod
    def complete(cls, reply: Reply, model: str) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [cls._block(reply)],
            "stop_reason": "end_turn" if reply.kind == "text" else "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"]},
        }

    @classmethod
    def stream(cls, reply: Reply, model: str) -> list[tuple[dict[str, Any] | str, bool]]:
        start = {**cls.complete(reply, model), "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": USAGE["input"], "output_tokens": 1}
        events: list[tuple[dict[str, Any] | str, bool]] = [({"type": "message_start", "message": start}, False)]
        if reply.kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in reply.chunks]
        else:
            block = {**cls._block(reply), "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": _args(reply)}]
        events.append(({"type": "content_block_start", "index": 0, "content_block": block}, False))
        events += [({"type": "content_block_delta", "index": 0, "delta": d}, reply.kind == "text") for d in deltas]
        events += [
            ({"type": "content_block_stop", "index": 0}, False),
            (
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn" if reply.kind == "text" else "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": USAGE["output"]},
                },
                False,
            ),
            ({"type": "message_stop"}, False),
        ]
        return events
