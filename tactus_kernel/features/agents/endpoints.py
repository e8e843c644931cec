"""Live models, built from a pydantic-ai model name and an agent's ``base_url``.

Without ``base_url`` a model is pydantic-ai's ``infer_model(name)``: its
provider reads the key and the base URL from the environment
(``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_BASE_URL``, ...). With ``base_url = "http://..."`` on the agent
the provider is built with that URL instead, so one notebook can talk to a
local OpenAI-compatible server and to the real API side by side.
"""

from __future__ import annotations

import inspect
from urllib.parse import urlparse

from pydantic_ai.models import Model, infer_model
from pydantic_ai.providers import Provider, infer_provider_class

from tactus_kernel.features.agents.config import ConfigError


def check_base_url(value: object, where: str) -> str | None:
    """``base_url`` must be an http(s) URL."""
    if value is None:
        return None
    if not isinstance(value, str) or urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc:
        raise ConfigError(f'{where}: base_url must be an http(s) URL such as "http://127.0.0.1:8000/v1", got {value!r}')
    return value


def build_model(name: str, base_url: str | None = None) -> Model:
    """The pydantic-ai model for ``name`` (``"openai:gpt-4o-mini"``), sending to ``base_url`` when given.

    Raises pydantic-ai's ``UserError`` for an unknown model, and
    ``ConfigError`` when the model's provider takes no base URL.
    """
    if base_url is None:
        return infer_model(name)

    def provider(provider_name: str) -> Provider[object]:
        cls = infer_provider_class(provider_name)
        if "base_url" not in inspect.signature(cls.__init__).parameters:
            raise ConfigError(f"provider '{provider_name}' does not take a base_url")
        return cls(base_url=base_url)  # type: ignore[call-arg]

    return infer_model(name, provider_factory=provider)
