"""``agent(name, {...})``: a declaration checked and turned into an :class:`AgentSpec`.

Every key is checked when the cell declares the agent, so a typo is an
error naming the agent and the key there, not a surprise at the first turn.
The reference Tactus's keys (``provider``, ``model_type``,
``model_settings``, ``toolsets``, ``session`` ...) are read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents.config import (
    SETTINGS,
    ConfigError,
    model_name,
    model_settings_from,
    parse_model,
    provider_prefix,
    response_settings,
    settings_from,
)
from tactus_kernel.features.agents.deps import TurnDeps
from tactus_kernel.features.agents.endpoints import check_base_url
from tactus_kernel.features.agents.models import parse_mock
from tactus_kernel.features.agents.output import output_model
from tactus_kernel.features.agents.recording import digest
from tactus_kernel.features.agents.tools import DONE

AGENT_KEYS = (
    "model",
    "system_prompt",
    "instructions",
    "initial_message",
    "continue_message",
    "tools",
    "output_type",
    "max_turns",
    "message_history",
    "mock",
    "retries",
    "quiet",
    "description",
    # the reference Tactus's keys (v0.3 to v0.7)
    "provider",
    "model_type",
    "model_settings",
    "toolsets",
    "request_limit",
    "disable_streaming",
    "session",
    "response",
    "base_url",
    *SETTINGS,
)


@dataclass
class AgentSpec:
    """A declared agent: what each of its turns is built from."""

    name: str
    model: str | None
    provider: str | None  # pydantic-ai's prefix for the reference's provider = "..."
    settings: dict[str, Any]
    system_prompt: str | None
    initial_message: str | None
    continue_message: str
    tools: list[str]
    output_schema: dict[str, Any] | None
    max_turns: int | None
    history: dict[str, Any]
    mock: list[dict[str, Any]] | None
    quiet: bool
    agent_options: dict[str, Any]  # for pydantic-ai's Agent(...)
    stream: bool = True  # disable_streaming = true: the text is shown once the turn ends
    request_limit: int | None = None  # UsageLimits(request_limit=...) of each turn
    base_url: str | None = None  # where the live model's requests go (else the provider's default)
    output_digest: str = ""  # what the request hash covers of the output type


def parse_agent(name: str, raw: Any) -> AgentSpec:
    """Check an ``agent(name, config)`` declaration; raises ConfigError naming the agent and key."""
    where = f"agent '{name}'"
    config = raw if isinstance(raw, dict) else {}
    unknown = sorted(set(config) - set(AGENT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(AGENT_KEYS)})")
    model, settings = parse_model(config.get("model"), where)
    # the reference's model_settings, and settings given on the agent itself
    settings = {
        **model_settings_from(config.get("model_settings"), f"{where}: model_settings"),
        **response_settings(config.get("response"), where),
        **settings_from(config, where),
        **settings,
    }
    provider = config.get("provider")
    if provider is not None:
        provider = provider_prefix(provider, where)
        model_type = _str_or_none(config.get("model_type"), f"{where}: model_type")
        if provider == "openai" and model_type in ("responses", "chat"):
            provider = f"openai-{model_type}"  # the reference's model_type = "responses"
        if model is not None:
            model, provider = model_name(model, provider), None
    output = config.get("output_type")
    out_model: type[BaseModel] | None = None
    if output is not None and output != {}:
        out_model = output_model(output, name.title().replace("_", "") + "Output")
    history = hist.check_config(config.get("message_history", config.get("session")), where)
    retries = _int_or_none(config.get("retries"), f"{where}: retries")
    output_schema = out_model.model_json_schema() if out_model else None
    return AgentSpec(
        name=name,
        model=model,
        provider=provider,
        settings=settings,
        system_prompt=_str_or_none(config.get("system_prompt", config.get("instructions")), f"{where}: system_prompt"),
        initial_message=_str_or_none(config.get("initial_message"), f"{where}: initial_message"),
        continue_message=_str_or_none(config.get("continue_message"), f"{where}: continue_message") or "Continue.",
        # the reference gives every agent its done tool unless it lists its tools
        tools=tool_names(config, where, [DONE]),
        output_schema=output_schema,
        max_turns=_int_or_none(config.get("max_turns"), f"{where}: max_turns"),
        history=history,
        mock=parse_mock(config.get("mock"), where),
        quiet=bool(config.get("quiet", False)),
        stream=not config.get("disable_streaming", False),
        request_limit=_int_or_none(config.get("request_limit"), f"{where}: request_limit"),
        base_url=check_base_url(config.get("base_url"), where),
        agent_options={
            "output_type": out_model if out_model is not None else str,
            "deps_type": TurnDeps,
            "name": name,
            "retries": retries if retries is not None else 2,
            "description": _str_or_none(config.get("description"), f"{where}: description"),
        },
        output_digest=digest(output_schema),
    )


def tool_names(config: dict[str, Any], where: str, default: list[str]) -> list[str]:
    """``tools`` and the reference's ``toolsets`` together (tool and toolset
    names); ``default`` when neither is given. ``{}`` in either means none."""
    if "tools" not in config and "toolsets" not in config:
        return list(default)
    names = _names(config.get("tools"), f"{where}: tools")
    for name in _names(config.get("toolsets"), f"{where}: toolsets"):
        if name not in names:
            names.append(name)
    return names


def _int_or_none(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return int(value)


def _str_or_none(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, got {type(value).__name__}")


def _names(value: Any, where: str) -> list[str]:
    if value is None or value == {} or value == []:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of tool names such as {{"search", "done"}}')
    return list(value)
