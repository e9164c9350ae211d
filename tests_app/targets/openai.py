"""Any OpenAI-compatible chat completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio).

One client speaks to such a server, for the targets and for the judge: :func:`chat_completion`,
over urllib3's connection pools (one manager per process, shared by its threads, honouring the
proxy variables), retried by stamina. The policy: on 408/409/429/5xx
(or what the server's ``x-should-retry`` says), connection errors and timeouts, retry
``max_retries`` times with exponential backoff (0.5 s doubling, at most 8 s, with jitter), or
after the server's ``Retry-After``/``retry-after-ms`` when it asks for at most 120 s (a longer wait
is not retried). Each attempt is bounded by ``timeout_s``, so a call is bounded by
:attr:`Endpoint.max_call_seconds`. The API key is read from the environment variable named in
``api_key_env`` at call time and is never stored.
"""

from __future__ import annotations

import email.utils
import math
import os
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import stamina
import urllib3

from tests_app.errors import ValidationFailed
from tests_app.targets.base import Message, TargetError, TargetReply

ALLOWED_KEYS = {
    "kind",
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "max_tokens",
    "seed",
    "timeout_s",
    "max_retries",
}
# Local servers (vLLM, Ollama, llama.cpp) accept any key; a header is still sent.
PLACEHOLDER_API_KEY = "no-key-needed"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The longest wait between two attempts: the backoff stays under 8 s on its own, but a server's
# Retry-After up to this long is honoured (and a longer one is not retried at all).
BACKOFF_CEILING_S = 120.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 8.0
USER_AGENT = "replaybench"
# Names the replay call a request belongs to, so a server's logs can be matched with a replay's
# turns and a call tried again recognised.
CALL_HEADER = "X-Replaybench-Call"
ACCOUNT_HEADERS = (
    ("OPENAI_ORG_ID", "OpenAI-Organization"),
    ("OPENAI_PROJECT_ID", "OpenAI-Project"),
)

ErrorKind = Literal["timeout", "unreachable", "refused", "unusable"]


class ModelCallError(TargetError):
    """A chat completions call that gave no usable answer, its retries spent.

    ``kind`` says what happened: ``timeout`` (no answer in time), ``unreachable`` (no connection),
    ``refused`` (an HTTP error answer, ``status`` and the server's own ``message``), ``unusable``
    (an answer that is not a chat completion)."""

    def __init__(
        self, sentence: str, *, kind: ErrorKind, status: int | None = None, message: str = ""
    ) -> None:
        super().__init__(sentence)
        self.kind = kind
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call: the server, the name of the key's variable, the time budget."""

    base_url: str | None
    api_key_env: str | None
    timeout_s: float
    max_retries: int

    @property
    def url(self) -> str:
        base = self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return f"{base.rstrip('/')}/chat/completions"

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    @property
    def max_call_seconds(self) -> float:
        """The longest one call may take, every attempt and wait included."""
        return self.timeout_s * self.attempts + BACKOFF_CEILING_S * self.max_retries

    def api_key(self) -> str:
        name = self.api_key_env
        return (os.environ.get(name, "") if name else "") or PLACEHOLDER_API_KEY


_pools: dict[str, urllib3.PoolManager] = {}
_pools_lock = threading.Lock()


def _pool_for(url: str) -> urllib3.PoolManager:
    """This process's connection pools for the origin of ``url``, through the proxy the
    environment names for its host (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), read once per origin.
    urllib3's managers are thread-safe and keep connections alive between calls."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    with _pools_lock:
        pool = _pools.get(origin)
        if pool is None:
            proxy = urllib.request.getproxies_environment().get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            # No cap on connections: the target slots bound them, and a cap here would make
            # calls queue inside their own timeout.
            pool = _pools[origin] = (
                urllib3.ProxyManager(proxy, maxsize=256, block=False)
                if proxy
                else urllib3.PoolManager(maxsize=256, block=False)
            )
        return pool


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
        return delay / divisor if math.isfinite(delay) else BACKOFF_CEILING_S + 1
    date = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(date) if date else None
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed)) - time.time()


def should_retry(status: int, headers: Mapping[str, str]) -> tuple[bool, float | None]:
    """Whether an HTTP error answer is retried, and after the wait the server asked for."""
    wait_s = retry_after_seconds(headers)
    if wait_s is not None and wait_s > BACKOFF_CEILING_S:
        return False, None
    told = headers.get("x-should-retry")
    retry = (
        told == "true" if told in ("true", "false") else status in (408, 409, 429) or status >= 500
    )
    return retry, wait_s if wait_s is not None and wait_s > 0 else None


def server_message(status: int, raw: bytes) -> str:
    """The server's own words for an error answer: ``error.message`` of an OpenAI error body,
    else the start of the body."""
    try:
        body = orjson.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    text = raw.decode("utf-8", "replace").strip()
    return text[:500] or f"HTTP {status} with an empty body"


class _Retryable(Exception):
    """An attempt worth another: the error to raise if it was the last, and the wait the server
    asked for (None: the usual backoff)."""

    def __init__(self, error: ModelCallError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


def _backoff(error: Exception) -> bool | float:
    """stamina's hook: whether to retry ``error``, and after how long when the server said."""
    if not isinstance(error, _Retryable):
        return False
    return error.wait_s if error.wait_s is not None else True


def _attempt(endpoint: Endpoint, payload: bytes, extra_headers: dict[str, str]) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {endpoint.api_key()}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **extra_headers,
    }
    for variable, header in ACCOUNT_HEADERS:
        if os.environ.get(variable):
            headers[header] = os.environ[variable]
    where = endpoint.base_url or "the default URL"
    tries = f"{endpoint.attempts} attempt{'s' if endpoint.attempts > 1 else ''}"
    url = endpoint.url
    try:
        response = _pool_for(url).request(
            "POST",
            url,
            body=payload,
            headers=headers,
            timeout=endpoint.timeout_s,
            retries=False,  # the policy is stamina's
        )
    except urllib3.exceptions.NewConnectionError as error:
        # Refused, or a name that does not resolve (urllib3 counts these as connect timeouts).
        raise _Retryable(
            ModelCallError(
                f"Could not reach the server at {where} ({tries}): {error}", kind="unreachable"
            )
        ) from None
    except (urllib3.exceptions.TimeoutError, TimeoutError) as error:
        raise _Retryable(
            ModelCallError(
                f"The server did not answer within {endpoint.timeout_s:g} s ({tries}): "
                f"{error or 'timed out'}",
                kind="timeout",
            )
        ) from None
    except urllib3.exceptions.HTTPError as error:
        # Reset, closed mid-answer, a broken proxy.
        raise _Retryable(
            ModelCallError(
                f"Could not reach the server at {where} ({tries}): {error}", kind="unreachable"
            )
        ) from None
    if response.status == 200:
        try:
            answer = orjson.loads(response.data)
        except orjson.JSONDecodeError as error:
            raise ModelCallError(
                f"The server's answer could not be used: not JSON ({error})", kind="unusable"
            ) from None
        if not isinstance(answer, dict):
            raise ModelCallError("The server's answer is not a JSON object.", kind="unusable")
        return answer
    message = server_message(response.status, response.data)
    if response.status == 401:
        hint = (
            f"; is the environment variable {endpoint.api_key_env} set for the worker?"
            if endpoint.api_key_env
            else ""
        )
        sentence = f"The server refused the API key (HTTP 401){hint}"
    else:
        sentence = f"The server answered HTTP {response.status} ({tries} at most): {message}"
    refused = ModelCallError(sentence, kind="refused", status=response.status, message=message)
    retry, wait_s = should_retry(response.status, response.headers)
    if retry:
        raise _Retryable(refused, wait_s)
    raise refused


def chat_completion(
    endpoint: Endpoint, body: dict[str, Any], *, call_id: str | None = None
) -> dict[str, Any]:
    """POST ``body`` to the endpoint's ``/chat/completions`` under the retry policy; the decoded
    answer, or :class:`ModelCallError` once the attempts are spent. ``call_id`` goes out in the
    CALL_HEADER of every attempt."""
    extra_headers = {CALL_HEADER: call_id} if call_id else {}
    payload = orjson.dumps(body)
    try:
        for attempt in stamina.retry_context(
            on=_backoff,
            attempts=endpoint.attempts,
            timeout=None,  # bounded by the attempts and their timeouts
            wait_initial=BACKOFF_INITIAL_S,
            wait_max=BACKOFF_MAX_S,
            wait_jitter=BACKOFF_INITIAL_S,
        ):
            with attempt:
                return _attempt(endpoint, payload, extra_headers)
    except _Retryable as final:
        raise final.error from None
    raise AssertionError("unreachable: stamina runs at least one attempt")


def first_message(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The content of the first choice and the usage block of a chat completion."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ModelCallError("The server answered with no choices.", kind="unusable")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = payload.get("usage")
    return (content if isinstance(content, str) else ""), (usage if isinstance(usage, dict) else {})


def _tokens(usage: dict[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"The openai target is invalid ({field}): {message}",
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


def _integer(config: dict[str, Any], name: str, default: int | None) -> int | None:
    value = config.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _invalid(name, "Must be an integer.")
    return value


@dataclass(frozen=True)
class OpenAIConfig:
    model: str
    endpoint: Endpoint
    temperature: float
    max_tokens: int | None
    seed: int | None

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
        max_tokens = _integer(config, "max_tokens", None)
        if max_tokens is not None and max_tokens < 1:
            raise _invalid("max_tokens", "Must be a positive integer or null.")
        seed = _integer(config, "seed", None)
        timeout_s = _number(config, "timeout_s", 60.0)
        if not 0 < timeout_s <= 3600:
            raise _invalid("timeout_s", "Must be more than 0 and at most 3600 seconds.")
        max_retries = _integer(config, "max_retries", 2)
        if max_retries is None or not 0 <= max_retries <= 10:
            raise _invalid("max_retries", "Must be between 0 and 10.")
        return cls(
            model=model.strip(),
            endpoint=Endpoint(
                base_url=base_url.rstrip("/") if base_url else None,
                api_key_env=api_key_env or None,
                timeout_s=timeout_s,
                max_retries=max_retries,
            ),
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )


class OpenAITarget:
    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.key = f"openai:{config.endpoint.base_url or 'default'}:{config.model}"
        self.max_call_seconds = config.endpoint.max_call_seconds

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OpenAITarget:
        return cls(OpenAIConfig.parse(config))

    def complete(
        self, *, messages: list[Message], reference: str | None, call_id: str | None = None
    ) -> TargetReply:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        if self.config.seed is not None:
            body["seed"] = self.config.seed
        started = time.monotonic()
        content, usage = first_message(chat_completion(self.config.endpoint, body, call_id=call_id))
        return TargetReply(
            content=content,
            latency_ms=int((time.monotonic() - started) * 1000),
            prompt_tokens=_tokens(usage, "prompt_tokens"),
            completion_tokens=_tokens(usage, "completion_tokens"),
        )
