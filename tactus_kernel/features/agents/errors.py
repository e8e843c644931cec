"""How an agent's failures reach the procedure: one ``AgentError`` it can ``pcall``.

A model call can fail in many ways (HTTP status, rate limit, bad output,
usage limit, a provider library's own error); the procedure sees each as
an ``AgentError`` whose message names the agent, the model and the cause,
so a person knows what to fix without reading a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic_ai.exceptions import (
    AgentRunError,
    ModelAPIError,
    ModelHTTPError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)

from tactus_kernel.engine.runtime import BridgeError

if TYPE_CHECKING:
    from tactus_kernel.features.agents.spec import AgentSpec

# Errors from inside a Lua tool that keep their own name (the rest become AgentError).
PASS_THROUGH = {
    "KeyboardInterrupt",
    "DivergenceError",
    "NoRecordedAnswer",
    "HumanTimeout",
    "LuaMemoryError",
    "NotRecordableError",
    "AgentError",
    "CheckpointError",
}


def agent_error(agent: str, message: str) -> BridgeError:
    """The Lua error ``AgentError: agent 'NAME': message``."""
    return BridgeError(f"AgentError: agent '{agent}': {message}")


def explain(spec: AgentSpec, label: str, exc: Exception) -> BridgeError:
    """The ``AgentError`` for a model call that raised ``exc``.

    ``label`` is the model as the user named it; an HTTP failure keeps the
    provider's own error body, since that is what says what went wrong.
    """
    if isinstance(exc, ModelHTTPError):
        body = exc.body
        detail = body.get("error") if isinstance(body, dict) else body
        if exc.status_code == 429:
            return agent_error(spec.name, f"rate limited by model '{label}' (HTTP 429): {detail}")
        if exc.status_code in (401, 403):
            return agent_error(spec.name, f"model '{label}' refused the API key (HTTP {exc.status_code}): {detail}")
        return agent_error(spec.name, f"model '{label}' failed (HTTP {exc.status_code}): {detail}")
    if isinstance(exc, ModelAPIError):
        return agent_error(spec.name, f"model '{label}' failed: {exc}")
    if isinstance(exc, UnexpectedModelBehavior):
        if spec.output_schema is not None and "output" in str(exc):
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            return agent_error(
                spec.name, f"the model's output did not match output_type after the allowed retries: {exc}{cause}"
            )
        return agent_error(spec.name, f"unexpected model behaviour: {exc}")
    if isinstance(exc, UsageLimitExceeded):
        return agent_error(spec.name, f"usage limit exceeded: {exc}")
    if isinstance(exc, (AgentRunError, UserError)):
        return agent_error(spec.name, str(exc))
    if isinstance(exc, RuntimeError) and "ALLOW_MODEL_REQUESTS" in str(exc):
        return agent_error(spec.name, f"model '{label}' may not be called here: {exc}")
    return agent_error(spec.name, f"model '{label}' failed: {type(exc).__name__}: {exc}")
