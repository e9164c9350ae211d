"""``import_benchmark PATH --eval NAME [--name NAME] [--target NAME]``: a JSONL file to a new
benchmark.

One conversation a line: ``{"messages": [...], "title"?: "..."}`` (OpenAI chat format). Every bad
line is reported with its number and nothing is imported; the work is in
``tests_app.services.importing``. The benchmark's default target is the named target of the
eval's department, else that department's offline reference target (created when missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tests_app.errors import DomainError
from tests_app.models import Eval, Target
from tests_app.services.importing import (
    BenchmarkFileInvalid,
    bad_lines_report,
    import_benchmark_file,
    imported_summary,
)

# How many evals an "unknown eval" error lists as a hint.
EVAL_HINT_LIMIT = 20


class Command(BaseCommand):
    help = "Import a JSONL file of chat conversations as a new benchmark of an eval."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The JSONL file, one entry a line.")
        parser.add_argument("--eval", required=True, dest="eval_name", help="The eval's name.")
        parser.add_argument("--name", help="The benchmark's name (default: the file's stem).")
        parser.add_argument(
            "--target",
            dest="target_name",
            help="The default target, by name, among the eval's department's targets "
            "(default: the department's reference target).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        eval_ = self._eval(options["eval_name"])
        name = options["name"] or path.stem
        target = self._target(eval_, options["target_name"]) if options["target_name"] else None
        try:
            with path.open("rb") as file:
                benchmark = import_benchmark_file(eval=eval_, name=name, file=file, target=target)
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror or error}") from error
        except BenchmarkFileInvalid as error:
            summary, *lines = bad_lines_report(error)
            listing = "\n".join(f"  {line}" for line in lines)
            raise CommandError(f"{path}: {summary}\n{listing}") from error
        except DomainError as error:
            raise CommandError(f"{path}: {error.detail}") from error
        self.stdout.write(self.style.SUCCESS(imported_summary(benchmark)))

    def _eval(self, name: str) -> Eval:
        matches = list(Eval.objects.select_related("department").filter(name=name)[:2])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CommandError(
                f"More than one eval is named {name!r}; rename one of them in the admin."
            )
        known = list(Eval.objects.order_by("name").values_list("name", flat=True)[:EVAL_HINT_LIMIT])
        hint = f" Known evals: {', '.join(known)}." if known else " There are no evals yet."
        raise CommandError(f"No eval named {name!r}.{hint}")

    def _target(self, eval_: Eval, name: str) -> Target:
        target = Target.objects.filter(department_id=eval_.department_id, name=name).first()
        if target is not None:
            return target
        known = list(
            Target.objects.filter(department_id=eval_.department_id)
            .order_by("name")
            .values_list("name", flat=True)[:EVAL_HINT_LIMIT]
        )
        hint = f" Its targets: {', '.join(known)}." if known else " It has no targets yet."
        raise CommandError(f"No target named {name!r} in {eval_.department.name}.{hint}")
