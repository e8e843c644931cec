"""Offline models: pydantic-ai's ``TestModel`` and scripted mocks.

Three cases, decided per live turn (a replayed turn needs no model at all):

- ``model = "test"``, or any model while ``TACTUS_OFFLINE=1``: a
  deterministic offline model. With scripted ``mock = {responses = ...}``
  it is a pydantic-ai ``FunctionModel`` that plays the script, one response
  per model request; otherwise pydantic-ai's ``TestModel``, which calls
  every offered tool once and then answers. Every example notebook
  therefore runs without network or key.
- a real provider (``"openai:gpt-4o-mini"``): its API key is checked before
  anything is sent, so a missing key is one clear error naming the
  environment variable, not a stack trace from an SDK.
- no model anywhere: the notebook default (``default_model(...)``), then
  ``TACTUS_MODEL``, then ``"test"``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.test import TestModel

from tactus_kernel.features.agents.config import TEST_MODEL, ConfigError


# --------------------------------------------------------------------- mocks
@dataclass
class ScriptCursor:
    """Where a run is in an agent's scripted responses (one per model request)."""

    position: int = 0


def parse_mock(decl: Any, where: str) -> list[dict[str, Any]] | None:
    """``mock = {responses = {...}}`` -> normalised responses.

    Each response is text, ``{text = ...}``, a tool call ``{tool = name,
    args = {...}}``, several ``{calls = {{tool = ..., args = ...}, ...}}``,
    structured output ``{output = {...}}``, or a failure ``{error = msg,
    status = 429}`` (so error handling can be exercised offline). A
    ``delay`` (seconds between streamed words; on the mock table or on one
    ``{text = ..., delay = ...}``) makes streaming visible in a notebook.
    """
    if decl is None:
        return None
    if not isinstance(decl, dict) or "responses" not in decl:
        raise ConfigError(f"{where}: mock must be a table {{responses = {{...}}}}")
    responses = decl["responses"]
    if responses == {}:
        responses = []
    if not isinstance(responses, list):
        raise ConfigError(f"{where}: mock.responses must be a list")
    default_delay = _delay(decl.get("delay", 0), f"{where}: mock.delay")
    out: list[dict[str, Any]] = []
    for i, r in enumerate(responses, 1):
        here = f"{where}: mock.responses[{i}]"
        if isinstance(r, str):
            out.append({"text": r, "delay": default_delay})
        elif isinstance(r, dict) and isinstance(r.get("text"), str):
            out.append({"text": r["text"], "delay": _delay(r.get("delay", default_delay), f"{here}.delay")})
        elif isinstance(r, dict) and "tool" in r:
            out.append({"calls": [_call(r, here)]})
        elif isinstance(r, dict) and isinstance(r.get("calls"), list):
            out.append({"calls": [_call(c, here) for c in r["calls"]]})
        elif isinstance(r, dict) and "output" in r:
            out.append({"output": r["output"]})
        elif isinstance(r, dict) and "error" in r:
            status = r.get("status", 500)
            if isinstance(status, bool) or not isinstance(status, (int, float)):
                raise ConfigError(f"{here}: status must be an HTTP status number")
            out.append({"error": str(r["error"]), "status": int(status)})
        else:
            raise ConfigError(f"{here}: expected text, {{tool = ..., args = ...}}, {{output = ...}} or {{error = ...}}")
    return out


def _delay(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where} must be a non-negative number of seconds")
    return float(value)


def _call(r: Any, where: str) -> dict[str, Any]:
    if not isinstance(r, dict) or not isinstance(r.get("tool"), str):
        raise ConfigError(f'{where}: a tool call needs tool = "name"')
    args = r.get("args", {})
    if args == []:
        args = {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: args must be a table of name = value")
    return {"tool": r["tool"], "args": args}


@dataclass
class MockScript:
    """Plays an agent's scripted responses through a ``FunctionModel``."""

    agent: str
    responses: list[dict[str, Any]]
    cursor: ScriptCursor = field(default_factory=ScriptCursor)

    def _next(self) -> dict[str, Any]:
        i = self.cursor.position
        if i >= len(self.responses):
            raise ModelHTTPError(
                400,
                "mock",
                {"error": f"agent '{self.agent}' used up its {len(self.responses)} scripted mock responses"},
            )
        self.cursor.position += 1
        response = self.responses[i]
        if "error" in response:
            raise ModelHTTPError(response["status"], "mock", {"error": response["error"]})
        return response

    @staticmethod
    def _calls(response: dict[str, Any], info: AgentInfo) -> list[tuple[str, dict[str, Any]]]:
        if "calls" in response:
            return [(c["tool"], c["args"]) for c in response["calls"]]
        if "output" in response and info.output_tools:
            return [(info.output_tools[0].name, response["output"])]
        return []

    @staticmethod
    def _text(response: dict[str, Any]) -> str:
        if "text" in response:
            return str(response["text"])
        return json.dumps(response.get("output"), ensure_ascii=False)

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        response = self._next()
        calls = self._calls(response, info)
        if calls:
            return ModelResponse(parts=[ToolCallPart(name, args) for name, args in calls], model_name="mock")
        return ModelResponse(parts=[TextPart(self._text(response))], model_name="mock")

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        response = self._next()
        calls = self._calls(response, info)
        if calls:
            yield {i: DeltaToolCall(name=name, json_args=json.dumps(args)) for i, (name, args) in enumerate(calls)}
            return
        words = self._text(response).split(" ")
        delay = float(response.get("delay", 0))
        for i, word in enumerate(words):
            if i and delay:
                await asyncio.sleep(delay)
            yield word if i == len(words) - 1 else word + " "

    def model(self) -> FunctionModel:
        return FunctionModel(self.respond, stream_function=self.stream, model_name="mock")


@functools.cache
def _test_model() -> TestModel:
    return TestModel()


def offline_model(mock: MockScript | None) -> tuple[Model, str]:
    """The deterministic model for an offline turn, and its label.

    One ``TestModel`` serves every turn: it keeps no state between requests
    that changes its answers, and building one per turn was a measurable
    share of a turn's overhead.
    """
    if mock is not None:
        return mock.model(), "mock"
    return _test_model(), TEST_MODEL
