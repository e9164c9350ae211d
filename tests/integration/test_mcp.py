"""The MCP server at /mcp, driven by the ``mcp`` package's own client (``ClientSession`` over its
streamable HTTP transport) against a live daphne, with a Celery worker replaying against the
fake model server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests import factories
from tests.fake_model import FakeModel
from tests.integration import test_embedded_runtime as embedded
from tests.integration.daphne import (  # noqa: F401
    REPOSITORY,
    DaphneServer,
    daphne_server_fixture,
    post_api,
)
from tests_app.models import Test, TestInvocation, TestRun

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

embedded_server = embedded.embedded_server  # the `make run` server fixture, shared

TOOL_NAMES = {
    "search_benchmarks",
    "start_test",
    "next_run",
    "run_replay",
    "wait_for_invocation",
    "end_invocation",
    "stop_invocation",
    "get_test",
    "search_tests",
    "compare_tests",
    "run_all",
    "retry_failed",
    "export_test",
}


@asynccontextmanager
async def mcp_session(server: DaphneServer, key: str) -> AsyncIterator[ClientSession]:
    # The MCP client takes an HTTP client: that is where the key header goes.
    async with (
        httpx2.AsyncClient(
            headers={"X-Api-Key": key}, timeout=httpx2.Timeout(30, read=120)
        ) as http_client,
        streamable_http_client(f"{server.http_url}/mcp", http_client=http_client) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        yield session


def with_session(
    server: DaphneServer, key: str, scenario: Callable[[ClientSession], Awaitable[Any]]
) -> Any:
    async def run() -> Any:
        async with mcp_session(server, key) as session:
            return await scenario(session)

    return asyncio.run(run())


def answer(result: types.CallToolResult | Any) -> dict[str, Any]:
    """A successful tool's JSON answer (its text and its structured content agree)."""
    assert isinstance(result, types.CallToolResult)
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert not result.is_error, text.text
    body = json.loads(text.text)
    assert body == result.structured_content
    return dict(body)


def tool_error(result: types.CallToolResult | Any) -> dict[str, Any]:
    """A failed tool's REST error body."""
    assert isinstance(result, types.CallToolResult)
    assert result.is_error
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return dict(json.loads(text.text))


def test_an_agent_runs_a_whole_test_through_mcp(
    daphne_server: DaphneServer,
    celery_worker: Any,
    fake_model: FakeModel,
    research: Any,
    operator: Any,
) -> None:
    benchmark = factories.make_benchmark(
        department=research,
        entries=1,
        turns=2,
        name="Refunds over MCP",
        target={"kind": "openai", "model": "fake-model", "base_url": fake_model.base_url},
    )
    _, key = factories.make_api_key(operator)

    async def scenario(session: ClientSession) -> dict[str, Any]:
        listed = await session.list_tools()
        found = answer(await session.call_tool("search_benchmarks", {"search": "over mcp"}))
        started = answer(
            await session.call_tool("start_test", {"benchmark_id": found["benchmarks"][0]["id"]})
        )
        test_id = started["test_id"]
        claim = answer(await session.call_tool("next_run", {"test_id": test_id}))
        ids = {
            "test_id": test_id,
            "test_invocation_id": claim["invocation_id"],
            "run_id": claim["run_id"],
        }
        ran = answer(await session.call_tool("run_replay", ids))
        waited = answer(
            await session.call_tool(
                "wait_for_invocation",
                {"test_id": test_id, "invocation_id": claim["invocation_id"]},
            )
        )
        ended = answer(
            await session.call_tool("end_invocation", {**ids, "score": 0.75, "feedback": "fine"})
        )
        after = tool_error(await session.call_tool("next_run", {"test_id": test_id}))
        detail = answer(await session.call_tool("get_test", {"test_id": test_id}))
        return {
            "tools": listed.tools,
            "found": found,
            "claim": claim,
            "ran": ran,
            "waited": waited,
            "ended": ended,
            "after": after,
            "detail": detail,
        }

    seen = with_session(daphne_server, key, scenario)

    tools = {tool.name: tool for tool in seen["tools"]}
    assert set(tools) == TOOL_NAMES
    start_schema = tools["start_test"].input_schema
    assert start_schema["required"] == ["benchmark_id"]
    assert start_schema["properties"]["benchmark_id"]["format"] == "uuid"
    assert start_schema["additionalProperties"] is False
    assert tools["get_test"].annotations is not None
    assert tools["get_test"].annotations.read_only_hint is True
    assert all(tool.description for tool in seen["tools"])

    assert seen["found"]["total_count"] == 1
    assert seen["found"]["benchmarks"][0]["id"] == str(benchmark.pk)
    claim = seen["claim"]
    assert (claim["current_run"], claim["total_runs"]) == (1, 1)
    assert seen["ran"]["invocation_id"] == claim["invocation_id"]

    waited = seen["waited"]
    assert waited["status"] == "replayed"
    assert waited["settled"] is True
    assert waited["client"] == "mcp"
    assert [step["turn"] for step in waited["steps"]] == [1, 2]
    for step in waited["steps"]:
        assert step["output"] == f"Echo: {step['input']}"
        assert step["error"] == ""

    assert seen["ended"]["invocation_id"] == claim["invocation_id"]
    assert seen["ended"]["score"] == pytest.approx(0.75)
    assert seen["after"]["code"] == "test_completed"
    assert seen["after"]["detail"]

    detail = seen["detail"]
    assert detail["runs"][0]["invocation_id"] == claim["invocation_id"]
    assert detail["status"] == "completed"
    assert detail["status_summary"]["mean_score"] == pytest.approx(0.75)
    [invocation] = detail["invocations"]
    assert invocation["client"] == "mcp"
    assert invocation["status"] == "ended"
    assert invocation["grade"]["feedback"] == "fine"

    # The database says the same: the invocation was opened through MCP, by the operator.
    stored = TestInvocation.objects.get(pk=claim["invocation_id"])
    assert stored.client == TestInvocation.Client.MCP
    assert stored.actor_id == operator.pk
    assert Test.objects.get(pk=detail["test"]["id"]).status == Test.Status.COMPLETED
    assert len(fake_model.chat_requests()) == 2


def test_run_all_and_retry_failed_drive_a_test_as_mcp(
    daphne_server: DaphneServer, celery_worker: Any, research: Any, operator: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=3, turns=1)
    _, key = factories.make_api_key(operator)

    async def scenario(session: ClientSession) -> dict[str, Any]:
        started = answer(await session.call_tool("start_test", {"benchmark_id": str(benchmark.pk)}))
        test_id = started["test_id"]
        running = answer(await session.call_tool("run_all", {"test_id": test_id, "concurrency": 2}))
        again = tool_error(await session.call_tool("run_all", {"test_id": test_id}))
        # Nothing tells an MCP client that it is over but get_test: poll it, as an agent would,
        # until every run finished and no grade is pending (grades may land after the last run).
        for _ in range(600):
            detail = answer(
                await session.call_tool("get_test", {"test_id": test_id, "runs_page_size": 10})
            )
            pending = [
                item
                for item in detail["invocations"]
                if (item["grade"] or {}).get("status") == "pending"
            ]
            if detail["status"] == "completed" and not pending:
                break
            await asyncio.sleep(0.1)
        # One run fails after the fact; retry_failed puts it back to pending.
        await asyncio.to_thread(
            lambda: TestRun.objects.filter(test_id=test_id, ordinal=1).update(
                status=TestRun.Status.FAILED
            )
        )
        retried = answer(await session.call_tool("retry_failed", {"test_id": test_id}))
        return {"running": running, "again": again, "detail": detail, "retried": retried}

    seen = with_session(daphne_server, key, scenario)

    assert seen["running"]["status"] == "active"
    assert seen["running"]["concurrency"] == 2
    assert seen["running"]["grader"] == "reference"
    # Still driving the test, or already done with it: either way a second one is refused.
    assert seen["again"]["code"] in {"run_all_active", "test_completed"}
    detail = seen["detail"]
    assert detail["status"] == "completed"
    assert detail["status_summary"]["graded"] == 3
    assert {invocation["client"] for invocation in detail["invocations"]} == {"mcp"}
    assert seen["retried"] == {"requeued_count": 1}
    test_id = detail["test"]["id"]
    assert TestRun.objects.get(test_id=test_id, ordinal=1).status == TestRun.Status.PENDING
    assert set(TestInvocation.objects.filter(test_id=test_id).values_list("client", flat=True)) == {
        "mcp"
    }


def test_read_tools_answer_what_the_rest_endpoints_answer(
    daphne_server: DaphneServer, research: Any, operator: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=2)
    baseline = factories.make_graded_test(benchmark, [[(0.9, True)], [(0.7, True)]])
    candidate = factories.make_graded_test(benchmark, [[(0.5, False)], [(0.7, True)]])
    running = factories.TestFactory.create(benchmark=benchmark, status=Test.Status.RUNNING)
    invocation = factories.TestInvocationFactory.create(
        run__test=running, status=TestInvocation.Status.RUNNING
    )
    _, key = factories.make_api_key(operator)
    compare_body = {"test_ids": [str(baseline.pk), str(candidate.pk)]}
    search_body = {"page_size": 5}

    async def scenario(session: ClientSession) -> dict[str, Any]:
        return {
            "compare": answer(await session.call_tool("compare_tests", compare_body)),
            "search": answer(await session.call_tool("search_tests", search_body)),
            # Before get, whose resources list the exports.
            "export": answer(await session.call_tool("export_test", {"test_id": str(baseline.pk)})),
            "get": answer(await session.call_tool("get_test", {"test_id": str(baseline.pk)})),
        }

    async def stop(session: ClientSession) -> dict[str, Any]:
        arguments = {"invocation_id": str(invocation.pk)}
        return answer(await session.call_tool("stop_invocation", arguments))

    seen = with_session(daphne_server, key, scenario)

    assert seen["compare"] == post_api(daphne_server, key, "compare", compare_body)[1]
    assert seen["compare"]["deltas"][0]["mean_score_delta"] == pytest.approx(-0.2)
    assert seen["search"] == post_api(daphne_server, key, "search", search_body)[1]
    assert seen["search"]["total_count"] == 3
    assert seen["get"] == post_api(daphne_server, key, "get", {"test_id": str(baseline.pk)})[1]
    export = seen["export"]
    assert export["download_url"] == f"/api/v5/uploads/{export['upload_id']}/download"
    assert export["file_name"].endswith(".zip")
    assert export["row_count"] > 0
    with httpx.Client(base_url=daphne_server.http_url, timeout=30) as http:
        download = http.get(export["download_url"], headers={"X-Api-Key": key})
    assert download.status_code == 200
    assert download.content[:2] == b"PK"
    stopped = with_session(daphne_server, key, stop)
    assert (stopped["invocation_id"], stopped["success"]) == (str(invocation.pk), True)
    assert "The test is stopped too" in stopped["message"]
    assert TestInvocation.objects.get(pk=invocation.pk).status == TestInvocation.Status.STOPPED
    assert Test.objects.get(pk=running.pk).status == Test.Status.STOPPED


def test_an_outsider_sees_nothing_of_research(
    daphne_server: DaphneServer, research: Any, outsider: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1, name="Research only")
    test = factories.TestFactory.create(benchmark=benchmark)
    _, key = factories.make_api_key(outsider)

    async def scenario(session: ClientSession) -> dict[str, Any]:
        return {
            "benchmarks": answer(await session.call_tool("search_benchmarks", {})),
            "tests": answer(await session.call_tool("search_tests", {})),
            "get": tool_error(await session.call_tool("get_test", {"test_id": str(test.pk)})),
            "start": tool_error(
                await session.call_tool("start_test", {"benchmark_id": str(benchmark.pk)})
            ),
        }

    seen = with_session(daphne_server, key, scenario)

    assert seen["benchmarks"] == {"benchmarks": [], "total_count": 0}
    assert seen["tests"]["tests"] == []
    assert seen["tests"]["total_count"] == 0
    assert seen["get"] == {"detail": "No test with that id is visible to you.", "code": "not_found"}
    assert seen["start"]["code"] == "not_found"


def test_errors_are_tool_errors_with_the_rest_body(
    daphne_server: DaphneServer, research: Any, viewer: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1)
    _, key = factories.make_api_key(viewer)

    async def scenario(session: ClientSession) -> dict[str, Any]:
        return {
            "viewer_starts": tool_error(
                await session.call_tool("start_test", {"benchmark_id": str(benchmark.pk)})
            ),
            "bad_id": tool_error(await session.call_tool("get_test", {"test_id": "nope"})),
            "unknown_field": tool_error(
                await session.call_tool("next_run", {"test_id": str(benchmark.pk), "x": 1})
            ),
            "unknown_tool": tool_error(await session.call_tool("drop_tables", {})),
        }

    seen = with_session(daphne_server, key, scenario)

    assert seen["viewer_starts"]["code"] == "permission_denied"
    assert "operators only" in seen["viewer_starts"]["detail"]
    assert seen["bad_id"]["code"] == "invalid"
    assert seen["bad_id"]["detail"].startswith("The request is invalid (test_id)")
    assert list(seen["bad_id"]["fields"]) == ["test_id"]
    assert seen["unknown_field"]["fields"] == {"x": ["Unknown field."]}
    assert seen["unknown_tool"] == {"detail": "No tool named 'drop_tables'.", "code": "not_found"}
    assert not Test.objects.exists()


def test_no_key_or_a_bad_key_is_refused_with_401(
    daphne_server: DaphneServer, operator: Any
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    url = f"{daphne_server.http_url}/mcp"
    _, key = factories.make_api_key(operator)
    with httpx.Client(timeout=30) as http:
        without = http.post(url, json=initialize, headers=headers)
        invented = http.post(url, json=initialize, headers={**headers, "X-Api-Key": "abc.def"})
        bearer = http.post(
            url, json=initialize, headers={**headers, "Authorization": f"Bearer {key}"}
        )

    for refused in (without, invented):
        assert refused.status_code == 401
        assert refused.json()["code"] == "not_authenticated"
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert bearer.status_code == 200
    assert bearer.json()["result"]["serverInfo"]["name"] == "replaybench"


def test_the_stdio_bridge_forwards_to_the_server_with_the_key(
    daphne_server: DaphneServer, research: Any, viewer: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1, name="Bridged")
    _, key = factories.make_api_key(viewer)
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tests_app.mcp.stdio"],
        env={"REPLAYBENCH_URL": daphne_server.http_url, "REPLAYBENCH_API_KEY": key},
        cwd=str(REPOSITORY),
    )

    async def run() -> dict[str, Any]:
        async with stdio_client(parameters) as streams, ClientSession(*streams) as session:
            initialized = await session.initialize()
            listed = await session.list_tools()
            found = answer(await session.call_tool("search_benchmarks", {"search": "bridged"}))
            refused = tool_error(
                await session.call_tool("start_test", {"benchmark_id": str(benchmark.pk)})
            )
            return {
                "instructions": initialized.instructions,
                "tools": {tool.name for tool in listed.tools},
                "found": found,
                "refused": refused,
            }

    seen = asyncio.run(run())

    assert "search_benchmarks" in (seen["instructions"] or "")
    assert seen["tools"] == TOOL_NAMES
    assert [item["id"] for item in seen["found"]["benchmarks"]] == [str(benchmark.pk)]
    assert seen["refused"]["code"] == "permission_denied"


def test_the_embedded_server_of_make_run_serves_mcp(embedded_server: dict[str, Any]) -> None:
    """`make run`'s runtime: SQLite, replays on the server's threads, no Redis."""
    server = DaphneServer(host="127.0.0.1", port=int(embedded_server["base"].rsplit(":", 1)[1]))

    async def scenario(session: ClientSession) -> dict[str, Any]:
        found = answer(await session.call_tool("search_benchmarks", {}))
        benchmark_id = found["benchmarks"][0]["id"]
        test_id = answer(await session.call_tool("start_test", {"benchmark_id": benchmark_id}))[
            "test_id"
        ]
        claim = answer(await session.call_tool("next_run", {"test_id": test_id}))
        answer(
            await session.call_tool(
                "run_replay",
                {
                    "test_id": test_id,
                    "test_invocation_id": claim["invocation_id"],
                    "run_id": claim["run_id"],
                },
            )
        )
        waited = answer(
            await session.call_tool(
                "wait_for_invocation",
                {"test_id": test_id, "invocation_id": claim["invocation_id"]},
            )
        )
        return {"found": found, "waited": waited}

    seen = with_session(server, embedded_server["key"], scenario)

    assert seen["found"]["total_count"] >= 1
    waited = seen["waited"]
    assert (waited["status"], waited["settled"], waited["client"]) == ("replayed", True, "mcp")
    assert waited["steps"]
    assert all(step["output"] for step in waited["steps"])
