"""Agent configuration that needs no pydantic-ai: model names, settings, keys.

Split from :mod:`.models` so that ``default_model(...)`` and the error
types can be used without importing pydantic-ai (slow to import).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from tactus_kernel.engine import runs

OFFLINE_ENV = "TACTUS_OFFLINE"
DEFAULT_MODEL_ENV = "TACTUS_MODEL"
TEST_MODEL = "test"
# Settings a declaration (the model table) or a turn may give.
SETTINGS = (
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop_sequences",
    "timeout",
    "parallel_tool_calls",
    "max_retries",
    "request_timeout",
)
# Settings that say how a request is sent, not what it asks: left out of the
# request hash, so adding retries to an agent does not make its record diverge.
TRANSPORT = frozenset({"max_retries", "request_timeout"})

# provider prefix -> the environment variable its pydantic-ai provider reads.
PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "openai-chat": "OPENAI_API_KEY",
    "openai-responses": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google-gla": "GOOGLE_API_KEY",
    "gemini": "GOOGLE_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "cohere": "CO_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "xai": "XAI_API_KEY",
    "grok": "XAI_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "huggingface": "HF_TOKEN",
}
# Alternative variables a provider also accepts.
ALSO_ACCEPTED = {"GOOGLE_API_KEY": ("GEMINI_API_KEY",), "OPENAI_API_KEY": ("OPENAI_BASE_URL",)}
# The reference Tactus's ``provider = "..."`` -> pydantic-ai's model-name prefix.
PROVIDERS = {
    "openai": "openai",
    "openai-chat": "openai-chat",
    "openai-responses": "openai-responses",
    "azure": "azure",
    "anthropic": "anthropic",
    "bedrock": "bedrock",
    "google": "google-gla",
    "gemini": "google-gla",
    "google-gla": "google-gla",
    "google-vertex": "google-vertex",
    "vertex": "google-vertex",
    "vertexai": "google-vertex",
    "groq": "groq",
    "mistral": "mistral",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "xai": "xai",
    "grok": "grok",
    "cerebras": "cerebras",
    "huggingface": "huggingface",
    "ollama": "ollama",
    "fireworks": "fireworks",
    "together": "together",
    "heroku": "heroku",
    "github": "github",
    "moonshotai": "moonshotai",
    "litellm": "litellm",
    "nebius": "nebius",
    "ovhcloud": "ovhcloud",
}
# The model an agent that names a provider but no model gets (the reference
# requires a provider, not a model).
PROVIDER_DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "openai-chat": "gpt-4o-mini",
    "openai-responses": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "bedrock": "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "google-gla": "gemini-2.0-flash",
    "google-vertex": "gemini-2.0-flash",
    "groq": "llama-3.3-70b-versatile",
    "mistral": "mistral-small-latest",
    "cohere": "command-r-plus",
    "deepseek": "deepseek-chat",
}
# A bare model name (no "provider:") is inferred by pydantic-ai from its prefix.
BARE_PREFIXES = {
    "gpt-": "openai",
    "o1": "openai",
    "o3": "openai",
    "o4": "openai",
    "claude": "anthropic",
    "gemini": "google-gla",
}


class ConfigError(ValueError):
    """A declaration that cannot work: an agent, a model, a history setting.

    The message is for the user; the effect layer tags it ``AgentError``.
    """


def offline() -> bool:
    """``TACTUS_OFFLINE=1``, or an isolated run that asks for it (a spec
    scenario, engine/runs.py): every agent uses the offline model."""
    return runs.offline() or os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def parse_model(decl: Any, where: str) -> tuple[str | None, dict[str, Any]]:
    """``"openai:gpt-4o"`` or ``{name = ..., temperature = ...}`` -> (name, settings)."""
    if decl is None:
        return None, {}
    if isinstance(decl, str):
        return decl, {}
    if isinstance(decl, dict):
        name = decl.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: model.name must be a string")
        unknown = sorted(set(decl) - {"name", *SETTINGS})
        if unknown:
            raise ConfigError(f"{where}: unknown model setting '{unknown[0]}' (known: {', '.join(SETTINGS)})")
        return name, settings_from(decl, where)
    raise ConfigError(f'{where}: model must be a model name such as "openai:gpt-4o-mini" or a table')


def settings_from(opts: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The model settings present in a table (declaration or turn options)."""
    out: dict[str, Any] = {}
    if opts.keys().isdisjoint(SETTINGS):
        return out
    for key in SETTINGS:
        value = opts.get(key)
        if value is None:
            continue
        if key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "timeout", "request_timeout"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
            value = float(value)
        elif key in ("max_tokens", "seed", "max_retries"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
            value = int(value)
        if key in ("timeout", "request_timeout", "max_retries") and value < 0:
            raise ConfigError(f"{where}: {key} must not be negative, got {value!r}")
        out[key] = value
    return out


# Provider-specific settings pydantic-ai's model settings accept as they are
# (``openai_reasoning_effort``, ``anthropic_thinking``, ...), and the others
# it knows beside the common ones.
PROVIDER_SETTING = re.compile(r"^(openai|anthropic|bedrock|google|gemini|groq|mistral|cohere|huggingface|xai)_[a-z_]+$")
PASSED_SETTINGS = ("extra_headers", "extra_body", "logit_bias", "thinking")


def model_settings_from(decl: Any, where: str) -> dict[str, Any]:
    """``model_settings = {temperature = 0.7, top_p = 0.9, ...}`` -> pydantic-ai ModelSettings.

    The common settings are checked by type; provider-specific ones (named
    ``openai_...``, ``anthropic_...`` as pydantic-ai names them) pass as
    they are; anything else is an unknown setting.
    """
    if decl is None or decl == [] or decl == {}:
        return {}
    if not isinstance(decl, dict):
        raise ConfigError(f"{where}: model_settings must be a table such as {{temperature = 0.7}}")
    out = settings_from(decl, where)
    for key, value in decl.items():
        if key in SETTINGS:
            continue
        if not isinstance(key, str) or not (PROVIDER_SETTING.match(key) or key in PASSED_SETTINGS):
            raise ConfigError(
                f"{where}: unknown model setting {key!r} (known: {', '.join(SETTINGS)}, "
                "and provider settings such as openai_reasoning_effort)"
            )
        out[key] = value
    return out


def response_settings(decl: Any, where: str) -> dict[str, Any]:
    """The reference's ``response = {retries = 3, retry_delay = 1.0}``: how
    often a failed model request is sent again, as the provider SDK's
    ``max_retries``. ``retry_delay`` is checked but the SDK's own backoff
    applies (it starts near half a second, doubles, and honours the
    provider's Retry-After)."""
    if decl is None or decl == [] or decl == {}:
        return {}
    if not isinstance(decl, dict):
        raise ConfigError(f"{where}: response must be a table such as {{retries = 3, retry_delay = 1.0}}")
    unknown = sorted(set(decl) - {"retries", "retry_delay"})
    if unknown:
        raise ConfigError(f"{where}: response: unknown key {unknown[0]!r} (known: retries, retry_delay)")
    delay = decl.get("retry_delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0):
        raise ConfigError(f"{where}: response.retry_delay must be a non-negative number of seconds, got {delay!r}")
    if decl.get("retries") is None:
        return {}
    return settings_from({"max_retries": decl["retries"]}, f"{where}: response.retries")


def provider_prefix(provider: Any, where: str) -> str:
    """``provider = "bedrock"`` -> ``"bedrock"`` (pydantic-ai's prefix); a clear error for others."""
    if not isinstance(provider, str) or provider.strip().lower() not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"{where}: unknown provider {provider!r} (known: {known})")
    return PROVIDERS[provider.strip().lower()]


def model_name(model: str | None, provider: str) -> str | None:
    """The pydantic-ai model name for a model and the reference's provider.

    ``model = "test"`` stays the offline model whatever the provider, and a
    name that already starts with a pydantic-ai provider (``"openai:..."``)
    stays as it is. Otherwise the model is prefixed as it is (a Bedrock id
    holds colons of its own); without a model, the provider's default model.
    """
    if model == TEST_MODEL:
        return model
    if model is None:
        model = PROVIDER_DEFAULT_MODELS.get(provider)
        if model is None:
            return None
    if ":" in model and model.split(":", 1)[0] in PROVIDERS.values():
        return model
    return f"{provider}:{model}"


def provider_of(name: str) -> str | None:
    if ":" in name:
        return name.split(":", 1)[0]
    for prefix, provider in BARE_PREFIXES.items():
        if name.startswith(prefix):
            return provider
    return None


def missing_key(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable a real model needs and lacks, else None."""
    env = os.environ if environ is None else environ
    provider = provider_of(name)
    var = PROVIDER_KEYS.get(provider or "")
    if var is None:
        return None
    if env.get(var) or any(env.get(alt) for alt in ALSO_ACCEPTED.get(var, ())):
        return None
    return var
