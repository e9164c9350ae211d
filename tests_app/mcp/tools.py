"""The MCP tools: each parses its arguments with the REST endpoint's input serializer, calls the
same service or selector as the endpoint, and answers the endpoint's body.

So a tool is scoped and validated exactly like its endpoint, and its errors are the endpoint's
(raised, then rendered by the API's one exception handler into ``{"detail", "code"}``).
Invocations opened here are recorded with client ``mcp`` (the actor's client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from tests_app.actors import Actor
from tests_app.api import compare_serializers as compare_s
from tests_app.api import discovery_serializers as discovery_s
from tests_app.api import lifecycle_serializers as lifecycle_s
from tests_app.api import operations
from tests_app.api import run_all_serializers as run_all_s
from tests_app.api.base import StrictSerializer
from tests_app.mcp.schemas import request_schema
from tests_app.selectors.invocations import (
    SETTLED_STATUSES,
    get_visible_invocation,
    invocation_steps,
)
from tests_app.selectors.test_detail import download_url

WAIT_LIMIT_S = 60
# How often wait_for_invocation reads the status: the database is the truth, and a small
# indexed read now and then per waiting agent costs less than a channel-layer subscription.
WAIT_POLL_S = 0.5

Handler = Callable[[Actor, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    input_serializer: type[StrictSerializer]
    handler: Handler
    # The REST endpoint whose body schema the tool takes; else ``schema``, its own.
    endpoint: str | None = None
    schema: dict[str, Any] | None = None
    read_only: bool = False

    def input_schema(self) -> dict[str, Any]:
        if self.endpoint is not None:
            return request_schema(self.endpoint)
        if self.schema is None:
            raise ValueError(f"The tool {self.name} has neither an endpoint nor a schema")
        return dict(self.schema)

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The validated arguments, or a DRF ValidationError (a 400 body, code invalid)."""
        serializer = self.input_serializer(data=arguments)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


def _in_thread(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run a synchronous service on Django's thread for database work, as views run."""
    return database_sync_to_async(function)


# --- the handlers of their own (the others are the endpoints' operations) -------------------


async def _wait_for_invocation(actor: Actor, data: dict[str, Any]) -> Any:
    read = database_sync_to_async(get_visible_invocation)
    deadline = time.monotonic() + data["timeout_s"]
    while True:
        # Read again on every round: the scope is checked as often as the status.
        invocation = await read(
            user=actor.user, test_id=data["test_id"], invocation_id=data["invocation_id"]
        )
        settled = invocation.status in SETTLED_STATUSES
        if settled or time.monotonic() >= deadline:
            break
        await asyncio.sleep(WAIT_POLL_S)
    steps = await database_sync_to_async(invocation_steps)(invocation=invocation)
    return {
        "invocation_id": str(invocation.pk),
        "run_id": str(invocation.run_id),
        "status": invocation.status,
        "settled": settled,
        "error": invocation.error,
        "client": invocation.client,
        "steps_count": invocation.steps_count,
        "steps": steps,
    }


def _export_test(actor: Actor, data: dict[str, Any]) -> Any:
    body = operations.export(actor, data)
    return {**body, "download_url": download_url(body["upload_id"])}


# --- arguments that have no REST endpoint ----------------------------------------------------


class WaitForInvocationInputSerializer(StrictSerializer):
    test_id = lifecycle_s.StrictUUIDField(help_text="The test of the invocation.")
    invocation_id = lifecycle_s.StrictUUIDField(help_text="The invocation that run_replay started.")
    timeout_s = lifecycle_s.StrictIntegerField(
        required=False,
        default=WAIT_LIMIT_S,
        min_value=1,
        max_value=WAIT_LIMIT_S,
        help_text=f"The longest to wait, in seconds (1..{WAIT_LIMIT_S}, default {WAIT_LIMIT_S}).",
    )


# Written by hand, in the shape the OpenAPI schema gives the other tools' arguments.
WAIT_FOR_INVOCATION_SCHEMA = {
    "type": "object",
    "properties": {
        "test_id": {"type": "string", "format": "uuid", "description": "The test."},
        "invocation_id": {
            "type": "string",
            "format": "uuid",
            "description": "The invocation that run_replay started.",
        },
        "timeout_s": {
            "type": "integer",
            "minimum": 1,
            "maximum": WAIT_LIMIT_S,
            "default": WAIT_LIMIT_S,
            "description": f"The longest to wait, in seconds (default {WAIT_LIMIT_S}).",
        },
    },
    "required": ["test_id", "invocation_id"],
    "additionalProperties": False,
}


TOOLS: list[Tool] = [
    Tool(
        name="search_benchmarks",
        title="Search benchmarks",
        description=(
            "Find the benchmarks you may see, by a case-insensitive substring of the benchmark's "
            "or its eval's name. Each has an id (pass it as benchmark_id to start_test), its "
            "entries (recorded conversations) and its default target (the model under test)."
        ),
        input_serializer=lifecycle_s.BenchmarkSearchInputSerializer,
        handler=_in_thread(operations.benchmark_search),
        endpoint="benchmark/search",
        read_only=True,
    ),
    Tool(
        name="start_test",
        title="Start a test",
        description=(
            "Create a test of a benchmark, against target_id or the benchmark's default target. "
            "Answers test_id. Then repeat next_run, run_replay, wait_for_invocation and "
            "end_invocation until next_run fails with code test_completed. Operators only."
        ),
        input_serializer=lifecycle_s.StartTestInputSerializer,
        handler=_in_thread(operations.start),
        endpoint="test/start",
    ),
    Tool(
        name="next_run",
        title="Claim the next run",
        description=(
            "Claim the next pending run of a test and open an invocation on it. Answers "
            "invocation_id and run_id (pass both to run_replay), current_run and total_runs. "
            "Fails with code test_completed when no run is left."
        ),
        input_serializer=lifecycle_s.NextTestInputSerializer,
        handler=_in_thread(operations.next_run),
        endpoint="test/next",
    ),
    Tool(
        name="run_replay",
        title="Replay a run",
        description=(
            "Start replaying the claimed run's conversation against the model, turn by turn, "
            "in the background. Returns at once; call wait_for_invocation next. Pass the "
            "invocation_id of next_run as test_invocation_id."
        ),
        input_serializer=lifecycle_s.RunTestInputSerializer,
        handler=_in_thread(operations.run),
        endpoint="test/run",
    ),
    Tool(
        name="wait_for_invocation",
        title="Wait for a replay",
        description=(
            f"Wait (at most {WAIT_LIMIT_S} s) until an invocation's replay is over: status "
            "replayed (end it with end_invocation), failed (error says why) or stopped. Answers "
            "the status and the replayed steps (each turn's input, the model's output and the "
            "recorded reference). settled=false means it is still running: call it again."
        ),
        input_serializer=WaitForInvocationInputSerializer,
        handler=_wait_for_invocation,
        schema=WAIT_FOR_INVOCATION_SCHEMA,
        read_only=True,
    ),
    Tool(
        name="end_invocation",
        title="End an invocation with a grade",
        description=(
            "End a replayed invocation. Either grade=true (the AI judge grades it in the "
            "background; the answer has the pending grade_id), or your own score 0..1 with "
            "optional passed and feedback, or neither (ended ungraded). Pass the invocation_id "
            "as test_invocation_id."
        ),
        input_serializer=lifecycle_s.EndTestInputSerializer,
        handler=_in_thread(operations.end),
        endpoint="test/end",
    ),
    Tool(
        name="stop_invocation",
        title="Stop an invocation and its test",
        description=(
            "Stop an invocation and its test; a running replay halts before its next turn. "
            "success=false with a message when it had already finished."
        ),
        input_serializer=lifecycle_s.StopTestInputSerializer,
        handler=_in_thread(operations.stop),
        endpoint="test/stop",
    ),
    Tool(
        name="get_test",
        title="Read a test",
        description=(
            "A test with its status, status_summary (progress, mean_score, pass_rate with "
            "intervals), runs and invocations (newest first, paged) and their grades."
        ),
        input_serializer=lifecycle_s.GetTestInputSerializer,
        handler=_in_thread(operations.get),
        endpoint="test/get",
        read_only=True,
    ),
    Tool(
        name="search_tests",
        title="Search tests",
        description=(
            "Search the tests you may see: by eval, department or target ids, archived or not, "
            "creation dates, or substrings of the eval's or department's name; newest first, "
            "with total_count and filter facets."
        ),
        input_serializer=discovery_s.SearchTestInputSerializer,
        handler=_in_thread(operations.search),
        endpoint="test/search",
        read_only=True,
    ),
    Tool(
        name="compare_tests",
        title="Compare tests",
        description=(
            "Compare 2 to 5 tests of one benchmark; the first is the baseline. Answers each "
            "test's figures, each candidate's paired deltas (mean_score_delta with a bootstrap "
            "interval, Wilcoxon p_value, pass_rate_delta, regressions and improvements) and a "
            "page of entries with their change; only='regressions' lists just those."
        ),
        input_serializer=compare_s.CompareTestInputSerializer,
        handler=_in_thread(operations.compare),
        endpoint="test/compare",
        read_only=True,
    ),
    Tool(
        name="run_all",
        title="Run every pending run",
        description=(
            "Let the server's workers claim, replay and end every pending run of a test, "
            "concurrency at once, grading each (grade='ai': the configured judge, or the offline "
            "reference grader; 'none': ungraded), until none is pending or max_runs were "
            "claimed. Returns at once; poll get_test until its status is completed. Fails with "
            "code run_all_active when one already drives the test."
        ),
        input_serializer=run_all_s.RunAllTestInputSerializer,
        handler=_in_thread(operations.run_all),
        endpoint="test/run_all",
    ),
    Tool(
        name="retry_failed",
        title="Retry failed runs",
        description=(
            "Put a test's failed runs (and stopped ones, with statuses=['failed', 'stopped']) "
            "back to pending, keeping their invocations as history; a completed test runs "
            "again. Answers requeued_count; then next_run or run_all runs them."
        ),
        input_serializer=run_all_s.RetryTestInputSerializer,
        handler=_in_thread(operations.retry),
        endpoint="test/retry",
    ),
    Tool(
        name="export_test",
        title="Export a test",
        description=(
            "Export a test as a ZIP (manifest.json, runs.csv, turns.csv). Answers upload_id and "
            "download_url, a path on this server to GET with the same API key."
        ),
        input_serializer=discovery_s.ExportTestInputSerializer,
        handler=_in_thread(_export_test),
        endpoint="test/export",
    ),
]

TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
