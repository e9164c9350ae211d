"""Any OpenAI-compatible chat completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio).

Two clients speak to it, with one retry policy and the same errors:

* the threaded path (eager runs, ``REPLAY_ENGINE=threads``) uses the OpenAI SDK's own client;
* the asyncio replay engine (Celery workers on PostgreSQL) sends the request itself over
  aiohttp, retried by stamina. The SDK's request path (its option models, an httpx request on
  top of aiohttp, a typed answer) cost about 0.6 ms of CPU a call, more than the rest of the call
  together: a third of a worker's CPU in the bench's replays.

The policy, the SDK's: on 408/409/429/5xx (or what the server's ``x-should-retry`` says),
connection errors and timeouts, retry ``max_retries`` times with exponential backoff (0.5 s
doubling, at most 8 s, with jitter), or after the server's ``Retry-After``/``retry-after-ms``
when it asks for at most 120 s (a longer wait is not retried). Each attempt is bounded by
``timeout_s``, so one call is bounded by :attr:`OpenAITarget.max_call_seconds` (attempts x
timeout + retries x 120 s). The API key is read from the environment variable named in
``api_key_env`` at call time and is never stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
import orjson
import stamina
from aiohttp.helpers import get_env_proxy_for_url
from openai.types.chat import ChatCompletion
from yarl import URL

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
# The longest wait between two attempts: the backoff is at most 8 s on its own, but a server's
# Retry-After up to 120 s is honoured (and a longer one is not retried at all).
_BACKOFF_CEILING_S = 120.0
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 8.0
# Where the SDK sends a target without base_url (it reads OPENAI_BASE_URL first, as we do).
_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_USER_AGENT = "replaybench"
_ACCOUNT_HEADERS = (
    ("OPENAI_ORG_ID", "OpenAI-Organization"),
    ("OPENAI_PROJECT_ID", "OpenAI-Project"),
)
# Distinct endpoints a worker talks to; past this the least recently used client is dropped.
_MAX_CLIENTS = 32

_ClientKey = tuple[str | None, str, float, int]
_clients: OrderedDict[_ClientKey, openai.OpenAI] = OrderedDict()
_clients_lock = threading.Lock()


def shared_client(
    *, base_url: str | None, api_key: str, timeout_s: float, max_retries: int
) -> openai.OpenAI:
    """One client per process and endpoint, shared by every thread (the SDK's client and its
    connection pool are thread-safe). Building one costs an SSL context (tens of ms of CPU under
    the GIL) and a fresh connection pool, which a per-invocation client paid on every replay.
    The key is part of the identity, so a rotated environment variable gets a new client."""
    key = (base_url, api_key, timeout_s, max_retries)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        client = _clients[key] = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )
        if len(_clients) > _MAX_CLIENTS:
            # The least recently used one is not closed: another thread may be mid-call on it;
            # its pool closes when it is collected.
            _clients.popitem(last=False)
        return client


@dataclass
class _LoopSession:
    """The loop's aiohttp session, and the proxy of each origin it has called.

    The proxy variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) apply as they do to the SDK's client,
    which reads them when it is made: here once per origin and session. aiohttp's own
    ``trust_env`` reads them on every request, in two hops to a thread (the proxy, and ``.netrc``
    for an Authorization we always send): a fifth of a worker's CPU in the bench's replays."""

    session: aiohttp.ClientSession
    proxies: dict[str, tuple[Any, aiohttp.BasicAuth | None]] = field(default_factory=dict)

    def proxy_for(self, url: str) -> tuple[Any, aiohttp.BasicAuth | None]:
        parsed = URL(url)
        origin = str(parsed.origin())
        found = self.proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(parsed)
            except LookupError:  # NO_PROXY names the host, or no proxy for its scheme
                found = (None, None)
            self.proxies[origin] = found
        return found


# An aiohttp session belongs to the event loop that made it (its connections do): one per loop,
# for every target endpoint (the URL and the key go with each request).
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = (
    weakref.WeakKeyDictionary()
)


def _session() -> _LoopSession:
    loop = asyncio.get_running_loop()
    found = _sessions.get(loop)
    if found is None or found.session.closed:
        # No cap on connections of its own: the worker's concurrency and the target's slots
        # bound them, and a cap here would make calls queue inside their timeout.
        found = _sessions[loop] = _LoopSession(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
    return found


async def close_async_clients() -> None:
    """Close the running loop's session (a worker stopping): aiohttp complains of sessions that
    are collected unclosed."""
    found = _sessions.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.session.close()


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for: ``retry-after-ms``, else ``Retry-After`` in seconds or as an
    HTTP date; None when it asks for none (or says it unreadably)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        return delay / divisor if math.isfinite(delay) else _BACKOFF_CEILING_S + 1
    date = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(date) if date else None
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed)) - time.time()


class _RetryableAnswer(Exception):
    """An attempt that the policy retries: the final error if it was the last, and the wait
    the server asked for (None: the usual backoff)."""

    def __init__(self, error: TargetError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


def _backoff(error: Exception) -> bool | float:
    """stamina's hook: whether to retry ``error``, and after how long when the server said."""
    if not isinstance(error, _RetryableAnswer):
        return False
    return error.wait_s if error.wait_s is not None else True


def _should_retry(status: int, headers: Mapping[str, str]) -> tuple[bool, float | None]:
    """Whether an HTTP error answer is retried, and after the wait the server asked for."""
    wait_s = retry_after_seconds(headers)
    if wait_s is not None and wait_s > _BACKOFF_CEILING_S:
        return False, None
    told = headers.get("x-should-retry")
    if told in ("true", "false"):
        retry = told == "true"
    else:
        retry = status in (408, 409, 429) or status >= 500
    return retry, wait_s if wait_s is not None and wait_s > 0 else None


def _error_message(status: int, raw: bytes) -> str:
    """The server's own words for an error answer: ``error.message`` of an OpenAI error body,
    else the start of the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    text = raw.decode("utf-8", "replace").strip()
    return text[:500] or f"HTTP {status} with an empty body"


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

    @property
    def _attempts(self) -> int:
        return self.config.max_retries + 1

    def _timed_out(self, detail: object) -> TargetError:
        return TargetError(
            f"The target did not answer within {self.config.timeout_s:g} s "
            f"({self._attempts} attempts): {detail}"
        )

    def _unreachable(self, detail: object) -> TargetError:
        return TargetError(
            f"Could not reach the target at {self.config.base_url or 'the default URL'} "
            f"({self._attempts} attempts): {detail}"
        )

    def _refused(self, status: int, message: str) -> TargetError:
        if status == 401:
            hint = (
                f"; is the environment variable {self.config.api_key_env} set for the worker?"
                if self.config.api_key_env
                else ""
            )
            return TargetError(f"The target refused the API key (HTTP 401){hint}")
        return TargetError(
            f"The target answered HTTP {status} "
            f"(after {self._attempts} attempts at most): {message}"
        )

    def _error(self, error: openai.OpenAIError) -> TargetError:
        """The SDK's final error (its retries spent), as the reason recorded on the invocation."""
        if isinstance(error, openai.APITimeoutError):
            return self._timed_out(error)
        if isinstance(error, openai.APIConnectionError):
            return self._unreachable(error)
        if isinstance(error, openai.APIStatusError):
            # The server's own words, as the asyncio engine's client reads them.
            raw = error.response.content
            return self._refused(error.status_code, _error_message(error.status_code, raw))
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

    @staticmethod
    def _reply_of_json(raw: bytes, started: float) -> TargetReply:
        """:meth:`_reply` of the answer as sent: the same fields, read without the SDK's types."""
        latency_ms = int((time.monotonic() - started) * 1000)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise TargetError(
                f"The target's answer could not be used: not JSON ({error})"
            ) from None
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise TargetError("The target answered with no choices.")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}

        def tokens(name: str) -> int | None:
            value = usage.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return TargetReply(
            content=content if isinstance(content, str) else "",
            latency_ms=latency_ms,
            prompt_tokens=tokens("prompt_tokens"),
            completion_tokens=tokens("completion_tokens"),
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

    def _url(self) -> str:
        base_url = self.config.base_url or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL
        return f"{base_url.rstrip('/')}/chat/completions"

    async def _attempt(self, client: _LoopSession, body: bytes) -> bytes:
        """One request; an answer worth another attempt raises :class:`_RetryableAnswer`."""
        headers = {
            "Authorization": f"Bearer {self._api_key()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        # As the SDK's client sends them when the worker's environment has them.
        for variable, header in _ACCOUNT_HEADERS:
            if os.environ.get(variable):
                headers[header] = os.environ[variable]
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        url = self._url()
        proxy, proxy_auth = client.proxy_for(url)
        try:
            async with client.session.post(
                url, data=body, headers=headers, timeout=timeout, proxy=proxy, proxy_auth=proxy_auth
            ) as response:
                raw = await response.read()
        except TimeoutError as error:
            raise _RetryableAnswer(self._timed_out(str(error) or "Request timed out.")) from None
        except aiohttp.ClientError as error:
            # Refused, reset, closed mid-answer, a name that does not resolve.
            raise _RetryableAnswer(self._unreachable(error)) from None
        if response.status == 200:
            return raw
        refused = self._refused(response.status, _error_message(response.status, raw))
        retry, wait_s = _should_retry(response.status, response.headers)
        if retry:
            raise _RetryableAnswer(refused, wait_s)
        raise refused

    async def acomplete(self, *, messages: list[Message], reference: str | None) -> TargetReply:
        """:meth:`complete` on the running event loop (the asyncio replay engine): the same
        request, retry policy and errors, sent over the loop's aiohttp session (see the module's
        docstring for why not through the SDK)."""
        started = time.monotonic()
        body = orjson.dumps(self._body(messages))
        client = _session()
        try:
            async for attempt in stamina.retry_context(
                on=_backoff,
                attempts=self._attempts,
                timeout=None,  # bounded by the attempts and their timeouts
                wait_initial=_BACKOFF_INITIAL_S,
                wait_max=_BACKOFF_MAX_S,
                wait_jitter=_BACKOFF_INITIAL_S,
            ):
                with attempt:
                    raw = await self._attempt(client, body)
        except _RetryableAnswer as final:
            raise final.error from None
        return self._reply_of_json(raw, started)
