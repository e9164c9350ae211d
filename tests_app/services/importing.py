"""Import benchmark entries from JSONL: one conversation a line, in OpenAI chat format.

A line is ``{"messages": [{"role": ..., "content": ...}, ...], "title"?: "..."}``. Every line is
validated before anything is written, and every bad line is reported with its line number, so a
file is imported whole or not at all. Blank lines are skipped (they still count for numbering).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from django.db import transaction

from tests_app.errors import ValidationFailed
from tests_app.models import Benchmark, BenchmarkEntry, Eval, Target, count_user_turns
from tests_app.services.targets import reference_target

ALLOWED_LINE_KEYS = frozenset({"messages", "title"})
ALLOWED_ROLES = ("system", "developer", "user", "assistant", "tool")
ALLOWED_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id"})
TITLE_MAX_LENGTH = BenchmarkEntry._meta.get_field("title").max_length or 300
# One import is one transaction held in memory; a larger benchmark should be split.
MAX_ENTRIES = 10_000
BULK_BATCH_SIZE = 500


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ParsedEntry:
    line: int
    title: str
    messages: list[dict[str, Any]]


class BenchmarkFileInvalid(ValidationFailed):
    """The file has bad lines; ``line_errors`` names every one of them."""

    code = "invalid_benchmark_file"

    def __init__(self, line_errors: list[LineError]) -> None:
        self.line_errors = line_errors
        super().__init__(
            f"{len(line_errors)} bad line(s); nothing was imported.",
            fields={f"line {error.line}": [error.message] for error in line_errors},
        )


def message_problems(messages: Any) -> list[str]:
    """What is wrong with a chat message list (empty when it is fine). Reusable by forms."""
    if not isinstance(messages, list):
        return [f'"messages" must be a list, got {_json_type(messages)}']
    if not messages:
        return ['"messages" is empty']
    problems: list[str] = []
    for index, message in enumerate(messages, start=1):
        where = f"message {index}"
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object, got {_json_type(message)}")
            continue
        unknown = sorted(set(message) - ALLOWED_MESSAGE_KEYS)
        if unknown:
            problems.append(f"{where} has unknown key(s): {', '.join(unknown)}")
        role = message.get("role")
        if role not in ALLOWED_ROLES:
            problems.append(
                f"{where} has unknown role {role!r} (expected one of {', '.join(ALLOWED_ROLES)})"
            )
        content = message.get("content")
        if not isinstance(content, str):
            problems.append(f"{where} content must be a string, got {_json_type(content)}")
        elif not content.strip():
            problems.append(f"{where} has empty content")
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in messages):
        problems.append("no user turn: at least one message must have role 'user'")
    return problems


def parse_line(text: str, *, line: int) -> tuple[ParsedEntry | None, list[str]]:
    """One non-blank JSONL line: the entry, or the list of its problems."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return None, [f"not valid JSON ({error.msg} at column {error.colno})"]
    if not isinstance(data, dict):
        return None, [f"must be a JSON object, got {_json_type(data)}"]
    problems: list[str] = []
    unknown = sorted(set(data) - ALLOWED_LINE_KEYS)
    if unknown:
        problems.append(f"unknown key(s): {', '.join(unknown)} (allowed: messages, title)")
    if "messages" not in data:
        problems.append('missing "messages"')
    else:
        problems.extend(message_problems(data["messages"]))
    title = data.get("title", "")
    if not isinstance(title, str):
        problems.append(f'"title" must be a string, got {_json_type(title)}')
    elif len(title) > TITLE_MAX_LENGTH:
        problems.append(f'"title" is longer than {TITLE_MAX_LENGTH} characters')
    if problems:
        return None, problems
    return ParsedEntry(line=line, title=title.strip(), messages=data["messages"]), []


def parse_jsonl(*, lines: Iterable[str]) -> list[ParsedEntry]:
    """Validate every line; raise BenchmarkFileInvalid listing all bad ones, else the entries."""
    entries: list[ParsedEntry] = []
    errors: list[LineError] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        entry, problems = parse_line(text, line=number)
        if entry is None:
            errors.append(LineError(line=number, message="; ".join(problems)))
        else:
            entries.append(entry)
    if errors:
        raise BenchmarkFileInvalid(errors)
    if not entries:
        raise ValidationFailed("The file has no entries (only blank lines).", code="empty_file")
    if len(entries) > MAX_ENTRIES:
        raise ValidationFailed(
            f"The file has {len(entries)} entries; at most {MAX_ENTRIES} per import.",
            code="too_many_entries",
        )
    return entries


def import_benchmark(
    *,
    eval: Eval,
    name: str,
    lines: Iterable[str],
    target: Target | None = None,
) -> Benchmark:
    """Create a benchmark under ``eval`` with one entry per line, positions 1..N, whose default
    target is ``target`` (a target of the eval's department), else the department's reference
    target.

    Validates the whole file first; writes nothing unless every line is good. A benchmark of the
    same name already in the eval is refused rather than duplicated.
    """
    if target is not None and target.department_id != eval.department_id:
        raise ValidationFailed(
            f"The target {target.name!r} belongs to another department than the eval.",
            code="target_department_mismatch",
            fields={"target": ["Must be a target of the eval's department."]},
        )
    name = name.strip()
    if not name:
        raise ValidationFailed("The benchmark needs a name.", fields={"name": ["Required."]})
    entries = parse_jsonl(lines=lines)
    with transaction.atomic():
        if Benchmark.objects.filter(eval=eval, name=name).exists():
            raise ValidationFailed(
                f"The eval {eval.name!r} already has a benchmark named {name!r}; "
                "choose another name.",
                code="duplicate_benchmark",
            )
        benchmark = Benchmark.objects.create(
            name=name,
            eval=eval,
            default_target=target or reference_target(department=eval.department),
        )
        # bulk_create skips save(), so the turn count it would keep is computed here.
        BenchmarkEntry.objects.bulk_create(
            [
                BenchmarkEntry(
                    benchmark=benchmark,
                    position=position,
                    title=entry.title,
                    messages=entry.messages,
                    turns=count_user_turns(entry.messages),
                )
                for position, entry in enumerate(entries, start=1)
            ],
            batch_size=BULK_BATCH_SIZE,
        )
    return benchmark


def import_benchmark_file(
    *, eval: Eval, name: str, file: IO[bytes], target: Target | None = None
) -> Benchmark:
    """``import_benchmark`` from a binary file (a path opened by the command, an upload in the
    admin): UTF-8, with or without a byte order mark; other bytes are a validation error."""
    text = io.TextIOWrapper(file, encoding="utf-8-sig")
    try:
        return import_benchmark(eval=eval, name=name, lines=text, target=target)
    except UnicodeDecodeError as error:
        raise ValidationFailed(
            f"The file is not UTF-8 text: {error.reason}.", code="not_utf8"
        ) from error
    finally:
        text.detach()  # the caller owns the file and closes it


def bad_lines_report(error: BenchmarkFileInvalid) -> list[str]:
    """The sentences that report a file's bad lines: a summary, then one per line."""
    return [error.detail, *(str(line_error) for line_error in error.line_errors)]


def imported_summary(benchmark: Benchmark) -> str:
    """What an import made, in one sentence (the command prints it, the admin shows it)."""
    target = benchmark.default_target
    return (
        f"Imported benchmark {benchmark.name!r} ({benchmark.pk}) into eval "
        f"{benchmark.eval.name!r}: {benchmark.entries.count()} entries, default target "
        f"{target.name!r} ({target.kind})."
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
