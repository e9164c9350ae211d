"""Any OpenAI-compatible chat completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio).

Retries are the SDK's own: on 408/409/429/5xx, connection errors and timeouts it retries
``max_retries`` times with exponential backoff (0.5 s doubling, at most 8 s, or the server's
Retry-After up to 120 s). Each attempt is bounded by ``timeout_s``, so one call is bounded by
:attr:`OpenAITarget.max_call_seconds` (attempts x timeout + retries x 120 s). The API key is
read from the environment variable named in ``api_key_env`` at call time and is never stored.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from tests_app.errors import ValidationFailed
from tests_app.targets.base import Message, TargetError, TargetReply

ALLOWED_KEYS = {
    "kind",
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "max_tokens",
    "timeout_s",
    "max_retries",
}
# Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK refuses to run without one.
PLACEHOLDER_API_KEY = "no-key-needed"
# The longest wait between two attempts: the SDK backs off at most 8 s on its own, but honours a
# server's Retry-After up to 120 s (and does not retry at all when asked to wait longer).
_BACKOFF_CEILING_S = 120.0
# Distinct endpoints a worker talks to; past this the least recently used client is dropped.
_MAX_CLIENTS = 32

_ClientKey = tuple[str | None, str, float, int]
Client = TypeVar("Client")
_clients: OrderedDict[_ClientKey, openai.OpenAI] = OrderedDict()
_clients_lock = threading.Lock()


def _cached(
    clients: OrderedDict[_ClientKey, Client], key: _ClientKey, make: Callable[[], Client]
) -> tuple[Client, Client | None]:
    """The client of ``key`` (made on first use) and the least recently used one that it pushed
    out of ``clients`` past ``_MAX_CLIENTS``, if any."""
    client = clients.get(key)
    if client is not None:
        clients.move_to_end(key)
        return client, None
    client = clients[key] = make()
    if len(clients) > _MAX_CLIENTS:
        return client, clients.popitem(last=False)[1]
    return client, None


def shared_client(
    *, base_url: str | None, api_key: str, timeout_s: float, max_retries: int
) -> openai.OpenAI:
    """One client per process and endpoint, shared by every thread (the SDK's client and its
    connection pool are thread-safe). Building one costs an SSL context (tens of ms of CPU under
    the GIL) and a fresh connection pool, which a per-invocation client paid on every replay.
    The key is part of the identity, so a rotated environment variable gets a new client."""
    key = (base_url, api_key, timeout_s, max_retries)
    with _clients_lock:
        # A dropped client is not closed: another thread may be mid-call on it; its pool closes
        # when it is collected.
        client, _ = _cached(
            _clients,
            key,
            lambda: openai.OpenAI(
                api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
            ),
        )
        return client


# Async clients belong to the event loop that made them (their connections do): one cache per loop.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, OrderedDict[_ClientKey, openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


# Dropped clients being closed (the loop keeps only weak references to its tasks).
_closing: set[asyncio.Task[None]] = set()


def shared_async_client(
    *, base_url: str | None, api_key: str, timeout_s: float, max_retries: int
) -> openai.AsyncOpenAI:
    """:func:`shared_client` for the running event loop. Its transport is aiohttp (the SDK's
    ``aiohttp`` extra): measured on the bench, httpx's pool spent more CPU per call checking
    its idle connections than the rest of the call did."""
    loop = asyncio.get_running_loop()
    client, dropped = _cached(
        _async_clients.setdefault(loop, OrderedDict()),
        (base_url, api_key, timeout_s, max_retries),
        lambda: openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=openai.DefaultAioHttpClient(),
        ),
    )
    if dropped is not None:
        # Closed in the background: a replay may still be mid-call on it.
        closing = loop.create_task(dropped.close())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
    return client


async def close_async_clients() -> None:
    """Close the running loop's clients (a worker stopping): aiohttp complains of sessions that
    are collected unclosed."""
    clients = _async_clients.pop(asyncio.get_running_loop(), None)
    for client in clients.values() if clients else ():
        await client.close()


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"The benchmark's openai target is invalid ({field}): {message}",
        code="invalid_target",
        fields={field: [message]},
    )


def _number(config: dict[str, Any], name: str, default: float) -> float:
    value = config.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, "Must be a number.")
    return float(value)


@dataclass(frozen=True)
class OpenAIConfig:
    model: str
    base_url: str | None
    api_key_env: str | None
    temperature: float
    max_tokens: int | None
    timeout_s: float
    max_retries: int

    @classmethod
    def parse(cls, config: dict[str, Any]) -> OpenAIConfig:
        unknown = sorted(set(config) - ALLOWED_KEYS)
        if unknown:
            allowed = ", ".join(sorted(ALLOWED_KEYS))
            raise _invalid(unknown[0], f"Unknown field; allowed: {allowed}.")
        model = config.get("model")
        if not isinstance(model, str) or not model.strip():
            raise _invalid("model", "A model name is required.")
        base_url = config.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise _invalid("base_url", "Must be an http:// or https:// URL.")
        api_key_env = config.get("api_key_env")
        if api_key_env is not None and (
            not isinstance(api_key_env, str) or not api_key_env.replace("_", "").isalnum()
        ):
            raise _invalid("api_key_env", "Must be the NAME of an environment variable.")
        temperature = _number(config, "temperature", 0.0)
        if not 0 <= temperature <= 2:
            raise _invalid("temperature", "Must be between 0 and 2.")
        max_tokens = config.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise _invalid("max_tokens", "Must be a positive integer or null.")
        timeout_s = _number(config, "timeout_s", 60.0)
        if not 0 < timeout_s <= 3600:
            raise _invalid("timeout_s", "Must be more than 0 and at most 3600 seconds.")
        max_retries = config.get("max_retries", 2)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise _invalid("max_retries", "Must be an integer.")
        if not 0 <= max_retries <= 10:
            raise _invalid("max_retries", "Must be between 0 and 10.")
        return cls(
            model=model.strip(),
            base_url=base_url.rstrip("/") if base_url else None,
            api_key_env=api_key_env or None,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )


class OpenAITarget:
    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.key = f"openai:{config.base_url or 'default'}:{config.model}"
        self.max_call_seconds = (
            config.timeout_s * (config.max_retries + 1) + _BACKOFF_CEILING_S * config.max_retries
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OpenAITarget:
        return cls(OpenAIConfig.parse(config))

    def _api_key(self) -> str:
        name = self.config.api_key_env
        return (os.environ.get(name, "") if name else "") or PLACEHOLDER_API_KEY

    def client(self) -> openai.OpenAI:
        return shared_client(
            base_url=self.config.base_url,
            api_key=self._api_key(),
            timeout_s=self.config.timeout_s,
            max_retries=self.config.max_retries,
        )

    def close(self) -> None:
        # The client is shared by the process (see shared_client), so there is nothing to close.
        return None

    def _body(self, messages: list[Message]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        return body

    def _error(self, error: openai.OpenAIError) -> TargetError:
        """The SDK's final error (its retries spent), as the reason recorded on the invocation."""
        attempts = self.config.max_retries + 1
        if isinstance(error, openai.APITimeoutError):
            return TargetError(
                f"The target did not answer within {self.config.timeout_s:g} s "
                f"({attempts} attempts): {error}"
            )
        if isinstance(error, openai.APIConnectionError):
            return TargetError(
                f"Could not reach the target at {self.config.base_url or 'the default URL'} "
                f"({attempts} attempts): {error}"
            )
        if isinstance(error, openai.AuthenticationError):
            hint = (
                f"; is the environment variable {self.config.api_key_env} set for the worker?"
                if self.config.api_key_env
                else ""
            )
            return TargetError(f"The target refused the API key (HTTP 401){hint}")
        if isinstance(error, openai.APIStatusError):
            return TargetError(
                f"The target answered HTTP {error.status_code} "
                f"(after {attempts} attempts at most): {error.message}"
            )
        return TargetError(f"The target's answer could not be used: {error}")

    @staticmethod
    def _reply(completion: ChatCompletion, started: float) -> TargetReply:
        latency_ms = int((time.monotonic() - started) * 1000)
        if not completion.choices:
            raise TargetError("The target answered with no choices.")
        content = completion.choices[0].message.content or ""
        usage = completion.usage
        return TargetReply(
            content=content,
            latency_ms=latency_ms,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    def complete(self, *, messages: list[Message], reference: str | None) -> TargetReply:
        started = time.monotonic()
        try:
            # The SDK's own request path (auth, retries, timeouts, errors), minus the typed
            # create(), whose recursive params transform costs more CPU than the rest of the call
            # (about 1.3 ms a turn, under a GIL shared by every replay thread); the messages are
            # already plain wire-format dicts.
            completion = self.client().post(
                "/chat/completions", body=self._body(messages), cast_to=ChatCompletion
            )
        except openai.OpenAIError as error:
            raise self._error(error) from error
        return self._reply(completion, started)

    async def acomplete(self, *, messages: list[Message], reference: str | None) -> TargetReply:
        """:meth:`complete` on the running event loop (the asyncio replay engine), with the same
        retries, timeouts and errors, through the SDK's aiohttp transport."""
        started = time.monotonic()
        client = shared_async_client(
            base_url=self.config.base_url,
            api_key=self._api_key(),
            timeout_s=self.config.timeout_s,
            max_retries=self.config.max_retries,
        )
        try:
            completion = await client.post(
                "/chat/completions", body=self._body(messages), cast_to=ChatCompletion
            )
        except openai.OpenAIError as error:
            raise self._error(error) from error
        return self._reply(completion, started)
