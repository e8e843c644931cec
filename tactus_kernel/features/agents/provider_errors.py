"""What a provider's failure means, in one line a notebook user can act on.

pydantic-ai turns the provider SDKs' exceptions into its own
(``ModelHTTPError``, ``ModelConnectionError``, ``ModelTimeoutError``, ...),
keeping the body the provider sent. The bodies differ by provider:

- the OpenAI SDK hands over the error object itself,
  ``{"message": ..., "type": ..., "code": ...}`` (it unwraps the
  ``{"error": {...}}`` the server sent);
- the Anthropic SDK hands over the whole body,
  ``{"type": "error", "error": {"type": ..., "message": ...}}``;
- other providers and proxies send ``{"error": "text"}``, ``{"message": ...}``,
  ``{"detail": ...}`` or plain text.

:func:`describe` finds the provider's own message in any of these, so the
error shows it (not ``None``, not a Python dict), with the HTTP status; a
connection or timeout error names the base URL that was tried, since a
wrong ``base_url`` / ``OPENAI_BASE_URL`` is the usual cause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelRequestTimeout,
    ModelTimeoutError,
)

MAX_DETAIL = 500  # characters of a body with no message of its own


@dataclass(frozen=True)
class ProviderFailure:
    """One failed request to a model provider, as data.

    ``kind`` is ``"http"`` (the provider answered with an error status),
    ``"timeout"`` (no answer in time), ``"connection"`` (not reached, or the
    connection broke) or ``"api"`` (another provider error, e.g. one sent
    inside an open stream).
    """

    kind: str
    model: str
    message: str  # the provider's own words (or the transport's)
    status: int | None = None
    base_url: str | None = None
    code: str | None = None  # the provider's machine-readable code or type, when it sent one

    def __str__(self) -> str:
        where = f" at {self.base_url}" if self.base_url else ""
        detail = self.message if not self.code or self.code in self.message else f"{self.message} ({self.code})"
        if self.kind == "http":
            if self.status == 429:
                return f"rate limited by model '{self.model}' (HTTP 429): {detail}"
            if self.status in (401, 403):
                return f"model '{self.model}' refused the API key (HTTP {self.status}): {detail}"
            return f"model '{self.model}' failed (HTTP {self.status}): {detail}"
        if self.kind == "timeout":
            return f"model '{self.model}' did not answer in time{where}: {detail}"
        if self.kind == "connection":
            return f"could not reach model '{self.model}'{where}: {detail}"
        return f"model '{self.model}' failed: {detail}"


def provider_message(body: object) -> str | None:
    """The human-readable message inside a provider's error body, if any."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        if text.startswith("{"):
            try:
                return provider_message(json.loads(text))
            except ValueError:
                pass
        return text or None
    if not isinstance(body, Mapping):
        return None
    for key in ("error", "message", "detail", "error_description"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, Mapping):
            found = provider_message(value)
            if found:
                return found
        if isinstance(value, list) and value and isinstance(value[0], Mapping):  # FastAPI-style detail lists
            found = provider_message(value[0]) or provider_message({"message": value[0].get("msg")})
            if found:
                return found
    return None


def _code(exc: ModelAPIError) -> str | None:
    code = exc.provider_error_code or exc.provider_error_type
    return code if isinstance(code, str) and code else None


def _fallback(body: object) -> str:
    """A body with no message of its own, shown as the provider sent it (JSON, not Python)."""
    if body is None:
        return "the provider sent no error message"
    try:
        text = json.dumps(body, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = str(body)
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


def describe(exc: BaseException, model: str, base_url: str | None = None) -> ProviderFailure | None:
    """The failure a provider exception stands for, or None when it is not one.

    ``model`` is the model's label (``"openai:gpt-4o-mini"``), ``base_url``
    the URL the model's client sends to (named in connection and timeout
    errors).
    """
    if isinstance(exc, ModelHTTPError):
        message = provider_message(exc.body) or _fallback(exc.body)
        return ProviderFailure("http", model, message, status=exc.status_code, base_url=base_url, code=_code(exc))
    if isinstance(exc, ModelRequestTimeout):
        message = f"no complete answer within request_timeout = {exc.timeout:g} s"
        return ProviderFailure("timeout", model, message, base_url=base_url)
    if isinstance(exc, ModelTimeoutError):
        return ProviderFailure("timeout", model, _transport(exc), base_url=base_url)
    if isinstance(exc, ModelConnectionError):
        return ProviderFailure("connection", model, _transport(exc), base_url=base_url)
    if isinstance(exc, ModelAPIError):
        message = provider_message(exc.body) or str(exc.message)
        return ProviderFailure("api", model, message, base_url=base_url, code=_code(exc))
    return None


def _transport(exc: ModelAPIError) -> str:
    """The SDK's message (``Connection error.``) and the transport's cause (``[Errno 111] Connection refused``)."""
    first = str(exc.message).strip() or type(exc).__name__
    causes: list[str] = []
    cause: BaseException | None = exc.__cause__
    for _ in range(4):
        if cause is None:
            break
        text = str(cause).strip()
        if text and text not in first and all(text not in c for c in causes):
            causes.append(text)
        cause = cause.__cause__ or cause.__context__
    return f"{first.rstrip('.')} ({'; '.join(causes)})" if causes else first


def base_url_of(model: Any) -> str | None:
    """The URL a pydantic-ai model sends its requests to (None for offline models)."""
    try:
        url = getattr(model, "base_url", None)
    except Exception:  # noqa: BLE001 - a model without a client has no URL
        return None
    return str(url).rstrip("/") if url else None
