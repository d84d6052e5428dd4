"""API keys: read only from the environment variables a profile names; never from a file, never
written anywhere, never shown.

`secret(env_var)` is the key (an error naming the variable when it is unset and required);
`is_set(env_var)` says whether it is there; `endpoint_key(...)` is the key an OpenAI-compatible
endpoint gets: OpenAI itself needs one, a local server (vLLM, Ollama) accepts any.
"""
from __future__ import annotations

import os


class MissingKey(RuntimeError):
    """A key the profile's settings need is not in its environment variable."""


def is_set(env_var: str | None) -> bool:
    return bool(os.environ.get(env_var or ""))


def secret(env_var: str | None, required: bool = True) -> str:
    value = os.environ.get(env_var or "", "")
    if required and not value:
        raise MissingKey(f"set the environment variable {env_var} (named in the config) to your key")
    return value


def endpoint_key(env_var: str | None, base_url: str | None, needed_by: str) -> str:
    """The key for an OpenAI-compatible endpoint at `base_url` (None: OpenAI's own)."""
    if is_set(env_var):
        return secret(env_var)
    if "api.openai.com" in str(base_url or "api.openai.com"):
        raise MissingKey(f"{needed_by} but the environment variable {env_var!r} is not set "
                         "(the key is read only from there)")
    return "not-needed"
