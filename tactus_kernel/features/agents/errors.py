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
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)

from tactus_kernel.engine.runtime import BridgeError
from tactus_kernel.features.agents import provider_errors

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


def explain(spec: AgentSpec, label: str, exc: Exception, base_url: str | None = None) -> BridgeError:
    """The ``AgentError`` for a model call that raised ``exc``.

    ``label`` is the model as the user named it; an HTTP, connection or
    timeout failure says the provider's own message (and the base URL it
    tried), since that is what says what went wrong.
    """
    failure = provider_errors.describe(exc, label, base_url)
    if failure is not None:
        return agent_error(spec.name, str(failure))
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
