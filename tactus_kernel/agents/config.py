"""Agent configuration that needs no pydantic-ai: model names, settings, keys.

Split from :mod:`.models` so that ``default_model(...)`` and the error
types can be used without importing pydantic-ai (slow to import).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

OFFLINE_ENV = "TACTUS_OFFLINE"
DEFAULT_MODEL_ENV = "TACTUS_MODEL"
TEST_MODEL = "test"
# Settings a declaration (the model table) or a turn may give.
SETTINGS = ("temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty",
            "stop_sequences", "timeout", "parallel_tool_calls")

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
# A bare model name (no "provider:") is inferred by pydantic-ai from its prefix.
BARE_PREFIXES = {"gpt-": "openai", "o1": "openai", "o3": "openai", "o4": "openai", "claude": "anthropic",
                 "gemini": "google-gla"}


class ConfigError(ValueError):
    """A declaration that cannot work: an agent, a model, a history setting.

    The message is for the user; the effect layer tags it ``AgentError``.
    """


def offline() -> bool:
    """``TACTUS_OFFLINE=1``: every agent uses the offline model."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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
    raise ConfigError(f"{where}: model must be a model name such as \"openai:gpt-4o-mini\" or a table")


def settings_from(opts: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The model settings present in a table (declaration or turn options)."""
    out: dict[str, Any] = {}
    if opts.keys().isdisjoint(SETTINGS):
        return out
    for key in SETTINGS:
        value = opts.get(key)
        if value is None:
            continue
        if key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "timeout"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
            value = float(value)
        elif key in ("max_tokens", "seed"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
            value = int(value)
        out[key] = value
    return out


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
