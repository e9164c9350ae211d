"""Targets: validation of Benchmark.target, the OpenAI-compatible client against a real loopback
server (retries, timeouts, the key from the environment), the reference target, the per-target
concurrency cap."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.fake_model import FakeModel, Reply
from tests_app.errors import ValidationFailed
from tests_app.targets import TargetError, target_for
from tests_app.targets import openai as openai_module
from tests_app.targets.concurrency import target_slot
from tests_app.targets.openai import PLACEHOLDER_API_KEY, OpenAITarget, TargetReply
from tests_app.targets.reference import ReferenceTarget

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 2?"},
]


def complete(target: OpenAITarget) -> TargetReply:
    return target.complete(messages=MESSAGES, reference=None)


def openai_target(server: FakeModel, **overrides: Any) -> OpenAITarget:
    config = {"kind": "openai", "model": "fake-model", "base_url": server.base_url, **overrides}
    target = target_for(config)
    assert isinstance(target, OpenAITarget)
    return target


def test_reference_is_the_default_and_answers_with_the_recording() -> None:
    for config in (None, {}, {"kind": "reference"}):
        target = target_for(config)
        assert isinstance(target, ReferenceTarget)
    reply = ReferenceTarget().complete(messages=MESSAGES, reference="4")
    assert (reply.content, reply.latency_ms) == ("4", 0)
    assert ReferenceTarget().complete(messages=MESSAGES, reference=None).content == ""


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"kind": "bard"}, "kind"),
        ({"kind": "openai"}, "model"),
        ({"kind": "openai", "model": "m", "base_url": "ftp://x"}, "base_url"),
        ({"kind": "openai", "model": "m", "timeout_s": 0}, "timeout_s"),
        ({"kind": "openai", "model": "m", "timeout_s": "60"}, "timeout_s"),
        ({"kind": "openai", "model": "m", "temperature": 3}, "temperature"),
        ({"kind": "openai", "model": "m", "max_tokens": 0}, "max_tokens"),
        ({"kind": "openai", "model": "m", "max_retries": 11}, "max_retries"),
        ({"kind": "openai", "model": "m", "api_key_env": "sk-live secret"}, "api_key_env"),
        ({"kind": "openai", "model": "m", "api_key": "sk-123"}, "api_key"),
    ],
)
def test_a_bad_target_is_a_validation_error_naming_the_field(
    config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        target_for(config)
    assert raised.value.code == "invalid_target"
    assert raised.value.fields is not None
    assert field in raised.value.fields


def test_openai_target_sends_the_configured_request(
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TARGET_KEY", "key-from-env")
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    fake_model.answer = lambda messages: "4"
    target = openai_target(
        fake_model, api_key_env="FAKE_TARGET_KEY", temperature=0.3, max_tokens=50
    )

    reply = complete(target)

    assert reply.content == "4"
    assert reply.completion_tokens == 1
    assert reply.prompt_tokens == 7
    [request] = fake_model.chat_requests()
    assert request["model"] == "fake-model"
    assert request["messages"] == MESSAGES
    assert request["temperature"] == 0.3
    assert request["max_tokens"] == 50
    # The key comes from the environment at call time; the target's JSON only names it.
    assert fake_model.authorizations == ["Bearer key-from-env"]
    assert "openai-organization" not in fake_model.headers[0]


def test_the_account_variables_are_sent_as_openais_own_client_sends_them(
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-456")
    complete(openai_target(fake_model))
    [headers] = fake_model.headers
    assert headers["openai-organization"] == "org-123"
    assert headers["openai-project"] == "proj-456"


def test_a_local_server_needs_no_key(
    fake_model: FakeModel,
) -> None:
    complete(openai_target(fake_model))
    assert fake_model.authorizations == [f"Bearer {PLACEHOLDER_API_KEY}"]


def test_a_429_then_success_is_retried(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(status=429))

    reply = complete(openai_target(fake_model, max_retries=2))

    assert reply.content == "Echo: What is 2 + 2?"
    assert len(fake_model.chat_requests()) == 2


def test_a_500_forever_fails_after_the_retries(
    fake_model: FakeModel,
) -> None:
    fake_model.script(*[Reply(status=500)] * 5)

    with pytest.raises(TargetError, match=r"HTTP 500 \(3 attempts at most\): scripted"):
        complete(openai_target(fake_model, max_retries=2))

    assert len(fake_model.chat_requests()) == 3


def test_a_400_is_not_retried(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(status=400))

    with pytest.raises(TargetError, match="HTTP 400"):
        complete(openai_target(fake_model, max_retries=2))

    assert len(fake_model.chat_requests()) == 1


@pytest.mark.timeout(30)
def test_a_server_that_never_answers_times_out(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(hang=True), Reply(hang=True))
    target = openai_target(fake_model, timeout_s=0.5, max_retries=1)

    with pytest.raises(TargetError, match=r"did not answer within 0.5 s \(2 attempts\)"):
        complete(target)

    assert len(fake_model.chat_requests()) == 2
    assert target.max_call_seconds == pytest.approx(0.5 * 2 + 120)


def test_an_unreachable_server_is_a_target_error() -> None:
    target = target_for(
        {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    )
    assert isinstance(target, OpenAITarget)
    with pytest.raises(TargetError, match=r"Could not reach the server at http://127.0.0.1:9/v1"):
        complete(target)


def test_the_proxy_variables_apply(
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A host that does not resolve, reached through a proxy that does: the request arrives at
    # the proxy (the fake server, which answers a proxied request line with a 404). The proxy
    # variables are read when a process makes its client.
    monkeypatch.setattr(openai_module, "_pools", {})
    proxy = fake_model.base_url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = target_for(
        {"kind": "openai", "model": "m", "base_url": "http://model.invalid/v1", "max_retries": 0}
    )
    assert isinstance(target, OpenAITarget)

    with pytest.raises(TargetError, match="HTTP 404"):
        complete(target)


def test_no_proxy_sends_its_hosts_directly(
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy that refuses every connection, and NO_PROXY naming the model's host: the call
    # goes straight to the model and is answered.
    monkeypatch.setattr(openai_module, "_pools", {})
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    target = openai_target(fake_model)

    reply = complete(target)

    assert reply.content
    assert len(fake_model.chat_requests()) == 1


@pytest.mark.timeout(30)
def test_a_retry_after_is_waited_for_and_a_long_one_is_not_retried(
    fake_model: FakeModel,
) -> None:
    # 1.5 s is longer than any first backoff of the policy's own (0.5 s + at most 0.5 s jitter).
    fake_model.script(Reply(status=429, headers=(("Retry-After", "1.5"),)))
    assert complete(openai_target(fake_model)).content.startswith("Echo")
    first, second = fake_model.arrivals
    assert second - first >= 1.5

    fake_model.script(Reply(status=429, headers=(("Retry-After", "600"),)))
    with pytest.raises(TargetError, match="HTTP 429"):
        complete(openai_target(fake_model))
    assert len(fake_model.chat_requests()) == 3


def test_the_server_may_say_whether_to_retry(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(status=503, headers=(("x-should-retry", "false"),)))
    with pytest.raises(TargetError, match="HTTP 503"):
        complete(openai_target(fake_model))
    assert len(fake_model.chat_requests()) == 1

    fake_model.script(Reply(status=400, headers=(("x-should-retry", "true"),)))
    assert complete(openai_target(fake_model)).content.startswith("Echo")
    assert len(fake_model.chat_requests()) == 3


def test_a_refused_key_names_the_variable(
    fake_model: FakeModel,
) -> None:
    fake_model.script(Reply(status=401))
    with pytest.raises(TargetError, match=r"refused the API key .* MODEL_KEY set for the worker"):
        complete(openai_target(fake_model, api_key_env="MODEL_KEY"))
    assert len(fake_model.chat_requests()) == 1


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json at all", "could not be used"),
        ('{"choices": []}', "no choices"),
        ('["a list"]', "not a JSON object"),
    ],
)
def test_an_answer_that_is_not_a_completion_is_a_target_error(
    fake_model: FakeModel, content: str, error: str
) -> None:
    fake_model.script(Reply(raw_body=content.encode()))
    with pytest.raises(TargetError, match=error):
        complete(openai_target(fake_model, max_retries=0))


@pytest.mark.parametrize(
    ("headers", "retry", "wait_s"),
    [
        ({}, True, None),
        ({"retry-after-ms": "250"}, True, 0.25),
        ({"retry-after": "2"}, True, 2.0),
        ({"retry-after": "121"}, False, None),
        ({"retry-after": "soon"}, True, None),
        ({"x-should-retry": "false"}, False, None),
    ],
)
def test_the_retry_policy_of_a_429(headers: dict[str, str], retry: bool, wait_s: Any) -> None:
    assert openai_module.should_retry(429, headers) == (retry, wait_s)


def test_a_retry_after_date_is_seconds_from_now() -> None:
    from email.utils import formatdate

    wait_s = openai_module.retry_after_seconds({"retry-after": formatdate(time.time() + 30)})
    assert wait_s is not None
    assert 28 <= wait_s <= 31


@pytest.mark.parametrize("redis_backed", [True, False])
@pytest.mark.timeout(30)
def test_the_concurrency_cap_holds_across_threads(settings: Any, redis_backed: bool) -> None:
    if redis_backed and not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set; the Redis-backed cap is covered by make test")
    if not redis_backed:
        settings.REDIS_URL = ""
    key = f"test-cap-{redis_backed}-{threading.get_ident()}"
    inside = 0
    most_inside = 0
    counter_lock = threading.Lock()
    release = threading.Event()
    entered = threading.Semaphore(0)

    def call() -> None:
        nonlocal inside, most_inside
        with target_slot(key, limit=2, wait_s=20):
            with counter_lock:
                inside += 1
                most_inside = max(most_inside, inside)
            entered.release()
            release.wait(20)
            with counter_lock:
                inside -= 1

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    # Two get in; the other three must wait until the first ones leave.
    assert entered.acquire(timeout=10)
    assert entered.acquire(timeout=10)
    assert not entered.acquire(timeout=0.3)
    release.set()
    for thread in threads:
        thread.join(timeout=20)
    assert most_inside == 2
    assert inside == 0


def test_no_free_slot_in_time_is_a_target_error(settings: Any) -> None:
    settings.REDIS_URL = ""
    with target_slot("busy", limit=1, wait_s=5):
        failed: list[Exception] = []

        def second() -> None:
            try:
                with target_slot("busy", limit=1, wait_s=0.1):
                    pass
            except TargetError as error:
                failed.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=10)
    assert len(failed) == 1
    assert "No free slot" in str(failed[0])


def test_targets_share_one_client_across_threads_and_read_the_key_at_each_call(
    fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TARGET_KEY", "first-key")
    targets = [openai_target(fake_model, api_key_env="FAKE_TARGET_KEY") for _ in range(8)]
    replies: list[str] = []
    lock = threading.Lock()

    def call(target: OpenAITarget) -> None:
        reply = complete(target)
        with lock:
            replies.append(reply.content)

    threads = [threading.Thread(target=call, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert replies == ["Echo: What is 2 + 2?"] * 8
    url = targets[0].config.endpoint.url
    assert openai_module._pool_for(url) is openai_module._pool_for(url)
    # A rotated variable is read by the next call; nothing is kept of the old key.
    monkeypatch.setenv("FAKE_TARGET_KEY", "second-key")
    complete(targets[0])
    assert fake_model.authorizations[-1] == "Bearer second-key"
    assert fake_model.authorizations.count("Bearer first-key") == 8
    assert fake_model.user_agents[-1] == "replaybench"


def test_a_seed_is_sent_when_the_target_has_one(fake_model: FakeModel) -> None:
    complete(openai_target(fake_model, seed=42))
    complete(openai_target(fake_model))
    first, second = fake_model.chat_requests()
    assert first["seed"] == 42
    assert "seed" not in second
