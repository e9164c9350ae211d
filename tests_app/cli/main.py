"""``replaybench``: the command-line client of the API, for people and CI pipelines.

It reads ``REPLAYBENCH_URL`` (default http://127.0.0.1:8000) and ``REPLAYBENCH_API_KEY``.
Exit codes: 0 done (for ``gate``: the candidate is not worse), 1 the candidate is worse (``gate``),
2 a usage, configuration, connection or API error. Tables and progress are for people (progress
on stderr); ``--json`` prints one JSON document on stdout for machines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tests_app.cli import gate as gate_rules
from tests_app.cli.client import ApiError, Client, CliError, Settings
from tests_app.cli.client import Progress as TestProgress

app = typer.Typer(
    name="replaybench",
    help="Run and compare replaybench tests, and gate CI on regressions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def out() -> Console:
    # Made when printing, so the width follows the environment of the moment (COLUMNS).
    return Console()


def err() -> Console:
    return Console(stderr=True)


def id_column(table: Table, name: str) -> None:
    """A column of UUIDs, never folded: people copy them into the next command."""
    table.add_column(name, no_wrap=True, min_width=36)


DEFAULT_TIMEOUT_S = 3600.0

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
TimeoutOption = Annotated[
    float, typer.Option(help="The longest to wait for the test to finish, in seconds.")
]


@contextmanager
def session() -> Iterator[Client]:
    """A client from the environment; any error of the block exits 2 with its sentence."""
    try:
        with Client(Settings.from_environment()) as client:
            yield client
    except ApiError as error:
        err().print(
            f"[red]error:[/red] {error.detail} [dim]({error.code}, HTTP {error.status})[/dim]"
        )
        if error.fields:
            err().print(json.dumps(error.fields))
        raise typer.Exit(gate_rules.EXIT_ERROR) from error
    except CliError as error:
        err().print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(gate_rules.EXIT_ERROR) from error


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(values: list[float] | None) -> str:
    return "-" if not values else f"[{values[0]:.3f}, {values[1]:.3f}]"


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[TestProgress], None]]:
    """A progress bar on stderr, fed with the test's progress; silent when not enabled."""
    if not enabled:
        yield lambda _progress: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        transient=False,
    ) as bar:
        task = bar.add_task("runs", total=None)

        def update(progress: TestProgress) -> None:
            total = progress.total or None
            finished = min(progress.finished, progress.total) if total else progress.finished
            bar.update(task, completed=finished, total=total, description=progress.status)

        yield update


def wait(client: Client, test_id: str, *, quiet: bool, timeout_s: float) -> dict[str, Any]:
    with progress_bar(not quiet) as update:
        return client.wait_for_test(test_id, on_progress=update, timeout_s=timeout_s)


def start_test(
    client: Client,
    benchmark_id: str,
    *,
    target_id: str | None,
    run_all: bool,
    concurrency: int | None,
) -> dict[str, Any]:
    started = client.post("test/start", {"benchmark_id": benchmark_id, "target_id": target_id})
    answer: dict[str, Any] = {"test_id": started["test_id"]}
    if run_all:
        # Every run graded: by the configured judge, else the offline reference grader.
        body: dict[str, Any] = {"test_id": started["test_id"], "grade": "ai"}
        if concurrency is not None:
            body["concurrency"] = concurrency
        answer["run_all"] = client.post("test/run_all", body)
    return answer


def summary_row(detail: dict[str, Any]) -> dict[str, Any]:
    summary = detail.get("status_summary") or {}
    return {
        "test_id": (detail.get("test") or {}).get("id"),
        "status": detail["status"],
        "total_runs": summary.get("total_runs"),
        "graded": summary.get("graded"),
        "mean_score": summary.get("mean_score"),
        "mean_score_ci": summary.get("mean_score_ci"),
        "pass_rate": summary.get("pass_rate"),
        "pass_rate_ci": summary.get("pass_rate_ci"),
    }


def print_summary(row: dict[str, Any]) -> None:
    table = Table(title=f"test {row['test_id']}")
    for column in ("status", "runs", "graded", "mean score", "95% CI", "pass rate", "95% CI"):
        table.add_column(column)
    table.add_row(
        row["status"],
        str(row["total_runs"]),
        str(row["graded"]),
        _number(row["mean_score"]),
        _interval(row["mean_score_ci"]),
        _number(row["pass_rate"]),
        _interval(row["pass_rate_ci"]),
    )
    out().print(table)


# --- commands -----------------------------------------------------------------------------------


@app.command()
def benchmarks(
    search: Annotated[
        str | None, typer.Option(help="A substring of the benchmark's or its eval's name.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the benchmarks you may see (their ids start tests)."""
    with session() as client:
        page = client.post("benchmark/search", {"search": search, "page_size": 100})
    if as_json:
        print_json(page)
        return
    table = Table(title=f"{page['total_count']} benchmarks")
    id_column(table, "id")
    for column in ("name", "eval", "department", "entries", "default target", "model"):
        table.add_column(column, overflow="fold")
    for item in page["benchmarks"]:
        table.add_row(
            item["id"],
            item["name"],
            item["eval_name"],
            item["department_name"],
            str(item["entries"]),
            item["target_name"],
            item["model"],
        )
    out().print(table)


@app.command()
def start(
    benchmark_id: Annotated[str, typer.Argument(help="The benchmark to test.")],
    target: Annotated[
        str | None, typer.Option(help="The target (model) to test; default: the benchmark's.")
    ] = None,
    run_all: Annotated[
        bool, typer.Option("--run-all", help="Let the server run every run and grade it.")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs replayed at once with --run-all.")
    ] = None,
    wait_for_it: Annotated[
        bool, typer.Option("--wait", help="Wait until the test is finished and graded.")
    ] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Start a test of a benchmark; print its id."""
    if concurrency is not None and not run_all:
        raise typer.BadParameter("--concurrency goes with --run-all.", param_hint="--concurrency")
    with session() as client:
        answer = start_test(
            client, benchmark_id, target_id=target, run_all=run_all, concurrency=concurrency
        )
        if wait_for_it:
            detail = wait(client, answer["test_id"], quiet=as_json, timeout_s=timeout)
            answer["summary"] = summary_row(detail)
    if as_json:
        print_json(answer)
        return
    out().print(answer["test_id"])
    if "summary" in answer:
        print_summary(answer["summary"])


@app.command()
def watch(
    test_id: Annotated[str, typer.Argument(help="The test to watch.")],
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Show a test's progress until it is finished and graded."""
    with session() as client:
        detail = wait(client, test_id, quiet=as_json, timeout_s=timeout)
    if as_json:
        print_json(summary_row(detail))
    else:
        print_summary(summary_row(detail))


def print_comparison(comparison: dict[str, Any]) -> None:
    tests = Table(title="tests (the first is the baseline)")
    id_column(tests, "test")
    for column in ("target", "model", "graded", "mean score", "95% CI", "pass rate"):
        tests.add_column(column, overflow="fold")
    for item in comparison["tests"]:
        tests.add_row(
            item["id"],
            item["target"]["name"],
            item["target"]["model"],
            str(item["graded"]),
            _number(item["mean_score"]),
            _interval(item["mean_score_ci"]),
            _number(item["pass_rate"]),
        )
    out().print(tests)
    deltas = Table(title="candidate against baseline (paired by entry)")
    id_column(deltas, "candidate")
    for column in ("entries", "mean score Δ", "95% CI", "p-value", "pass rate Δ"):
        deltas.add_column(column, overflow="fold")
    deltas.add_column("regressions / improvements")
    for delta in comparison["deltas"]:
        deltas.add_row(
            delta["test_id"],
            str(delta["entries_compared"]),
            _number(delta["mean_score_delta"], 4),
            _interval(delta["mean_score_delta_ci"]),
            _number(delta["p_value"], 4),
            _number(delta["pass_rate_delta"], 4),
            f"{delta['regressions']} / {delta['improvements']}",
        )
    out().print(deltas)


@app.command()
def compare(
    baseline_id: Annotated[str, typer.Argument(help="The baseline test.")],
    candidate_id: Annotated[str, typer.Argument(help="The candidate test.")],
    as_json: JsonOption = False,
) -> None:
    """Compare a candidate test with a baseline test of the same benchmark."""
    with session() as client:
        comparison = client.post("test/compare", {"test_ids": [baseline_id, candidate_id]})
    if as_json:
        print_json(comparison)
    else:
        print_comparison(comparison)


@app.command()
def gate(
    benchmark: Annotated[str, typer.Option(help="The benchmark to test.")],
    target: Annotated[str, typer.Option(help="The target (model) under test.")],
    baseline: Annotated[str, typer.Option(help="The test to compare with.")],
    max_drop: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The largest mean score drop tolerated.")
    ] = gate_rules.GateRules.max_drop,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="A drop counts when its p-value is below.")
    ] = gate_rules.GateRules.alpha,
    no_new_failures: Annotated[
        bool,
        typer.Option(
            "--no-new-failures", help="Also fail when an entry that passed in the baseline fails."
        ),
    ] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Runs replayed at once.")] = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Run a candidate test and exit 1 when it is worse than the baseline, 0 when not."""
    rules = gate_rules.GateRules(max_drop=max_drop, alpha=alpha, no_new_failures=no_new_failures)
    with session() as client:
        # Refuse a baseline that cannot be compared before spending a whole test on it.
        client.get_test(baseline)
        started = start_test(
            client, benchmark, target_id=target, run_all=True, concurrency=concurrency
        )
        candidate = started["test_id"]
        wait(client, candidate, quiet=as_json, timeout_s=timeout)
        comparison = client.compare_all([baseline, candidate])
    verdict = gate_rules.decide(comparison, rules)
    if as_json:
        print_json(
            {"baseline_test_id": baseline, "candidate_test_id": candidate, **verdict.as_dict()}
        )
    else:
        print_comparison({**comparison, "entries": []})
        for failure in verdict.new_failures:
            out().print(f"new failure: #{failure.position} {failure.title} ({failure.entry_id})")
        if verdict.worse:
            for reason in verdict.reasons:
                out().print(f"[red]worse:[/red] {reason}")
        else:
            out().print("[green]not worse than the baseline[/green]")
    raise typer.Exit(verdict.exit_code)


def main() -> None:
    app()
