"""import_benchmark: a good file becomes a benchmark; a bad line is named, nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tests import factories
from tests_app.models import Benchmark, BenchmarkEntry
from tests_app.services.importing import BenchmarkFileInvalid, parse_jsonl

pytestmark = pytest.mark.django_db


def chat(*user_turns: str, system: str | None = "Be brief.") -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for turn in user_turns:
        messages.append({"role": "user", "content": turn})
        messages.append({"role": "assistant", "content": f"Reply to {turn}"})
    return {"messages": messages}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def support_eval(support: Any) -> Any:
    return factories.EvalFactory.create(name="Refund handling", department=support)


def test_good_file_creates_benchmark_with_positions_and_turn_counts(
    tmp_path: Path, support_eval: Any, capsys: Any
) -> None:
    path = write_jsonl(
        tmp_path / "refunds.jsonl",
        [
            {**chat("a", "b", "c"), "title": "Three turns"},
            "",  # blank lines are skipped
            chat("only one", system=None),
            {**chat("x", "y"), "title": "  Two turns  "},
        ],
    )

    call_command("import_benchmark", str(path), "--eval", "Refund handling")

    benchmark = Benchmark.objects.get()
    assert benchmark.name == "refunds"  # the file stem
    assert benchmark.eval == support_eval
    # The department's offline reference target, created as a row on first use.
    assert (benchmark.default_target.kind, benchmark.default_target.department) == (
        "reference",
        support_eval.department,
    )
    entries = list(benchmark.entries.order_by("position"))
    assert [(e.position, e.title, e.turns) for e in entries] == [
        (1, "Three turns", 3),
        (2, "", 1),
        (3, "Two turns", 2),
    ]
    assert entries[1].messages == chat("only one", system=None)["messages"]
    assert "3 entries" in capsys.readouterr().out


def test_name_option_overrides_file_stem(tmp_path: Path, support_eval: Any) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [chat("hello")])
    call_command("import_benchmark", str(path), "--eval", "Refund handling", "--name", "Refunds v2")
    assert list(Benchmark.objects.values_list("name", flat=True)) == ["Refunds v2"]


def test_target_option_names_a_target_of_the_eval_department(
    tmp_path: Path, support_eval: Any, research: Any
) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [chat("hello")])
    local = factories.OpenAITargetFactory.create(
        department=support_eval.department, name="Local model"
    )
    factories.TargetFactory.create(department=research, name="Research model")

    with pytest.raises(CommandError, match=r"No target named .Research model. in .*Local model"):
        call_command(
            "import_benchmark", str(path), "--eval", "Refund handling", "--target", "Research model"
        )
    call_command(
        "import_benchmark", str(path), "--eval", "Refund handling", "--target", "Local model"
    )

    assert Benchmark.objects.get().default_target == local


def test_one_bad_line_is_named_and_nothing_is_imported(tmp_path: Path, support_eval: Any) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [chat("fine"), chat("fine too"), {"messages": [{"role": "robot", "content": "hi"}]}],
    )

    with pytest.raises(CommandError) as caught:
        call_command("import_benchmark", str(path), "--eval", "Refund handling")

    message = str(caught.value)
    assert "line 3" in message
    assert "unknown role 'robot'" in message
    assert "line 1" not in message
    assert "line 2" not in message
    assert "nothing was imported" in message
    assert Benchmark.objects.count() == 0
    assert BenchmarkEntry.objects.count() == 0


def test_every_bad_line_is_reported(tmp_path: Path, support_eval: Any) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        ["{oops", chat("fine"), [1, 2], "", {"messages": []}],
    )
    with pytest.raises(CommandError) as caught:
        call_command("import_benchmark", str(path), "--eval", "Refund handling")
    message = str(caught.value)
    assert "3 bad line(s)" in message
    for number in (1, 3, 5):
        assert f"line {number}:" in message
    assert "line 2:" not in message
    assert Benchmark.objects.count() == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json at all", "not valid JSON"),
        ('"a string"', "must be a JSON object, got a string"),
        ("[]", "must be a JSON object, got a list"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "extra": 1},
            "unknown key(s): extra",
        ),
        ({"title": "no messages"}, 'missing "messages"'),
        ({"messages": "hello"}, '"messages" must be a list, got a string'),
        ({"messages": []}, '"messages" is empty'),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "no user turn",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "unknown role 'wizard'"),
        ({"messages": [{"role": "user"}]}, "content must be a string, got null"),
        ({"messages": [{"role": "user", "content": "   "}]}, "empty content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            "content must be a string, got a list",
        ),
        ({"messages": ["hi"]}, "message 1 must be an object"),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_calls": []}]},
            "unknown key(s): tool_calls",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "title": 7}, '"title" must be a string'),
    ],
)
def test_each_kind_of_bad_line(line: Any, expected: str) -> None:
    text = line if isinstance(line, str) else json.dumps(line)
    with pytest.raises(BenchmarkFileInvalid) as caught:
        parse_jsonl(lines=[json.dumps(chat("good")), text])
    assert [error.line for error in caught.value.line_errors] == [2]
    assert expected in caught.value.line_errors[0].message


def test_unknown_eval_is_named(tmp_path: Path, support_eval: Any) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [chat("hello")])
    with pytest.raises(CommandError, match=r"No eval named 'Nope'\. Known evals: Refund handling"):
        call_command("import_benchmark", str(path), "--eval", "Nope")
    assert Benchmark.objects.count() == 0


def test_file_of_blank_lines_is_refused(tmp_path: Path, support_eval: Any) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(CommandError, match="no entries"):
        call_command("import_benchmark", str(path), "--eval", "Refund handling")
    assert Benchmark.objects.count() == 0


def test_same_name_twice_is_refused_not_duplicated(tmp_path: Path, support_eval: Any) -> None:
    path = write_jsonl(tmp_path / "refunds.jsonl", [chat("hello")])
    call_command("import_benchmark", str(path), "--eval", "Refund handling")
    with pytest.raises(CommandError, match="already has a benchmark named 'refunds'"):
        call_command("import_benchmark", str(path), "--eval", "Refund handling")
    assert Benchmark.objects.count() == 1
    assert BenchmarkEntry.objects.count() == 1


def test_missing_file_is_a_command_error(tmp_path: Path, support_eval: Any) -> None:
    with pytest.raises(CommandError, match="Cannot read"):
        call_command(
            "import_benchmark", str(tmp_path / "absent.jsonl"), "--eval", "Refund handling"
        )
